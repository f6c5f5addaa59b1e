/* test_upstream_sse.c — the upstream SSE parser (src/upstream/upstream_sse.c):
 * events split at every byte boundary give the same events, LF / CR / CRLF
 * line ends (a CRLF split across feeds too), multi-line data, comments and
 * other fields skipped, a callback stopping the feed, the line limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/upstream_sse.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct {
    buf_t out; /* events joined as "<data>|" */
    int n;
    int stop_at; /* stop (return 7) on this event, 0: never */
} rec_t;

static int on_ev(void *ud, const char *d, size_t n)
{
    rec_t *r = ud;
    buf_append(&r->out, d, n);
    buf_append(&r->out, "|", 1);
    r->n++;
    return r->n == r->stop_at ? 7 : 0;
}

/* Feed s in pieces of `step` bytes; the events as one string. */
static char *run(const char *s, size_t step, int *rc)
{
    rec_t r = {0};
    upsse_t p;
    upsse_init(&p, on_ev, &r);
    size_t n = strlen(s);
    *rc = 0;
    for (size_t i = 0; i < n && *rc == 0; i += step)
        *rc = upsse_feed(&p, s + i, i + step > n ? n - i : step);
    upsse_free(&p);
    buf_append(&r.out, "", 0);
    return buf_release(&r.out);
}

static void test_openai_stream(void **st)
{
    (void)st;
    const char *s = ": keep-alive\n\n"
                    "data: {\"a\":1}\n\n"
                    "event: message\nid: 7\nretry: 10\ndata: {\"b\":2}\n\n"
                    "data:no-space\r\n\r\n"
                    "data: line1\ndata: line2\r\rdata: [DONE]\n\n";
    const char *want = "{\"a\":1}|{\"b\":2}|no-space|line1\nline2|[DONE]|";
    for (size_t step = 1; step <= strlen(s); step++) {
        int rc;
        char *got = run(s, step, &rc);
        assert_int_equal(rc, 0);
        assert_string_equal(got, want);
        free(got);
    }
}

static void test_pending_and_blank(void **st)
{
    (void)st;
    upsse_t p;
    rec_t r = {0};
    upsse_init(&p, on_ev, &r);
    assert_int_equal(upsse_feed(&p, "\n\n\n", 3), 0); /* blank lines without data: nothing */
    assert_int_equal(r.n, 0);
    assert_int_equal(upsse_feed(&p, "data: x", 7), 0);
    assert_true(upsse_pending(&p)); /* a cut stream */
    assert_int_equal(upsse_feed(&p, "\r", 1), 0);
    assert_int_equal(upsse_feed(&p, "\n", 1), 0); /* the CRLF's LF: not a blank line */
    assert_int_equal(r.n, 0);
    assert_int_equal(upsse_feed(&p, "\n", 1), 0);
    assert_int_equal(r.n, 1);
    assert_false(upsse_pending(&p));
    upsse_free(&p);
    buf_free(&r.out);
}

static void test_stop_and_limit(void **st)
{
    (void)st;
    rec_t r = {.stop_at = 2};
    upsse_t p;
    upsse_init(&p, on_ev, &r);
    assert_int_equal(upsse_feed(&p, "data: 1\n\ndata: 2\n\ndata: 3\n\n", 27), 7);
    assert_int_equal(r.n, 2);
    upsse_free(&p);
    buf_free(&r.out);

    rec_t r2 = {0};
    upsse_init(&p, on_ev, &r2);
    size_t big = UPSSE_LINE_MAX + 10;
    char *line = malloc(big);
    assert_non_null(line);
    memset(line, 'x', big);
    memcpy(line, "data: ", 6);
    int rc = 0;
    for (size_t i = 0; i < big && rc == 0; i += 65536)
        rc = upsse_feed(&p, line + i, big - i < 65536 ? big - i : 65536);
    assert_int_equal(rc, BAR_ERR_RANGE);
    assert_int_equal(r2.n, 0);
    upsse_free(&p);
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream),
        cmocka_unit_test(test_pending_and_blank),
        cmocka_unit_test(test_stop_and_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
