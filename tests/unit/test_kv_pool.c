/* test_kv_pool.c — the paged KV cache's bookkeeping: allocation, reference
 * counts, publishing and looking up prefixes by chained hash, salts keeping
 * namespaces apart, LRU eviction of unreferenced cached blocks, and a random
 * workload checked against the pool's own invariants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "engine/kv_pool.h"

enum { B = 4 };

static kv_pool_t *mk(int n)
{
    kv_pool_t *p;
    bar_msg_t msg = {{0}};
    assert_int_equal(kv_pool_create(&p, n, B, &msg), 0);
    return p;
}

static void check_counts(const kv_pool_t *p, int used, int cached, int free_)
{
    kv_pool_stats_t st;
    kv_pool_stats(p, &st);
    assert_int_equal(st.n_used, used);
    assert_int_equal(st.n_cached, cached);
    assert_int_equal(st.n_free, free_);
    assert_int_equal(st.n_used + st.n_cached + st.n_free, st.n_blocks);
}

static void test_alloc_release(void **state)
{
    (void)state;
    kv_pool_t *p = mk(3);
    int a = kv_pool_alloc(p), b = kv_pool_alloc(p), c = kv_pool_alloc(p);
    assert_int_equal(a, 0); /* lowest ids first: memory stays compact */
    assert_int_equal(b, 1);
    assert_int_equal(c, 2);
    assert_int_equal(kv_pool_alloc(p), -1);
    assert_int_equal(kv_pool_available(p), 0);
    check_counts(p, 3, 0, 0);
    kv_pool_release(p, b, 0); /* unpublished: free */
    check_counts(p, 2, 0, 1);
    assert_int_equal(kv_pool_alloc(p), b);
    kv_pool_release(p, a, 0);
    kv_pool_release(p, b, 0);
    kv_pool_release(p, c, 0);
    kv_pool_release(p, c, 0); /* over-release is ignored */
    check_counts(p, 0, 0, 3);
    kv_pool_destroy(p);
    bar_msg_t msg = {{0}};
    assert_int_equal(kv_pool_create(&p, 0, B, &msg), BAR_ERR_INVALID);
}

/* A fork shares blocks by reference: a block returns to the pool only with
 * its last reference; a published one stays cached. Sharing a free block
 * is ignored. */
static void test_share(void **state)
{
    (void)state;
    kv_pool_t *p = mk(2);
    int a = kv_pool_alloc(p), b = kv_pool_alloc(p);
    int32_t toks[B] = {1, 2, 3, 4};
    kv_pool_publish(p, a, kv_pool_chain(kv_pool_root(7), toks, B), toks);
    kv_pool_share(p, a);
    kv_pool_share(p, a);
    kv_pool_share(p, b);
    assert_int_equal(kv_pool_refs(p, a), 3);
    assert_int_equal(kv_pool_refs(p, b), 2);
    kv_pool_release(p, a, 0);
    kv_pool_release(p, a, 0);
    kv_pool_release(p, b, 1);
    check_counts(p, 2, 0, 0);
    kv_pool_release(p, a, 0); /* last: published, so cached */
    kv_pool_release(p, b, 1); /* last: free */
    check_counts(p, 0, 1, 1);
    kv_pool_share(p, b); /* not referenced: ignored */
    assert_int_equal(kv_pool_refs(p, b), 0);
    check_counts(p, 0, 1, 1);
    kv_pool_destroy(p);
}

static void test_publish_lookup_salt(void **state)
{
    (void)state;
    kv_pool_t *p = mk(4);
    int32_t t1[B] = {1, 2, 3, 4}, t2[B] = {5, 6, 7, 8};
    kv_hash_t ra = kv_pool_root(111), rb = kv_pool_root(222);
    kv_hash_t h1 = kv_pool_chain(ra, t1, B), h2 = kv_pool_chain(h1, t2, B);
    int b1 = kv_pool_alloc(p), b2 = kv_pool_alloc(p);
    kv_pool_publish(p, b1, h1, t1);
    kv_pool_publish(p, b2, h2, t2);
    /* found while referenced: shared, one more reference */
    assert_int_equal(kv_pool_lookup(p, h1, t1), b1);
    assert_int_equal(kv_pool_refs(p, b1), 2);
    kv_pool_release(p, b1, 0);
    /* another salt: another chain, nothing found */
    kv_hash_t g1 = kv_pool_chain(rb, t1, B);
    assert_false(g1.lo == h1.lo && g1.hi == h1.hi);
    assert_int_equal(kv_pool_lookup(p, g1, t1), -1);
    /* the chain names the whole prefix: block 2 after another block 1 differs */
    kv_hash_t x = kv_pool_chain(kv_pool_chain(ra, t2, B), t2, B);
    assert_int_equal(kv_pool_lookup(p, x, t2), -1);
    /* a hash with the wrong tokens is not a hit (collision guard) */
    assert_int_equal(kv_pool_lookup(p, h2, t1), -1);
    /* released: cached, still found, and leaves the LRU when found */
    kv_pool_release(p, b1, 0);
    kv_pool_release(p, b2, 0);
    check_counts(p, 0, 2, 2);
    assert_int_equal(kv_pool_available(p), 4);
    assert_int_equal(kv_pool_lookup(p, h2, t2), b2);
    check_counts(p, 1, 1, 2);
    /* a second block with an existing hash stays private */
    int b3 = kv_pool_alloc(p);
    kv_pool_publish(p, b3, h2, t2);
    kv_pool_release(p, b3, 0);
    check_counts(p, 1, 1, 2);
    /* forget: a published block released with forget goes free, unfindable */
    kv_pool_release(p, b2, 1);
    check_counts(p, 0, 1, 3);
    assert_int_equal(kv_pool_lookup(p, h2, t2), -1);
    kv_pool_destroy(p);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    kv_pool_t *p = mk(3);
    int32_t t[3][B] = {{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}};
    kv_hash_t h[3];
    int b[3];
    for (int i = 0; i < 3; i++) {
        h[i] = kv_pool_chain(kv_pool_root(0), t[i], B);
        b[i] = kv_pool_alloc(p);
        kv_pool_publish(p, b[i], h[i], t[i]);
    }
    /* released in the order 1, 0, 2: evicted in that order */
    kv_pool_release(p, b[1], 0);
    kv_pool_release(p, b[0], 0);
    kv_pool_release(p, b[2], 0);
    /* touching 1 (lookup + release) makes it the most recent */
    assert_int_equal(kv_pool_lookup(p, h[1], t[1]), b[1]);
    kv_pool_release(p, b[1], 0);
    assert_int_equal(kv_pool_alloc(p), b[0]);
    assert_int_equal(kv_pool_lookup(p, h[0], t[0]), -1);
    assert_int_equal(kv_pool_alloc(p), b[2]);
    assert_int_equal(kv_pool_lookup(p, h[1], t[1]), b[1]);
    assert_int_equal(kv_pool_alloc(p), -1); /* all referenced */
    kv_pool_stats_t st;
    kv_pool_stats(p, &st);
    assert_int_equal(st.evictions, 2);
    kv_pool_destroy(p);
}

/* Random sequences of alloc / publish / lookup / release: every count adds
 * up, a found block carries the tokens it was published with, and the hash
 * table survives many removals (backward-shift deletion). */
static void test_random_workload(void **state)
{
    (void)state;
    enum { N = 37, HELD = 64 };
    kv_pool_t *p = mk(N);
    int held[HELD], n_held = 0;
    int32_t toks[N][B];
    srand(12345);
    for (int step = 0; step < 200000; step++) {
        int op = rand() % 4;
        int32_t t[B];
        for (int k = 0; k < B; k++)
            t[k] = rand() % 5; /* few distinct blocks: many hits and duplicates */
        kv_hash_t h = kv_pool_chain(kv_pool_root((uint64_t)(rand() % 2)), t, B);
        if (op == 0 && n_held < HELD) {
            int b = kv_pool_alloc(p);
            if (b >= 0) {
                kv_pool_publish(p, b, h, t);
                memcpy(toks[b], t, sizeof t);
                held[n_held++] = b;
            } else {
                assert_int_equal(kv_pool_available(p), 0);
            }
        } else if (op == 1 && n_held < HELD) {
            int b = kv_pool_lookup(p, h, t);
            if (b >= 0) {
                assert_memory_equal(toks[b], t, sizeof t);
                held[n_held++] = b;
            }
        } else if (n_held > 0) {
            int i = rand() % n_held;
            kv_pool_release(p, held[i], rand() % 8 == 0);
            held[i] = held[--n_held];
        }
        kv_pool_stats_t st;
        kv_pool_stats(p, &st);
        assert_int_equal(st.n_used + st.n_cached + st.n_free, N);
        int distinct = 0;
        for (int b = 0; b < N; b++)
            distinct += kv_pool_refs(p, b) > 0;
        assert_int_equal(distinct, st.n_used);
    }
    kv_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release),       cmocka_unit_test(test_share),
        cmocka_unit_test(test_publish_lookup_salt), cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_random_workload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
