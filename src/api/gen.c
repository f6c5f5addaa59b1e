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

struct gen {
    api_t *a;
    gen_t *prev, *next;
    srv_req_t *r; /* NULL once answered or once the client is gone */
    sse_t *sse;   /* streaming only */
    oai_req_t q;
    oai_resp_t resp;
    char id[48];
    uint64_t req_id;
    buf_t text;   /* non-stream: all text; stream: not yet written */
    lp_list_t lp; /* same split as text */
    int n_prompt, n_gen, n_cached;
    double t_start;
    int cancel_sent;
    int submitted; /* engine_submit succeeded: a DONE event will come */
    int failed;    /* prepare() failed: err says why */
    oai_err_t err;
    uv_work_t work; /* prepare() on the thread pool for big prompts */
    int32_t *toks;
    size_t n_tok;
    gen_ev_t *done_ev; /* preallocated DONE event (handed to the queue by the engine callback) */
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

static int lp_piece(api_t *a, lp_list_t *l, int id, size_t *off, size_t *len)
{
    char tmp[256];
    size_t n = tok_piece(a->tok, id, 1, tmp, sizeof tmp);
    if (n > sizeof tmp) n = sizeof tmp;
    *off = l->text.n;
    *len = n;
    return buf_append(&l->text, tmp, n);
}

static int lp_push(api_t *a, lp_list_t *l, const gen_ev_t *ev)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        lp_item_t *p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->items = p;
        l->cap = cap;
    }
    if (l->n_tops + ev->n_top > l->cap_tops) {
        int cap = l->cap_tops ? l->cap_tops : 16;
        while (cap < l->n_tops + ev->n_top)
            cap *= 2;
        lp_top_t *p = realloc(l->tops, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->tops = p;
        l->cap_tops = cap;
    }
    lp_item_t *it = &l->items[l->n++];
    lp_piece(a, l, ev->token, &it->off, &it->len);
    it->logprob = ev->logprob;
    it->top0 = l->n_tops;
    it->n_top = ev->n_top;
    for (int k = 0; k < ev->n_top; k++) {
        lp_top_t *t = &l->tops[l->n_tops++];
        lp_piece(a, l, ev->top[k].token, &t->off, &t->len);
        t->logprob = ev->top[k].logprob;
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

/* ---- loop side ---- */

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
    buf_free(&g->text);
    lp_free(&g->lp);
    sse_close(g->sse);
    free(g->done_ev);
    free(g);
}

static void gen_cancel(gen_t *g, const char *reason)
{
    if (g->cancel_sent) return;
    g->cancel_sent = 1;
    obs_metrics_cancelled(g->a->metrics, reason);
    engine_cancel(g->a->engine, g->req_id);
}

void gen_cancel_all(api_t *a)
{
    for (gen_t *g = a->gens; g; g = g->next)
        gen_cancel(g, "shutdown");
}

static int want_lp(const gen_t *g)
{
    return g->q.logprobs;
}

/* Write the pending text (and logprobs) as one chunk. final: ignore the
 * back-pressure bound (the stream is ending; what is pending is bounded). */
static void stream_flush(gen_t *g, int final)
{
    if (!g->r || !g->sse) return;
    if (g->text.n == 0 && (!final || g->lp.n == 0)) return;
    if (!final && !sse_writable(g->sse)) {
        if (g->text.n > (size_t)g->a->set->stream_buffer_bytes) gen_cancel(g, "slow_reader");
        return;
    }
    lp_view_t v;
    lp_view(&g->lp, &v);
    buf_t out = {0};
    oai_format_chunk(&out, &g->resp, 0, g->text.p, g->text.n, OAI_FINISH_NONE, NULL, v.v, g->lp.n,
                     want_lp(g));
    lp_view_free(&v);
    sse_write(g->sse, out.p, out.n);
    buf_free(&out);
    buf_clear(&g->text);
    lp_clear(&g->lp);
}

static void on_drain(void *user, srv_req_t *r)
{
    (void)r;
    stream_flush(user, 0);
}

static void on_abort(void *user, srv_req_t *r)
{
    gen_t *g = user;
    (void)r;
    g->r = NULL;
    if (g->sse) sse_detach(g->sse);
    if (g->submitted) gen_cancel(g, "disconnect");
}

static oai_finish_t map_finish(engine_finish_t f)
{
    return f == ENGINE_FINISH_STOP ? OAI_FINISH_STOP : OAI_FINISH_LENGTH;
}

static void finish_response(gen_t *g, const gen_ev_t *ev)
{
    api_t *a = g->a;
    oai_usage_t u = {ev->n_prompt, ev->n_gen, ev->n_cached};
    if (ev->finish == ENGINE_FINISH_ERROR) {
        oai_err_t e;
        oai_err(&e, 500, "server_error", "engine_error", NULL, "generation failed: %s%s%s",
                bar_strerror(ev->err), ev->msg[0] ? ": " : "", ev->msg);
        if (g->sse) {
            stream_flush(g, 1);
            buf_t out = {0};
            buf_puts(&out, "data: ");
            oai_error_body(&out, &e);
            buf_puts(&out, "\n");
            oai_format_done(&out);
            sse_write(g->sse, out.p, out.n);
            buf_free(&out);
            sse_end(g->sse);
        } else {
            api_send_error(g->r, &e);
        }
        g->r = NULL;
        return;
    }
    oai_finish_t fin = map_finish(ev->finish);
    if (g->sse) {
        stream_flush(g, 1);
        buf_t out = {0};
        oai_format_chunk(&out, &g->resp, 0, NULL, 0, fin, NULL, NULL, 0, 0);
        if (g->q.include_usage)
            oai_format_chunk(&out, &g->resp, 0, NULL, 0, OAI_FINISH_NONE, &u, NULL, 0, 0);
        oai_format_done(&out);
        sse_write(g->sse, out.p, out.n);
        buf_free(&out);
        sse_end(g->sse);
    } else {
        lp_view_t v;
        lp_view(&g->lp, &v);
        buf_t out = {0};
        oai_format_response(&out, &g->resp, g->text.p ? g->text.p : "", g->text.n, fin, &u, v.v,
                            g->lp.n, want_lp(g));
        lp_view_free(&v);
        srv_respond(g->r, 200, "application/json", out.p, out.n, NULL);
        buf_free(&out);
    }
    (void)a;
    g->r = NULL;
}

static void handle_event(gen_ev_t *ev)
{
    gen_t *g = ev->g;
    api_t *a = g->a;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (!g->r) return;
        if (want_lp(g)) lp_push(a, &g->lp, ev);
        if (ev->text_len) buf_append(&g->text, ev->text, ev->text_len);
        if (g->sse) stream_flush(g, 0);
        return;
    }
    /* DONE */
    obs_metrics_tokens(a->metrics, ev->n_prompt, ev->n_gen, ev->n_cached);
    if (ev->t_first_token > 0) obs_metrics_ttft(a->metrics, ev->t_first_token);
    if (g->r) finish_response(g, ev);
    gen_free(g);
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

/* The model's chat template (engine/chat.h) over the request's messages. */
static int render_chat(api_t *a, const oai_req_t *q, buf_t *out, oai_err_t *e)
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
    char *txt = NULL;
    size_t n = 0;
    bar_msg_t msg = {{0}};
    int rc = chat_render(a->chat_tmpl, m, (size_t)q->n_msgs, 1, &txt, &n, &msg);
    free(m);
    if (rc) return oai_err(e, 500, "server_error", NULL, NULL, "chat template: %s", msg.text);
    rc = buf_append(out, txt, n);
    free(txt);
    if (rc) return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
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
    buf_t prompt = {0};
    const char *ptxt;
    size_t plen;
    int parse_special;
    if (kind == OAI_CHAT) {
        if (render_chat(a, &g->q, &prompt, e) < 0) {
            buf_free(&prompt);
            g->failed = 1;
            return;
        }
        ptxt = prompt.p;
        plen = prompt.n;
        parse_special = 1;
    } else {
        ptxt = g->q.prompt;
        plen = g->q.prompt_len;
        parse_special = 0;
    }
    const char *what = kind == OAI_CHAT ? "messages" : "prompt";
    size_t cap = (size_t)a->n_ctx, n_tok = 0;
    g->toks = malloc(cap * sizeof *g->toks);
    if (!g->toks) {
        buf_free(&prompt);
        oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
        g->failed = 1;
        return;
    }
    int rc = tok_encode(a->tok, ptxt, plen, 1, parse_special, g->toks, cap, &n_tok);
    buf_free(&prompt);
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

/* Free a generation that never reached the engine. */
static void gen_free_unsubmitted(gen_t *g)
{
    oai_req_free(&g->q);
    free(g->toks);
    free(g->done_ev);
    free(g);
}

/* The prompt is ready: hand it to the engine and start the response. */
static void submit(gen_t *g)
{
    api_t *a = g->a;
    srv_req_t *r = g->r;
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
    make_id(a, g->id, sizeof g->id, g->q.kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    g->resp = (oai_resp_t){g->q.kind, g->id, time_now_unix(), a->model_id};
    if (g->q.stream) {
        g->sse = sse_open(r, (uint64_t)a->set->sse_ping_ms);
        if (!g->sse) {
            g->r = NULL;
            gen_cancel(g, "error");
            api_error(r, 500, "server_error", NULL, NULL, "cannot start the stream");
            return;
        }
        if (g->q.kind == OAI_CHAT) {
            buf_t out = {0};
            oai_format_chunk(&out, &g->resp, 1, NULL, 0, OAI_FINISH_NONE, NULL, NULL, 0, 0);
            sse_write(g->sse, out.p, out.n);
            buf_free(&out);
        }
    }
    return;

fail:
    g->r = NULL;
    api_send_error(r, e);
    gen_free_unsubmitted(g);
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
    if (!g->r || !a->engine) {
        /* the client left (or the server is stopping) while we tokenized */
        if (g->r) api_error(g->r, 503, "server_error", "unavailable", NULL, "shutting down");
        gen_free_unsubmitted(g);
        api_maybe_free(a);
        return;
    }
    submit(g);
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
    gen_t *g = calloc(1, sizeof *g);
    if (!g) {
        api_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    g->a = a;
    g->t_start = time_now_mono();
    if (oai_parse_request(&g->q, kind, h->body.p ? h->body.p : "", h->body.n, &e) < 0) goto fail;
    if (!model_ok(a, g->q.model)) {
        oai_err(&e, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%s' does not exist. Available: '%s' (alias 'default').", g->q.model,
                a->model_id);
        goto fail;
    }
    g->r = r;
    srv_req_set_user(r, g, on_abort, on_drain);
    if (h->body.n < PREPARE_INLINE_MAX) {
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
    return;

fail:
    oai_req_free(&g->q);
    free(g);
    api_send_error(r, &e);
}
