/* test_batch_store.c — src/batch/batch_store.c: atomic writes, fsynced
 * appends, cutting a torn last line (what a SIGKILL mid-append leaves),
 * links, and the batch input line rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/batch_store.h"

static char dir[256];

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/barista-test-batch-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_write_read_append_trim(void **st)
{
    (void)st;
    bar_msg_t m = {{0}};
    char d[300], p[400], q[400];
    snprintf(d, sizeof d, "%s/data/x", dir);
    assert_int_equal(batch_store_open(d, &m), 0);
    snprintf(p, sizeof p, "%s/files/a.jsonl", d);
    assert_int_equal(batch_store_write(p, "one\n", 4, &m), 0);
    assert_int_equal(batch_store_write(p, "two\n", 4, &m), 0); /* replaces */
    char tmp[420];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_int_not_equal(access(tmp, F_OK), 0); /* no temporary left */
    int fd = open(p, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(batch_store_append(fd, "three\nfo", 8, &m), 0); /* a torn last line */
    close(fd);
    buf_t b = {0};
    assert_int_equal(batch_store_read(p, &b, &m), 0);
    assert_int_equal(b.n, 12);
    assert_memory_equal(b.p, "two\nthree\nfo", 12);
    buf_clear(&b);
    assert_int_equal(batch_store_trim(p, &b, &m), 0);
    assert_int_equal(b.n, 10);
    buf_clear(&b);
    assert_int_equal(batch_store_read(p, &b, &m), 0);
    assert_int_equal(b.n, 10); /* cut on disk too */
    snprintf(q, sizeof q, "%s/files/b.jsonl", d);
    assert_int_equal(batch_store_link(p, q, &m), 0);
    buf_clear(&b);
    assert_int_equal(batch_store_read(q, &b, &m), 0);
    assert_memory_equal(b.p, "two\nthree\n", 10);
    buf_free(&b);
    snprintf(q, sizeof q, "%s/files/missing", d);
    assert_int_equal(batch_store_trim(q, NULL, &m), 0);
    assert_int_not_equal(batch_store_read(q, &b, &m), 0);
    buf_free(&b);
}

static int parse(const char *line, batch_line_t *out, const char **code)
{
    char why[256];
    return batch_line_parse(line, strlen(line), "/v1/chat/completions", out, code, why, sizeof why);
}

static void test_lines(void **st)
{
    (void)st;
    batch_line_t l;
    const char *code = NULL;
    assert_int_equal(
        parse("{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/"
              "completions\",\"body\":{\"stream\":true,\"model\":\"m\",\"priority\":-5}}",
              &l, &code),
        0);
    assert_string_equal(l.custom_id, "a");
    assert_string_equal(l.body, "{\"model\":\"m\"}"); /* stream removed */
    free(l.body);
    assert_int_equal(parse("not json", &l, &code), -1);
    assert_string_equal(code, "invalid_json_line");
    assert_int_equal(parse("[1]", &l, &code), -1);
    assert_int_equal(
        parse("{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}", &l, &code), -1);
    assert_string_equal(code, "missing_required_parameter");
    assert_int_equal(parse("{\"custom_id\":\"b\",\"method\":\"GET\",\"url\":\"/v1/chat/"
                           "completions\",\"body\":{}}",
                           &l, &code),
                     -1);
    assert_string_equal(l.custom_id, "b"); /* named in the error line */
    assert_int_equal(parse("{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/"
                           "embeddings\",\"body\":{}}",
                           &l, &code),
                     -1);
    assert_string_equal(code, "invalid_url");
    assert_int_equal(parse("{\"custom_id\":\"d\",\"method\":\"POST\",\"url\":\"/v1/chat/"
                           "completions\",\"body\":\"x\"}",
                           &l, &code),
                     -1);
    char id[128];
    assert_int_equal(batch_result_custom_id("{\"custom_id\":\"z\",\"response\":{}}", 31, id), 1);
    assert_string_equal(id, "z");
    const char *v = "{\"custom_id\":\"z\",\"response\":null}";
    assert_int_equal(batch_result_custom_id(v, strlen(v), id), 0);
    assert_int_equal(batch_result_custom_id("{\"cus", 5, id), 0);
    assert_string_equal(id, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read_append_trim),
        cmocka_unit_test(test_lines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
