/* bench/cache_policy.c — hit ratio of the L1's eviction policies (LRU,
 * S3-FIFO, and S3-FIFO with the paper's promotion threshold of 2 hits) on
 * Zipf-distributed request traces, replayed through the real cache_l1 with
 * real cache_entry_t values (so the byte accounting is the production one).
 *
 * Trace: --requests requests over --keys keys; key popularity Zipf(alpha)
 * (rank r has weight 1/r^alpha), ranks shuffled onto key ids; each key's
 * value is 200..4000 bytes (uniform, fixed per key). Budgets are percentages
 * of the working set (the sum of every key's charged size). Each request is
 * a get; a miss builds the entry and puts it (cold start included, no TTL).
 * Deterministic for a given --seed. Built and run by bench/cache-policy. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/cache_l1.h"

static uint64_t sm_state;
static uint64_t splitmix(void)
{
    uint64_t z = (sm_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(void)
{
    return (double)(splitmix() >> 11) * (1.0 / 9007199254740992.0);
}

static size_t value_size(uint32_t id, uint64_t seed)
{
    uint64_t save = sm_state;
    sm_state = seed ^ ((uint64_t)id * 0xd1b54a32d192ed03ull);
    size_t s = 200 + (size_t)(splitmix() % 3801);
    sm_state = save;
    return s;
}

static cache_key_t key_of(uint32_t id)
{
    cache_key_t k;
    uint64_t save = sm_state;
    sm_state = id;
    uint64_t a = splitmix(), b = splitmix();
    sm_state = save;
    memcpy(k.b, &a, 8);
    memcpy(k.b + 8, &b, 8);
    return k;
}

static char *text_buf;

static cache_entry_t *make_entry(uint32_t id, size_t size)
{
    cache_rec_t *r = cache_rec_create(0);
    cache_rec_add(r, text_buf, size, NULL, 0);
    cache_meta_t m = {0};
    m.key = key_of(id);
    m.model = "smollm2-135m";
    m.finish = CACHE_FINISH_STOP;
    m.completion_tokens = (int)(size / 4);
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    return e;
}

/* trace of n key ids, Zipf(alpha) over k keys */
static uint32_t *make_trace(size_t n, uint32_t k, double alpha, uint64_t seed)
{
    double *cdf = malloc(k * sizeof *cdf);
    uint32_t *perm = malloc(k * sizeof *perm);
    uint32_t *t = malloc(n * sizeof *t);
    if (!cdf || !perm || !t) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    double sum = 0;
    for (uint32_t r = 0; r < k; r++) {
        sum += 1.0 / pow((double)(r + 1), alpha);
        cdf[r] = sum;
    }
    sm_state = seed;
    for (uint32_t i = 0; i < k; i++)
        perm[i] = i;
    for (uint32_t i = k - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(splitmix() % (i + 1));
        uint32_t x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    for (size_t i = 0; i < n; i++) {
        double u = uniform() * sum;
        uint32_t lo = 0, hi = k - 1;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        t[i] = perm[lo];
    }
    free(cdf);
    free(perm);
    return t;
}

typedef struct {
    const char *name;
    cache_policy_t policy;
    unsigned promote;
} variant_t;

static const variant_t k_variants[] = {
    {"LRU", CACHE_POLICY_LRU, 0},
    {"S3-FIFO", CACHE_POLICY_S3FIFO, 1},
    {"S3-FIFO (promote at 2)", CACHE_POLICY_S3FIFO, 2},
};
#define N_VARIANTS (sizeof k_variants / sizeof k_variants[0])

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* hit ratio of one replay; *ns_per_req: wall time per request */
static double replay(const uint32_t *trace, size_t n, uint64_t seed, size_t budget,
                     const variant_t *v, double *ns_per_req)
{
    cache_l1_opts_t o = {0};
    o.budget_bytes = budget;
    o.policy = v->policy;
    o.s3_promote_hits = v->promote;
    o.max_entry_bytes = budget;
    cache_l1_t *l1 = cache_l1_create(&o);
    size_t hits = 0;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        cache_key_t k = key_of(trace[i]);
        cache_entry_t *e = cache_l1_get(l1, &k);
        if (e) {
            hits++;
            cache_entry_release(e);
            continue;
        }
        e = make_entry(trace[i], value_size(trace[i], seed));
        cache_l1_put(l1, e, 0, 0);
        cache_entry_release(e);
    }
    *ns_per_req = (now_s() - t0) * 1e9 / (double)n;
    cache_l1_destroy(l1);
    return (double)hits / (double)n;
}

static void usage(void)
{
    fprintf(stderr, "usage: cache_policy [--requests N] [--keys K] [--alphas 0.8,1.0] "
                    "[--budgets 1,5,10] [--seed S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    uint32_t k = 100000;
    uint64_t seed = 42;
    const char *alphas = "0.8,1.0", *budgets = "1,5,10";
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--requests"))
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--keys"))
            k = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--alphas"))
            alphas = argv[++i];
        else if (!strcmp(argv[i], "--budgets"))
            budgets = argv[++i];
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[++i], NULL, 10);
        else
            usage();
    }
    if (!n || k < 2) usage();
    text_buf = malloc(4001);
    memset(text_buf, 'x', 4000);

    /* working set: what every key would be charged if all were resident */
    size_t ws = 0;
    for (uint32_t id = 0; id < k; id++) {
        cache_entry_t *e = make_entry(id, value_size(id, seed));
        ws += e->mem_bytes + CACHE_L1_NODE_BYTES;
        cache_entry_release(e);
    }
    printf("Trace: %zu requests over %u keys, values 200-4000 B, working set %.1f MiB "
           "(charged bytes), seed %llu.\n\n",
           n, k, (double)ws / 1048576.0, (unsigned long long)seed);
    printf("| Zipf α | budget (%% of working set) |");
    for (size_t v = 0; v < N_VARIANTS; v++)
        printf(" %s hit %% |", k_variants[v].name);
    printf(" S3-FIFO − LRU | ns/request LRU / S3-FIFO |\n|---|---|");
    for (size_t v = 0; v < N_VARIANTS; v++)
        printf("---|");
    printf("---|---|\n");

    char *al = strdup(alphas);
    for (char *a = strtok(al, ","); a; a = strtok(NULL, ",")) {
        double alpha = strtod(a, NULL);
        uint32_t *trace = make_trace(n, k, alpha, seed);
        char *bl = strdup(budgets);
        char *save = NULL;
        for (char *b = strtok_r(bl, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
            double pct = strtod(b, NULL);
            size_t budget = (size_t)((double)ws * pct / 100.0);
            double hr[N_VARIANTS], ns[N_VARIANTS];
            for (size_t v = 0; v < N_VARIANTS; v++)
                hr[v] = replay(trace, n, seed, budget, &k_variants[v], &ns[v]);
            printf("| %.1f | %g%% (%.1f MiB) |", alpha, pct, (double)budget / 1048576.0);
            for (size_t v = 0; v < N_VARIANTS; v++)
                printf(" %.2f |", hr[v] * 100);
            printf(" %+.2f pt | %.0f / %.0f |\n", (hr[1] - hr[0]) * 100, ns[0], ns[1]);
            fflush(stdout);
        }
        free(bl);
        free(trace);
    }
    free(al);
    free(text_buf);
    return 0;
}
