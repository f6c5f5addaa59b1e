/* backend_upstream.c — a replica group of OpenAI-compatible upstreams behind
 * the backend interface (see backend_upstream.h for what it promises).
 *
 * A job owns at most one attempt at a time: a transfer to one replica plus
 * the SSE parser of its answer. START goes out when an upstream answers 2xx;
 * each chunk's text becomes a DELTA at once (from inside curl's write
 * callback: upstream_http defers whatever the pipeline does in reaction).
 * When the attempt ends before any DELTA went out and the failure is the
 * replica's (connect error, timeout, 408/429/5xx, a cut or malformed stream),
 * the job moves to another replica; otherwise DONE reports it. DONE for
 * cancelled jobs and for failures found inside bk_submit is delivered from a
 * zero-delay timer, never synchronously. Not for: client JSON or HTTP. */
#include "backend/backend_upstream.h"
#include "backend/backend_upstream_int.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/balance.h"
#include "upstream/upstream_chunk.h"
#include "upstream/upstream_http.h"
#include "upstream/upstream_sse.h"
#include "util/dlist.h"
#include "util/timeutil.h"

#define ERRBODY_MAX 2048   /* bytes of a failed upstream answer kept for the message */
#define RETRY_RATIO 0.2    /* retry budget: tokens earned per request */
#define RETRY_RESERVE 10.0 /* ... and its cap (also the start) */
#define CONNECT_TIMEOUT_MS 3000L
#define PRIORITY_BATCH 10 /* X-Priority: batch (docs/API.md) */

typedef struct job job_t;

/* One transfer of a job to one replica. */
typedef struct {
    job_t *j;
    int slot;       /* its index in j->att */
    replica_t *rep; /* NULL: not running */
    uphttp_xfer_t *x;
    upsse_t sse;
    long status;
    buf_t errbody;
    double t_start;
    double t_first; /* its first chunk came (mono seconds), 0: not yet */
    double t_text;  /* its first text came (0: not yet): the end of the upstream's own wait */
    int got_event;  /* a chunk came */
    int saw_done;   /* "[DONE]" came */
    int has_usage;
    int n_prompt, n_gen, n_cached;
    bk_finish_t finish;
    int is_hedge;
    buf_t held; /* whole jobs: the text so far, passed on at the end */
    buf_t text; /* a chunk's text (upchunk_read's scratch) */
    char stream_err[256];
} attempt_t;

struct job {
    ups_t *g;
    job_t *prev, *next;
    uint64_t id;
    bk_event_fn cb;
    void *user;
    int is_chat;
    int whole;  /* bk_req_t.whole: text is held until the attempt succeeds */
    int batch;  /* the request's priority is the batch class's (>= 10): X-Priority: batch */
    char *tail; /* the body after "model": ",...}" */
    size_t tail_len;
    attempt_t att[2]; /* [1]: a hedge or a retry while [0] runs */
    int winner;       /* the attempt whose text went out, -1: none yet */
    double hedge_at;  /* when to hedge (mono seconds), 0: never */
    unsigned tried;   /* bit i: replica i tried (first 32) */
    int n_tries;
    int started; /* START delivered */
    int sent;    /* a DELTA delivered: no retry from now on */
    double t_submit, t_first;
    const replica_t *served; /* the winner's replica, else the last one that failed */
    /* DONE owed by the kick timer */
    int done_pending;
    bk_finish_t done_finish;
    int done_err, done_status;
    char done_msg[512];
};

static const bk_ops_t OPS;

int backend_is_upstream(const backend_t *b)
{
    return b && b->ops == &OPS;
}

/* ---- health and balancing (src/control/balance.c) ---------------------------------------- */

static void rep_fail(replica_t *r, double now)
{
    ups_t *g = r->g;
    double s = bal_fail(&r->h, now, g->rt.allowed_fails, g->rt.cooldown_time);
    if (s > 0)
        fprintf(stderr,
                "barista serve: upstream %s of model %s ejected for %.1f s after %d failure(s)\n",
                r->base, g->name, s, r->h.fails);
}

static int untried(const job_t *j, int i)
{
    return i >= 32 || !(j->tried & (1u << i));
}

/* The replica for j's next attempt, or NULL when every one was tried. */
static replica_t *pick(ups_t *g, job_t *j)
{
    int i = bal_pick(g->hs, g->n_reps, j->tried, g->rt.strategy, &g->rng, time_now_mono());
    return i < 0 ? NULL : &g->reps[i];
}

/* ---- jobs -------------------------------------------------------------------------------- */

static void job_free(job_t *j)
{
    ups_t *g = j->g;
    DLIST_UNLINK(g->jobs, j);
    g->n_jobs--;
    for (int i = 0; i < 2; i++) {
        upsse_free(&j->att[i].sse);
        buf_free(&j->att[i].errbody);
        buf_free(&j->att[i].held);
        buf_free(&j->att[i].text);
    }
    free(j->tail);
    free(j);
}

static void on_kick(uv_timer_t *t);

/* End j from the kick timer (never from inside submit or cancel). */
static void defer_done(job_t *j, bk_finish_t fin, int err, int status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void defer_done(job_t *j, bk_finish_t fin, int err, int status, const char *fmt, ...)
{
    j->done_pending = 1;
    j->done_finish = fin;
    j->done_err = err;
    j->done_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->done_msg, sizeof j->done_msg, fmt, ap);
    va_end(ap);
    uv_timer_start(&j->g->kick, on_kick, 0, 0);
}

/* DONE with the counts of attempt a (NULL: none). */
static void deliver_done(job_t *j, const attempt_t *a, bk_finish_t fin, int err, int status,
                         const char *msg)
{
    bk_event_t ev = {0};
    ev.type = BK_EV_DONE;
    ev.finish = fin;
    ev.err = err;
    ev.status = status;
    ev.msg = msg && msg[0] ? msg : NULL;
    if (a) {
        ev.n_prompt = a->n_prompt;
        ev.n_gen = a->n_gen;
        ev.n_cached = a->n_cached;
    }
    ev.t_first_token = j->t_first > 0 ? j->t_first - j->t_submit : 0;
    double t1 = a ? (a->t_text > 0 ? a->t_text : a->t_first) : 0;
    if (a && t1 > a->t_start) {
        ev.t_upstream = t1 - a->t_start;
        ev.t_upstream_first = t1;
    }
    ev.replica = j->served ? j->served->base : NULL; /* the group outlives the callback */
    bk_event_fn cb = j->cb;
    void *user = j->user;
    job_free(j);
    cb(user, &ev);
}

static void on_kick(uv_timer_t *t)
{
    ups_t *g = t->data;
    for (;;) {
        job_t *j = g->jobs;
        while (j && !j->done_pending)
            j = j->next;
        if (!j) break;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", j->done_msg);
        const attempt_t *a = j->winner >= 0 ? &j->att[j->winner] : NULL;
        deliver_done(j, a, j->done_finish, j->done_err, j->done_status, msg);
    }
}

static int running(const attempt_t *a)
{
    return a->rep != NULL;
}

static void end_attempt(attempt_t *a)
{
    if (a->rep) {
        a->rep->h.inflight--;
        if (a->rep->h.probing && a->rep->h.until > 0) a->rep->h.probing = 0;
    }
    a->rep = NULL;
    a->x = NULL;
    upsse_free(&a->sse);
    buf_clear(&a->errbody);
}

/* Stop a running attempt without judging its replica (a lost hedge, a cancel). */
static void abort_attempt(attempt_t *a)
{
    if (!running(a)) return;
    if (a->x) uphttp_abort(a->x); /* closes the connection: the upstream stops generating */
    end_attempt(a);
}

static int start_attempt(job_t *j, int slot, bar_msg_t *msg);

/* The upstream's error message from a JSON error body, if any. */
static void upstream_reason(const char *p, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    if (!p || !n) return;
    cJSON *root = cJSON_ParseWithLength(p, n);
    const cJSON *e = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    if (!cJSON_IsString(m)) m = root ? cJSON_GetObjectItemCaseSensitive(root, "detail") : NULL;
    if (cJSON_IsString(m))
        snprintf(out, cap, "%.300s", m->valuestring);
    else {
        size_t k = 0;
        for (size_t i = 0; i < n && k + 1 < cap && k < 200; i++)
            out[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : ' ';
        out[k] = '\0';
    }
    cJSON_Delete(root);
}

static void deliver_start(job_t *j)
{
    if (j->started) return;
    j->started = 1;
    bk_event_t s = {0};
    s.type = BK_EV_START;
    j->cb(j->user, &s);
}

/* a's first text: it wins the job (the other attempt, if any, is stopped). */
static void win(attempt_t *a)
{
    job_t *j = a->j;
    if (j->winner >= 0) return;
    j->winner = a->slot;
    j->served = a->rep;
    j->hedge_at = 0;
    if (a->is_hedge) j->g->n_hedge_wins++;
    abort_attempt(&j->att[!a->slot]);
}

static void emit_delta(attempt_t *a, const char *text, size_t n)
{
    job_t *j = a->j;
    win(a);
    deliver_start(j);
    if (j->done_pending) return;
    if (!j->t_first) j->t_first = time_now_mono();
    j->sent = 1;
    bk_event_t ev = {0};
    ev.type = BK_EV_DELTA;
    ev.text = text;
    ev.text_len = n;
    j->cb(j->user, &ev);
}

static bk_finish_t finish_of(const char *s)
{
    if (!strcmp(s, "length")) return BK_FINISH_LENGTH;
    if (!strcmp(s, "tool_calls") || !strcmp(s, "function_call")) return BK_FINISH_TOOL_CALLS;
    return BK_FINISH_STOP;
}

/* A's replica sent its first chunk: a latency sample for P2C and hedging. */
static void first_byte(attempt_t *a)
{
    double now = time_now_mono();
    ups_t *g = a->j->g;
    a->t_first = now;
    if (a->rep) {
        bal_observe(&a->rep->h, now - a->t_start, now);
        bal_hist_observe(&a->rep->h.ttfb, now - a->t_start);
    }
    g->ttfb[g->n_ttfb % TTFB_RING] = now - a->t_start;
    g->n_ttfb++;
}

/* One SSE event of a 2xx answer. Non-zero stops the transfer. */
static int on_sse(void *ud, const char *data, size_t n)
{
    attempt_t *a = ud;
    job_t *j = a->j;
    if (j->done_pending) return 1;
    if (!a->got_event) {
        a->got_event = 1;
        first_byte(a);
    }
    if (n == 6 && !memcmp(data, "[DONE]", 6)) {
        a->saw_done = 1;
        return 0;
    }
    upchunk_t ck;
    if (upchunk_read(data, n, j->is_chat, &ck, &a->text) < 0) {
        snprintf(a->stream_err, sizeof a->stream_err, "a stream chunk is not JSON");
        return 1;
    }
    if (ck.has_error) {
        snprintf(a->stream_err, sizeof a->stream_err, "error in stream: %.200s", ck.error);
        return 1;
    }
    if (ck.has_usage) {
        if (ck.has_pt && ck.pt >= 0 && ck.pt < 1e9) a->n_prompt = (int)ck.pt;
        if (ck.has_ct && ck.ct >= 0 && ck.ct < 1e9) a->n_gen = (int)ck.ct;
        if (ck.has_cached && ck.cached >= 0 && ck.cached < 1e9) a->n_cached = (int)ck.cached;
        a->has_usage = 1;
    }
    int rc = 0;
    if (ck.has_c0) {
        if (ck.has_finish) a->finish = finish_of(ck.finish);
        if (ck.has_text && ck.text_len) {
            if (!a->t_text) a->t_text = time_now_mono();
            if (!a->has_usage) a->n_gen++; /* counted until the usage chunk says */
            if (j->whole) {
                win(a);
                if (buf_append(&a->held, ck.text, ck.text_len)) {
                    snprintf(a->stream_err, sizeof a->stream_err, "out of memory");
                    rc = 1;
                }
            } else {
                emit_delta(a, ck.text, ck.text_len);
                if (j->done_pending) rc = 1;
            }
        }
    }
    return rc;
}

/* START waits for the first text (or a clean end): until then a failure is
 * an HTTP error for the client, and a retry is invisible. */
static void on_status(void *ud, long status)
{
    attempt_t *a = ud;
    a->status = status;
}

static int on_data(void *ud, const char *p, size_t n)
{
    attempt_t *a = ud;
    if (a->j->done_pending) return 1;
    if (a->status < 200 || a->status >= 300) {
        size_t room = ERRBODY_MAX - a->errbody.n;
        if (room) buf_append(&a->errbody, p, n < room ? n : room);
        return 0;
    }
    int rc = upsse_feed(&a->sse, p, n);
    if (rc < 0 && !a->stream_err[0])
        snprintf(a->stream_err, sizeof a->stream_err, "a stream line longer than %u bytes",
                 UPSSE_LINE_MAX);
    return rc;
}

/* Whether another attempt may go out: nothing was passed on, a replica is
 * left, the request's retries and the group's budget allow it (takes a
 * token when it does). */
static int may_retry(job_t *j)
{
    ups_t *g = j->g;
    if (j->sent || g->closing || j->n_tries > g->rt.num_retries) return 0;
    int left = 0;
    for (int i = 0; i < g->n_reps; i++)
        if (untried(j, i)) left = 1;
    if (!left) return 0;
    if (g->retry_tokens < 1) {
        g->n_budget_denied++;
        return 0;
    }
    g->retry_tokens -= 1;
    g->n_retries++;
    return 1;
}

#define SVC_ALPHA 0.2 /* weight of a new sample in the group's service-time EWMAs */

/* A successful attempt's service time and time per token, for up_stats. */
static void measure(ups_t *g, const attempt_t *a, double now)
{
    double svc = now - a->t_start;
    g->svc_ewma = g->svc_ewma > 0 ? g->svc_ewma * (1 - SVC_ALPHA) + svc * SVC_ALPHA : svc;
    double tpot =
        (now - (a->t_first > 0 ? a->t_first : a->t_start)) / (a->n_gen > 1 ? a->n_gen - 1 : 1);
    if (tpot < 1e-6) tpot = 1e-6; /* measured: > 0 */
    g->tpot_ewma = g->tpot_ewma > 0 ? g->tpot_ewma * (1 - SVC_ALPHA) + tpot * SVC_ALPHA : tpot;
}

static void on_done(void *ud, uphttp_end_t end, long status, const char *why)
{
    attempt_t *a = ud;
    job_t *j = a->j;
    ups_t *g = j->g;
    replica_t *r = a->rep;
    double now = time_now_mono();
    a->x = NULL; /* finished: nothing to abort any more */
    if (status) a->status = status;
    int ok2xx = a->status >= 200 && a->status < 300;
    if (a->n_prompt + a->n_gen > 0) bal_count(&r->h, 0, (long long)a->n_prompt + a->n_gen, now);
    if (j->done_pending) { /* the pipeline cancelled from inside a callback */
        end_attempt(a);
        return;
    }
    bal_hist_observe(&r->h.total, now - a->t_start);
    if (end == UPHTTP_OK && ok2xx && !a->stream_err[0] && (a->saw_done || a->finish)) {
        if (!a->got_event) first_byte(a);
        measure(g, a, now);
        bal_ok(&r->h);
        win(a); /* an answer without text: it still wins */
        end_attempt(a);
        deliver_start(j);
        if (j->done_pending) return; /* cancelled from the START callback */
        if (a->held.n) {
            if (!j->t_first) j->t_first = time_now_mono();
            j->sent = 1;
            bk_event_t ev = {0};
            ev.type = BK_EV_DELTA;
            ev.text = a->held.p;
            ev.text_len = a->held.n;
            j->cb(j->user, &ev);
            if (j->done_pending) return;
        }
        deliver_done(j, a, a->finish ? a->finish : BK_FINISH_STOP, 0, 0, NULL);
        return;
    }
    /* what went wrong, naming the upstream (never its key) */
    char what[400], reason[320];
    int client_fault = 0, st = 502;
    if (end == UPHTTP_OK && !ok2xx) {
        upstream_reason(a->errbody.p, a->errbody.n, reason, sizeof reason);
        snprintf(what, sizeof what, "HTTP %ld%s%s", a->status, reason[0] ? ": " : "", reason);
        /* the request's fault: the same answer from every replica */
        client_fault = a->status >= 400 && a->status < 500 && a->status != 408 &&
                       a->status != 429 && a->status != 401 && a->status != 403;
        if (client_fault) st = 400;
    } else if (end == UPHTTP_OK || end == UPHTTP_STOPPED) {
        snprintf(what, sizeof what, "%s",
                 a->stream_err[0] ? a->stream_err : "the stream ended without [DONE]");
    } else if (end == UPHTTP_TIMEOUT) {
        snprintf(what, sizeof what, "timed out (%s)", why);
        st = 504;
    } else if (end == UPHTTP_CONNECT) {
        snprintf(what, sizeof what, "cannot connect (%s)", why);
    } else {
        snprintf(what, sizeof what, "connection broken (%s)", why);
    }
    if (j->winner < 0 || j->winner == a->slot) j->served = r;
    if (client_fault)
        bal_ok(&r->h); /* it answered: healthy */
    else
        rep_fail(r, now);
    char base[sizeof r->base];
    snprintf(base, sizeof base, "%s", r->base);
    int slot = a->slot;
    end_attempt(a);
    if (j->winner == slot && !j->sent) j->winner = -1; /* held text: start over */
    if (!client_fault && !j->sent && running(&j->att[!slot])) {
        /* the other attempt (a hedge) may still answer */
        fprintf(stderr, "barista serve: upstream %s (model %s): %s; the other attempt goes on\n",
                base, g->name, what);
        return;
    }
    if (!client_fault && may_retry(j)) {
        fprintf(stderr, "barista serve: upstream %s (model %s): %s; retrying on another replica\n",
                base, g->name, what);
        bar_msg_t m;
        if (start_attempt(j, slot, &m) == 0) return;
        snprintf(what, sizeof what, "%.390s", m.text);
    }
    char msg[1200];
    snprintf(msg, sizeof msg, "upstream %.300s (model %s): %s", base, g->name, what);
    deliver_done(j, a, BK_FINISH_ERROR, client_fault ? BAR_ERR_INVALID : BAR_ERR_IO, st, msg);
}

/* Start attempt `slot` of j on the replica pick() gives. */
static int start_attempt(job_t *j, int slot, bar_msg_t *msg)
{
    ups_t *g = j->g;
    attempt_t *a = &j->att[slot];
    for (;;) {
        replica_t *r = pick(g, j);
        if (!r) return bar_fail(msg, BAR_ERR_BUSY, "no replica left to try");
        if (r->idx < 32) j->tried |= 1u << r->idx;
        j->n_tries++;
        if (r->h.until > 0 && time_now_mono() >= r->h.until) r->h.probing = 1;
        /* {"model":"<id>" + tail */
        buf_t body = {0};
        if (buf_reserve(&body, 16 + strlen(r->model) + j->tail_len) ||
            buf_puts(&body, "{\"model\":") || buf_json_str(&body, r->model, strlen(r->model)) ||
            buf_append(&body, j->tail, j->tail_len)) {
            buf_free(&body);
            return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        }
        char url[sizeof r->base + 32];
        snprintf(url, sizeof url, "%s/%s", r->base,
                 j->is_chat ? "chat/completions" : "completions");
        uphttp_req_t hr = {0};
        hr.method = "POST";
        hr.url = url;
        hr.body = body.p;
        hr.body_len = body.n;
        hr.bearer = r->key;
        hr.header = j->batch ? "X-Priority: batch" : NULL;
        hr.timeout_ms = (long)((r->timeout > 0 ? r->timeout : 600) * 1000);
        hr.connect_timeout_ms = CONNECT_TIMEOUT_MS;
        hr.on_status = on_status;
        hr.on_data = on_data;
        hr.on_done = on_done;
        hr.ud = a;
        upsse_free(&a->sse);
        buf_clear(&a->errbody);
        buf_clear(&a->held);
        int is_hedge = a->is_hedge;
        memset(a, 0, offsetof(attempt_t, errbody)); /* j .. status */
        a->j = j;
        a->slot = slot;
        a->got_event = a->saw_done = a->has_usage = 0;
        a->n_prompt = a->n_gen = a->n_cached = 0;
        a->finish = BK_FINISH_NONE;
        a->is_hedge = is_hedge;
        a->stream_err[0] = '\0';
        upsse_init(&a->sse, on_sse, a);
        a->t_start = time_now_mono();
        a->t_first = 0;
        a->t_text = 0;
        a->rep = r;
        r->h.inflight++;
        r->h.n_req++;
        bal_count(&r->h, 1, 0, a->t_start);
        int rc = uphttp_start(g->http, &hr, &a->x, msg);
        buf_free(&body);
        if (rc == 0) return 0;
        r->h.inflight--;
        bal_count(&r->h, -1, 0, a->t_start);
        a->rep = NULL;
        if (rc == BAR_ERR_NOMEM) return rc;
    }
}

/* ---- hedging ----------------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* The group's p95 time to first byte over the recent samples, 0: too few. */
static double ttfb_p95(const ups_t *g)
{
    if (g->n_ttfb < HEDGE_MIN_SAMPLES) return 0;
    int n = g->n_ttfb < TTFB_RING ? g->n_ttfb : TTFB_RING;
    double v[TTFB_RING];
    memcpy(v, g->ttfb, (size_t)n * sizeof v[0]);
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    double p = v[(int)(0.95 * (n - 1))];
    return p < HEDGE_MIN_DELAY ? HEDGE_MIN_DELAY : p;
}

static void on_hedge(uv_timer_t *t);

static void arm_hedge(ups_t *g)
{
    double next = 0;
    for (job_t *j = g->jobs; j; j = j->next)
        if (j->hedge_at > 0 && (next == 0 || j->hedge_at < next)) next = j->hedge_at;
    if (next == 0) {
        uv_timer_stop(&g->hedge);
        return;
    }
    double d = next - time_now_mono();
    uv_timer_start(&g->hedge, on_hedge, d > 0 ? (uint64_t)(d * 1000) + 1 : 0, 0);
}

/* A healthy replica j has not tried. */
static int hedge_target(ups_t *g, const job_t *j)
{
    double now = time_now_mono();
    for (int i = 0; i < g->n_reps; i++)
        if (untried(j, i) && g->reps[i].h.until == 0) return 1;
    (void)now;
    return 0;
}

static void on_hedge(uv_timer_t *t)
{
    ups_t *g = t->data;
    double now = time_now_mono();
    for (job_t *j = g->jobs; j; j = j->next) {
        if (j->hedge_at == 0 || j->hedge_at > now) continue;
        j->hedge_at = 0;
        if (j->done_pending || j->sent || j->winner >= 0 || !running(&j->att[0]) ||
            running(&j->att[1]) || !hedge_target(g, j) || g->retry_tokens < 1)
            continue;
        g->retry_tokens -= 1;
        j->att[1].is_hedge = 1;
        bar_msg_t m;
        if (start_attempt(j, 1, &m) == 0) g->n_hedges++;
    }
    arm_hedge(g);
}

/* ---- active health checks --------------------------------------------------------------- */

static void on_health_done(void *ud, uphttp_end_t end, long status, const char *why)
{
    replica_t *r = ud;
    r->hc = NULL;
    double now = time_now_mono();
    if (end == UPHTTP_OK && status >= 200 && status < 300) {
        if (r->h.until > 0 || r->h.fails > 0) {
            fprintf(stderr,
                    "barista serve: upstream %s of model %s answers its health check: "
                    "back in rotation\n",
                    r->base, r->g->name);
            bal_ok(&r->h);
        }
        return;
    }
    if (r->h.until > now) return; /* ejected already: the check only brings it back */
    (void)why;
    rep_fail(r, now);
}

static void on_health(uv_timer_t *t)
{
    ups_t *g = t->data;
    if (g->closing) return;
    long to = (long)(g->rt.health_interval * 1000);
    if (to > 5000) to = 5000;
    for (int i = 0; i < g->n_reps; i++) {
        replica_t *r = &g->reps[i];
        if (r->hc) continue;
        char url[sizeof r->base + 16];
        snprintf(url, sizeof url, "%s/models", r->base);
        uphttp_req_t hr = {0};
        hr.method = "GET";
        hr.url = url;
        hr.bearer = r->key;
        hr.timeout_ms = to;
        hr.connect_timeout_ms = to < CONNECT_TIMEOUT_MS ? to : CONNECT_TIMEOUT_MS;
        hr.on_done = on_health_done;
        hr.ud = r;
        bar_msg_t m;
        if (uphttp_start(g->http, &hr, &r->hc, &m)) r->hc = NULL;
    }
}

/* ---- the vtable -------------------------------------------------------------------------- */

static int put1(buf_t *o, char c)
{
    return buf_append(o, &c, 1);
}

/* ", "key": v" with v a number written as cJSON writes one (an integer
 * as such, else the shortest of %.15g / %.17g that reads back the same). */
static int put_num(buf_t *o, const char *key, double v)
{
    char t[48];
    int n;
    if (!isfinite(v))
        n = snprintf(t, sizeof t, "null");
    else if (v > -1e15 && v < 1e15 && v == (double)(long long)v) { /* digits by hand */
        long long x = (long long)v;
        unsigned long long u = x < 0 ? 0ull - (unsigned long long)x : (unsigned long long)x;
        char r[24];
        int k = 0;
        do
            r[k++] = (char)('0' + u % 10);
        while (u /= 10);
        n = 0;
        if (x < 0) t[n++] = '-';
        while (k)
            t[n++] = r[--k];
    } else if (n = snprintf(t, sizeof t, "%.15g", v), strtod(t, NULL) != v)
        n = snprintf(t, sizeof t, "%.17g", v);
    return put1(o, ',') || buf_json_str(o, key, strlen(key)) || put1(o, ':') ||
           buf_append(o, t, (size_t)n);
}

/* The request as OpenAI JSON without "model": ",...}" into j->tail, written
 * straight into a buffer (no cJSON tree: this is every request's work). */
static int build_tail(job_t *j, const bk_req_t *q)
{
    const bk_sampling_t *sp = &q->sp;
    buf_t o = {0};
    int bad = 0;
    if (q->is_chat) {
        bad |= buf_puts(&o, ",\"messages\":[");
        for (int i = 0; i < q->n_msgs; i++) {
            const char *role = q->msgs[i].role ? q->msgs[i].role : "";
            bad |= buf_puts(&o, i ? ",{\"role\":" : "{\"role\":") ||
                   buf_json_str(&o, role, strlen(role)) || buf_puts(&o, ",\"content\":") ||
                   buf_json_str(&o, q->msgs[i].content ? q->msgs[i].content : "",
                                q->msgs[i].content_len) ||
                   put1(&o, '}');
        }
        bad |= put1(&o, ']');
    } else {
        bad |= buf_puts(&o, ",\"prompt\":") ||
               buf_json_str(&o, q->prompt ? q->prompt : "", q->prompt_len);
    }
    if (sp->max_tokens > 0) bad |= put_num(&o, "max_tokens", sp->max_tokens);
    bad |= put_num(&o, "temperature", sp->temperature);
    bad |= put_num(&o, "top_p", sp->top_p);
    if (sp->top_k > 0) bad |= put_num(&o, "top_k", sp->top_k);
    if (sp->min_p > 0) bad |= put_num(&o, "min_p", sp->min_p);
    if (sp->repeat_penalty != 1.0 && sp->repeat_penalty > 0)
        bad |= put_num(&o, "repeat_penalty", sp->repeat_penalty);
    if (sp->presence_penalty != 0) bad |= put_num(&o, "presence_penalty", sp->presence_penalty);
    if (sp->frequency_penalty != 0) bad |= put_num(&o, "frequency_penalty", sp->frequency_penalty);
    /* the seed as the client gave it (the parser keeps a negative one as its
     * two's complement) */
    if (sp->has_seed) bad |= buf_printf(&o, ",\"seed\":%lld", (long long)(int64_t)sp->seed);
    if (sp->ignore_eos) bad |= buf_puts(&o, ",\"ignore_eos\":true");
    if (sp->n_stop > 0) {
        bad |= buf_puts(&o, ",\"stop\":[");
        for (int i = 0; i < sp->n_stop; i++)
            bad |= (i && put1(&o, ',')) || buf_json_str(&o, sp->stop[i], strlen(sp->stop[i]));
        bad |= put1(&o, ']');
    }
    bad |= buf_puts(&o, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    if (bad) {
        buf_free(&o);
        return BAR_ERR_NOMEM;
    }
    j->tail_len = o.n;
    j->tail = buf_release(&o);
    return 0;
}

static int up_submit(backend_t *b, const bk_req_t *q, uint64_t *id, bar_msg_t *msg)
{
    ups_t *g = (ups_t *)b;
    if (g->closing) return bar_fail(msg, BAR_ERR_BUSY, "shutting down");
    if (q->sp.n > 1)
        return bar_fail(msg, BAR_ERR_INVALID, "n: an upstream model serves n = 1 only");
    if (q->sp.logprobs)
        return bar_fail(msg, BAR_ERR_INVALID, "logprobs: not passed through to upstreams yet");
    if (q->sp.n_logit_bias > 0)
        return bar_fail(msg, BAR_ERR_INVALID, "logit_bias: not passed through to upstreams");
    if (q->tools || q->sp.constraint)
        return bar_fail(msg, BAR_ERR_INVALID,
                        "tools/response_format: not passed through to upstreams yet");
    job_t *j = calloc(1, sizeof *j);
    if (!j) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    j->g = g;
    j->id = ++g->next_id;
    j->cb = q->cb;
    j->user = q->user;
    j->is_chat = q->is_chat;
    j->whole = q->whole;
    j->batch = q->priority >= PRIORITY_BATCH;
    j->t_submit = time_now_mono();
    if (build_tail(j, q)) {
        free(j);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    DLIST_PUSH(g->jobs, j);
    g->n_jobs++;
    g->retry_tokens += RETRY_RATIO;
    if (g->retry_tokens > RETRY_RESERVE) g->retry_tokens = RETRY_RESERVE;
    j->winner = -1;
    bar_msg_t m = {{0}};
    if (start_attempt(j, 0, &m)) {
        defer_done(j, BK_FINISH_ERROR, BAR_ERR_BUSY, 503, "upstream model %s: %s", g->name, m.text);
    } else if (g->rt.hedge && g->n_reps > 1) {
        double p95 = ttfb_p95(g);
        if (p95 > 0) {
            j->hedge_at = j->t_submit + p95;
            arm_hedge(g);
        }
    }
    *id = j->id;
    return 0;
}

static void up_cancel(backend_t *b, uint64_t id)
{
    ups_t *g = (ups_t *)b;
    for (job_t *j = g->jobs; j; j = j->next) {
        if (j->id != id || j->done_pending) continue;
        abort_attempt(&j->att[0]);
        abort_attempt(&j->att[1]);
        j->hedge_at = 0;
        defer_done(j, BK_FINISH_CANCELLED, 0, 0, "%s", "");
        return;
    }
}

/* The wait estimate (docs/GATEWAY.md "Admission"): with C = the group's
 * capacity (the sum of its replicas' max_parallel_requests; unknown when one
 * lacks it) and N attempts in flight, a request sent now is the
 * (N - C + 1)-th to wait for one of C slots, each freed after the service
 * time S: wait = (N - C + 1) × S / C when N >= C, else 0. S is the group's
 * EWMA of attempt durations, or the age of its oldest attempt in flight when
 * that is longer (a group that slowed down shows it before its answers are
 * back). */
static void up_stats(backend_t *b, bk_stats_t *out)
{
    ups_t *g = (ups_t *)b;
    memset(out, 0, sizeof *out);
    out->kind = "upstream";
    out->n_jobs = g->n_jobs;
    double now = time_now_mono();
    int act = 0, limited = 1;
    long long cap = 0;
    for (int i = 0; i < g->n_reps; i++) {
        const replica_t *r = &g->reps[i];
        act += r->h.inflight;
        cap = cap < 0 || r->max_par <= 0 ? -1 : cap + r->max_par;
        if (!bal_over_limit(&r->h, now)) limited = 0;
    }
    out->n_active = act;
    out->n_slots = cap > 0 && cap < 1 << 30 ? (int)cap : g->n_reps;
    out->s_per_output_token = g->tpot_ewma;
    out->s_per_prompt_token = 0; /* inside the upstream's first byte, not measurable here */
    if (limited && g->n_reps > 0) out->rate_wait = bal_limit_reset(now);
    if (cap <= 0 || act < cap) return;
    double svc = g->svc_ewma;
    for (const job_t *j = g->jobs; j; j = j->next)
        for (int k = 0; k < 2; k++)
            if (running(&j->att[k]) && now - j->att[k].t_start > svc) svc = now - j->att[k].t_start;
    out->n_waiting = (int)(act - cap);
    out->est_wait = (double)(act - cap + 1) * svc / (double)cap;
}

static int up_count_tokens(backend_t *b, const bk_req_t *q, size_t *n, bar_msg_t *msg)
{
    (void)b;
    (void)msg;
    size_t bytes = q->prompt_len;
    for (int i = 0; q->is_chat && i < q->n_msgs; i++)
        bytes += q->msgs[i].content_len + 4;
    *n = bytes / 4 + 1; /* an estimate: the upstream's tokenizer is not here */
    return 0;
}

static void on_kick_closed(uv_handle_t *h)
{
    ups_t *g = h->data;
    if (--g->open_handles == 0) free(g);
}

static void up_destroy(backend_t *b)
{
    ups_t *g = (ups_t *)b;
    g->closing = 1;
    for (job_t *j = g->jobs; j; j = j->next) {
        abort_attempt(&j->att[0]);
        abort_attempt(&j->att[1]);
    }
    while (g->jobs) {
        job_t *j = g->jobs;
        deliver_done(j, NULL, BK_FINISH_CANCELLED, 0, 0, NULL);
    }
    uv_timer_stop(&g->health);
    for (int i = 0; i < g->n_reps; i++)
        if (g->reps[i].hc) uphttp_abort(g->reps[i].hc);
    uphttp_destroy(g->http);
    for (int i = 0; i < g->n_reps; i++) {
        if (g->reps[i].key) {
            memset(g->reps[i].key, 0, strlen(g->reps[i].key));
            free(g->reps[i].key);
        }
    }
    free(g->reps);
    free(g->hs);
    uv_timer_stop(&g->kick);
    uv_timer_stop(&g->hedge);
    uv_close((uv_handle_t *)&g->kick, on_kick_closed);
    uv_close((uv_handle_t *)&g->hedge, on_kick_closed);
    uv_close((uv_handle_t *)&g->health, on_kick_closed);
}

static const bk_ops_t OPS = {
    .submit = up_submit,
    .cancel = up_cancel,
    .stats = up_stats,
    .count_tokens = up_count_tokens,
    .embed = NULL,
    .destroy = up_destroy,
};

/* api_base + "/v1" unless it ends in /v1 already; no trailing '/'. */
static void make_base(char *out, size_t cap, const char *api_base)
{
    size_t n = strlen(api_base);
    while (n && api_base[n - 1] == '/')
        n--;
    int has_v1 = n >= 3 && !memcmp(api_base + n - 3, "/v1", 3);
    snprintf(out, cap, "%.*s%s", (int)n, api_base, has_v1 ? "" : "/v1");
}

int backend_upstream_create(backend_t **out, uv_loop_t *loop, const model_list_t *l, int entry,
                            bar_msg_t *msg)
{
    int n = 0;
    for (int i = 0; i < l->n_ups; i++)
        if (l->ups[i].entry == entry) n++;
    const char *name = l->v[entry].name;
    if (n == 0) return bar_fail(msg, BAR_ERR_INVALID, "model %s has no upstream entries", name);
    ups_t *g = calloc(1, sizeof *g);
    if (!g) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    g->reps = calloc((size_t)n, sizeof *g->reps);
    g->hs = calloc((size_t)n, sizeof *g->hs);
    if (!g->reps || !g->hs) {
        free(g->reps);
        free(g->hs);
        free(g);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    g->base.ops = &OPS;
    g->loop = loop;
    snprintf(g->name, sizeof g->name, "%s", name);
    if (l->has_router)
        g->rt = l->router;
    else
        g->rt = (model_router_t){ROUTE_LATENCY, 2, 3, 5.0, 0, 0};
    if (g->rt.allowed_fails < 1) g->rt.allowed_fails = 1;
    g->retry_tokens = RETRY_RESERVE;
    g->rng = (uint64_t)(time_now_mono() * 1e9) ^ (uint64_t)(uintptr_t)g ^ 0x9E3779B97F4A7C15ull;
    if (!g->rng) g->rng = 1;
    int rc = 0;
    for (int i = 0; i < l->n_ups && rc == 0; i++) {
        const model_upstream_t *u = &l->ups[i];
        if (u->entry != entry) continue;
        replica_t *r = &g->reps[g->n_reps];
        r->g = g;
        r->idx = g->n_reps;
        make_base(r->base, sizeof r->base, u->api_base);
        snprintf(r->model, sizeof r->model, "%s", u->model);
        r->timeout = u->timeout;
        r->h.weight = u->weight > 0 ? u->weight : 1;
        r->h.rpm = u->rpm;
        r->h.tpm = u->tpm;
        r->max_par = u->max_parallel < 1 << 20 ? u->max_parallel : 1 << 20;
        g->hs[g->n_reps] = &r->h;
        const char *key = u->api_key;
        if (!strncmp(key, "os.environ/", 11)) {
            const char *v = getenv(key + 11);
            if (!v)
                rc = bar_fail(msg, BAR_ERR_INVALID,
                              "model %s: api_key names the environment variable %.100s, which "
                              "is not set",
                              name, key + 11);
            key = v ? v : "";
        }
        if (rc == 0 && key[0] && !(r->key = strdup(key)))
            rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        g->n_reps++;
    }
    if (rc == 0) rc = uphttp_create(&g->http, loop, 64 + 8 * n, msg);
    if (rc) {
        for (int i = 0; i < g->n_reps; i++)
            free(g->reps[i].key);
        free(g->reps);
        free(g->hs);
        free(g);
        return rc;
    }
    uv_timer_init(loop, &g->kick);
    g->kick.data = g;
    uv_timer_init(loop, &g->hedge);
    g->hedge.data = g;
    uv_timer_init(loop, &g->health);
    g->health.data = g;
    g->open_handles = 3;
    if (g->rt.health_interval > 0) {
        uint64_t ms = (uint64_t)(g->rt.health_interval * 1000);
        uv_timer_start(&g->health, on_health, ms, ms);
    }
    *out = &g->base;
    return 0;
}
