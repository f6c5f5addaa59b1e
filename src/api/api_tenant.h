/* api_tenant.h — who asks: the tenant of a request (from its API key, the
 * keys file or --api-key), its cache namespace id and its rate limits, as
 * the API layer uses them (docs/TENANTS.md).
 *
 * A request presents its key as 'Authorization: Bearer K' or 'api-key: K'
 * (Azure's). With --keys or --api-key the key must be known (else 401);
 * with neither the server is open and each distinct presented key is its own
 * anonymous tenant "anon:<first 32 hex of its SHA-256>" ("" without a key),
 * so clients that bring their own tokens stay apart.
 *
 * The namespace id is tenant_ns_id(secret, tenant, X-Cache-Namespace): a
 * keyed hash, never the token's bytes. The secret: --namespace-secret, else
 * one generated once and kept in Redis (SET NX, so replicas sharing Redis
 * agree), else one per process.
 *
 * Not for: the keys file's format (control/tenant.h), the limiter
 * (control/ratelimit.h). Threads: the loop thread. */
#ifndef BARISTA_API_API_TENANT_H
#define BARISTA_API_API_TENANT_H

#include <stdint.h>

#include "control/ratelimit.h"
#include "control/ratelimit_redis.h"
#include "control/tenant.h"
#include "server/http.h"
#include "server/settings.h"

typedef struct api_tenants api_tenants_t;
typedef struct api_keyset api_keyset_t; /* a loaded keys file, refcounted */

/* The tenant of one request. Holds a reference on the keys file it was
 * resolved against (api_tenant_release), so a reload never frees `key`
 * under a request in flight. */
typedef struct api_tenant {
    char name[TENANT_NAME_MAX]; /* "" = anonymous */
    uint64_t ns;                /* namespace id of (name, X-Cache-Namespace) */
    int priority;               /* from the keys file; 0 otherwise */
    int admin;                  /* may use the admin API for any tenant */
    int authed;                 /* the key was checked (--keys / --api-key) */
    tenant_limits_t limits;     /* copied: a reload does not change a request in flight */
    rl_state_t *rl;             /* the tenant's limiter; NULL when it has no limits */
    const tenant_key_t *key;    /* the keys file's entry, or NULL */
    api_keyset_t *ks;           /* the reference */
} api_tenant_t;

/* Load --keys (if set), settle the namespace secret, connect the shared
 * limiter to --redis (if set). 0, or a negative code with msg (a bad keys
 * file). Ownership: api_tenants_close (on the loop, first), then
 * api_tenants_destroy. */
int api_tenants_create(api_tenants_t **out, uv_loop_t *loop, const srv_settings_t *set,
                       bar_msg_t *msg);
/* Close the Redis limiter: pending checks are decided locally now. */
void api_tenants_close(api_tenants_t *t);
void api_tenants_destroy(api_tenants_t *t);

/* The shared (Redis) limiter, or NULL (no --redis, or closed). */
rlr_t *api_tenants_rlr(api_tenants_t *t);

/* Re-read the keys file: the new table replaces the old one only when the
 * whole file is valid. 0, or a negative code with msg (the old table stays).
 * Requests in flight keep the table they started with. */
int api_tenants_reload(api_tenants_t *t, bar_msg_t *msg);

/* Whether keys are checked (--keys or --api-key). */
int api_tenants_authed(const api_tenants_t *t);

/* Where the secret came from: "flag", "redis", "file" (next to --cache-file),
 * "process". */
const char *api_tenants_secret_source(const api_tenants_t *t);

/* The tenant of request h: 0 and *out (release it), or -1: a key is needed
 * and the one presented (if any) is unknown. */
int api_tenant_resolve(api_tenants_t *t, const http_req_t *h, api_tenant_t *out);

/* The tenant a key names, as api_tenant_resolve would with no sub-namespace
 * (the admin API's api_key=K). -1: unknown key on an authed server. */
int api_tenant_of_key(api_tenants_t *t, const char *key, size_t n, api_tenant_t *out);

/* The namespace id of tenant `name` and sub-namespace sub (n 0: none). */
uint64_t api_tenant_ns(const api_tenants_t *t, const char *name, const char *sub, size_t n);

/* Drop the reference; *tn stays readable but key is NULL. NULL-safe. */
void api_tenant_release(api_tenant_t *tn);

/* Copy (and take another reference). */
void api_tenant_copy(api_tenant_t *dst, const api_tenant_t *src);

/* Whether the tenant has any limit. */
int api_tenant_limited(const api_tenant_t *tn);

#endif
