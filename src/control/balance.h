/* balance.h — choosing a replica of a group: per-replica health (peak-EWMA
 * latency, in-flight count, consecutive failures, circuit breaker with a
 * doubling cooldown and a half-open trial), its rpm/tpm limits (counted per
 * minute in this process), latency histograms, and the routing strategies
 * over it.
 * Pure state and arithmetic: no I/O, no clock of its own (callers pass `now`,
 * monotonic seconds), loop thread only.
 *
 * Not for: transfers, retries or hedging (src/backend/backend_upstream.c). */
#ifndef BARISTA_CONTROL_BALANCE_H
#define BARISTA_CONTROL_BALANCE_H

#include <stdint.h>

#include "backend/model_list.h"

#define BAL_MAX_REPS 64        /* replicas bal_pick looks at */
#define BAL_EJECT_MAX_FACTOR 8 /* cooldowns grow ×2 per ejection up to this */
#define BAL_FAIL_PENALTY 1.0   /* seconds: a failed attempt counts as an answer this slow */

#define BAL_HIST_N 12 /* histogram buckets: the same bounds as src/obs/metrics.c's */
extern const double bal_hist_le[BAL_HIST_N];

/* A Prometheus histogram of seconds (cumulative buckets over bal_hist_le). */
typedef struct {
    unsigned long long counts[BAL_HIST_N], n;
    double sum;
} bal_hist_t;

void bal_hist_observe(bal_hist_t *h, double seconds);

/* One replica's health. Zero it, then set weight (> 0) and rpm/tpm. */
typedef struct {
    double weight; /* simple-shuffle's weight */
    double ewma;   /* peak-EWMA latency, seconds */
    double t_ewma; /* when it was last updated, 0: never */
    int inflight;  /* attempts running */
    int fails;     /* consecutive failures */
    int n_eject;   /* ejections since the last success */
    double until;  /* ejected until (mono seconds); 0: closed */
    int probing;   /* the half-open trial is out */
    unsigned long long n_req, n_err, n_ok, n_ejections;
    /* litellm_params rpm / tpm: requests and tokens (prompt + completion)
     * per minute, 0: no limit. Counted by this process only, in minutes of
     * the monotonic clock (floor(now / 60)). */
    long long rpm, tpm;
    long long minute, min_req, min_tok; /* the minute counted and its counts */
    bal_hist_t ttfb, total;             /* attempts' time to first byte, to the end */
} bal_rep_t;

/* Whether r reached its rpm or tpm in the minute of `now`. */
int bal_over_limit(const bal_rep_t *r, double now);

/* Count one request sent to r (n_req 1) or tokens it used (n_tok) in the
 * minute of `now`. */
void bal_count(bal_rep_t *r, int n_req, long long n_tok, double now);

/* Seconds until the next minute, when rpm/tpm counts start again. */
double bal_limit_reset(double now);

/* Whether r may take a request now (closed, or its cooldown over and no trial out). */
int bal_eligible(const bal_rep_t *r, double now);

/* P2C's load measure: the latency estimate, decayed while no sample comes
 * (as tower's PeakEwma does, so a replica that was slow once is tried
 * again), times the work it already has. */
double bal_cost(const bal_rep_t *r, double now);

/* Feed one latency sample (seconds). */
void bal_observe(bal_rep_t *r, double rtt, double now);

/* A success: closes the breaker. */
void bal_ok(bal_rep_t *r);

/* A failure: counts it, and after allowed_fails in a row (or any failure of
 * the half-open trial) ejects r for cooldown × 2^(ejections-1), at most ×8.
 * Returns the ejection's length in seconds, 0 when r was not ejected. */
double bal_fail(bal_rep_t *r, double now, int allowed_fails, double cooldown);

/* The replica (index into reps[0..n)) for an attempt, among those whose bit in
 * `tried` is clear (indexes >= 32 are never marked) and that are under their
 * rpm/tpm this minute; -1 when none is left.
 * A replica whose cooldown ended goes first; when all are ejected, the one
 * back soonest. Otherwise by strategy: weighted random, fewest in flight, or
 * power of two choices over peak-EWMA × (in-flight + 1). rng: xorshift state. */
int bal_pick(bal_rep_t *const *reps, int n, unsigned tried, model_route_t strategy, uint64_t *rng,
             double now);

#endif
