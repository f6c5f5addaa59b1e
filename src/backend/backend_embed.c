/* backend_embed.c — the embedding backend (see backend_embed.h).
 *
 * A job lives from bk_embed until its callback ran (or it was cancelled).
 * Loop thread: validates, answers what it can from the feature cache, copies
 * the rest (texts or ids) into the job and queues it. Embedder thread: takes
 * queued jobs into its working list, tokenizes their texts, and runs forward
 * passes over the items (one per input still needed) of all working jobs in
 * arrival order, at most BACKEND_EMBED_BATCH_TOKENS tokens per pass; a job
 * whose items are all done (or that was cancelled) moves to the done queue and
 * the loop is woken. Loop thread again: fills the feature cache, calls back,
 * frees.
 *
 * Ownership: the loop owns a job until it is queued, the embedder from then
 * until it is in the done queue, the loop again after. The only field both
 * touch is `cancelled` (atomic). */
#include "backend/backend_embed.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/bert.h"
#include "engine/kernels/kern.h"
#include "util/timeutil.h"

typedef struct emb emb_t;

typedef struct ejob {
    struct ejob *next;                /* pending / working / done queue */
    struct ejob *all_prev, *all_next; /* the loop's list of live jobs */
    emb_t *b;
    uint64_t id;
    bk_embed_fn cb;
    void *user;
    int n;
    char **texts; /* [n] copies of the inputs still needed (text jobs), else NULL */
    size_t *lens;
    int32_t **ids; /* [n] token ids of the inputs still needed */
    int *n_ids;
    XXH128_hash_t *keys; /* [n] feature-cache keys */
    uint8_t *need;       /* [n] 1: the encoder must embed it */
    uint8_t *done;       /* [n] embedder: finished */
    int n_need, n_left;
    int n_cached;
    int tokenized;
    float *vecs;   /* [n * dim] */
    int *n_tokens; /* [n] */
    int err;
    char msg[200];
    atomic_int cancelled;
} ejob_t;

/* ---- the feature cache: LRU of key -> (vector, n_tokens), loop thread ---- */

typedef struct {
    XXH128_hash_t key;
    int hnext;      /* hash chain */
    int prev, next; /* LRU list, most recent at head */
    int n_tokens;
    int used;
} fent_t;

typedef struct {
    int cap, count, dim;
    fent_t *e;
    float *vec;    /* [cap * dim] */
    int *heads;    /* [nb] */
    uint32_t mask; /* nb - 1 */
    int head, tail, free_top;
    uint64_t hits, misses, inserts, evictions;
} fcache_t;

struct emb {
    backend_t base;
    uv_loop_t *loop;
    bert_t *m;
    bert_ctx_t *ctx;
    int dim, window, vocab;
    uv_async_t async;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ejob_t *pending, *pending_tail; /* loop -> embedder */
    ejob_t *done_q, *done_tail;     /* embedder -> loop */
    int stop;
    /* embedder thread only */
    ejob_t *work, *work_tail;
    /* loop thread only */
    ejob_t *all;
    int n_jobs;
    uint64_t next_id;
    int closing;
    fcache_t fc;
    backend_embed_stats_t st; /* inputs/tokens/batches/encode_seconds: under mu */
};

static uint32_t fc_bucket(const fcache_t *c, XXH128_hash_t k)
{
    return (uint32_t)k.low64 & c->mask;
}

static int fc_init(fcache_t *c, int cap, int dim)
{
    memset(c, 0, sizeof *c);
    c->dim = dim;
    c->head = c->tail = -1;
    if (cap <= 0) return 0;
    uint32_t nb = 1;
    while (nb < (uint32_t)cap * 2)
        nb <<= 1;
    c->e = calloc((size_t)cap, sizeof *c->e);
    c->vec = malloc((size_t)cap * (size_t)dim * sizeof *c->vec);
    c->heads = malloc(nb * sizeof *c->heads);
    if (!c->e || !c->vec || !c->heads) return BAR_ERR_NOMEM;
    for (uint32_t i = 0; i < nb; i++)
        c->heads[i] = -1;
    c->mask = nb - 1;
    c->cap = cap;
    return 0;
}

static void fc_free(fcache_t *c)
{
    free(c->e);
    free(c->vec);
    free(c->heads);
}

static void lru_unlink(fcache_t *c, int i)
{
    fent_t *e = &c->e[i];
    if (e->prev >= 0)
        c->e[e->prev].next = e->next;
    else
        c->head = e->next;
    if (e->next >= 0)
        c->e[e->next].prev = e->prev;
    else
        c->tail = e->prev;
}

static void lru_push_front(fcache_t *c, int i)
{
    fent_t *e = &c->e[i];
    e->prev = -1;
    e->next = c->head;
    if (c->head >= 0) c->e[c->head].prev = i;
    c->head = i;
    if (c->tail < 0) c->tail = i;
}

/* The entry for k (and makes it most recent), or -1. */
static int fc_get(fcache_t *c, XXH128_hash_t k)
{
    if (!c->cap) return -1;
    for (int i = c->heads[fc_bucket(c, k)]; i >= 0; i = c->e[i].hnext)
        if (XXH128_isEqual(c->e[i].key, k)) {
            lru_unlink(c, i);
            lru_push_front(c, i);
            return i;
        }
    return -1;
}

static void fc_put(fcache_t *c, XXH128_hash_t k, const float *v, int n_tokens)
{
    if (!c->cap) return;
    int i = fc_get(c, k);
    if (i < 0) {
        if (c->count < c->cap) {
            i = c->count++;
        } else {
            /* evict the least recent: unchain it */
            i = c->tail;
            lru_unlink(c, i);
            int *pp = &c->heads[fc_bucket(c, c->e[i].key)];
            while (*pp != i)
                pp = &c->e[*pp].hnext;
            *pp = c->e[i].hnext;
            c->evictions++;
        }
        c->e[i].key = k;
        uint32_t bk = fc_bucket(c, k);
        c->e[i].hnext = c->heads[bk];
        c->heads[bk] = i;
        lru_push_front(c, i);
        c->inserts++;
    }
    c->e[i].n_tokens = n_tokens;
    memcpy(c->vec + (size_t)i * c->dim, v, (size_t)c->dim * sizeof *v);
}

static XXH128_hash_t key_text(const char *p, size_t n)
{
    return XXH3_128bits_withSeed(p, n, 0x7465787400000000ull); /* "text" */
}

static XXH128_hash_t key_ids(const int32_t *p, size_t n)
{
    return XXH3_128bits_withSeed(p, n * sizeof *p, 0x6964730000000000ull); /* "ids" */
}

/* ---- jobs ---- */

static void job_free(ejob_t *j)
{
    if (!j) return;
    for (int i = 0; i < j->n; i++) {
        if (j->texts) free(j->texts[i]);
        if (j->ids) free(j->ids[i]);
    }
    free(j->texts);
    free(j->lens);
    free(j->ids);
    free(j->n_ids);
    free(j->keys);
    free(j->need);
    free(j->done);
    free(j->vecs);
    free(j->n_tokens);
    free(j);
}

static void all_unlink(emb_t *b, ejob_t *j)
{
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else if (b->all == j)
        b->all = j->all_next;
    if (j->all_next) j->all_next->all_prev = j->all_prev;
    j->all_prev = j->all_next = NULL;
    b->n_jobs--;
}

static void push_done(emb_t *b, ejob_t *j)
{
    j->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->done_tail)
        b->done_tail->next = j;
    else
        b->done_q = j;
    b->done_tail = j;
    pthread_mutex_unlock(&b->mu);
    uv_async_send(&b->async);
}

/* ---- embedder thread ---- */

static void tokenize_job(emb_t *b, ejob_t *j)
{
    j->tokenized = 1;
    if (!j->texts) return; /* id inputs were copied (and truncated) at submit */
    for (int i = 0; i < j->n; i++) {
        if (!j->need[i]) continue;
        int32_t *ids = malloc((size_t)b->window * sizeof *ids);
        size_t n = 0;
        if (!ids ||
            bert_tokenize(b->m, j->texts[i], j->lens[i], ids, (size_t)b->window, &n, NULL)) {
            free(ids);
            j->err = BAR_ERR_NOMEM;
            snprintf(j->msg, sizeof j->msg, "out of memory while tokenizing");
            return;
        }
        j->ids[i] = ids;
        j->n_ids[i] = (int)n;
        j->n_tokens[i] = (int)n;
        free(j->texts[i]);
        j->texts[i] = NULL;
    }
}

/* Move finished and cancelled jobs from the working list to the done queue. */
static void retire(emb_t *b)
{
    ejob_t **pp = &b->work;
    ejob_t *last = NULL;
    while (*pp) {
        ejob_t *j = *pp;
        if (j->n_left == 0 || j->err || atomic_load(&j->cancelled)) {
            *pp = j->next;
            push_done(b, j);
        } else {
            last = j;
            pp = &j->next;
        }
    }
    b->work_tail = last;
}

static void *embed_thread(void *arg)
{
    emb_t *b = arg;
    const int cap = bert_ctx_max_tokens(b->ctx);
    const int32_t **ptr = NULL;
    int *lens = NULL;
    float **dst = NULL;
    float *out = NULL;
    int slots = 0;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        while (!b->stop && !b->pending && !b->work)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop) {
            pthread_mutex_unlock(&b->mu);
            break;
        }
        /* everything queued now joins the working list */
        if (b->pending) {
            if (b->work_tail)
                b->work_tail->next = b->pending;
            else
                b->work = b->pending;
            b->work_tail = b->pending_tail;
            b->pending = b->pending_tail = NULL;
        }
        pthread_mutex_unlock(&b->mu);
        for (ejob_t *j = b->work; j; j = j->next)
            if (!j->tokenized && !atomic_load(&j->cancelled)) tokenize_job(b, j);
        retire(b);
        /* one pass: items in arrival order up to the token cap */
        int n = 0, tokens = 0;
        for (ejob_t *j = b->work; j && tokens < cap; j = j->next) {
            for (int i = 0; i < j->n; i++) {
                if (!j->need[i] || j->done[i]) continue;
                if (tokens + j->n_ids[i] > cap) break;
                if (n == slots) {
                    int ns = slots ? slots * 2 : 64;
                    const int32_t **p2 = realloc(ptr, (size_t)ns * sizeof *p2);
                    if (p2) ptr = p2;
                    int *l2 = realloc(lens, (size_t)ns * sizeof *l2);
                    if (l2) lens = l2;
                    float **d2 = realloc(dst, (size_t)ns * sizeof *d2);
                    if (d2) dst = d2;
                    float *o2 = realloc(out, (size_t)ns * (size_t)b->dim * sizeof *o2);
                    if (o2) out = o2;
                    if (!p2 || !l2 || !d2 || !o2) break;
                    slots = ns;
                }
                ptr[n] = j->ids[i];
                lens[n] = j->n_ids[i];
                dst[n] = j->vecs + (size_t)i * b->dim;
                j->done[i] = 1; /* taken */
                j->n_left--;
                tokens += j->n_ids[i];
                n++;
            }
        }
        if (n == 0) {
            if (b->work && slots == 0) {
                /* out of memory for the batch arrays: fail the first job */
                b->work->err = BAR_ERR_NOMEM;
                snprintf(b->work->msg, sizeof b->work->msg, "out of memory");
            }
            retire(b);
            continue;
        }
        double t0 = time_now_mono();
        int rc = bert_embed(b->ctx, ptr, lens, n, out);
        double dt = time_now_mono() - t0;
        for (int k = 0; k < n; k++)
            memcpy(dst[k], out + (size_t)k * b->dim, (size_t)b->dim * sizeof *out);
        if (rc) {
            /* cannot happen for validated input; fail every job in the pass */
            for (ejob_t *j = b->work; j; j = j->next)
                for (int k = 0; k < n; k++)
                    if (dst[k] >= j->vecs && dst[k] < j->vecs + (size_t)j->n * b->dim) {
                        j->err = rc;
                        snprintf(j->msg, sizeof j->msg, "encoder failed: %s", bar_strerror(rc));
                    }
        }
        pthread_mutex_lock(&b->mu);
        b->st.inputs += (uint64_t)n;
        b->st.tokens += (uint64_t)tokens;
        b->st.batches++;
        b->st.encode_seconds += dt;
        pthread_mutex_unlock(&b->mu);
        retire(b);
    }
    free(ptr);
    free(lens);
    free(dst);
    free(out);
    return NULL;
}

/* ---- loop thread ---- */

static void deliver(emb_t *b, ejob_t *j)
{
    int cancelled = atomic_load(&j->cancelled);
    if (!cancelled) all_unlink(b, j);
    if (!cancelled) {
        bk_embed_result_t r = {0};
        if (j->err) {
            r.err = j->err;
            r.status = j->err == BAR_ERR_INVALID ? 400 : j->err == BAR_ERR_CANCELLED ? 503 : 500;
            r.msg = j->msg;
        } else {
            for (int i = 0; i < j->n; i++)
                if (j->need[i])
                    fc_put(&b->fc, j->keys[i], j->vecs + (size_t)i * b->dim, j->n_tokens[i]);
            r.vecs = j->vecs;
            r.dim = b->dim;
            r.n_tokens = j->n_tokens;
            r.n = j->n;
            r.n_cached = j->n_cached;
        }
        j->cb(j->user, &r);
    }
    job_free(j);
}

static void drain(emb_t *b)
{
    pthread_mutex_lock(&b->mu);
    ejob_t *list = b->done_q;
    b->done_q = b->done_tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        ejob_t *next = list->next;
        deliver(b, list);
        list = next;
    }
}

static void on_async(uv_async_t *h)
{
    drain(h->data);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int emb_embed(backend_t *base, const bk_embed_req_t *r, uint64_t *id, bar_msg_t *msg)
{
    emb_t *b = (emb_t *)base;
    if (b->closing) return bar_fail(msg, BAR_ERR_BUSY, "the embedding model is shutting down");
    if (!r || r->n <= 0 || (!r->texts && !r->ids) || !r->cb)
        return bar_fail(msg, BAR_ERR_INVALID, "input: nothing to embed");
    int is_text = r->texts != NULL;
    /* validate token-id inputs before anything is allocated */
    if (!is_text) {
        if (!r->n_ids) return bar_fail(msg, BAR_ERR_INVALID, "input: token arrays without lengths");
        for (int i = 0; i < r->n; i++) {
            if (r->n_ids[i] == 0 || !r->ids[i])
                return bar_fail(msg, BAR_ERR_INVALID, "input[%d]: an empty token array", i);
            for (size_t k = 0; k < r->n_ids[i]; k++)
                if (r->ids[i][k] < 0 || r->ids[i][k] >= b->vocab)
                    return bar_fail(msg, BAR_ERR_INVALID,
                                    "input[%d][%zu]: token id %ld is outside this model's "
                                    "vocabulary (0..%d)",
                                    i, k, (long)r->ids[i][k], b->vocab - 1);
        }
    } else if (!r->lens) {
        return bar_fail(msg, BAR_ERR_INVALID, "input: texts without lengths");
    }
    ejob_t *j = calloc(1, sizeof *j);
    if (!j) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    size_t n = (size_t)r->n;
    j->b = b;
    j->cb = r->cb;
    j->user = r->user;
    j->n = r->n;
    j->ids = calloc(n, sizeof *j->ids);
    j->n_ids = calloc(n, sizeof *j->n_ids);
    j->keys = calloc(n, sizeof *j->keys);
    j->need = calloc(n, 1);
    j->done = calloc(n, 1);
    j->vecs = malloc(n * (size_t)b->dim * sizeof *j->vecs);
    j->n_tokens = calloc(n, sizeof *j->n_tokens);
    int oom = !j->ids || !j->n_ids || !j->keys || !j->need || !j->done || !j->vecs || !j->n_tokens;
    if (is_text && !oom) {
        j->texts = calloc(n, sizeof *j->texts);
        j->lens = calloc(n, sizeof *j->lens);
        oom = !j->texts || !j->lens;
    }
    for (int i = 0; !oom && i < r->n; i++) {
        j->keys[i] = is_text ? key_text(r->texts[i] ? r->texts[i] : "", r->lens[i])
                             : key_ids(r->ids[i], r->n_ids[i]);
        int e = fc_get(&b->fc, j->keys[i]);
        if (e >= 0) {
            b->fc.hits++;
            memcpy(j->vecs + (size_t)i * b->dim, b->fc.vec + (size_t)e * b->dim,
                   (size_t)b->dim * sizeof(float));
            j->n_tokens[i] = b->fc.e[e].n_tokens;
            j->n_cached++;
            continue;
        }
        if (b->fc.cap) b->fc.misses++;
        j->need[i] = 1;
        j->n_need++;
        if (is_text) {
            j->texts[i] = dup_n(r->texts[i] ? r->texts[i] : "", r->lens[i]);
            j->lens[i] = r->lens[i];
            oom = !j->texts[i];
        } else {
            size_t k = r->n_ids[i] < (size_t)b->window ? r->n_ids[i] : (size_t)b->window;
            j->ids[i] = malloc(k * sizeof *j->ids[i]);
            oom = !j->ids[i];
            if (!oom) memcpy(j->ids[i], r->ids[i], k * sizeof *j->ids[i]);
            j->n_ids[i] = (int)k;
            j->n_tokens[i] = (int)k;
        }
    }
    if (oom) {
        job_free(j);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    j->n_left = j->n_need;
    j->tokenized = !is_text;
    j->id = ++b->next_id;
    j->all_next = b->all;
    if (b->all) b->all->all_prev = j;
    b->all = j;
    b->n_jobs++;
    *id = j->id;
    if (j->n_need == 0) {
        push_done(b, j); /* all from the cache: still answered on a later loop turn */
        return 0;
    }
    pthread_mutex_lock(&b->mu);
    if (b->pending_tail)
        b->pending_tail->next = j;
    else
        b->pending = j;
    b->pending_tail = j;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

static void emb_cancel(backend_t *base, uint64_t id)
{
    emb_t *b = (emb_t *)base;
    for (ejob_t *j = b->all; j; j = j->all_next)
        if (j->id == id) {
            all_unlink(b, j);
            atomic_store(&j->cancelled, 1); /* freed when it reaches the done queue */
            pthread_mutex_lock(&b->mu);
            pthread_cond_signal(&b->cv);
            pthread_mutex_unlock(&b->mu);
            return;
        }
}

static int emb_submit(backend_t *base, const bk_req_t *req, uint64_t *id, bar_msg_t *msg)
{
    (void)base;
    (void)req;
    (void)id;
    return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                    "this is an embedding model: use /v1/embeddings, not chat or completions");
}

static int emb_count_tokens(backend_t *base, const bk_req_t *req, size_t *n, bar_msg_t *msg)
{
    (void)base;
    (void)req;
    *n = 0;
    return bar_fail(msg, BAR_ERR_UNSUPPORTED, "this is an embedding model");
}

static void emb_stats(backend_t *base, bk_stats_t *out)
{
    emb_t *b = (emb_t *)base;
    memset(out, 0, sizeof *out);
    out->n_ctx = b->window;
    out->n_jobs = b->n_jobs;
    pthread_mutex_lock(&b->mu);
    for (ejob_t *j = b->pending; j; j = j->next)
        out->n_queued++;
    pthread_mutex_unlock(&b->mu);
    out->n_active = b->n_jobs - out->n_queued;
    out->kind = "embed";
    out->kernel_level = kern_level_name();
    out->n_threads = bert_ctx_threads(b->ctx);
}

static void on_closed(uv_handle_t *h)
{
    emb_t *b = h->data;
    bert_ctx_free(b->ctx);
    bert_free(b->m);
    fc_free(&b->fc);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

static void emb_destroy(backend_t *base)
{
    emb_t *b = (emb_t *)base;
    b->closing = 1;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->thread_started) pthread_join(b->thread, NULL);
    /* whatever the thread did not finish is answered now: cancelled */
    ejob_t *lists[2] = {b->pending, b->work};
    b->pending = b->pending_tail = b->work = b->work_tail = NULL;
    for (int k = 0; k < 2; k++)
        while (lists[k]) {
            ejob_t *j = lists[k];
            lists[k] = j->next;
            if (!j->err) {
                j->err = BAR_ERR_CANCELLED;
                snprintf(j->msg, sizeof j->msg, "the embedding model is shutting down");
            }
            j->next = NULL;
            pthread_mutex_lock(&b->mu);
            if (b->done_tail)
                b->done_tail->next = j;
            else
                b->done_q = j;
            b->done_tail = j;
            pthread_mutex_unlock(&b->mu);
        }
    drain(b);
    uv_close((uv_handle_t *)&b->async, on_closed);
}

static const bk_ops_t EMBED_OPS = {
    emb_submit, emb_cancel, emb_stats, emb_count_tokens, emb_embed, emb_destroy, NULL,
};

int backend_is_embed(const backend_t *b)
{
    return b && b->ops == &EMBED_OPS;
}

int backend_embed_create(backend_t **out, uv_loop_t *loop, const char *model_dir, int n_threads,
                         int feature_cache_entries, bar_msg_t *msg)
{
    *out = NULL;
    emb_t *b = calloc(1, sizeof *b);
    if (!b) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    b->base.ops = &EMBED_OPS;
    b->loop = loop;
    int rc = bert_load(&b->m, model_dir, msg);
    if (rc) {
        free(b);
        return rc;
    }
    b->dim = bert_dim(b->m);
    b->window = bert_max_tokens(b->m);
    b->vocab = bert_vocab_size(b->m);
    b->ctx = bert_ctx_create(b->m, BACKEND_EMBED_BATCH_TOKENS, n_threads);
    if (!b->ctx || fc_init(&b->fc, feature_cache_entries, b->dim)) {
        bert_ctx_free(b->ctx);
        fc_free(&b->fc);
        bert_free(b->m);
        free(b);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory for the embedding model's buffers");
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    uv_async_init(loop, &b->async, on_async);
    b->async.data = b;
    if (pthread_create(&b->thread, NULL, embed_thread, b) != 0) {
        b->closing = 1;
        uv_close((uv_handle_t *)&b->async, on_closed);
        return bar_fail(msg, BAR_ERR_NOMEM, "cannot start the embedding thread");
    }
    b->thread_started = 1;
    *out = &b->base;
    return 0;
}

void backend_embed_cache_stats(backend_t *base, backend_embed_stats_t *out)
{
    emb_t *b = (emb_t *)base;
    pthread_mutex_lock(&b->mu);
    *out = b->st;
    pthread_mutex_unlock(&b->mu);
    out->hits = b->fc.hits;
    out->misses = b->fc.misses;
    out->inserts = b->fc.inserts;
    out->evictions = b->fc.evictions;
    out->entries = b->fc.count;
    out->capacity = b->fc.cap;
}

int backend_embed_dim(backend_t *base)
{
    return ((emb_t *)base)->dim;
}

int backend_embed_max_tokens(backend_t *base)
{
    return ((emb_t *)base)->window;
}
