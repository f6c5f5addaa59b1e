/* cache_tier.c — the tier walk with promotion, and the L1 / Redis tiers (see
 * cache_tier.h). */
#include "cache/cache_tier.h"

#include <stdlib.h>
#include <string.h>

/* ---- L1: synchronous ---- */

static int l1_lookup(cache_tier_t *t, const cache_key_t *key, uint64_t ns, cache_tier_get_fn cb,
                     void *user, void **op, cache_entry_t **hit)
{
    (void)ns, (void)cb, (void)user, (void)op;
    *hit = cache_l1_get(t->impl, key);
    return 1;
}

static void l1_cancel(cache_tier_t *t, void *op)
{
    (void)t, (void)op;
}

static int l1_store(cache_tier_t *t, cache_entry_t *e, uint64_t ttl_ms)
{
    return cache_l1_put(t->impl, e, ttl_ms, 0);
}

static long long l1_purge(cache_tier_t *t, cache_purge_kind_t kind, uint64_t ns,
                          const cache_key_t *key, cache_tier_purged_fn cb, void *user)
{
    (void)cb, (void)user;
    if (kind == CACHE_PURGE_ALL) return (long long)cache_l1_purge_all(t->impl);
    if (kind == CACHE_PURGE_NS) return (long long)cache_l1_purge_ns(t->impl, ns);
    if (kind == CACHE_PURGE_TENANT) return (long long)cache_l1_purge_tenant(t->impl, ns);
    return cache_l1_del(t->impl, key) > 0 ? 1 : 0;
}

static void l1_stats(cache_tier_t *t, cache_tier_stats_t *out)
{
    cache_l1_stats_t st;
    cache_l1_stats(t->impl, &st);
    *out = (cache_tier_stats_t){st.entries, st.bytes, st.hits, st.misses, st.rejected, 1};
}

static const cache_tier_ops_t L1_OPS = {"L1", l1_lookup, l1_cancel, l1_store, l1_purge, l1_stats};

void cache_tier_l1(cache_tier_t *t, cache_l1_t *l1)
{
    t->ops = &L1_OPS;
    t->impl = l1;
}

/* ---- Redis: asynchronous ---- */

typedef struct {
    cache_tier_get_fn cb;
    void *user;
    cache_redis_op_t *rop;
} redis_get_t;

static void redis_got(void *user, cache_entry_t *e, cache_l2_status_t st)
{
    redis_get_t *g = user;
    cache_tier_get_fn cb = g->cb;
    void *u = g->user;
    free(g);
    if (st != CACHE_L2_HIT && e) {
        cache_entry_release(e);
        e = NULL;
    }
    cb(u, e);
}

static int redis_lookup(cache_tier_t *t, const cache_key_t *key, uint64_t ns, cache_tier_get_fn cb,
                        void *user, void **op, cache_entry_t **hit)
{
    *hit = NULL;
    redis_get_t *g = calloc(1, sizeof *g);
    if (!g) return BAR_ERR_NOMEM;
    g->cb = cb;
    g->user = user;
    if (cache_redis_get(t->impl, key, ns, redis_got, g, &g->rop)) {
        free(g);
        return BAR_ERR_BUSY;
    }
    *op = g;
    return 0;
}

static void redis_cancel(cache_tier_t *t, void *op)
{
    redis_get_t *g = op;
    cache_redis_cancel(t->impl, g->rop);
    free(g);
}

static int redis_store(cache_tier_t *t, cache_entry_t *e, uint64_t ttl_ms)
{
    return cache_redis_set(t->impl, e, ttl_ms);
}

static long long redis_purge(cache_tier_t *t, cache_purge_kind_t kind, uint64_t ns,
                             const cache_key_t *key, cache_tier_purged_fn cb, void *user)
{
    if (cache_redis_purge(t->impl, kind, ns, key, cb, user)) return BAR_ERR_BUSY;
    return CACHE_TIER_PENDING;
}

static void redis_stats(cache_tier_t *t, cache_tier_stats_t *out)
{
    cache_redis_stats_t st;
    cache_redis_stats(t->impl, &st);
    *out = (cache_tier_stats_t){
        0,           0, st.hits, st.misses, st.timeouts + st.errors + st.garbage + st.set_errors,
        st.connected};
}

static const cache_tier_ops_t REDIS_OPS = {"L2",        redis_lookup, redis_cancel,
                                           redis_store, redis_purge,  redis_stats};

void cache_tier_redis(cache_tier_t *t, cache_redis_t *r)
{
    t->ops = &REDIS_OPS;
    t->impl = r;
}

/* ---- the walk ---- */

int cache_tiers_add(cache_tiers_t *ts, cache_tier_t *t)
{
    if (ts->n >= CACHE_TIERS_MAX) return BAR_ERR_RANGE;
    ts->v[ts->n++] = t;
    return 0;
}

struct cache_walk {
    cache_tiers_t *ts;
    cache_key_t key;
    uint64_t ns;
    long long max_age_ms;
    int64_t now_ms;
    int i;       /* the tier being asked */
    int pending; /* tier i owes a callback (op may be NULL: it is the tier's) */
    void *op;    /* its pending lookup */
    cache_walk_fn cb;
    void *user;
};

/* e usable for this walk? (not older than max-age). stored_ms comes from
 * another process (Redis) and may be anything: the age is taken in unsigned
 * arithmetic, and an entry stored "after" now is not old. */
static int fresh(const cache_walk_t *w, const cache_entry_t *e)
{
    if (w->max_age_ms < 0 || e->stored_ms >= w->now_ms) return 1;
    return (uint64_t)w->now_ms - (uint64_t)e->stored_ms <= (uint64_t)w->max_age_ms;
}

/* A hit in tier i: copy it into the tiers before it with the TTL it has left
 * (stored_ms + ttl_ms - now, without overflow for any stored_ms and a ttl_ms
 * beyond INT64_MAX; saturated at UINT64_MAX). */
static void promote(cache_walk_t *w, cache_entry_t *e, int i)
{
    uint64_t ttl = 0;
    if (e->ttl_ms) {
        if (w->now_ms >= e->stored_ms) {
            uint64_t age = (uint64_t)w->now_ms - (uint64_t)e->stored_ms;
            if (age >= e->ttl_ms) return; /* expired on the way: serve it, keep no copy */
            ttl = e->ttl_ms - age;
        } else {
            uint64_t ahead = (uint64_t)e->stored_ms - (uint64_t)w->now_ms;
            ttl = e->ttl_ms > UINT64_MAX - ahead ? UINT64_MAX : e->ttl_ms + ahead;
        }
    }
    for (int k = 0; k < i; k++)
        w->ts->v[k]->ops->store(w->ts->v[k], e, ttl);
}

/* Continue from tier w->i. 1: ended (w->cb NOT called; *hit, *tier set);
 * 0: pending. */
static int walk(cache_walk_t *w, cache_entry_t **hit, int *tier);

static void on_async(void *user, cache_entry_t *e)
{
    cache_walk_t *w = user;
    w->pending = 0;
    w->op = NULL;
    if (e && fresh(w, e)) {
        promote(w, e, w->i);
        w->ts->hits[w->i]++;
        cache_walk_fn cb = w->cb;
        void *u = w->user;
        int i = w->i;
        free(w);
        cb(u, e, i);
        return;
    }
    cache_entry_release(e);
    w->i++;
    cache_entry_t *h = NULL;
    int t = -1;
    if (walk(w, &h, &t)) {
        cache_walk_fn cb = w->cb;
        void *u = w->user;
        free(w);
        cb(u, h, t);
    }
}

static int walk(cache_walk_t *w, cache_entry_t **hit, int *tier)
{
    for (; w->i < w->ts->n; w->i++) {
        cache_tier_t *t = w->ts->v[w->i];
        cache_entry_t *e = NULL;
        int rc = t->ops->lookup(t, &w->key, w->ns, on_async, w, &w->op, &e);
        if (rc == 0) {
            w->pending = 1;
            return 0; /* on_async continues */
        }
        if (rc > 0 && e && fresh(w, e)) {
            promote(w, e, w->i);
            w->ts->hits[w->i]++;
            *hit = e;
            *tier = w->i;
            return 1;
        }
        cache_entry_release(e);
    }
    w->ts->misses++;
    *hit = NULL;
    *tier = -1;
    return 1;
}

int cache_tiers_lookup(cache_tiers_t *ts, const cache_key_t *key, uint64_t ns, long long max_age_ms,
                       int64_t now_ms, cache_walk_fn cb, void *user, cache_walk_t **op,
                       cache_entry_t **hit, int *tier)
{
    *op = NULL;
    *hit = NULL;
    *tier = -1;
    /* the common case, an L1 answer, allocates nothing */
    cache_walk_t local = {ts, *key, ns, max_age_ms, now_ms, 0, 0, NULL, cb, user};
    if (ts->n && ts->v[0]->ops->lookup == l1_lookup) {
        cache_entry_t *e = cache_l1_get(ts->v[0]->impl, key);
        if (e && fresh(&local, e)) {
            ts->hits[0]++;
            *hit = e;
            *tier = 0;
            return 1;
        }
        cache_entry_release(e);
        local.i = 1;
    }
    cache_walk_t *w = malloc(sizeof *w);
    if (!w) {
        ts->misses++;
        return 1;
    }
    *w = local;
    if (walk(w, hit, tier)) {
        free(w);
        return 1;
    }
    *op = w;
    return 0;
}

void cache_tiers_cancel(cache_tiers_t *ts, cache_walk_t *w)
{
    if (!w) return;
    if (w->pending) ts->v[w->i]->ops->cancel(ts->v[w->i], w->op);
    free(w);
}

int cache_tiers_store(cache_tiers_t *ts, cache_entry_t *e, uint64_t ttl_ms)
{
    int n = 0;
    for (int i = 0; i < ts->n; i++)
        if (ts->v[i]->ops->store(ts->v[i], e, ttl_ms) == 0) n++;
    return n;
}
