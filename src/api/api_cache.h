/* api_cache.h — the exact-match response cache as the API uses it: the tiers
 * (cache_l1, cache_redis), single-flight, snapshots and the per-outcome
 * counters of one server, plus the per-request decision (Cache-Control,
 * namespace, key) and the admin endpoints (DELETE /v1/cache[...], GET
 * /v1/cache/stats). The library it wires is src/cache/ (docs/CACHE.md).
 *
 * Shared by api.c (admin endpoints, /metrics) and gen.c (the request path).
 * Not a public interface. Threads: the loop thread only, except the snapshot
 * writer (uv_queue_work over immutable entries). Not for: replies and
 * generations (gen.c), key canonicalisation (cache_key.c). */
#ifndef BARISTA_API_API_CACHE_H
#define BARISTA_API_API_CACHE_H

#include <stdint.h>
#include <uv.h>

#include "cache/cache_entry.h"
#include "cache/cache_key.h"
#include "cache/cache_l1.h"
#include "cache/cache_redis.h"
#include "cache/cache_snapshot.h"
#include "cache/singleflight.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/buf.h"

/* Raw-request memo (see api_cache_memo_find): one slot remembers that a
 * byte-identical request (endpoint, model, digest, the three headers the key
 * reads, the body) was fully decided and answered as an exact L1 hit. */
#define API_CACHE_MEMO_SLOTS 64
#define API_CACHE_MEMO_MAX (16 * 1024) /* identities longer than this are not memoised */

typedef struct api_cache_memo api_cache_memo_t;

typedef struct api_cache {
    const srv_settings_t *set;
    uv_loop_t *loop;
    cache_l1_t *l1;    /* NULL with --cache-mem 0 */
    cache_redis_t *l2; /* NULL without --redis */
    sf_t *sf;
    char digest[CACHE_KEY_HEX_LEN + 1]; /* model file digest ("" until the model loads) */
    uv_timer_t sweep, snap;
    int n_open;    /* timer handles not yet closed */
    int snap_busy; /* a periodic snapshot is being written on the thread pool */
    int closing;
    uv_work_t snap_work;
    cache_snap_t *snap_data;
    int snap_rc;
    bar_msg_t snap_msg;
    /* outcomes (barista_cache_requests_total) */
    uint64_t hit_l1, hit_l2, miss, bypass, coalesced;
    uint64_t stored, store_refused;
    api_cache_memo_t *memo; /* API_CACHE_MEMO_SLOTS slots, allocated on first use */
    buf_t memo_id;          /* scratch: the identity of the request being looked up */
} api_cache_t;

/* Create the tiers from the settings (--cache-mem, --cache-policy, --redis,
 * --cache-file ...): loads the snapshot (a corrupt one is a warning on stderr
 * and an empty start) and starts the sweep and snapshot timers. on_sf_empty
 * is single-flight's "last subscriber left" hook (gen.c cancels there), with
 * ctx. 0, or BAR_ERR_INVALID (bad --cache-policy / --redis URL) / NOMEM with
 * msg. Ownership: api_cache_destroy. */
int api_cache_create(api_cache_t **out, uv_loop_t *loop, const srv_settings_t *set,
                     sf_empty_fn on_sf_empty, void *ctx, bar_msg_t *msg);

/* Writes the shutdown snapshot, closes Redis and the timers; the memory is
 * freed by the loop's close callbacks (run the loop afterwards). Call once no
 * generation is left. NULL is fine. */
void api_cache_destroy(api_cache_t *c);

/* Whether any tier is configured (otherwise requests carry no X-Cache). */
int api_cache_on(const api_cache_t *c);

/* The model's file digest (part of every key). */
void api_cache_set_digest(api_cache_t *c, const char *digest);

/* What one request asks of the cache. */
typedef struct {
    int cacheable;     /* reproducible or opted in: X-Cache applies, not BYPASS */
    int no_cache;      /* Cache-Control: no-cache — do not read */
    int no_store;      /* Cache-Control: no-store — do not write */
    long long max_age; /* Cache-Control: max-age=N seconds, -1 when absent */
    cache_key_t key;
    uint64_t ns; /* cache_ns_hash of the namespace */
    char hex[CACHE_KEY_HEX_LEN + 1];
} api_cache_req_t;

/* Decide for request h, whose body parsed (oai_parse_json) to the JSON
 * object body (borrowed; not yet validated — the caller validates fully
 * unless the key hits, see gen_handle): Cache-Control, cacheability,
 * namespace (docs/CACHE.md: bearer token + "\0" + X-Cache-Namespace) and key.
 * 0, or a negative code (no body, OOM, nesting too deep): then treat the
 * request as not cacheable. */
int api_cache_decide(api_cache_t *c, const http_req_t *h, const cJSON *body, const char *endpoint,
                     const char *model_id, api_cache_req_t *out);

/* TTL to store a reply of request q with, in ms (0 = none). */
/* The decision of an earlier exact L1 hit, reused for a byte-identical
 * request: if the raw identity bytes are equal, the parse, the key and the
 * delivery checks would all come out the same, so none of them runs again. */
struct api_cache_memo {
    uint64_t h;
    char *id; /* identity bytes, NULL when the slot is empty */
    size_t n;
    api_cache_req_t cq;
    int stream, include_usage, want_lp;
};

/* The memo slot for this request, or NULL. kind tells chat from completions. */
const api_cache_memo_t *api_cache_memo_find(api_cache_t *c, const http_req_t *h, int kind,
                                            const char *model_id);

/* Remember a request that was just answered as an exact L1 hit. */
void api_cache_memo_put(api_cache_t *c, const http_req_t *h, int kind, const char *model_id,
                        const api_cache_req_t *cq, int stream, int include_usage, int want_lp);

uint64_t api_cache_ttl_ms(const api_cache_t *c, const api_cache_req_t *q);

/* Store a finished entry in L1 and L2 (unless the request said no-store). */
void api_cache_store(api_cache_t *c, cache_entry_t *e, const api_cache_req_t *q);

/* Unix time in ms (the clock of cache_entry_t.stored_ms). */
int64_t api_cache_now_ms(void);

/* GET /v1/cache/stats and DELETE /v1/cache[/{key}][?namespace=NS[&api_key=K]].
 * The caller has checked the admin key. */
void api_cache_admin(api_cache_t *c, srv_req_t *r);

/* Append the cache series to a Prometheus scrape. */
void api_cache_metrics(const api_cache_t *c, buf_t *b);

#endif
