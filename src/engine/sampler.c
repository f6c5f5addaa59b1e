/* sampler.c — token selection (see sampler.h).
 *
 * Order of operations, as llama.cpp's default chain: penalties, then top-k,
 * top-p, min-p, temperature, and a draw. Greedy (temperature 0) takes the
 * arg-max after penalties. Candidates live in one preallocated array of
 * (id, logit) pairs. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/timeutil.h"

#define REPEAT_WINDOW 64

typedef struct {
    int id;
    float v;
} cand_t;

struct sampler {
    int n_vocab;
    engine_sampling_t p;
    uint64_t rng[4];
    cand_t *cand; /* [n_vocab] */
    float *raw;   /* [n_vocab] unpenalised logits, when logprobs are asked */
    float lse;    /* log-sum-exp of raw */
    int *counts;  /* [n_vocab] generated-token counts */
    int *touched; /* ids with counts > 0, for O(generated) reset */
    int n_touched;
    int window[REPEAT_WINDOW];
    int n_window; /* tokens in window (ring) */
    int window_head;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_create(sampler_t **out, int n_vocab)
{
    *out = NULL;
    sampler_t *s = calloc(1, sizeof *s);
    if (!s) return BAR_ERR_NOMEM;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof(cand_t));
    s->counts = calloc((size_t)n_vocab, sizeof(int));
    s->raw = malloc((size_t)n_vocab * sizeof(float));
    s->touched = malloc((size_t)n_vocab * sizeof(int));
    if (!s->cand || !s->counts || !s->touched || !s->raw) {
        sampler_destroy(s);
        return BAR_ERR_NOMEM;
    }
    *out = s;
    return 0;
}

void sampler_destroy(sampler_t *s)
{
    if (!s) return;
    free(s->cand);
    free(s->counts);
    free(s->touched);
    free(s->raw);
    free(s);
}

static void window_push(sampler_t *s, int token)
{
    s->window[s->window_head] = token;
    s->window_head = (s->window_head + 1) % REPEAT_WINDOW;
    if (s->n_window < REPEAT_WINDOW) s->n_window++;
}

void sampler_reset(sampler_t *s, const engine_sampling_t *p, const int32_t *prompt, int n_prompt)
{
    s->p = *p;
    for (int i = 0; i < s->n_touched; i++)
        s->counts[s->touched[i]] = 0;
    s->n_touched = 0;
    s->n_window = 0;
    s->window_head = 0;
    int from = n_prompt > REPEAT_WINDOW ? n_prompt - REPEAT_WINDOW : 0;
    for (int i = from; i < n_prompt; i++)
        window_push(s, prompt[i]);
    uint64_t seed =
        p->has_seed ? p->seed : (uint64_t)(time_now_mono() * 1e9) ^ (uint64_t)(uintptr_t)s;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

void sampler_accept(sampler_t *s, int token)
{
    if (token < 0 || token >= s->n_vocab) return;
    if (s->counts[token]++ == 0) s->touched[s->n_touched++] = token;
    window_push(s, token);
}

static int cmp_cand_desc(const void *a, const void *b)
{
    float x = ((const cand_t *)a)->v, y = ((const cand_t *)b)->v;
    return (x < y) - (x > y);
}

/* Move the k largest candidates to the front, sorted descending. */
static void top_k_sort(cand_t *c, int n, int k)
{
    if (k >= n) {
        qsort(c, (size_t)n, sizeof *c, cmp_cand_desc);
        return;
    }
    /* simple selection into a heap-free buffer: partial quickselect */
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].v;
        int i = lo, j = hi;
        while (i <= j) {
            while (c[i].v > pivot)
                i++;
            while (c[j].v < pivot)
                j--;
            if (i <= j) {
                cand_t t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort(c, (size_t)k, sizeof *c, cmp_cand_desc);
}

static void apply_penalties(sampler_t *s, float *logits)
{
    const engine_sampling_t *p = &s->p;
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        for (int i = 0; i < s->n_touched; i++) {
            int id = s->touched[i];
            logits[id] -= (float)s->counts[id] * p->frequency_penalty + p->presence_penalty;
        }
    }
    if (p->repeat_penalty > 0.0f && p->repeat_penalty != 1.0f) {
        /* each distinct token in the window once */
        for (int i = 0; i < s->n_window; i++) {
            int id = s->window[i], seen = 0;
            for (int j = 0; j < i; j++)
                if (s->window[j] == id) {
                    seen = 1;
                    break;
                }
            if (seen || id < 0 || id >= s->n_vocab) continue;
            if (logits[id] > 0)
                logits[id] /= p->repeat_penalty;
            else
                logits[id] *= p->repeat_penalty;
        }
    }
}

/* Log-sum-exp of the raw logits into s->lse, and the n_top best tokens. */
static void report_logprobs(sampler_t *s, const float *logits, engine_top_t *top, int n_top)
{
    float mx = -INFINITY;
    for (int i = 0; i < s->n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int i = 0; i < s->n_vocab; i++)
        sum += exp((double)(logits[i] - mx));
    s->lse = mx + (float)log(sum);
    if (n_top > 0 && top) {
        for (int i = 0; i < s->n_vocab; i++) {
            s->cand[i].id = i;
            s->cand[i].v = logits[i];
        }
        top_k_sort(s->cand, s->n_vocab, n_top);
        for (int i = 0; i < n_top; i++) {
            top[i].token = s->cand[i].id;
            top[i].logprob = s->cand[i].v - s->lse;
        }
    }
}

int sampler_sample(sampler_t *s, float *logits, float *logprob, engine_top_t *top, int n_top)
{
    const engine_sampling_t *p = &s->p;
    int n = s->n_vocab;
    int chosen;
    if (logprob) { /* logprobs describe the model, before penalties */
        memcpy(s->raw, logits, (size_t)n * sizeof(float));
        report_logprobs(s, s->raw, top, n_top);
    }
    apply_penalties(s, logits);
    if (p->temperature <= 0.0f || p->top_k == 1) {
        chosen = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[chosen]) chosen = i;
    } else {
        float t = p->temperature;
        float mx = -INFINITY;
        for (int i = 0; i < n; i++)
            if (logits[i] > mx) mx = logits[i];
        /* Candidates within exp(-30) of the best: what is dropped weighs less
         * than n_vocab * 1e-13 of the mass, and sorting stays cheap. */
        float floor_v = mx - 30.0f * t;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (logits[i] >= floor_v) {
                s->cand[m].id = i;
                s->cand[m].v = logits[i];
                m++;
            }
        int k = p->top_k > 0 && p->top_k < m ? p->top_k : m;
        top_k_sort(s->cand, m, k);
        m = k;
        double sum = 0.0;
        for (int i = 0; i < m; i++) {
            float e = expf((s->cand[i].v - mx) / t);
            s->cand[i].v = e;
            sum += e;
        }
        if (p->min_p > 0.0f) { /* drop tokens below min_p x the best probability */
            float thr = p->min_p * s->cand[0].v;
            int mm = 1;
            while (mm < m && s->cand[mm].v >= thr)
                mm++;
            m = mm;
            sum = 0.0;
            for (int i = 0; i < m; i++)
                sum += s->cand[i].v;
        }
        if (p->top_p > 0.0f && p->top_p < 1.0f) { /* smallest prefix reaching top_p */
            double acc = 0.0, target = p->top_p * sum;
            int mm = 0;
            while (mm < m) {
                acc += s->cand[mm].v;
                mm++;
                if (acc >= target) break;
            }
            m = mm;
            sum = acc;
        }
        double r = rng_uniform(s->rng) * sum, acc = 0.0;
        chosen = s->cand[m - 1].id;
        for (int i = 0; i < m; i++) {
            acc += s->cand[i].v;
            if (r < acc) {
                chosen = s->cand[i].id;
                break;
            }
        }
    }
    if (logprob) *logprob = s->raw[chosen] - s->lse;
    return chosen;
}
