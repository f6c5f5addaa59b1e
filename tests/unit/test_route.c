/* test_route.c — the route table (src/api/route.c): exact and prefix rows,
 * one trailing slash, HEAD as GET, wrong methods, row order, Allow strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <http_parser.h>
#include <string.h>

#include "api/route.h"

enum { H_HEALTH, H_MODELS, H_MODEL, H_CACHE_GET, H_CACHE_DEL, H_CHAT, H_FIRST, H_SECOND };

static const route_t rows[] = {
    {ROUTE_GET, "/health", "health", ROUTE_OPEN, H_HEALTH},
    {ROUTE_GET, "/v1/models", "models", ROUTE_API_KEY, H_MODELS},
    {ROUTE_GET, "/v1/models/", "model", ROUTE_API_KEY, H_MODEL},
    {ROUTE_GET, "/admin/cache", "cache", ROUTE_ADMIN_KEY, H_CACHE_GET},
    {ROUTE_DELETE, "/admin/cache", "cache", ROUTE_ADMIN_KEY, H_CACHE_DEL},
    {ROUTE_POST, "/v1/chat/completions", "chat", ROUTE_API_KEY, H_CHAT},
    {ROUTE_POST, "/dup", "first", ROUTE_OPEN, H_FIRST},
    {ROUTE_POST | ROUTE_GET, "/dup", "second", ROUTE_OPEN, H_SECOND},
};
#define N_ROWS (sizeof rows / sizeof rows[0])

static route_status_t find(const char *path, int method, const route_t **out, http_slice_t *rest)
{
    http_slice_t p = {path, strlen(path)};
    return route_find(rows, N_ROWS, p, method, out, rest);
}

static void test_exact(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/health", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_ptr_equal(r, &rows[0]);
    assert_int_equal(r->handler, H_HEALTH);
    assert_int_equal(rest.n, 0);
    assert_int_equal(find("/v1/chat/completions", HTTP_POST, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_CHAT);
    assert_string_equal(r->label, "chat");
    assert_int_equal(r->auth, ROUTE_API_KEY);
    /* the exact row comes before the prefix row for the same path */
    assert_int_equal(find("/v1/models", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_MODELS);
    assert_int_equal(rest.n, 0);
    /* a longer path is not an exact match */
    assert_int_equal(find("/healthz", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
}

static void test_trailing_slash(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/health/", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_HEALTH);
    assert_int_equal(find("/v1/chat/completions/", HTTP_POST, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_CHAT);
    /* only one slash is ignored */
    assert_int_equal(find("/health//", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_null(r);
}

static void test_prefix_rest(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/v1/models/abc", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_ptr_equal(r, &rows[2]);
    assert_int_equal(r->handler, H_MODEL);
    assert_int_equal(rest.n, 3);
    assert_memory_equal(rest.p, "abc", 3);
    /* the trailing slash is dropped from the rest too */
    assert_int_equal(find("/v1/models/x-y.gguf/", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_MODEL);
    assert_int_equal(rest.n, 8);
    assert_memory_equal(rest.p, "x-y.gguf", 8);
}

static void test_prefix_needs_tail(void **st)
{
    (void)st;
    static const route_t only_prefix[] = {{ROUTE_GET, "/files/", "files", ROUTE_OPEN, 7}};
    const route_t *r;
    http_slice_t rest;
    http_slice_t p = {"/files/", 7};
    assert_int_equal(route_find(only_prefix, 1, p, HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_null(r);
    p = (http_slice_t){"/files", 6};
    assert_int_equal(route_find(only_prefix, 1, p, HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_null(r);
    p = (http_slice_t){"/files/a", 8};
    assert_int_equal(route_find(only_prefix, 1, p, HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_ptr_equal(r, &only_prefix[0]);
    assert_int_equal(rest.n, 1);
    assert_int_equal(rest.p[0], 'a');
    /* another path sharing the prefix's letters without the slash */
    p = (http_slice_t){"/filesx", 7};
    assert_int_equal(route_find(only_prefix, 1, p, HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
}

static void test_head_is_get(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/health", HTTP_HEAD, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_HEALTH);
    assert_int_equal(find("/v1/models/m", HTTP_HEAD, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_MODEL);
    /* HEAD is not POST */
    assert_int_equal(find("/v1/chat/completions", HTTP_HEAD, &r, &rest), ROUTE_BAD_METHOD);
}

static void test_bad_method(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/v1/chat/completions", HTTP_GET, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[5]);
    assert_int_equal(r->methods, ROUTE_POST);
    assert_int_equal(find("/health", HTTP_POST, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[0]);
    assert_int_equal(find("/health", HTTP_PUT, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[0]);
    assert_int_equal(find("/v1/models/abc", HTTP_DELETE, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[2]);
}

static void test_two_methods_two_rows(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/admin/cache", HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_CACHE_GET);
    /* the first row with the path decides: DELETE lives in the next row */
    assert_int_equal(find("/admin/cache", HTTP_DELETE, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[3]);
}

static void test_not_found(void **st)
{
    (void)st;
    const route_t *r = &rows[0];
    http_slice_t rest = {"x", 1};
    assert_int_equal(find("/nope", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_null(r);
    assert_null(rest.p);
    assert_int_equal(rest.n, 0);
    assert_int_equal(find("/", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_int_equal(find("", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_int_equal(find("/v1", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
    assert_int_equal(find("/V1/models", HTTP_GET, &r, &rest), ROUTE_NOT_FOUND);
}

static void test_first_row_wins(void **st)
{
    (void)st;
    const route_t *r;
    http_slice_t rest;
    assert_int_equal(find("/dup", HTTP_POST, &r, &rest), ROUTE_FOUND);
    assert_ptr_equal(r, &rows[6]);
    assert_int_equal(r->handler, H_FIRST);
    /* the first row has no GET: its answer stands, the second row is not tried */
    assert_int_equal(find("/dup", HTTP_GET, &r, &rest), ROUTE_BAD_METHOD);
    assert_ptr_equal(r, &rows[6]);
    /* with the rows the other way round the other row wins */
    static const route_t swapped[] = {
        {ROUTE_POST | ROUTE_GET, "/dup", "second", ROUTE_OPEN, H_SECOND},
        {ROUTE_POST, "/dup", "first", ROUTE_OPEN, H_FIRST},
    };
    http_slice_t p = {"/dup", 4};
    assert_int_equal(route_find(swapped, 2, p, HTTP_POST, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, H_SECOND);
    /* a prefix row before an exact one shadows it for paths with a tail only */
    static const route_t pre[] = {
        {ROUTE_GET, "/m/", "prefix", ROUTE_OPEN, 1},
        {ROUTE_GET, "/m/a", "exact", ROUTE_OPEN, 2},
    };
    p = (http_slice_t){"/m/a", 4};
    assert_int_equal(route_find(pre, 2, p, HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, 1);
    assert_int_equal(route_find(pre + 1, 1, p, HTTP_GET, &r, &rest), ROUTE_FOUND);
    assert_int_equal(r->handler, 2);
}

static void test_allow(void **st)
{
    (void)st;
    char b[64];
    route_allow(ROUTE_GET, b, sizeof b);
    assert_string_equal(b, "GET, HEAD");
    route_allow(ROUTE_POST, b, sizeof b);
    assert_string_equal(b, "POST");
    route_allow(ROUTE_DELETE, b, sizeof b);
    assert_string_equal(b, "DELETE");
    route_allow(ROUTE_GET | ROUTE_DELETE, b, sizeof b);
    assert_string_equal(b, "GET, HEAD, DELETE");
    route_allow(ROUTE_GET | ROUTE_POST, b, sizeof b);
    assert_string_equal(b, "GET, HEAD, POST");
    route_allow(ROUTE_GET | ROUTE_POST | ROUTE_DELETE, b, sizeof b);
    assert_string_equal(b, "GET, HEAD, POST, DELETE");
    route_allow(0, b, sizeof b);
    assert_string_equal(b, "");
    /* a short buffer is cut, NUL-terminated */
    char s[5];
    route_allow(ROUTE_GET | ROUTE_POST, s, sizeof s);
    assert_string_equal(s, "GET,");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_prefix_rest),
        cmocka_unit_test(test_prefix_needs_tail),
        cmocka_unit_test(test_head_is_get),
        cmocka_unit_test(test_bad_method),
        cmocka_unit_test(test_two_methods_two_rows),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_first_row_wins),
        cmocka_unit_test(test_allow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
