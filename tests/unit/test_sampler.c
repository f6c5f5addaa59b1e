/* test_sampler.c — token selection: greedy, top-k, top-p, min-p, temperature,
 * penalties, seeds and logprobs, on hand-made and random logits; the kept sets
 * against a naive sort-based reference, draw frequencies against the exact
 * distribution (chi-square), the seeded draws against the sort-based sampler
 * this one replaced, and the pool-parallel batch against one-by-one. Includes
 * sampler.c to reach its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/pool.h"
#include "engine/sampler.c"

#define V 16

static void fill(float *l)
{
    /* token i has logit i/4: token 15 is the most likely, 0 the least */
    for (int i = 0; i < V; i++)
        l[i] = (float)i / 4.0f;
}

static int draw(sampler_t *s, engine_sampling_t *p, int n, int *hist)
{
    int last = -1;
    sampler_reset(s, p, NULL, 0);
    for (int k = 0; k < n; k++) {
        float l[V];
        fill(l);
        last = sampler_sample(s, l, NULL, NULL, 0);
        assert_true(last >= 0 && last < V);
        if (hist) hist[last]++;
    }
    return last;
}

static void test_greedy(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.temperature = 0.0f;
    int hist[V] = {0};
    draw(s, &p, 50, hist);
    assert_int_equal(hist[15], 50);
    sampler_destroy(s);
}

static void test_top_k_and_top_p_and_min_p(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.has_seed = 1;
    p.seed = 1;
    p.top_k = 3;
    int hist[V] = {0};
    draw(s, &p, 2000, hist);
    for (int i = 0; i < 13; i++)
        assert_int_equal(hist[i], 0);
    assert_true(hist[13] > 0 && hist[14] > 0 && hist[15] > 0);
    assert_true(hist[15] > hist[13]);

    /* top-p 0.3: p(15) = 0.2x, p(14) ~ 0.17: the nucleus is {15, 14} */
    memset(hist, 0, sizeof hist);
    p.top_k = 0;
    p.top_p = 0.3f;
    draw(s, &p, 2000, hist);
    for (int i = 0; i < 14; i++)
        assert_int_equal(hist[i], 0);
    assert_true(hist[14] > 0 && hist[15] > 0);

    /* min-p 0.5: keeps tokens with p >= 0.5 * p(15): e^(-k/4) >= 0.5 -> k <= 2 */
    memset(hist, 0, sizeof hist);
    p.top_p = 1.0f;
    p.min_p = 0.5f;
    draw(s, &p, 2000, hist);
    for (int i = 0; i < 13; i++)
        assert_int_equal(hist[i], 0);
    assert_true(hist[13] > 0);
    sampler_destroy(s);
}

static void test_temperature_spreads(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.has_seed = 1;
    p.seed = 9;
    p.temperature = 0.1f; /* sharp: nearly always 15 */
    int cold[V] = {0}, hot[V] = {0};
    draw(s, &p, 1000, cold);
    p.temperature = 5.0f; /* flat: everything appears */
    draw(s, &p, 4000, hot);
    assert_true(cold[15] > 900);
    for (int i = 0; i < V; i++)
        assert_true(hot[i] > 0);
    sampler_destroy(s);
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.has_seed = 1;
    p.seed = 1234;
    p.temperature = 2.0f;
    int a[64], b[64];
    for (int round = 0; round < 2; round++) {
        sampler_reset(s, &p, NULL, 0);
        for (int k = 0; k < 64; k++) {
            float l[V];
            fill(l);
            (round ? b : a)[k] = sampler_sample(s, l, NULL, NULL, 0);
        }
    }
    assert_memory_equal(a, b, sizeof a);
    p.seed = 99;
    sampler_reset(s, &p, NULL, 0);
    int differ = 0;
    for (int k = 0; k < 64; k++) {
        float l[V];
        fill(l);
        differ += sampler_sample(s, l, NULL, NULL, 0) != a[k];
    }
    assert_true(differ > 0);
    sampler_destroy(s);
}

static void test_penalties(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.temperature = 0.0f;
    p.presence_penalty = 1.0f; /* 15 after use: 3.75 - 1 = 2.75 < 14's 3.5 */
    sampler_reset(s, &p, NULL, 0);
    float l[V];
    fill(l);
    int t = sampler_sample(s, l, NULL, NULL, 0);
    assert_int_equal(t, 15);
    sampler_accept(s, t);
    fill(l);
    assert_int_equal(sampler_sample(s, l, NULL, NULL, 0), 14);

    /* frequency penalty grows with the count */
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.2f;
    sampler_reset(s, &p, NULL, 0);
    for (int k = 0; k < 2; k++)
        sampler_accept(s, 15); /* 3.75 - 0.4 = 3.35 < 3.5 */
    fill(l);
    assert_int_equal(sampler_sample(s, l, NULL, NULL, 0), 14);

    /* repeat penalty over the prompt window: 3.75 / 2 < 3.5 */
    p.frequency_penalty = 0.0f;
    p.repeat_penalty = 2.0f;
    int32_t prompt[] = {15, 3};
    sampler_reset(s, &p, prompt, 2);
    fill(l);
    assert_int_equal(sampler_sample(s, l, NULL, NULL, 0), 14);
    sampler_destroy(s);
}

static void test_logprobs(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.temperature = 0.0f;
    p.presence_penalty = 1.0f; /* logprobs must describe the model, not the penalty */
    sampler_reset(s, &p, NULL, 0);
    float l[V];
    fill(l);
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(i / 4.0);
    float lp;
    engine_top_t top[3];
    int t = sampler_sample(s, l, &lp, top, 3);
    assert_int_equal(t, 15);
    assert_true(fabs(lp - (15 / 4.0 - log(z))) < 1e-4);
    assert_int_equal(top[0].token, 15);
    assert_int_equal(top[1].token, 14);
    assert_int_equal(top[2].token, 13);
    assert_true(fabs(top[1].logprob - (14 / 4.0 - log(z))) < 1e-4);
    sampler_destroy(s);
}

/* ---- random logits and a naive, sort-based reference ---- */

static uint64_t trng = 88172645463325252ull;
static double tuniform(void)
{
    trng ^= trng << 13;
    trng ^= trng >> 7;
    trng ^= trng << 17;
    return (double)(trng >> 11) * (1.0 / 9007199254740992.0);
}

/* Gaussian logits with standard deviation sd and a few spikes on top. */
static void random_logits(float *l, int n, float sd)
{
    for (int i = 0; i < n; i++) {
        double u = tuniform() + 1e-12, v = tuniform();
        l[i] = (float)(sd * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
    }
    for (int k = 0; k < 4; k++)
        l[(int)(tuniform() * n)] = 3.0f * sd + (float)k * sd * 0.3f;
}

static int cmp_ref(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->id - y->id;
}

/* What the sort-based sampler kept: ids in descending order into out (weights
 * into w), the mass into *sum; returns the count. */
static int ref_kept(const float *l, int n, const engine_sampling_t *p, cand_t *out, double *sum)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (l[i] > mx) mx = l[i];
    float t = p->temperature, floor_v = mx - 30.0f * t;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (l[i] >= floor_v) out[m++] = (cand_t){i, l[i]};
    qsort(out, (size_t)m, sizeof *out, cmp_ref);
    if (p->top_k > 0 && p->top_k < m) m = p->top_k;
    double s = 0.0;
    for (int i = 0; i < m; i++) {
        out[i].v = expf((out[i].v - mx) / t);
        s += out[i].v;
    }
    if (p->min_p > 0.0f) {
        float thr = p->min_p * out[0].v;
        int mm = 1;
        while (mm < m && out[mm].v >= thr)
            mm++;
        m = mm;
        s = 0.0;
        for (int i = 0; i < m; i++)
            s += out[i].v;
    }
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double acc = 0.0, target = p->top_p * s;
        int mm = 0;
        while (mm < m) {
            acc += out[mm].v;
            mm++;
            if (acc >= target) break;
        }
        m = mm;
        s = acc;
    }
    *sum = s;
    return m;
}

static int cmp_id(const void *a, const void *b)
{
    return ((const cand_t *)a)->id - ((const cand_t *)b)->id;
}

static const float TEMPS[] = {0.3f, 0.9f, 1.5f};
static const int TOPKS[] = {0, 5, 40, 4999};
static const float TOPPS[] = {1.0f, 0.5f, 0.9f, 0.99f};
static const float MINPS[] = {0.0f, 0.01f, 0.05f, 0.3f};
static const float SDS[] = {1.0f, 3.0f, 6.0f};
#define NR 5000
#define N_GRID (3 * 3 * 4 * 4 * 4)

/* Case i of the grid of every temperature, top-k, top-p and min-p: its
 * parameters into *p; returns the index into SDS of its logits (the cases of
 * one SDS entry are consecutive, N_GRID / 3 of them). */
static size_t grid_case(int i, engine_sampling_t *p)
{
    *p = engine_sampling_default();
    p->min_p = MINPS[i % 4];
    i /= 4;
    p->top_p = TOPPS[i % 4];
    i /= 4;
    p->top_k = TOPKS[i % 4];
    i /= 4;
    p->temperature = TEMPS[i % 3];
    return (size_t)(i / 3);
}

/* Every combination of temperature, top-k, top-p and min-p on random logits:
 * the tokens truncation keeps are exactly the reference's, with its mass. */
static void test_kept_set_matches_reference(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, NR), 0);
    float *l = malloc(NR * sizeof *l);
    cand_t *ref = malloc(NR * sizeof *ref), *got = malloc(NR * sizeof *got);
    assert_non_null(l);
    assert_non_null(ref);
    assert_non_null(got);
    int n_cases = 0;
    for (int i = 0; i < N_GRID; i++) {
        engine_sampling_t p;
        size_t sd = grid_case(i, &p);
        if (i % (N_GRID / 3) == 0) random_logits(l, NR, SDS[sd]);
        sampler_reset(s, &p, NULL, 0);
        double rsum;
        int rm = ref_kept(l, NR, &p, ref, &rsum);
        kept_t k;
        assert_int_equal(truncate_logits(s, l, &k), 0);
        assert_int_equal(k.m, rm);
        assert_true(fabs(k.sum - rsum) <= 1e-9 * rsum);
        memcpy(got, k.c, (size_t)k.m * sizeof *got);
        qsort(got, (size_t)rm, sizeof *got, cmp_id);
        qsort(ref, (size_t)rm, sizeof *ref, cmp_id);
        for (int j = 0; j < rm; j++) {
            assert_int_equal(got[j].id, ref[j].id);
            assert_true(got[j].v == ref[j].v);
        }
        /* the head is a prefix of the kept tokens */
        assert_true(k.nh <= k.m && k.mh <= k.sum * (1 + 1e-12));
        n_cases++;
    }
    assert_int_equal(n_cases, N_GRID);
    free(l);
    free(ref);
    free(got);
    sampler_destroy(s);
}

/* Draw n tokens from logits l[0..V) and compare the frequencies with the
 * exact distribution of the reference's kept set: nothing outside it, and a
 * chi-square over `bins` (token -> bin) below a bound that a wrong
 * distribution exceeds by far with this many draws (seeded, so stable). */
static void check_distribution(const float *l, int v, const engine_sampling_t *p, int n,
                               const int *bin_of, int n_bins)
{
    sampler_t *s;
    assert_int_equal(sampler_create(&s, v), 0);
    cand_t *ref = malloc((size_t)v * sizeof *ref);
    float *work = malloc((size_t)v * sizeof *work);
    int *hist = calloc((size_t)v, sizeof *hist);
    char *kept = calloc((size_t)v, 1);
    double *expect = calloc((size_t)n_bins, sizeof *expect),
           *obs = calloc((size_t)n_bins, sizeof *obs);
    assert_true(ref && work && hist && kept && expect && obs);
    double sum;
    int m = ref_kept(l, v, p, ref, &sum);
    for (int i = 0; i < m; i++) {
        kept[ref[i].id] = 1;
        expect[bin_of[ref[i].id]] += n * ref[i].v / sum;
    }
    sampler_reset(s, p, NULL, 0);
    for (int k = 0; k < n; k++) {
        memcpy(work, l, (size_t)v * sizeof *work);
        int t = sampler_sample(s, work, NULL, NULL, 0);
        assert_true(t >= 0 && t < v);
        hist[t]++;
    }
    for (int i = 0; i < v; i++) {
        if (!kept[i]) assert_int_equal(hist[i], 0);
        obs[bin_of[i]] += hist[i];
    }
    double chi2 = 0.0;
    int df = -1;
    for (int b = 0; b < n_bins; b++) {
        if (expect[b] <= 0.0) {
            assert_true(obs[b] == 0.0);
            continue;
        }
        assert_true(expect[b] >= 5.0); /* the test's own precondition */
        chi2 += (obs[b] - expect[b]) * (obs[b] - expect[b]) / expect[b];
        df++;
    }
    /* mean df, sd sqrt(2 df): allow ~6 sd */
    double bound = df + 6.0 * sqrt(2.0 * (df > 0 ? df : 1)) + 4.0;
    if (chi2 > bound) fail_msg("chi-square %.1f > %.1f (df %d)", chi2, bound, df);
    free(ref);
    free(work);
    free(hist);
    free(kept);
    free(expect);
    free(obs);
    sampler_destroy(s);
}

static void test_distribution_small(void **state)
{
    (void)state;
    float l[V];
    int bin[V];
    fill(l);
    for (int i = 0; i < V; i++)
        bin[i] = i;
    struct {
        float t, top_p, min_p;
        int top_k;
    } cf[] = {
        {0.8f, 1.0f, 0.0f, 0},  /* plain temperature */
        {1.3f, 1.0f, 0.0f, 5},  /* top-k */
        {0.8f, 0.6f, 0.0f, 0},  /* top-p */
        {0.8f, 1.0f, 0.3f, 0},  /* min-p */
        {1.0f, 0.8f, 0.1f, 8},  /* all three */
        {0.5f, 0.95f, 0.0f, 0}, /* top-p, sharp */
    };
    for (size_t i = 0; i < sizeof cf / sizeof *cf; i++) {
        engine_sampling_t p = engine_sampling_default();
        p.has_seed = 1;
        p.seed = 100 + i;
        p.temperature = cf[i].t;
        p.top_p = cf[i].top_p;
        p.min_p = cf[i].min_p;
        p.top_k = cf[i].top_k;
        check_distribution(l, V, &p, 20000, bin, V);
    }
}

/* A vocabulary whose tail (below the head list's span) holds a fifth of the
 * mass: draws and top-p nuclei that end in the tail take the long path. */
static void test_distribution_head_and_tail(void **state)
{
    (void)state;
    enum { NV = 2048 };
    static float l[NV];
    static int bin[NV];
    for (int i = 0; i < NV; i++) {
        if (i % 500 == 7) { /* five head tokens */
            l[i] = 10.0f + 0.25f * (float)(i / 500);
            bin[i] = i / 500;
        } else { /* the tail in 7 groups of equal logits */
            l[i] = 2.0f + 0.1f * (float)(i % 7);
            bin[i] = 5 + i % 7;
        }
    }
    float top_ps[] = {1.0f, 0.5f, 0.9f, 0.97f};
    for (size_t i = 0; i < sizeof top_ps / sizeof *top_ps; i++) {
        engine_sampling_t p = engine_sampling_default();
        p.has_seed = 1;
        p.seed = 7 + i;
        p.temperature = 1.0f;
        p.top_p = top_ps[i];
        check_distribution(l, NV, &p, 12000, bin, 12);
    }
}

/* The sort-based sampler this one replaced, draw for draw: same seed, same
 * tokens (the method and the weights are unchanged). */
static void test_same_draws_as_sort_based(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, NR), 0);
    float *l = malloc(NR * sizeof *l), *work = malloc(NR * sizeof *work);
    cand_t *ref = malloc(NR * sizeof *ref);
    assert_true(l && work && ref);
    int n_draws = 0;
    for (int i = 0; i < N_GRID; i++) {
        engine_sampling_t p;
        size_t sd = grid_case(i, &p);
        if (i % (N_GRID / 3) == 0) random_logits(l, NR, SDS[sd]);
        p.has_seed = 1;
        p.seed = 1000 + (uint64_t)i;
        sampler_reset(s, &p, NULL, 0);
        uint64_t rng[4], x = p.seed;
        for (int j = 0; j < 4; j++)
            rng[j] = splitmix64(&x);
        double sum;
        int m = ref_kept(l, NR, &p, ref, &sum);
        for (int k = 0; k < 8; k++) {
            double r = rng_uniform(rng) * sum, acc = 0.0;
            int want = ref[m - 1].id;
            for (int j = 0; j < m; j++) {
                acc += ref[j].v;
                if (r < acc) {
                    want = ref[j].id;
                    break;
                }
            }
            memcpy(work, l, NR * sizeof *work);
            assert_int_equal(sampler_sample(s, work, NULL, NULL, 0), want);
            n_draws++;
        }
    }
    assert_int_equal(n_draws, 8 * N_GRID);
    free(l);
    free(work);
    free(ref);
    sampler_destroy(s);
}

/* With logprobs asked, they are the log-softmax of the unmodified logits, and
 * asking does not change the draw. */
static void test_logprobs_are_log_softmax(void **state)
{
    (void)state;
    enum { NV = 1000, NT = 5 };
    static float l[NV], work[NV];
    random_logits(l, NV, 2.0f);
    double mx = -INFINITY, z = 0.0;
    for (int i = 0; i < NV; i++)
        if (l[i] > mx) mx = l[i];
    for (int i = 0; i < NV; i++)
        z += exp(l[i] - mx);
    double lse = mx + log(z);
    cand_t sorted[NV];
    for (int i = 0; i < NV; i++)
        sorted[i] = (cand_t){i, l[i]};
    qsort(sorted, NV, sizeof *sorted, cmp_ref);

    sampler_t *a, *b;
    assert_int_equal(sampler_create(&a, NV), 0);
    assert_int_equal(sampler_create(&b, NV), 0);
    engine_sampling_t p = engine_sampling_default();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.frequency_penalty = 0.5f; /* logprobs describe the model, not the penalty */
    p.has_seed = 1;
    p.seed = 5;
    sampler_reset(a, &p, NULL, 0);
    sampler_reset(b, &p, NULL, 0);
    for (int k = 0; k < 50; k++) {
        float lp;
        engine_top_t top[NT];
        memcpy(work, l, sizeof work);
        int t = sampler_sample(a, work, &lp, top, NT);
        memcpy(work, l, sizeof work);
        assert_int_equal(sampler_sample(b, work, NULL, NULL, 0), t);
        assert_true(fabs(lp - (l[t] - lse)) < 1e-4);
        for (int i = 0; i < NT; i++) {
            assert_int_equal(top[i].token, sorted[i].id);
            assert_true(fabs(top[i].logprob - (sorted[i].v - lse)) < 1e-4);
        }
        sampler_accept(a, t);
        sampler_accept(b, t);
    }
    sampler_destroy(a);
    sampler_destroy(b);
}

/* sampler_run on a pool of 3 threads gives every sequence the tokens and
 * logprobs it gets when sampled alone, step after step. */
static void test_batch_matches_serial(void **state)
{
    (void)state;
    enum { NV = 3000, NS = 7, STEPS = 12 };
    pool_t *pool = pool_create(3);
    assert_non_null(pool);
    sampler_t *one[NS], *many[NS];
    static float base[NS][NV], work[NS][NV];
    static sampler_job_t jobs[NS];
    for (int i = 0; i < NS; i++) {
        engine_sampling_t p = engine_sampling_default();
        p.has_seed = 1;
        p.seed = 40 + (uint64_t)i;
        p.temperature = i == 0 ? 0.0f : 0.9f;
        p.top_k = i == 2 ? 40 : 0;
        p.top_p = i == 3 ? 0.9f : 1.0f;
        p.min_p = i == 4 ? 0.05f : 0.0f;
        p.presence_penalty = i == 5 ? 0.7f : 0.0f;
        p.logprobs = i >= 5;
        p.top_logprobs = i == 6 ? 3 : 0;
        assert_int_equal(sampler_create(&one[i], NV), 0);
        assert_int_equal(sampler_create(&many[i], NV), 0);
        sampler_reset(one[i], &p, NULL, 0);
        sampler_reset(many[i], &p, NULL, 0);
        jobs[i].want_lp = p.logprobs;
        jobs[i].n_top = p.top_logprobs;
    }
    for (int step = 0; step < STEPS; step++) {
        for (int i = 0; i < NS; i++) {
            random_logits(base[i], NV, 2.0f);
            memcpy(work[i], base[i], sizeof base[i]);
            jobs[i].smp = many[i];
            jobs[i].logits = work[i];
            jobs[i].tag = i;
        }
        sampler_run(jobs, NS, pool);
        for (int i = 0; i < NS; i++) {
            float lp = 0.0f;
            engine_top_t top[3];
            int t =
                sampler_sample(one[i], base[i], jobs[i].want_lp ? &lp : NULL, top, jobs[i].n_top);
            assert_int_equal(jobs[i].tag, i);
            assert_int_equal(jobs[i].token, t);
            assert_true(jobs[i].logprob == lp);
            for (int k = 0; k < jobs[i].n_top; k++)
                assert_int_equal(jobs[i].top[k].token, top[k].token);
            sampler_accept(one[i], t);
            sampler_accept(many[i], t);
        }
    }
    for (int i = 0; i < NS; i++) {
        sampler_destroy(one[i]);
        sampler_destroy(many[i]);
    }
    pool_destroy(pool);
}

/* Greedy takes the first of equal maxima; sampling never picks a NaN and
 * falls back to the arg-max when nothing is finite. */
static void test_greedy_first_max_and_nonfinite(void **state)
{
    (void)state;
    sampler_t *s;
    assert_int_equal(sampler_create(&s, V), 0);
    engine_sampling_t p = engine_sampling_default();
    p.temperature = 0.0f;
    sampler_reset(s, &p, NULL, 0);
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = (i == 4 || i == 9) ? 2.0f : 0.0f;
    assert_int_equal(sampler_sample(s, l, NULL, NULL, 0), 4);

    p.temperature = 0.9f;
    p.has_seed = 1;
    p.seed = 3;
    sampler_reset(s, &p, NULL, 0);
    for (int k = 0; k < 200; k++) {
        for (int i = 0; i < V; i++)
            l[i] = (i % 3 == 0) ? NAN : (float)i / 8.0f;
        int t = sampler_sample(s, l, NULL, NULL, 0);
        assert_true(t % 3 != 0);
    }
    for (int i = 0; i < V; i++)
        l[i] = -INFINITY;
    assert_int_equal(sampler_sample(s, l, NULL, NULL, 0), 0);
    sampler_destroy(s);
}

/* The eight-lane arg-max is the plain scan's index on random rows with ties,
 * signed zeros, infinities and NaNs. */
static void test_argmax_equals_scan(void **state)
{
    (void)state;
    enum { NV = 1003 };
    static float x[NV];
    for (int round = 0; round < 400; round++) {
        for (int i = 0; i < NV; i++) {
            double u = tuniform();
            x[i] = (float)(int)(u * 20.0) - 10.0f; /* many ties */
            if (u < 0.01) x[i] = NAN;
            if (u > 0.995) x[i] = round % 2 ? 0.0f : -0.0f;
        }
        if (round % 5 == 0) x[(int)(tuniform() * NV)] = INFINITY;
        if (round % 7 == 0) x[0] = NAN;
        if (round % 11 == 0)
            for (int i = 0; i < NV; i++)
                x[i] = round % 2 ? -INFINITY : -0.0f;
        int want = 0;
        for (int i = 1; i < NV; i++)
            if (x[i] > x[want]) want = i;
        int n = round % 3 == 0 ? NV - (round % 13) : NV; /* tails shorter than a lane group */
        if (n != NV) {
            want = 0;
            for (int i = 1; i < n; i++)
                if (x[i] > x[want]) want = i;
        }
        assert_int_equal(argmax_of(x, n), want);
    }
}

/* A row of equal logits (a degenerate model) stays O(n log n) and orders
 * ties by id: top_p 0.5 keeps exactly the lower half of the ids. */
static void test_all_equal_logits(void **state)
{
    (void)state;
    enum { NV = 49152 };
    static float l[NV];
    sampler_t *s;
    assert_int_equal(sampler_create(&s, NV), 0);
    engine_sampling_t p = engine_sampling_default();
    p.has_seed = 1;
    p.seed = 21;
    p.temperature = 0.9f;
    p.top_p = 0.5f;
    sampler_reset(s, &p, NULL, 0);
    int lo = NV, hi = -1;
    for (int k = 0; k < 60; k++) {
        for (int i = 0; i < NV; i++)
            l[i] = 1.5f;
        int t = sampler_sample(s, l, NULL, NULL, 0);
        lo = t < lo ? t : lo;
        hi = t > hi ? t : hi;
    }
    assert_true(hi < NV / 2);
    assert_true(hi - lo > NV / 8); /* spread over the half, not stuck */
    sampler_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_and_top_p_and_min_p),
        cmocka_unit_test(test_temperature_spreads),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_kept_set_matches_reference),
        cmocka_unit_test(test_distribution_small),
        cmocka_unit_test(test_distribution_head_and_tail),
        cmocka_unit_test(test_same_draws_as_sort_based),
        cmocka_unit_test(test_logprobs_are_log_softmax),
        cmocka_unit_test(test_batch_matches_serial),
        cmocka_unit_test(test_greedy_first_max_and_nonfinite),
        cmocka_unit_test(test_argmax_equals_scan),
        cmocka_unit_test(test_all_equal_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
