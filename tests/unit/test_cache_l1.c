/* test_cache_l1.c — the in-process cache (src/cache/cache_l1.c): honest
 * byte budget, TTL on an injected clock, S3-FIFO and LRU eviction order,
 * references that outlive eviction, purges, stats, replace/reject rules, and
 * a randomized run checking the accounting invariant. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_l1.h"

static double fake_now = 1000.0;
static double clock_fn(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static cache_key_t key_n(int id)
{
    cache_key_t k;
    memset(&k, 0, sizeof k);
    k.b[0] = 0xab;
    memcpy(k.b + 8, &id, sizeof id); /* the index hashes bytes 8..15 */
    k.b[15] = (uint8_t)(id * 31);
    return k;
}

static cache_entry_t *mk(int id, size_t text_len, uint64_t ns)
{
    cache_rec_t *r = cache_rec_create(0);
    char *t = malloc(text_len + 1);
    for (size_t i = 0; i < text_len; i++)
        t[i] = (char)('a' + (id + (int)i) % 26);
    if (text_len) assert_int_equal(cache_rec_add(r, t, text_len, NULL, 0), 0);
    free(t);
    cache_meta_t m = {0};
    m.key = key_n(id);
    m.ns = ns;
    m.model = "m";
    m.finish = CACHE_FINISH_STOP;
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    assert_non_null(e);
    return e;
}

/* one entry's charge for a given text length */
static size_t charge(size_t text_len)
{
    cache_entry_t *e = mk(0, text_len, 0);
    size_t c = e->mem_bytes + CACHE_L1_NODE_BYTES;
    cache_entry_release(e);
    return c;
}

static cache_l1_t *mk_l1(size_t budget, cache_policy_t p)
{
    cache_l1_opts_t o = {0};
    o.budget_bytes = budget;
    o.policy = p;
    o.max_entry_bytes = budget;
    o.now = clock_fn;
    cache_l1_t *l1 = cache_l1_create(&o);
    assert_non_null(l1);
    return l1;
}

static void put(cache_l1_t *l1, int id, size_t len, uint64_t ttl_ms)
{
    cache_entry_t *e = mk(id, len, (uint64_t)(id % 3));
    assert_int_equal(cache_l1_put(l1, e, ttl_ms, 0), 0);
    cache_entry_release(e);
}

/* 1 hit, 0 miss (drops the reference at once) */
static int has(cache_l1_t *l1, int id)
{
    cache_key_t k = key_n(id);
    cache_entry_t *e = cache_l1_get(l1, &k);
    if (!e) return 0;
    assert_true(cache_key_equal(&e->key, &k));
    cache_entry_release(e);
    return 1;
}

static void test_budget_honest(void **st)
{
    (void)st;
    size_t c = charge(1000);
    assert_true(c > 1000 + CACHE_L1_NODE_BYTES); /* header, key, model, overhead */
    cache_l1_t *l1 = mk_l1(5 * c, CACHE_POLICY_LRU);
    for (int i = 0; i < 5; i++)
        put(l1, i, 1000, 0);
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    assert_int_equal(s.entries, 5);
    assert_int_equal(s.bytes, 5 * c);
    assert_int_equal(s.evictions, 0);
    /* a sixth does not fit: one goes */
    put(l1, 5, 1000, 0);
    cache_l1_stats(l1, &s);
    assert_int_equal(s.entries, 5);
    assert_int_equal(s.evictions, 1);
    assert_true(s.bytes <= s.budget);
    /* an entry of 3 slots evicts three */
    cache_entry_t *big = mk(100, 2 * c + 1000, 0); /* charged exactly 3 * c */
    assert_int_equal(cache_l1_put(l1, big, 0, 0), 0);
    cache_entry_release(big);
    cache_l1_stats(l1, &s);
    assert_true(s.bytes <= s.budget);
    assert_int_equal(s.entries, 3);
    cache_l1_destroy(l1);

    /* a zero budget is refused */
    cache_l1_opts_t o = {0};
    assert_null(cache_l1_create(&o));
    assert_null(cache_l1_create(NULL));
}

static void test_reject_and_replace(void **st)
{
    (void)st;
    cache_l1_opts_t o = {0};
    o.budget_bytes = 100000;
    o.now = clock_fn;
    cache_l1_t *l1 = cache_l1_create(&o); /* max entry = budget / 8 */
    cache_entry_t *big = mk(1, 20000, 0);
    assert_int_equal(cache_l1_put(l1, big, 0, 0), BAR_ERR_RANGE);
    cache_entry_release(big);
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    assert_int_equal(s.rejected, 1);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);

    /* unfinished entries cannot be stored */
    cache_rec_t *r = cache_rec_create(0);
    cache_meta_t m = {0};
    m.key = key_n(2);
    cache_entry_t *part = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    assert_int_equal(cache_l1_put(l1, part, 0, 0), BAR_ERR_INVALID);
    cache_entry_release(part);

    /* replace: same key, new value, bytes follow */
    put(l1, 3, 100, 0);
    put(l1, 3, 500, 0);
    cache_l1_stats(l1, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, charge(500));
    cache_key_t k = key_n(3);
    cache_entry_t *e = cache_l1_get(l1, &k);
    assert_int_equal(e->text_len, 500);
    cache_entry_release(e);
    cache_l1_destroy(l1);
}

static void test_ttl(void **st)
{
    (void)st;
    fake_now = 1000.0;
    cache_l1_t *l1 = mk_l1(1 << 20, CACHE_POLICY_S3FIFO);
    put(l1, 1, 10, 1000); /* 1 s */
    put(l1, 2, 10, 0);    /* never */
    put(l1, 3, 10, 5000);
    fake_now += 0.999;
    assert_true(has(l1, 1));
    fake_now += 0.001;
    assert_false(has(l1, 1));
    assert_true(has(l1, 2));
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    assert_int_equal(s.expirations, 1);
    assert_int_equal(s.entries, 2);
    fake_now += 1e6;
    assert_true(has(l1, 2));
    /* sweep drops the rest without lookups */
    assert_int_equal(cache_l1_sweep(l1), 1);
    cache_l1_stats(l1, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.expirations, 2);
    assert_int_equal(s.bytes, charge(10));
    cache_l1_destroy(l1);
}

static int count_cb(void *ctx, cache_entry_t *e, double exp)
{
    (void)e;
    (void)exp;
    (*(int *)ctx)++;
    return 0;
}

static void test_ttl_foreach(void **st)
{
    (void)st;
    fake_now = 50.0;
    cache_l1_t *l1 = mk_l1(1 << 20, CACHE_POLICY_LRU);
    put(l1, 1, 10, 10);
    put(l1, 2, 10, 0);
    fake_now += 1;
    int n = 0;
    assert_int_equal(cache_l1_foreach(l1, count_cb, &n), 0);
    assert_int_equal(n, 1);
    cache_l1_destroy(l1);
}

static void test_lru_order(void **st)
{
    (void)st;
    size_t c = charge(100);
    cache_l1_t *l1 = mk_l1(3 * c, CACHE_POLICY_LRU);
    put(l1, 1, 100, 0);
    put(l1, 2, 100, 0);
    put(l1, 3, 100, 0);
    assert_true(has(l1, 1)); /* 1 is now the newest */
    put(l1, 4, 100, 0);      /* evicts 2 */
    assert_false(has(l1, 2));
    assert_true(has(l1, 1));
    assert_true(has(l1, 3));
    assert_true(has(l1, 4));
    /* a scan of new keys flushes everything under LRU */
    for (int i = 100; i < 110; i++)
        put(l1, i, 100, 0);
    assert_false(has(l1, 1));
    assert_false(has(l1, 3));
    cache_l1_destroy(l1);
}

static void test_s3fifo_order(void **st)
{
    (void)st;
    /* 10 entries of ~10 kB plus slack for the ghosts' 128 bytes each */
    size_t c = charge(10000);
    cache_l1_t *l1 = mk_l1(10 * c + 8192, CACHE_POLICY_S3FIFO); /* small queue: 1 entry */
    for (int i = 1; i <= 10; i++)
        put(l1, i, 10000, 0);
    assert_true(has(l1, 1));
    assert_true(has(l1, 2));
    put(l1, 11, 10000, 0); /* small tail: 1, 2 used → main; 3 unused → ghost */
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    assert_int_equal(s.entries, 10);
    assert_int_equal(s.ghosts, 1);
    assert_int_equal(s.evictions, 1);
    assert_true(s.bytes <= s.budget);
    assert_false(has(l1, 3));
    put(l1, 3, 10000, 0); /* in the ghost: straight to main; 4 → ghost */
    assert_false(has(l1, 4));
    assert_true(has(l1, 3));
    /* a scan of one-hit wonders cycles through the small queue only */
    for (int i = 100; i < 140; i++)
        put(l1, i, 10000, 0);
    assert_true(has(l1, 1));
    assert_true(has(l1, 2));
    assert_true(has(l1, 3));
    assert_false(has(l1, 5));
    assert_false(has(l1, 100));
    cache_l1_stats(l1, &s);
    assert_true(s.bytes <= s.budget);
    assert_int_equal(s.entries, 10);
    /* (a cyclic scan longer than small + ghost never reaches main) */
    /* main entries with no further hits age out once main must make room
     * for re-admitted ghosts: a loop over 12 keys comes back to each while
     * it is still a ghost, so they enter main; 1, 2, 3 lose their counters
     * and go */
    for (int round = 0; round < 10; round++)
        for (int i = 200; i < 212; i++)
            put(l1, i, 10000, 0);
    assert_false(has(l1, 1));
    assert_false(has(l1, 2));
    cache_l1_stats(l1, &s);
    assert_true(s.bytes <= s.budget);
    cache_l1_destroy(l1);
}

static void test_refcount_outlives_eviction(void **st)
{
    (void)st;
    size_t c = charge(2000);
    for (int p = 0; p < 2; p++) {
        cache_l1_t *l1 = mk_l1(2 * c, (cache_policy_t)p);
        put(l1, 1, 2000, 0);
        cache_key_t k = key_n(1);
        cache_entry_t *held = cache_l1_get(l1, &k);
        assert_non_null(held);
        assert_int_equal(held->refs, 2);
        for (int i = 2; i < 10; i++)
            put(l1, i, 2000, 0);
        assert_false(has(l1, 1));
        assert_int_equal(held->refs, 1);
        /* still readable while "being sent" (ASan checks this) */
        assert_int_equal(held->text_len, 2000);
        assert_int_equal(held->text[1999], (char)('a' + (1 + 1999) % 26));
        cache_l1_purge_all(l1);
        cache_l1_destroy(l1);
        assert_int_equal(held->text[0], 'b');
        cache_entry_release(held);
    }
}

static void test_purge(void **st)
{
    (void)st;
    for (int p = 0; p < 2; p++) {
        cache_l1_t *l1 = mk_l1(1 << 20, (cache_policy_t)p);
        for (int i = 0; i < 30; i++)
            put(l1, i, 50, 0); /* ns = i % 3 */
        cache_l1_stats_t s;
        cache_l1_stats(l1, &s);
        assert_int_equal(s.entries, 30);
        assert_int_equal(cache_l1_purge_ns(l1, 1), 10);
        for (int i = 0; i < 30; i++)
            assert_int_equal(has(l1, i), i % 3 != 1);
        assert_int_equal(cache_l1_purge_ns(l1, 1), 0);
        cache_key_t k = key_n(3);
        assert_int_equal(cache_l1_del(l1, &k), 1);
        assert_int_equal(cache_l1_del(l1, &k), 0);
        assert_false(has(l1, 3));
        cache_l1_stats(l1, &s);
        assert_int_equal(s.entries, 19);
        assert_int_equal(s.bytes, 19 * charge(50));
        assert_int_equal(cache_l1_purge_all(l1), 19);
        cache_l1_stats(l1, &s);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, 0);
        assert_int_equal(s.ghosts, 0);
        assert_false(has(l1, 0));
        cache_l1_destroy(l1);
    }
}

/* a tenant purge: every namespace sharing the high 32 bits, no other */
static void test_purge_tenant(void **st)
{
    (void)st;
    const uint64_t A = 0x11111111ull << 32, B = 0x22222222ull << 32;
    const uint64_t ns[4] = {A | 1, A | 0xfffffffful, B | 1, A >> 32};
    for (int p = 0; p < 2; p++) {
        cache_l1_t *l1 = mk_l1(1 << 20, (cache_policy_t)p);
        for (int i = 0; i < 40; i++) {
            cache_entry_t *e = mk(i, 50, ns[i % 4]);
            assert_int_equal(cache_l1_put(l1, e, 0, 0), 0);
            cache_entry_release(e);
        }
        assert_int_equal(cache_l1_purge_tenant(l1, A | 0x1234), 20);
        for (int i = 0; i < 40; i++)
            assert_int_equal(has(l1, i), i % 4 >= 2);
        assert_int_equal(cache_l1_purge_tenant(l1, A), 0);
        cache_l1_destroy(l1);
    }
}

static void test_stats(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1(1 << 20, CACHE_POLICY_S3FIFO);
    put(l1, 1, 10, 0);
    assert_true(has(l1, 1));
    assert_true(has(l1, 1));
    assert_false(has(l1, 2));
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.inserts, 1);
    assert_int_equal(s.budget, 1 << 20);
    cache_l1_destroy(l1);

    cache_policy_t p;
    assert_int_equal(cache_policy_parse("lru", &p), 0);
    assert_int_equal(p, CACHE_POLICY_LRU);
    assert_int_equal(cache_policy_parse("s3fifo", &p), 0);
    assert_int_equal(p, CACHE_POLICY_S3FIFO);
    assert_int_equal(cache_policy_parse("arc", &p), BAR_ERR_INVALID);
    assert_string_equal(cache_policy_name(CACHE_POLICY_LRU), "lru");
    assert_string_equal(cache_policy_name(CACHE_POLICY_S3FIFO), "s3fifo");
}

typedef struct {
    int ids[64];
    int n;
} order_t;

static int order_cb(void *ctx, cache_entry_t *e, double exp)
{
    (void)exp;
    order_t *o = ctx;
    int id;
    memcpy(&id, e->key.b + 8, sizeof id);
    o->ids[o->n++] = id;
    return 0;
}

static void test_foreach_and_warm(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1(1 << 20, CACHE_POLICY_LRU);
    for (int i = 1; i <= 4; i++)
        put(l1, i, 10, 0);
    assert_true(has(l1, 2));
    order_t o = {{0}, 0};
    cache_l1_foreach(l1, order_cb, &o);
    assert_int_equal(o.n, 4);
    int want[] = {1, 3, 4, 2}; /* coldest first */
    assert_memory_equal(o.ids, want, sizeof want);
    cache_l1_destroy(l1);

    /* S3-FIFO: warm puts go to main and survive a scan */
    size_t c = charge(10000);
    l1 = mk_l1(10 * c + 8192, CACHE_POLICY_S3FIFO);
    for (int i = 1; i <= 5; i++) {
        cache_entry_t *e = mk(i, 10000, 0);
        assert_int_equal(cache_l1_put(l1, e, 0, CACHE_L1_WARM), 0);
        cache_entry_release(e);
    }
    for (int i = 100; i < 130; i++)
        put(l1, i, 10000, 0);
    for (int i = 1; i <= 5; i++)
        assert_true(has(l1, i));
    cache_l1_destroy(l1);
}

static int sum_cb(void *ctx, cache_entry_t *e, double exp)
{
    (void)exp;
    *(size_t *)ctx += e->mem_bytes + CACHE_L1_NODE_BYTES;
    return 0;
}

static void test_random_invariants(void **st)
{
    (void)st;
    uint64_t x = 88172645463325252ull;
    for (int p = 0; p < 2; p++) {
        cache_l1_t *l1 = mk_l1(200000, (cache_policy_t)p);
        cache_entry_t *held[8] = {0};
        for (int it = 0; it < 60000; it++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int id = (int)(x % 500);
            int op = (int)((x >> 20) % 100);
            if (op < 50) {
                has(l1, id);
            } else if (op < 90) {
                put(l1, id, 50 + (size_t)((x >> 32) % 3000), 0);
            } else if (op < 95) {
                cache_key_t k = key_n(id);
                cache_l1_del(l1, &k);
            } else if (op < 99) {
                int slot = (int)((x >> 40) % 8);
                cache_entry_release(held[slot]);
                cache_key_t k = key_n(id);
                held[slot] = cache_l1_get(l1, &k);
            } else {
                cache_l1_purge_ns(l1, (uint64_t)(id % 3));
            }
            if (it % 97 == 0) {
                cache_l1_stats_t s;
                cache_l1_stats(l1, &s);
                assert_true(s.bytes <= s.budget);
                size_t sum = 0;
                cache_l1_foreach(l1, sum_cb, &sum);
                assert_int_equal(s.bytes, sum + s.ghosts * CACHE_L1_NODE_BYTES);
                if (p == CACHE_POLICY_LRU) assert_int_equal(s.ghosts, 0);
            }
        }
        for (int i = 0; i < 8; i++)
            cache_entry_release(held[i]);
        cache_l1_destroy(l1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_honest),
        cmocka_unit_test(test_purge_tenant),
        cmocka_unit_test(test_reject_and_replace),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_ttl_foreach),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_s3fifo_order),
        cmocka_unit_test(test_refcount_outlives_eviction),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_foreach_and_warm),
        cmocka_unit_test(test_random_invariants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
