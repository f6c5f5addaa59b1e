/* backend_upstream_int.h — what backend_upstream.c (jobs, attempts,
 * hedging, health checks, the vtable) shares with backend_upstream_metrics.c
 * (the group's /metrics series and the dashboard's replica view): the group
 * and its replicas. Internal to src/backend; everything on the loop thread. */
#ifndef BARISTA_BACKEND_BACKEND_UPSTREAM_INT_H
#define BARISTA_BACKEND_BACKEND_UPSTREAM_INT_H

#include "backend/backend_upstream.h"
#include "control/balance.h"
#include "upstream/upstream_http.h"

typedef struct ups ups_t;
typedef struct job job_t; /* backend_upstream.c */

typedef struct {
    ups_t *g;
    int idx;
    char base[MODEL_URL_MAX + 32]; /* api_base with /v1 */
    char model[MODEL_NAME_MAX];
    char *key; /* resolved API key, NULL: none (wiped at destroy) */
    double timeout;
    long long max_par; /* max_parallel_requests, 0: unknown */
    bal_rep_t h;       /* balancing and health (loop thread) */
    uphttp_xfer_t *hc; /* the active health check in flight, NULL: none */
} replica_t;

#define TTFB_RING 128 /* recent first-byte times kept for the hedge delay */
#define HEDGE_MIN_SAMPLES 20
#define HEDGE_MIN_DELAY 0.002 /* seconds */

struct ups {
    backend_t base;
    uv_loop_t *loop;
    uphttp_t *http;
    char name[MODEL_NAME_MAX];
    replica_t *reps;
    bal_rep_t **hs; /* hs[i] = &reps[i].h, for bal_pick */
    int n_reps;
    model_router_t rt;
    job_t *jobs;
    int n_jobs;
    uint64_t next_id;
    uint64_t rng;
    double retry_tokens;
    unsigned long long n_retries, n_budget_denied, n_hedges, n_hedge_wins;
    double svc_ewma;        /* seconds an attempt takes, start to end (EWMA, 0: none yet) */
    double tpot_ewma;       /* seconds between an answer's tokens (EWMA, 0: none yet) */
    double ttfb[TTFB_RING]; /* recent first-byte times, a ring */
    int n_ttfb;             /* samples taken (the ring holds the last TTFB_RING) */
    uv_timer_t kick;        /* deferred DONEs */
    uv_timer_t hedge;       /* the next hedge */
    uv_timer_t health;      /* active health checks */
    int open_handles;
    int closing;
};

#endif
