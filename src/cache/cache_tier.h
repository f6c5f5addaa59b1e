/* cache_tier.h — the cache tier interface and the ordered walk over tiers.
 *
 * A tier stores finished replies (cache_entry_t) by key: the in-process L1
 * (cache_l1), the shared Redis L2 (cache_redis), next a semantic tier. The
 * pipeline never talks to a tier directly: it asks the tier list
 * (cache_tiers_t) to look a key up, and the list walks the tiers in order —
 * a synchronous tier answers at once, an asynchronous one calls back — and
 * promotes a hit found in a later tier into every earlier one (with the TTL
 * the entry has left), so the next lookup stops sooner. Stores go to every
 * tier; purges too.
 *
 * Threads: the loop thread only. Not for: keys (cache_key), deciding what is
 * cacheable (the API layer), single-flight (singleflight). */
#ifndef BARISTA_CACHE_CACHE_TIER_H
#define BARISTA_CACHE_CACHE_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_entry.h"
#include "cache/cache_key.h"
#include "cache/cache_l1.h"
#include "cache/cache_redis.h"

typedef struct cache_tier cache_tier_t;
struct cache_tier_stats;

/* An asynchronous lookup's answer: e is a reference the callee hands over
 * (NULL on a miss, a timeout or an error). */
typedef void (*cache_tier_get_fn)(void *user, cache_entry_t *e);

/* A purge's answer: n entries deleted, or err < 0 (the tier is down). */
typedef void (*cache_tier_purged_fn)(void *user, int err, uint64_t n);

typedef struct {
    const char *name; /* "L1", "L2": the X-Cache-Tier value */
    /* Look key up (ns: the tenant namespace hash). Synchronous tiers return 1
     * and set *hit (a reference, or NULL for a miss). Asynchronous ones
     * return 0, set *op and call cb exactly once later unless cancel(op) runs
     * first. A negative return: the tier cannot answer now (a miss). */
    int (*lookup)(cache_tier_t *t, const cache_key_t *key, uint64_t ns, cache_tier_get_fn cb,
                  void *user, void **op, cache_entry_t **hit);
    void (*cancel)(cache_tier_t *t, void *op);
    /* Store e for ttl_ms (0 = no expiry). 0 stored, or a negative code. */
    int (*store)(cache_tier_t *t, cache_entry_t *e, uint64_t ttl_ms);
    /* Delete by kind (all, a namespace, a tenant's namespaces, one key). Synchronous tiers return
     * the count (>= 0) and never call cb; asynchronous ones return
     * CACHE_TIER_PENDING and call cb once; a negative code: down. */
    long long (*purge)(cache_tier_t *t, cache_purge_kind_t kind, uint64_t ns,
                       const cache_key_t *key, cache_tier_purged_fn cb, void *user);
    /* Counters for /v1/cache/stats and /metrics (zeros where unknown). */
    void (*stats)(cache_tier_t *t, struct cache_tier_stats *out);
} cache_tier_ops_t;

typedef struct cache_tier_stats {
    uint64_t entries, bytes; /* resident (0 when the tier cannot tell) */
    uint64_t hits, misses;   /* lookups answered / not */
    uint64_t errors;         /* lookups or stores that failed (timeouts, errors, garbage) */
    int up;                  /* answering now */
} cache_tier_stats_t;

#define CACHE_TIER_PENDING (-1000)

struct cache_tier {
    const cache_tier_ops_t *ops;
    void *impl; /* the cache_l1_t / cache_redis_t */
};

/* Tiers over the existing stores (the store stays the caller's). */
void cache_tier_l1(cache_tier_t *t, cache_l1_t *l1);
void cache_tier_redis(cache_tier_t *t, cache_redis_t *r);

#define CACHE_TIERS_MAX 4

typedef struct {
    cache_tier_t *v[CACHE_TIERS_MAX]; /* in lookup order; borrowed */
    int n;
    uint64_t hits[CACHE_TIERS_MAX]; /* per tier */
    uint64_t misses;                /* walks that found nothing */
} cache_tiers_t;

/* Append a tier (at most CACHE_TIERS_MAX). */
int cache_tiers_add(cache_tiers_t *ts, cache_tier_t *t);

typedef struct cache_walk cache_walk_t;

/* The end of a walk: e (a reference handed over) from tier index `tier`, or
 * e == NULL and tier == -1 for a miss. */
typedef void (*cache_walk_fn)(void *user, cache_entry_t *e, int tier);

/* Walk the tiers for key. An entry older than max_age_ms (>= 0; -1 = any
 * age; now_ms is the unix-ms clock of cache_entry_t.stored_ms) is a miss for
 * this walk. Returns 1 when the walk ended synchronously (*hit and *tier set:
 * a reference, or NULL / -1), or 0 with *op set when cb will be called
 * (cancel with cache_tiers_cancel). A hit in tier i is stored into tiers
 * 0..i-1 with the TTL it has left (promotion), before it is returned. */
int cache_tiers_lookup(cache_tiers_t *ts, const cache_key_t *key, uint64_t ns, long long max_age_ms,
                       int64_t now_ms, cache_walk_fn cb, void *user, cache_walk_t **op,
                       cache_entry_t **hit, int *tier);

/* Stop a pending walk: cb is never called. */
void cache_tiers_cancel(cache_tiers_t *ts, cache_walk_t *op);

/* Store into every tier; the number of tiers that took it. */
int cache_tiers_store(cache_tiers_t *ts, cache_entry_t *e, uint64_t ttl_ms);

#endif
