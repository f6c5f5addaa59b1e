/* metrics.h — the process metrics registry and its Prometheus text exposition.
 *
 * Counters and histograms that the HTTP/API layer updates on the I/O thread
 * (no locking: one loop owns it). Gauges that live elsewhere (engine queue
 * depth, open connections) are appended by the caller at scrape time with
 * obs_metrics_gauge. Names follow Prometheus conventions: barista_ prefix,
 * lower snake case, unit suffix, _total for counters; where vLLM has the same
 * metric, barista_ + vLLM's name (docs/METRICS.md has the mapping and the
 * buckets). Label values are escaped. The registry also keeps the last ten
 * minutes per second for the dashboard (obs_metrics_snapshot).
 * Not for: tracing or logs (trace.h, access_log.h). */
#ifndef BARISTA_OBS_METRICS_H
#define BARISTA_OBS_METRICS_H

#include <stdint.h>

#include "obs/trace.h"
#include "util/buf.h"

typedef struct obs_metrics obs_metrics_t;

/* Ownership: freed by obs_metrics_destroy. NULL on out-of-memory. */
obs_metrics_t *obs_metrics_create(void);
void obs_metrics_destroy(obs_metrics_t *m);

/* A response finished (its closed trace): barista_requests_total{endpoint,
 * code,model}, barista_request_duration_seconds{endpoint}, and for
 * generations the per-request histograms (e2e, ttft, time per output token,
 * queue, prefill, decode, prompt and generation tokens) and the dashboard's
 * per-second series. A trace without OBS_TOTAL (the server's own early
 * errors) only counts. */
void obs_metrics_finish(obs_metrics_t *m, const obs_trace_t *t);

/* barista_requests_total{endpoint,code}; endpoint is a static string. Kept
 * for callers without a trace; obs_metrics_finish counts too. */
void obs_metrics_request(obs_metrics_t *m, const char *endpoint, int code);

/* barista_prompt_tokens_total, barista_generated_tokens_total,
 * barista_cached_prompt_tokens_total. */
void obs_metrics_tokens(obs_metrics_t *m, int prompt, int generated, int cached);

/* barista_cancelled_requests_total{reason} ("disconnect", "shutdown", "slow_reader"). */
void obs_metrics_cancelled(obs_metrics_t *m, const char *reason);

/* barista_rejected_requests_total{reason} ("queue", "budget", "rate_limit"...). */
void obs_metrics_rejected(obs_metrics_t *m, const char *reason);

/* barista_fallbacks_total{step} ("model", "semantic", "static", "exhausted"):
 * fallback chains; step is a static string. */
void obs_metrics_fallback(obs_metrics_t *m, const char *step);

/* Legacy histograms (one release): barista_ttft_seconds (submit → first
 * token, from the backend), barista_request_duration_seconds{endpoint}. */
void obs_metrics_ttft(obs_metrics_t *m, double seconds);
void obs_metrics_duration(obs_metrics_t *m, const char *endpoint, double seconds);

/* Append the registry in Prometheus text format 0.0.4. */
int obs_metrics_render(const obs_metrics_t *m, buf_t *out);

/* Append one gauge (with # HELP/# TYPE lines). */
int obs_metrics_gauge(buf_t *out, const char *name, const char *help, double value);
/* Append one counter kept elsewhere (an engine's or the server's stats; the
 * name ends in _total). */
int obs_metrics_counter(buf_t *out, const char *name, const char *help, unsigned long long value);

/* A labelled gauge family: call _head once, then _sample per label value. */
int obs_metrics_gauge_head(buf_t *out, const char *name, const char *help);
int obs_metrics_gauge_sample(buf_t *out, const char *name, const char *label, const char *value,
                             double v);

/* Append a label value escaped for the text format (\\, \", \n). */
void obs_metrics_label(buf_t *out, const char *s);

/* The dashboard's view as JSON (docs/METRICS.md): totals, and per second
 * over the last ten minutes (now: unix seconds) requests, errors, tokens,
 * cache hits by tier, TTFT and e2e p50/p95/p99, fallbacks, rejections; then
 * per-model totals. The caller wraps it with its gauges and the replicas
 * (the gateway's own counters): this appends members without the enclosing
 * braces. */
int obs_metrics_snapshot(obs_metrics_t *m, long now, buf_t *out);

#endif
