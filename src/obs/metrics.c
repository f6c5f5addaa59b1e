/* metrics.c — counters/histograms and Prometheus text output (see metrics.h). */
#include "obs/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 128
#define N_BUCKETS 12

static const double buckets[N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5,   1,    2.5,   5,    10,  30};

typedef struct {
    const char *endpoint;
    int code;
    uint64_t n;
} req_series_t;

typedef struct {
    const char *label; /* NULL for the unlabeled histogram */
    uint64_t counts[N_BUCKETS];
    uint64_t n;
    double sum;
} hist_t;

typedef struct {
    const char *reason;
    uint64_t n;
} cancel_t;

struct obs_metrics {
    req_series_t req[MAX_SERIES];
    int n_req;
    uint64_t prompt_tokens, gen_tokens, cached_tokens;
    cancel_t cancel[8];
    int n_cancel;
    cancel_t reject[8];
    int n_reject;
    cancel_t fallback[8]; /* barista_fallbacks_total{step}: latency control */
    int n_fallback;
    hist_t ttft;
    hist_t dur[16];
    int n_dur;
};

obs_metrics_t *obs_metrics_create(void)
{
    return calloc(1, sizeof(obs_metrics_t));
}

void obs_metrics_destroy(obs_metrics_t *m)
{
    free(m);
}

void obs_metrics_request(obs_metrics_t *m, const char *endpoint, int code)
{
    for (int i = 0; i < m->n_req; i++)
        if (m->req[i].code == code && !strcmp(m->req[i].endpoint, endpoint)) {
            m->req[i].n++;
            return;
        }
    if (m->n_req == MAX_SERIES) return;
    m->req[m->n_req++] = (req_series_t){endpoint, code, 1};
}

void obs_metrics_tokens(obs_metrics_t *m, int prompt, int generated, int cached)
{
    m->prompt_tokens += (uint64_t)(prompt > 0 ? prompt : 0);
    m->gen_tokens += (uint64_t)(generated > 0 ? generated : 0);
    m->cached_tokens += (uint64_t)(cached > 0 ? cached : 0);
}

void obs_metrics_rejected(obs_metrics_t *m, const char *reason)
{
    for (int i = 0; i < m->n_reject; i++)
        if (!strcmp(m->reject[i].reason, reason)) {
            m->reject[i].n++;
            return;
        }
    if (m->n_reject < 8) m->reject[m->n_reject++] = (cancel_t){reason, 1};
}

void obs_metrics_fallback(obs_metrics_t *m, const char *step)
{
    for (int i = 0; i < m->n_fallback; i++)
        if (!strcmp(m->fallback[i].reason, step)) {
            m->fallback[i].n++;
            return;
        }
    if (m->n_fallback < 8) m->fallback[m->n_fallback++] = (cancel_t){step, 1};
}

void obs_metrics_cancelled(obs_metrics_t *m, const char *reason)
{
    for (int i = 0; i < m->n_cancel; i++)
        if (!strcmp(m->cancel[i].reason, reason)) {
            m->cancel[i].n++;
            return;
        }
    if (m->n_cancel < 8) m->cancel[m->n_cancel++] = (cancel_t){reason, 1};
}

static void hist_observe(hist_t *h, double v)
{
    for (int i = 0; i < N_BUCKETS; i++)
        if (v <= buckets[i]) h->counts[i]++;
    h->n++;
    h->sum += v;
}

void obs_metrics_ttft(obs_metrics_t *m, double seconds)
{
    hist_observe(&m->ttft, seconds);
}

void obs_metrics_duration(obs_metrics_t *m, const char *endpoint, double seconds)
{
    for (int i = 0; i < m->n_dur; i++)
        if (!strcmp(m->dur[i].label, endpoint)) {
            hist_observe(&m->dur[i], seconds);
            return;
        }
    if (m->n_dur == 16) return;
    m->dur[m->n_dur].label = endpoint;
    hist_observe(&m->dur[m->n_dur++], seconds);
}

static void hist_render(buf_t *o, const char *name, const hist_t *h, const char *lname)
{
    char lab[96] = "";
    if (h->label) snprintf(lab, sizeof lab, "%s=\"%s\",", lname, h->label);
    for (int i = 0; i < N_BUCKETS; i++)
        buf_printf(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, lab, buckets[i],
                   (unsigned long long)h->counts[i]);
    buf_printf(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, lab, (unsigned long long)h->n);
    if (h->label) {
        lab[strlen(lab) - 1] = '\0';
        buf_printf(o, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, lab, h->sum, name, lab,
                   (unsigned long long)h->n);
    } else {
        buf_printf(o, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->n);
    }
}

int obs_metrics_render(const obs_metrics_t *m, buf_t *o)
{
    buf_puts(o, "# HELP barista_requests_total HTTP requests answered, by endpoint and status "
                "code (499: client went away).\n# TYPE barista_requests_total counter\n");
    for (int i = 0; i < m->n_req; i++)
        buf_printf(o, "barista_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                   m->req[i].endpoint, m->req[i].code, (unsigned long long)m->req[i].n);
    buf_printf(
        o,
        "# HELP barista_prompt_tokens_total Prompt tokens of finished generations.\n"
        "# TYPE barista_prompt_tokens_total counter\nbarista_prompt_tokens_total %llu\n"
        "# HELP barista_generated_tokens_total Tokens generated.\n"
        "# TYPE barista_generated_tokens_total counter\nbarista_generated_tokens_total %llu\n"
        "# HELP barista_cached_prompt_tokens_total Prompt tokens reused from the prefix "
        "cache.\n# TYPE barista_cached_prompt_tokens_total counter\n"
        "barista_cached_prompt_tokens_total %llu\n",
        (unsigned long long)m->prompt_tokens, (unsigned long long)m->gen_tokens,
        (unsigned long long)m->cached_tokens);
    buf_puts(o, "# HELP barista_cancelled_requests_total Generations cancelled before their end, "
                "by reason.\n# TYPE barista_cancelled_requests_total counter\n");
    for (int i = 0; i < m->n_cancel; i++)
        buf_printf(o, "barista_cancelled_requests_total{reason=\"%s\"} %llu\n", m->cancel[i].reason,
                   (unsigned long long)m->cancel[i].n);
    buf_puts(o, "# HELP barista_rejected_requests_total Requests refused by admission control "
                "(503 overloaded), by reason.\n# TYPE barista_rejected_requests_total counter\n");
    for (int i = 0; i < m->n_reject; i++)
        buf_printf(o, "barista_rejected_requests_total{reason=\"%s\"} %llu\n", m->reject[i].reason,
                   (unsigned long long)m->reject[i].n);
    buf_puts(o, "# HELP barista_fallbacks_total Requests answered by a step of their model's "
                "fallback chain (or 504 when it was exhausted), by step.\n"
                "# TYPE barista_fallbacks_total counter\n");
    for (int i = 0; i < m->n_fallback; i++)
        buf_printf(o, "barista_fallbacks_total{step=\"%s\"} %llu\n", m->fallback[i].reason,
                   (unsigned long long)m->fallback[i].n);
    buf_puts(o, "# HELP barista_ttft_seconds Time from request to first generated token.\n"
                "# TYPE barista_ttft_seconds histogram\n");
    hist_render(o, "barista_ttft_seconds", &m->ttft, NULL);
    buf_puts(o, "# HELP barista_request_duration_seconds Time from request to the end of its "
                "response.\n# TYPE barista_request_duration_seconds histogram\n");
    for (int i = 0; i < m->n_dur; i++)
        hist_render(o, "barista_request_duration_seconds", &m->dur[i], "endpoint");
    return o->p ? 0 : -1;
}

static int one_sample(buf_t *out, const char *type, const char *name, const char *help,
                      double value)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name,
                      value);
}

int obs_metrics_gauge(buf_t *out, const char *name, const char *help, double value)
{
    return one_sample(out, "gauge", name, help, value);
}

int obs_metrics_counter(buf_t *out, const char *name, const char *help, unsigned long long value)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                      value);
}
