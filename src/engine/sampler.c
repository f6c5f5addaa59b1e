/* sampler.c — token selection (see sampler.h).
 *
 * Order of operations, as before this file stopped sorting: penalties; then
 * greedy (temperature 0 or top_k 1) takes the arg-max, or else top-k,
 * temperature, min-p, top-p and one inverse-CDF draw over the survivors in
 * descending-probability order. Nothing sorts the vocabulary:
 *   top-k     a bounded heap in one pass over the logits (then k are sorted);
 *   min-p     a logit threshold from the maximum (min_p is relative to the
 *             best token), so only the tokens above it get a weight;
 *   otherwise one pass computes every weight and copies the few near the top
 *             into a head list; top-p and the draw are a weighted quickselect
 *             (wsel) on the head when the key falls inside it, which is the
 *             common case, and on the whole list otherwise.
 * Why inverse CDF and not Gumbel-max: Gumbel-max needs a random number and two
 * logarithms per token (three times the one expf here) and would change every
 * seeded output; the selection keeps the draw, the order and the weights of
 * the sort-based sampler, so a seed gives the same tokens as before (up to
 * the last-bit rounding of sums, see docs/ARCHITECTURE.md "Sampling"). Buffers are
 * preallocated (id, value) arrays. */
#include "engine/sampler.h"

#include <math.h>
#include <stdatomic.h>
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
    uint64_t seed; /* what rng was seeded from (choices derive theirs from it) */
    cand_t *cand;  /* [n_vocab] candidates */
    cand_t *head;  /* [n_vocab] the candidates near the best */
    float *raw;    /* [n_vocab] unpenalised logits, when logprobs are asked */
    float lse;     /* log-sum-exp of raw */
    int *counts;   /* [n_vocab] generated-token counts */
    int *touched;  /* ids with counts > 0, for O(generated) reset */
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
    s->head = malloc((size_t)n_vocab * sizeof(cand_t));
    s->counts = calloc((size_t)n_vocab, sizeof(int));
    s->raw = malloc((size_t)n_vocab * sizeof(float));
    s->touched = malloc((size_t)n_vocab * sizeof(int));
    if (!s->cand || !s->head || !s->counts || !s->touched || !s->raw) {
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
    free(s->head);
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
    s->seed = seed;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

void sampler_fork(sampler_t *dst, const sampler_t *src, const engine_sampling_t *p, int index)
{
    dst->p = *p;
    for (int i = 0; i < dst->n_touched; i++)
        dst->counts[dst->touched[i]] = 0;
    dst->n_touched = 0;
    for (int i = 0; i < src->n_touched; i++) {
        int id = src->touched[i];
        dst->counts[id] = src->counts[id];
        dst->touched[dst->n_touched++] = id;
    }
    memcpy(dst->window, src->window, sizeof dst->window);
    dst->n_window = src->n_window;
    dst->window_head = src->window_head;
    /* seed + index: choice i of a seeded request draws what a single
     * request with seed + i would (both start from the same logits) */
    dst->seed = src->seed + (uint64_t)index;
    uint64_t x = dst->seed;
    for (int i = 0; i < 4; i++)
        dst->rng[i] = splitmix64(&x);
}

void sampler_accept(sampler_t *s, int token)
{
    if (token < 0 || token >= s->n_vocab) return;
    if (s->counts[token]++ == 0) s->touched[s->n_touched++] = token;
    window_push(s, token);
}

/* a comes before b in descending-probability order (ties: lower id first) */
static inline int better(cand_t a, cand_t b)
{
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

static inline void cswap(cand_t *a, cand_t *b)
{
    cand_t t = *a;
    *a = *b;
    *b = t;
}

/* Min-heap on better(): the root is the worst of the kept. */
static void heap_down(cand_t *h, int k, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && better(h[w], h[l])) w = l;
        if (r < k && better(h[w], h[r])) w = r;
        if (w == i) return;
        cswap(&h[i], &h[w]);
        i = w;
    }
}

/* The k best of x[0..n) (0 < k <= n) into h[0..k), in descending order: one
 * pass with a bounded heap; a token replaces the root only when it beats the
 * k-th best so far, which after the first few thousand is rare. */
static void select_top_k(cand_t *h, const float *x, int n, int k)
{
    for (int i = 0; i < k; i++) {
        h[i].id = i;
        h[i].v = x[i];
    }
    for (int i = k / 2 - 1; i >= 0; i--)
        heap_down(h, k, i);
    float worst = h[0].v;
    for (int i = k; i < n; i++) {
        if (!(x[i] > worst)) continue; /* ties keep the lower id; NaN never enters */
        h[0].id = i;
        h[0].v = x[i];
        heap_down(h, k, 0);
        worst = h[0].v;
    }
    for (int end = k - 1; end > 0; end--) { /* heap sort: worst to the back */
        cswap(&h[0], &h[end]);
        heap_down(h, end, 0);
    }
}

/* Weighted selection. c[0..m) holds candidates with weights in .v, in any
 * order. Finds the position j of descending-probability order at which the
 * running mass first reaches `key` (incl: acc >= key, for top-p; otherwise
 * key < acc, for the draw), without sorting: a quickselect that keeps only the
 * side holding the key, so O(m) expected. On return c[0..j] are the j + 1 best
 * (not sorted among themselves), *acc their mass, and c[j] the token at that
 * position. When the key is never reached (rounding), j is the last (worst)
 * position, as in a walk over a sorted list. Equal weights are taken lower id
 * first. Should the median-of-three pivots degrade (more than WSEL_ROUNDS
 * partitions), the rest is sorted: O(m log m) at worst. m >= 1. */
#define WSEL_SMALL 24
#define WSEL_ROUNDS 64
static int cmp_better(const void *a, const void *b)
{
    return better(*(const cand_t *)b, *(const cand_t *)a) -
           better(*(const cand_t *)a, *(const cand_t *)b);
}

static int wsel(cand_t *c, int m, double key, int incl, double *acc)
{
    int lo = 0, hi = m, rounds = 0, sort = 1;
    double base = 0.0; /* mass of c[0..lo), all better than c[lo..hi) */
    while (hi - lo > WSEL_SMALL) {
        if (++rounds > WSEL_ROUNDS) {
            qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_better);
            sort = 0;
            break;
        }
        float x = c[lo].v, y = c[lo + (hi - lo) / 2].v, z = c[hi - 1].v;
        float pv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        /* [lo, a) > pv, [a, b) == pv, [b, hi) < pv */
        int a = lo, i = lo, b = hi;
        double mgt = 0.0, meq = 0.0;
        while (i < b) {
            float v = c[i].v;
            if (v > pv) {
                mgt += v;
                cswap(&c[a++], &c[i++]);
            } else if (v < pv) {
                cswap(&c[i], &c[--b]);
            } else {
                meq += v;
                i++;
            }
        }
        double g = base + mgt, e = g + meq;
        if (incl ? g >= key : key < g) {
            hi = a;
        } else if (incl ? e >= key : key < e) { /* inside the ties: by id */
            base = g;
            lo = a;
            hi = b;
            qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_better);
            sort = 0;
            break;
        } else {
            base = e;
            lo = b;
        }
    }
    for (int i = lo + 1; sort && i < hi; i++) { /* insertion sort of the small rest */
        cand_t t = c[i];
        int j = i;
        for (; j > lo && better(t, c[j - 1]); j--)
            c[j] = c[j - 1];
        c[j] = t;
    }
    double sum = base;
    for (int i = lo; i < hi; i++) {
        sum += c[i].v;
        if (incl ? sum >= key : key < sum) {
            *acc = sum;
            return i;
        }
    }
    *acc = sum;
    return hi > 0 ? hi - 1 : 0;
}
/* The largest of x[0..n) ignoring NaN (-inf when there is none): eight
 * independent lanes, which the compiler keeps in a vector register; a maximum
 * is exact, so the lane split changes nothing. */
static float max_of(const float *x, int n)
{
    float m[8];
    for (int j = 0; j < 8; j++)
        m[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++)
        m[0] = x[i] > m[0] ? x[i] : m[0];
    float r = m[0];
    for (int j = 1; j < 8; j++)
        r = m[j] > r ? m[j] : r;
    return r;
}

/* The first index of the maximum, as the plain scan `x[i] > x[best]` gives
 * it (greedy decoding must not change by a bit): a NaN at 0 wins, other NaNs
 * never do. */
static int argmax_of(const float *x, int n)
{
    if (isnan(x[0])) return 0;
    float mx = max_of(x, n);
    for (int i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
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

/* logit_bias: added after the penalties; -100 or below bans the token. */
static void apply_bias(const sampler_t *s, float *logits)
{
    const engine_sampling_t *p = &s->p;
    for (int i = 0; i < p->n_logit_bias; i++) {
        int id = p->logit_bias[i].token;
        if (id < 0 || id >= s->n_vocab) continue; /* engine_submit refuses these */
        float b = p->logit_bias[i].bias;
        logits[id] = b <= -100.0f ? -INFINITY : logits[id] + b;
    }
}

/* Log-sum-exp of the raw logits into s->lse, and the n_top best tokens. */
static void report_logprobs(sampler_t *s, const float *logits, engine_top_t *top, int n_top)
{
    float mx = max_of(logits, s->n_vocab);
    double sum = 0.0;
    for (int i = 0; i < s->n_vocab; i++)
        sum += exp((double)(logits[i] - mx));
    s->lse = mx + (float)log(sum);
    if (n_top > s->n_vocab) n_top = s->n_vocab;
    if (n_top > 0 && top) {
        select_top_k(s->cand, logits, s->n_vocab, n_top);
        for (int i = 0; i < n_top; i++) {
            top[i].token = s->cand[i].id;
            top[i].logprob = s->cand[i].v - s->lse;
        }
    }
}

/* What truncation keeps: candidates c[0..m) with their weights (exp((l -
 * max) / T)) and total mass `sum`; sorted (descending) or in any order. h[0..nh)
 * (mass mh) is a prefix of the descending order of the same tokens, copied
 * elsewhere, that a draw below mh is answered from (h = c when it is all). */
typedef struct {
    cand_t *c;
    int m;
    double sum;
    int sorted;
    cand_t *h;
    int nh;
    double mh;
} kept_t;

/* Sorted c[0..m): min-p and top-p by walking the list, the arithmetic of the
 * sort-based sampler step for step. */
static void truncate_sorted(const engine_sampling_t *p, kept_t *k)
{
    cand_t *c = k->c;
    int m = k->m;
    double sum = 0.0;
    for (int i = 0; i < m; i++)
        sum += c[i].v;
    if (p->min_p > 0.0f) { /* drop tokens below min_p x the best probability */
        float thr = p->min_p * c[0].v;
        int mm = 1;
        while (mm < m && c[mm].v >= thr)
            mm++;
        m = mm;
        sum = 0.0;
        for (int i = 0; i < m; i++)
            sum += c[i].v;
    }
    if (p->top_p > 0.0f && p->top_p < 1.0f) { /* smallest prefix reaching top_p */
        double acc = 0.0, target = p->top_p * sum;
        int mm = 0;
        while (mm < m) {
            acc += c[mm].v;
            mm++;
            if (acc >= target) break;
        }
        m = mm;
        sum = acc;
    }
    *k = (kept_t){.c = c, .m = m, .sum = sum, .sorted = 1, .h = c, .nh = m, .mh = sum};
}

/* Candidates within exp(-30) of the best: what is dropped weighs less than
 * n_vocab * 1e-13 of the mass. */
#define FLOOR_SPAN 30.0f
/* Tokens within exp(-HEAD_SPAN) of the best are also copied to a short list
 * while the weights are computed; most draws (and most top-p nuclei) end
 * inside it, and then the long list is never touched again. */
#define HEAD_SPAN 8.0f

/* Temperature, top-k, min-p and top-p: fills *k, or returns -1 when no logit
 * is finite. Uses s->cand and s->head. */
static int truncate_logits(sampler_t *s, const float *l, kept_t *k)
{
    const engine_sampling_t *p = &s->p;
    const int n = s->n_vocab;
    const float t = p->temperature;
    cand_t *c = s->cand;
    int m = 0;

    if (p->top_k > 0 && p->top_k < n) { /* bounded heap, then as before */
        select_top_k(c, l, n, p->top_k);
        float mx = c[0].v, floor_v = mx - FLOOR_SPAN * t;
        if (!isfinite(mx)) return -1; /* all -inf (or an inf) */
        while (m < p->top_k && c[m].v >= floor_v)
            m++;
        if (m == 0) return -1;
        for (int i = 0; i < m; i++)
            c[i].v = expf((c[i].v - mx) / t);
        k->c = c;
        k->m = m;
        truncate_sorted(p, k);
        return 0;
    }

    float mx = max_of(l, n);
    if (!isfinite(mx)) return -1;
    float floor_v = mx - FLOOR_SPAN * t;
    double sum = 0.0;
    cand_t *h = s->head;
    int nh = 0;
    double mh = 0.0;
    if (p->min_p > 0.0f) {
        /* min-p keeps w >= min_p (the best has w = 1): a logit threshold, so
         * only the few tokens above it need a weight. The margin covers the
         * rounding of the logit form; the exact test is the old one. */
        float lo = mx + t * (logf(p->min_p) - 0.01f);
        if (!(lo >= floor_v)) lo = floor_v;
        for (int i = 0; i < n; i++) {
            if (!(l[i] >= lo)) continue;
            float w = expf((l[i] - mx) / t);
            if (w >= p->min_p && l[i] >= floor_v) {
                c[m].id = i;
                c[m].v = w;
                m++;
                sum += w;
            }
        }
        h = c; /* everything kept is "head" */
        nh = m;
        mh = sum;
    } else {
        float head_v = mx - HEAD_SPAN * t;
        for (int i = 0; i < n; i++) {
            float v = l[i];
            if (!(v >= floor_v)) continue;
            float w = expf((v - mx) / t);
            c[m].id = i;
            c[m].v = w;
            m++;
            sum += w;
            if (v >= head_v) {
                h[nh].id = i;
                h[nh].v = w;
                nh++;
                mh += w;
            }
        }
    }
    if (m == 0) return -1;
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        /* the head is a prefix of the descending order: a target below its
         * mass is answered there */
        double target = p->top_p * sum, acc;
        if (target <= mh) {
            c = h;
            m = nh;
        }
        m = wsel(c, m, target, 1, &acc) + 1;
        sum = acc;
        if (c == h) {
            nh = m;
            mh = sum;
        }
    }
    *k = (kept_t){.c = c, .m = m, .sum = sum, .sorted = 0, .h = h, .nh = nh, .mh = mh};
    return 0;
}

/* One uniform draw, inverse CDF in descending order. */
static int draw_kept(sampler_t *s, kept_t *k)
{
    double r = rng_uniform(s->rng) * k->sum, acc = 0.0;
    if (k->sorted) {
        for (int i = 0; i < k->m; i++) {
            acc += k->c[i].v;
            if (r < acc) return k->c[i].id;
        }
        return k->c[k->m - 1].id;
    }
    if (r < k->mh) return k->h[wsel(k->h, k->nh, r, 0, &acc)].id;
    return k->c[wsel(k->c, k->m, r, 0, &acc)].id;
}

int sampler_sample(sampler_t *s, float *logits, float *logprob, engine_top_t *top, int n_top)
{
    const engine_sampling_t *p = &s->p;
    int n = s->n_vocab;
    int chosen = -1;
    if (logprob) { /* logprobs describe the model, before penalties */
        memcpy(s->raw, logits, (size_t)n * sizeof(float));
        report_logprobs(s, s->raw, top, n_top);
    }
    apply_penalties(s, logits);
    if (p->n_logit_bias > 0) apply_bias(s, logits);
    kept_t k;
    if (p->temperature > 0.0f && p->top_k != 1 && truncate_logits(s, logits, &k) == 0)
        chosen = draw_kept(s, &k);
    if (chosen < 0) { /* greedy, or nothing finite to sample from */
        chosen = argmax_of(logits, n);
    }
    if (logprob) *logprob = s->raw[chosen] - s->lse;
    return chosen;
}

static void run_job(sampler_job_t *j)
{
    int n_top = j->n_top < 0 ? 0 : (j->n_top > SAMPLER_TOP_MAX ? SAMPLER_TOP_MAX : j->n_top);
    j->logprob = 0.0f;
    if (j->constrain) j->constrain(j->constrain_ctx, j->logits);
    j->token = sampler_sample(j->smp, j->logits, j->want_lp ? &j->logprob : NULL, j->top, n_top);
}

typedef struct {
    sampler_job_t *jobs;
    int n;
    atomic_int next;
} batch_t;

/* Threads take jobs one at a time: greedy and sampled sequences cost
 * different amounts, and a sequence's result does not depend on who runs it. */
static void batch_fn(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    batch_t *b = ctx;
    for (;;) {
        int k = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed);
        if (k >= b->n) return;
        run_job(&b->jobs[k]);
    }
}

void sampler_run(sampler_job_t *jobs, int n, pool_t *pool)
{
    if (n > 1 && pool && pool_size(pool) > 1) {
        batch_t b = {jobs, n, 0};
        pool_run(pool, batch_fn, &b);
        return;
    }
    for (int k = 0; k < n; k++)
        run_job(&jobs[k]);
}
