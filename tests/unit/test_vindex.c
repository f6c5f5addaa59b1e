/* test_vindex.c — the vector index (cache/vindex.c): flat search against an
 * fp32 brute force, HNSW recall on clustered data, deletes and rebuilds,
 * namespaces, replace, remove_ns, stats, bad input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/vindex.h"

enum { DIM = 384 };

static uint64_t rng = 0x243F6A8885A308D3ull;

static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}

static float nrand(void)
{
    double u = urand(), w = urand();
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * w));
}

static void rand_vec(float *x, int dim)
{
    for (int i = 0; i < dim; i++)
        x[i] = nrand();
}

/* n vectors around nc random centres: centre + sigma * noise. */
static float *clustered(int n, int nc, float sigma, int dim)
{
    float *c = malloc((size_t)nc * dim * sizeof *c), *x = malloc((size_t)n * dim * sizeof *x);
    assert_non_null(c);
    assert_non_null(x);
    for (int i = 0; i < nc * dim; i++)
        c[i] = nrand();
    for (int i = 0; i < n; i++) {
        const float *ci = c + (size_t)(urand() * nc) * dim;
        for (int j = 0; j < dim; j++)
            x[(size_t)i * dim + j] = ci[j] + sigma * nrand();
    }
    free(c);
    return x;
}

static double cosine(const float *a, const float *b, int dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < dim; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* Index (into base) of the best cosine among live[i] != 0; -1 when none. */
static int brute_best(const float *base, const uint8_t *live, int n, const float *q, double *best)
{
    int bi = -1;
    *best = -2;
    for (int i = 0; i < n; i++) {
        if (live && !live[i]) continue;
        double c = cosine(base + (size_t)i * DIM, q, DIM);
        if (c > *best) {
            *best = c;
            bi = i;
        }
    }
    return bi;
}

static vindex_t *mk(int flat_max, int efc)
{
    vindex_t *v = NULL;
    bar_msg_t msg;
    vindex_config_t cfg = {.dim = DIM, .flat_max = flat_max, .ef_construction = efc};
    assert_int_equal(vindex_create(&v, &cfg, &msg), 0);
    return v;
}

/* Flat (exact) search: ids, order and similarities equal an fp32 brute force
 * up to the fp16 rounding of the stored vectors. */
static void test_flat_exact(void **state)
{
    (void)state;
    enum { N = 3000, Q = 60, K = 10 };
    vindex_t *v = mk(0, 0);
    float *base = clustered(N, 30, 0.8f, DIM);
    for (int i = 0; i < N; i++)
        assert_int_equal(vindex_add(v, 7, 1000 + i, base + (size_t)i * DIM), 0);
    vindex_stats_t st;
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, N);
    assert_int_equal(st.graphs, 0);
    float q[DIM];
    vindex_hit_t hits[K];
    double *ex = malloc(N * sizeof *ex);
    int top1 = 0;
    for (int t = 0; t < Q; t++) {
        if (t < Q / 2) {
            memcpy(q, base + (size_t)(urand() * N) * DIM, sizeof q); /* an exact member */
            for (int j = 0; j < DIM; j++)
                q[j] += 0.3f * nrand();
        } else {
            rand_vec(q, DIM);
        }
        for (int i = 0; i < N; i++)
            ex[i] = cosine(base + (size_t)i * DIM, q, DIM);
        int got = vindex_search(v, 7, q, K, hits);
        assert_int_equal(got, K);
        double best = -2;
        for (int i = 0; i < N; i++)
            if (ex[i] > best) best = ex[i];
        for (int r = 0; r < K; r++) {
            int i = (int)(hits[r].id - 1000);
            assert_true(i >= 0 && i < N);
            assert_true(fabs(hits[r].sim - ex[i]) < 1e-3); /* cosine units, fp16-exact */
            if (r) assert_true(hits[r].sim <= hits[r - 1].sim);
        }
        /* the best is the exact best (or tied within the fp16 error) */
        assert_true(ex[hits[0].id - 1000] > best - 1e-3);
        top1 += ex[hits[0].id - 1000] == best;
        /* the k-th hit is no worse than the exact k-th best minus rounding */
        int better = 0;
        for (int i = 0; i < N; i++)
            better += ex[i] > hits[K - 1].sim + 1e-3;
        assert_true(better < K);
    }
    assert_true(top1 >= Q - 2);
    free(ex);
    free(base);
    vindex_destroy(v);
}

static double recall1(const vindex_t *v, uint64_t ns, const float *base, const uint8_t *live, int n,
                      const float *queries, int nq, int ef)
{
    int ok = 0;
    for (int t = 0; t < nq; t++) {
        const float *q = queries + (size_t)t * DIM;
        double best;
        int bi = brute_best(base, live, n, q, &best);
        vindex_hit_t h;
        int got = vindex_search_ef(v, ns, q, 1, ef, &h);
        assert_int_equal(got, 1);
        int i = (int)h.id;
        assert_true(i >= 0 && i < n);
        if (live) assert_true(live[i]); /* a deleted vector never comes back */
        ok += i == bi || cosine(base + (size_t)i * DIM, q, DIM) >= best - 1e-6;
    }
    return (double)ok / nq;
}

/* HNSW: recall@1 >= 0.98 on clustered data; deletes are never returned and
 * a rebuild keeps recall; below flat_max / 2 the namespace goes flat again. */
static void test_hnsw_recall_and_deletes(void **state)
{
    (void)state;
#ifdef BARISTA_SANITIZED
    enum { N = 6000, Q = 150 };
#else
    enum { N = 20000, Q = 300 };
#endif
    vindex_t *v = mk(1000, 100);
    float *base = clustered(N + Q, 200, 0.6f, DIM);
    const float *queries = base + (size_t)N * DIM;
    for (int i = 0; i < N; i++)
        assert_int_equal(vindex_add(v, 1, (uint64_t)i, base + (size_t)i * DIM), 0);
    vindex_stats_t st;
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, N);
    assert_int_equal(st.graphs, 1);
    assert_int_equal(st.tombstones, 0);
    assert_true(st.bytes > (uint64_t)N * DIM * 3);
    double r = recall1(v, 1, base, NULL, N, queries, Q, 0);
    print_message("hnsw recall@1 n=%d ef=64: %.3f (%.0f bytes/vector)\n", N, r,
                  (double)st.bytes / N);
    assert_true(r >= 0.98);

    /* delete 40%: tombstones, never returned */
    uint8_t *live = malloc(N);
    memset(live, 1, N);
    int removed = 0;
    for (int i = 0; i < N; i++)
        if (urand() < 0.4) {
            assert_int_equal(vindex_remove(v, 1, (uint64_t)i), 1);
            live[i] = 0;
            removed++;
        }
    assert_int_equal(vindex_remove(v, 1, 0 + (uint64_t)N), 0);
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, N - removed);
    assert_int_equal(st.tombstones, removed);
    r = recall1(v, 1, base, live, N, queries, Q, 0);
    print_message("after 40%% deletes: %.3f\n", r);
    assert_true(r >= 0.97);
    /* delete up to 60%: a rebuild drops the tombstones */
    for (int i = 0; i < N && removed < N * 6 / 10; i++)
        if (live[i]) {
            assert_int_equal(vindex_remove(v, 1, (uint64_t)i), 1);
            live[i] = 0;
            removed++;
        }
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, N - removed);
    assert_true(st.tombstones < st.vectors);
    r = recall1(v, 1, base, live, N, queries, Q, 0);
    print_message("after 60%% deletes (rebuilt): %.3f\n", r);
    assert_true(r >= 0.97);
    /* down to 400 (< flat_max / 2): flat again at the next rebuild, exact */
    for (int i = 0; i < N && removed < N - 400; i++)
        if (live[i]) {
            assert_int_equal(vindex_remove(v, 1, (uint64_t)i), 1);
            live[i] = 0;
            removed++;
        }
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, 400);
    assert_int_equal(st.graphs, 0);
    assert_int_equal(st.tombstones, 0);
    r = recall1(v, 1, base, live, N, queries, 50, 0);
    assert_true(r == 1.0);
    free(live);
    free(base);
    vindex_destroy(v);
}

/* Namespaces partition the index: the same vectors in two namespaces, a
 * search only ever returns its own namespace's ids (flat and graph). */
static void test_namespaces(void **state)
{
    (void)state;
    vindex_t *v = mk(100, 40);
    float *base = clustered(300, 5, 0.5f, DIM);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(vindex_add(v, 1, 10000 + i, base + (size_t)i * DIM), 0); /* graph */
        if (i < 50)
            assert_int_equal(vindex_add(v, 2, 20000 + i, base + (size_t)i * DIM), 0); /* flat */
    }
    vindex_stats_t st;
    vindex_stats(v, &st);
    assert_int_equal(st.namespaces, 2);
    assert_int_equal(st.graphs, 1);
    assert_int_equal(st.vectors, 350);
    vindex_hit_t h[20];
    for (int t = 0; t < 300; t += 7) {
        const float *q = base + (size_t)t * DIM;
        int n1 = vindex_search(v, 1, q, 20, h);
        assert_int_equal(n1, 20);
        for (int j = 0; j < n1; j++)
            assert_true(h[j].id >= 10000 && h[j].id < 10300);
        assert_int_equal(h[0].id, 10000 + t); /* itself */
        assert_true(h[0].sim > 0.999f);
        int n2 = vindex_search(v, 2, q, 20, h);
        assert_int_equal(n2, 20);
        for (int j = 0; j < n2; j++)
            assert_true(h[j].id >= 20000 && h[j].id < 20050);
        assert_int_equal(vindex_search(v, 3, q, 5, h), 0); /* unknown namespace */
    }
    assert_true(vindex_contains(v, 2, 20001));
    assert_false(vindex_contains(v, 1, 20001));
    assert_int_equal(vindex_remove_ns(v, 2), 50);
    assert_int_equal(vindex_remove_ns(v, 2), 0);
    assert_int_equal(vindex_search(v, 2, base, 5, h), 0);
    assert_int_equal(vindex_search(v, 1, base, 1, h), 1);
    vindex_stats(v, &st);
    assert_int_equal(st.namespaces, 1);
    assert_int_equal(st.vectors, 300);
    /* many tiny namespaces (one per conversation partition) */
    for (uint64_t ns = 100; ns < 1100; ns++)
        assert_int_equal(vindex_add(v, ns, ns * 3, base + (ns % 300) * DIM), 0);
    for (uint64_t ns = 100; ns < 1100; ns++) {
        assert_int_equal(vindex_search(v, ns, base + (ns % 300) * DIM, 3, h), 1);
        assert_int_equal(h[0].id, ns * 3);
    }
    for (uint64_t ns = 100; ns < 1100; ns += 2)
        assert_int_equal(vindex_remove(v, ns, ns * 3), 1);
    vindex_stats(v, &st);
    assert_int_equal(st.namespaces, 501);
    vindex_clear(v);
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, 0);
    assert_int_equal(st.namespaces, 0);
    assert_int_equal(vindex_search(v, 1, base, 1, h), 0);
    assert_int_equal(vindex_add(v, 1, 5, base), 0); /* usable after clear */
    assert_int_equal(vindex_search(v, 1, base, 1, h), 1);
    free(base);
    vindex_destroy(v);
}

/* Same (ns, id) replaces, in flat and graph namespaces; the norm of the input
 * does not matter; similarities are cosines. */
static void test_replace_and_units(void **state)
{
    (void)state;
    for (int graph = 0; graph < 2; graph++) {
        vindex_t *v = mk(graph ? 16 : 0, 0);
        float *base = clustered(64, 4, 1.0f, DIM);
        for (int i = 0; i < 64; i++)
            assert_int_equal(vindex_add(v, 9, i, base + (size_t)i * DIM), 0);
        float x[DIM], y[DIM];
        rand_vec(x, DIM);
        for (int j = 0; j < DIM; j++)
            y[j] = -x[j] * 1000.0f; /* opposite, big norm */
        assert_int_equal(vindex_add(v, 9, 5, x), 0);
        vindex_hit_t h[64];
        assert_int_equal(vindex_search(v, 9, x, 1, h), 1);
        assert_int_equal(h[0].id, 5);
        assert_true(fabsf(h[0].sim - 1.0f) < 1e-3);
        assert_int_equal(vindex_add(v, 9, 5, y), 0); /* replace */
        vindex_stats_t st;
        vindex_stats(v, &st);
        assert_int_equal(st.vectors, 64);
        assert_int_equal(st.graphs, graph);
        int n = vindex_search(v, 9, y, 64, h);
        assert_int_equal(n, 64);
        assert_int_equal(h[0].id, 5);
        assert_true(h[0].sim > 0.999f);
        int seen5 = 0;
        for (int i = 0; i < n; i++)
            seen5 += h[i].id == 5;
        assert_int_equal(seen5, 1); /* the old vector is gone */
        /* scaled query: same answer; -x finds id 5 at cosine -1 vs x */
        for (int j = 0; j < DIM; j++)
            x[j] *= 1e-3f;
        n = vindex_search(v, 9, x, 64, h);
        assert_int_equal(n, 64);
        assert_int_equal(h[63].id, 5);
        assert_true(fabsf(h[63].sim + 1.0f) < 1e-3);
        free(base);
        vindex_destroy(v);
    }
}

static void test_bad_input(void **state)
{
    (void)state;
    vindex_t *v = NULL;
    bar_msg_t msg = {{0}};
    vindex_config_t cfg = {.dim = 0};
    assert_int_equal(vindex_create(&v, &cfg, &msg), BAR_ERR_INVALID);
    assert_null(v);
    assert_non_null(strstr(msg.text, "dim"));
    cfg.dim = VINDEX_MAX_DIM + 1;
    assert_int_equal(vindex_create(&v, &cfg, &msg), BAR_ERR_INVALID);
    cfg = (vindex_config_t){.dim = 8, .M = -1};
    assert_int_equal(vindex_create(&v, &cfg, &msg), BAR_ERR_INVALID);
    cfg = (vindex_config_t){.dim = 8};
    assert_int_equal(vindex_create(&v, &cfg, &msg), 0);
    vindex_config_t c = vindex_config(v);
    assert_int_equal(c.flat_max, 4096);
    assert_int_equal(c.M, 16);
    float z[8] = {0}, nan[8] = {1, 2, NAN, 0, 0, 0, 0, 0}, inf[8] = {INFINITY}, ok[8] = {1, 2, 3};
    assert_int_equal(vindex_add(v, 1, 1, z), BAR_ERR_INVALID);
    assert_int_equal(vindex_add(v, 1, 1, nan), BAR_ERR_INVALID);
    assert_int_equal(vindex_add(v, 1, 1, inf), BAR_ERR_INVALID);
    vindex_stats_t st;
    vindex_stats(v, &st);
    assert_int_equal(st.vectors, 0);
    assert_int_equal(vindex_add(v, 1, 1, ok), 0);
    vindex_hit_t h[2];
    assert_int_equal(vindex_search(v, 1, z, 1, h), 0);
    assert_int_equal(vindex_search(v, 1, nan, 1, h), 0);
    assert_int_equal(vindex_search(v, 1, ok, 0, h), 0);
    assert_int_equal(vindex_search(v, 1, ok, VINDEX_MAX_K + 1, h), 0);
    assert_int_equal(vindex_search(v, 1, ok, 2, h), 1);
    assert_int_equal(vindex_remove(v, 1, 2), 0);
    assert_int_equal(vindex_remove(v, 1, 1), 1);
    assert_int_equal(vindex_remove(v, 1, 1), 0);
    vindex_stats(v, &st);
    assert_int_equal(st.namespaces, 0);
    vindex_destroy(v);
    vindex_destroy(NULL);
}

/* Random add / replace / remove against a model; every search's ids are
 * live members of the namespace (flat <-> graph transitions included). */
static void test_churn(void **state)
{
    (void)state;
    enum { IDS = 600, OPS = 6000, NS = 3 };
    vindex_t *v = mk(64, 32);
    static uint8_t live[NS][IDS];
    memset(live, 0, sizeof live);
    float x[DIM];
    vindex_hit_t h[16];
    uint64_t count = 0;
    for (int op = 0; op < OPS; op++) {
        int ns = (int)(urand() * NS), id = (int)(urand() * IDS);
        double u = urand();
        if (u < 0.6) {
            rand_vec(x, DIM);
            assert_int_equal(vindex_add(v, (uint64_t)ns, (uint64_t)id, x), 0);
            count += !live[ns][id];
            live[ns][id] = 1;
        } else if (u < 0.95) {
            assert_int_equal(vindex_remove(v, (uint64_t)ns, (uint64_t)id), live[ns][id]);
            count -= live[ns][id];
            live[ns][id] = 0;
        } else {
            uint64_t want = 0;
            for (int i = 0; i < IDS; i++)
                want += live[ns][i];
            assert_int_equal(vindex_remove_ns(v, (uint64_t)ns), want);
            memset(live[ns], 0, IDS);
            count -= want;
        }
        if (op % 50 == 0) {
            rand_vec(x, DIM);
            int n = vindex_search(v, (uint64_t)ns, x, 16, h);
            int nl = 0;
            for (int i = 0; i < IDS; i++)
                nl += live[ns][i];
            assert_int_equal(n, nl < 16 ? nl : 16);
            for (int j = 0; j < n; j++) {
                assert_true(h[j].id < IDS && live[ns][h[j].id]);
                assert_true(vindex_contains(v, (uint64_t)ns, h[j].id));
            }
            vindex_stats_t st;
            vindex_stats(v, &st);
            assert_int_equal(st.vectors, count);
        }
    }
    vindex_destroy(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),  cmocka_unit_test(test_replace_and_units),
        cmocka_unit_test(test_namespaces), cmocka_unit_test(test_churn),
        cmocka_unit_test(test_flat_exact), cmocka_unit_test(test_hnsw_recall_and_deletes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
