/* api_obs.c — the API layer's observability endpoints and hooks: every
 * finished response into the metrics registry (api_on_response), the
 * per-model gauges of /metrics under vLLM's names, GET /dashboard (the
 * embedded page) and GET /v1/dashboard/snapshot (its JSON). Not for: the
 * registry itself and the page's bytes (src/obs/). */
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "backend/backend_upstream.h"
#include "obs/dashboard.h"
#include "util/timeutil.h"

void api_on_response(void *ud, const obs_trace_t *t)
{
    api_t *a = ud;
    obs_metrics_finish(a->metrics, t);
}

void api_obs_gauges(api_t *a, buf_t *b)
{
    static const char *const names[3] = {"barista_num_requests_running",
                                         "barista_num_requests_waiting",
                                         "barista_kv_cache_usage_perc"};
    static const char *const helps[3] = {
        "Sequences the model's engine is decoding now.",
        "Requests waiting for a slot of the model's engine.",
        "Fraction (0..1) of the model's paged KV blocks held by running sequences."};
    for (int k = 0; k < 3; k++) {
        obs_metrics_gauge_head(b, names[k], helps[k]);
        for (int i = 0; i < a->n_models; i++) {
            const api_model_t *m = &a->models[i];
            if (!m->bk || m->cfg.mode == MODEL_MODE_EMBEDDING) continue;
            bk_stats_t st;
            bk_stats(m->bk, &st);
            double v = k == 0               ? st.n_active
                       : k == 1             ? st.n_queued
                       : st.kv_blocks_total ? (double)st.kv_blocks_used / (double)st.kv_blocks_total
                                            : 0;
            obs_metrics_gauge_sample(b, names[k], "model_name", m->cfg.name, v);
        }
    }
}

void api_dashboard_page(api_t *a, srv_req_t *r)
{
    (void)a;
    size_t n;
    const char *p = obs_dashboard_page(&n);
    srv_respond(r, 200, "text/html; charset=utf-8", p, n,
                "Cache-Control: no-cache\r\nContent-Security-Policy: default-src 'self'; "
                "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:\r\n");
}

void api_dashboard_snapshot(api_t *a, srv_req_t *r)
{
    buf_t b = {0};
    buf_printf(&b, "{\"object\":\"barista.dashboard\",\"now\":%ld,", time_now_unix());
    obs_metrics_snapshot(a->metrics, time_now_unix(), &b);
    int running = 0, waiting = 0;
    double kv_used = 0, kv_total = 0;
    buf_puts(&b, ",\"engines\":[");
    int first = 1;
    for (int i = 0; i < a->n_models; i++) {
        const api_model_t *m = &a->models[i];
        if (!m->bk || m->cfg.mode == MODEL_MODE_EMBEDDING) continue;
        bk_stats_t st;
        bk_stats(m->bk, &st);
        running += st.n_active;
        waiting += st.n_queued;
        kv_used += st.kv_blocks_used;
        kv_total += st.kv_blocks_total;
        buf_puts(&b, first ? "{\"model\":" : ",{\"model\":");
        first = 0;
        oai_json_string(&b, m->cfg.name, strlen(m->cfg.name));
        buf_printf(&b, ",\"running\":%d,\"waiting\":%d,\"kv_usage\":%.4f}", st.n_active,
                   st.n_queued,
                   st.kv_blocks_total ? (double)st.kv_blocks_used / st.kv_blocks_total : 0.0);
    }
    /* per replica: the gateway's own counters (the /metrics series) */
    buf_puts(&b, "],\"replicas\":[");
    first = 1;
    for (int i = 0; i < a->n_models; i++) {
        const api_model_t *m = &a->models[i];
        bk_upstream_replica_t ur;
        for (int k = 0; m->bk && backend_upstream_replica(m->bk, k, &ur); k++) {
            buf_puts(&b, first ? "{\"name\":" : ",{\"name\":");
            first = 0;
            oai_json_string(&b, ur.base, strlen(ur.base));
            buf_puts(&b, ",\"model\":");
            oai_json_string(&b, m->cfg.name, strlen(m->cfg.name));
            buf_printf(&b, ",\"requests\":%llu,\"errors\":%llu,\"ejected\":%s}", ur.requests,
                       ur.errors, ur.ejected ? "true" : "false");
        }
    }
    srv_stats_t ss = {0};
    if (a->srv) srv_stats(a->srv, &ss);
    buf_printf(&b,
               "],\"gauges\":{\"running\":%d,\"waiting\":%d,\"kv_usage\":%.4f,"
               "\"generations\":%d,\"connections\":%d}}\n",
               running, waiting, kv_total > 0 ? kv_used / kv_total : 0.0, a->n_gens,
               ss.connections);
    srv_respond(r, 200, "application/json", b.p ? b.p : "", b.n, "Cache-Control: no-store\r\n");
    buf_free(&b);
}
