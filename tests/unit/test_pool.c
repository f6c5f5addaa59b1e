/* test_pool.c — the fork-join pool: each index runs exactly once per run,
 * thousands of back-to-back runs, pools used from inside other pools' tasks,
 * destroy in every idle state, and pool_split's coverage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/pool.h"

enum { MAXT = 16 };

typedef struct {
    atomic_int hits[MAXT];
    atomic_int bad_nth;
    int nth;
    long data[MAXT]; /* plain writes, read by the caller after pool_run */
} count_ctx_t;

static void count_fn(void *arg, int ith, int nth)
{
    count_ctx_t *c = arg;
    if (nth != c->nth || ith < 0 || ith >= nth)
        atomic_fetch_add(&c->bad_nth, 1);
    else
        atomic_fetch_add(&c->hits[ith], 1);
    c->data[ith] += ith + 1;
}

static void test_each_index_once(void **state)
{
    (void)state;
    for (int n = 1; n <= 8; n++) {
        pool_t *p = pool_create(n);
        assert_non_null(p);
        assert_int_equal(pool_size(p), n);
        count_ctx_t c;
        memset(&c, 0, sizeof c);
        c.nth = n;
        for (int run = 1; run <= 50; run++) {
            pool_run(p, count_fn, &c);
            for (int i = 0; i < n; i++) {
                assert_int_equal(atomic_load(&c.hits[i]), run);
                assert_int_equal(c.data[i], (long)run * (i + 1));
            }
        }
        assert_int_equal(atomic_load(&c.bad_nth), 0);
        pool_destroy(p);
    }
}

static void test_default_size(void **state)
{
    (void)state;
    pool_t *p = pool_create(0);
    assert_non_null(p);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(pool_size(p), cpus > 0 ? cpus : 1);
    pool_destroy(p);
    pool_destroy(NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_rapid_runs(void **state)
{
    (void)state;
    enum { RUNS = 3000 }; /* enough to catch lost wake-ups; 4 threads on 2 cores is slow */
    for (int n = 2; n <= 4; n++) {
        pool_t *p = pool_create(n);
        assert_non_null(p);
        count_ctx_t c;
        memset(&c, 0, sizeof c);
        c.nth = n;
        double t0 = now_s();
        for (int run = 0; run < RUNS; run++)
            pool_run(p, count_fn, &c);
        double dt = now_s() - t0;
        for (int i = 0; i < n; i++)
            assert_int_equal(atomic_load(&c.hits[i]), RUNS);
        print_message("pool of %d: %.2f us per empty pool_run\n", n, dt / RUNS * 1e6);
        pool_destroy(p);
    }
}

/* Outer thread ith drives its own inner pool: pools of sizes 1..4 running
 * concurrently inside another pool's tasks. */
typedef struct {
    pool_t *inner[4];
    count_ctx_t cc[4];
} nest_ctx_t;

static void nest_fn(void *arg, int ith, int nth)
{
    (void)nth;
    nest_ctx_t *c = arg;
    for (int k = 0; k < 10; k++)
        pool_run(c->inner[ith], count_fn, &c->cc[ith]);
}

static void test_nested(void **state)
{
    (void)state;
    for (int outer = 1; outer <= 4; outer++)
        for (int inner = 1; inner <= 4; inner++) {
            pool_t *p = pool_create(outer);
            assert_non_null(p);
            nest_ctx_t c;
            memset(&c, 0, sizeof c);
            for (int i = 0; i < outer; i++) {
                c.inner[i] = pool_create(inner);
                assert_non_null(c.inner[i]);
                c.cc[i].nth = inner;
            }
            for (int rep = 0; rep < 5; rep++)
                pool_run(p, nest_fn, &c);
            for (int i = 0; i < outer; i++) {
                for (int j = 0; j < inner; j++)
                    assert_int_equal(atomic_load(&c.cc[i].hits[j]), 50);
                assert_int_equal(atomic_load(&c.cc[i].bad_nth), 0);
                pool_destroy(c.inner[i]);
            }
            pool_destroy(p);
        }
}

static void test_destroy_idle(void **state)
{
    (void)state;
    /* never used */
    pool_destroy(pool_create(4));
    /* destroyed while workers still spin right after a run */
    pool_t *p = pool_create(3);
    count_ctx_t c;
    memset(&c, 0, sizeof c);
    c.nth = 3;
    pool_run(p, count_fn, &c);
    pool_destroy(p);
    /* destroyed after workers went to sleep; a run after sleeping still works */
    p = pool_create(3);
    memset(&c, 0, sizeof c);
    c.nth = 3;
    pool_run(p, count_fn, &c);
    usleep(20000);
    pool_run(p, count_fn, &c);
    usleep(20000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&c.hits[i]), 2);
    pool_destroy(p);
}

/* A slow task makes the caller wait long enough to sleep on the done condvar. */
static void slow_fn(void *arg, int ith, int nth)
{
    (void)nth;
    count_ctx_t *c = arg;
    if (ith == nth - 1) usleep(5000);
    atomic_fetch_add(&c->hits[ith], 1);
}

static void test_slow_worker(void **state)
{
    (void)state;
    pool_t *p = pool_create(3);
    count_ctx_t c;
    memset(&c, 0, sizeof c);
    for (int k = 0; k < 5; k++)
        pool_run(p, slow_fn, &c);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&c.hits[i]), 5);
    pool_destroy(p);
}

static void test_split(void **state)
{
    (void)state;
    for (int n = 0; n <= 300; n++)
        for (int nth = 1; nth <= 9; nth++) {
            int next = 0, max_units = 0, min_units = 1 << 30;
            for (int i = 0; i < nth; i++) {
                int lo, hi;
                pool_split(n, i, nth, &lo, &hi);
                assert_int_equal(lo, next); /* contiguous, in order, disjoint */
                assert_true(hi >= lo);
                assert_true(lo % POOL_SPLIT_ALIGN == 0 || lo == n);
                int u = (hi - lo + POOL_SPLIT_ALIGN - 1) / POOL_SPLIT_ALIGN;
                max_units = u > max_units ? u : max_units;
                min_units = u < min_units ? u : min_units;
                next = hi;
            }
            assert_int_equal(next, n);
            assert_true(max_units - min_units <= 1);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_index_once), cmocka_unit_test(test_default_size),
        cmocka_unit_test(test_rapid_runs),      cmocka_unit_test(test_nested),
        cmocka_unit_test(test_destroy_idle),    cmocka_unit_test(test_slow_worker),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
