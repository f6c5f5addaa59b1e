/* test_semantic.c — the semantic tier's guard (cache/semantic_guard.c) and
 * store (cache/semantic.c): each guard check refuses the near misses it is
 * for and lets paraphrases through; the store answers only within its
 * (namespace, partition), at or above the threshold, past the guard, never
 * after expiry, deletion or a purge, and stays within its entry bound. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/semantic.h"
#include "cache/semantic_guard.h"

enum { DIM = 32 };

static semantic_guard_verdict_t check(const char *a, const char *b)
{
    semantic_guard_verdict_t v = semantic_guard_check(NULL, a, strlen(a), b, strlen(b));
    /* symmetric */
    assert_int_equal(v, semantic_guard_check(NULL, b, strlen(b), a, strlen(a)));
    return v;
}

static void test_guard_numbers(void **state)
{
    (void)state;
    assert_int_equal(check("Can I get a refund in 4 days?", "Can I get a refund in 10 days?"),
                     SEMANTIC_GUARD_NUMBER);
    assert_int_equal(
        check("Is 1,000 mg of vitamin C too much?", "Is 1000 mg of vitamin C too much?"),
        SEMANTIC_GUARD_PASS);
    assert_int_equal(check("What is 2.50 in euros?", "What is 2.5 in euros?"), SEMANTIC_GUARD_PASS);
    assert_int_equal(check("How to lose weight in ten days?", "How to lose weight in 10 days?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(check("How to lose weight in two weeks?", "How to lose weight in 3 weeks?"),
                     SEMANTIC_GUARD_NUMBER);
    assert_int_equal(check("What happened in 1947?", "What happened in 1974?"),
                     SEMANTIC_GUARD_NUMBER);
    /* a number in one text only */
    assert_int_equal(check("Best laptop for students", "Best laptop for students in 2024"),
                     SEMANTIC_GUARD_NUMBER);
}

static void test_guard_negation(void **state)
{
    (void)state;
    assert_int_equal(check("Why is the sky blue?", "Why isn't the sky blue?"),
                     SEMANTIC_GUARD_NEGATION);
    assert_int_equal(check("Can I travel with a passport?", "Can I travel without a passport?"),
                     SEMANTIC_GUARD_NEGATION);
    assert_int_equal(check("Why do cats purr?", "Why dont cats purr?"), SEMANTIC_GUARD_NEGATION);
    assert_int_equal(check("Why don't cats purr?", "Why do cats never purr?"), SEMANTIC_GUARD_PASS);
    /* where / when / who / why ask for different things */
    assert_int_equal(check("Where was the wheel invented?", "How was the wheel invented?"),
                     SEMANTIC_GUARD_WH);
    /* U+2019 as the apostrophe */
    assert_int_equal(check("Why do cats purr?", "Why don\xE2\x80\x99t cats purr?"),
                     SEMANTIC_GUARD_NEGATION);
}

/* An appended "and why" / "Why?" asks nothing new; a question word that
 * leads a question still must match. Opposites refuse. */
static void test_guard_appendix_and_opposites(void **state)
{
    (void)state;
    assert_int_equal(check("What is the best ginger ale? Why?", "What's the best ginger ale?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(check("Who is the best football player in the world and why?",
                           "Who is the best football player in the world?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(check("Is alcohol bad for health? If so, why?", "Is alcohol bad for health?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(check("Why is money important to society?", "Is money important to society?"),
                     SEMANTIC_GUARD_WH);
    assert_int_equal(
        check("How did boxing get popular in England?", "Why did boxing get popular in England?"),
        SEMANTIC_GUARD_WH);
    /* a prefix that turns a word round */
    assert_int_equal(check("What are the advantages of the Right to Information Act?",
                           "What are the disadvantages of the Right to Information Act?"),
                     SEMANTIC_GUARD_OPPOSITE);
    assert_int_equal(
        check("Is it legal to record a phone call?", "Is it illegal to record a phone call?"),
        SEMANTIC_GUARD_OPPOSITE);
    /* a pair of the list */
    assert_int_equal(check("What causes the price of gold to increase?",
                           "What causes the price of gold to decrease?"),
                     SEMANTIC_GUARD_OPPOSITE);
    assert_int_equal(check("Should I buy bitcoin now?", "Should I sell bitcoin now?"),
                     SEMANTIC_GUARD_OPPOSITE);
    /* both words in both texts: no opposite */
    assert_int_equal(
        check("Should I buy or sell bitcoin now?", "Should I sell or buy bitcoin now?"),
        SEMANTIC_GUARD_PASS);
    /* a word with such a prefix whose stem is not in the other text: no opposite */
    assert_int_equal(check("How do I install Python?", "How can I install Python?"),
                     SEMANTIC_GUARD_PASS);
    semantic_guard_opts_t o = semantic_guard_default();
    o.opposite = 0;
    const char *a = "Should I buy bitcoin now?", *b = "Should I sell bitcoin now?";
    /* without it one swapped word is within the word check's allowance */
    assert_int_equal(semantic_guard_check(&o, a, strlen(a), b, strlen(b)), SEMANTIC_GUARD_PASS);
    assert_string_equal(semantic_guard_verdict_name(SEMANTIC_GUARD_OPPOSITE), "opposite");
}

static void test_guard_names(void **state)
{
    (void)state;
    assert_int_equal(check("How do I learn Java quickly?", "How do I learn JavaScript quickly?"),
                     SEMANTIC_GUARD_NAME);
    assert_int_equal(
        check("Is the iPhone better than a Pixel?", "Is the iphone better than a pixel?"),
        SEMANTIC_GUARD_PASS);
    assert_int_equal(check("What is the capital of France?", "What is the capital of Germany?"),
                     SEMANTIC_GUARD_NAME);
    /* a capital at the start of a sentence is no name */
    assert_int_equal(check("Where can I buy shoes?", "where can I buy shoes"), SEMANTIC_GUARD_PASS);
    /* letters + digits: a number first, a name when numbers are not checked */
    assert_int_equal(check("Is python3 faster?", "Is python faster?"), SEMANTIC_GUARD_NUMBER);
    semantic_guard_opts_t o = semantic_guard_default();
    o.numbers = 0;
    const char *a = "Is python3 faster?", *b = "Is python faster?";
    assert_int_equal(semantic_guard_check(&o, a, strlen(a), b, strlen(b)), SEMANTIC_GUARD_NAME);
}

static void test_guard_words_and_paraphrases(void **state)
{
    (void)state;
    assert_int_equal(check("How do I reset my password?", "How can I reset my password?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(check("How do I reset my password?", "How do I reset my passwords?"),
                     SEMANTIC_GUARD_PASS);
    assert_int_equal(
        check("What are the health benefits of green tea?", "What are the health risks of coffee?"),
        SEMANTIC_GUARD_WORDS);
    /* the checks can be switched off one by one */
    semantic_guard_opts_t off = {0, 0, 0, 0, -1, 0, 0, 0};
    const char *a = "Can I not go in 4 days to Paris?", *b = "Can I go in 10 days to Rome, friend?";
    assert_int_equal(semantic_guard_check(&off, a, strlen(a), b, strlen(b)), SEMANTIC_GUARD_PASS);
    semantic_guard_opts_t jac = {0, 0, 0, 0, -1, 0.9, 0, 0};
    assert_int_equal(semantic_guard_check(&jac, a, strlen(a), b, strlen(b)), SEMANTIC_GUARD_WORDS);
    /* empty and odd input */
    assert_int_equal(semantic_guard_check(NULL, NULL, 0, "", 0), SEMANTIC_GUARD_PASS);
    char big[20000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)("ab 9,.'\xE2\x80\x99Zz"[i % 12]);
    semantic_guard_check(NULL, big, sizeof big, big, sizeof big - 7);
    assert_string_equal(semantic_guard_verdict_name(SEMANTIC_GUARD_NAME), "name");
}

/* ---- store ---- */

static void vec_of(float *v, int seed, float noise)
{
    for (int i = 0; i < DIM; i++)
        v[i] = (float)((i * 7 + seed * 13) % 11) - 5.0f + noise * (float)((i * seed) % 3);
}

static semantic_t *mk(size_t max)
{
    semantic_config_t c = {0};
    c.dim = DIM;
    c.max_entries = max;
    c.guard = semantic_guard_default();
    c.use_guard = 1;
    semantic_t *s = NULL;
    bar_msg_t m = {{0}};
    assert_int_equal(semantic_create(&s, &c, &m), 0);
    return s;
}

static cache_key_t key_of(int i)
{
    cache_key_t k;
    memset(&k, 0, sizeof k);
    memcpy(k.b, &i, sizeof i);
    k.b[15] = 0x5a;
    return k;
}

static void put(semantic_t *s, int i, uint64_t ns, uint64_t part, const float *v, const char *text,
                int64_t exp)
{
    semantic_put_t p = {key_of(i), ns, part, v, text, strlen(text), exp};
    assert_int_equal(semantic_put(s, &p, 1000), 0);
}

static void test_store_lookup(void **state)
{
    (void)state;
    semantic_t *s = mk(0);
    float v[DIM], q[DIM];
    vec_of(v, 1, 0);
    vec_of(q, 1, 0.05f); /* a near duplicate */
    const char *t = "How do I reset my password?";
    put(s, 1, 7, 100, v, t, 0);
    semantic_hit_t h;
    const char *qt = "How can I reset my password?";
    assert_int_equal(semantic_lookup(s, 7, 100, q, qt, strlen(qt), 0.9, 1000, &h), 1);
    assert_memory_equal(h.key.b, key_of(1).b, 16);
    assert_true(h.sim >= 0.9f && h.sim <= 1.001f);
    /* another tenant, another partition: never */
    assert_int_equal(semantic_lookup(s, 8, 100, q, qt, strlen(qt), 0.9, 1000, &h), 0);
    assert_int_equal(semantic_lookup(s, 7, 101, q, qt, strlen(qt), 0.9, 1000, &h), 0);
    /* above the similarity it has: no */
    assert_int_equal(semantic_lookup(s, 7, 100, q, qt, strlen(qt), 0.99999, 1000, &h), 0);
    assert_true(h.best_sim > 0.9f);
    /* the guard refuses a near miss even at similarity 1 */
    const char *nm = "How do I reset my password in 4 days?";
    assert_int_equal(semantic_lookup(s, 7, 100, v, nm, strlen(nm), 0.5, 1000, &h), 0);
    assert_int_equal(h.refused, 1);
    assert_int_equal(h.why, SEMANTIC_GUARD_NUMBER);
    semantic_stats_t st;
    semantic_stats(s, &st);
    assert_int_equal(st.guard_refusals[SEMANTIC_GUARD_NUMBER], 1);
    assert_int_equal(st.entries, 1);
    /* a second candidate that passes is taken when the nearest is refused */
    float w[DIM];
    vec_of(w, 1, 0.2f);
    put(s, 2, 7, 100, w, nm, 0);
    assert_int_equal(semantic_lookup(s, 7, 100, v, nm, strlen(nm), 0.5, 1000, &h), 1);
    assert_memory_equal(h.key.b, key_of(2).b, 16);
    /* replace by key, delete */
    put(s, 2, 7, 100, w, nm, 0);
    semantic_stats(s, &st);
    assert_int_equal(st.entries, 2);
    cache_key_t k2 = key_of(2);
    assert_int_equal(semantic_del(s, &k2), 1);
    assert_int_equal(semantic_del(s, &k2), 0);
    assert_int_equal(semantic_lookup(s, 7, 100, v, nm, strlen(nm), 0.5, 1000, &h), 0);
    semantic_destroy(s);
}

static void test_store_expiry_purge_bound(void **state)
{
    (void)state;
    semantic_t *s = mk(50);
    float v[DIM];
    const char *t = "What is the boiling point of water?";
    for (int i = 0; i < 120; i++) {
        vec_of(v, i % 17 + 1, (float)i * 0.01f);
        put(s, i, (uint64_t)(i % 3), 1, v, t, i < 100 ? 0 : 5000);
    }
    semantic_stats_t st;
    semantic_stats(s, &st);
    assert_int_equal(st.entries, 50); /* the bound */
    assert_int_equal(st.evictions, 70);
    semantic_hit_t h;
    vec_of(v, 1, 0);
    /* expired entries: never returned, swept */
    assert_int_equal(semantic_sweep(s, 6000), 20);
    semantic_stats(s, &st);
    assert_int_equal(st.entries, 30);
    size_t n0 = semantic_purge_ns(s, 0);
    semantic_stats(s, &st);
    assert_int_equal(st.entries, 30 - n0);
    assert_int_equal(semantic_lookup(s, 0, 1, v, t, strlen(t), 0.0, 6000, &h), 0);
    /* a tenant purge: both sub-namespaces of tenant 7, not tenant 8's */
    const uint64_t T7 = 7ull << 32, T8 = 8ull << 32;
    put(s, 200, T7 | 1, 1, v, t, 0);
    put(s, 201, T7 | 2, 1, v, t, 0);
    put(s, 202, T8 | 1, 1, v, t, 0);
    assert_int_equal(semantic_purge_tenant(s, T7 | 99), 2);
    assert_int_equal(semantic_lookup(s, T7 | 1, 1, v, t, strlen(t), 0.0, 6000, &h), 0);
    assert_int_equal(semantic_lookup(s, T7 | 2, 1, v, t, strlen(t), 0.0, 6000, &h), 0);
    assert_int_equal(semantic_lookup(s, T8 | 1, 1, v, t, strlen(t), 0.0, 6000, &h), 1);
    assert_true(semantic_purge_all(s) > 0);
    assert_int_equal(semantic_lookup(s, 1, 1, v, t, strlen(t), 0.0, 6000, &h), 0);
    /* an entry past its expiry at lookup time is a miss */
    put(s, 500, 4, 4, v, t, 7000);
    assert_int_equal(semantic_lookup(s, 4, 4, v, t, strlen(t), 0.5, 6999, &h), 1);
    assert_int_equal(semantic_lookup(s, 4, 4, v, t, strlen(t), 0.5, 7000, &h), 0);
    /* bad vectors */
    float z[DIM] = {0};
    semantic_put_t p = {key_of(9), 1, 1, z, t, strlen(t), 0};
    assert_int_equal(semantic_put(s, &p, 1000), BAR_ERR_INVALID);
    z[0] = NAN;
    assert_int_equal(semantic_put(s, &p, 1000), BAR_ERR_INVALID);
    semantic_destroy(s);
    assert_int_not_equal(semantic_partition("a", 1), semantic_partition("b", 1));
}

/* records: round trip; every truncation and every byte flip is refused */
static void test_records(void **state)
{
    (void)state;
    float v[DIM], out[DIM];
    vec_of(v, 3, 0.1f);
    const char *t = "How do I reset my password?";
    semantic_put_t p = {key_of(77), 5, 6, v, t, strlen(t), 123456789};
    buf_t b = {0};
    assert_int_equal(semantic_rec_entry(&b, &p, DIM), 0);
    semantic_rec_t r;
    bar_msg_t m = {{0}};
    assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM, &m), 0);
    assert_int_equal(r.type, SEMANTIC_REC_ENTRY);
    assert_int_equal(r.dim, DIM);
    assert_memory_equal(r.e.key.b, p.key.b, 16);
    assert_true(r.e.ns == 5 && r.e.part == 6 && r.e.expires_ms == 123456789);
    assert_memory_equal(r.e.vec, v, sizeof v);
    assert_int_equal(r.e.text_len, strlen(t));
    assert_memory_equal(r.e.text, t, strlen(t));
    /* a store of a smaller dimension refuses it */
    assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM - 1, &m), BAR_ERR_INVALID);
    for (size_t n = 0; n < b.n; n++)
        assert_int_equal(semantic_rec_decode(b.p, n, &r, out, DIM, &m), BAR_ERR_INVALID);
    for (size_t i = 0; i < b.n; i++) {
        b.p[i] ^= 0x41;
        assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM, &m), BAR_ERR_INVALID);
        b.p[i] ^= 0x41;
    }
    buf_free(&b);
    cache_key_t k = key_of(8);
    assert_int_equal(semantic_rec_purge(&b, CACHE_PURGE_KEY, 0, &k), 0);
    assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM, &m), 0);
    assert_int_equal(r.type, SEMANTIC_REC_PURGE);
    assert_int_equal(r.kind, CACHE_PURGE_KEY);
    assert_memory_equal(r.key.b, k.b, 16);
    buf_free(&b);
    assert_int_equal(semantic_rec_purge(&b, CACHE_PURGE_TENANT, 7ull << 32, NULL), 0);
    assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM, &m), 0);
    assert_true(r.kind == CACHE_PURGE_TENANT && r.ns == 7ull << 32);
    b.p[5] = CACHE_PURGE_TENANT + 1; /* an unknown kind is refused (checksum aside) */
    assert_int_equal(semantic_rec_decode(b.p, b.n, &r, out, DIM, &m), BAR_ERR_INVALID);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guard_numbers),
        cmocka_unit_test(test_guard_negation),
        cmocka_unit_test(test_guard_names),
        cmocka_unit_test(test_guard_words_and_paraphrases),
        cmocka_unit_test(test_guard_appendix_and_opposites),
        cmocka_unit_test(test_store_lookup),
        cmocka_unit_test(test_store_expiry_purge_bound),
        cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
