/* test_buf.c — util/buf: the JSON string writer every layer below the API
 * uses (server errors, access log, dashboard snapshot). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util/buf.h"

static void check(const char *in, size_t n, const char *want)
{
    buf_t b = {0};
    assert_int_equal(buf_json_str(&b, in, n), 0);
    assert_int_equal(b.n, strlen(want));
    assert_memory_equal(b.p, want, b.n);
    buf_free(&b);
}

static void test_json_str(void **st)
{
    (void)st;
    check("", 0, "\"\"");
    check("plain", 5, "\"plain\"");
    check("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    check("t\ab\n\x7f", 5, "\"t\\u0007b\\u000a\\u007f\"");
    check("caf\xc3\xa9", 5, "\"caf\xc3\xa9\""); /* UTF-8 kept as it is */
    check("a\0b", 3, "\"a\\u0000b\"");          /* n bytes, NULs included */
    buf_t b = {0};
    assert_int_equal(buf_puts(&b, "x:"), 0);
    assert_int_equal(buf_json_str(&b, "y", 1), 0); /* appends */
    assert_string_equal(b.p, "x:\"y\"");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_json_str)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
