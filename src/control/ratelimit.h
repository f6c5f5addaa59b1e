/* ratelimit.h — per-tenant rate limits, OpenAI's way: requests per minute,
 * tokens per minute and requests in flight (docs/TENANTS.md).
 *
 * Each per-minute limit is a GCRA (generic cell rate algorithm, a leaky
 * bucket kept as one "theoretical arrival time"): a limit L per minute
 * admits a burst of up to L at once and then one every 60/L seconds. Tokens
 * are reserved at admission (the prompt's estimate + max_tokens) and the
 * reservation is corrected to the real count when the request ends.
 *
 * This is the local (per-replica) limiter: the state of one process. With
 * Redis, replicas share the same algorithm's state (ratelimit_redis.h, when
 * present) and fall back to this one when Redis is down or slow.
 *
 * Threads: the loop thread only. Not for: keys and tenants (tenant.h). */
#ifndef BARISTA_CONTROL_RATELIMIT_H
#define BARISTA_CONTROL_RATELIMIT_H

#include <stddef.h>

#include "control/tenant.h"

#define RL_WINDOW_S 60.0

typedef struct rl rl_t;             /* every tenant's state */
typedef struct rl_state rl_state_t; /* one tenant's; lives until rl_destroy */

/* What refused a request. */
typedef enum { RL_OK = 0, RL_REQUESTS, RL_TOKENS, RL_CONCURRENCY } rl_what_t;

/* An admission's verdict and the numbers the x-ratelimit-* headers carry
 * (after this request, when admitted). */
typedef struct {
    rl_what_t refused;               /* RL_OK: admitted */
    double retry_s;                  /* refused: when a retry can pass (seconds) */
    int too_large;                   /* refused: the request alone exceeds the limit */
    long long lim_req, rem_req;      /* lim 0: no requests limit */
    long long lim_tok, rem_tok;      /* lim 0: no tokens limit */
    double reset_req_s, reset_tok_s; /* until the bucket is full again */
} rl_verdict_t;

/* NULL on OOM. Ownership: rl_destroy. */
rl_t *rl_create(void);
void rl_destroy(rl_t *r);

/* The state of tenant `name` (created on first use; the same pointer for
 * the same name for the registry's life, across keys-file reloads). NULL on
 * OOM. */
rl_state_t *rl_state(rl_t *r, const char *name);

/* Admit one request costing `tokens` tokens at time now (monotonic
 * seconds) under lim: all of its limits pass or none is charged. Admitted:
 * one request and `tokens` tokens are charged and, when lim has a
 * max_concurrency, one slot taken (give it back with rl_settle under the same
 * lim). Returns v->refused. */
rl_what_t rl_admit(rl_state_t *s, const tenant_limits_t *lim, long long tokens, double now,
                   rl_verdict_t *v);

/* The header numbers as they stand, charging nothing. */
void rl_peek(const rl_state_t *s, const tenant_limits_t *lim, double now, rl_verdict_t *v);

/* An admitted request ended: free its concurrency slot (lim has a
 * max_concurrency) and correct the tokens charged from `reserved` to `used` (used < 0: keep the
 * reservation). */
void rl_settle(rl_state_t *s, const tenant_limits_t *lim, long long reserved, long long used,
               double now);

/* Requests in flight now (tests, metrics). */
int rl_inflight(const rl_state_t *s);

/* The x-ratelimit-{limit,remaining,reset}-{requests,tokens} header lines of
 * v (only the limits that are set), "\r\n"-terminated, into out. */
void rl_headers(const rl_verdict_t *v, char *out, size_t size);

/* A duration the way OpenAI's headers write it: "20ms", "1.5s", "6m0s". */
void rl_duration(double s, char *out, size_t size);

#endif
