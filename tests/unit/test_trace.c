/* test_trace.c — a request's trace (src/obs/trace.c): X-Request-Id taken or
 * made, stage marks, Server-Timing and JSON formatting; and the access log
 * (src/obs/access_log.c) writing one escaped JSON line per request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/access_log.h"
#include "obs/trace.h"

static void test_id_valid(void **st)
{
    (void)st;
    char big[200];
    memset(big, 'a', sizeof big);
    assert_true(obs_id_valid("abc-123", 7));
    assert_true(obs_id_valid(big, 128));
    assert_false(obs_id_valid(big, 129));
    assert_false(obs_id_valid("", 0));
    assert_false(obs_id_valid(NULL, 3));
    assert_false(obs_id_valid("a b", 3));
    assert_false(obs_id_valid("a\tb", 3));
    assert_false(obs_id_valid("a\x01", 2));
    assert_false(obs_id_valid("a\x7f", 2));
    assert_false(obs_id_valid("\xc3\xa9", 2)); /* non-ASCII */
}

static void test_begin_takes_or_makes(void **st)
{
    (void)st;
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t, u;
    obs_trace_begin(&t, 1.0, "req-7", 5, &g);
    assert_string_equal(t.id, "req-7");
    assert_true(t.id_given);
    obs_trace_begin(&t, 1.0, "bad id", 6, &g);
    assert_false(t.id_given);
    assert_int_equal(strlen(t.id), 32);
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", t.id[i]));
    obs_trace_begin(&u, 1.0, NULL, 0, &g);
    assert_string_not_equal(t.id, u.id); /* two made ids differ */
    assert_int_equal(u.tokens_in, -1);
    assert_null(u.cache);
}

static void test_marks_and_headers(void **st)
{
    (void)st;
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 100.0, "x1", 2, &g);
    obs_trace_mark(&t, OBS_AUTH, 100.0001);
    obs_trace_mark(&t, OBS_PARSE, 100.0021);
    obs_trace_mark(&t, OBS_CACHE, 100.0022);
    obs_trace_mark(&t, OBS_CACHE, 100.0032); /* adds up */
    obs_trace_first_token(&t, 100.0150);
    obs_trace_first_token(&t, 100.5); /* the first one counts */
    obs_trace_generated(&t, 100.2150, 31, 5, 0, 0.002, 0.012);
    buf_t b = {0};
    assert_int_equal(obs_trace_headers(&t, 100.2160, &b), 0);
    assert_string_equal(b.p, "X-Request-Id: x1\r\nServer-Timing: auth;dur=0.100, parse;dur=2.000, "
                             "cache;dur=1.100, queue;dur=2.000, prefill;dur=10.000, "
                             "ttft;dur=15.000, decode;dur=200.000, total;dur=216.000\r\n");
    obs_trace_end(&t, 100.2170, 200, 999);
    obs_trace_end(&t, 200.0, 500, 1); /* idempotent */
    assert_int_equal(t.status, 200);
    buf_clear(&b);
    obs_trace_json(&t, 0, &b);
    assert_non_null(strstr(b.p, "\"write\":2.000,\"total\":217.000}"));
    assert_non_null(strstr(b.p, "{\"auth\":0.100,"));
    assert_int_equal(t.tokens_in, 31);
    assert_int_equal(t.tokens_out, 5);
    buf_free(&b);
    /* strings are cut to their field */
    char longs[300];
    memset(longs, 'm', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    OBS_TRACE_SET(&t, model, longs);
    assert_int_equal(strlen(t.model), sizeof t.model - 1);
}

/* Durations as milliseconds with three decimals, from 0 to the 1e9 s cap,
 * each digit count of the integer part. */
static void test_durations_formatted(void **st)
{
    (void)st;
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 50.0, "d", 1, &g);
    obs_trace_set(&t, OBS_AUTH, 0);
    obs_trace_set(&t, OBS_PARSE, 0.0000006);
    obs_trace_set(&t, OBS_CACHE, 1.2345678);
    obs_trace_set(&t, OBS_QUEUE, 9.9999999);
    obs_trace_set(&t, OBS_PREFILL, 12345.6);
    obs_trace_set(&t, OBS_DECODE, 2e9);
    obs_trace_set(&t, OBS_WRITE, -1);
    buf_t b = {0};
    assert_int_equal(obs_trace_json(&t, 50.0, &b), 0);
    assert_string_equal(b.p, "{\"auth\":0.000,\"parse\":0.001,\"cache\":1234.568,"
                             "\"queue\":10000.000,\"prefill\":12345600.000,"
                             "\"decode\":1000000000000.000,\"write\":0.000,\"total\":0.000}");
    buf_free(&b);
}

static void test_access_log_line(void **st)
{
    (void)st;
    char path[] = "/tmp/test_trace_alogXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    obs_alog_t *l = NULL;
    bar_msg_t msg;
    assert_int_equal(obs_alog_open(&l, path, &msg), 0);
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 5.0, "q\"1", 3, &g);
    t.endpoint = "chat_completions";
    obs_trace_cache(&t, "L1");
    obs_trace_tokens(&t, 3, 4, 0);
    OBS_TRACE_SET(&t, model, "m\n\"x\"");
    OBS_TRACE_SET(&t, tenant, "acme");
    obs_trace_end(&t, 5.5, 200, 42);
    obs_alog_write(l, &t, "127.0.0.1", "POST", "/v1/chat/completions?a=\x01", 24);
    obs_alog_close(l);
    FILE *f = fopen(path, "r");
    char line[4096] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    assert_non_null(strstr(line, "\"id\":\"q\\\"1\""));
    assert_non_null(strstr(line, "\"model\":\"m\\u000a\\\"x\\\"\""));
    assert_non_null(strstr(line, "\"path\":\"/v1/chat/completions?a=\\u0001\""));
    assert_non_null(strstr(line, "\"status\":200"));
    assert_non_null(strstr(line, "\"cache\":\"L1\""));
    assert_non_null(strstr(line, "\"tokens_in\":3,\"tokens_out\":4"));
    assert_non_null(strstr(line, "\"tenant\":\"acme\""));
    assert_non_null(strstr(line, "\"fallback\":null"));
    assert_non_null(strstr(line, "\"total\":500.000}"));
    assert_non_null(strstr(line, "\"local\":false}"));
    assert_int_equal(line[strlen(line) - 1], '\n');
    assert_int_not_equal(obs_alog_open(&l, "/nonexistent-dir/x.log", &msg), 0);
    assert_non_null(strstr(msg.text, "access-log"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_valid),          cmocka_unit_test(test_begin_takes_or_makes),
        cmocka_unit_test(test_marks_and_headers), cmocka_unit_test(test_durations_formatted),
        cmocka_unit_test(test_access_log_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
