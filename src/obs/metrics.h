/* metrics.h — the process metrics registry and its Prometheus text exposition.
 *
 * Counters and histograms that the HTTP/API layer updates on the I/O thread
 * (no locking: one loop owns it). Gauges that live elsewhere (engine queue
 * depth, open connections) are appended by the caller at scrape time with
 * obs_metrics_gauge. Names follow Prometheus conventions: barista_ prefix,
 * lower snake case, unit suffix, _total for counters.
 * Not for: tracing or logs. */
#ifndef BARISTA_OBS_METRICS_H
#define BARISTA_OBS_METRICS_H

#include <stdint.h>

#include "util/buf.h"

typedef struct obs_metrics obs_metrics_t;

/* Ownership: freed by obs_metrics_destroy. NULL on out-of-memory. */
obs_metrics_t *obs_metrics_create(void);
void obs_metrics_destroy(obs_metrics_t *m);

/* barista_requests_total{endpoint,code}; endpoint is a static string. */
void obs_metrics_request(obs_metrics_t *m, const char *endpoint, int code);

/* barista_prompt_tokens_total, barista_generated_tokens_total,
 * barista_cached_prompt_tokens_total. */
void obs_metrics_tokens(obs_metrics_t *m, int prompt, int generated, int cached);

/* barista_cancelled_requests_total{reason} ("disconnect", "shutdown", "slow_reader"). */
void obs_metrics_cancelled(obs_metrics_t *m, const char *reason);

/* barista_rejected_requests_total{reason} ("queue", "budget"): admission. */
void obs_metrics_rejected(obs_metrics_t *m, const char *reason);

/* barista_fallbacks_total{step} ("model", "semantic", "static", "exhausted"):
 * fallback chains; step is a static string. */
void obs_metrics_fallback(obs_metrics_t *m, const char *step);

/* Histograms: barista_ttft_seconds, barista_request_duration_seconds{endpoint}. */
void obs_metrics_ttft(obs_metrics_t *m, double seconds);
void obs_metrics_duration(obs_metrics_t *m, const char *endpoint, double seconds);

/* Append the registry in Prometheus text format 0.0.4. */
int obs_metrics_render(const obs_metrics_t *m, buf_t *out);

/* Append one gauge (with # HELP/# TYPE lines). */
int obs_metrics_gauge(buf_t *out, const char *name, const char *help, double value);
/* Append one counter kept elsewhere (an engine's or the server's stats; the
 * name ends in _total). */
int obs_metrics_counter(buf_t *out, const char *name, const char *help, unsigned long long value);

#endif
