/* engine.c — the engine thread: continuous batching over KV slots.
 *
 * Each iteration of the scheduler loop (1) applies cancellations, (2) admits
 * queued requests (highest priority first, FIFO within a priority) into free
 * slots, preferring the free slot whose retained tokens share the longest
 * prefix with the new prompt (its KV is reused: the prefix cache), (3) builds
 * one batch — one token for every decoding sequence, then prompt chunks of
 * prefilling sequences up to the batch budget (chunked prefill) — and (4) runs
 * one forward pass, samples, and emits events. Text is released only when it
 * is complete UTF-8 and cannot be the start of a stop string.
 * Not for: HTTP, JSON, response caching (callers own those). */
#include "engine/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/kernels/kern.h"
#include "engine/model.h"
#include "engine/pool.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "util/timeutil.h"

#define N_BATCH 512
#define HOLD_MAX 4096

typedef struct req {
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    engine_sampling_t sp;
    char *stop_store; /* the stop strings, copied */
    size_t stop_len[4];
    double deadline;
    int priority;
    engine_cb cb;
    void *user;
    double t_submit;
    struct req *next;
} req_t;

typedef struct {
    req_t *req;      /* NULL when free */
    int32_t *tokens; /* [n_ctx] prompt + generated (retained after finish) */
    int n_tokens;    /* valid entries in tokens */
    int n_past;      /* positions already in the KV cache */
    int n_cached;    /* prompt tokens reused from a previous occupant */
    int n_gen;
    int want_logits; /* set while building a batch */
    double t_first;
    sampler_t *smp;
    tok_stream_t ts;
    char hold[HOLD_MAX]; /* text not yet released (a stop string may start here) */
    size_t n_hold;
    uint64_t last_use; /* for choosing which free slot to overwrite */
} slot_t;

struct engine {
    model_t *model;
    tok_t *tok;
    kv_cache_t *kv;
    model_ctx_t *ctx;
    pool_t *pool;
    int n_ctx, n_slots, n_threads;
    char model_id[256];
    slot_t *slots;
    float *logits; /* [n_slots][n_vocab] */
    char *piece;   /* one token's text */
    size_t piece_cap;

    /* batch scratch */
    int32_t *b_tok;
    int *b_pos, *b_slot, *b_row;
    sampler_job_t *jobs; /* [n_slots] one step's sampling, run on the pool */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    req_t *queue; /* priority-ordered */
    int n_queued;
    uint64_t next_id;
    uint64_t *cancels; /* pending cancellations (grows; swapped with `taken`) */
    int n_cancels, cap_cancels;
    uint64_t *taken; /* the engine thread's copy for one iteration */
    int cap_taken;
    uint64_t use_clock;

    /* stats (under mu) */
    int n_active;
    uint64_t n_requests, n_tok_prompt, n_tok_gen;
};

engine_sampling_t engine_sampling_default(void)
{
    engine_sampling_t s;
    memset(&s, 0, sizeof s);
    s.temperature = 1.0f;
    s.top_p = 1.0f;
    s.repeat_penalty = 1.0f;
    s.max_tokens = 16;
    return s;
}

static void req_free(req_t *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->stop_store);
    free(r);
}

/* ------------------------------------------------------------- events */

/* An event of `type` for r with the counts every event carries (s may be
 * NULL for a request that never reached a slot). */
static engine_event_t event_for(engine_ev_type_t type, const req_t *r, const slot_t *s)
{
    engine_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.req_id = r->id;
    ev.n_prompt = r->n_prompt;
    ev.n_cached = s ? s->n_cached : 0;
    ev.n_gen = s ? s->n_gen : 0;
    ev.t_first_token = s && s->t_first > 0 ? s->t_first - r->t_submit : 0;
    return ev;
}

static void emit_done(req_t *r, slot_t *s, engine_finish_t fin, int err, const char *msg)
{
    engine_event_t ev = event_for(ENGINE_EV_DONE, r, s);
    ev.finish = fin;
    ev.err = err;
    ev.msg = msg;
    r->cb(r->user, &ev);
}

static void emit_text(req_t *r, slot_t *s, const char *text, size_t n, int token, float lp,
                      const engine_top_t *top, int n_top)
{
    engine_event_t ev = event_for(ENGINE_EV_TOKEN, r, s);
    ev.text = text;
    ev.text_len = n;
    ev.token = token;
    ev.logprob = lp;
    ev.top = top;
    ev.n_top = n_top;
    r->cb(r->user, &ev);
}

/* ------------------------------------------------------- slot lifecycle */

static void slot_release(engine_t *e, slot_t *s)
{
    req_free(s->req);
    s->req = NULL;
    s->last_use = ++e->use_clock;
    pthread_mutex_lock(&e->mu);
    e->n_active--;
    pthread_mutex_unlock(&e->mu);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* Put r into a free slot; returns 0 or -1 when none is free. Called with mu held. */
static int slot_admit(engine_t *e, req_t *r)
{
    int best = -1, best_lcp = -1;
    uint64_t best_use = UINT64_MAX;
    for (int i = 0; i < e->n_slots; i++) {
        slot_t *s = &e->slots[i];
        if (s->req) continue;
        int lcp = common_prefix(s->tokens, s->n_past < s->n_tokens ? s->n_past : s->n_tokens,
                                r->prompt, r->n_prompt);
        if (lcp > best_lcp || (lcp == best_lcp && s->last_use < best_use)) {
            best = i;
            best_lcp = lcp;
            best_use = s->last_use;
        }
    }
    if (best < 0) return -1;
    slot_t *s = &e->slots[best];
    /* keep at least one prompt token to evaluate, so we get logits, and never
     * exactly one when the prompt has more: a lone token is summed in
     * llama.cpp's single-row order, and a repeated prompt should give the
     * logits of its first evaluation (engine_prefill_take) */
    int reuse = best_lcp < r->n_prompt ? best_lcp : r->n_prompt - 1;
    if (reuse > 0 && r->n_prompt - reuse == 1) reuse--;
    if (reuse < 0) reuse = 0;
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
    s->n_tokens = r->n_prompt;
    s->n_past = reuse;
    s->n_cached = reuse;
    s->n_gen = 0;
    s->t_first = 0;
    s->n_hold = 0;
    tok_stream_init(&s->ts);
    sampler_reset(s->smp, &r->sp, r->prompt, r->n_prompt);
    s->req = r;
    e->n_active++;
    return 0;
}

/* --------------------------------------------------------- text release */

/* Release what of s->hold cannot begin a stop string; returns 1 if a stop
 * string matched (text before it is released and the request should end). */
static int hold_release(slot_t *s, req_t *r, int token, float lp, const engine_top_t *top,
                        int n_top, int final)
{
    size_t cut = s->n_hold; /* bytes that may be released */
    int matched = 0;
    size_t match_at = s->n_hold;
    for (int i = 0; i < r->sp.n_stop; i++) {
        const char *st = r->sp.stop[i];
        size_t sl = r->stop_len[i];
        if (sl == 0 || sl > s->n_hold) continue;
        for (size_t p = 0; p + sl <= s->n_hold; p++)
            if (!memcmp(s->hold + p, st, sl)) {
                if (p < match_at) match_at = p;
                matched = 1;
                break;
            }
    }
    if (matched) {
        emit_text(r, s, s->hold, match_at, token, lp, top, n_top);
        s->n_hold = 0;
        return 1;
    }
    if (!final) {
        /* keep the longest suffix that is a proper prefix of some stop string */
        size_t keep = 0;
        for (int i = 0; i < r->sp.n_stop; i++) {
            const char *st = r->sp.stop[i];
            size_t sl = r->stop_len[i];
            for (size_t k = sl > 1 ? sl - 1 : 0; k > keep; k--) {
                if (k <= s->n_hold && !memcmp(s->hold + s->n_hold - k, st, k)) {
                    keep = k;
                    break;
                }
            }
        }
        cut = s->n_hold - keep;
    }
    emit_text(r, s, s->hold, cut, token, lp, top, n_top);
    memmove(s->hold, s->hold + cut, s->n_hold - cut);
    s->n_hold -= cut;
    return 0;
}

/* Append bytes to hold, releasing early if it would overflow. */
static void hold_append(slot_t *s, const char *p, size_t n)
{
    if (n > HOLD_MAX - s->n_hold)
        n = HOLD_MAX - s->n_hold; /* pieces are short; a longer one is cut */
    memcpy(s->hold + s->n_hold, p, n);
    s->n_hold += n;
}

/* ------------------------------------------------------------ the loop */

static void finish_slot(engine_t *e, slot_t *s, engine_finish_t fin, int err, const char *msg)
{
    emit_done(s->req, s, fin, err, msg);
    slot_release(e, s);
}

/* The sampler's input for slot s (logits row `logits`). */
static void sample_job_init(sampler_job_t *j, slot_t *s, float *logits, int tag)
{
    const engine_sampling_t *sp = &s->req->sp;
    j->smp = s->smp;
    j->logits = logits;
    j->n_top = sp->top_logprobs > SAMPLER_TOP_MAX ? SAMPLER_TOP_MAX
                                                  : (sp->top_logprobs < 0 ? 0 : sp->top_logprobs);
    j->want_lp = sp->logprobs || j->n_top > 0;
    j->tag = tag;
}

static void handle_sample(engine_t *e, slot_t *s, sampler_job_t *j)
{
    req_t *r = s->req;
    engine_top_t *top = j->top;
    int n_top = j->n_top, want_lp = j->want_lp, tok = j->token;
    float lp = j->logprob;
    sampler_accept(s->smp, tok);
    if (s->n_gen == 0) s->t_first = time_now_mono();
    s->n_gen++;
    pthread_mutex_lock(&e->mu);
    e->n_tok_gen++;
    pthread_mutex_unlock(&e->mu);

    if (!r->sp.ignore_eos && tok_is_eog(e->tok, tok)) {
        char tail[16];
        size_t nt = tok_stream_flush(&s->ts, tail, sizeof tail);
        hold_append(s, tail, nt);
        if (s->n_hold > 0) /* held-back text that no stop string completed */
            hold_release(s, r, -1, 0.0f, NULL, 0, 1);
        finish_slot(e, s, ENGINE_FINISH_STOP, 0, NULL);
        return;
    }
    size_t np = tok_stream_feed(e->tok, &s->ts, tok, e->piece, e->piece_cap);
    hold_append(s, e->piece, np);
    s->tokens[s->n_tokens++] = tok;
    int at_end = s->n_gen >= r->sp.max_tokens || s->n_tokens >= e->n_ctx;
    if (at_end) {
        char tail[16];
        size_t nt = tok_stream_flush(&s->ts, tail, sizeof tail);
        hold_append(s, tail, nt);
    }
    if (hold_release(s, r, tok, lp, want_lp ? top : NULL, n_top, at_end)) {
        finish_slot(e, s, ENGINE_FINISH_STOP, 0, NULL);
        return;
    }
    if (at_end) finish_slot(e, s, ENGINE_FINISH_LENGTH, 0, NULL);
}

static void *engine_main(void *arg)
{
    engine_t *e = arg;
    int n_vocab = model_hparams(e->model)->n_vocab;
    for (;;) {
        /* cancellations and admission, under the lock */
        pthread_mutex_lock(&e->mu);
        if (e->stopping) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        /* take the pending cancellations by swapping buffers */
        uint64_t *cancels = e->cancels;
        int n_cancels = e->n_cancels;
        e->cancels = e->taken;
        e->taken = cancels;
        int cap = e->cap_cancels;
        e->cap_cancels = e->cap_taken;
        e->cap_taken = cap;
        e->n_cancels = 0;
        /* queued requests that were cancelled: pull them out */
        req_t *dead = NULL;
        for (req_t **pp = &e->queue; *pp;) {
            req_t *r = *pp;
            int c = 0;
            for (int i = 0; i < n_cancels; i++)
                if (cancels[i] == r->id) c = 1;
            if (c) {
                *pp = r->next;
                r->next = dead;
                dead = r;
                e->n_queued--;
            } else {
                pp = &r->next;
            }
        }
        while (e->queue) {
            req_t *r = e->queue;
            if (slot_admit(e, r) != 0) break;
            e->queue = r->next;
            r->next = NULL;
            e->n_queued--;
        }
        int any = e->n_active > 0;
        if (!any && !dead) {
            pthread_cond_wait(&e->cv, &e->mu);
            pthread_mutex_unlock(&e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        while (dead) {
            req_t *r = dead;
            dead = r->next;
            emit_done(r, NULL, ENGINE_FINISH_CANCELLED, 0, NULL);
            req_free(r);
        }

        double now = time_now_mono();
        for (int i = 0; i < e->n_slots; i++) {
            slot_t *s = &e->slots[i];
            if (!s->req) continue;
            int c = 0;
            for (int k = 0; k < n_cancels; k++)
                if (cancels[k] == s->req->id) c = 1;
            if (c)
                finish_slot(e, s, ENGINE_FINISH_CANCELLED, 0, NULL);
            else if (s->req->deadline > 0 && now >= s->req->deadline)
                finish_slot(e, s, ENGINE_FINISH_TIMEOUT, 0, NULL);
        }

        /* build the batch: decode tokens first, then prompt chunks */
        int n = 0, n_rows = 0;
        for (int i = 0; i < e->n_slots; i++) {
            slot_t *s = &e->slots[i];
            s->want_logits = -1;
            if (!s->req || s->n_past < s->req->n_prompt) continue;
            /* decoding: feed the last sampled token */
            e->b_tok[n] = s->tokens[s->n_past];
            e->b_pos[n] = s->n_past;
            e->b_slot[n] = i;
            e->b_row[n] = n_rows;
            s->want_logits = n_rows++;
            n++;
        }
        for (int i = 0; i < e->n_slots && n < N_BATCH; i++) {
            slot_t *s = &e->slots[i];
            if (!s->req || s->n_past >= s->req->n_prompt) continue;
            int todo = s->req->n_prompt - s->n_past;
            int take = engine_prefill_take(todo, N_BATCH - n);
            if (take == 0) continue;
            for (int k = 0; k < take; k++) {
                e->b_tok[n] = s->tokens[s->n_past + k];
                e->b_pos[n] = s->n_past + k;
                e->b_slot[n] = i;
                e->b_row[n] = -1;
                n++;
            }
            if (take == todo) {
                e->b_row[n - 1] = n_rows;
                s->want_logits = n_rows++;
            }
        }
        if (n == 0) continue;
        /* logits rows must be in token order for the fast path */
        model_batch_t b = {n, e->b_tok, e->b_pos, e->b_slot, e->b_row};
        bar_msg_t msg = {{0}};
        int rc = model_forward(e->ctx, e->kv, &b, e->logits, &msg);
        if (rc) {
            for (int i = 0; i < e->n_slots; i++)
                if (e->slots[i].req)
                    finish_slot(e, &e->slots[i], ENGINE_FINISH_ERROR, rc, msg.text);
            continue;
        }
        /* advance positions */
        int prompt_tokens = 0;
        for (int k = 0; k < n; k++) {
            slot_t *s = &e->slots[b.slot[k]];
            if (s->n_past < s->req->n_prompt) prompt_tokens++;
            s->n_past = b.pos[k] + 1;
        }
        pthread_mutex_lock(&e->mu);
        e->n_tok_prompt += (uint64_t)prompt_tokens;
        pthread_mutex_unlock(&e->mu);
        /* sample every sequence of the step at once, in parallel on the pool */
        int n_jobs = 0;
        for (int i = 0; i < e->n_slots; i++) {
            slot_t *s = &e->slots[i];
            if (s->req && s->want_logits >= 0)
                sample_job_init(&e->jobs[n_jobs++], s, e->logits + (size_t)s->want_logits * n_vocab,
                                i);
        }
        sampler_run(e->jobs, n_jobs, e->pool);
        for (int k = 0; k < n_jobs; k++)
            handle_sample(e, &e->slots[e->jobs[k].tag], &e->jobs[k]);
    }
    /* shutting down: everything still here is cancelled */
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].req) finish_slot(e, &e->slots[i], ENGINE_FINISH_CANCELLED, 0, NULL);
    pthread_mutex_lock(&e->mu);
    req_t *q = e->queue;
    e->queue = NULL;
    e->n_queued = 0;
    pthread_mutex_unlock(&e->mu);
    while (q) {
        req_t *r = q;
        q = r->next;
        emit_done(r, NULL, ENGINE_FINISH_CANCELLED, 0, NULL);
        req_free(r);
    }
    return NULL;
}

/* ------------------------------------------------------------- public */

int engine_create(engine_t **out, const engine_config_t *cfg, bar_msg_t *msg)
{
    *out = NULL;
    engine_t *e = calloc(1, sizeof *e);
    if (!e) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->next_id = 1;
    int rc = model_load(&e->model, cfg->model_path, msg);
    if (rc) goto fail;
    rc = tok_create(&e->tok, model_gguf(e->model), msg);
    if (rc) goto fail;
    const model_hparams_t *hp = model_hparams(e->model);
    e->n_ctx = cfg->n_ctx > 0 ? cfg->n_ctx : hp->n_ctx_train;
    if (e->n_ctx > 8192 && cfg->n_ctx <= 0) e->n_ctx = 8192;
    e->n_slots = cfg->n_seq_max > 0 ? cfg->n_seq_max : 8;
    e->pool = pool_create(cfg->n_threads);
    if (!e->pool) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "cannot start worker threads");
        goto fail;
    }
    e->n_threads = pool_size(e->pool);
    if ((rc = kv_create(&e->kv, e->model, e->n_slots, e->n_ctx, msg)) ||
        (rc = model_ctx_create(&e->ctx, e->model, N_BATCH, e->n_ctx, e->pool, msg)))
        goto fail;
    e->slots = calloc((size_t)e->n_slots, sizeof(slot_t));
    e->logits = malloc((size_t)e->n_slots * hp->n_vocab * sizeof(float));
    e->piece_cap = tok_stream_bound(e->tok);
    e->piece = malloc(e->piece_cap);
    e->b_tok = malloc(N_BATCH * sizeof(int32_t));
    e->b_pos = malloc(N_BATCH * sizeof(int));
    e->b_slot = malloc(N_BATCH * sizeof(int));
    e->b_row = malloc(N_BATCH * sizeof(int));
    if (!e->slots || !e->logits || !e->b_tok || !e->b_pos || !e->b_slot || !e->b_row || !e->piece) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!(e->jobs = calloc((size_t)e->n_slots, sizeof(sampler_job_t)))) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < e->n_slots; i++) {
        e->slots[i].tokens = malloc((size_t)e->n_ctx * sizeof(int32_t));
        if (!e->slots[i].tokens || sampler_create(&e->slots[i].smp, hp->n_vocab)) {
            rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    const char *base = strrchr(cfg->model_path, '/');
    base = base ? base + 1 : cfg->model_path;
    snprintf(e->model_id, sizeof e->model_id, "%s", base);
    size_t L = strlen(e->model_id);
    if (L > 5 && !strcmp(e->model_id + L - 5, ".gguf")) e->model_id[L - 5] = 0;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = bar_fail(msg, BAR_ERR_INTERNAL, "cannot start the engine thread");
        goto fail;
    }
    *out = e;
    return 0;
fail:
    e->thread = 0;
    engine_destroy(e);
    return rc;
}

void engine_destroy(engine_t *e)
{
    if (!e) return;
    if (e->thread) {
        pthread_mutex_lock(&e->mu);
        e->stopping = 1;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    if (e->slots) {
        for (int i = 0; i < e->n_slots; i++) {
            free(e->slots[i].tokens);
            sampler_destroy(e->slots[i].smp);
        }
    }
    free(e->slots);
    free(e->logits);
    free(e->jobs);
    free(e->piece);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_slot);
    free(e->b_row);
    model_ctx_destroy(e->ctx);
    kv_destroy(e->kv);
    if (e->pool) pool_destroy(e->pool);
    if (e->tok) tok_destroy(e->tok);
    model_free(e->model);
    free(e->cancels);
    free(e->taken);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

const tok_t *engine_tok(const engine_t *e)
{
    return e->tok;
}

const model_t *engine_model(const engine_t *e)
{
    return e->model;
}

const gguf_t *engine_gguf(const engine_t *e)
{
    return model_gguf(e->model);
}

int engine_prefill_take(int todo, int room)
{
    int take = todo < room ? todo : room;
    if (take == todo) return take; /* the rest of the prompt (1 token if that is all) */
    if (take < 2) return 0;        /* a lone token now, more later: wait */
    if (todo - take == 1) take = take >= 3 ? take - 1 : 0; /* leave 2, not 1 */
    return take;
}

int engine_submit(engine_t *e, const engine_req_t *in, uint64_t *req_id, bar_msg_t *msg)
{
    if (!in->prompt || in->n_prompt == 0)
        return bar_fail(msg, BAR_ERR_INVALID, "the prompt is empty");
    if (in->n_prompt >= (size_t)e->n_ctx)
        return bar_fail(msg, BAR_ERR_RANGE,
                        "the prompt has %zu tokens; the context holds %d (prompt plus at least one "
                        "generated token)",
                        in->n_prompt, e->n_ctx);
    if (!in->cb) return bar_fail(msg, BAR_ERR_INVALID, "no event callback");
    int vocab = model_hparams(e->model)->n_vocab;
    for (size_t i = 0; i < in->n_prompt; i++)
        if (in->prompt[i] < 0 || in->prompt[i] >= vocab)
            return bar_fail(msg, BAR_ERR_INVALID, "token id %d outside the vocabulary",
                            in->prompt[i]);
    if (in->sampling.n_stop < 0 || in->sampling.n_stop > 4)
        return bar_fail(msg, BAR_ERR_INVALID, "at most 4 stop strings");
    req_t *r = calloc(1, sizeof *r);
    if (!r) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    r->prompt = malloc(in->n_prompt * sizeof(int32_t));
    size_t stop_total = 0;
    for (int i = 0; i < in->sampling.n_stop; i++)
        stop_total += (in->sampling.stop[i] ? strlen(in->sampling.stop[i]) : 0) + 1;
    r->stop_store = malloc(stop_total + 1);
    if (!r->prompt || !r->stop_store) {
        req_free(r);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    memcpy(r->prompt, in->prompt, in->n_prompt * sizeof(int32_t));
    r->n_prompt = (int)in->n_prompt;
    r->sp = in->sampling;
    char *p = r->stop_store;
    for (int i = 0; i < in->sampling.n_stop; i++) {
        const char *st = in->sampling.stop[i] ? in->sampling.stop[i] : "";
        size_t l = strlen(st);
        if (l >= HOLD_MAX / 2) l = HOLD_MAX / 2;
        memcpy(p, st, l);
        p[l] = 0;
        r->sp.stop[i] = p;
        r->stop_len[i] = l;
        p += l + 1;
    }
    for (int i = in->sampling.n_stop; i < 4; i++)
        r->sp.stop[i] = NULL;
    if (r->sp.max_tokens <= 0) r->sp.max_tokens = 1;
    r->deadline = in->deadline;
    r->priority = in->priority;
    r->cb = in->cb;
    r->user = in->user;
    r->t_submit = time_now_mono();

    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        return bar_fail(msg, BAR_ERR_BUSY, "the engine is shutting down");
    }
    r->id = e->next_id++;
    req_t **pp = &e->queue;
    while (*pp && (*pp)->priority >= r->priority)
        pp = &(*pp)->next;
    r->next = *pp;
    *pp = r;
    e->n_queued++;
    e->n_requests++;
    if (req_id) *req_id = r->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void engine_cancel(engine_t *e, uint64_t req_id)
{
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? e->cap_cancels * 2 : 64;
        uint64_t *p = realloc(e->cancels, (size_t)cap * sizeof(uint64_t));
        if (!p) { /* out of memory: the request runs to its end instead */
            pthread_mutex_unlock(&e->mu);
            return;
        }
        e->cancels = p;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = req_id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void engine_stats(engine_t *e, engine_stats_t *out)
{
    pthread_mutex_lock(&e->mu);
    out->n_ctx = e->n_ctx;
    out->n_vocab = model_hparams(e->model)->n_vocab;
    out->n_active = e->n_active;
    out->n_queued = e->n_queued;
    out->n_requests = e->n_requests;
    out->n_tokens_prompt = e->n_tok_prompt;
    out->n_tokens_gen = e->n_tok_gen;
    out->model_id = e->model_id;
    out->kernel_level = kern_level_name();
    out->n_threads = e->n_threads;
    pthread_mutex_unlock(&e->mu);
}
