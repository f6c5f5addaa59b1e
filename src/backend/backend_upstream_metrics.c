/* backend_upstream_metrics.c — a replica group's /metrics series (requests,
 * errors, in-flight, ejection, EWMA latency, retries and hedges, the TTFB and
 * duration histograms per upstream) and the per-replica view the dashboard
 * reads. Reads the group's state only; on the loop thread. Not for: picking
 * or health decisions (src/control/balance.c). */
#include <stdio.h>
#include <string.h>

#include "backend/backend_upstream_int.h"
#include "util/timeutil.h"

/* ---- metrics ----------------------------------------------------------------------------- */

static void series(buf_t *out, const char *name, const char *type, const char *help,
                   backend_t *const *bs, const char *const *names, int n, int which)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    double now = time_now_mono();
    for (int k = 0; k < n; k++) {
        if (!backend_is_upstream(bs[k])) continue;
        const ups_t *g = (const ups_t *)bs[k];
        for (int i = 0; i < g->n_reps; i++) {
            const replica_t *r = &g->reps[i];
            double v = which == 0   ? (double)r->h.n_req
                       : which == 1 ? (double)r->h.n_err
                       : which == 2 ? (double)r->h.inflight
                       : which == 3 ? (r->h.until > now ? 1.0 : 0.0)
                       : which == 4 ? (double)r->h.n_ejections
                                    : r->h.ewma;
            buf_printf(out, "%s{model=\"%s\",upstream=\"%s\"} %.9g\n", name, names[k], r->base, v);
        }
    }
}

int backend_upstream_replica(backend_t *b, int i, bk_upstream_replica_t *out)
{
    if (!backend_is_upstream(b)) return 0;
    const ups_t *g = (const ups_t *)b;
    if (i < 0 || i >= g->n_reps) return 0;
    const replica_t *r = &g->reps[i];
    out->base = r->base;
    out->requests = r->h.n_req;
    out->errors = r->h.n_err;
    out->ejected = r->h.until > time_now_mono();
    return 1;
}

/* A histogram per replica (total: 1 the attempts' whole time, 0 their time
 * to first byte), in Prometheus text with src/obs/metrics.c's buckets. */
static void hist_series(buf_t *out, const char *name, const char *help, backend_t *const *bs,
                        const char *const *names, int n, int total)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int k = 0; k < n; k++) {
        if (!backend_is_upstream(bs[k])) continue;
        const ups_t *g = (const ups_t *)bs[k];
        for (int i = 0; i < g->n_reps; i++) {
            const replica_t *r = &g->reps[i];
            const bal_hist_t *h = total ? &r->h.total : &r->h.ttfb;
            for (int b = 0; b < BAL_HIST_N; b++)
                buf_printf(out, "%s_bucket{model=\"%s\",upstream=\"%s\",le=\"%g\"} %llu\n", name,
                           names[k], r->base, bal_hist_le[b], h->counts[b]);
            buf_printf(out,
                       "%s_bucket{model=\"%s\",upstream=\"%s\",le=\"+Inf\"} %llu\n"
                       "%s_sum{model=\"%s\",upstream=\"%s\"} %.6f\n"
                       "%s_count{model=\"%s\",upstream=\"%s\"} %llu\n",
                       name, names[k], r->base, h->n, name, names[k], r->base, h->sum, name,
                       names[k], r->base, h->n);
        }
    }
}

void backend_upstream_metrics(backend_t *const *bs, const char *const *names, int n, buf_t *out)
{
    int any = 0;
    for (int k = 0; k < n; k++)
        any |= backend_is_upstream(bs[k]);
    if (!any) return;
    series(out, "barista_upstream_requests_total", "counter",
           "Attempts sent to each upstream replica (retries included).", bs, names, n, 0);
    series(out, "barista_upstream_errors_total", "counter",
           "Attempts that failed on the replica (connect, timeout, 5xx, broken stream).", bs, names,
           n, 1);
    series(out, "barista_upstream_in_flight", "gauge", "Attempts running on each replica.", bs,
           names, n, 2);
    series(out, "barista_upstream_ejected", "gauge",
           "1 while the replica's circuit breaker keeps it out of rotation.", bs, names, n, 3);
    series(out, "barista_upstream_ejections_total", "counter",
           "Times the replica's circuit breaker opened.", bs, names, n, 4);
    series(out, "barista_upstream_latency_ewma_seconds", "gauge",
           "Peak-EWMA time to the first byte of each replica (what P2C compares).", bs, names, n,
           5);
    hist_series(out, "barista_upstream_ttfb_seconds",
                "Time from sending an attempt to the replica's first stream chunk.", bs, names, n,
                0);
    hist_series(out, "barista_upstream_duration_seconds",
                "Time from sending an attempt to its end (success or failure; aborted hedges "
                "and cancels not counted).",
                bs, names, n, 1);
    buf_printf(out, "# HELP barista_upstream_retries_total Attempts retried on another replica.\n"
                    "# TYPE barista_upstream_retries_total counter\n");
    for (int k = 0; k < n; k++)
        if (backend_is_upstream(bs[k]))
            buf_printf(out, "barista_upstream_retries_total{model=\"%s\"} %llu\n", names[k],
                       ((const ups_t *)bs[k])->n_retries);
    buf_printf(out, "# HELP barista_upstream_hedges_total Second attempts sent after the group's "
                    "p95 time to first byte (router_settings.hedging).\n"
                    "# TYPE barista_upstream_hedges_total counter\n");
    for (int k = 0; k < n; k++)
        if (backend_is_upstream(bs[k]))
            buf_printf(out, "barista_upstream_hedges_total{model=\"%s\"} %llu\n", names[k],
                       ((const ups_t *)bs[k])->n_hedges);
    buf_printf(out, "# HELP barista_upstream_hedge_wins_total Hedges that answered first (the "
                    "first attempt was cancelled).\n"
                    "# TYPE barista_upstream_hedge_wins_total counter\n");
    for (int k = 0; k < n; k++)
        if (backend_is_upstream(bs[k]))
            buf_printf(out, "barista_upstream_hedge_wins_total{model=\"%s\"} %llu\n", names[k],
                       ((const ups_t *)bs[k])->n_hedge_wins);
}
