/* bench/sampler_cost.c — CPU time of one sampler_sample call on a vocabulary
 * of the default model's size, per sampling setting (built and run by
 * bench/sampling; prints one line per setting: "name us_per_call").
 *
 * The logits are synthetic (Gaussian, standard deviation 3, a few tokens well
 * above the rest, the shape of a language model's row) and copied before each
 * call, as the engine's are fresh each step; the copy's time is measured alone
 * and subtracted. CPU time of the calling thread, so other jobs on a shared
 * machine inflate it less than wall time. Not for: end-to-end speed
 * (bench/sampling measures that). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 49152, reps = argc > 2 ? atoi(argv[2]) : 300;
    if (n < 64 || reps < 1) {
        fprintf(stderr, "usage: sampler_cost [n_vocab >= 64] [reps]\n");
        return 2;
    }
    float *base = malloc((size_t)n * sizeof *base), *l = malloc((size_t)n * sizeof *l);
    sampler_t *s;
    if (!base || !l || sampler_create(&s, n)) return 1;
    unsigned st = 12345;
    for (int i = 0; i < n; i++) {
        double u = (rand_r(&st) + 1.0) / (RAND_MAX + 2.0), v = rand_r(&st) / (RAND_MAX + 1.0);
        base[i] = (float)(3.0 * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
    }
    for (int k = 0; k < 8; k++)
        base[rand_r(&st) % n] = 15.0f - (float)k * 0.7f;
    struct {
        const char *name;
        float t, top_p, min_p;
        int top_k, logprobs;
    } cf[] = {
        {"greedy", 0.0f, 1.0f, 0.0f, 0, 0},
        {"sampled", 0.9f, 1.0f, 0.0f, 0, 0},
        {"truncated", 0.9f, 0.9f, 0.05f, 40, 0},
        {"top_p_only", 0.9f, 0.9f, 0.0f, 0, 0},
        {"sampled_logprobs5", 0.9f, 1.0f, 0.0f, 0, 5},
    };
    double t0 = cpu_now();
    for (int r = 0; r < reps; r++)
        memcpy(l, base, (size_t)n * sizeof *l);
    double copy = (cpu_now() - t0) / reps;
    long sink = 0;
    for (size_t c = 0; c < sizeof cf / sizeof *cf; c++) {
        engine_sampling_t p = engine_sampling_default();
        p.temperature = cf[c].t;
        p.top_p = cf[c].top_p;
        p.min_p = cf[c].min_p;
        p.top_k = cf[c].top_k;
        p.has_seed = 1;
        p.seed = 1;
        sampler_reset(s, &p, NULL, 0);
        engine_top_t top[SAMPLER_TOP_MAX];
        float lp;
        t0 = cpu_now();
        for (int r = 0; r < reps; r++) {
            memcpy(l, base, (size_t)n * sizeof *l);
            sink += sampler_sample(s, l, cf[c].logprobs ? &lp : NULL, top, cf[c].logprobs);
        }
        double us = ((cpu_now() - t0) / reps - copy) * 1e6;
        printf("%s %.1f\n", cf[c].name, us);
    }
    fprintf(stderr, "(checksum %ld)\n", sink);
    sampler_destroy(s);
    free(base);
    free(l);
    return 0;
}
