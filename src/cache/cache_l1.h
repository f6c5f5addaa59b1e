/* cache_l1.h — the in-process exact cache: key → refcounted cache_entry_t,
 * under a byte budget, with per-entry TTL and a pluggable eviction policy.
 *
 * Budget: every resident entry is charged its entry allocation
 * (cache_entry_t.mem_bytes, which holds the key and the whole value) plus
 * CACHE_L1_NODE_BYTES (index node, malloc overhead, hash slots); an S3-FIFO
 * ghost (a remembered key, no value) is charged CACHE_L1_NODE_BYTES. The sum
 * never exceeds budget_bytes after a put returns.
 *
 * Policies (cache_policy_t), behind a small vtable:
 *   S3-FIFO (default): a small FIFO (10% of the budget) that new keys enter, a
 *     main FIFO with a 2-bit access counter (reinsertion instead of LRU
 *     moves), and a ghost FIFO of keys recently dropped from the small queue;
 *     a key found in the ghost goes straight to main. One-hit wonders leave
 *     quickly; a hit is a counter increment (no list surgery).
 *   LRU: one list, a hit moves the entry to the head.
 * docs/CACHE.md has the hit-ratio benchmark that picked the default.
 *
 * Time: expiry is absolute on the monotonic clock given in the options
 * (injectable for tests). An expired entry is never returned; it is dropped
 * when looked up, when the policy reaches it, or by cache_l1_sweep.
 *
 * Threads: none. The L1 belongs to the libuv loop thread; every call comes
 * from it, so there are no locks. Not for: Redis (cache_redis), key building
 * (cache_key), files (cache_snapshot). */
#ifndef BARISTA_CACHE_CACHE_L1_H
#define BARISTA_CACHE_CACHE_L1_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_entry.h"
#include "cache/cache_key.h"

typedef enum {
    CACHE_POLICY_S3FIFO = 0,
    CACHE_POLICY_LRU = 1,
} cache_policy_t;

/* "s3fifo" / "lru". */
const char *cache_policy_name(cache_policy_t p);
/* 0 or BAR_ERR_INVALID. */
int cache_policy_parse(const char *s, cache_policy_t *out);

/* per-node charge on top of an entry's own mem_bytes (see above) */
#define CACHE_L1_NODE_BYTES 128

typedef struct {
    size_t budget_bytes; /* --cache-mem; must be > 0 */
    cache_policy_t policy;
    size_t max_entry_bytes;   /* larger entries are refused; 0 = budget / 8 */
    double (*now)(void *ctx); /* monotonic seconds; NULL = time_now_mono */
    void *now_ctx;
    unsigned s3_promote_hits; /* S3-FIFO: hits while in the small queue that earn a
                                 place in main; 0 → 1 (the paper uses 2; see
                                 docs/CACHE.md for the measurement) */
} cache_l1_opts_t;

typedef struct {
    size_t entries; /* resident entries */
    size_t bytes;   /* charged bytes (entries + ghosts) */
    size_t budget;
    size_t ghosts; /* S3-FIFO remembered keys */
    uint64_t hits, misses;
    uint64_t inserts;
    uint64_t evictions;   /* dropped for room */
    uint64_t expirations; /* dropped because their TTL passed */
    uint64_t rejected;    /* puts refused (too large) */
} cache_l1_stats_t;

typedef struct cache_l1 cache_l1_t;

/* NULL on OOM or a zero budget. */
cache_l1_t *cache_l1_create(const cache_l1_opts_t *o);

/* Drops the L1's references; entries still held by callers live on. */
void cache_l1_destroy(cache_l1_t *l1);

/* Look up a key. A hit returns a NEW reference (release it with
 * cache_entry_release when the reply is sent); NULL is a miss. Counts hits
 * and misses. */
cache_entry_t *cache_l1_get(cache_l1_t *l1, const cache_key_t *k);

/* Put flags */
#define CACHE_L1_WARM 1u /* S3-FIFO: enter the main queue (snapshot restore) */

/* Store e under e->key for ttl_ms (0 = no expiry). The L1 takes its own
 * reference; the caller keeps theirs. An existing entry under the key is
 * replaced. Evicts as needed before inserting. 0, BAR_ERR_RANGE (larger than
 * max_entry_bytes: not stored), BAR_ERR_INVALID (unfinished entry),
 * BAR_ERR_NOMEM. */
int cache_l1_put(cache_l1_t *l1, cache_entry_t *e, uint64_t ttl_ms, unsigned flags);

/* e (resident under its key) grew (cache_entry_set_memo): charge its new
 * mem_bytes and evict until the budget holds again (e itself may go; the
 * caller's reference keeps it alive). No-op when e is not the resident
 * entry for its key. */
void cache_l1_recharge(cache_l1_t *l1, const cache_entry_t *e);

/* Remove one key. 1 if it was resident, else 0. */
int cache_l1_del(cache_l1_t *l1, const cache_key_t *k);

/* Remove every entry of one namespace (cache_ns_hash) / everything (ghosts
 * too). Return the number of entries removed. O(entries). */
size_t cache_l1_purge_ns(cache_l1_t *l1, uint64_t ns);
/* Remove every entry whose namespace has ns's high 32 bits (every
 * sub-namespace of one tenant, tenant_ns_id). O(entries). */
size_t cache_l1_purge_tenant(cache_l1_t *l1, uint64_t ns);
size_t cache_l1_purge_all(cache_l1_t *l1);

/* Drop every expired entry now; returns how many. O(entries). */
size_t cache_l1_sweep(cache_l1_t *l1);

void cache_l1_stats(const cache_l1_t *l1, cache_l1_stats_t *st);

/* Visit every resident, unexpired entry, coldest first (the order a restore
 * should re-insert them with CACHE_L1_WARM). expires: monotonic seconds, 0 =
 * never. The callback must not modify the L1; a non-zero return stops the
 * walk and is returned. */
typedef int (*cache_l1_visit_fn)(void *ctx, cache_entry_t *e, double expires);
int cache_l1_foreach(cache_l1_t *l1, cache_l1_visit_fn fn, void *ctx);

/* The L1's clock (monotonic seconds). */
double cache_l1_now(const cache_l1_t *l1);

#endif
