/* test_grammar.c — the byte grammar's matcher and token masks: a hand-built
 * grammar, and masks over a small vocabulary compared with a brute-force
 * check of every token (gram_state_allows), in fresh and cached states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "engine/grammar.h"
#include "engine/json_schema.h"

static const char *VOCAB[] = {
    "",    "{", "}",  "\"",  "\"a", "a",    "ab",   "\":",    ":",     "1",    "12",
    "0",   " ", ",",  "{\"", "\"}", "true", "tr",   "ue",     "false", "null", "\"b",
    "b\"", "x", "\n", "[",   "]",   "\xc3", "\xa9", "\"a\":", "}}",    ", \"",
};
#define NV ((int)(sizeof VOCAB / sizeof VOCAB[0]))

static size_t piece(void *ctx, int id, char *buf, size_t cap)
{
    (void)ctx;
    size_t n = strlen(VOCAB[id]);
    memcpy(buf, VOCAB[id], n < cap ? n : cap);
    return n;
}

static void check_mask(gram_state_t *s, const gram_vocab_t *v)
{
    const uint64_t *m = gram_state_mask(s, v);
    assert_non_null(m);
    for (int t = 0; t < NV; t++) {
        int want = VOCAB[t][0] && gram_state_allows(s, VOCAB[t], strlen(VOCAB[t]));
        int got = (int)(m[t >> 6] >> (t & 63) & 1);
        if (want != got) fail_msg("token %d '%s': mask %d, brute force %d", t, VOCAB[t], got, want);
    }
}

static void test_hand_built(void **state)
{
    (void)state;
    /* root ::= "a" x | "b" ; x ::= "c" x | "" */
    gram_builder_t *b;
    assert_int_equal(gram_builder_create(&b), 0);
    int root = gram_rule_new(b), x = gram_rule_new(b);
    gram_seq_t s = {0};
    gram_seq_lit(b, &s, "a", 1);
    gram_seq_ref(&s, x);
    assert_int_equal(gram_rule_add(b, root, &s), 0);
    gram_seq_free(&s);
    gram_seq_lit(b, &s, "b", 1);
    assert_int_equal(gram_rule_add(b, root, &s), 0);
    gram_seq_free(&s);
    gram_seq_lit(b, &s, "c", 1);
    gram_seq_ref(&s, x);
    assert_int_equal(gram_rule_add(b, x, &s), 0);
    gram_seq_free(&s);
    assert_int_equal(gram_rule_add(b, x, &s), 0);
    gram_t *g;
    bar_msg_t m;
    assert_int_equal(gram_build(b, &g, &m), 0);
    gram_state_t *st;
    assert_int_equal(gram_state_create(&st, g), 0);
    gram_release(g); /* the state holds its own reference */
    assert_int_equal(gram_state_accepting(st), 0);
    assert_int_equal(gram_state_feed(st, "acc", 3), 0);
    assert_int_equal(gram_state_accepting(st), 1);
    assert_int_equal(gram_state_done(st), 0);
    assert_int_equal(gram_state_feed(st, "b", 1), -1);
    for (int i = 0; i < 10000; i++) /* a long loop stays flat (tail calls) */
        assert_int_equal(gram_state_feed(st, "c", 1), 0);
    assert_int_equal(gram_state_accepting(st), 1);
    gram_state_destroy(st);
    /* a rule without alternatives is refused */
    assert_int_equal(gram_builder_create(&b), 0);
    gram_rule_new(b);
    assert_int_equal(gram_build(b, &g, &m), BAR_ERR_INVALID);
}

static void test_masks(void **state)
{
    (void)state;
    gram_vocab_t *v;
    assert_int_equal(gram_vocab_create(&v, NV, piece, NULL), 0);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},"
                         "\"n\":{\"type\":\"integer\"},\"f\":{\"type\":\"boolean\"}},"
                         "\"required\":[\"a\"]}";
    gram_t *g;
    bar_msg_t m;
    assert_int_equal(json_schema_compile(schema, strlen(schema), &g, &m), 0);
    gram_state_t *s;
    assert_int_equal(gram_state_create(&s, g), 0);
    gram_release(g);
    /* walk a text token by token, checking the mask at every step (twice:
     * the second read comes from the cache) */
    const char *steps[] = {"{\"", "a", "\":", " ", "\"a", "\xc3", "\xa9", "ab", "\"", "}"};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        check_mask(s, v);
        check_mask(s, v);
        assert_int_equal(gram_state_feed(s, steps[i], strlen(steps[i])), 0);
    }
    assert_int_equal(gram_state_done(s), 1);
    check_mask(s, v); /* nothing allowed */
    const uint64_t *mk = gram_state_mask(s, v);
    assert_int_equal(mk[0], 0);
    gram_state_destroy(s);
    gram_vocab_destroy(v);
}

/* The shared mask cache: a second state in a state the first one reached
 * gets the first one's mask (a hit, no walk) and the same bits; with a
 * budget of one entry, a state keeps the mask it was given while others
 * push the entry out of the cache, and masks stay right. */
static const char *SHARED_STEPS[] = {"{\"",  "a",    "\":", " ",  "\"a",
                                     "\xc3", "\xa9", "ab",  "\"", "}"};
#define N_SHARED ((int)(sizeof SHARED_STEPS / sizeof SHARED_STEPS[0]))

static void test_shared_cache(void **state)
{
    (void)state;
    gram_vocab_t *v;
    assert_int_equal(gram_vocab_create(&v, NV, piece, NULL), 0);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},"
                         "\"n\":{\"type\":\"integer\"}},\"required\":[\"a\"]}";
    gram_t *g;
    bar_msg_t m;
    assert_int_equal(json_schema_compile(schema, strlen(schema), &g, &m), 0);
    gram_state_t *s1, *s2;
    assert_int_equal(gram_state_create(&s1, g), 0);
    assert_int_equal(gram_state_create(&s2, g), 0);
    gram_mask_stats_t a, b;
    for (int i = 0; i < N_SHARED; i++) {
        check_mask(s1, v);
        gram_vocab_mask_stats(v, &a);
        check_mask(s2, v);
        gram_vocab_mask_stats(v, &b);
        assert_int_equal(b.misses, a.misses); /* s2 walked nothing */
        assert_ptr_equal(gram_state_mask(s1, v), gram_state_mask(s2, v));
        assert_int_equal(gram_state_feed(s1, SHARED_STEPS[i], strlen(SHARED_STEPS[i])), 0);
        assert_int_equal(gram_state_feed(s2, SHARED_STEPS[i], strlen(SHARED_STEPS[i])), 0);
    }
    gram_vocab_mask_stats(v, &a);
    assert_true(a.misses > 0 && a.misses < N_SHARED); /* a state inside the string recurs */
    assert_true(a.entries == (int)a.misses && a.hits >= a.misses && a.bytes > 0);
    gram_state_destroy(s2);
    /* one entry at most: s1 holds its mask while s3 pushes it out */
    gram_vocab_set_mask_budget(v, 1);
    gram_state_t *s3;
    assert_int_equal(gram_state_create(&s3, g), 0);
    gram_state_destroy(s1);
    assert_int_equal(gram_state_create(&s1, g), 0);
    assert_int_equal(gram_state_feed(s1, "{\"a\":\"", 6), 0);
    const uint64_t *held = gram_state_mask(s1, v);
    uint64_t w0 = held[0];
    for (int i = 0; i < N_SHARED; i++) {
        check_mask(s3, v);
        uint64_t within = gram_state_mask_within(s3, v, i)[0];
        assert_int_equal(within & ~gram_state_mask(s3, v)[0], 0);
        assert_int_equal(held[0], w0); /* still readable (ASan) and unchanged */
        assert_int_equal(gram_state_feed(s3, SHARED_STEPS[i], strlen(SHARED_STEPS[i])), 0);
    }
    gram_vocab_mask_stats(v, &a);
    assert_int_equal(a.entries, 1);
    check_mask(s1, v);
    gram_state_destroy(s1);
    gram_state_destroy(s3);
    gram_release(g);
    gram_vocab_destroy(v);
}

/* Threads (as the engine's sampling pool) asking masks of one grammar at
 * once, with a budget small enough that entries come and go under them. */
typedef struct {
    gram_vocab_t *v;
    gram_t *g;
    int bad;
} shared_arg_t;

static void *shared_worker(void *p)
{
    shared_arg_t *a = p;
    for (int round = 0; round < 20; round++) {
        gram_state_t *s;
        if (gram_state_create(&s, a->g)) {
            a->bad = 1;
            return NULL;
        }
        for (int i = 0; i < N_SHARED; i++) {
            const uint64_t *mk = gram_state_mask(s, a->v);
            for (int t = 0; t < NV && mk; t++) {
                int want = VOCAB[t][0] && gram_state_allows(s, VOCAB[t], strlen(VOCAB[t]));
                if (want != (int)(mk[t >> 6] >> (t & 63) & 1)) a->bad = 1;
            }
            if (!mk || gram_state_feed(s, SHARED_STEPS[i], strlen(SHARED_STEPS[i]))) a->bad = 1;
        }
        gram_state_destroy(s);
    }
    return NULL;
}

static void test_shared_threads(void **state)
{
    (void)state;
    gram_vocab_t *v;
    assert_int_equal(gram_vocab_create(&v, NV, piece, NULL), 0);
    gram_vocab_set_mask_budget(v, 3000); /* a few entries */
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},"
                         "\"n\":{\"type\":\"integer\"}},\"required\":[\"a\"]}";
    gram_t *g;
    bar_msg_t m;
    assert_int_equal(json_schema_compile(schema, strlen(schema), &g, &m), 0);
    shared_arg_t arg[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        arg[i] = (shared_arg_t){v, g, 0};
        assert_int_equal(pthread_create(&th[i], NULL, shared_worker, &arg[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(arg[i].bad, 0);
    }
    gram_mask_stats_t st;
    gram_vocab_mask_stats(v, &st);
    assert_true(st.misses > 0 && st.hits > st.misses && st.entries >= 1);
    gram_release(g);
    gram_vocab_destroy(v);
}

/* A state of g after prefix (a fresh one each time: states cannot be copied). */
static gram_state_t *state_after(gram_t *g, const char *prefix, const char *more)
{
    gram_state_t *s;
    assert_int_equal(gram_state_create(&s, g), 0);
    assert_int_equal(gram_state_feed(s, prefix, strlen(prefix)), 0);
    if (more && gram_state_feed(s, more, strlen(more))) {
        gram_state_destroy(s);
        return NULL;
    }
    return s;
}

/* Finishing within a budget: the shortest completion, and masks limited to
 * the tokens after which the output can still end in `limit` bytes, checked
 * against a brute force; with no such token, the tokens that make progress. */
static void test_budget(void **state)
{
    (void)state;
    gram_vocab_t *v;
    assert_int_equal(gram_vocab_create(&v, NV, piece, NULL), 0);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},"
                         "\"n\":{\"type\":\"integer\"}},\"required\":[\"a\"],"
                         "\"additionalProperties\":false}";
    gram_t *g;
    bar_msg_t m;
    assert_int_equal(json_schema_compile(schema, strlen(schema), &g, &m), 0);
    const struct {
        const char *prefix;
        int left; /* bytes of the shortest completion */
    } at[] = {{"", 8},
              {"{\"a\":\"ab", 2},
              {"{\"a\":\"ab\"", 1},
              {"{\"a\":\"ab\",\"n\":", 2},
              {"{\"a\":\"\xc3", 3},
              {"{\"a\":\"x\"}", 0}};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        gram_state_t *s = state_after(g, at[k].prefix, NULL);
        assert_int_equal(gram_state_min_left(s), at[k].left);
        for (int limit = 0; limit <= 9; limit++) {
            const uint64_t *mk = gram_state_mask_within(s, v, limit);
            assert_non_null(mk);
            int any_fits = 0;
            for (int t = 1; t < NV; t++) {
                gram_state_t *a = state_after(g, at[k].prefix, VOCAB[t]);
                if (a && gram_state_min_left(a) <= limit) any_fits = 1;
                gram_state_destroy(a);
            }
            for (int t = 1; t < NV; t++) {
                gram_state_t *a = state_after(g, at[k].prefix, VOCAB[t]);
                int d = a ? gram_state_min_left(a) : -1;
                gram_state_destroy(a);
                int want = a != NULL && (any_fits ? d <= limit : d < at[k].left);
                int got = (int)(mk[t >> 6] >> (t & 63) & 1);
                if (want != got)
                    fail_msg("'%s' + '%s', limit %d: mask %d, brute force %d (left %d)",
                             at[k].prefix, VOCAB[t], limit, got, want, d);
            }
        }
        /* a budget that binds nothing: the plain mask */
        const uint64_t *plain = gram_state_mask(s, v);
        uint64_t w0 = plain[0];
        assert_int_equal(gram_state_mask_within(s, v, 1000)[0], w0);
        gram_state_destroy(s);
    }
    gram_release(g);
    gram_vocab_destroy(v);
}

/* Shortest completions over a long chain of rules declared in the order
 * that made the old fixed-point iteration take one pass per rule (r_i ::=
 * "a" r_{i+1} | "b" r_{i+1} r_{i+1}; the last ::= "c"): 50,000 rules were
 * ~10^9 element visits, an object schema with thousands of optional
 * properties seconds of event-loop time. The worklist gives every rule its
 * length in one sweep; the lengths must be exact. */
static void test_long_chain_min_lengths(void **state)
{
    (void)state;
    enum { N = 50000 };
    gram_builder_t *b;
    assert_int_equal(gram_builder_create(&b), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(gram_rule_new(b), i);
    gram_seq_t s = {0};
    for (int i = 0; i + 1 < N; i++) {
        gram_seq_lit(b, &s, "a", 1);
        gram_seq_ref(&s, i + 1);
        assert_int_equal(gram_rule_add(b, i, &s), 0);
        gram_seq_free(&s);
        gram_seq_lit(b, &s, "b", 1);
        gram_seq_ref(&s, i + 1);
        gram_seq_ref(&s, i + 1);
        assert_int_equal(gram_rule_add(b, i, &s), 0);
        gram_seq_free(&s);
    }
    gram_seq_lit(b, &s, "c", 1);
    assert_int_equal(gram_rule_add(b, N - 1, &s), 0);
    gram_seq_free(&s);
    gram_t *g = NULL;
    bar_msg_t m = {0};
    assert_int_equal(gram_build(b, &g, &m), 0);
    gram_state_t *st;
    assert_int_equal(gram_state_create(&st, g), 0);
    assert_int_equal(gram_state_min_left(st), N); /* N-1 a's and the c */
    assert_int_equal(gram_state_feed(st, "aaa", 3), 0);
    assert_int_equal(gram_state_min_left(st), N - 3);
    assert_int_equal(gram_state_feed(st, "b", 1), 0); /* two copies of the rest now */
    assert_int_equal(gram_state_min_left(st), 2 * (N - 4));
    gram_state_destroy(st);
    gram_release(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_built),   cmocka_unit_test(test_masks),
        cmocka_unit_test(test_shared_cache), cmocka_unit_test(test_shared_threads),
        cmocka_unit_test(test_budget),       cmocka_unit_test(test_long_chain_min_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
