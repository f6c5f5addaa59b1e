/* test_upstream_chunk.c — the streamed-chunk reader (src/upstream/upstream_chunk.c):
 * the common chunk shapes (barista's, OpenAI's, llama.cpp's) are read by the
 * scanner itself (no cJSON), with the same answer as the cJSON reader; escapes
 * decoded; the first member of a name counts; what the scanner leaves (\u
 * escapes, "error", trailing bytes, deep nesting) is read by cJSON; a chunk
 * that is not a JSON object is -1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/upstream_chunk.h"

/* Read s both ways; the scanner's verdict (0 read, 1 left to cJSON) in *scanned. */
static int rd(const char *s, int is_chat, upchunk_t *out, buf_t *sc, int *scanned)
{
    upchunk_t a, b;
    buf_t s1 = {0}, s2 = {0};
    int ra = upchunk_scan(s, strlen(s), is_chat, &a, &s1);
    int rb = upchunk_read_cjson(s, strlen(s), is_chat, &b, &s2);
    if (ra == 0) { /* both agree */
        assert_int_equal(rb, 0);
        assert_int_equal(a.has_usage, b.has_usage);
        assert_int_equal(a.has_pt, b.has_pt);
        assert_int_equal(a.has_ct, b.has_ct);
        assert_int_equal(a.has_cached, b.has_cached);
        assert_true(a.pt == b.pt && a.ct == b.ct && a.cached == b.cached);
        assert_int_equal(a.has_c0, b.has_c0);
        assert_int_equal(a.has_text, b.has_text);
        assert_int_equal(a.has_finish, b.has_finish);
        assert_string_equal(a.finish, b.finish);
        if (a.has_text) {
            assert_int_equal(a.text_len, b.text_len);
            assert_memory_equal(a.text, b.text, a.text_len);
        }
    } else {
        assert_int_equal(ra, 1);
    }
    *scanned = ra == 0;
    buf_free(&s1);
    buf_free(&s2);
    return upchunk_read(s, strlen(s), is_chat, out, sc);
}

static void test_common_shapes(void **st)
{
    (void)st;
    buf_t sc = {0};
    upchunk_t c;
    int scanned;
    /* barista's role chunk, a text chunk, the finish and the usage chunk */
    assert_int_equal(rd("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":"
                        "1796319895,\"model\":\"x\",\"system_fingerprint\":\"barista\",\"choices\":"
                        "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                        "\"logprobs\":null,\"finish_reason\":null}]}",
                        1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_true(c.has_c0 && c.has_text && c.text_len == 0 && !c.has_finish && !c.has_usage);
    assert_int_equal(
        rd("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\\"lo\\n\\u00e9\"},"
           "\"finish_reason\":null}]}",
           1, &c, &sc, &scanned),
        0);
    assert_false(scanned); /* \u: cJSON's */
    assert_string_equal(c.text, "Hel\"lo\n\xc3\xa9");
    assert_int_equal(rd("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\\\b\\/\\t\"},"
                        "\"finish_reason\":\"length\"}]}",
                        1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_string_equal(c.text, "a\\b/\t");
    assert_int_equal(c.text_len, 5);
    assert_string_equal(c.finish, "length");
    assert_int_equal(rd("{\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":34,"
                        "\"completion_tokens\":1,\"total_tokens\":35,\"prompt_tokens_details\":"
                        "{\"cached_tokens\":12}}}",
                        1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_true(c.has_usage && c.has_pt && c.has_ct && c.has_cached && !c.has_c0);
    assert_true(c.pt == 34 && c.ct == 1 && c.cached == 12);
    /* completions read "text", not delta.content */
    assert_int_equal(rd("{\"choices\":[{\"text\":\" word\",\"index\":0,\"delta\":{\"content\":"
                        "\"no\"},\"finish_reason\":\"stop\"}],\"usage\":null}",
                        0, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_string_equal(c.text, " word");
    assert_string_equal(c.finish, "stop");
    assert_false(c.has_usage);
    /* numbers of every form, nested skipped values */
    assert_int_equal(rd(" {\"x\":[1,-2.5e3,0.0,true,false,null,{\"a\":[[]]}],\"usage\":"
                        "{\"prompt_tokens\":1.5e1,\"completion_tokens\":\"3\"}} \r\n",
                        1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_true(c.has_usage && c.has_pt && c.pt == 15 && !c.has_ct);
    buf_free(&sc);
}

static void test_first_member_counts(void **st)
{
    (void)st;
    buf_t sc = {0};
    upchunk_t c;
    int scanned;
    assert_int_equal(rd("{\"usage\":null,\"usage\":{\"prompt_tokens\":3},\"choices\":[{\"delta\":"
                        "{\"content\":\"a\",\"content\":\"b\"},\"finish_reason\":\"stop\","
                        "\"finish_reason\":\"length\"}],\"choices\":[{\"delta\":{\"content\":"
                        "\"c\"}}]}",
                        1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_false(c.has_usage);
    assert_string_equal(c.text, "a");
    assert_string_equal(c.finish, "stop");
    /* choices[0] not an object: no choice, later elements ignored */
    assert_int_equal(rd("{\"choices\":[1,{\"delta\":{\"content\":\"x\"}}]}", 1, &c, &sc, &scanned),
                     0);
    assert_true(scanned);
    assert_false(c.has_c0);
    assert_false(c.has_text);
    buf_free(&sc);
}

static void test_left_to_cjson(void **st)
{
    (void)st;
    buf_t sc = {0};
    upchunk_t c;
    int scanned;
    assert_int_equal(rd("{\"error\":{\"message\":\"model overloaded\"}}", 1, &c, &sc, &scanned), 0);
    assert_false(scanned);
    assert_true(c.has_error);
    assert_string_equal(c.error, "model overloaded");
    assert_int_equal(rd("{\"error\":\"plain\"}", 1, &c, &sc, &scanned), 0);
    assert_string_equal(c.error, "plain");
    assert_int_equal(rd("{\"error\":42}", 1, &c, &sc, &scanned), 0);
    assert_string_equal(c.error, "(no message)");
    /* trailing bytes: cJSON reads the object and ignores them */
    assert_int_equal(rd("{\"choices\":[{\"delta\":{\"content\":\"t\"}}]} x", 1, &c, &sc, &scanned),
                     0);
    assert_false(scanned);
    assert_string_equal(c.text, "t");
    /* a NUL from \u0000 ends the text, as cJSON's valuestring does */
    assert_int_equal(
        rd("{\"choices\":[{\"delta\":{\"content\":\"ab\\u0000cd\"}}]}", 1, &c, &sc, &scanned), 0);
    assert_false(scanned);
    assert_int_equal(c.text_len, 2);
    /* deep nesting */
    char deep[400];
    size_t k = 0;
    k += (size_t)sprintf(deep, "{\"x\":");
    for (int i = 0; i < 40; i++)
        deep[k++] = '[';
    for (int i = 0; i < 40; i++)
        deep[k++] = ']';
    k += (size_t)sprintf(deep + k, ",\"usage\":{\"prompt_tokens\":2}}");
    assert_int_equal(rd(deep, 1, &c, &sc, &scanned), 0);
    assert_false(scanned);
    assert_true(c.has_pt && c.pt == 2);
    /* not JSON objects */
    assert_int_equal(rd("[1]", 1, &c, &sc, &scanned), -1);
    assert_int_equal(rd("{\"a\":", 1, &c, &sc, &scanned), -1);
    assert_int_equal(rd("nope", 1, &c, &sc, &scanned), -1);
    assert_int_equal(rd("", 1, &c, &sc, &scanned), -1);
    buf_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_shapes),
        cmocka_unit_test(test_first_member_counts),
        cmocka_unit_test(test_left_to_cjson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
