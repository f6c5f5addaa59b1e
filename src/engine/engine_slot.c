/* engine_slot.c — the slot lifecycle of the engine (engine.c runs the
 * loop): admission of a queued request into a slot, the reservations that
 * keep slots for an n-choice request's forks, start and resume with the
 * prefix-cache lookup, pre-emption and parking, block reservation with copy
 * on write, the fork of an n-choice request after its prefill, publishing
 * filled blocks, and release.
 *
 * Numerics of sharing: a block is shared under the salt only when every
 * position in it was computed as part of a prompt prefill (llama.cpp's
 * batched order), so a request that maps it gets the logits of an uncached
 * run bit for bit; blocks with generated positions (single-row order) are
 * published under a key private to their request, found only by its own
 * resume after a pre-emption.
 * Not for: batch planning, sampling, events beyond a fork's errors
 * (engine.c). */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"
#include "util/timeutil.h"

void req_free(req_t *r)
{
    if (!r) return;
    free(r->prompt);
    free(r->stop_store);
    free(r->bias_store);
    gram_state_destroy(r->gst);
    gram_release(r->sp.grammar);
    free(r);
}

/* ------------------------------------------------------- slot lifecycle */

/* The hash key of s's block j: the tenant's shared chain while every
 * position of the block was computed in a prompt prefill, else a chain
 * private to the request (see the top of the file). */
static kv_hash_t block_key(const slot_t *s, int j)
{
    kv_hash_t parent = j == 0 ? kv_pool_root(s->req->salt) : s->hash[j - 1];
    if ((j + 1) * KV_BLOCK > s->req->n_prompt) {
        parent.lo ^= s->req->id * 0x9e3779b97f4a7c15ULL;
        parent.hi ^= 0x7072697661746521ULL ^ (uint64_t)s->req->index * 0xbf58476d1ce4e5b9ULL;
    }
    return kv_pool_chain(parent, s->tokens + (size_t)j * KV_BLOCK, KV_BLOCK);
}

/* Release s's blocks, the last first: the cache evicts the least recently
 * released first, so a prefix's head outlives its tail (vLLM's order). Blocks
 * under a private key are forgotten unless the sequence will resume (`keep`). */
static void seq_drop_blocks(engine_t *e, slot_t *s, int keep)
{
    for (int j = s->n_blk - 1; j >= 0; j--) {
        int priv = (j + 1) * KV_BLOCK > s->req->n_prompt;
        kv_pool_release(e->kvp, s->blocks[j], priv && !keep);
    }
    s->n_blk = 0;
    s->n_pub = 0;
}

void slot_release(engine_t *e, slot_t *s)
{
    seq_drop_blocks(e, s, 0);
    if (s->fork_pending) /* ended before forking: its reservations go */
        for (int i = 0; i < e->n_slots; i++)
            if (e->slots[i].reserved == (int)(s - e->slots) + 1) e->slots[i].reserved = 0;
    s->fork_pending = 0;
    s->parked = 0;
    req_free(s->req);
    s->req = NULL;
    pthread_mutex_lock(&e->mu);
    e->n_active--;
    kv_pool_stats(e->kvp, &e->kvs);
    pthread_mutex_unlock(&e->mu);
}

/* Map the longest cached prefix of s->tokens[0, s->n_prefill) and check that
 * the pool can hold the rest. 0: started (n_past set); -1: not enough free
 * blocks now (nothing kept). `resume`: a pre-empted sequence, which may
 * re-evaluate a single token (it was decoded one at a time before). */
int seq_start(engine_t *e, slot_t *s, int resume)
{
    int n = s->n_prefill, hit = 0;
    while ((hit + 1) * KV_BLOCK <= n) {
        kv_hash_t h = block_key(s, hit);
        int b = kv_pool_lookup(e->kvp, h, s->tokens + (size_t)hit * KV_BLOCK);
        if (b < 0) break;
        s->blocks[hit] = b;
        s->hash[hit] = h;
        hit++;
    }
    s->n_blk = hit;
    s->n_pub = hit;
    /* keep at least one token to evaluate, so we get logits, and never
     * exactly one for a new prompt: a lone token is summed in llama.cpp's
     * single-row order, and a repeated prompt should give the logits of its
     * first evaluation (engine_prefill_take) */
    int reuse = hit * KV_BLOCK;
    if (reuse > n - 1) reuse = n - 1;
    if (!resume && reuse > 0 && n - reuse == 1) reuse--;
    int need = (n + KV_BLOCK - 1) / KV_BLOCK - hit;
    int cow = hit > 0 && reuse < hit * KV_BLOCK; /* the last mapped block gets rewritten */
    if (kv_pool_available(e->kvp) < need + cow) {
        seq_drop_blocks(e, s, 1);
        return -1;
    }
    if (cow) { /* a private copy of the shared block: positions >= reuse are recomputed */
        int b = kv_pool_alloc(e->kvp);
        kv_copy_block(e->kv, b, s->blocks[hit - 1]);
        kv_pool_release(e->kvp, s->blocks[hit - 1], 0);
        s->blocks[hit - 1] = b;
        s->n_pub = hit - 1; /* offered again when full: the original keeps the key */
    }
    s->n_past = reuse;
    s->parked = 0;
    return reuse;
}

/* A slot struct holding no sequence (running or parked) and kept for no
 * fork (n > 1), or NULL. */
slot_t *slot_free(engine_t *e)
{
    for (int i = 0; i < e->n_slots; i++)
        if (!e->slots[i].req && !e->slots[i].reserved) return &e->slots[i];
    return NULL;
}

/* Put r into a free slot if the pool can take its prompt; returns 0, or -1
 * when no slot is free or the blocks are not there yet (the caller checks
 * that a running place is free). Called with mu held. */
int slot_admit(engine_t *e, req_t *r)
{
    slot_t *s = slot_free(e);
    int n_free = 0, n_need = r->sp.n > 1 ? r->sp.n : 1;
    for (int i = 0; i < e->n_slots; i++)
        n_free += !e->slots[i].req && !e->slots[i].reserved;
    if (!s || n_free < n_need) return -1; /* n choices wait for n slots */
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
    s->n_tokens = r->n_prompt;
    s->n_prefill = r->n_prompt;
    s->req = r;
    int reuse = seq_start(e, s, 0);
    if (reuse < 0) {
        s->req = NULL;
        return -1;
    }
    s->n_cached = reuse;
    s->n_gen = 0;
    s->t_first = 0;
    s->t_admit = time_now_mono();
    s->n_hold = 0;
    s->admit = ++e->admit_clock;
    tok_stream_init(&s->ts);
    sampler_reset(s->smp, &r->sp, r->prompt, r->n_prompt);
    s->fork_pending = n_need > 1;
    for (int i = 0, left = n_need - 1; i < e->n_slots && left > 0; i++)
        if (!e->slots[i].req && !e->slots[i].reserved && &e->slots[i] != s) {
            e->slots[i].reserved = (int)(s - e->slots) + 1;
            left--;
        }
    e->n_active++;
    e->n_hit_tokens += (uint64_t)reuse;
    return 0;
}

/* Pre-empt s: give its blocks back (published ones stay cached) and let it
 * wait; it keeps its tokens, sampler and the text it has emitted, and
 * resumes by re-prefilling everything it has (seq_start). */
void seq_preempt_locked(engine_t *e, slot_t *s)
{
    seq_drop_blocks(e, s, 1);
    s->parked = 1;
    s->n_past = 0;
    s->n_prefill = s->n_tokens;
    s->plan = 0;
    s->want_logits = -1;
    e->n_preempt++;
}

static void seq_preempt(engine_t *e, slot_t *s)
{
    pthread_mutex_lock(&e->mu);
    seq_preempt_locked(e, s);
    pthread_mutex_unlock(&e->mu);
}

/* The sequence to pre-empt: lowest priority, then the youngest. */
slot_t *pick_victim(engine_t *e)
{
    slot_t *v = NULL;
    for (int i = 0; i < e->n_slots; i++) {
        slot_t *s = &e->slots[i];
        if (!s->req || s->parked) continue;
        if (!v || s->req->priority < v->req->priority ||
            (s->req->priority == v->req->priority && s->admit > v->admit))
            v = s;
    }
    return v;
}

/* A free block for s, pre-empting others (or s) when the pool is out: the
 * block, or -1 when s itself was pre-empted. Adjusts *n_planned by the plans
 * it voided. */
static int seq_alloc(engine_t *e, slot_t *s, int *n_planned)
{
    for (;;) {
        int b = kv_pool_alloc(e->kvp);
        if (b >= 0) return b;
        slot_t *v = pick_victim(e);
        *n_planned -= v->plan;
        seq_preempt(e, v);
        if (v == s) return -1;
    }
}

/* Blocks for s's positions up to `last`; pre-empts others (or s) when the
 * pool is out. Returns 0, or -1 when s itself was pre-empted. Adjusts *n_planned
 * by the plans it voided. */
int seq_reserve(engine_t *e, slot_t *s, int last, int *n_planned)
{
    /* copy on write: after a fork the partial block is shared by the
     * choices; whoever writes into it first takes a private copy (a
     * pre-emption on the way may leave s the last holder: then no copy) */
    int j = s->n_past / KV_BLOCK;
    if (j < s->n_blk && kv_pool_refs(e->kvp, s->blocks[j]) > 1) {
        int b = seq_alloc(e, s, n_planned);
        if (b < 0) return -1;
        if (kv_pool_refs(e->kvp, s->blocks[j]) > 1) {
            kv_copy_block(e->kv, b, s->blocks[j]);
            kv_pool_release(e->kvp, s->blocks[j], 0);
            s->blocks[j] = b;
        } else {
            kv_pool_release(e->kvp, b, 1);
        }
    }
    while (s->n_blk <= last / KV_BLOCK) {
        int b = seq_alloc(e, s, n_planned);
        if (b < 0) return -1;
        s->blocks[s->n_blk++] = b;
    }
    return 0;
}

/* A copy of parent r for its choice `index` (prompt not copied: a choice
 * starts from the parent's slot), or NULL on OOM. */
static req_t *req_clone(const req_t *r, int index)
{
    req_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = *r;
    c->prompt = NULL;
    c->next = NULL;
    c->index = index;
    c->bias_store = NULL;
    c->stop_store = NULL;
    c->gst = NULL; /* its own constraint state, from the grammar's start */
    c->sp.grammar = NULL;
    size_t stop_total = 0;
    for (int i = 0; i < r->sp.n_stop; i++)
        stop_total += r->stop_len[i] + 1;
    c->stop_store = malloc(stop_total + 1);
    if (r->sp.n_logit_bias > 0)
        c->bias_store = malloc((size_t)r->sp.n_logit_bias * sizeof *c->bias_store);
    if (!c->stop_store || (r->sp.n_logit_bias > 0 && !c->bias_store)) {
        free(c->stop_store);
        free(c->bias_store);
        free(c);
        return NULL;
    }
    char *p = c->stop_store;
    for (int i = 0; i < r->sp.n_stop; i++) {
        memcpy(p, r->sp.stop[i], r->stop_len[i] + 1);
        c->sp.stop[i] = p;
        p += r->stop_len[i] + 1;
    }
    if (c->bias_store)
        memcpy(c->bias_store, r->sp.logit_bias, (size_t)r->sp.n_logit_bias * sizeof *c->bias_store);
    c->sp.logit_bias = c->bias_store;
    /* a choice forks before the parent's first sample: the constraint starts
     * where the parent's does, at the grammar's start */
    if (r->sp.grammar) {
        c->sp.grammar = gram_ref(r->sp.grammar);
        if (gram_state_create(&c->gst, c->sp.grammar)) {
            req_free(c);
            return NULL;
        }
    }
    return c;
}

/* Fork s (its prompt just prefilled; logits in row s->want_logits) into its
 * reserved slots: each choice shares s's KV blocks by reference (the partial
 * last one is copied on its first write, seq_reserve), starts with s's
 * sampler state, its own RNG stream, and a copy of the logits row. */
void seq_fork(engine_t *e, slot_t *s, int *n_rows, int n_vocab)
{
    req_t *r = s->req;
    int me = (int)(s - e->slots) + 1, index = 1;
    s->fork_pending = 0;
    for (int i = 0; i < e->n_slots && index < r->sp.n; i++) {
        slot_t *c = &e->slots[i];
        if (c->reserved != me) continue;
        c->reserved = 0;
        req_t *cr = req_clone(r, index);
        if (!cr) {
            engine_event_t ev = event_for(ENGINE_EV_DONE, r, NULL);
            ev.index = index++;
            ev.finish = ENGINE_FINISH_ERROR;
            ev.err = BAR_ERR_NOMEM;
            ev.msg = "out of memory forking a choice";
            r->cb(r->user, &ev);
            continue;
        }
        c->req = cr;
        memcpy(c->tokens, s->tokens, (size_t)s->n_tokens * sizeof(int32_t));
        c->n_tokens = s->n_tokens;
        c->n_past = s->n_past;
        c->n_prefill = s->n_prefill;
        c->n_cached = s->n_cached;
        c->n_gen = 0;
        c->plan = 0;
        c->parked = 0;
        c->fork_pending = 0;
        c->admit = s->admit;
        for (int j = 0; j < s->n_blk; j++) {
            c->blocks[j] = s->blocks[j];
            kv_pool_share(e->kvp, s->blocks[j]);
        }
        memcpy(c->hash, s->hash, (size_t)s->n_blk * sizeof *c->hash);
        c->n_blk = s->n_blk;
        c->n_pub = s->n_pub;
        c->t_first = 0;
        tok_stream_init(&c->ts);
        c->n_hold = 0;
        sampler_fork(c->smp, s->smp, &cr->sp, index);
        c->want_logits = (*n_rows)++;
        memcpy(e->logits + (size_t)c->want_logits * n_vocab,
               e->logits + (size_t)s->want_logits * n_vocab, (size_t)n_vocab * sizeof(float));
        pthread_mutex_lock(&e->mu);
        e->n_active++;
        pthread_mutex_unlock(&e->mu);
        index++;
    }
    for (; index < r->sp.n; index++) { /* a reservation went missing: never, but end it */
        engine_event_t ev = event_for(ENGINE_EV_DONE, r, NULL);
        ev.index = index;
        ev.finish = ENGINE_FINISH_ERROR;
        ev.err = BAR_ERR_INTERNAL;
        ev.msg = "no sequence slot for a choice";
        r->cb(r->user, &ev);
    }
}

/* Offer s's blocks that filled up to the prefix cache. */
void seq_publish(engine_t *e, slot_t *s)
{
    int full = s->n_past / KV_BLOCK;
    for (int j = s->n_pub; j < full; j++) {
        s->hash[j] = block_key(s, j);
        kv_pool_publish(e->kvp, s->blocks[j], s->hash[j], s->tokens + (size_t)j * KV_BLOCK);
    }
    if (full > s->n_pub) s->n_pub = full;
}
