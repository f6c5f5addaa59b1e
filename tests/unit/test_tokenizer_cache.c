/* test_tokenizer_cache.c — the prompt text → token ids feature cache
 * (src/engine/tokenizer_cache.c): a prompt put is got back equal (a copy the
 * caller owns), misses and hits are counted, the byte bound evicts the least
 * recently used entries first and never keeps an entry of more than a
 * quarter of the budget, a key is a function of every part and of where the
 * parts split, completion and chat keys never meet, and concurrent users
 * (loop + thread pool) leave it consistent. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/tokenizer_cache.h"
#include "util/err.h"

static void fill(int32_t *v, size_t n, int32_t base)
{
    for (size_t i = 0; i < n; i++)
        v[i] = base + (int32_t)i;
}

static void test_put_get(void **state)
{
    (void)state;
    tok_cache_t *c;
    assert_int_equal(tok_cache_create(&c, 1 << 20), 0);
    int32_t ids[10];
    fill(ids, 10, 100);
    tok_cache_key_t k = tok_cache_key_text("hello world", 11, 1, 0);
    int32_t *got;
    size_t n;
    assert_int_equal(tok_cache_get(c, k, &got, &n), 0); /* empty */
    tok_cache_put(c, k, ids, 10);
    ids[0] = -1; /* the cache kept a copy */
    assert_int_equal(tok_cache_get(c, k, &got, &n), 1);
    assert_int_equal(n, 10);
    assert_int_equal(got[0], 100);
    assert_int_equal(got[9], 109);
    got[1] = -5; /* and handed out a copy */
    free(got);
    assert_int_equal(tok_cache_get(c, k, &got, &n), 1);
    assert_int_equal(got[1], 101);
    free(got);
    /* another text, or the same with other flags: a miss */
    assert_int_equal(tok_cache_get(c, tok_cache_key_text("hello world!", 12, 1, 0), &got, &n), 0);
    assert_int_equal(tok_cache_get(c, tok_cache_key_text("hello world", 11, 0, 0), &got, &n), 0);
    assert_null(got);
    /* a put of the same key replaces */
    fill(ids, 3, 7);
    tok_cache_put(c, k, ids, 3);
    assert_int_equal(tok_cache_get(c, k, &got, &n), 1);
    assert_int_equal(n, 3);
    assert_int_equal(got[2], 9);
    free(got);
    tok_cache_stats_t st;
    tok_cache_stats(c, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, TOK_CACHE_ENTRY_OVERHEAD + 3 * 4);
    tok_cache_destroy(c);
}

static void test_byte_bound_lru(void **state)
{
    (void)state;
    /* room for exactly 4 entries of 100 ids */
    size_t one = TOK_CACHE_ENTRY_OVERHEAD + 100 * 4;
    tok_cache_t *c;
    assert_int_equal(tok_cache_create(&c, 4 * one), 0);
    int32_t ids[100];
    tok_cache_key_t k[6];
    char t[8];
    for (int i = 0; i < 6; i++) {
        t[0] = (char)('a' + i);
        k[i] = tok_cache_key_text(t, 1, 1, 0);
    }
    for (int i = 0; i < 4; i++) {
        fill(ids, 100, i * 1000);
        tok_cache_put(c, k[i], ids, 100);
    }
    int32_t *got;
    size_t n;
    assert_int_equal(tok_cache_get(c, k[0], &got, &n), 1); /* a is now the most recent */
    free(got);
    fill(ids, 100, 4000);
    tok_cache_put(c, k[4], ids, 100); /* evicts b, the least recent */
    assert_int_equal(tok_cache_get(c, k[1], &got, &n), 0);
    for (int i = 0; i < 5; i++) {
        if (i == 1) continue;
        assert_int_equal(tok_cache_get(c, k[i], &got, &n), 1);
        assert_int_equal(got[0], i * 1000);
        free(got);
    }
    tok_cache_stats_t st;
    tok_cache_stats(c, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 1);
    assert_true(st.bytes <= 4 * one);
    /* more than a quarter of the budget: not kept, nothing evicted */
    int32_t *big = calloc(200, sizeof *big);
    assert_non_null(big);
    tok_cache_put(c, k[5], big, 200);
    free(big);
    assert_int_equal(tok_cache_get(c, k[5], &got, &n), 0);
    tok_cache_stats(c, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 1);
    tok_cache_destroy(c);
}

static tok_cache_key_t chat_key(const char *const *parts, int n, int tmpl)
{
    tok_cache_key_t k = tok_cache_key_chat_init(tmpl, 1);
    for (int i = 0; i < n; i++)
        tok_cache_key_add(&k, parts[i], strlen(parts[i]));
    return k;
}

static int key_eq(tok_cache_key_t a, tok_cache_key_t b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

static void test_keys(void **state)
{
    (void)state;
    const char *a[] = {"user", "hello"};
    const char *b[] = {"user", "hell", "o"};
    const char *c[] = {"use", "rhello"};
    const char *d[] = {"user", "hello", "assistant", ""};
    assert_true(key_eq(chat_key(a, 2, 1), chat_key(a, 2, 1)));
    assert_false(key_eq(chat_key(a, 2, 1), chat_key(a, 2, 2))); /* template */
    assert_false(key_eq(chat_key(a, 2, 1), chat_key(b, 3, 1)));
    assert_false(key_eq(chat_key(a, 2, 1), chat_key(c, 2, 1))); /* where parts split */
    assert_false(key_eq(chat_key(a, 2, 1), chat_key(d, 4, 1))); /* an empty message counts */
    tok_cache_key_t k = tok_cache_key_chat_init(1, 1);
    tok_cache_key_t k0 = tok_cache_key_chat_init(1, 0);
    assert_false(key_eq(k, k0)); /* add_generation_prompt */
    assert_false(key_eq(tok_cache_key_text("userhello", 9, 1, 0), chat_key(a, 2, 1)));
    assert_false(
        key_eq(tok_cache_key_text("x", 1, 1, 0), tok_cache_key_text("x", 1, 1, 1))); /* flags */
    /* NULL cache: a miss, nothing kept, zero stats */
    int32_t *got = (int32_t *)1;
    size_t n = 5;
    int32_t one = 1;
    tok_cache_put(NULL, k, &one, 1);
    assert_int_equal(tok_cache_get(NULL, k, &got, &n), 0);
    assert_null(got);
    assert_int_equal(n, 0);
    tok_cache_stats_t st;
    tok_cache_stats(NULL, &st);
    assert_int_equal(st.hits + st.misses, 0);
    tok_cache_t *c0;
    assert_int_equal(tok_cache_create(&c0, 0), BAR_ERR_INVALID);
}

typedef struct {
    tok_cache_t *c;
    int seed;
} worker_t;

static void *worker(void *p)
{
    worker_t *w = p;
    int32_t ids[50];
    for (int r = 0; r < 3000; r++) {
        char t[16];
        /* every other request is one of 10 hot keys (hits whatever the
         * scheduling), the rest cycle through 1,000 cold ones (evictions) */
        int key = r % 2 ? (r / 2) % 10 : 100 + (r * 7 + w->seed) % 1000;
        int len = snprintf(t, sizeof t, "p%d", key);
        tok_cache_key_t k = tok_cache_key_text(t, (size_t)len, 1, 0);
        int32_t *got;
        size_t n;
        if (tok_cache_get(w->c, k, &got, &n)) {
            /* whatever thread put it, the ids are that key's */
            if (n != (size_t)(1 + key % 50) || got[0] != key) abort();
            free(got);
        } else {
            for (int i = 0; i < 50; i++)
                ids[i] = key;
            tok_cache_put(w->c, k, ids, (size_t)(1 + key % 50));
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    tok_cache_t *c;
    assert_int_equal(tok_cache_create(&c, 20000), 0); /* small: evictions happen */
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){c, i * 31};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    tok_cache_stats_t st;
    tok_cache_stats(c, &st);
    assert_int_equal(st.hits + st.misses, 4 * 3000);
    assert_true(st.hits > 0);
    assert_true(st.evictions > 0);
    assert_true(st.bytes <= 20000);
    tok_cache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_byte_bound_lru),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
