/* api_cache.c — the server's response cache: tiers, timers, snapshots, the
 * per-request decision and the admin endpoints (see api_cache.h). The
 * request path itself (hits, coalescing, recording) is in gen.c. */
#include "api/api_cache.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <xxhash.h>

#include "api/api_tenant.h"
#include "api/openai.h"
#include "obs/metrics.h"
#include "util/timeutil.h"
#include "cache/vindex.h"

#define SWEEP_MS 60000

struct api_cache_memo_slot {
    uint64_t h;
    char *id; /* identity bytes, NULL when the slot is empty */
    size_t n;
    api_cache_memo_t m;
};

struct api_cache {
    const srv_settings_t *set;
    uv_loop_t *loop;
    cache_l1_t *l1;    /* NULL with --cache-mem 0 */
    cache_redis_t *l2; /* NULL without --redis */
    cache_tier_t t1, t2;
    cache_tiers_t tiers; /* L1, L2 in lookup order */
    sf_t *sf;
    uv_timer_t sweep, snap;
    int n_open;    /* timer handles not yet closed */
    int snap_busy; /* a periodic snapshot is being written on the thread pool */
    /* One snapshot writer at a time, newest last: the periodic writer runs
     * under snap_mu and skips its write once the shutdown save (which takes
     * snap_mu and sets snap_final) has begun, so an older periodic file can
     * never be renamed over the final one. */
    pthread_mutex_t snap_mu;
    int snap_final;
    int closing;
    uv_work_t snap_work;
    cache_snap_t *snap_data;
    int snap_rc;
    bar_msg_t snap_msg;
    uint64_t outcomes[API_CACHE_N_OUTCOMES]; /* barista_cache_requests_total */
    uint64_t stored, store_refused;
    struct api_cache_memo_slot *memo; /* API_CACHE_MEMO_SLOTS, allocated on first use */
    buf_t memo_id;                    /* scratch: the identity of the request being looked up */
    semantic_t *sem;                  /* the semantic tier's store; NULL until first used */
    int sem_dim;
    double sem_thr;
    float *sem_vbuf;      /* VINDEX_MAX_DIM floats: a record's vector while it is decoded */
    uint64_t sem_garbage; /* records from Redis that did not decode / fit */
    uint64_t sem_loaded;  /* entries taken from Redis */
};

int64_t api_cache_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lifecycle ---- */

/* A purge reaches the semantic store too (its entries point at keys). */
static void sem_purge(api_cache_t *c, cache_purge_kind_t kind, uint64_t ns, const cache_key_t *key)
{
    if (!c->sem) return;
    if (kind == CACHE_PURGE_ALL)
        semantic_purge_all(c->sem);
    else if (kind == CACHE_PURGE_NS)
        semantic_purge_ns(c->sem, ns);
    else if (kind == CACHE_PURGE_TENANT)
        semantic_purge_tenant(c->sem, ns);
    else if (key)
        semantic_del(c->sem, key);
}

static void on_peer_purge(void *user, cache_purge_kind_t kind, uint64_t ns, const cache_key_t *key)
{
    api_cache_t *c = user;
    sem_purge(c, kind, ns, key);
    if (!c->l1) return;
    if (kind == CACHE_PURGE_ALL)
        cache_l1_purge_all(c->l1);
    else if (kind == CACHE_PURGE_NS)
        cache_l1_purge_ns(c->l1, ns);
    else if (kind == CACHE_PURGE_TENANT)
        cache_l1_purge_tenant(c->l1, ns);
    else if (key)
        cache_l1_del(c->l1, key);
}

/* A record from the Redis stream: another replica's (or our own) semantic
 * entry or purge. A corrupt or wrong-dimension record is skipped with a
 * log line, never applied. */
static void on_sem_record(void *user, const char *rec, size_t n)
{
    api_cache_t *c = user;
    if (c->closing) return;
    if (!c->sem_vbuf && !(c->sem_vbuf = malloc(VINDEX_MAX_DIM * sizeof *c->sem_vbuf))) return;
    semantic_rec_t r;
    bar_msg_t m = {{0}};
    if (semantic_rec_decode(rec, n, &r, c->sem_vbuf, VINDEX_MAX_DIM, &m)) {
        c->sem_garbage++;
        fprintf(stderr, "barista serve: warning: semantic record from Redis ignored: %s\n", m.text);
        return;
    }
    if (r.type == SEMANTIC_REC_PURGE) {
        if (!c->sem) return;
        if (r.kind == CACHE_PURGE_ALL)
            semantic_purge_all(c->sem);
        else if (r.kind == CACHE_PURGE_NS)
            semantic_purge_ns(c->sem, r.ns);
        else if (r.kind == CACHE_PURGE_TENANT)
            semantic_purge_tenant(c->sem, r.ns);
        else
            semantic_del(c->sem, &r.key);
        return;
    }
    int64_t now = api_cache_now_ms();
    if (r.e.expires_ms && r.e.expires_ms <= now) return; /* aged out while stored */
    semantic_t *st = api_cache_semantic(c, r.dim);
    if (!st) {
        c->sem_garbage++;
        fprintf(stderr,
                "barista serve: warning: semantic record from Redis ignored: a vector of %d "
                "floats, this server's embeddings have %d\n",
                r.dim, c->sem_dim);
        return;
    }
    if (!semantic_put(st, &r.e, now)) c->sem_loaded++;
}

void api_cache_semantic_share(api_cache_t *c, const semantic_put_t *p, int dim)
{
    if (!c->l2 || !api_cache_semantic_on(c)) return;
    buf_t b = {0};
    if (!semantic_rec_entry(&b, p, dim)) cache_redis_stream_add(c->l2, b.p, b.n);
    buf_free(&b);
}

static void memo_free(api_cache_t *c)
{
    if (c->memo)
        for (int i = 0; i < API_CACHE_MEMO_SLOTS; i++)
            free(c->memo[i].id);
    free(c->memo);
    c->memo = NULL;
    buf_free(&c->memo_id);
}

static void maybe_free(api_cache_t *c)
{
    if (c->closing && c->n_open == 0 && !c->snap_busy) {
        memo_free(c);
        semantic_destroy(c->sem);
        free(c->sem_vbuf);
        pthread_mutex_destroy(&c->snap_mu);
        free(c);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    api_cache_t *c = h->data;
    c->n_open--;
    maybe_free(c);
}

static void on_sweep(uv_timer_t *t)
{
    api_cache_t *c = t->data;
    if (c->l1) cache_l1_sweep(c->l1);
    if (c->sem) semantic_sweep(c->sem, api_cache_now_ms());
}

static void snap_work(uv_work_t *w)
{
    api_cache_t *c = w->data;
    pthread_mutex_lock(&c->snap_mu);
    c->snap_rc =
        c->snap_final ? 0 : cache_snapshot_write(c->snap_data, c->set->cache_file, &c->snap_msg);
    pthread_mutex_unlock(&c->snap_mu);
}

static void snap_after(uv_work_t *w, int status)
{
    api_cache_t *c = w->data;
    if (status == 0 && c->snap_rc)
        fprintf(stderr, "barista serve: warning: cache snapshot %s: %s\n", c->set->cache_file,
                c->snap_msg.text);
    cache_snapshot_free(c->snap_data);
    c->snap_data = NULL;
    c->snap_busy = 0;
    maybe_free(c);
}

static void on_snap_timer(uv_timer_t *t)
{
    api_cache_t *c = t->data;
    if (c->snap_busy || c->closing || !c->l1) return;
    c->snap_data = cache_snapshot_collect(c->l1, api_cache_now_ms());
    if (!c->snap_data) return;
    c->snap_work.data = c;
    memset(&c->snap_msg, 0, sizeof c->snap_msg);
    if (uv_queue_work(c->loop, &c->snap_work, snap_work, snap_after)) {
        cache_snapshot_free(c->snap_data);
        c->snap_data = NULL;
        return;
    }
    c->snap_busy = 1;
}

int api_cache_create(api_cache_t **out, uv_loop_t *loop, const srv_settings_t *set,
                     sf_empty_fn on_sf_empty, void *ctx, bar_msg_t *msg)
{
    *out = NULL;
    cache_policy_t pol;
    if (cache_policy_parse(set->cache_policy, &pol))
        return bar_fail(msg, BAR_ERR_INVALID, "--cache-policy: '%s' is not s3fifo or lru",
                        set->cache_policy);
    double thr = 0;
    if (set->semantic_cache) {
        char *end = NULL;
        thr = strtod(set->semantic_threshold, &end);
        if (!end || end == set->semantic_threshold || *end || !(thr > 0 && thr <= 1))
            return bar_fail(msg, BAR_ERR_INVALID,
                            "--semantic-threshold: '%s' is not a cosine similarity in (0, 1]",
                            set->semantic_threshold);
    }
    api_cache_t *c = calloc(1, sizeof *c);
    if (!c) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&c->snap_mu, NULL);
    c->set = set;
    c->loop = loop;
    c->sem_thr = thr;
    if (set->cache_mem > 0) {
        cache_l1_opts_t o = {0};
        o.budget_bytes = (size_t)set->cache_mem;
        o.policy = pol;
        c->l1 = cache_l1_create(&o);
    }
    c->sf = sf_create(on_sf_empty, ctx);
    if ((set->cache_mem > 0 && !c->l1) || !c->sf) {
        cache_l1_destroy(c->l1);
        sf_destroy(c->sf);
        free(c);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory for the response cache");
    }
    if (set->redis[0]) {
        cache_redis_opts_t ro = {0};
        ro.timeout_ms = (uint64_t)set->redis_timeout_ms;
        ro.stall_ms = (uint64_t)set->redis_stall_ms;
        ro.on_peer_purge = on_peer_purge;
        ro.peer_user = c;
        if (set->semantic_cache) {
            ro.on_stream = on_sem_record;
            ro.stream_user = c;
            ro.stream_maxlen = set->semantic_max_entries;
        }
        bar_msg_t m = {{0}};
        c->l2 = cache_redis_create(loop, set->redis, &ro, &m);
        if (!c->l2) {
            cache_l1_destroy(c->l1);
            sf_destroy(c->sf);
            free(c);
            return bar_fail(msg, BAR_ERR_INVALID, "--redis: %s", m.text);
        }
    }
    if (c->l1) {
        cache_tier_l1(&c->t1, c->l1);
        cache_tiers_add(&c->tiers, &c->t1);
    }
    if (c->l2) {
        cache_tier_redis(&c->t2, c->l2);
        cache_tiers_add(&c->tiers, &c->t2);
    }
    if (set->cache_file[0] && c->l1) {
        cache_snapshot_load_stats_t st = {0};
        bar_msg_t m = {{0}};
        int rc = cache_snapshot_load(c->l1, set->cache_file, api_cache_now_ms(), &st, &m);
        if (rc)
            fprintf(stderr,
                    "barista serve: warning: cache snapshot %s not loaded (%s); starting with an "
                    "empty cache\n",
                    set->cache_file, m.text);
        else if (st.loaded || st.expired)
            fprintf(stderr, "barista serve: cache snapshot %s: %zu entries loaded, %zu expired\n",
                    set->cache_file, st.loaded, st.expired);
    }
    uv_timer_init(loop, &c->sweep);
    uv_timer_init(loop, &c->snap);
    c->sweep.data = c->snap.data = c;
    c->n_open = 2;
    if (c->l1) {
        uv_timer_start(&c->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        uv_unref((uv_handle_t *)&c->sweep);
        if (set->cache_file[0] && set->cache_snapshot_s > 0) {
            uint64_t ms = (uint64_t)set->cache_snapshot_s * 1000;
            uv_timer_start(&c->snap, on_snap_timer, ms, ms);
            uv_unref((uv_handle_t *)&c->snap);
        }
    }
    *out = c;
    return 0;
}

void api_cache_destroy(api_cache_t *c)
{
    if (!c || c->closing) return;
    c->closing = 1;
    if (c->l1 && c->set->cache_file[0]) {
        size_t n = 0;
        bar_msg_t m = {{0}};
        pthread_mutex_lock(&c->snap_mu); /* waits for a periodic write in progress */
        c->snap_final = 1;
        int rc = cache_snapshot_save(c->l1, c->set->cache_file, api_cache_now_ms(), &n, &m);
        pthread_mutex_unlock(&c->snap_mu);
        if (rc)
            fprintf(stderr, "barista serve: warning: cache snapshot %s: %s\n", c->set->cache_file,
                    m.text);
        else
            fprintf(stderr, "barista serve: cache snapshot %s: %zu entries written\n",
                    c->set->cache_file, n);
    }
    c->tiers.n = 0;
    if (c->l2) cache_redis_destroy(c->l2);
    c->l2 = NULL;
    sf_destroy(c->sf);
    c->sf = NULL;
    cache_l1_destroy(c->l1);
    c->l1 = NULL;
    uv_close((uv_handle_t *)&c->sweep, on_timer_closed);
    uv_close((uv_handle_t *)&c->snap, on_timer_closed);
}

int api_cache_on(const api_cache_t *c)
{
    return c && !c->closing && (c->l1 || c->l2);
}

cache_tiers_t *api_cache_tiers(api_cache_t *c)
{
    return &c->tiers;
}

sf_t *api_cache_sf(api_cache_t *c)
{
    return c && !c->closing ? c->sf : NULL;
}

int api_cache_storing(const api_cache_t *c)
{
    return c && !c->closing;
}

void api_cache_recharge(api_cache_t *c, const cache_entry_t *e)
{
    if (c && c->l1) cache_l1_recharge(c->l1, e);
}

void api_cache_count(api_cache_t *c, api_cache_outcome_t o)
{
    if (c) c->outcomes[o]++;
}

/* ---- per request ---- */

/* Cache-Control directives (comma-separated, case-insensitive). */
static void parse_cache_control(http_slice_t v, api_cache_req_t *q)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        size_t n = e - s;
        const char *d = v.p + s;
        if (n == 8 && !strncasecmp(d, "no-cache", 8))
            q->no_cache = 1;
        else if (n == 8 && !strncasecmp(d, "no-store", 8))
            q->no_store = 1;
        else if (n > 8 && !strncasecmp(d, "max-age=", 8)) {
            long long x = 0;
            size_t k = 8;
            int ok = k < n;
            for (; k < n; k++) {
                if (d[k] < '0' || d[k] > '9') {
                    ok = 0;
                    break;
                }
                if (x < 1000000000000LL) x = x * 10 + (d[k] - '0');
            }
            if (ok) q->max_age = x;
        }
    }
}

int api_cache_decide(api_cache_t *c, const http_req_t *h, const cJSON *body,
                     const api_cache_keyin_t *in, api_cache_req_t *q)
{
    memset(q, 0, sizeof *q);
    q->max_age = -1;
    http_slice_t cc = http_req_header(h, "cache-control");
    if (cc.p) parse_cache_control(cc, q);
    if (!body) return BAR_ERR_INVALID;
    q->cacheable = in->reproducible || q->max_age > 0 || c->set->cache_sampled;
    if (!q->cacheable) return 0;
    /* namespace: the tenant's namespace id (api_tenant.h), never the token */
    char nsbuf[8];
    memcpy(nsbuf, &in->ns, 8);
    cache_key_ctx_t kc = {in->endpoint, in->model, in->digest,   nsbuf, 8,
                          in->skip,     in->extra, in->extra_len};
    bar_msg_t m = {{0}};
    int rc = cache_key_make(&q->key, body, &kc, &m);
    if (rc) {
        q->cacheable = 0;
        return rc;
    }
    q->ns = in->ns;
    cache_key_hex(&q->key, q->hex);
    return 0;
}

/* identity: kind, the namespace id (the tenant and its X-Cache-Namespace),
 * Cache-Control (length-prefixed, present or not), then the body ("model"
 * is in it) */
static int memo_put_slice(buf_t *b, const char *p, size_t n, int present)
{
    uint32_t len = present ? (uint32_t)n + 1 : 0;
    if (buf_append(b, &len, sizeof len)) return -1;
    return n ? buf_append(b, p, n) : 0;
}

static int memo_identity(api_cache_t *c, const http_req_t *h, int kind, uint64_t ns)
{
    buf_t *b = &c->memo_id;
    buf_clear(b);
    if (!h->body.p || h->body.n > API_CACHE_MEMO_MAX) return -1;
    unsigned char k = (unsigned char)kind;
    if (buf_append(b, &k, 1) || buf_append(b, &ns, 8)) return -1;
    http_slice_t v = http_req_header(h, "cache-control");
    if (memo_put_slice(b, v.p, v.p ? v.n : 0, v.p != NULL)) return -1;
    if (buf_append(b, h->body.p, h->body.n)) return -1;
    return b->n > API_CACHE_MEMO_MAX + 2048 ? -1 : 0;
}

const api_cache_memo_t *api_cache_memo_find(api_cache_t *c, const http_req_t *h, int kind,
                                            uint64_t ns)
{
    if (!c || c->closing || !c->memo || memo_identity(c, h, kind, ns)) return NULL;
    uint64_t x = XXH3_64bits(c->memo_id.p, c->memo_id.n);
    const struct api_cache_memo_slot *m = &c->memo[x & (API_CACHE_MEMO_SLOTS - 1)];
    if (!m->id || m->h != x || m->n != c->memo_id.n || memcmp(m->id, c->memo_id.p, m->n))
        return NULL;
    return &m->m;
}

void api_cache_memo_put(api_cache_t *c, const http_req_t *h, int kind, uint64_t ns,
                        const api_cache_memo_t *mm)
{
    if (!c->memo) {
        c->memo = calloc(API_CACHE_MEMO_SLOTS, sizeof *c->memo);
        if (!c->memo) return;
    }
    if (memo_identity(c, h, kind, ns)) return;
    uint64_t x = XXH3_64bits(c->memo_id.p, c->memo_id.n);
    struct api_cache_memo_slot *m = &c->memo[x & (API_CACHE_MEMO_SLOTS - 1)];
    char *id = malloc(c->memo_id.n);
    if (!id) return;
    memcpy(id, c->memo_id.p, c->memo_id.n);
    free(m->id);
    *m = (struct api_cache_memo_slot){x, id, c->memo_id.n, *mm};
}

int api_cache_semantic_on(const api_cache_t *c)
{
    return c && !c->closing && c->set->semantic_cache && c->tiers.n > 0;
}

double api_cache_semantic_threshold(const api_cache_t *c)
{
    return c->sem_thr;
}

semantic_t *api_cache_semantic(api_cache_t *c, int dim)
{
    if (!api_cache_semantic_on(c) || dim <= 0) return NULL;
    if (c->sem) return c->sem_dim == dim ? c->sem : NULL;
    semantic_config_t sc = {0};
    sc.dim = dim;
    sc.max_entries = (size_t)c->set->semantic_max_entries;
    sc.guard = semantic_guard_default();
    sc.use_guard = 1;
    bar_msg_t m = {{0}};
    if (semantic_create(&c->sem, &sc, &m)) {
        fprintf(stderr, "barista serve: warning: semantic cache: %s\n", m.text);
        return NULL;
    }
    c->sem_dim = dim;
    return c->sem;
}

cache_entry_t *api_cache_l1_get(api_cache_t *c, const api_cache_req_t *q)
{
    if (!c || c->closing || !c->l1) return NULL;
    cache_entry_t *e = cache_l1_get(c->l1, &q->key);
    if (e && q->max_age >= 0 && api_cache_now_ms() - e->stored_ms > q->max_age * 1000) {
        cache_entry_release(e);
        return NULL;
    }
    return e;
}

uint64_t api_cache_ttl_ms(const api_cache_t *c, const api_cache_req_t *q)
{
    if (q->max_age > 0) {
        long long cap = c->set->cache_max_ttl_s;
        return (uint64_t)(cap > 0 && q->max_age > cap ? cap : q->max_age) * 1000;
    }
    return (uint64_t)c->set->cache_ttl_s * 1000;
}

void api_cache_store(api_cache_t *c, cache_entry_t *e, const api_cache_req_t *q)
{
    if (q->no_store || c->closing) return;
    if (cache_tiers_store(&c->tiers, e, api_cache_ttl_ms(c, q)) > 0)
        c->stored++;
    else
        c->store_refused++;
}

/* ---- admin ---- */

typedef struct {
    api_cache_t *c;
    srv_req_t *r; /* NULL once the client left */
    size_t l1_n;
    const char *what;
} purge_op_t;

static void purge_abort(void *user, srv_req_t *r)
{
    purge_op_t *op = user;
    (void)r;
    op->r = NULL;
}

static void purge_reply(srv_req_t *r, const char *what, size_t l1_n, const char *l2_state,
                        long long l2_n)
{
    buf_t b = {0};
    buf_printf(&b, "{\"object\":\"cache.purge\",\"scope\":\"%s\",\"l1_deleted\":%zu,", what, l1_n);
    if (l2_n >= 0)
        buf_printf(&b, "\"l2\":\"%s\",\"l2_deleted\":%lld}\n", l2_state, l2_n);
    else
        buf_printf(&b, "\"l2\":\"%s\",\"l2_deleted\":null}\n", l2_state);
    srv_respond(r, 200, "application/json", b.p, b.n, NULL);
    buf_free(&b);
}

static void purge_done(void *user, int err, uint64_t n)
{
    purge_op_t *op = user;
    if (op->r)
        purge_reply(op->r, op->what, op->l1_n, err ? "failed" : "ok", err ? -1 : (long long)n);
    free(op);
}

static void purge(api_cache_t *c, srv_req_t *r, const char *what, cache_purge_kind_t kind,
                  uint64_t ns, const cache_key_t *key)
{
    /* synchronous tiers (L1) answer with a count; an asynchronous one (L2)
     * answers later, and the reply waits for it */
    size_t n = 0;
    sem_purge(c, kind, ns, key);
    if (c->l2 && api_cache_semantic_on(c)) {
        /* replicas tailing the stream (and ones loading it later) purge too */
        buf_t b = {0};
        if (!semantic_rec_purge(&b, kind, ns, key)) cache_redis_stream_add(c->l2, b.p, b.n);
        buf_free(&b);
    }
    cache_tier_t *async = NULL;
    for (int i = 0; i < c->tiers.n; i++) {
        cache_tier_t *t = c->tiers.v[i];
        if (t == &c->t2) {
            async = t;
            continue;
        }
        long long k = t->ops->purge(t, kind, ns, key, NULL, NULL);
        if (k > 0) n += (size_t)k;
    }
    if (!async) {
        purge_reply(r, what, n, "none", -1);
        return;
    }
    purge_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        purge_reply(r, what, n, "failed", -1);
        return;
    }
    *op = (purge_op_t){c, r, n, what};
    srv_req_set_user(r, op, purge_abort, NULL);
    if (async->ops->purge(async, kind, ns, key, purge_done, op) != CACHE_TIER_PENDING) {
        srv_req_set_user(r, NULL, NULL, NULL);
        free(op);
        purge_reply(r, what, n, "down", -1);
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The percent-decoded value of query parameter name into out; -1 if absent. */
static long query_param(http_slice_t q, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name), i = 0;
    while (i < q.n) {
        size_t s = i;
        while (i < q.n && q.p[i] != '&')
            i++;
        if (i - s > nl && !memcmp(q.p + s, name, nl) && q.p[s + nl] == '=') {
            size_t o = 0;
            for (size_t k = s + nl + 1; k < i && o + 1 < size; k++) {
                char ch = q.p[k];
                if (ch == '+')
                    ch = ' ';
                else if (ch == '%' && k + 2 < i + 1 && hexval(q.p[k + 1]) >= 0 &&
                         hexval(q.p[k + 2]) >= 0) {
                    ch = (char)(hexval(q.p[k + 1]) * 16 + hexval(q.p[k + 2]));
                    k += 2;
                }
                out[o++] = ch;
            }
            out[o] = '\0';
            return (long)o;
        }
        i++;
    }
    return -1;
}

/* 0 when every parameter of q is name=value with a known name at most once;
 * else -1 and the offending parameter (cut) in bad. */
static int query_check(http_slice_t q, char *bad, size_t size)
{
    static const char *const known[] = {"all", "namespace", "api_key", "tenant"};
    int seen[4] = {0};
    size_t i = 0;
    while (i < q.n) {
        size_t s = i;
        while (i < q.n && q.p[i] != '&')
            i++;
        const char *eq = memchr(q.p + s, '=', i - s);
        size_t nl = eq ? (size_t)(eq - (q.p + s)) : i - s;
        int k = -1;
        for (int j = 0; j < 4 && eq; j++)
            if (nl == strlen(known[j]) && !memcmp(q.p + s, known[j], nl)) k = j;
        if (k < 0 || seen[k]++) {
            size_t n = i - s < size - 1 ? i - s : size - 1;
            for (size_t j = 0; j < n; j++) {
                char ch = q.p[s + j];
                bad[j] = ch >= 0x20 && ch < 0x7f && ch != '\'' ? ch : '?';
            }
            bad[n] = '\0';
            return -1;
        }
        i++;
    }
    return 0;
}

static void stats_reply(api_cache_t *c, srv_req_t *r)
{
    buf_t b = {0};
    cache_l1_stats_t s1;
    memset(&s1, 0, sizeof s1);
    if (c->l1) cache_l1_stats(c->l1, &s1);
    buf_printf(&b,
               "{\"object\":\"cache.stats\",\"entries\":%zu,\"bytes\":%zu,\"budget\":%zu,"
               "\"policy\":\"%s\",\"requests\":{\"hit_l1\":%llu,\"hit_l2\":%llu,\"miss\":%llu,"
               "\"coalesced\":%llu,\"bypass\":%llu},\"stored\":%llu,\"inflight\":%zu,",
               s1.entries, s1.bytes, s1.budget, c->l1 ? c->set->cache_policy : "off",
               (unsigned long long)c->outcomes[API_CACHE_HIT_L1],
               (unsigned long long)c->outcomes[API_CACHE_HIT_L2],
               (unsigned long long)c->outcomes[API_CACHE_MISS],
               (unsigned long long)c->outcomes[API_CACHE_COALESCED],
               (unsigned long long)c->outcomes[API_CACHE_BYPASS], (unsigned long long)c->stored,
               c->sf ? sf_size(c->sf) : 0);
    buf_printf(&b,
               "\"l1\":{\"enabled\":%s,\"hits\":%llu,\"misses\":%llu,\"inserts\":%llu,"
               "\"evictions\":%llu,\"expirations\":%llu,\"rejected\":%llu,\"ghosts\":%zu},",
               c->l1 ? "true" : "false", (unsigned long long)s1.hits, (unsigned long long)s1.misses,
               (unsigned long long)s1.inserts, (unsigned long long)s1.evictions,
               (unsigned long long)s1.expirations, (unsigned long long)s1.rejected, s1.ghosts);
    /* every tier through the tier interface, in lookup order */
    buf_puts(&b, "\"tiers\":[");
    for (int i = 0; i < c->tiers.n; i++) {
        cache_tier_t *t = c->tiers.v[i];
        cache_tier_stats_t ts;
        t->ops->stats(t, &ts);
        buf_printf(&b,
                   "%s{\"name\":\"%s\",\"up\":%s,\"entries\":%llu,\"bytes\":%llu,\"hits\":%llu,"
                   "\"misses\":%llu,\"errors\":%llu,\"walk_hits\":%llu}",
                   i ? "," : "", t->ops->name, ts.up ? "true" : "false",
                   (unsigned long long)ts.entries, (unsigned long long)ts.bytes,
                   (unsigned long long)ts.hits, (unsigned long long)ts.misses,
                   (unsigned long long)ts.errors, (unsigned long long)c->tiers.hits[i]);
    }
    buf_puts(&b, "],");
    if (c->l2) {
        cache_redis_stats_t s2;
        cache_redis_stats(c->l2, &s2);
        buf_printf(&b,
                   "\"l2\":{\"enabled\":true,\"connected\":%s,\"gets\":%llu,\"hits\":%llu,"
                   "\"misses\":%llu,\"timeouts\":%llu,\"errors\":%llu,\"garbage\":%llu,"
                   "\"skipped\":%llu,\"sets\":%llu,\"set_errors\":%llu,\"connects\":%llu,"
                   "\"conn_failures\":%llu,\"trips\":%llu,\"purges\":%llu,\"peer_purges\":%llu},",
                   s2.connected ? "true" : "false", (unsigned long long)s2.gets,
                   (unsigned long long)s2.hits, (unsigned long long)s2.misses,
                   (unsigned long long)s2.timeouts, (unsigned long long)s2.errors,
                   (unsigned long long)s2.garbage, (unsigned long long)s2.skipped,
                   (unsigned long long)s2.sets, (unsigned long long)s2.set_errors,
                   (unsigned long long)s2.connects, (unsigned long long)s2.conn_failures,
                   (unsigned long long)s2.trips, (unsigned long long)s2.purges,
                   (unsigned long long)s2.peer_purges);
    } else {
        buf_puts(&b, "\"l2\":{\"enabled\":false},");
    }
    semantic_stats_t ss;
    memset(&ss, 0, sizeof ss);
    if (c->sem) semantic_stats(c->sem, &ss);
    buf_printf(&b,
               "\"semantic\":{\"enabled\":%s,\"threshold\":%.4g,\"hits\":%llu,\"entries\":%llu,"
               "\"bytes\":%llu,\"lookups\":%llu,\"index_hits\":%llu,\"puts\":%llu,"
               "\"evictions\":%llu,\"expirations\":%llu,\"deletes\":%llu,\"from_redis\":%llu,"
               "\"redis_garbage\":%llu,\"guard_refusals\":{",
               api_cache_semantic_on(c) ? "true" : "false", c->sem_thr,
               (unsigned long long)c->outcomes[API_CACHE_HIT_SEM], (unsigned long long)ss.entries,
               (unsigned long long)ss.bytes, (unsigned long long)ss.lookups,
               (unsigned long long)ss.hits, (unsigned long long)ss.puts,
               (unsigned long long)ss.evictions, (unsigned long long)ss.expirations,
               (unsigned long long)ss.deletes, (unsigned long long)c->sem_loaded,
               (unsigned long long)c->sem_garbage);
    for (int i = 1; i < SEMANTIC_GUARD_N_VERDICTS; i++)
        buf_printf(&b, "%s\"%s\":%llu", i > 1 ? "," : "",
                   semantic_guard_verdict_name((semantic_guard_verdict_t)i),
                   (unsigned long long)ss.guard_refusals[i]);
    buf_puts(&b, "}}}\n");
    srv_respond(r, 200, "application/json", b.p, b.n, NULL);
    buf_free(&b);
}

static void admin_error(srv_req_t *r, int status, const char *code, const char *text)
{
    oai_err_t e;
    oai_err(&e, status, "invalid_request_error", code, NULL, "%s", text);
    buf_t b = {0};
    oai_error_body(&b, &e);
    srv_respond(r, status, "application/json", b.p, b.n, NULL);
    buf_free(&b);
}

void api_cache_admin(api_cache_t *c, srv_req_t *r, const api_cache_caller_t *who)
{
    const http_req_t *h = srv_req_http(r);
    http_slice_t path = http_req_path(h);
    if (path.n > 1 && path.p[path.n - 1] == '/') path.n--;
    int is_get = h->method == HTTP_GET || h->method == HTTP_HEAD;
    if (path.n == 15 && !memcmp(path.p, "/v1/cache/stats", 15)) {
        if (!is_get) {
            srv_respond(r, 405, "application/json", "{}\n", 3, "Allow: GET, HEAD\r\n");
            return;
        }
        if (!who->admin) {
            admin_error(r, 403, "forbidden", "Only an admin key may read the cache statistics.");
            return;
        }
        stats_reply(c, r);
        return;
    }
    if (h->method != HTTP_DELETE) {
        srv_respond(r, 405, "application/json", "{}\n", 3, "Allow: DELETE\r\n");
        return;
    }
    if (path.n == 9) { /* /v1/cache */
        char ns[600], key[600], tn[600], all[8], bad[64];
        http_slice_t q = http_req_query(h);
        /* every parameter must be one we know, once, as name=value: a typo
         * (?ns=x, ?Namespace=x) must never widen a purge to everything */
        if (query_check(q, bad, sizeof bad)) {
            char text[160];
            snprintf(text, sizeof text,
                     "Unknown or malformed query parameter '%s': use all=true, namespace, "
                     "tenant, api_key.",
                     bad);
            admin_error(r, 400, "invalid_value", text);
            return;
        }
        long al = query_param(q, "all", all, sizeof all);
        long nl = query_param(q, "namespace", ns, 501);
        long kl = query_param(q, "api_key", key, 501);
        long tl = query_param(q, "tenant", tn, 501);
        if (!who->admin && (al >= 0 || kl >= 0 || tl >= 0)) {
            admin_error(r, 403, "forbidden",
                        "A tenant's key purges only its own namespaces: use ?namespace=NS "
                        "(empty: the default one), or no parameter for all of them.");
            return;
        }
        if (al >= 0) {
            if (strcmp(all, "true") || nl >= 0 || kl >= 0 || tl >= 0) {
                admin_error(r, 400, "invalid_value", "'all' must be 'true' and comes alone.");
                return;
            }
            purge(c, r, "all", CACHE_PURGE_ALL, 0, NULL);
            return;
        }
        if (who->admin && nl < 0 && kl < 0 && tl < 0) {
            admin_error(r, 400, "invalid_value",
                        "Say what to purge: ?all=true, ?tenant=T|?api_key=K[&namespace=NS], or "
                        "/v1/cache/{key}.");
            return;
        }
        if (kl >= 0 && tl >= 0) {
            admin_error(r, 400, "invalid_value", "Name the tenant once: 'tenant' or 'api_key'.");
            return;
        }
        /* the tenant: the caller's own, a named one, or the one a key names */
        api_tenant_t t;
        memset(&t, 0, sizeof t);
        if (!who->admin) {
            snprintf(t.name, sizeof t.name, "%s", who->caller->name);
        } else if (tl >= 0) {
            if (tl > 0 && !tenant_name_ok(tn, (size_t)tl)) {
                admin_error(r, 400, "invalid_value",
                            "'tenant' must be 1 to 63 characters of [A-Za-z0-9._:@-].");
                return;
            }
            memcpy(t.name, tn, (size_t)tl + 1); /* checked: at most 63 */
        } else if (kl > 0 && api_tenant_of_key(who->tenants, key, (size_t)kl, &t)) {
            admin_error(r, 404, "not_found", "No tenant has this api_key.");
            return;
        }
        api_tenant_release(&t);
        uint64_t id =
            api_tenant_ns(who->tenants, t.name, nl > 0 ? ns : NULL, nl > 0 ? (size_t)nl : 0);
        if (nl < 0) /* no namespace named: every one of the tenant's (its HMAC half) */
            purge(c, r, "tenant", CACHE_PURGE_TENANT, id & CACHE_NS_TENANT_MASK, NULL);
        else
            purge(c, r, "namespace", CACHE_PURGE_NS, id, NULL);
        return;
    }
    if (!who->admin) {
        admin_error(r, 403, "forbidden", "Only an admin key may purge by cache key.");
        return;
    }
    cache_key_t k;
    if (path.n != 10 + CACHE_KEY_HEX_LEN ||
        cache_key_from_hex(&k, path.p + 10, CACHE_KEY_HEX_LEN)) {
        admin_error(r, 404, "not_found",
                    "Unknown cache key: use the 32 hex digits of X-Cache-Key.");
        return;
    }
    purge(c, r, "key", CACHE_PURGE_KEY, 0, &k);
}

/* ---- metrics ---- */

void api_cache_metrics(const api_cache_t *c, buf_t *b)
{
    if (!c) return;
    buf_puts(b, "# HELP barista_cache_requests_total Cacheable generation requests by outcome.\n"
                "# TYPE barista_cache_requests_total counter\n");
    buf_printf(b, "barista_cache_requests_total{result=\"hit\",tier=\"l1\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_HIT_L1]);
    buf_printf(b, "barista_cache_requests_total{result=\"hit\",tier=\"l2\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_HIT_L2]);
    buf_printf(b, "barista_cache_requests_total{result=\"hit\",tier=\"semantic\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_HIT_SEM]);
    buf_printf(b, "barista_cache_requests_total{result=\"miss\",tier=\"none\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_MISS]);
    buf_printf(b, "barista_cache_requests_total{result=\"coalesced\",tier=\"none\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_COALESCED]);
    buf_printf(b, "barista_cache_requests_total{result=\"bypass\",tier=\"none\"} %llu\n",
               (unsigned long long)c->outcomes[API_CACHE_BYPASS]);
    cache_l1_stats_t s1;
    memset(&s1, 0, sizeof s1);
    if (c->l1) cache_l1_stats(c->l1, &s1);
    obs_metrics_gauge(b, "barista_cache_entries", "Replies in the in-process cache.",
                      (double)s1.entries);
    obs_metrics_gauge(b, "barista_cache_bytes", "Bytes charged to the in-process cache.",
                      (double)s1.bytes);
    buf_printf(b,
               "# HELP barista_cache_evictions_total Entries dropped for room.\n"
               "# TYPE barista_cache_evictions_total counter\nbarista_cache_evictions_total %llu\n",
               (unsigned long long)s1.evictions);
    buf_printf(b,
               "# HELP barista_cache_expirations_total Entries dropped because their TTL passed.\n"
               "# TYPE barista_cache_expirations_total counter\n"
               "barista_cache_expirations_total %llu\n",
               (unsigned long long)s1.expirations);
    cache_redis_stats_t s2;
    memset(&s2, 0, sizeof s2);
    if (c->l2) cache_redis_stats(c->l2, &s2);
    buf_printf(b,
               "# HELP barista_redis_errors_total L2 operations that failed or were skipped.\n"
               "# TYPE barista_redis_errors_total counter\n"
               "barista_redis_errors_total{kind=\"timeout\"} %llu\n"
               "barista_redis_errors_total{kind=\"error\"} %llu\n"
               "barista_redis_errors_total{kind=\"garbage\"} %llu\n"
               "barista_redis_errors_total{kind=\"skipped\"} %llu\n"
               "barista_redis_errors_total{kind=\"set\"} %llu\n"
               "barista_redis_errors_total{kind=\"connect\"} %llu\n",
               (unsigned long long)s2.timeouts, (unsigned long long)s2.errors,
               (unsigned long long)s2.garbage, (unsigned long long)s2.skipped,
               (unsigned long long)s2.set_errors, (unsigned long long)s2.conn_failures);
    obs_metrics_gauge(b, "barista_redis_connected", "1 while the L2 connection is up.",
                      s2.connected ? 1 : 0);
    semantic_stats_t ss;
    memset(&ss, 0, sizeof ss);
    if (c->sem) semantic_stats(c->sem, &ss);
    obs_metrics_gauge(b, "barista_semantic_entries", "Entries in the semantic tier's index.",
                      (double)ss.entries);
    buf_puts(b, "# HELP barista_semantic_guard_refusals_total Semantic candidates above the "
                "threshold that the guard refused, by reason.\n"
                "# TYPE barista_semantic_guard_refusals_total counter\n");
    for (int i = 1; i < SEMANTIC_GUARD_N_VERDICTS; i++)
        buf_printf(b, "barista_semantic_guard_refusals_total{reason=\"%s\"} %llu\n",
                   semantic_guard_verdict_name((semantic_guard_verdict_t)i),
                   (unsigned long long)ss.guard_refusals[i]);
}
