/* metrics.c — counters, histograms, the dashboard's per-second window and
 * the Prometheus text output (see metrics.h). Fixed-size tables, sized once:
 * a label value past a family's room is counted under "other". */
#include "obs/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LBL 64      /* bytes of one label value (longer: cut) */
#define CF_MAX 256  /* series of one counter family */
#define HF_MAX 16   /* series of one histogram family */
#define NB_MAX 24   /* buckets of a histogram */
#define WIN 600     /* seconds the dashboard window keeps */
#define SAMPLES 256 /* per-second reservoir for the percentiles */
#define MODELS 16

/* ---- bucket sets (docs/METRICS.md) ---- */

/* Latencies from a cache hit (sub-ms) to a long generation (minutes). */
static const double LAT[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1,      2.5,   5,      10,    20,   30,    60,   120, 300};
/* Time to first token: vLLM's buckets plus sub-ms for cache hits. */
static const double TTFT[] = {0.0005, 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                              0.1,    0.25,  0.5,   0.75, 1,    2.5,  5,    7.5,
                              10,     20,    40,    80,   160,  640,  2560};
/* Time per output token: vLLM's. */
static const double TPOT[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                              0.3,   0.4,    0.5,   0.75, 1,     2.5,  5,     7.5, 10};
/* Tokens per request: 1-2-5 steps. */
static const double TOKS[] = {1,   2,    5,    10,   20,    50,    100,   200,
                              500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
/* Legacy (barista_ttft_seconds, barista_request_duration_seconds). */
static const double OLD[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

#define NB(a) ((int)(sizeof(a) / sizeof(a[0])))

typedef struct {
    char l[3][LBL];
    uint64_t n;
} cser_t;

typedef struct {
    const char *name, *help;
    const char *lname[3];
    int nl;
    cser_t s[CF_MAX];
    int n;
} cfam_t;

typedef struct {
    char l[LBL];
    uint64_t counts[NB_MAX]; /* per bucket (not cumulative) */
    uint64_t n;
    double sum;
} hser_t;

typedef struct {
    const char *name, *help, *lname; /* lname NULL: no label */
    const double *le;
    int nb;
    hser_t s[HF_MAX];
    int n;
} hfam_t;

typedef struct {
    long sec;
    uint32_t req, err, tok, hit_l1, hit_l2, hit_sem, miss, fallback, reject;
    float ttft[3], e2e[3]; /* p50, p95, p99 in seconds; -1: no sample */
} point_t;

typedef struct {
    char name[LBL];
    uint64_t req, err, tok_in, tok_out, ttft_n, e2e_n;
    double ttft_sum, e2e_sum;
} model_t;

enum {
    C_REQ,
    C_REQ_MODEL,
    C_CANCEL,
    C_REJECT,
    C_FALLBACK,
    N_CFAM,
};

enum {
    H_TTFT,
    H_TPOT,
    H_E2E,
    H_QUEUE,
    H_PREFILL,
    H_DECODE,
    H_PROMPT,
    H_GEN,
    H_OLD_TTFT,
    H_OLD_DUR,
    N_HFAM,
};

struct obs_metrics {
    cfam_t c[N_CFAM];
    hfam_t h[N_HFAM];
    uint64_t prompt_tokens, gen_tokens, cached_tokens;
    uint64_t hits[3], misses, requests, errors; /* generation requests: L1, L2, semantic */
    model_t models[MODELS];
    int n_models;
    /* the dashboard window: ring of finished seconds + the current one */
    point_t ring[WIN];
    int ring_head, ring_n;
    point_t cur;
    float ttft_s[SAMPLES], e2e_s[SAMPLES];
    uint32_t n_ttft, n_e2e; /* seen this second (reservoir) */
    uint64_t rng;
    /* the last request series counted: a repeat (the hit path) skips the
     * label comparisons */
    struct {
        const char *endpoint;
        int code, model, idx, idx_model;
    } last_req;
};

static void cfam_init(cfam_t *f, const char *name, const char *help, const char *l0, const char *l1,
                      const char *l2)
{
    f->name = name;
    f->help = help;
    f->lname[0] = l0;
    f->lname[1] = l1;
    f->lname[2] = l2;
    f->nl = l2 ? 3 : l1 ? 2 : l0 ? 1 : 0;
}

static void hfam_init(hfam_t *f, const char *name, const char *help, const char *lname,
                      const double *le, int nb)
{
    f->name = name;
    f->help = help;
    f->lname = lname;
    f->le = le;
    f->nb = nb;
    f->n = lname ? 0 : 1; /* an unlabelled family's one series shows (zeros) from the start */
}

obs_metrics_t *obs_metrics_create(void)
{
    obs_metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    cfam_init(&m->c[C_REQ], "barista_requests_total",
              "HTTP requests answered, by endpoint and status code (499: client went away).",
              "endpoint", "code", NULL);
    cfam_init(&m->c[C_REQ_MODEL], "barista_model_requests_total",
              "Generation requests answered, by model, endpoint and status code.", "model_name",
              "endpoint", "code");
    cfam_init(&m->c[C_CANCEL], "barista_cancelled_requests_total",
              "Generations cancelled before their end, by reason.", "reason", NULL, NULL);
    cfam_init(&m->c[C_REJECT], "barista_rejected_requests_total",
              "Requests refused by admission control or limits, by reason.", "reason", NULL, NULL);
    cfam_init(&m->c[C_FALLBACK], "barista_fallbacks_total",
              "Requests answered by a step of their model's fallback chain (or 504 when it was "
              "exhausted), by step.",
              "step", NULL, NULL);
    hfam_init(&m->h[H_TTFT], "barista_time_to_first_token_seconds",
              "Request read to the first token reaching the client (cache hits included).",
              "model_name", TTFT, NB(TTFT));
    hfam_init(&m->h[H_TPOT], "barista_time_per_output_token_seconds",
              "Mean time between a generated reply's tokens (one observation per request).",
              "model_name", TPOT, NB(TPOT));
    hfam_init(&m->h[H_E2E], "barista_e2e_request_latency_seconds",
              "Request read to the last byte of a generation request's reply.", "model_name", LAT,
              NB(LAT));
    hfam_init(&m->h[H_QUEUE], "barista_request_queue_time_seconds",
              "Time a generation waited for an engine slot.", "model_name", LAT, NB(LAT));
    hfam_init(&m->h[H_PREFILL], "barista_request_prefill_time_seconds",
              "Engine slot to the first token (prompt evaluation).", "model_name", LAT, NB(LAT));
    hfam_init(&m->h[H_DECODE], "barista_request_decode_time_seconds",
              "First token to the last token.", "model_name", LAT, NB(LAT));
    hfam_init(&m->h[H_PROMPT], "barista_request_prompt_tokens",
              "Prompt tokens per generation request.", "model_name", TOKS, NB(TOKS));
    hfam_init(&m->h[H_GEN], "barista_request_generation_tokens",
              "Generated tokens per generation request.", "model_name", TOKS, NB(TOKS));
    hfam_init(&m->h[H_OLD_TTFT], "barista_ttft_seconds",
              "Backend submit to the first generated token (deprecated: see "
              "barista_time_to_first_token_seconds).",
              NULL, OLD, NB(OLD));
    hfam_init(&m->h[H_OLD_DUR], "barista_request_duration_seconds",
              "Request read to the last byte of its response, by endpoint.", "endpoint", OLD,
              NB(OLD));
    m->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)m;
    return m;
}

void obs_metrics_destroy(obs_metrics_t *m)
{
    free(m);
}

/* ---- families ---- */

static int lbl_eq(const char *a, const char *b)
{
    return !strncmp(a, b ? b : "", LBL - 1);
}

static void lbl_set(char *dst, const char *s)
{
    snprintf(dst, LBL, "%s", s ? s : "");
}

/* Add v to the series with these labels; returns its index. */
static int cfam_add(cfam_t *f, const char *a, const char *b, const char *c, uint64_t v)
{
    const char *in[3] = {a, b, c};
    for (int i = 0; i < f->n; i++) {
        cser_t *s = &f->s[i];
        int k = 0;
        while (k < f->nl && lbl_eq(s->l[k], in[k]))
            k++;
        if (k == f->nl) {
            s->n += v;
            return i;
        }
    }
    if (f->n == CF_MAX) {
        /* full: the last series takes the rest */
        cser_t *s = &f->s[CF_MAX - 1];
        for (int k = 0; k < f->nl; k++)
            lbl_set(s->l[k], "other");
        s->n += v;
        return CF_MAX - 1;
    }
    cser_t *s = &f->s[f->n++];
    for (int k = 0; k < f->nl; k++)
        lbl_set(s->l[k], in[k]);
    s->n = v;
    return f->n - 1;
}

static void hser_add(const hfam_t *f, hser_t *s, double v)
{
    int b = 0;
    while (b < f->nb && v > f->le[b])
        b++;
    if (b < f->nb) s->counts[b]++;
    s->n++;
    s->sum += v;
}

/* The per-model families: series i is model slot i (model_of labels it). */
static void hfam_observe_at(hfam_t *f, int i, double v)
{
    if (v >= 0) hser_add(f, &f->s[i], v);
}

static void hfam_observe(hfam_t *f, const char *label, double v)
{
    if (!(v >= 0)) return; /* NaN, negative */
    hser_t *s = NULL;
    for (int i = 0; i < f->n && !s; i++)
        if (lbl_eq(f->s[i].l, label)) s = &f->s[i];
    if (!s) {
        if (f->n == HF_MAX) {
            s = &f->s[HF_MAX - 1];
            lbl_set(s->l, "other");
        } else {
            s = &f->s[f->n++];
            lbl_set(s->l, label);
        }
    }
    hser_add(f, s, v);
}

/* ---- the dashboard window ---- */

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void pct(float *s, uint32_t seen, float out[3])
{
    uint32_t n = seen < SAMPLES ? seen : SAMPLES;
    if (!n) {
        out[0] = out[1] = out[2] = -1;
        return;
    }
    qsort(s, n, sizeof *s, cmp_f);
    static const double q[3] = {0.50, 0.95, 0.99};
    for (int i = 0; i < 3; i++) {
        uint32_t k = (uint32_t)ceil(q[i] * n);
        out[i] = s[k ? k - 1 : 0];
    }
}

static void ring_push(obs_metrics_t *m, const point_t *p)
{
    m->ring[m->ring_head] = *p;
    m->ring_head = (m->ring_head + 1) % WIN;
    if (m->ring_n < WIN) m->ring_n++;
}

/* Move the current second to now (finishing the one before, and filling
 * quiet seconds with empty points). */
static void win_roll(obs_metrics_t *m, long now)
{
    if (m->cur.sec == now) return;
    if (m->cur.sec && now > m->cur.sec) {
        pct(m->ttft_s, m->n_ttft, m->cur.ttft);
        pct(m->e2e_s, m->n_e2e, m->cur.e2e);
        ring_push(m, &m->cur);
        long gap = now - m->cur.sec - 1;
        if (gap > WIN) gap = WIN;
        for (long i = gap; i > 0; i--) {
            point_t z = {0};
            z.sec = now - i;
            z.ttft[0] = z.ttft[1] = z.ttft[2] = z.e2e[0] = z.e2e[1] = z.e2e[2] = -1;
            ring_push(m, &z);
        }
    } else if (m->cur.sec && now < m->cur.sec) {
        return; /* the wall clock stepped back: keep adding to the current second */
    }
    memset(&m->cur, 0, sizeof m->cur);
    m->cur.sec = now;
    m->n_ttft = m->n_e2e = 0;
}

static uint32_t rnd(obs_metrics_t *m)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return (uint32_t)(m->rng >> 32);
}

static void sample(obs_metrics_t *m, float *s, uint32_t *seen, double v)
{
    uint32_t k = (*seen)++;
    if (k < SAMPLES)
        s[k] = (float)v;
    else {
        uint32_t j = rnd(m) % (k + 1);
        if (j < SAMPLES) s[j] = (float)v;
    }
}

/* The model's slot (also its series in the per-model histograms, H_TTFT ..
 * H_GEN); past MODELS, the last slot is "other". */
static int model_of(obs_metrics_t *m, const char *name)
{
    for (int i = 0; i < m->n_models; i++)
        if (lbl_eq(m->models[i].name, name)) return i;
    int i = m->n_models < MODELS ? m->n_models++ : MODELS - 1;
    const char *l = m->n_models == MODELS && i == MODELS - 1 ? "other" : name;
    lbl_set(m->models[i].name, l);
    for (int k = H_TTFT; k <= H_GEN; k++) {
        lbl_set(m->h[k].s[i].l, l);
        if (m->h[k].n < i + 1) m->h[k].n = i + 1;
    }
    return i;
}

/* ---- updates ---- */

void obs_metrics_request(obs_metrics_t *m, const char *endpoint, int code)
{
    char cs[12];
    snprintf(cs, sizeof cs, "%d", code);
    cfam_add(&m->c[C_REQ], endpoint, cs, "", 1);
}

static int is_generation(const char *ep)
{
    return ep && (!strcmp(ep, "chat_completions") || !strcmp(ep, "completions"));
}

void obs_metrics_finish(obs_metrics_t *m, const obs_trace_t *t)
{
    const char *ep = t->endpoint ? t->endpoint : "other";
    int code = t->status;
    if (code < 100 || code > 999) code = 0;
    int gen = is_generation(ep);
    int mi = gen ? model_of(m, t->model) : -1; /* one lookup for every per-model series */
    if (gen && m->last_req.endpoint == ep && m->last_req.code == code && m->last_req.model == mi) {
        m->c[C_REQ].s[m->last_req.idx].n++;
        m->c[C_REQ_MODEL].s[m->last_req.idx_model].n++;
    } else {
        char cs[4] = {(char)('0' + code / 100), (char)('0' + code / 10 % 10),
                      (char)('0' + code % 10), 0};
        int idx = cfam_add(&m->c[C_REQ], ep, cs, NULL, 1);
        if (gen) {
            m->last_req.endpoint = ep;
            m->last_req.code = code;
            m->last_req.model = mi;
            m->last_req.idx = idx;
            m->last_req.idx_model = cfam_add(&m->c[C_REQ_MODEL], m->models[mi].name, ep, cs, 1);
        }
    }
    if (!(t->have & (1u << OBS_TOTAL))) return; /* the server's own early errors */
    double total = t->dur[OBS_TOTAL];
    hfam_observe(&m->h[H_OLD_DUR], ep, total);
    if (!gen) return;
    int err = t->status >= 500 || t->status == 499;
    hfam_observe_at(&m->h[H_E2E], mi, total);
    if (t->have & (1u << OBS_TTFT)) hfam_observe_at(&m->h[H_TTFT], mi, t->dur[OBS_TTFT]);
    if (t->have & (1u << OBS_QUEUE)) hfam_observe_at(&m->h[H_QUEUE], mi, t->dur[OBS_QUEUE]);
    if (t->have & (1u << OBS_PREFILL)) hfam_observe_at(&m->h[H_PREFILL], mi, t->dur[OBS_PREFILL]);
    if (t->have & (1u << OBS_DECODE)) {
        hfam_observe_at(&m->h[H_DECODE], mi, t->dur[OBS_DECODE]);
        if (t->tokens_out > 1)
            hfam_observe_at(&m->h[H_TPOT], mi, t->dur[OBS_DECODE] / (t->tokens_out - 1));
    }
    if (t->tokens_in >= 0) {
        hfam_observe_at(&m->h[H_PROMPT], mi, t->tokens_in);
        hfam_observe_at(&m->h[H_GEN], mi, t->tokens_out);
    }
    /* the dashboard */
    win_roll(m, (long)time(NULL));
    point_t *p = &m->cur;
    p->req++;
    m->requests++;
    if (err) {
        p->err++;
        m->errors++;
    }
    if (t->tokens_out > 0) p->tok += (uint32_t)t->tokens_out;
    const char *c = t->cache;
    if (c && t->status == 200) {
        if (!strcmp(c, "L1")) {
            p->hit_l1++;
            m->hits[0]++;
        } else if (!strcmp(c, "semantic")) {
            p->hit_sem++;
            m->hits[2]++;
        } else if (!strcmp(c, "MISS") || !strcmp(c, "COALESCED")) {
            p->miss++;
            m->misses++;
        } else if (strcmp(c, "BYPASS")) {
            p->hit_l2++;
            m->hits[1]++;
        }
    }
    if (t->have & (1u << OBS_TTFT)) sample(m, m->ttft_s, &m->n_ttft, t->dur[OBS_TTFT]);
    sample(m, m->e2e_s, &m->n_e2e, total);
    model_t *x = &m->models[mi];
    x->req++;
    if (err) x->err++;
    if (t->tokens_in > 0) x->tok_in += (uint64_t)t->tokens_in;
    if (t->tokens_out > 0) x->tok_out += (uint64_t)t->tokens_out;
    if (t->have & (1u << OBS_TTFT)) {
        x->ttft_n++;
        x->ttft_sum += t->dur[OBS_TTFT];
    }
    x->e2e_n++;
    x->e2e_sum += total;
}

void obs_metrics_tokens(obs_metrics_t *m, int prompt, int generated, int cached)
{
    m->prompt_tokens += (uint64_t)(prompt > 0 ? prompt : 0);
    m->gen_tokens += (uint64_t)(generated > 0 ? generated : 0);
    m->cached_tokens += (uint64_t)(cached > 0 ? cached : 0);
}

void obs_metrics_rejected(obs_metrics_t *m, const char *reason)
{
    cfam_add(&m->c[C_REJECT], reason, NULL, NULL, 1);
    win_roll(m, (long)time(NULL));
    m->cur.reject++;
}

void obs_metrics_cancelled(obs_metrics_t *m, const char *reason)
{
    cfam_add(&m->c[C_CANCEL], reason, NULL, NULL, 1);
}

void obs_metrics_fallback(obs_metrics_t *m, const char *step)
{
    cfam_add(&m->c[C_FALLBACK], step, NULL, NULL, 1);
    win_roll(m, (long)time(NULL));
    m->cur.fallback++;
}

void obs_metrics_ttft(obs_metrics_t *m, double seconds)
{
    hfam_observe(&m->h[H_OLD_TTFT], NULL, seconds);
}

void obs_metrics_duration(obs_metrics_t *m, const char *endpoint, double seconds)
{
    hfam_observe(&m->h[H_OLD_DUR], endpoint, seconds);
}

/* ---- exposition ---- */

void obs_metrics_label(buf_t *o, const char *s)
{
    size_t run = 0, i = 0;
    for (; s && s[i]; i++) {
        char ch = s[i];
        if (ch != '\\' && ch != '"' && ch != '\n') continue;
        buf_append(o, s + run, i - run);
        buf_puts(o, ch == '\\' ? "\\\\" : ch == '"' ? "\\\"" : "\\n");
        run = i + 1;
    }
    if (s) buf_append(o, s + run, i - run);
}

static void head(buf_t *o, const char *name, const char *help, const char *type)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void cfam_render(buf_t *o, const cfam_t *f)
{
    head(o, f->name, f->help, "counter");
    for (int i = 0; i < f->n; i++) {
        buf_puts(o, f->name);
        buf_puts(o, "{");
        for (int k = 0; k < f->nl; k++) {
            buf_printf(o, "%s%s=\"", k ? "," : "", f->lname[k]);
            obs_metrics_label(o, f->s[i].l[k]);
            buf_puts(o, "\"");
        }
        buf_printf(o, "} %llu\n", (unsigned long long)f->s[i].n);
    }
}

static void hfam_render(buf_t *o, const hfam_t *f)
{
    head(o, f->name, f->help, "histogram");
    for (int i = 0; i < f->n; i++) {
        const hser_t *s = &f->s[i];
        buf_t lab = {0};
        if (f->lname) {
            buf_printf(&lab, "%s=\"", f->lname);
            obs_metrics_label(&lab, s->l);
            buf_puts(&lab, "\"");
        }
        const char *l = lab.p ? lab.p : "";
        uint64_t cum = 0;
        for (int b = 0; b < f->nb; b++) {
            cum += s->counts[b];
            buf_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", f->name, l, lab.n ? "," : "", f->le[b],
                       (unsigned long long)cum);
        }
        buf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, l, lab.n ? "," : "",
                   (unsigned long long)s->n);
        if (lab.n)
            buf_printf(o, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", f->name, l, s->sum, f->name, l,
                       (unsigned long long)s->n);
        else
            buf_printf(o, "%s_sum %.9g\n%s_count %llu\n", f->name, s->sum, f->name,
                       (unsigned long long)s->n);
        buf_free(&lab);
    }
}

int obs_metrics_render(const obs_metrics_t *m, buf_t *o)
{
    for (int i = 0; i < N_CFAM; i++)
        cfam_render(o, &m->c[i]);
    buf_printf(
        o,
        "# HELP barista_prompt_tokens_total Prompt tokens of finished generations.\n"
        "# TYPE barista_prompt_tokens_total counter\nbarista_prompt_tokens_total %llu\n"
        "# HELP barista_generation_tokens_total Tokens generated (vLLM's name).\n"
        "# TYPE barista_generation_tokens_total counter\nbarista_generation_tokens_total %llu\n"
        "# HELP barista_generated_tokens_total Tokens generated (deprecated: "
        "barista_generation_tokens_total).\n"
        "# TYPE barista_generated_tokens_total counter\nbarista_generated_tokens_total %llu\n"
        "# HELP barista_cached_prompt_tokens_total Prompt tokens reused from the prefix "
        "cache.\n# TYPE barista_cached_prompt_tokens_total counter\n"
        "barista_cached_prompt_tokens_total %llu\n",
        (unsigned long long)m->prompt_tokens, (unsigned long long)m->gen_tokens,
        (unsigned long long)m->gen_tokens, (unsigned long long)m->cached_tokens);
    for (int i = 0; i < N_HFAM; i++)
        hfam_render(o, &m->h[i]);
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

int obs_metrics_gauge_head(buf_t *out, const char *name, const char *help)
{
    head(out, name, help, "gauge");
    return 0;
}

int obs_metrics_gauge_sample(buf_t *out, const char *name, const char *label, const char *value,
                             double v)
{
    buf_printf(out, "%s{%s=\"", name, label);
    obs_metrics_label(out, value);
    return buf_printf(out, "\"} %.17g\n", v);
}

/* ---- the dashboard snapshot ---- */

static void jnum(buf_t *o, double v)
{
    if (v < 0 || !isfinite(v))
        buf_puts(o, "null");
    else
        buf_printf(o, "%.6g", v);
}

int obs_metrics_snapshot(obs_metrics_t *m, long now, buf_t *o)
{
    win_roll(m, now);
    /* the finished seconds, oldest first (the current one is still filling) */
    int n = m->ring_n;
    int start = (m->ring_head - n + WIN) % WIN;
    static const char *const series[] = {
        "t",       "requests",  "errors",     "tokens",   "hit_l1",   "hit_l2",   "hit_semantic",
        "miss",    "fallbacks", "rejections", "ttft_p50", "ttft_p95", "ttft_p99", "e2e_p50",
        "e2e_p95", "e2e_p99",
    };
    buf_printf(o, "\"window_s\":%d,\"series\":{", WIN);
    for (size_t k = 0; k < sizeof series / sizeof series[0]; k++) {
        buf_printf(o, "%s\"%s\":[", k ? "," : "", series[k]);
        for (int i = 0; i < n; i++) {
            const point_t *p = &m->ring[(start + i) % WIN];
            if (i) buf_puts(o, ",");
            switch (k) {
            case 0:
                buf_printf(o, "%ld", p->sec);
                break;
            case 1:
                buf_printf(o, "%u", p->req);
                break;
            case 2:
                buf_printf(o, "%u", p->err);
                break;
            case 3:
                buf_printf(o, "%u", p->tok);
                break;
            case 4:
                buf_printf(o, "%u", p->hit_l1);
                break;
            case 5:
                buf_printf(o, "%u", p->hit_l2);
                break;
            case 6:
                buf_printf(o, "%u", p->hit_sem);
                break;
            case 7:
                buf_printf(o, "%u", p->miss);
                break;
            case 8:
                buf_printf(o, "%u", p->fallback);
                break;
            case 9:
                buf_printf(o, "%u", p->reject);
                break;
            default: {
                int q = (int)(k - 10);
                jnum(o, q < 3 ? p->ttft[q] : p->e2e[q - 3]);
            }
            }
        }
        buf_puts(o, "]");
    }
    buf_printf(o,
               "},\"totals\":{\"requests\":%llu,\"errors\":%llu,\"prompt_tokens\":%llu,"
               "\"generation_tokens\":%llu,\"cache\":{\"L1\":%llu,\"L2\":%llu,\"semantic\":%llu,"
               "\"miss\":%llu}",
               (unsigned long long)m->requests, (unsigned long long)m->errors,
               (unsigned long long)m->prompt_tokens, (unsigned long long)m->gen_tokens,
               (unsigned long long)m->hits[0], (unsigned long long)m->hits[1],
               (unsigned long long)m->hits[2], (unsigned long long)m->misses);
    static const int by[] = {C_REJECT, C_FALLBACK, C_CANCEL};
    static const char *const by_name[] = {"rejections", "fallbacks", "cancellations"};
    for (int k = 0; k < 3; k++) {
        const cfam_t *f = &m->c[by[k]];
        buf_printf(o, ",\"%s\":{", by_name[k]);
        for (int i = 0; i < f->n; i++) {
            if (i) buf_puts(o, ",");
            buf_json_str(o, f->s[i].l[0], strlen(f->s[i].l[0]));
            buf_printf(o, ":%llu", (unsigned long long)f->s[i].n);
        }
        buf_puts(o, "}");
    }
    buf_puts(o, "},\"models\":[");
    for (int i = 0; i < m->n_models; i++) {
        const model_t *x = &m->models[i];
        buf_puts(o, i ? ",{\"name\":" : "{\"name\":");
        buf_json_str(o, x->name, strlen(x->name));
        buf_printf(o,
                   ",\"requests\":%llu,\"errors\":%llu,\"prompt_tokens\":%llu,"
                   "\"generation_tokens\":%llu,\"ttft_mean_s\":",
                   (unsigned long long)x->req, (unsigned long long)x->err,
                   (unsigned long long)x->tok_in, (unsigned long long)x->tok_out);
        jnum(o, x->ttft_n ? x->ttft_sum / (double)x->ttft_n : -1);
        buf_puts(o, ",\"e2e_mean_s\":");
        jnum(o, x->e2e_n ? x->e2e_sum / (double)x->e2e_n : -1);
        buf_puts(o, "}");
    }
    return buf_puts(o, "]");
}
