/* ratelimit_redis.h — the per-minute limits (rpm, tpm) and the concurrency
 * cap (max_concurrency) shared by every replica on one Redis: the same GCRA
 * as ratelimit.c, its state in Redis (`barista:rl:{TENANT}:req` / `:tok`,
 * theoretical arrival times in ms of Redis's own clock), and a sorted set of
 * leases, one per request in flight (`barista:rl:{TENANT}:conc`, each lease
 * expiring 10 s after its replica last renewed it, so a dead replica's
 * requests stop counting within 10 s), checked and charged by one Lua script
 * per request (EVALSHA, EVAL on NOSCRIPT) on this module's own hiredis
 * connection.
 *
 * A check waits at most `wait_ms`; when Redis is down, slow or the
 * connection has too much in flight, the caller decides with its local
 * limiter instead (docs/TENANTS.md says how far a tenant can exceed then).
 * The caller keeps its replica's own concurrency count too (ratelimit.h):
 * the place it takes there is what holds when Redis is down.
 *
 * Threads: the loop thread only. Not for: the response cache's Redis
 * (cache_redis.c). */
#ifndef BARISTA_CONTROL_RATELIMIT_REDIS_H
#define BARISTA_CONTROL_RATELIMIT_REDIS_H

#include <uv.h>

#include "control/ratelimit.h"

typedef struct rlr rlr_t;
typedef struct rlr_op rlr_op_t;

/* A check's answer: v from Redis, or NULL: decide locally (Redis down,
 * slow, or closing). Called once, on the loop, unless rlr_cancel ran. */
typedef void (*rlr_done_fn)(void *user, const rl_verdict_t *v);

/* Start connecting to url (redis://..., as --redis; reconnects by itself).
 * NULL with msg on a bad URL or OOM. Ownership: rlr_destroy. */
rlr_t *rlr_create(uv_loop_t *loop, const char *url, int wait_ms, bar_msg_t *msg);

/* Every pending check gets done(user, NULL) now; the memory goes with the
 * loop's close callbacks. NULL is fine. */
void rlr_destroy(rlr_t *r);

/* Check and charge one request of `tokens` tokens for tenant under lim's
 * rpm/tpm and, when lim has a max_concurrency, take a lease (admitted only
 * if every limit passes; give the lease back with rlr_release when the
 * request ends). 1: pending (done comes later; *op cancels it), 0: not
 * possible now (decide locally; done never comes). */
int rlr_admit(rlr_t *r, const char *tenant, const tenant_limits_t *lim, long long tokens,
              rlr_done_fn done, void *user, rlr_op_t **op);

/* The caller no longer wants the answer (done never comes). */
void rlr_cancel(rlr_op_t *op);

/* Correct the tokens charged for an ended request by delta (used - reserved);
 * fire and forget. */
void rlr_settle(rlr_t *r, const char *tenant, const tenant_limits_t *lim, long long delta);

/* A request of tenant admitted by Redis ended: give back one of this
 * replica's leases of tenant (none held: nothing). */
void rlr_release(rlr_t *r, const char *tenant);

typedef struct {
    int up;
    unsigned long long checks, answered, timeouts, local; /* local: decided without Redis */
} rlr_stats_t;
void rlr_stats(const rlr_t *r, rlr_stats_t *st);

/* The numbers of a reply of the check script (tests): {refused 0|1|2|3,
 * retry_ms, req_used_ms, tok_used_ms, too_large} → v. 0 or -1. */
int rlr_parse_reply(const long long *x, int n, const tenant_limits_t *lim, rl_verdict_t *v);

#endif
