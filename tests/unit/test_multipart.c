/* test_multipart.c — multipart/form-data parsing (src/api/multipart.c):
 * boundaries from Content-Type, parts with names, filenames and types,
 * preamble and quoted boundaries, and the malformed bodies POST /v1/files
 * must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "api/multipart.h"

static http_slice_t S(const char *s)
{
    return (http_slice_t){s, strlen(s)};
}

static int eq(http_slice_t s, const char *want)
{
    return s.p && s.n == strlen(want) && !memcmp(s.p, want, s.n);
}

static void test_boundary(void **st)
{
    (void)st;
    http_slice_t b;
    const char *why = NULL;
    assert_int_equal(mp_boundary(S("multipart/form-data; boundary=abc"), &b, &why), 0);
    assert_true(eq(b, "abc"));
    assert_int_equal(mp_boundary(S("Multipart/Form-Data;charset=x; boundary=\"a b;c\""), &b, &why),
                     0);
    assert_true(eq(b, "a b;c"));
    assert_int_equal(mp_boundary(S("application/json"), &b, &why), -1);
    assert_non_null(why);
    assert_int_equal(mp_boundary(S("multipart/form-data"), &b, &why), -1);
    assert_int_equal(mp_boundary(S("multipart/form-data; boundary="), &b, &why), -1);
    assert_int_equal(mp_boundary(S("multipart/form-data; boundary=\"abc"), &b, &why), -1);
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 71);
    assert_int_equal(mp_boundary(S(longb), &b, &why), -1);
}

static const char BODY[] =
    "preamble\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"purpose\"\r\n"
    "\r\n"
    "batch\r\n"
    "--XyZ\r\n"
    "content-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
    "Content-Type: application/jsonl\r\n"
    "\r\n"
    "{\"a\":1}\n--XyZ is not a delimiter without CRLF\n"
    "\r\n"
    "--XyZ--\r\n"
    "epilogue";

static void test_parts(void **st)
{
    (void)st;
    mp_part_t p[MP_MAX_PARTS];
    int n = 0;
    const char *why = NULL;
    assert_int_equal(mp_parse(BODY, strlen(BODY), S("XyZ"), p, MP_MAX_PARTS, &n, &why), 0);
    assert_int_equal(n, 2);
    assert_true(eq(p[0].name, "purpose"));
    assert_null(p[0].filename.p);
    assert_true(eq(p[0].data, "batch"));
    assert_true(eq(p[1].name, "file"));
    assert_true(eq(p[1].filename, "in.jsonl"));
    assert_true(eq(p[1].content_type, "application/jsonl"));
    assert_true(eq(p[1].data, "{\"a\":1}\n--XyZ is not a delimiter without CRLF\n"));
    assert_ptr_equal(mp_find(p, n, "file"), &p[1]);
    assert_null(mp_find(p, n, "fil"));
    /* an empty part and a body that opens with the delimiter */
    const char *b2 = "--b\r\nContent-Disposition: form-data; name=e\r\n\r\n\r\n--b--";
    assert_int_equal(mp_parse(b2, strlen(b2), S("b"), p, MP_MAX_PARTS, &n, &why), 0);
    assert_int_equal(n, 1);
    assert_true(eq(p[0].name, "e"));
    assert_int_equal(p[0].data.n, 0);
}

static void bad(const char *body, const char *boundary, int max)
{
    mp_part_t p[MP_MAX_PARTS];
    int n = 0;
    const char *why = NULL;
    assert_int_equal(mp_parse(body, strlen(body), S(boundary), p, max, &n, &why), -1);
    assert_non_null(why);
}

static void test_malformed(void **st)
{
    (void)st;
    bad("", "b", MP_MAX_PARTS);
    bad("no boundary here", "b", MP_MAX_PARTS);
    /* no closing delimiter */
    bad("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxx", "b", MP_MAX_PARTS);
    /* headers never end */
    bad("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n--b--", "b", MP_MAX_PARTS);
    /* no Content-Disposition, not form-data, no name, a bad quote */
    bad("--b\r\nContent-Type: x\r\n\r\nx\r\n--b--", "b", MP_MAX_PARTS);
    bad("--b\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--b--", "b", MP_MAX_PARTS);
    bad("--b\r\nContent-Disposition: form-data; filename=a\r\n\r\nx\r\n--b--", "b", MP_MAX_PARTS);
    bad("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--", "b", MP_MAX_PARTS);
    /* a header line without a colon; garbage after a delimiter */
    bad("--b\r\nnonsense\r\n\r\nx\r\n--b--", "b", MP_MAX_PARTS);
    bad("--bxx\r\n", "b", MP_MAX_PARTS);
    /* more parts than room */
    bad("--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n"
        "--b\r\nContent-Disposition: form-data; name=b\r\n\r\n2\r\n--b--",
        "b", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
