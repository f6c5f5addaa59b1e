/* api_limit.h — a request's admission under its tenant's rate limits (rpm,
 * tpm, max_concurrency; docs/TENANTS.md), shared by chat/completions
 * (pipeline.c's limit stage) and embeddings (embed_job.c).
 *
 * The steps, in order: api_limit_slot (the concurrency cap as this
 * replica counts it), then api_limit_rate (rpm/tpm and, with Redis, the
 * concurrency cap across replicas: one Redis check when --redis is up, a
 * bounded wait; else this replica's limiter), api_limit_local when
 * Redis gave no answer in time; api_limit_headers on every answer and
 * api_limit_refuse for a 429; api_limit_settle when an admitted request
 * ends. The caller keeps the state (held, redis, reserved, the Redis op):
 * these functions hold none.
 *
 * Threads: the loop thread. Not for: the algorithms (control/ratelimit.c,
 * control/ratelimit_redis.c), who the tenant is (api_tenant.c). */
#ifndef BARISTA_API_API_LIMIT_H
#define BARISTA_API_API_LIMIT_H

#include "api/api_tenant.h"
#include "control/ratelimit.h"
#include "control/ratelimit_redis.h"
#include "server/server.h"

typedef struct api api_t;

/* Set the x-ratelimit-* headers of v on r (none when v has no limits; r
 * NULL: nothing). */
void api_limit_headers(srv_req_t *r, const rl_verdict_t *v);

/* The headers of t's limits as they stand (charging nothing), for answers
 * before admission (a 400, a 404). Nothing when t has no limits. */
void api_limit_peek_headers(srv_req_t *r, const api_tenant_t *t, double now);

/* Answer r with the 429 of verdict v in OpenAI's words (tokens: what the
 * request asked for) and count the rejection. r is answered (its user data
 * cleared first); NULL: only counted. */
void api_limit_refuse(api_t *a, srv_req_t *r, const api_tenant_t *t, const rl_verdict_t *v,
                      long long tokens);

/* Take a concurrency slot when t has max_concurrency. RL_OK (a slot is
 * held: give it back with api_limit_settle), or RL_CONCURRENCY with v the
 * tenant's numbers as they stand and the refusal (nothing held). */
rl_what_t api_limit_slot(const api_tenant_t *t, double now, rl_verdict_t *v);

/* Check and charge rpm/tpm for a request of `tokens` tokens (the slot is
 * already taken) and, through Redis, take a place under the tenant's
 * max_concurrency across replicas. 1: asked Redis (done(user, v or NULL)
 * comes later; *op cancels it); 0: decided now into v (v->refused; no limits:
 * always OK). */
int api_limit_rate(api_t *a, const api_tenant_t *t, long long tokens, double now, rlr_done_fn done,
                   void *user, rlr_op_t **op, rl_verdict_t *v);

/* Redis gave no answer (done's v NULL): this replica's limiter decides. */
void api_limit_local(const api_tenant_t *t, long long tokens, double now, rl_verdict_t *v);

/* An admitted request ended: give the slot back and correct the tokens
 * charged from `reserved` to `used` (used < 0: keep the reservation) — in
 * Redis when it was charged there (redis 1), else here. */
void api_limit_settle(api_t *a, const api_tenant_t *t, int redis, long long reserved,
                      long long used);

#endif
