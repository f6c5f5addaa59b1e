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
#include "cache/cache_tier.h"
#include "cache/semantic.h"
#include "cache/singleflight.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/buf.h"

/* Raw-request memo (see api_cache_memo_find): one slot remembers that a
 * byte-identical request (endpoint, model, digest, the three headers the key
 * reads, the body) was fully decided and answered as an exact L1 hit. */
#define API_CACHE_MEMO_SLOTS 64
#define API_CACHE_MEMO_MAX (16 * 1024) /* identities longer than this are not memoised */

typedef struct api_cache api_cache_t; /* opaque: api_cache.c */

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

/* The ordered tiers (L1, then L2) the request path walks. */
cache_tiers_t *api_cache_tiers(api_cache_t *c);

/* Single-flight, or NULL once the cache is closing. */
sf_t *api_cache_sf(api_cache_t *c);

/* Whether replies may still be stored (not closing). */
int api_cache_storing(const api_cache_t *c);

/* e's size grew (a memo was attached): charge L1 again. */
void api_cache_recharge(api_cache_t *c, const cache_entry_t *e);

/* Request outcomes (barista_cache_requests_total). */
typedef enum {
    API_CACHE_HIT_L1 = 0,
    API_CACHE_HIT_L2,
    API_CACHE_MISS,
    API_CACHE_BYPASS,
    API_CACHE_COALESCED,
    API_CACHE_HIT_SEM, /* the semantic tier */
    API_CACHE_N_OUTCOMES,
} api_cache_outcome_t;
void api_cache_count(api_cache_t *c, api_cache_outcome_t o);

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

/* What the key is made of, decided by the request path (pipeline.c). */
typedef struct {
    const char *endpoint;    /* "chat" | "completions" */
    const char *model;       /* the resolved model name */
    const char *digest;      /* its weights' digest */
    const char *const *skip; /* body members that never change the answer */
    const char *extra;       /* canonical bytes of the sampling values used */
    size_t extra_len;
    int reproducible; /* greedy or seeded: cacheable without opting in */
    uint64_t ns;      /* the tenant's namespace id (api_tenant.h) */
} api_cache_keyin_t;

/* Decide for request h, whose validated body is the JSON object body
 * (borrowed): Cache-Control, cacheability and key (in->ns: the tenant's
 * namespace id, docs/TENANTS.md). 0, or a negative code (OOM, nesting too
 * deep): then treat the request as not cacheable. */
int api_cache_decide(api_cache_t *c, const http_req_t *h, const cJSON *body,
                     const api_cache_keyin_t *in, api_cache_req_t *out);

/* The raw-request memo: a byte-identical repeat (endpoint, namespace id,
 * Cache-Control, the body) of a request that was answered as an exact L1
 * hit reuses that decision, so neither parsing nor keying runs again. */
typedef struct {
    api_cache_req_t cq;
    int model; /* index into the api's models */
    int stream, include_usage, want_lp;
} api_cache_memo_t;

/* The memo for this request, or NULL. kind tells chat from completions. */
const api_cache_memo_t *api_cache_memo_find(api_cache_t *c, const http_req_t *h, int kind,
                                            uint64_t ns);

/* Remember a request that was just answered as an exact L1 hit. */
void api_cache_memo_put(api_cache_t *c, const http_req_t *h, int kind, uint64_t ns,
                        const api_cache_memo_t *m);

/* The L1 entry for key (a reference) if fresh for q, else NULL. */
cache_entry_t *api_cache_l1_get(api_cache_t *c, const api_cache_req_t *q);

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

/* TTL to store a reply of request q with, in ms (0 = none). */
uint64_t api_cache_ttl_ms(const api_cache_t *c, const api_cache_req_t *q);

/* Store a finished entry in L1 and L2 (unless the request said no-store). */
void api_cache_store(api_cache_t *c, cache_entry_t *e, const api_cache_req_t *q);

/* Unix time in ms (the clock of cache_entry_t.stored_ms). */
int64_t api_cache_now_ms(void);

/* The semantic tier (--semantic-cache): whether it is on, the threshold
 * (cosine similarity) from --semantic-threshold, and the store, created on
 * first use for vectors of dim floats (NULL: off, another dim, or OOM). */
int api_cache_semantic_on(const api_cache_t *c);
double api_cache_semantic_threshold(const api_cache_t *c);
semantic_t *api_cache_semantic(api_cache_t *c, int dim);
/* Share an entry just stored with the other replicas (Redis stream; a no-op
 * without Redis, and while it is down). */
void api_cache_semantic_share(api_cache_t *c, const semantic_put_t *p, int dim);

/* Who calls the admin API. */
typedef struct api_tenants api_tenants_t;
struct api_tenant;
typedef struct {
    int admin;                       /* the admin key or an admin tenant: everything */
    const struct api_tenant *caller; /* otherwise: a tenant, its own namespaces only */
    api_tenants_t *tenants;          /* names → namespace ids */
} api_cache_caller_t;

/* GET /v1/cache/stats and DELETE /v1/cache[/{key}][?all=true |
 * ?tenant=T|?api_key=K [&namespace=NS] | ?namespace=NS] for an admin (without
 * namespace: every namespace of the tenant); DELETE /v1/cache (all its own
 * namespaces) or ?namespace=NS (one of its own) for a tenant. The caller has
 * checked the key. */
void api_cache_admin(api_cache_t *c, srv_req_t *r, const api_cache_caller_t *who);

/* Append the cache series to a Prometheus scrape. */
void api_cache_metrics(const api_cache_t *c, buf_t *b);

#endif
