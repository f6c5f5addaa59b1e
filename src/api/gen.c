/* gen.c — generation requests: OpenAI request → tokens → engine_submit, and
 * engine events → the HTTP response (one JSON object, or an SSE stream).
 *
 * Threading: the engine calls gen_engine_cb on its own thread; the callback
 * copies the event into api.ev_* under api.mu and wakes the loop with
 * uv_async_send. Everything else here runs on the loop.
 *
 * Back-pressure: a streamed token is written at once when the connection's
 * unsent bytes are under the bound; otherwise its text is appended to the
 * generation's pending text and the next drain writes all of it as one chunk.
 * Pending text is bounded by stream-buffer-bytes: past it the reader is too
 * slow and the generation is cancelled.
 *
 * Lifetime: a gen_t lives from submit until the engine's DONE event has been
 * handled, even if its client left earlier (the engine may still call back
 * with it). Not for: HTTP framing (server/), JSON schema (openai.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_cache.h"
#include "api/api_int.h"
#include "engine/chat.h"
#include "engine/tokenizer.h"
#include "server/sse.h"
#include "util/timeutil.h"

/* one token's logprob entry; strings live in lp_list_t.text */
typedef struct {
    size_t off, len;
    double logprob;
    int n_top, top0; /* tops[top0 .. top0+n_top) */
} lp_item_t;

typedef struct {
    size_t off, len;
    double logprob;
} lp_top_t;

typedef struct {
    buf_t text;
    lp_item_t *items;
    int n, cap;
    lp_top_t *tops;
    int n_tops, cap_tops;
} lp_list_t;

typedef struct client client_t;

/* One HTTP request for a generation: the miss that started it, a twin that
 * joined it (single-flight), or a request waiting for its L2 lookup. */
struct client {
    api_t *a;
    gen_t *g;       /* the generation it follows; NULL while waiting for L2 */
    client_t *next; /* in g->clients */
    srv_req_t *r;   /* NULL once answered or once the client is gone */
    sse_t *sse;     /* streaming only, once started */
    oai_req_t q;    /* parsed request (moved to the generation on a miss) */
    oai_kind_t kind;
    int stream, include_usage, want_lp;
    int started; /* the response head is out (SSE) or owed (JSON) */
    api_cache_req_t cq;
    const char *xcache; /* "MISS" | "COALESCED" | "BYPASS"; NULL: cache off */
    cache_redis_op_t *l2op;
    oai_resp_t resp;
    char id[48];
    buf_t text;   /* non-stream: all text; stream: not yet written */
    lp_list_t lp; /* same split as text */
};

/* One engine generation, answering one or more clients. */
struct gen {
    api_t *a;
    gen_t *prev, *next;
    client_t *clients; /* join order; the first one started it */
    oai_req_t q;       /* the request that started it (prompt, sampling) */
    uint64_t req_id;
    long created;
    int cancel_sent;
    int submitted; /* engine_submit succeeded: a DONE event will come */
    int failed;    /* prepare() failed: err says why */
    oai_err_t err;
    uv_work_t work; /* prepare() on the thread pool for big prompts */
    int32_t *toks;
    size_t n_tok;
    gen_ev_t *done_ev; /* preallocated DONE event (handed to the queue by the engine callback) */
    /* cache: recorded when the request is cacheable */
    api_cache_req_t cq;
    cache_rec_t *rec;
    sf_entry_t *sfe; /* single-flight record twins join; NULL when none */
};
struct gen_ev {
    gen_ev_t *next;
    gen_t *g;
    engine_ev_type_t type;
    int token;
    float logprob;
    int n_top;
    engine_top_t *top;
    engine_finish_t finish;
    int err;
    char *msg;
    int n_prompt, n_cached, n_gen;
    double t_first_token;
    size_t text_len;
    char *text;
    /* text, top[], msg follow */
};

#define DONE_MSG_MAX 400
#define PREPARE_INLINE_MAX 8192 /* bodies above this are tokenized off the loop */

/* ---- logprob list ---- */

static void lp_clear(lp_list_t *l)
{
    buf_clear(&l->text);
    l->n = 0;
    l->n_tops = 0;
}

static void lp_free(lp_list_t *l)
{
    buf_free(&l->text);
    free(l->items);
    free(l->tops);
    memset(l, 0, sizeof *l);
}

/* Append one token's logprob entry (copied). */
static int lp_push(lp_list_t *l, const cache_lp_t *x)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        lp_item_t *p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->items = p;
        l->cap = cap;
    }
    if (l->n_tops + x->n_top > l->cap_tops) {
        int cap = l->cap_tops ? l->cap_tops : 16;
        while (cap < l->n_tops + x->n_top)
            cap *= 2;
        lp_top_t *p = realloc(l->tops, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->tops = p;
        l->cap_tops = cap;
    }
    lp_item_t *it = &l->items[l->n++];
    it->off = l->text.n;
    it->len = x->token_len;
    buf_append(&l->text, x->token, x->token_len);
    it->logprob = x->logprob;
    it->top0 = l->n_tops;
    it->n_top = x->n_top;
    for (int k = 0; k < x->n_top; k++) {
        lp_top_t *t = &l->tops[l->n_tops++];
        t->off = l->text.n;
        t->len = x->top[k].len;
        buf_append(&l->text, x->top[k].token, x->top[k].len);
        t->logprob = x->top[k].logprob;
    }
    return 0;
}

/* Build the oai_logprob_t view of a list; the arrays are heap (free with lp_view_free). */
typedef struct {
    oai_logprob_t *v;
    const char **tt;
    size_t *tl;
    double *tlp;
} lp_view_t;

static int lp_view(const lp_list_t *l, lp_view_t *out)
{
    memset(out, 0, sizeof *out);
    if (!l->n) return 0;
    out->v = calloc((size_t)l->n, sizeof *out->v);
    out->tt = calloc((size_t)l->n_tops + 1, sizeof *out->tt);
    out->tl = calloc((size_t)l->n_tops + 1, sizeof *out->tl);
    out->tlp = calloc((size_t)l->n_tops + 1, sizeof *out->tlp);
    if (!out->v || !out->tt || !out->tl || !out->tlp) return -1;
    for (int k = 0; k < l->n_tops; k++) {
        out->tt[k] = l->text.p + l->tops[k].off;
        out->tl[k] = l->tops[k].len;
        out->tlp[k] = l->tops[k].logprob;
    }
    for (int i = 0; i < l->n; i++) {
        const lp_item_t *it = &l->items[i];
        out->v[i] = (oai_logprob_t){l->text.p + it->off, it->len,
                                    it->logprob,         it->n_top,
                                    out->tt + it->top0,  out->tl + it->top0,
                                    out->tlp + it->top0};
    }
    return 0;
}

static void lp_view_free(lp_view_t *v)
{
    free(v->v);
    free(v->tt);
    free(v->tl);
    free(v->tlp);
}

/* ---- engine thread side ---- */

static void gen_engine_cb(void *user, const engine_event_t *ev)
{
    gen_t *g = user;
    api_t *a = g->a;
    size_t msg_len = ev->msg ? strlen(ev->msg) : 0;
    if (msg_len > DONE_MSG_MAX) msg_len = DONE_MSG_MAX;
    int n_top = ev->n_top > 0 && ev->top ? ev->n_top : 0;
    size_t text_len = ev->type == ENGINE_EV_DONE ? 0 : ev->text_len;
    size_t sz =
        sizeof(gen_ev_t) + (size_t)n_top * sizeof(engine_top_t) + text_len + 1 + msg_len + 1;
    gen_ev_t *e;
    if (ev->type == ENGINE_EV_DONE) {
        /* preallocated at submit: the DONE event cannot be lost to OOM */
        e = g->done_ev;
        g->done_ev = NULL;
        n_top = 0;
        if (msg_len > DONE_MSG_MAX) msg_len = DONE_MSG_MAX;
    } else {
        e = malloc(sz);
        if (!e) return; /* drop one token's event under OOM */
    }
    memset(e, 0, sizeof *e);
    char *p = (char *)(e + 1);
    e->top = (engine_top_t *)p;
    if (n_top) memcpy(e->top, ev->top, (size_t)n_top * sizeof(engine_top_t));
    p += (size_t)n_top * sizeof(engine_top_t);
    e->text = p;
    if (text_len) memcpy(e->text, ev->text, text_len);
    e->text[text_len] = '\0';
    p += text_len + 1;
    e->msg = p;
    if (msg_len) memcpy(e->msg, ev->msg, msg_len);
    e->msg[msg_len] = '\0';
    e->g = g;
    e->type = ev->type;
    e->token = ev->token;
    e->logprob = ev->logprob;
    e->n_top = n_top;
    e->finish = ev->finish;
    e->err = ev->err;
    e->n_prompt = ev->n_prompt;
    e->n_cached = ev->n_cached;
    e->n_gen = ev->n_gen;
    e->t_first_token = ev->t_first_token;
    e->text_len = text_len;
    pthread_mutex_lock(&a->mu);
    if (a->ev_tail)
        a->ev_tail->next = e;
    else
        a->ev_head = e;
    a->ev_tail = e;
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->async);
}

/* ---- loop side: clients ---- */

static void make_id(api_t *a, char *out, size_t size, const char *prefix)
{
    uint64_t x = a->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    a->rng = x;
    uint64_t y = x * 0x9E3779B97F4A7C15ull;
    snprintf(out, size, "%s%016llx%08llx", prefix, (unsigned long long)y,
             (unsigned long long)(x >> 32));
}

static void client_free(client_t *c)
{
    oai_req_free(&c->q);
    buf_free(&c->text);
    lp_free(&c->lp);
    sse_close(c->sse);
    free(c);
}

/* Remove c from its generation's list (not from single-flight). */
static void client_unlink(client_t *c)
{
    gen_t *g = c->g;
    if (!g) return;
    for (client_t **pp = &g->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = NULL;
    c->g = NULL;
}

/* Append NUL-terminated s at *p, not past end. */
static void hdr_put(char **p, const char *end, const char *s)
{
    size_t n = strlen(s);
    if (n > (size_t)(end - *p)) n = (size_t)(end - *p);
    memcpy(*p, s, n);
    *p += n;
}

/* The X-Cache headers of a reply to c. tier/age only for hits. Built with
 * plain copies (this runs on every hit). */
static void cache_headers(const client_t *c, const char *xcache, const char *tier, long long age,
                          char *out, size_t size)
{
    out[0] = '\0';
    if (!xcache || size < 2) return;
    char *p = out, *end = out + size - 1;
    hdr_put(&p, end, "X-Cache: ");
    hdr_put(&p, end, xcache);
    hdr_put(&p, end, "\r\n");
    if (tier) {
        char num[24], *d = num + sizeof num;
        unsigned long long v = age < 0 ? 0 : (unsigned long long)age;
        *--d = '\0';
        do
            *--d = (char)('0' + v % 10);
        while (v /= 10);
        hdr_put(&p, end, "X-Cache-Tier: ");
        hdr_put(&p, end, tier);
        hdr_put(&p, end, "\r\nAge: ");
        hdr_put(&p, end, d);
        hdr_put(&p, end, "\r\n");
    }
    if (c->cq.cacheable) {
        hdr_put(&p, end, "X-Cache-Key: ");
        hdr_put(&p, end, c->cq.hex);
        hdr_put(&p, end, "\r\n");
    }
    *p = '\0';
}

static void gen_cancel(gen_t *g, const char *reason)
{
    if (g->cancel_sent || !g->submitted) return;
    g->cancel_sent = 1;
    obs_metrics_cancelled(g->a->metrics, reason);
    engine_cancel(g->a->engine, g->req_id);
}

void gen_cancel_all(api_t *a)
{
    for (gen_t *g = a->gens; g; g = g->next)
        gen_cancel(g, "shutdown");
}

/* Single-flight: the last subscriber of a generation left. */
void gen_on_sf_empty(void *ctx, sf_entry_t *e)
{
    (void)ctx;
    gen_cancel(sf_data(e), "disconnect");
}

static sf_t *api_sf(api_t *a)
{
    return a->cache && !a->cache->closing ? a->cache->sf : NULL;
}

/* c leaves its generation (gone, or dropped as too slow) and is freed. */
static void client_leave(client_t *c, const char *reason)
{
    gen_t *g = c->g;
    client_unlink(c);
    if (g && g->sfe && api_sf(g->a))
        sf_leave(g->sfe, c); /* the last one out cancels (gen_on_sf_empty) */
    else if (g && !g->clients)
        gen_cancel(g, reason);
    client_free(c);
}

/* Write the pending text (and logprobs) as one chunk. final: ignore the
 * back-pressure bound (the stream is ending; what is pending is bounded).
 * May free c (a too-slow reader of a shared generation): touch c no more. */
static void stream_flush(client_t *c, int final)
{
    if (!c->r || !c->sse) return;
    if (c->text.n == 0 && (!final || c->lp.n == 0)) return;
    if (!final && !sse_writable(c->sse)) {
        if (c->text.n > (size_t)c->a->set->stream_buffer_bytes) {
            gen_t *g = c->g;
            if (g && g->clients == c && !c->next) {
                gen_cancel(g, "slow_reader"); /* alone: end the generation as before */
            } else {
                obs_metrics_cancelled(c->a->metrics, "slow_reader");
                srv_req_set_user(c->r, NULL, NULL, NULL);
                sse_end(c->sse);
                c->r = NULL;
                client_leave(c, "slow_reader");
            }
        }
        return;
    }
    lp_view_t v;
    lp_view(&c->lp, &v);
    buf_t out = {0};
    oai_format_chunk(&out, &c->resp, 0, c->text.p, c->text.n, OAI_FINISH_NONE, NULL, v.v, c->lp.n,
                     c->want_lp);
    lp_view_free(&v);
    sse_write(c->sse, out.p, out.n);
    buf_free(&out);
    buf_clear(&c->text);
    lp_clear(&c->lp);
}

static void on_drain(void *user, srv_req_t *r)
{
    (void)r;
    stream_flush(user, 0);
}

static void on_abort(void *user, srv_req_t *r)
{
    client_t *c = user;
    api_t *a = c->a;
    (void)r;
    c->r = NULL;
    if (c->sse) sse_detach(c->sse);
    if (c->l2op) {
        /* waiting for Redis: no generation yet */
        if (a->cache && a->cache->l2) cache_redis_cancel(a->cache->l2, c->l2op);
        c->l2op = NULL;
        client_free(c);
        return;
    }
    if (!c->g) {
        client_free(c);
        return;
    }
    client_leave(c, "disconnect");
}

/* Add one token's text and logprob to c's pending output. */
static void client_push(client_t *c, const char *text, size_t len, const cache_lp_t *lp, int n_lp)
{
    if (c->want_lp)
        for (int i = 0; i < n_lp; i++)
            lp_push(&c->lp, &lp[i]);
    if (len) buf_append(&c->text, text, len);
}

/* Start c's response (the generation is submitted): the SSE head and role
 * chunk, then what the generation produced before c joined. May free c. */
static int client_start(client_t *c)
{
    api_t *a = c->a;
    gen_t *g = c->g;
    c->started = 1;
    make_id(a, c->id, sizeof c->id, c->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    c->resp = (oai_resp_t){c->kind, c->id, g->created, a->model_id};
    if (c->stream) {
        char hdr[256];
        cache_headers(c, c->xcache, NULL, 0, hdr, sizeof hdr);
        c->sse = sse_open(c->r, (uint64_t)a->set->sse_ping_ms, hdr);
        if (!c->sse) return -1;
        if (c->kind == OAI_CHAT) {
            buf_t out = {0};
            oai_format_chunk(&out, &c->resp, 1, NULL, 0, OAI_FINISH_NONE, NULL, NULL, 0, 0);
            sse_write(c->sse, out.p, out.n);
            buf_free(&out);
        }
    }
    if (g->rec && cache_rec_n_chunks(g->rec) > 0) {
        /* a twin joined late: catch up with what is recorded so far */
        cache_meta_t m = {0};
        m.key = g->cq.key;
        m.model = a->model_id;
        cache_entry_t *e = cache_rec_build(g->rec, &m);
        if (e) {
            client_push(c, e->text, e->text_len, e->lp, e->n_lp);
            cache_entry_release(e);
        }
        if (c->stream) stream_flush(c, 0);
    }
    return 0;
}

/* ---- hits: replies from a stored entry ---- */

/* The oai_logprob_t view of entry logprob items [lp, lp + n). */
static int entry_lp_view(const cache_lp_t *lp, int n, lp_view_t *out)
{
    memset(out, 0, sizeof *out);
    if (n <= 0) return 0;
    int n_tops = 0;
    for (int i = 0; i < n; i++)
        n_tops += lp[i].n_top;
    out->v = calloc((size_t)n, sizeof *out->v);
    out->tt = calloc((size_t)n_tops + 1, sizeof *out->tt);
    out->tl = calloc((size_t)n_tops + 1, sizeof *out->tl);
    out->tlp = calloc((size_t)n_tops + 1, sizeof *out->tlp);
    if (!out->v || !out->tt || !out->tl || !out->tlp) return -1;
    int t = 0;
    for (int i = 0; i < n; i++) {
        out->v[i] = (oai_logprob_t){lp[i].token, lp[i].token_len, lp[i].logprob, lp[i].n_top,
                                    out->tt + t, out->tl + t,     out->tlp + t};
        for (int k = 0; k < lp[i].n_top; k++, t++) {
            out->tt[t] = lp[i].top[k].token;
            out->tl[t] = lp[i].top[k].len;
            out->tlp[t] = lp[i].top[k].logprob;
        }
    }
    return 0;
}

/* Answer c from e at once (JSON object or the whole SSE stream) and free c.
 * Never leaves the loop thread. */
static void reply_entry(client_t *c, cache_entry_t *e, const char *tier)
{
    api_t *a = c->a;
    srv_req_t *r = c->r;
    c->r = NULL;
    srv_req_set_user(r, NULL, NULL, NULL);
    long long age = (api_cache_now_ms() - e->stored_ms) / 1000;
    if (age < 0) age = 0;
    char hdr[320];
    cache_headers(c, "HIT", tier, age, hdr, sizeof hdr);
    buf_t out = {0};
    unsigned tag = (unsigned)c->kind << 1 | (c->want_lp ? 1u : 0u);
    if (!c->stream && e->memo && e->memo_tag == tag) {
        /* the reply rendered by an earlier hit of this entry, sent as it is */
        srv_respond(r, 200, "application/json", e->memo, e->memo_len, hdr);
        client_free(c);
        return;
    }
    make_id(a, c->id, sizeof c->id, c->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    oai_resp_t resp = {c->kind, c->id, (long)e->created, a->model_id};
    oai_usage_t u = {e->prompt_tokens, e->completion_tokens, e->cached_tokens};
    oai_finish_t fin = e->finish == CACHE_FINISH_STOP ? OAI_FINISH_STOP : OAI_FINISH_LENGTH;
    buf_reserve(&out, e->text_len * 2 + 512);
    if (!c->stream) {
        lp_view_t v;
        entry_lp_view(e->lp, e->n_lp, &v);
        oai_format_response(&out, &resp, e->text, e->text_len, fin, &u, v.v, e->n_lp, c->want_lp);
        lp_view_free(&v);
        srv_respond(r, 200, "application/json", out.p, out.n, hdr);
        /* Keep the rendering for the next hit (its id too: every non-streaming
         * hit of one entry answers with the same "id"). Charged to the L1
         * budget. Entries from L2 are promoted to L1 before this runs. */
        if (!e->memo && out.n) {
            size_t n = out.n;
            char *p = buf_release(&out);
            if (cache_entry_set_memo(e, p, n, tag))
                free(p);
            else if (a->cache && a->cache->l1)
                cache_l1_recharge(a->cache->l1, e);
        }
    } else {
        if (c->kind == OAI_CHAT)
            oai_format_chunk(&out, &resp, 1, NULL, 0, OAI_FINISH_NONE, NULL, NULL, 0, 0);
        for (int i = 0; i < e->n_chunks; i++) {
            const cache_chunk_t *ch = &e->chunks[i];
            lp_view_t v;
            entry_lp_view(e->lp + ch->lp0, ch->n_lp, &v);
            if (ch->len || (c->want_lp && ch->n_lp))
                oai_format_chunk(&out, &resp, 0, e->text + ch->off, ch->len, OAI_FINISH_NONE, NULL,
                                 v.v, ch->n_lp, c->want_lp);
            lp_view_free(&v);
        }
        oai_format_chunk(&out, &resp, 0, NULL, 0, fin, NULL, NULL, 0, 0);
        if (c->include_usage)
            oai_format_chunk(&out, &resp, 0, NULL, 0, OAI_FINISH_NONE, &u, NULL, 0, 0);
        oai_format_done(&out);
        size_t n = strlen(hdr);
        snprintf(hdr + n, sizeof hdr - n, "Cache-Control: no-cache\r\n");
        srv_respond(r, 200, "text/event-stream", out.p, out.n, hdr);
    }
    buf_free(&out);
    client_free(c);
}

/* ---- generations ---- */

static void gen_free(gen_t *g)
{
    api_t *a = g->a;
    if (g->prev)
        g->prev->next = g->next;
    else if (a->gens == g)
        a->gens = g->next;
    if (g->next) g->next->prev = g->prev;
    a->n_gens--;
    oai_req_free(&g->q);
    cache_rec_destroy(g->rec);
    free(g->done_ev);
    free(g);
}

/* Detach and free the single-flight record (before answering: a pipelined
 * twin dispatched by an answer must not join a finished generation). */
static void gen_sf_finish(gen_t *g)
{
    sf_t *sf = api_sf(g->a);
    if (g->sfe && sf) sf_finish(sf, g->sfe);
    g->sfe = NULL;
}

static void finish_client(client_t *c, const gen_ev_t *ev)
{
    srv_req_t *r = c->r;
    oai_usage_t u = {ev->n_prompt, ev->n_gen, ev->n_cached};
    if (ev->finish == ENGINE_FINISH_ERROR) {
        oai_err_t e;
        oai_err(&e, 500, "server_error", "engine_error", NULL, "generation failed: %s%s%s",
                bar_strerror(ev->err), ev->msg[0] ? ": " : "", ev->msg);
        if (c->sse) {
            stream_flush(c, 1);
            buf_t out = {0};
            buf_puts(&out, "data: ");
            oai_error_body(&out, &e);
            buf_puts(&out, "\n");
            oai_format_done(&out);
            sse_write(c->sse, out.p, out.n);
            buf_free(&out);
            c->r = NULL;
            sse_end(c->sse);
        } else {
            c->r = NULL;
            api_send_error(r, &e);
        }
        return;
    }
    oai_finish_t fin = ev->finish == ENGINE_FINISH_STOP ? OAI_FINISH_STOP : OAI_FINISH_LENGTH;
    if (c->sse) {
        stream_flush(c, 1);
        buf_t out = {0};
        oai_format_chunk(&out, &c->resp, 0, NULL, 0, fin, NULL, NULL, 0, 0);
        if (c->include_usage)
            oai_format_chunk(&out, &c->resp, 0, NULL, 0, OAI_FINISH_NONE, &u, NULL, 0, 0);
        oai_format_done(&out);
        sse_write(c->sse, out.p, out.n);
        buf_free(&out);
        c->r = NULL;
        sse_end(c->sse);
    } else {
        lp_view_t v;
        lp_view(&c->lp, &v);
        buf_t out = {0};
        oai_format_response(&out, &c->resp, c->text.p ? c->text.p : "", c->text.n, fin, &u, v.v,
                            c->lp.n, c->want_lp);
        lp_view_free(&v);
        char hdr[256];
        cache_headers(c, c->xcache, NULL, 0, hdr, sizeof hdr);
        c->r = NULL;
        srv_respond(r, 200, "application/json", out.p, out.n, hdr);
        buf_free(&out);
    }
}

/* One token: record it, then fan it out to every client. */
static void on_token(gen_t *g, const gen_ev_t *ev)
{
    api_t *a = g->a;
    cache_lp_t lp = {0};
    cache_lp_top_t tops[CACHE_LP_MAX_TOP];
    char pieces[(CACHE_LP_MAX_TOP + 1) * 64];
    int n_lp = 0;
    if (g->q.logprobs) {
        /* token texts for the logprob entries (bounded: long pieces are cut) */
        size_t used = 0;
        int n_top = ev->n_top < CACHE_LP_MAX_TOP ? ev->n_top : CACHE_LP_MAX_TOP;
        size_t n = tok_piece(a->tok, ev->token, 1, pieces, 64);
        if (n > 64) n = 64;
        lp.token = pieces;
        lp.token_len = n;
        lp.logprob = ev->logprob;
        used = 64;
        for (int k = 0; k < n_top; k++) {
            size_t m = tok_piece(a->tok, ev->top[k].token, 1, pieces + used, 64);
            if (m > 64) m = 64;
            tops[k] = (cache_lp_top_t){pieces + used, m, ev->top[k].logprob};
            used += 64;
        }
        lp.n_top = n_top;
        lp.top = tops;
        n_lp = 1;
    }
    if (g->rec) cache_rec_add(g->rec, ev->text, ev->text_len, &lp, n_lp);
    for (client_t *c = g->clients, *next; c; c = next) {
        next = c->next;
        if (!c->r || !c->started) continue;
        client_push(c, ev->text, ev->text_len, &lp, n_lp);
        if (c->sse) stream_flush(c, 0); /* may free c */
    }
}

static void on_done(gen_t *g, const gen_ev_t *ev)
{
    api_t *a = g->a;
    obs_metrics_tokens(a->metrics, ev->n_prompt, ev->n_gen, ev->n_cached);
    if (ev->t_first_token > 0) obs_metrics_ttft(a->metrics, ev->t_first_token);
    /* only completed replies are stored: never errors, cancels, timeouts */
    int complete = ev->finish == ENGINE_FINISH_STOP || ev->finish == ENGINE_FINISH_LENGTH;
    if (g->rec && complete && a->cache && !a->cache->closing && !g->cq.no_store) {
        cache_meta_t m = {0};
        m.key = g->cq.key;
        m.ns = g->cq.ns;
        m.model = a->model_id;
        m.created = g->created;
        m.stored_ms = api_cache_now_ms();
        m.ttl_ms = api_cache_ttl_ms(a->cache, &g->cq);
        m.finish = ev->finish == ENGINE_FINISH_STOP ? CACHE_FINISH_STOP : CACHE_FINISH_LENGTH;
        m.prompt_tokens = ev->n_prompt;
        m.completion_tokens = ev->n_gen;
        m.cached_tokens = ev->n_cached;
        cache_entry_t *e = cache_rec_build(g->rec, &m);
        if (e) {
            api_cache_store(a->cache, e, &g->cq);
            cache_entry_release(e);
        }
    }
    gen_sf_finish(g);
    while (g->clients) {
        client_t *c = g->clients;
        g->clients = c->next;
        c->g = NULL;
        if (c->r) {
            srv_req_set_user(c->r, NULL, NULL, NULL);
            if (c->started)
                finish_client(c, ev);
            else
                api_error(c->r, 503, "server_error", "unavailable", NULL, "shutting down");
        }
        c->r = NULL;
        client_free(c);
    }
    gen_free(g);
}

static void handle_event(gen_ev_t *ev)
{
    gen_t *g = ev->g;
    if (ev->type == ENGINE_EV_TOKEN)
        on_token(g, ev);
    else
        on_done(g, ev);
}

void gen_on_async(uv_async_t *h)
{
    api_t *a = h->data;
    pthread_mutex_lock(&a->mu);
    gen_ev_t *list = a->ev_head;
    a->ev_head = a->ev_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (list) {
        gen_ev_t *next = list->next;
        handle_event(list);
        free(list);
        list = next;
    }
}

/* ---- request → engine ---- */

/* The model's chat template over the request's messages, tokenized with
 * roles and contents as plain text (chat_encode): a message cannot forge a
 * turn by typing control tokens. *ids is malloc'd. */
static int encode_chat(api_t *a, const oai_req_t *q, int32_t **ids, size_t *n_ids, oai_err_t *e)
{
    if (!a->chat_ok)
        return oai_err(e, 400, "invalid_request_error", "unsupported_model", "messages",
                       "This model has no usable chat template (%s); use /v1/completions.",
                       a->chat_err);
    chat_msg_t *m = calloc((size_t)q->n_msgs + 1, sizeof *m);
    if (!m) return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
    for (int i = 0; i < q->n_msgs; i++)
        m[i] = (chat_msg_t){q->msgs[i].role, strlen(q->msgs[i].role), q->msgs[i].content,
                            q->msgs[i].content_len};
    bar_msg_t msg = {{0}};
    int rc = chat_encode(a->chat_tmpl, a->tok, m, (size_t)q->n_msgs, 1, ids, n_ids, &msg);
    free(m);
    if (rc) return oai_err(e, 500, "server_error", NULL, NULL, "chat template: %s", msg.text);
    return 0;
}

static int model_ok(const api_t *a, const char *m)
{
    return !m[0] || !strcmp(m, "default") || !strcmp(m, a->model_id);
}

/* Render (chat) and tokenize g's prompt into g->toks. Pure computation on
 * g's own data and the immutable tokenizer: safe on a worker thread. */
static void prepare(gen_t *g)
{
    api_t *a = g->a;
    oai_err_t *e = &g->err;
    oai_kind_t kind = g->q.kind;
    const char *what = kind == OAI_CHAT ? "messages" : "prompt";
    size_t n_tok = 0;
    int rc;
    if (kind == OAI_CHAT) {
        int32_t *ids = NULL;
        if (encode_chat(a, &g->q, &ids, &n_tok, e) < 0) {
            g->failed = 1;
            return;
        }
        g->toks = ids;
        rc = 0;
    } else {
        size_t cap = (size_t)a->n_ctx;
        g->toks = malloc(cap * sizeof *g->toks);
        if (!g->toks) {
            oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
            g->failed = 1;
            return;
        }
        rc = tok_encode(a->tok, g->q.prompt, g->q.prompt_len, 1, 0, g->toks, cap, &n_tok);
    }
    g->n_tok = n_tok;
    if (rc == BAR_ERR_RANGE || (rc == 0 && n_tok >= (size_t)a->n_ctx)) {
        oai_err(e, 400, "invalid_request_error", "context_length_exceeded", what,
                "This model's maximum context length is %d tokens. However, your %s resulted "
                "in %zu tokens, leaving no room for the completion. Please reduce the length "
                "of the %s.",
                a->n_ctx, what, n_tok, what);
        g->failed = 1;
    } else if (rc) {
        oai_err(e, 500, "server_error", NULL, NULL, "tokenizer failed: %s", bar_strerror(rc));
        g->failed = 1;
    } else if (n_tok == 0) {
        oai_err(e, 400, "invalid_request_error", "invalid_value", what, "The prompt is empty.");
        g->failed = 1;
    }
}

/* Answer every client of a generation that never reached the engine with e
 * (or 503 when e is NULL), then free it. */
static void gen_fail_unsubmitted(gen_t *g, const oai_err_t *e)
{
    gen_sf_finish(g);
    while (g->clients) {
        client_t *c = g->clients;
        g->clients = c->next;
        c->g = NULL;
        if (c->r) {
            srv_req_t *r = c->r;
            c->r = NULL;
            srv_req_set_user(r, NULL, NULL, NULL);
            if (e)
                api_send_error(r, e);
            else
                api_error(r, 503, "server_error", "unavailable", NULL, "shutting down");
        }
        client_free(c);
    }
    oai_req_free(&g->q);
    cache_rec_destroy(g->rec);
    free(g->toks);
    free(g->done_ev);
    free(g);
}

/* The prompt is ready: hand it to the engine and start the responses. */
static void submit(gen_t *g)
{
    api_t *a = g->a;
    oai_err_t *e = &g->err;
    if (g->failed) goto fail;
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = (float)g->q.temperature;
    sp.top_p = (float)g->q.top_p;
    sp.top_k = g->q.top_k;
    sp.min_p = (float)g->q.min_p;
    sp.presence_penalty = (float)g->q.presence_penalty;
    sp.frequency_penalty = (float)g->q.frequency_penalty;
    sp.repeat_penalty = (float)g->q.repeat_penalty;
    sp.seed = g->q.seed;
    sp.has_seed = g->q.has_seed;
    long long room = (long long)a->n_ctx - (long long)g->n_tok;
    long long mt = g->q.max_tokens > 0 ? g->q.max_tokens : a->set->max_tokens_default;
    sp.max_tokens = (int)(mt < room ? mt : room);
    for (int i = 0; i < g->q.n_stop; i++)
        sp.stop[i] = g->q.stop[i];
    sp.n_stop = g->q.n_stop;
    sp.ignore_eos = g->q.ignore_eos;
    sp.logprobs = g->q.logprobs;
    sp.top_logprobs = g->q.top_logprobs;

    g->done_ev = malloc(sizeof(gen_ev_t) + 1 + DONE_MSG_MAX + 1);
    if (!g->done_ev) {
        oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
        goto fail;
    }
    engine_req_t er = {0};
    er.prompt = g->toks;
    er.n_prompt = g->n_tok;
    er.sampling = sp;
    er.deadline =
        a->set->request_timeout_ms ? time_now_mono() + (double)a->set->request_timeout_ms / 1e3 : 0;
    er.cb = gen_engine_cb;
    er.user = g;
    bar_msg_t msg = {{0}};
    int rc = engine_submit(a->engine, &er, &g->req_id, &msg);
    free(g->toks);
    g->toks = NULL;
    if (rc) {
        const char *what = g->q.kind == OAI_CHAT ? "messages" : "prompt";
        if (rc == BAR_ERR_RANGE)
            oai_err(e, 400, "invalid_request_error", "context_length_exceeded", what, "%s",
                    msg.text);
        else if (rc == BAR_ERR_BUSY)
            oai_err(e, 503, "server_error", "unavailable", NULL, "%s",
                    msg.text[0] ? msg.text : "the engine is shutting down");
        else
            oai_err(e, rc == BAR_ERR_INVALID ? 400 : 500,
                    rc == BAR_ERR_INVALID ? "invalid_request_error" : "server_error", NULL, NULL,
                    "%s", msg.text[0] ? msg.text : bar_strerror(rc));
        goto fail;
    }

    /* submitted: the engine now holds g until its DONE event */
    g->submitted = 1;
    g->next = a->gens;
    if (a->gens) a->gens->prev = g;
    a->gens = g;
    a->n_gens++;
    g->created = time_now_unix();
    for (client_t *c = g->clients, *next; c; c = next) {
        next = c->next;
        if (!c->r) continue;
        if (client_start(c) < 0) {
            srv_req_t *r = c->r;
            c->r = NULL;
            srv_req_set_user(r, NULL, NULL, NULL);
            api_error(r, 500, "server_error", NULL, NULL, "cannot start the stream");
            client_leave(c, "error");
        }
    }
    return;

fail:
    gen_fail_unsubmitted(g, e);
}

static void prepare_work(uv_work_t *w)
{
    prepare(w->data);
}

static void prepare_done(uv_work_t *w, int status)
{
    gen_t *g = w->data;
    api_t *a = g->a;
    a->n_work--;
    if (status && !g->failed) {
        oai_err(&g->err, 500, "server_error", NULL, NULL, "tokenization cancelled");
        g->failed = 1;
    }
    if (!g->clients || !a->engine) {
        /* every client left (or the server is stopping) while we tokenized */
        gen_fail_unsubmitted(g, NULL);
        api_maybe_free(a);
        return;
    }
    submit(g);
}

/* A miss: start a generation for c (its request moves to the generation). */
static void start_gen(client_t *c)
{
    api_t *a = c->a;
    srv_req_t *r = c->r;
    gen_t *g = calloc(1, sizeof *g);
    if (!g) {
        c->r = NULL;
        srv_req_set_user(r, NULL, NULL, NULL);
        api_error(r, 500, "server_error", NULL, NULL, "out of memory");
        client_free(c);
        return;
    }
    g->a = a;
    g->q = c->q;
    memset(&c->q, 0, sizeof c->q);
    g->clients = c;
    c->g = g;
    if (c->cq.cacheable) {
        sf_t *sf = api_sf(a);
        g->cq = c->cq;
        g->rec = cache_rec_create(g->q.logprobs);
        if (sf && !c->cq.no_cache) {
            g->sfe = sf_begin(sf, &g->cq.key, g);
            if (g->sfe && sf_join(g->sfe, c)) {
                sf_finish(sf, g->sfe);
                g->sfe = NULL;
            }
        }
        c->xcache = "MISS";
        a->cache->miss++;
    }
    size_t body_n = srv_req_http(r)->body.n;
    if (body_n < PREPARE_INLINE_MAX) {
        prepare(g);
        submit(g);
        return;
    }
    /* a big prompt: tokenize on the libuv thread pool so the loop stays free */
    g->work.data = g;
    if (uv_queue_work(a->loop, &g->work, prepare_work, prepare_done)) {
        prepare(g);
        submit(g);
        return;
    }
    a->n_work++;
}

/* A twin of a generation in flight: follow it. */
static void join_gen(client_t *c, sf_entry_t *sfe)
{
    gen_t *g = sf_data(sfe);
    if (sf_join(sfe, c)) {
        start_gen(c);
        return;
    }
    c->g = g;
    client_t **pp = &g->clients;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    c->xcache = "COALESCED";
    c->a->cache->coalesced++;
    if (g->submitted && client_start(c) < 0) {
        srv_req_t *r = c->r;
        c->r = NULL;
        srv_req_set_user(r, NULL, NULL, NULL);
        api_error(r, 500, "server_error", NULL, NULL, "cannot start the stream");
        client_leave(c, "error");
    }
}

/* An L1 or L2 entry may answer c: not older than the request's max-age. */
static int fresh_enough(const client_t *c, const cache_entry_t *e)
{
    if (c->cq.max_age < 0) return 1;
    return api_cache_now_ms() - e->stored_ms <= c->cq.max_age * 1000;
}

static void on_l2(void *user, cache_entry_t *e, cache_l2_status_t st)
{
    client_t *c = user;
    api_t *a = c->a;
    c->l2op = NULL;
    if (!c->r) { /* cannot happen: an abort cancels the lookup */
        cache_entry_release(e);
        client_free(c);
        return;
    }
    if (st == CACHE_L2_HIT && e && fresh_enough(c, e)) {
        int64_t left = e->ttl_ms ? e->stored_ms + (int64_t)e->ttl_ms - api_cache_now_ms() : 0;
        if (a->cache->l1 && (e->ttl_ms == 0 || left > 0))
            cache_l1_put(a->cache->l1, e, e->ttl_ms ? (uint64_t)left : 0, 0);
        a->cache->hit_l2++;
        reply_entry(c, e, "L2");
        cache_entry_release(e);
        return;
    }
    cache_entry_release(e);
    if (!a->engine || a->cache->closing) {
        srv_req_t *r = c->r;
        c->r = NULL;
        srv_req_set_user(r, NULL, NULL, NULL);
        api_error(r, 503, "server_error", "unavailable", NULL, "shutting down");
        client_free(c);
        return;
    }
    /* a twin may have started while we waited */
    sf_t *sf = api_sf(a);
    sf_entry_t *sfe = sf ? sf_find(sf, &c->cq.key) : NULL;
    if (sfe) {
        join_gen(c, sfe);
        return;
    }
    start_gen(c);
}

void gen_handle(api_t *a, srv_req_t *r, oai_kind_t kind)
{
    oai_err_t e;
    const http_req_t *h = srv_req_http(r);
    if (!a->engine) {
        api_error(r, 503, "server_error", "model_not_ready", NULL,
                  "The model is still loading; retry when GET /ready answers 200.");
        return;
    }
    api_cache_t *ac = a->cache;
    if (api_cache_on(ac) && ac->l1) {
        /* A byte-identical repeat of a request that was answered as an exact
         * L1 hit (same endpoint, model, digest, Cache-Control, Authorization,
         * X-Cache-Namespace and body): parsing, keying and the delivery checks
         * would give the same result, so the remembered one is used and the
         * body is not parsed. A miss here takes the full path below. */
        const api_cache_memo_t *m = api_cache_memo_find(ac, h, (int)kind, a->model_id);
        if (m) {
            cache_entry_t *hit = cache_l1_get(ac->l1, &m->cq.key);
            client_t *c = hit ? calloc(1, sizeof *c) : NULL;
            if (c) {
                c->a = a;
                c->kind = kind;
                c->cq = m->cq;
                if (fresh_enough(c, hit)) {
                    c->stream = m->stream;
                    c->include_usage = m->include_usage;
                    c->want_lp = m->want_lp;
                    c->r = r;
                    ac->hit_l1++;
                    reply_entry(c, hit, "L1");
                    cache_entry_release(hit);
                    return;
                }
                free(c);
            }
            cache_entry_release(hit);
        }
    }
    /* the body is parsed once: the cache keys on this tree and validation
     * reads it */
    cJSON *root = NULL;
    if (oai_parse_json(h->body.p ? h->body.p : "", h->body.n, &root, &e) < 0) {
        api_send_error(r, &e);
        return;
    }
    client_t *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        api_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    c->a = a;
    c->kind = kind;
    int cache_on = api_cache_on(ac);
    if (cache_on) {
        api_cache_decide(ac, h, root, kind == OAI_CHAT ? "chat" : "completions", a->model_id,
                         &c->cq);
        cache_entry_t *hit =
            c->cq.cacheable && !c->cq.no_cache && ac->l1 ? cache_l1_get(ac->l1, &c->cq.key) : NULL;
        if (hit && fresh_enough(c, hit)) {
            /* An exact L1 hit skips the full validation. Only replies to
             * requests that passed oai_parse_tree are ever stored, and the key
             * covers every member of the body except model, stream,
             * stream_options, user, metadata and store (cache_key.c); so this
             * body equals, member for member, one that was valid. What the key
             * leaves out is checked here (oai_parse_delivery: model, user,
             * stream, stream_options; metadata and store are never checked),
             * and the model must still be this one. */
            int rc = oai_parse_delivery(&c->q, kind, root, &e);
            if (rc == 0 && !model_ok(a, c->q.model))
                rc = oai_err(&e, 404, "invalid_request_error", "model_not_found", "model",
                             "The model '%s' does not exist. Available: '%s' (alias 'default').",
                             c->q.model, a->model_id);
            if (rc < 0) {
                cache_entry_release(hit);
                goto fail;
            }
            cJSON_Delete(root);
            c->stream = c->q.stream;
            c->include_usage = c->q.include_usage;
            c->want_lp = c->q.logprobs;
            c->r = r;
            ac->hit_l1++;
            api_cache_memo_put(ac, h, (int)kind, a->model_id, &c->cq, c->stream, c->include_usage,
                               c->want_lp);
            reply_entry(c, hit, "L1");
            cache_entry_release(hit);
            return;
        }
        cache_entry_release(hit);
    }
    if (oai_parse_tree(&c->q, kind, root, &e) < 0) goto fail;
    cJSON_Delete(root);
    root = NULL;
    if (!model_ok(a, c->q.model)) {
        oai_err(&e, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%s' does not exist. Available: '%s' (alias 'default').", c->q.model,
                a->model_id);
        goto fail;
    }
    c->stream = c->q.stream;
    c->include_usage = c->q.include_usage;
    c->want_lp = c->q.logprobs;
    c->r = r;
    srv_req_set_user(r, c, on_abort, on_drain);
    if (cache_on) {
        if (!c->cq.cacheable) {
            c->xcache = "BYPASS";
            ac->bypass++;
        } else if (!c->cq.no_cache) {
            sf_entry_t *sfe = sf_find(ac->sf, &c->cq.key);
            if (sfe) {
                join_gen(c, sfe);
                return;
            }
            if (ac->l2 && cache_redis_get(ac->l2, &c->cq.key, c->cq.ns, on_l2, c, &c->l2op) == 0)
                return; /* on_l2 continues */
            c->l2op = NULL;
        }
    }
    start_gen(c);
    return;

fail:
    cJSON_Delete(root);
    oai_req_free(&c->q);
    free(c);
    api_send_error(r, &e);
}
