/* test_singleflight.c — in-flight coalescing records
 * (src/cache/singleflight.c): begin/find/join, leave in any order, the last
 * leaver detaches and fires on_empty exactly once, finish frees, foreach
 * with leaving, many keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "cache/singleflight.h"

static cache_key_t key_n(int id)
{
    cache_key_t k;
    memset(&k, 0, sizeof k);
    memcpy(k.b + 8, &id, sizeof id);
    k.b[0] = (uint8_t)id;
    return k;
}

typedef struct {
    int fired;
    sf_entry_t *last;
    sf_t *sf;
    int finish_in_cb;
} ctx_t;

static void on_empty(void *c, sf_entry_t *e)
{
    ctx_t *x = c;
    x->fired++;
    x->last = e;
    if (x->finish_in_cb) sf_finish(x->sf, e);
}

static void test_join_leave(void **st)
{
    (void)st;
    ctx_t c = {0};
    sf_t *sf = sf_create(on_empty, &c);
    c.sf = sf;
    cache_key_t k = key_n(1);
    assert_null(sf_find(sf, &k));
    int gen = 42, a, b, d;
    sf_entry_t *e = sf_begin(sf, &k, &gen);
    assert_non_null(e);
    assert_null(sf_begin(sf, &k, &gen)); /* one per key */
    assert_ptr_equal(sf_find(sf, &k), e);
    assert_ptr_equal(sf_data(e), &gen);
    assert_true(cache_key_equal(sf_key(e), &k));
    assert_int_equal(sf_size(sf), 1);
    assert_int_equal(sf_join(e, &a), 0);
    assert_int_equal(sf_join(e, &b), 0);
    assert_int_equal(sf_join(e, &d), 0);
    assert_int_equal(sf_join(e, &a), BAR_ERR_INVALID); /* once */
    assert_int_equal(sf_join(e, NULL), BAR_ERR_INVALID);
    assert_int_equal(sf_count(e), 3);
    assert_ptr_equal(sf_subscriber(e, 0), &a);
    assert_ptr_equal(sf_subscriber(e, 2), &d);
    assert_null(sf_subscriber(e, 3));
    /* the originator leaves first: the others keep the generation */
    assert_int_equal(sf_leave(e, &a), 2);
    assert_int_equal(sf_leave(e, &a), BAR_ERR_NOTFOUND);
    assert_ptr_equal(sf_subscriber(e, 0), &b); /* join order kept */
    assert_int_equal(c.fired, 0);
    assert_ptr_equal(sf_find(sf, &k), e);
    assert_int_equal(sf_leave(e, &d), 1);
    assert_int_equal(c.fired, 0);
    /* last one out: detached, on_empty once */
    assert_int_equal(sf_leave(e, &b), 0);
    assert_int_equal(c.fired, 1);
    assert_ptr_equal(c.last, e);
    assert_false(sf_attached(e));
    assert_null(sf_find(sf, &k));
    assert_int_equal(sf_size(sf), 0);
    assert_int_equal(sf_join(e, &a), BAR_ERR_INVALID); /* no joining a cancelled one */
    /* a new twin now starts its own generation while the old one winds down */
    sf_entry_t *e2 = sf_begin(sf, &k, NULL);
    assert_non_null(e2);
    assert_ptr_not_equal(e2, e);
    sf_finish(sf, e); /* the old generation's DONE */
    assert_ptr_equal(sf_find(sf, &k), e2);
    /* finish while subscribers remain: removed, no on_empty */
    assert_int_equal(sf_join(e2, &a), 0);
    sf_finish(sf, e2);
    assert_null(sf_find(sf, &k));
    assert_int_equal(c.fired, 1);
    sf_destroy(sf);
}

static void test_finish_in_callback(void **st)
{
    (void)st;
    ctx_t c = {0};
    sf_t *sf = sf_create(on_empty, &c);
    c.sf = sf;
    c.finish_in_cb = 1;
    cache_key_t k = key_n(2);
    int a;
    sf_entry_t *e = sf_begin(sf, &k, NULL);
    sf_join(e, &a);
    assert_int_equal(sf_leave(e, &a), 0); /* e freed inside on_empty (ASan checks) */
    assert_int_equal(c.fired, 1);
    assert_null(sf_find(sf, &k));
    sf_destroy(sf);
}

typedef struct {
    int visited[8];
    int n;
    int leave_every;
} walk_t;

static void visit(void *ctx, sf_entry_t *e, void *sub)
{
    walk_t *w = ctx;
    w->visited[w->n++] = *(int *)sub;
    if (w->leave_every) sf_leave(e, sub);
}

static void test_foreach(void **st)
{
    (void)st;
    ctx_t c = {0};
    sf_t *sf = sf_create(on_empty, &c);
    c.sf = sf;
    cache_key_t k = key_n(3);
    int subs[5] = {10, 11, 12, 13, 14};
    sf_entry_t *e = sf_begin(sf, &k, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sf_join(e, &subs[i]), 0);
    walk_t w = {{0}, 0, 0};
    sf_foreach(e, visit, &w);
    assert_int_equal(w.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(w.visited[i], 10 + i);
    /* every visited subscriber leaves (e.g. non-streaming joiners answered
     * at DONE): each is visited once, on_empty fires after the walk */
    walk_t w2 = {{0}, 0, 1};
    sf_foreach(e, visit, &w2);
    assert_int_equal(w2.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(w2.visited[i], 10 + i);
    assert_int_equal(sf_count(e), 0);
    assert_int_equal(c.fired, 1);
    sf_finish(sf, e);
    sf_destroy(sf);
}

static void test_many_keys(void **st)
{
    (void)st;
    sf_t *sf = sf_create(NULL, NULL);
    static int subs[2000];
    sf_entry_t *es[2000];
    for (int i = 0; i < 2000; i++) {
        cache_key_t k = key_n(i);
        es[i] = sf_begin(sf, &k, &subs[i]);
        assert_non_null(es[i]);
        assert_int_equal(sf_join(es[i], &subs[i]), 0);
    }
    assert_int_equal(sf_size(sf), 2000);
    for (int i = 0; i < 2000; i++) {
        cache_key_t k = key_n(i);
        assert_ptr_equal(sf_find(sf, &k), es[i]);
    }
    for (int i = 0; i < 2000; i += 2) {
        assert_int_equal(sf_leave(es[i], &subs[i]), 0); /* NULL on_empty is fine */
        sf_finish(sf, es[i]);
    }
    assert_int_equal(sf_size(sf), 1000);
    for (int i = 0; i < 2000; i++) {
        cache_key_t k = key_n(i);
        assert_ptr_equal(sf_find(sf, &k), i % 2 ? es[i] : NULL);
    }
    /* destroy frees attached and detached-but-unfinished records */
    assert_int_equal(sf_leave(es[1], &subs[1]), 0);
    sf_destroy(sf);
    sf_destroy(NULL);
    sf_finish(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_leave),
        cmocka_unit_test(test_finish_in_callback),
        cmocka_unit_test(test_foreach),
        cmocka_unit_test(test_many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
