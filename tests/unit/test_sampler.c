/* test_sampler.c — token selection: greedy, top-k, top-p, min-p, temperature,
 * penalties, seeds and logprobs, on hand-made logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/sampler.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_and_top_p_and_min_p),
        cmocka_unit_test(test_temperature_spreads),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
