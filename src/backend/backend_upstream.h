/* backend_upstream.h — OpenAI-compatible upstream servers as a backend
 * (backend.h): one replica group (every model_list entry with one
 * model_name) behind one backend_t.
 *
 * A job is forwarded as OpenAI JSON (chat messages or a prompt, the resolved
 * sampling values, always "stream": true so text arrives as it is made) to
 * one replica, chosen by the group's routing strategy (power of two choices
 * over peak-EWMA time-to-first-byte × (in-flight + 1) by default); the
 * upstream's SSE chunks come back as DELTA events, its usage and
 * finish_reason as DONE. A connect error, timeout, 429 or 5xx before the
 * first text was passed on is retried on another replica (at most
 * num_retries per request, and only while the group's retry budget — 20 % of
 * its requests plus a reserve of 10 — lasts). Each replica has a circuit
 * breaker: allowed_fails consecutive failures eject it for cooldown_time,
 * doubling on each ejection up to 8×; after the cooldown one trial request
 * (half-open; it goes first whatever its cost) closes or re-opens it. When
 * every replica is ejected the group routes anyway (a guess beats a certain
 * 503). With router_settings.hedging a job that has no text after the
 * group's p95 time to first byte gets a second attempt on another healthy
 * replica; the first to produce text wins, the other is aborted. A job with
 * bk_req_t.whole holds its text until the attempt succeeds, so it can be
 * retried after a failure half way. A replica at its rpm/tpm this minute
 * (counted by this process) is not picked; bk_stats reports rate_wait when
 * every replica is, and est_wait from the replicas' max_parallel_requests
 * (see up_stats and docs/GATEWAY.md for the formula).
 *
 * API keys are copied into the backend, sent only as the Authorization
 * header, and never appear in messages, logs or metrics.
 *
 * Not for: JSON request parsing from clients (src/api/), caching, the HTTP
 * transport (src/upstream/), replica health and picking (src/control/balance.c).
 * Not done: logprobs, n > 1,
 * tools and output constraints (refused with a 400 naming the field). */
#ifndef BARISTA_BACKEND_BACKEND_UPSTREAM_H
#define BARISTA_BACKEND_BACKEND_UPSTREAM_H

#include <uv.h>

#include "backend/backend.h"
#include "backend/model_list.h"
#include "util/buf.h"

/* Create the backend of group `entry` of list l (every l->ups[i] with
 * .entry == entry is a replica; l->router the group's settings). Keys named
 * "os.environ/NAME" are read from the environment now (an unset variable is
 * an error naming it). Nothing is contacted here: an unreachable replica
 * fails its first requests and is ejected. 0, or BAR_ERR_INVALID /
 * BAR_ERR_NOMEM with msg. l is borrowed for the call only. */
int backend_upstream_create(backend_t **out, uv_loop_t *loop, const model_list_t *l, int entry,
                            bar_msg_t *msg);

/* Whether b is an upstream backend. */
int backend_is_upstream(const backend_t *b);

/* Per-replica Prometheus series of n upstream backends (names[i]: the
 * model_name of bs[i]) appended to out: requests, errors, retries, in-flight,
 * ejected, peak-EWMA latency, histograms of time to first byte and of the
 * whole attempt. */
void backend_upstream_metrics(backend_t *const *bs, const char *const *names, int n, buf_t *out);

/* One replica's counters, for the dashboard. base: borrowed from b. */
typedef struct {
    const char *base; /* api_base with /v1: the replica's name in metrics and the access log */
    unsigned long long requests, errors;
    int ejected; /* the circuit breaker keeps it out of rotation now */
} bk_upstream_replica_t;

/* Replica i (0-based) of upstream backend b: 1 and *out, or 0 when i is past
 * the last (or b is not an upstream backend). */
int backend_upstream_replica(backend_t *b, int i, bk_upstream_replica_t *out);

#endif
