/* test_cache_tier.c — the tier walk (src/cache/cache_tier.c) over the real L1
 * as tier 0 and fake tiers defined here: a synchronous one and an
 * asynchronous one whose answer the test gives by hand, both recording their
 * lookups, stores (with the TTL) and cancels. Covers misses, hits in each
 * position, promotion into every earlier tier with the TTL the entry has left,
 * the max-age filter, entries that expire on the way, cancelling a pending
 * walk, tiers that cannot answer, stores into every tier, the tier limit, and
 * references that balance. The Redis adapter is not exercised (no Redis). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_tier.h"

#define NOW_MS INT64_C(1700000000000) /* the walk's unix-ms clock */
#define NS 7u                         /* the tenant namespace of every walk */

static double l1_clock = 1000.0; /* the L1's monotonic seconds */
static double clock_fn(void *ctx)
{
    (void)ctx;
    return l1_clock;
}

static cache_key_t key_n(int id)
{
    cache_key_t k;
    memset(&k, 0, sizeof k);
    k.b[0] = 0xcd;
    memcpy(k.b + 8, &id, sizeof id);
    k.b[15] = (uint8_t)(id * 31);
    return k;
}

/* A finished entry for key id, recorded at stored_ms with ttl_ms (refs = 1). */
static cache_entry_t *mk(int id, int64_t stored_ms, uint64_t ttl_ms)
{
    cache_rec_t *r = cache_rec_create(0);
    assert_non_null(r);
    assert_int_equal(cache_rec_add(r, "hi there", 8, NULL, 0), 0);
    cache_meta_t m = {0};
    m.key = key_n(id);
    m.ns = NS;
    m.model = "m";
    m.stored_ms = stored_ms;
    m.ttl_ms = ttl_ms;
    m.finish = CACHE_FINISH_STOP;
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    assert_non_null(e);
    assert_int_equal(e->refs, 1);
    return e;
}

static cache_l1_t *mk_l1(void)
{
    l1_clock = 1000.0;
    cache_l1_opts_t o = {0};
    o.budget_bytes = 1 << 20;
    o.policy = CACHE_POLICY_LRU;
    o.now = clock_fn;
    cache_l1_t *l1 = cache_l1_create(&o);
    assert_non_null(l1);
    return l1;
}

/* The entry the L1 holds for id (compare the pointer only), or NULL. */
static const cache_entry_t *l1_peek(cache_l1_t *l1, int id)
{
    cache_key_t k = key_n(id);
    cache_entry_t *e = cache_l1_get(l1, &k);
    cache_entry_release(e);
    return e;
}

/* ---- fake tiers ---- */

#define FAKE_STORES 8

typedef struct {
    cache_tier_t t; /* t.impl = this fake */
    int async;
    int fail;            /* < 0: lookup returns it (cannot answer now) */
    int store_rc;        /* < 0: store refuses with it */
    int null_op;         /* async: hand out NULL as the op */
    cache_entry_t *have; /* what a lookup finds (the fake's reference), or NULL */
    int lookups, cancels, stores;
    cache_key_t last_key;
    uint64_t last_ns;
    uint64_t store_ttl[FAKE_STORES];
    cache_entry_t *kept; /* the last entry it took (the fake's reference) */
    int pending;         /* async: a lookup waits for fire() */
    cache_tier_get_fn cb;
    void *user;
} fake_t;

static int fake_lookup(cache_tier_t *t, const cache_key_t *key, uint64_t ns, cache_tier_get_fn cb,
                       void *user, void **op, cache_entry_t **hit)
{
    fake_t *f = t->impl;
    f->lookups++;
    f->last_key = *key;
    f->last_ns = ns;
    if (f->fail < 0) return f->fail;
    if (!f->async) {
        *hit = f->have ? cache_entry_ref(f->have) : NULL;
        return 1;
    }
    assert_false(f->pending); /* one lookup at a time per fake */
    f->pending = 1;
    f->cb = cb;
    f->user = user;
    *op = f->null_op ? NULL : (void *)&f->pending;
    return 0;
}

static void fake_cancel(cache_tier_t *t, void *op)
{
    fake_t *f = t->impl;
    f->cancels++;
    assert_true(f->pending);
    assert_ptr_equal(op, f->null_op ? NULL : (void *)&f->pending);
    f->pending = 0;
}

static int fake_store(cache_tier_t *t, cache_entry_t *e, uint64_t ttl_ms)
{
    fake_t *f = t->impl;
    assert_true(f->stores < FAKE_STORES);
    f->store_ttl[f->stores++] = ttl_ms;
    if (f->store_rc < 0) return f->store_rc;
    cache_entry_release(f->kept);
    f->kept = cache_entry_ref(e);
    return 0;
}

static long long fake_purge(cache_tier_t *t, cache_purge_kind_t kind, uint64_t ns,
                            const cache_key_t *key, cache_tier_purged_fn cb, void *user)
{
    (void)t, (void)kind, (void)ns, (void)key, (void)cb, (void)user;
    return 0;
}

static void fake_stats(cache_tier_t *t, cache_tier_stats_t *out)
{
    (void)t;
    memset(out, 0, sizeof *out);
}

static const cache_tier_ops_t FAKE_OPS = {"fake",     fake_lookup, fake_cancel,
                                          fake_store, fake_purge,  fake_stats};

static void fake_init(fake_t *f, int async)
{
    memset(f, 0, sizeof *f);
    f->async = async;
    f->t.ops = &FAKE_OPS;
    f->t.impl = f;
}

/* What the fake finds from now on (it takes its own reference). */
static void fake_has(fake_t *f, cache_entry_t *e)
{
    cache_entry_release(f->have);
    f->have = e ? cache_entry_ref(e) : NULL;
}

/* Answer the pending asynchronous lookup with what the fake has. */
static void fire(fake_t *f)
{
    assert_true(f->async);
    assert_true(f->pending);
    f->pending = 0;
    f->cb(f->user, f->have ? cache_entry_ref(f->have) : NULL);
}

static void fake_done(fake_t *f)
{
    assert_false(f->pending);
    cache_entry_release(f->have);
    cache_entry_release(f->kept);
    f->have = f->kept = NULL;
}

/* ---- walks ---- */

static void set_tiers(cache_tiers_t *ts, cache_tier_t *a, cache_tier_t *b, cache_tier_t *c)
{
    memset(ts, 0, sizeof *ts);
    cache_tier_t *v[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (v[i]) assert_int_equal(cache_tiers_add(ts, v[i]), 0);
}

typedef struct {
    int calls;
    cache_entry_t *e;
    int tier;
} done_t;

static void on_done(void *user, cache_entry_t *e, int tier)
{
    done_t *d = user;
    d->calls++;
    d->e = e;
    d->tier = tier;
}

/* the out parameters start as garbage so that "set to NULL / -1" can fail */
static cache_entry_t poison;
#define POISON_OP ((cache_walk_t *)&poison)

typedef struct {
    int rc;
    cache_walk_t *op;
    cache_entry_t *hit;
    int tier;
    done_t done;
} walk_t;

static void walk(walk_t *w, cache_tiers_t *ts, int id, long long max_age_ms)
{
    memset(w, 0, sizeof *w);
    w->op = POISON_OP;
    w->hit = &poison;
    w->tier = 99;
    w->done.tier = 99;
    cache_key_t k = key_n(id);
    w->rc = cache_tiers_lookup(ts, &k, NS, max_age_ms, NOW_MS, on_done, &w->done, &w->op, &w->hit,
                               &w->tier);
}

static void assert_sync_miss(const walk_t *w)
{
    assert_int_equal(w->rc, 1);
    assert_null(w->op);
    assert_null(w->hit);
    assert_int_equal(w->tier, -1);
    assert_int_equal(w->done.calls, 0);
}

static void assert_sync_hit(const walk_t *w, const cache_entry_t *e, int tier)
{
    assert_int_equal(w->rc, 1);
    assert_null(w->op);
    assert_ptr_equal(w->hit, e);
    assert_int_equal(w->tier, tier);
    assert_int_equal(w->done.calls, 0);
}

static void assert_pending(const walk_t *w)
{
    assert_int_equal(w->rc, 0);
    assert_non_null(w->op);
    assert_ptr_not_equal(w->op, POISON_OP);
    assert_null(w->hit); /* no reference is handed over yet */
    assert_int_equal(w->done.calls, 0);
}

static void assert_counts(const cache_tiers_t *ts, uint64_t h0, uint64_t h1, uint64_t h2,
                          uint64_t misses)
{
    assert_int_equal(ts->hits[0], h0);
    assert_int_equal(ts->hits[1], h1);
    assert_int_equal(ts->hits[2], h2);
    assert_int_equal(ts->misses, misses);
}

/* ---- cases ---- */

static void test_miss_sync(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1, s2;
    fake_init(&s1, 0);
    fake_init(&s2, 0);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, &s2.t);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_miss(&w);
    assert_int_equal(s1.lookups, 1);
    assert_int_equal(s2.lookups, 1);
    cache_key_t k = key_n(1);
    assert_memory_equal(&s2.last_key, &k, sizeof k); /* the walk's key and namespace */
    assert_int_equal(s2.last_ns, NS);
    assert_int_equal(s1.stores + s2.stores, 0);
    assert_counts(&ts, 0, 0, 0, 1);
    walk(&w, &ts, 2, -1);
    assert_sync_miss(&w);
    assert_counts(&ts, 0, 0, 0, 2);

    /* no tiers at all: a miss */
    cache_tiers_t none;
    memset(&none, 0, sizeof none);
    walk(&w, &none, 1, -1);
    assert_sync_miss(&w);
    assert_int_equal(none.misses, 1);

    fake_done(&s1);
    fake_done(&s2);
    cache_l1_destroy(l1);
}

static void test_miss_async(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t a1, a2;
    fake_init(&a1, 1);
    fake_init(&a2, 1);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &a1.t, &a2.t);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    assert_int_equal(a1.lookups, 1);
    assert_int_equal(a2.lookups, 0); /* one tier at a time */
    fire(&a1);                       /* miss: on to a2 */
    assert_int_equal(a2.lookups, 1);
    assert_true(a2.pending);
    assert_int_equal(w.done.calls, 0);
    assert_int_equal(ts.misses, 0);
    fire(&a2);
    assert_int_equal(w.done.calls, 1);
    assert_null(w.done.e);
    assert_int_equal(w.done.tier, -1);
    assert_counts(&ts, 0, 0, 0, 1);
    assert_int_equal(a1.cancels + a2.cancels, 0);

    fake_done(&a1);
    fake_done(&a2);
    cache_l1_destroy(l1);
}

static void test_hit_tier0(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    cache_entry_t *e = mk(1, NOW_MS - 1000, 60000);
    assert_int_equal(cache_l1_put(l1, e, 60000, 0), 0);
    fake_t s1;
    fake_init(&s1, 0);
    fake_has(&s1, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, NULL);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 0);
    assert_int_equal(s1.lookups, 0); /* the walk stops at the first hit */
    assert_int_equal(s1.stores, 0);
    assert_counts(&ts, 1, 0, 0, 0);
    assert_int_equal(e->refs, 4); /* test, L1, s1, the hit */
    cache_entry_release(w.hit);

    /* a fake as tier 0 (the generic path): same answer, nothing stored */
    fake_t s0;
    fake_init(&s0, 0);
    fake_has(&s0, e);
    set_tiers(&ts, &s0.t, &s1.t, NULL);
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 0);
    assert_int_equal(s1.lookups, 0);
    assert_int_equal(s0.stores + s1.stores, 0);
    assert_counts(&ts, 1, 0, 0, 0);
    cache_entry_release(w.hit);

    fake_done(&s0);
    fake_done(&s1);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_hit_sync_promotes(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1, s2;
    fake_init(&s1, 0);
    fake_init(&s2, 0);
    cache_entry_t *e = mk(1, NOW_MS - 10000, 60000); /* 50 s left */
    fake_has(&s2, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, &s2.t);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_int_equal(s1.stores, 1); /* promoted into every earlier tier */
    assert_int_equal(s1.store_ttl[0], 50000);
    assert_ptr_equal(s1.kept, e);
    assert_int_equal(s2.stores, 0); /* not back into the tier it came from */
    assert_ptr_equal(l1_peek(l1, 1), e);
    assert_int_equal(e->refs, 5); /* test, s2, s1, L1, the hit */
    cache_entry_release(w.hit);

    /* the L1 keeps it for the 50 s it had left, not the full 60 */
    l1_clock = 1049.999;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 0);
    assert_int_equal(s1.lookups, 1);
    cache_entry_release(w.hit);
    l1_clock = 1050.0;
    assert_null(l1_peek(l1, 1));

    fake_done(&s1);
    fake_done(&s2);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_hit_async_promotes(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1, a2;
    fake_init(&s1, 0);
    fake_init(&a2, 1);
    cache_entry_t *e = mk(1, NOW_MS - 1000, 3000); /* 2 s left */
    fake_has(&a2, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, &a2.t);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    assert_int_equal(s1.lookups, 1);
    assert_int_equal(a2.lookups, 1);
    assert_int_equal(s1.stores, 0); /* nothing promoted before the answer */
    assert_null(l1_peek(l1, 1));
    assert_int_equal(e->refs, 2);

    fire(&a2);
    assert_int_equal(w.done.calls, 1);
    assert_ptr_equal(w.done.e, e);
    assert_int_equal(w.done.tier, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_int_equal(s1.stores, 1);
    assert_int_equal(s1.store_ttl[0], 2000);
    assert_ptr_equal(l1_peek(l1, 1), e);
    assert_int_equal(a2.stores, 0);
    assert_int_equal(e->refs, 5); /* test, a2, s1, L1, the walk's answer */
    cache_entry_release(w.done.e);

    l1_clock = 1001.999;
    assert_ptr_equal(l1_peek(l1, 1), e);
    l1_clock = 1002.0;
    assert_null(l1_peek(l1, 1));

    fake_done(&s1);
    fake_done(&a2);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_async_miss_continues(void **st)
{
    (void)st;
    cache_entry_t *e = mk(1, NOW_MS - 500, 1000); /* 500 ms left */

    /* a synchronous tier after an asynchronous miss */
    fake_t a0, s1;
    fake_init(&a0, 1);
    fake_init(&s1, 0);
    fake_has(&s1, e);
    cache_tiers_t ts;
    set_tiers(&ts, &a0.t, &s1.t, NULL);
    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    assert_int_equal(s1.lookups, 0);
    fire(&a0);
    assert_int_equal(s1.lookups, 1);
    assert_int_equal(w.done.calls, 1);
    assert_ptr_equal(w.done.e, e);
    assert_int_equal(w.done.tier, 1);
    assert_counts(&ts, 0, 1, 0, 0);
    assert_int_equal(a0.stores, 1); /* promoted into the tier that missed */
    assert_int_equal(a0.store_ttl[0], 500);
    assert_ptr_equal(a0.kept, e);
    cache_entry_release(w.done.e);
    fake_done(&a0);
    fake_done(&s1);

    /* an asynchronous tier after an asynchronous miss */
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t a1, a2;
    fake_init(&a1, 1);
    fake_init(&a2, 1);
    fake_has(&a2, e);
    set_tiers(&ts, &t0, &a1.t, &a2.t);
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    assert_int_equal(a2.lookups, 0);
    fire(&a1);
    assert_int_equal(a2.lookups, 1);
    assert_int_equal(w.done.calls, 0);
    fire(&a2);
    assert_int_equal(w.done.calls, 1);
    assert_ptr_equal(w.done.e, e);
    assert_int_equal(w.done.tier, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_int_equal(a1.stores, 1);
    assert_int_equal(a1.store_ttl[0], 500);
    assert_int_equal(a2.stores, 0);
    assert_ptr_equal(l1_peek(l1, 1), e);
    cache_entry_release(w.done.e);
    fake_done(&a1);
    fake_done(&a2);
    cache_l1_destroy(l1);

    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_max_age(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1;
    fake_init(&s1, 0);
    cache_entry_t *e = mk(1, NOW_MS - 5000, 0); /* 5 s old */
    fake_has(&s1, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, NULL);

    /* older than max-age: a miss, and not promoted */
    walk_t w;
    walk(&w, &ts, 1, 4999);
    assert_sync_miss(&w);
    assert_counts(&ts, 0, 0, 0, 1);
    assert_null(l1_peek(l1, 1));
    assert_int_equal(e->refs, 2); /* the walk dropped what s1 handed it */

    /* exactly max-age old is young enough */
    walk(&w, &ts, 1, 5000);
    assert_sync_hit(&w, e, 1);
    assert_ptr_equal(l1_peek(l1, 1), e);
    cache_entry_release(w.hit);

    /* the L1 copy is as old: skipped, and s1's is too */
    walk(&w, &ts, 1, 4999);
    assert_sync_miss(&w);
    assert_int_equal(s1.lookups, 3);
    assert_counts(&ts, 0, 1, 0, 2);

    /* a fresher entry further on replaces the stale L1 copy */
    cache_entry_t *e2 = mk(1, NOW_MS - 100, 0);
    fake_has(&s1, e2);
    walk(&w, &ts, 1, 4999);
    assert_sync_hit(&w, e2, 1);
    assert_ptr_equal(l1_peek(l1, 1), e2);
    cache_entry_release(w.hit);

    /* -1: any age */
    cache_entry_t *old = mk(2, 0, 0); /* stored at the epoch */
    fake_has(&s1, old);
    walk(&w, &ts, 2, -1);
    assert_sync_hit(&w, old, 1);
    cache_entry_release(w.hit);
    assert_counts(&ts, 0, 3, 0, 2);

    /* an asynchronous stale answer is a miss too: the walk goes on */
    fake_t s0, a1, s2;
    fake_init(&s0, 0);
    fake_init(&a1, 1);
    fake_init(&s2, 0);
    fake_has(&a1, e);
    fake_has(&s2, e2);
    set_tiers(&ts, &s0.t, &a1.t, &s2.t);
    walk(&w, &ts, 1, 4999);
    assert_pending(&w);
    fire(&a1);
    assert_int_equal(s2.lookups, 1);
    assert_int_equal(w.done.calls, 1);
    assert_ptr_equal(w.done.e, e2);
    assert_int_equal(w.done.tier, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_ptr_equal(s0.kept, e2);
    assert_ptr_equal(a1.kept, e2);
    cache_entry_release(w.done.e);
    /* ... and with nothing after it, the walk ends in a miss */
    set_tiers(&ts, &s0.t, &a1.t, NULL);
    walk(&w, &ts, 1, 4999);
    assert_pending(&w);
    fire(&a1);
    assert_int_equal(w.done.calls, 1);
    assert_null(w.done.e);
    assert_int_equal(w.done.tier, -1);
    assert_counts(&ts, 0, 0, 0, 1);
    assert_int_equal(s0.stores, 1); /* only the earlier promotion */

    fake_done(&s0);
    fake_done(&a1);
    fake_done(&s1);
    fake_done(&s2);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    assert_int_equal(e2->refs, 1);
    assert_int_equal(old->refs, 1);
    cache_entry_release(e);
    cache_entry_release(e2);
    cache_entry_release(old);
}

static void test_expired_on_the_way(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s0, s1;
    fake_init(&s0, 0);
    fake_init(&s1, 0);
    cache_entry_t *gone = mk(1, NOW_MS - 60000, 60000); /* 0 ms left */
    fake_has(&s1, gone);
    cache_tiers_t ts;

    /* served, but no tier keeps a copy */
    set_tiers(&ts, &t0, &s0.t, &s1.t);
    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, gone, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_int_equal(s0.stores, 0);
    assert_null(l1_peek(l1, 1));
    cache_entry_release(w.hit);

    /* the same from an asynchronous tier */
    fake_t a1;
    fake_init(&a1, 1);
    fake_has(&a1, gone);
    set_tiers(&ts, &t0, &s0.t, &a1.t);
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    fire(&a1);
    assert_ptr_equal(w.done.e, gone);
    assert_int_equal(w.done.tier, 2);
    assert_int_equal(s0.stores, 0);
    assert_null(l1_peek(l1, 1));
    cache_entry_release(w.done.e);

    /* 1 ms left: promoted for that 1 ms */
    cache_entry_t *last = mk(1, NOW_MS - 59999, 60000);
    fake_has(&s1, last);
    set_tiers(&ts, &s0.t, &s1.t, NULL);
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, last, 1);
    assert_int_equal(s0.stores, 1);
    assert_int_equal(s0.store_ttl[0], 1);
    cache_entry_release(w.hit);

    fake_done(&s0);
    fake_done(&s1);
    fake_done(&a1);
    cache_l1_destroy(l1);
    assert_int_equal(gone->refs, 1);
    assert_int_equal(last->refs, 1);
    cache_entry_release(gone);
    cache_entry_release(last);
}

static void test_ttl_zero(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1, s2;
    fake_init(&s1, 0);
    fake_init(&s2, 0);
    s1.store_ttl[0] = 12345;                          /* must be overwritten with 0 */
    cache_entry_t *e = mk(1, NOW_MS - 1000000000, 0); /* never expires */
    fake_has(&s2, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, &s2.t);

    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 2);
    assert_int_equal(s1.stores, 1);
    assert_int_equal(s1.store_ttl[0], 0);
    cache_entry_release(w.hit);
    l1_clock += 1e9; /* the L1 copy has no expiry either */
    assert_ptr_equal(l1_peek(l1, 1), e);

    fake_done(&s1);
    fake_done(&s2);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

/* TTLs and clocks at the edges of their types: the TTL left is exact, and no
 * arithmetic overflows (UBSan aborts the sanitizer build if one does). */
static void test_ttl_edges(void **st)
{
    (void)st;
    fake_t s0, s1;
    fake_init(&s0, 0);
    fake_init(&s1, 0);
    cache_tiers_t ts;
    set_tiers(&ts, &s0.t, &s1.t, NULL);
    walk_t w;

    struct {
        int64_t stored_ms;
        uint64_t ttl_ms;
        long long max_age_ms;
        int hit, promoted;
        uint64_t ttl_left;
    } cases[] = {
        {NOW_MS - 1000, UINT64_MAX, -1, 1, 1, UINT64_MAX - 1000}, /* beyond int64 */
        {NOW_MS - 1000, INT64_MAX, -1, 1, 1, (uint64_t)INT64_MAX - 1000},
        {NOW_MS + 2000, 5000, 0, 1, 1, 7000},              /* stored ahead of now */
        {NOW_MS + 2000, UINT64_MAX, -1, 1, 1, UINT64_MAX}, /* saturates */
        {INT64_MIN, 1000, 1000000, 0, 0, 0},               /* absurdly old: too old */
        {INT64_MIN, 1000, -1, 1, 0, 0},                    /* ... and long expired */
        {INT64_MAX, 0, 0, 1, 1, 0},                        /* far future, no expiry */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cache_entry_t *e = mk(1, cases[i].stored_ms, cases[i].ttl_ms);
        fake_has(&s1, e);
        s0.stores = 0;
        s0.store_ttl[0] = 12345;
        walk(&w, &ts, 1, cases[i].max_age_ms);
        if (cases[i].hit) {
            assert_sync_hit(&w, e, 1);
            cache_entry_release(w.hit);
        } else {
            assert_sync_miss(&w);
        }
        assert_int_equal(s0.stores, cases[i].promoted);
        if (cases[i].promoted) assert_true(s0.store_ttl[0] == cases[i].ttl_left);
        cache_entry_release(e);
    }
    fake_done(&s0);
    fake_done(&s1);
}

static void test_cancel(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t a1, a2;
    fake_init(&a1, 1);
    fake_init(&a2, 1);
    cache_entry_t *e = mk(1, NOW_MS, 0);
    fake_has(&a1, e);
    fake_has(&a2, e);
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &a1.t, NULL);

    /* pending in a1: the cancel reaches a1, and the walk never answers */
    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    cache_tiers_cancel(&ts, w.op);
    assert_int_equal(a1.cancels, 1);
    assert_false(a1.pending);
    assert_int_equal(w.done.calls, 0);
    assert_counts(&ts, 0, 0, 0, 0);
    assert_int_equal(a1.stores, 0);
    assert_null(l1_peek(l1, 1));

    /* pending in a2 after a1 missed: only a2 is cancelled */
    fake_has(&a1, NULL);
    set_tiers(&ts, &t0, &a1.t, &a2.t);
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    fire(&a1);
    assert_true(a2.pending);
    cache_tiers_cancel(&ts, w.op);
    assert_int_equal(a1.cancels, 1);
    assert_int_equal(a2.cancels, 1);
    assert_false(a2.pending);
    assert_int_equal(w.done.calls, 0);
    assert_counts(&ts, 0, 0, 0, 0);

    /* a tier whose op handle is NULL is still cancelled (the walk must not
     * take a NULL op for "nothing pending": the tier would call back into a
     * freed walk) */
    fake_t an;
    fake_init(&an, 1);
    an.null_op = 1;
    set_tiers(&ts, &an.t, NULL, NULL);
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    cache_tiers_cancel(&ts, w.op);
    assert_int_equal(an.cancels, 1);
    assert_false(an.pending);

    /* a NULL walk: nothing happens */
    cache_tiers_cancel(&ts, NULL);
    assert_int_equal(an.cancels, 1);

    fake_done(&a1);
    fake_done(&a2);
    fake_done(&an);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_lookup_error(void **st)
{
    (void)st;
    fake_t s0, a1, s2;
    fake_init(&s0, 0);
    fake_init(&a1, 1);
    fake_init(&s2, 0);
    s0.fail = BAR_ERR_BUSY;
    a1.fail = BAR_ERR_TIMEOUT;
    cache_entry_t *e = mk(1, NOW_MS - 1000, 10000);
    fake_has(&s0, e); /* what it would find, if it could answer */
    fake_has(&s2, e);
    cache_tiers_t ts;
    set_tiers(&ts, &s0.t, &a1.t, &s2.t);

    /* both cannot answer: misses there, the walk goes on and ends at once */
    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, 2);
    assert_int_equal(s0.lookups, 1);
    assert_int_equal(a1.lookups, 1);
    assert_false(a1.pending);
    assert_counts(&ts, 0, 0, 1, 0);
    assert_int_equal(s0.stores, 1); /* promotion still goes to every earlier tier */
    assert_int_equal(s0.store_ttl[0], 9000);
    assert_int_equal(a1.stores, 1);
    cache_entry_release(w.hit);

    /* nothing answers: a miss */
    fake_has(&s2, NULL);
    s2.fail = BAR_ERR_IO;
    walk(&w, &ts, 1, -1);
    assert_sync_miss(&w);
    assert_counts(&ts, 0, 0, 1, 1);

    /* after an asynchronous miss */
    fake_t a0;
    fake_init(&a0, 1);
    s2.fail = 0;
    fake_has(&s2, e);
    set_tiers(&ts, &a0.t, &s0.t, &s2.t);
    walk(&w, &ts, 1, -1);
    assert_pending(&w);
    fire(&a0);
    assert_int_equal(w.done.calls, 1);
    assert_ptr_equal(w.done.e, e);
    assert_int_equal(w.done.tier, 2);
    assert_counts(&ts, 0, 0, 1, 0);
    cache_entry_release(w.done.e);

    fake_done(&s0);
    fake_done(&a0);
    fake_done(&a1);
    fake_done(&s2);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_store(void **st)
{
    (void)st;
    cache_l1_t *l1 = mk_l1();
    cache_tier_t t0;
    cache_tier_l1(&t0, l1);
    fake_t s1, a2;
    fake_init(&s1, 0);
    fake_init(&a2, 1);
    a2.store_rc = BAR_ERR_BUSY;
    cache_tiers_t ts;
    set_tiers(&ts, &t0, &s1.t, &a2.t);
    cache_entry_t *e = mk(1, NOW_MS, 30000);

    assert_int_equal(cache_tiers_store(&ts, e, 30000), 2);
    assert_int_equal(s1.stores, 1);
    assert_int_equal(s1.store_ttl[0], 30000);
    assert_ptr_equal(s1.kept, e);
    assert_int_equal(a2.stores, 1); /* asked, refused */
    assert_int_equal(a2.store_ttl[0], 30000);
    assert_null(a2.kept);
    assert_int_equal(s1.lookups + a2.lookups, 0);
    assert_int_equal(e->refs, 3); /* test, L1, s1 */
    l1_clock = 1029.999;
    assert_ptr_equal(l1_peek(l1, 1), e);
    l1_clock = 1030.0;
    assert_null(l1_peek(l1, 1));

    /* every tier refusing: 0 */
    s1.store_rc = BAR_ERR_IO;
    set_tiers(&ts, &s1.t, &a2.t, NULL);
    assert_int_equal(cache_tiers_store(&ts, e, 0), 0);
    assert_int_equal(s1.stores, 2);
    assert_int_equal(a2.stores, 2);

    fake_done(&s1);
    fake_done(&a2);
    cache_l1_destroy(l1);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

static void test_add_limit(void **st)
{
    (void)st;
    fake_t f[CACHE_TIERS_MAX + 1];
    cache_tiers_t ts;
    memset(&ts, 0, sizeof ts);
    for (int i = 0; i <= CACHE_TIERS_MAX; i++)
        fake_init(&f[i], 0);
    for (int i = 0; i < CACHE_TIERS_MAX; i++) {
        assert_int_equal(cache_tiers_add(&ts, &f[i].t), 0);
        assert_int_equal(ts.n, i + 1);
        assert_ptr_equal(ts.v[i], &f[i].t);
    }
    assert_int_equal(cache_tiers_add(&ts, &f[CACHE_TIERS_MAX].t), BAR_ERR_RANGE);
    assert_int_equal(ts.n, CACHE_TIERS_MAX);
    assert_ptr_equal(ts.v[CACHE_TIERS_MAX - 1], &f[CACHE_TIERS_MAX - 1].t);

    /* a full list walks all of them: a hit in the last is promoted into all
     * the others, and the refused tier is never asked */
    cache_entry_t *e = mk(1, NOW_MS - 10, 100);
    fake_has(&f[CACHE_TIERS_MAX - 1], e);
    walk_t w;
    walk(&w, &ts, 1, -1);
    assert_sync_hit(&w, e, CACHE_TIERS_MAX - 1);
    assert_int_equal(ts.hits[CACHE_TIERS_MAX - 1], 1);
    for (int i = 0; i < CACHE_TIERS_MAX - 1; i++) {
        assert_int_equal(f[i].lookups, 1);
        assert_int_equal(f[i].stores, 1);
        assert_int_equal(f[i].store_ttl[0], 90);
    }
    assert_int_equal(f[CACHE_TIERS_MAX].lookups, 0);
    cache_entry_release(w.hit);
    for (int i = 0; i <= CACHE_TIERS_MAX; i++)
        fake_done(&f[i]);
    assert_int_equal(e->refs, 1);
    cache_entry_release(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_miss_sync),
        cmocka_unit_test(test_miss_async),
        cmocka_unit_test(test_hit_tier0),
        cmocka_unit_test(test_hit_sync_promotes),
        cmocka_unit_test(test_hit_async_promotes),
        cmocka_unit_test(test_async_miss_continues),
        cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_expired_on_the_way),
        cmocka_unit_test(test_ttl_zero),
        cmocka_unit_test(test_ttl_edges),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_lookup_error),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_add_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
