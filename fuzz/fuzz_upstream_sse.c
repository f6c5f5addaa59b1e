/* fuzz_upstream_sse.c — libFuzzer target for what an upstream sends back:
 * the SSE parser (src/upstream/upstream_sse.c) and the chunk reader of
 * src/backend/backend_upstream.c (included, to reach its statics).
 *
 * The first byte picks a split step; the rest is fed whole and in pieces of
 * that step, and both ways must give the same events (same count, same
 * bytes) or the same error. Every event's data then goes through the
 * backend's chunk handler (on_sse) on a job whose callback checks each event:
 * DELTA text non-NULL and NUL-free as the handler promised (it takes cJSON
 * strings), counts never negative. Any violation abort()s. Not for: anything
 * but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/backend_upstream.c"
#include "fuzz_util.h"

typedef struct {
    buf_t all;
    int n;
} rec_t;

static int rec_ev(void *ud, const char *d, size_t n)
{
    rec_t *r = ud;
    r->n++;
    if (buf_append(&r->all, d, n) || buf_append(&r->all, "\x1e", 1)) abort();
    return 0;
}

static int run(const uint8_t *p, size_t n, size_t step, rec_t *r)
{
    upsse_t s;
    upsse_init(&s, rec_ev, r);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = upsse_feed(&s, (const char *)p + i, i + step > n ? n - i : step);
    upsse_free(&s);
    return rc;
}

static void on_job_event(void *user, const bk_event_t *ev)
{
    (void)user;
    if (ev->type == BK_EV_DELTA) {
        if (!ev->text) abort();
        if (memchr(ev->text, 0, ev->text_len)) abort();
        touch(ev->text, ev->text_len);
    } else if (ev->type != BK_EV_START) {
        abort(); /* on_sse never ends a job */
    }
}

/* Each event through the chunk reader, chat and completions. */
static void chunks(const rec_t *r)
{
    for (int chat = 0; chat < 2; chat++) {
        ups_t g = {0};
        job_t j = {0};
        j.g = &g;
        j.is_chat = chat;
        j.cb = on_job_event;
        j.t_submit = 1;
        j.winner = -1;
        attempt_t *at = &j.att[0];
        at->j = &j;
        const char *p = r->all.p, *end = p ? p + r->all.n : NULL;
        while (p && p < end) {
            const char *sep = memchr(p, '\x1e', (size_t)(end - p));
            if (!sep) abort();
            if (on_sse(at, p, (size_t)(sep - p))) break; /* stop: as the transfer would */
            p = sep + 1;
        }
        if (at->n_prompt < 0 || at->n_gen < 0 || at->n_cached < 0) abort();
        upsse_free(&at->sse);
        buf_free(&at->text); /* the chunk reader's scratch */
        buf_free(&at->held);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    data++;
    size--;
    rec_t whole = {0}, split = {0};
    int a = run(data, size, size ? size : 1, &whole);
    int b = run(data, size, step, &split);
    if (a != b) abort();
    if (a == 0 && (whole.n != split.n || whole.all.n != split.all.n ||
                   (whole.all.n && memcmp(whole.all.p, split.all.p, whole.all.n))))
        abort();
    if (a == 0) chunks(&whole);
    buf_free(&whole.all);
    buf_free(&split.all);
    return 0;
}
