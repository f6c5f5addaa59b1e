/* engine.c — the engine thread: continuous batching over a paged KV cache.
 *
 * Each iteration of the scheduler loop (1) applies cancellations, (2) resumes
 * pre-empted sequences and admits queued requests, highest priority first
 * (FIFO within a priority; a parked sequence before a queued request of the
 * same priority), while a running place is free and the KV pool has the
 * blocks their prompts need; when all n_run running places are taken, a
 * waiting sequence or request of a higher priority than the lowest running
 * one pre-empts that one (slot pre-emption: it is parked like a KV
 * pre-emption, in one of the n_run extra parking slots, and resumes when a
 * place is free); a new sequence first maps the longest prefix of
 * its prompt that the prefix cache holds for its salt (kv_pool.h), (3) plans
 * one batch — one token for every decoding sequence, then prompt chunks of
 * prefilling sequences up to the batch budget (chunked prefill) — and gets
 * the KV blocks the plan writes; when the pool is out of blocks it pre-empts
 * the lowest-priority, youngest sequence (its blocks are released: published
 * ones stay in the prefix cache), which later resumes by re-prefilling its
 * prompt and generated tokens, (4) runs one forward pass, publishes the
 * blocks that filled, samples, and emits events. Text is released only when
 * it is complete UTF-8 and cannot be the start of a stop string.
 *
 * Slot lifecycle and the numerics of sharing: engine_slot.c.
 * Not for: HTTP, JSON, response caching (callers own those). */
#include "engine/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "engine/kernels/kern.h"
#include "util/timeutil.h"

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

/* ------------------------------------------------------------- events */

/* An event of `type` for r with the counts every event carries (s may be
 * NULL for a request that never reached a slot). */
engine_event_t event_for(engine_ev_type_t type, const req_t *r, const slot_t *s)
{
    engine_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    ev.req_id = r->id;
    ev.index = r->index;
    ev.n_prompt = r->n_prompt;
    ev.n_cached = s ? s->n_cached : 0;
    ev.n_gen = s ? s->n_gen : 0;
    ev.t_first_token = s && s->t_first > 0 ? s->t_first - r->t_submit : 0;
    ev.t_queue = s && s->t_admit > 0 ? s->t_admit - r->t_submit : 0;
    return ev;
}

/* DONE for r's choice; for a request that has not forked yet (never
 * admitted, or ended before its first sample) DONE for each of its n. */
static void emit_done(req_t *r, slot_t *s, engine_finish_t fin, int err, const char *msg)
{
    engine_event_t ev = event_for(ENGINE_EV_DONE, r, s);
    ev.finish = fin;
    ev.err = err;
    ev.msg = msg;
    r->cb(r->user, &ev);
    if (r->index == 0 && r->sp.n > 1 && (!s || s->fork_pending))
        for (int i = 1; i < r->sp.n; i++) {
            ev.index = i;
            ev.n_gen = 0;
            r->cb(r->user, &ev);
        }
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

static void slot_constrain(void *ctx, float *logits);

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
    j->constrain = s->req->gst && s->owner->gvocab ? slot_constrain : NULL;
    j->constrain_ctx = s;
}

/* The output constraint (sampler hook, on a pool thread): every token whose
 * bytes would leave the grammar gets -INFINITY; end-of-generation tokens
 * keep their logits only when the output is complete. The budget: after this
 * token `left` more fit (max_tokens, the context), and every token can add
 * at least one byte, so only tokens after which the output can be finished
 * in `left` bytes stay allowed; a string cannot run into max_tokens and cut
 * the JSON (grammar.h, gram_state_mask_within). */
static void slot_constrain(void *ctx, float *logits)
{
    slot_t *s = ctx;
    engine_t *e = s->owner;
    gram_state_t *g = s->req->gst;
    int n_vocab = gram_vocab_n(e->gvocab);
    float keep[16];
    int n_keep = e->n_eog < 16 ? e->n_eog : 16;
    for (int i = 0; i < n_keep; i++)
        keep[i] = logits[e->eog[i]];
    int left = s->req->sp.max_tokens - s->n_gen - 1;
    if (e->n_ctx_eff - s->n_tokens - 1 < left) left = e->n_ctx_eff - s->n_tokens - 1;
    const uint64_t *m = gram_state_mask_within(g, e->gvocab, left);
    int any = 0;
    for (int w = 0; w < (n_vocab + 63) / 64; w++) {
        uint64_t bits = m ? m[w] : 0;
        any |= bits != 0;
        int base = w * 64, end = base + 64 < n_vocab ? base + 64 : n_vocab;
        if (bits == ~0ull) continue;
        if (bits == 0) { /* most words of a narrow mask: a plain fill */
            for (int t = base; t < end; t++)
                logits[t] = -INFINITY;
            continue;
        }
        /* the refused tokens of a mixed word, one per zero bit */
        uint64_t zero = ~bits & (end - base == 64 ? ~0ull : (1ull << (end - base)) - 1);
        for (; zero; zero &= zero - 1)
            logits[base + __builtin_ctzll(zero)] = -INFINITY;
    }
    /* complete, or a dead end (out of memory): end of generation may come */
    if (gram_state_accepting(g) || !any)
        for (int i = 0; i < n_keep; i++)
            logits[e->eog[i]] = keep[i];
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

    if ((!r->sp.ignore_eos || r->gst) && tok_is_eog(e->tok, tok)) {
        char tail[16];
        size_t nt = tok_stream_flush(&s->ts, tail, sizeof tail);
        hold_append(s, tail, nt);
        if (s->n_hold > 0) /* held-back text that no stop string completed */
            hold_release(s, r, -1, 0.0f, NULL, 0, 1);
        finish_slot(e, s, ENGINE_FINISH_STOP, 0, NULL);
        return;
    }
    int gdone = 0;
    if (r->gst) {
        size_t nb;
        const uint8_t *b = gram_vocab_bytes(e->gvocab, tok, &nb);
        if (gram_state_feed(r->gst, b, nb)) {
            finish_slot(e, s, ENGINE_FINISH_ERROR, BAR_ERR_INTERNAL,
                        "a sampled token left the output constraint");
            return;
        }
        gdone = gram_state_done(r->gst);
    }
    size_t np = tok_stream_feed(e->tok, &s->ts, tok, e->piece, e->piece_cap);
    hold_append(s, e->piece, np);
    s->tokens[s->n_tokens++] = tok;
    int at_end = s->n_gen >= r->sp.max_tokens || s->n_tokens >= e->n_ctx_eff;
    if (at_end || gdone) {
        char tail[16];
        size_t nt = tok_stream_flush(&s->ts, tail, sizeof tail);
        hold_append(s, tail, nt);
    }
    if (hold_release(s, r, tok, lp, want_lp ? top : NULL, n_top, at_end || gdone) || gdone) {
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
        /* the highest-priority waiter next — a parked sequence (older
         * first) or the queue's head, the parked one on a tie — while a
         * running place is free or a lower-priority running sequence can
         * be pre-empted for it; whoever cannot get its blocks stops
         * admission */
        for (;;) {
            slot_t *p = NULL;
            int running = 0;
            for (int i = 0; i < e->n_slots; i++) {
                slot_t *s = &e->slots[i];
                /* a slot kept for a fork counts: its choice will run */
                if ((s->req && !s->parked) || s->reserved) running++;
                if (s->req && s->parked &&
                    (!p || s->req->priority > p->req->priority ||
                     (s->req->priority == p->req->priority && s->admit < p->admit)))
                    p = s;
            }
            req_t *q = e->queue;
            int take_q = q && (!p || q->priority > p->req->priority);
            if (!take_q && !p) break;
            int prio = take_q ? q->priority : p->req->priority;
            if (take_q && !slot_free(e)) break;             /* no parking room left */
            int need = take_q && q->sp.n > 1 ? q->sp.n : 1; /* n choices run at once */
            if (running + need > e->n_run) {
                slot_t *v = pick_victim(e);
                if (!v || v->req->priority >= prio) break;
                seq_preempt_locked(e, v);
                if (running - 1 + need > e->n_run) continue; /* another one, then count again */
            }
            if (take_q) {
                if (slot_admit(e, q) != 0) break;
                e->queue = q->next;
                q->next = NULL;
                e->n_queued--;
            } else if (seq_start(e, p, 1) < 0) {
                break;
            }
        }
        kv_pool_stats(e->kvp, &e->kvs);
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

        /* plan the batch: decode tokens first, then prompt chunks; get
         * their blocks (pre-empting when the pool is out) */
        int n = 0, n_rows = 0;
        for (int i = 0; i < e->n_slots; i++) {
            slot_t *s = &e->slots[i];
            s->want_logits = -1;
            s->plan = 0;
            if (s->req && !s->parked && s->n_past >= s->n_prefill) s->plan = 1, n++;
        }
        for (int i = 0; i < e->n_slots && n < N_BATCH; i++) {
            slot_t *s = &e->slots[i];
            if (!s->req || s->parked || s->n_past >= s->n_prefill) continue;
            s->plan = engine_prefill_take(s->n_prefill - s->n_past, N_BATCH - n);
            n += s->plan;
        }
        for (int pass = 0; pass < 2; pass++) /* decoders, then prefills */
            for (int i = 0; i < e->n_slots; i++) {
                slot_t *s = &e->slots[i];
                if (!s->req || s->parked || s->plan == 0 ||
                    (s->n_past >= s->n_prefill) != (pass == 0))
                    continue;
                seq_reserve(e, s, s->n_past + s->plan - 1, &n);
            }
        /* build it (logits rows in token order for the fast path) */
        n = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < e->n_slots; i++) {
                slot_t *s = &e->slots[i];
                if (!s->req || s->parked || s->plan == 0 ||
                    (s->n_past >= s->n_prefill) != (pass == 0))
                    continue;
                for (int k = 0; k < s->plan; k++) {
                    e->b_tok[n] = s->tokens[s->n_past + k];
                    e->b_pos[n] = s->n_past + k;
                    e->b_slot[n] = i;
                    e->b_row[n] = -1;
                    n++;
                }
                if (s->n_past + s->plan >= s->n_prefill) {
                    e->b_row[n - 1] = n_rows;
                    s->want_logits = n_rows++;
                }
                e->tables[i] = s->blocks;
            }
        if (n == 0) continue;
        model_batch_t b = {n, e->b_tok, e->b_pos, e->b_slot, e->b_row};
        bar_msg_t msg = {{0}};
        int rc = model_forward_paged(e->ctx, e->kv, &b, e->tables, e->n_slots, e->logits, &msg);
        if (rc) {
            for (int i = 0; i < e->n_slots; i++)
                if (e->slots[i].req)
                    finish_slot(e, &e->slots[i], ENGINE_FINISH_ERROR, rc, msg.text);
            continue;
        }
        /* advance positions, offer the blocks that filled to the cache */
        int prompt_tokens = 0;
        for (int k = 0; k < n; k++) {
            slot_t *s = &e->slots[b.slot[k]];
            if (b.pos[k] < s->req->n_prompt && s->n_past <= b.pos[k]) prompt_tokens++;
            s->n_past = b.pos[k] + 1;
        }
        for (int i = 0; i < e->n_slots; i++)
            if (e->slots[i].req && e->slots[i].plan > 0) seq_publish(e, &e->slots[i]);
        pthread_mutex_lock(&e->mu);
        e->n_tok_prompt += (uint64_t)prompt_tokens;
        pthread_mutex_unlock(&e->mu);
        /* n > 1: a prompt that just finished its prefill forks into its choices */
        for (int i = 0; i < e->n_slots; i++) {
            slot_t *s = &e->slots[i];
            if (s->req && s->want_logits >= 0 && s->fork_pending) seq_fork(e, s, &n_rows, n_vocab);
        }
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

static size_t vocab_piece(void *ctx, int id, char *buf, size_t cap)
{
    const tok_t *t = ctx;
    return tok_is_special(t, id) ? 0 : tok_piece(t, id, 0, buf, cap);
}

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
    e->n_run = cfg->n_seq_max > 0 ? cfg->n_seq_max : 8;
    e->n_slots = 2 * e->n_run; /* the second half: room for sequences pre-empted for a slot */
    e->pool = pool_create(cfg->n_threads);
    if (!e->pool) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "cannot start worker threads");
        goto fail;
    }
    e->n_threads = pool_size(e->pool);
    /* the KV pool: --kv-mem bytes, by default what n_seq_max full contexts
     * take (the reservation of the slot-per-sequence cache it replaces) */
    size_t bb = kv_block_bytes(e->model);
    e->max_blocks = (e->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    size_t n_blocks = cfg->kv_mem > 0 ? cfg->kv_mem / bb : (size_t)e->n_run * e->max_blocks;
    if (n_blocks < 1) {
        rc = bar_fail(msg, BAR_ERR_RANGE,
                      "kv-mem: %zu bytes hold no KV block; one block (%d positions) takes %zu "
                      "bytes for this model",
                      cfg->kv_mem, KV_BLOCK, bb);
        goto fail;
    }
    if (n_blocks > (1u << 30)) n_blocks = 1u << 30;
    e->kv_mem = n_blocks * bb;
    long long cap = (long long)n_blocks * KV_BLOCK;
    e->n_ctx_eff = cap < e->n_ctx ? (int)cap : e->n_ctx;
    if ((rc = kv_create_blocks(&e->kv, e->model, (int)n_blocks, msg)) ||
        (rc = kv_pool_create(&e->kvp, (int)n_blocks, KV_BLOCK, msg)) ||
        (rc = model_ctx_create(&e->ctx, e->model, N_BATCH, e->n_ctx, e->pool, msg)))
        goto fail;
    kv_pool_stats(e->kvp, &e->kvs);
    e->slots = calloc((size_t)e->n_slots, sizeof(slot_t));
    e->logits = malloc((size_t)e->n_slots * hp->n_vocab * sizeof(float));
    e->piece_cap = tok_stream_bound(e->tok);
    e->piece = malloc(e->piece_cap);
    /* the vocabulary as bytes for grammar masks (control tokens have none),
     * and the end-of-generation ids a complete constrained output may end with */
    if (gram_vocab_create(&e->gvocab, hp->n_vocab, vocab_piece, e->tok)) e->gvocab = NULL;
    for (int id = 0; id < hp->n_vocab; id++)
        if (tok_is_eog(e->tok, id)) {
            int *ne = realloc(e->eog, (size_t)(e->n_eog + 1) * sizeof *ne);
            if (!ne) break;
            e->eog = ne;
            e->eog[e->n_eog++] = id;
        }
    e->b_tok = malloc(N_BATCH * sizeof(int32_t));
    e->b_pos = malloc(N_BATCH * sizeof(int));
    e->b_slot = malloc(N_BATCH * sizeof(int));
    e->b_row = malloc(N_BATCH * sizeof(int));
    e->tables = calloc((size_t)e->n_slots, sizeof *e->tables);
    if (!e->tables || !e->slots || !e->logits || !e->b_tok || !e->b_pos || !e->b_slot ||
        !e->b_row || !e->piece) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!(e->jobs = calloc((size_t)e->n_slots, sizeof(sampler_job_t)))) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < e->n_slots; i++) {
        e->slots[i].owner = e;
        e->slots[i].tokens = malloc((size_t)e->n_ctx * sizeof(int32_t));
        e->slots[i].blocks = malloc((size_t)e->max_blocks * sizeof(int));
        e->slots[i].hash = malloc((size_t)e->max_blocks * sizeof(kv_hash_t));
        if (!e->slots[i].tokens || !e->slots[i].blocks || !e->slots[i].hash ||
            sampler_create(&e->slots[i].smp, hp->n_vocab)) {
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
            free(e->slots[i].blocks);
            free(e->slots[i].hash);
            sampler_destroy(e->slots[i].smp);
        }
    }
    free(e->slots);
    gram_vocab_destroy(e->gvocab);
    free(e->eog);
    free(e->logits);
    free(e->jobs);
    free(e->piece);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_slot);
    free(e->b_row);
    free(e->tables);
    model_ctx_destroy(e->ctx);
    kv_pool_destroy(e->kvp);
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
    if (in->n_prompt >= (size_t)e->n_ctx_eff) {
        if (e->n_ctx_eff < e->n_ctx)
            return bar_fail(msg, BAR_ERR_RANGE,
                            "the prompt has %zu tokens; the KV cache (kv-mem %zu bytes) holds %d "
                            "(prompt plus at least one generated token)",
                            in->n_prompt, e->kv_mem, e->n_ctx_eff);
        return bar_fail(msg, BAR_ERR_RANGE,
                        "the prompt has %zu tokens; the context holds %d (prompt plus at least one "
                        "generated token)",
                        in->n_prompt, e->n_ctx);
    }
    if (!in->cb) return bar_fail(msg, BAR_ERR_INVALID, "no event callback");
    int vocab = model_hparams(e->model)->n_vocab;
    for (size_t i = 0; i < in->n_prompt; i++)
        if (in->prompt[i] < 0 || in->prompt[i] >= vocab)
            return bar_fail(msg, BAR_ERR_INVALID, "token id %d outside the vocabulary",
                            in->prompt[i]);
    if (in->sampling.n_stop < 0 || in->sampling.n_stop > 4)
        return bar_fail(msg, BAR_ERR_INVALID, "at most 4 stop strings");
    if (in->sampling.n < 0 || in->sampling.n > e->n_run)
        return bar_fail(msg, BAR_ERR_RANGE,
                        "n = %d choices need as many sequences; this engine decodes %d at once "
                        "(--parallel)",
                        in->sampling.n, e->n_run);
    if (in->sampling.n_logit_bias < 0 ||
        (in->sampling.n_logit_bias > 0 && !in->sampling.logit_bias))
        return bar_fail(msg, BAR_ERR_INVALID, "bad logit_bias");
    for (int i = 0; i < in->sampling.n_logit_bias; i++)
        if (in->sampling.logit_bias[i].token < 0 || in->sampling.logit_bias[i].token >= vocab)
            return bar_fail(msg, BAR_ERR_INVALID, "logit_bias: token id %d outside the vocabulary",
                            in->sampling.logit_bias[i].token);
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
    if (r->sp.n < 1) r->sp.n = 1;
    r->sp.logit_bias = NULL;
    if (in->sampling.n_logit_bias > 0) {
        size_t nb = (size_t)in->sampling.n_logit_bias * sizeof *r->bias_store;
        if (!(r->bias_store = malloc(nb))) {
            req_free(r);
            return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        }
        memcpy(r->bias_store, in->sampling.logit_bias, nb);
        r->sp.logit_bias = r->bias_store;
    }
    r->sp.grammar = NULL;
    if (in->sampling.grammar) {
        if (!e->gvocab) {
            req_free(r);
            return bar_fail(msg, BAR_ERR_UNSUPPORTED, "this engine has no grammar vocabulary");
        }
        r->sp.grammar = gram_ref(in->sampling.grammar);
        if (gram_state_create(&r->gst, r->sp.grammar)) {
            req_free(r);
            return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        }
    }
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
    r->salt = in->salt;
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
    out->n_ctx = e->n_ctx_eff;
    out->n_vocab = model_hparams(e->model)->n_vocab;
    out->n_active = e->n_active;
    out->n_seq_max = e->n_run;
    out->n_queued = e->n_queued;
    out->n_requests = e->n_requests;
    out->n_tokens_prompt = e->n_tok_prompt;
    out->n_tokens_gen = e->n_tok_gen;
    out->model_id = e->model_id;
    out->kernel_level = kern_level_name();
    out->n_threads = e->n_threads;
    out->n_ctx_max = e->n_ctx;
    out->kv_mem = e->kv_mem;
    out->kv_block = KV_BLOCK;
    out->kv_blocks_total = e->kvs.n_blocks;
    out->kv_blocks_used = e->kvs.n_used;
    out->kv_blocks_cached = e->kvs.n_cached;
    out->kv_blocks_free = e->kvs.n_free;
    out->kv_evictions = e->kvs.evictions;
    out->prefix_hit_tokens = e->n_hit_tokens;
    out->preemptions = e->n_preempt;
    pthread_mutex_unlock(&e->mu);
}
