/* cache_redis.h — the shared L2 tier: hiredis async on the libuv loop.
 *
 * Keys are "<prefix>:<ns 16 hex>:<key 32 hex>" (prefix "barista"), values
 * cache_entry_encode() records (versioned, checksummed; a value that does not
 * decode, or that names another key, is garbage: counted, deleted, a miss).
 *   get    GET with a per-request timeout (default 5 ms; one loop timer for
 *          all outstanding GETs). The callback always comes exactly once.
 *   set    SET key value PX ttl_ms — write-through, fire and forget.
 *   purge  by key, namespace, tenant (every namespace sharing the high 32
 *          bits: MATCH <prefix>:<8 hex>????????:*) or everything: SCAN MATCH + UNLINK in batches
 *          (non-blocking for Redis, cursor-based), then a PUBLISH on
 *          "<prefix>:purge" so every other barista on this Redis purges its
 *          L1 too (on_peer_purge).
 *
 * stream   records of other tiers (the semantic tier's entries and purges):
 *          XADD to "<prefix>:stream" (MAXLEN ~ stream_maxlen) and, with
 *          on_stream, a third connection tails it (XREAD BLOCK from the
 *          start, so a new replica loads what is there, and from the last id
 *          seen after a reconnect). Records are opaque bytes here.
 *
 * Never fails a request: while Redis is down, connecting, over
 * max_inflight, or after trip_timeouts GETs in a row timed out (a hung
 * server: the connection is dropped), calls return BAR_ERR_BUSY at once (a
 * miss for the caller) and a counter moves. Reconnects with exponential
 * backoff (100 ms doubling to 5 s, reset on success). The host name is
 * resolved once, at create.
 *
 * Threads: the loop thread only. Not for: L1, keys, policy. */
#ifndef BARISTA_CACHE_CACHE_REDIS_H
#define BARISTA_CACHE_CACHE_REDIS_H

#include <stdint.h>
#include <uv.h>

#include "cache/cache_entry.h"
#include "cache/cache_key.h"
#include "util/err.h"

/* redis://[[user]:password@]host[:port][/db]  (host may be [v6]) */
typedef struct {
    char host[256];
    int port;           /* default 6379 */
    int db;             /* default 0 */
    char user[128];     /* "" = none (AUTH password only) */
    char password[256]; /* "" = no AUTH */
} cache_redis_url_t;

/* 0 or BAR_ERR_INVALID with msg naming what is wrong (startup error). */
int cache_redis_parse_url(const char *url, cache_redis_url_t *out, bar_msg_t *msg);

/* The address to connect to from a uv_getaddrinfo answer (status, res):
 * the first IPv4 one (as hiredis prefers), else the first; "" when none.
 * out has INET6_ADDRSTRLEN (46) bytes. res stays the caller's to free. */
void cache_redis_pick_addr(int status, const struct addrinfo *res, char out[46]);

typedef enum {
    CACHE_PURGE_ALL = 0,
    CACHE_PURGE_NS = 1,
    CACHE_PURGE_KEY = 2,
    /* every namespace of one tenant: those whose high 32 bits (the tenant
     * half of tenant_ns_id, CACHE_NS_TENANT_MASK) equal ns's */
    CACHE_PURGE_TENANT = 3,
} cache_purge_kind_t;

/* The tenant half of a namespace id (tenant_ns_id: HMAC(tenant) in the high
 * 32 bits, HMAC(tenant NUL sub) in the low ones). */
#define CACHE_NS_TENANT_MASK 0xffffffff00000000ull

/* Another barista on this Redis purged (apply it to the local L1). key is
 * NULL unless kind is CACHE_PURGE_KEY; ns is 0 unless CACHE_PURGE_NS or
 * CACHE_PURGE_TENANT (then only its high 32 bits count). */
typedef void (*cache_redis_peer_fn)(void *user, cache_purge_kind_t kind, uint64_t ns,
                                    const cache_key_t *key);

typedef struct {
    uint64_t timeout_ms;     /* GET timeout; 0 → 5 */
    uint64_t backoff_min_ms; /* 0 → 100 */
    uint64_t backoff_max_ms; /* 0 → 5000 */
    int max_inflight;        /* outstanding commands; 0 → 1024 */
    int trip_timeouts;       /* consecutive GET timeouts that drop the connection; 0 → 8 */
    uint64_t stall_ms;       /* any command unanswered this long drops it; 0 → 1000 */
    const char *prefix;      /* [A-Za-z0-9_.-]{1,32}; NULL → "barista" */
    cache_redis_peer_fn on_peer_purge; /* NULL: no subscription */
    void *peer_user;
    /* a record read from the stream (borrowed for the call; every record,
     * this replica's own included, in stream order). NULL: no tail. */
    void (*on_stream)(void *user, const char *rec, size_t n);
    void *stream_user;
    long long stream_maxlen; /* approximate cap of the stream; 0 → 100000 */
} cache_redis_opts_t;

typedef enum {
    CACHE_L2_HIT = 0,
    CACHE_L2_MISS,
    CACHE_L2_TIMEOUT,
    CACHE_L2_ERROR,   /* error reply or the connection dropped */
    CACHE_L2_GARBAGE, /* a value that does not decode / belongs to another key */
    CACHE_L2_DOWN,    /* completed by cache_redis_destroy */
} cache_l2_status_t;

const char *cache_l2_status_name(cache_l2_status_t s);

typedef struct cache_redis cache_redis_t;
typedef struct cache_redis_op cache_redis_op_t;

/* Parse url and start connecting (asynchronously; an unreachable Redis is not
 * an error — it is retried). NULL with msg on a bad URL, bad options or OOM.
 * opts may be NULL. */
cache_redis_t *cache_redis_create(uv_loop_t *loop, const char *url, const cache_redis_opts_t *opts,
                                  bar_msg_t *msg);

/* Complete outstanding GETs with CACHE_L2_DOWN and purges with
 * BAR_ERR_CANCELLED, disconnect, and close the handles; the memory is freed
 * by the loop's close callbacks, so run the loop afterwards (uv_run) before
 * uv_loop_close. Must not be called from one of this module's callbacks. */
void cache_redis_destroy(cache_redis_t *r);

/* e: a NEW reference on CACHE_L2_HIT (the caller releases it), else NULL. */
typedef void (*cache_redis_get_fn)(void *user, cache_entry_t *e, cache_l2_status_t st);

/* Look up key (in namespace ns). 0: cb will be called exactly once, never
 * from inside this call; *op (if op non-NULL) identifies the request until
 * then. BAR_ERR_BUSY: not sent (down, connecting, tripped, too many
 * outstanding): treat as a miss now; cb is never called. */
int cache_redis_get(cache_redis_t *r, const cache_key_t *key, uint64_t ns, cache_redis_get_fn cb,
                    void *user, cache_redis_op_t **op);

/* The caller lost interest (its client left): cb will not be called. Only
 * before cb ran. */
void cache_redis_cancel(cache_redis_t *r, cache_redis_op_t *op);

/* Write-through: SET under e->key / e->ns with PX ttl_ms (0: no expiry).
 * 0 (sent; failures are counted, never reported), BAR_ERR_BUSY (not sent),
 * BAR_ERR_INVALID (unfinished entry), BAR_ERR_NOMEM. */
int cache_redis_set(cache_redis_t *r, const cache_entry_t *e, uint64_t ttl_ms);

/* Append rec (n bytes, copied) to the record stream. 0 (sent; failures are
 * not reported) or BAR_ERR_BUSY (down: not sent). */
int cache_redis_stream_add(cache_redis_t *r, const void *rec, size_t n);

/* done: err 0 / BAR_ERR_IO (Redis failed mid-way) / BAR_ERR_CANCELLED
 * (destroyed), and how many keys were deleted. */
typedef void (*cache_redis_done_fn)(void *user, int err, uint64_t n_deleted);

/* Delete by kind: ns for CACHE_PURGE_NS and CACHE_PURGE_TENANT, key for CACHE_PURGE_KEY (any
 * namespace). 0: done will be called exactly once; BAR_ERR_BUSY: Redis is
 * down, nothing was deleted, done is not called. */
int cache_redis_purge(cache_redis_t *r, cache_purge_kind_t kind, uint64_t ns,
                      const cache_key_t *key, cache_redis_done_fn done, void *user);

typedef struct {
    int connected;  /* commands are being sent */
    int subscribed; /* peer-purge channel live */
    int inflight;
    uint64_t gets, hits, misses, timeouts, errors, garbage;
    uint64_t skipped; /* gets/sets not sent (down, tripped, full) */
    uint64_t sets, set_errors;
    uint64_t connects;      /* successful (re)connections */
    uint64_t conn_failures; /* failed attempts and lost connections */
    uint64_t trips;         /* connections dropped after consecutive timeouts */
    uint64_t purges, peer_purges;
    int tailing; /* the stream tail is connected */
    uint64_t stream_adds, stream_reads;
} cache_redis_stats_t;

void cache_redis_stats(const cache_redis_t *r, cache_redis_stats_t *st);
int cache_redis_connected(const cache_redis_t *r);

/* The last connection error, "" if none (for logs / stats). */
const char *cache_redis_last_error(const cache_redis_t *r);

/* The Redis key name of (ns, key), for tools and tests. out ≥ 96 bytes. */
void cache_redis_key_name(const cache_redis_t *r, uint64_t ns, const cache_key_t *key, char *out,
                          size_t size);

#endif
