/* test_cache_entry.c — cached replies (src/cache/cache_entry.c): the
 * recorder, the one-allocation layout, refcounts, and the binary encoding —
 * round trips, every truncation and every single-byte flip refused, and
 * flips with a re-fixed checksum either refused or decoded consistently
 * (lengths are checked, not trusted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cache/cache_entry.h"

static cache_meta_t meta(int n)
{
    cache_meta_t m = {0};
    for (int i = 0; i < 16; i++)
        m.key.b[i] = (uint8_t)(i * 7 + n);
    m.ns = 0x1122334455667788ull;
    m.model = "smollm2-135m";
    m.created = 1700000000;
    m.stored_ms = 1700000000123;
    m.ttl_ms = 60000;
    m.finish = CACHE_FINISH_STOP;
    m.prompt_tokens = 12;
    m.completion_tokens = 3;
    m.cached_tokens = 4;
    return m;
}

/* "Hello", ", wor", "ld!" with logprobs (2 alternatives each) */
static cache_entry_t *sample(int with_lp)
{
    cache_rec_t *r = cache_rec_create(with_lp);
    const char *pieces[] = {"Hello", ", wor", "ld!"};
    for (int i = 0; i < 3; i++) {
        lp_alt_t tops[2] = {{pieces[i], strlen(pieces[i]), -0.1 * i}, {"alt", 3, -2.5}};
        lp_tok_t lp = {pieces[i], strlen(pieces[i]), -0.1 * i, 2, tops};
        assert_int_equal(cache_rec_add(r, pieces[i], strlen(pieces[i]), &lp, 1), 0);
    }
    cache_meta_t m = meta(0);
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    assert_non_null(e);
    return e;
}

static void check_consistent(const cache_entry_t *e)
{
    size_t off = 0;
    int lp = 0;
    for (int i = 0; i < e->n_chunks; i++) {
        assert_int_equal(e->chunks[i].off, off);
        assert_int_equal(e->chunks[i].lp0, lp);
        off += e->chunks[i].len;
        lp += e->chunks[i].n_lp;
    }
    assert_int_equal(off, e->text_len);
    assert_int_equal(lp, e->n_lp);
    assert_int_equal(e->text[e->text_len], '\0');
    assert_int_equal(e->model[e->model_len], '\0');
    for (int i = 0; i < e->n_lp; i++) {
        assert_int_equal(e->lp[i].token[e->lp[i].token_len], '\0');
        for (int k = 0; k < e->lp[i].n_top; k++)
            assert_int_equal(e->lp[i].top[k].token[e->lp[i].top[k].len], '\0');
    }
}

static void assert_same(const cache_entry_t *a, const cache_entry_t *b)
{
    assert_true(cache_key_equal(&a->key, &b->key));
    assert_true(a->ns == b->ns);
    assert_string_equal(a->model, b->model);
    assert_true(a->created == b->created);
    assert_true(a->stored_ms == b->stored_ms);
    assert_true(a->ttl_ms == b->ttl_ms);
    assert_int_equal(a->finish, b->finish);
    assert_int_equal(a->prompt_tokens, b->prompt_tokens);
    assert_int_equal(a->completion_tokens, b->completion_tokens);
    assert_int_equal(a->cached_tokens, b->cached_tokens);
    assert_int_equal(a->text_len, b->text_len);
    assert_memory_equal(a->text, b->text, a->text_len);
    assert_int_equal(a->n_chunks, b->n_chunks);
    for (int i = 0; i < a->n_chunks; i++) {
        assert_int_equal(a->chunks[i].off, b->chunks[i].off);
        assert_int_equal(a->chunks[i].len, b->chunks[i].len);
        assert_int_equal(a->chunks[i].lp0, b->chunks[i].lp0);
        assert_int_equal(a->chunks[i].n_lp, b->chunks[i].n_lp);
        assert_int_equal(a->chunks[i].index, b->chunks[i].index);
    }
    assert_int_equal(a->n_choices, b->n_choices);
    assert_memory_equal(a->choice_finish, b->choice_finish, sizeof a->choice_finish);
    assert_int_equal(a->has_logprobs, b->has_logprobs);
    assert_int_equal(a->n_lp, b->n_lp);
    for (int i = 0; i < a->n_lp; i++) {
        assert_int_equal(a->lp[i].token_len, b->lp[i].token_len);
        assert_memory_equal(a->lp[i].token, b->lp[i].token, a->lp[i].token_len);
        assert_true(a->lp[i].logprob == b->lp[i].logprob);
        assert_int_equal(a->lp[i].n_top, b->lp[i].n_top);
        for (int k = 0; k < a->lp[i].n_top; k++) {
            assert_int_equal(a->lp[i].top[k].len, b->lp[i].top[k].len);
            assert_memory_equal(a->lp[i].top[k].token, b->lp[i].top[k].token, a->lp[i].top[k].len);
            assert_true(a->lp[i].top[k].logprob == b->lp[i].top[k].logprob);
        }
    }
}

static void test_recorder(void **st)
{
    (void)st;
    cache_entry_t *e = sample(1);
    assert_string_equal(e->text, "Hello, world!");
    assert_int_equal(e->n_chunks, 3);
    assert_int_equal(e->chunks[1].off, 5);
    assert_int_equal(e->chunks[1].len, 5);
    assert_int_equal(e->n_lp, 3);
    assert_int_equal(e->chunks[2].lp0, 2);
    assert_string_equal(e->lp[1].token, ", wor");
    assert_int_equal(e->lp[2].n_top, 2);
    assert_string_equal(e->lp[2].top[1].token, "alt");
    assert_true(e->lp[2].top[1].logprob == -2.5);
    assert_string_equal(e->model, "smollm2-135m");
    assert_true(e->mem_bytes > sizeof *e + e->text_len);
    assert_true(cache_entry_expires_ms(e) == 1700000060123);
    check_consistent(e);
    cache_entry_release(e);

    /* logprobs not requested: items are ignored */
    e = sample(0);
    assert_int_equal(e->n_lp, 0);
    assert_int_equal(e->has_logprobs, 0);
    assert_string_equal(e->text, "Hello, world!");
    check_consistent(e);
    cache_entry_release(e);

    /* an empty-text token event with logprobs is kept; an empty one without is not */
    cache_rec_t *r = cache_rec_create(1);
    lp_tok_t lp = {"\xe2", 1, -1, 0, NULL};
    assert_int_equal(cache_rec_add(r, "", 0, NULL, 0), 0);
    assert_int_equal(cache_rec_n_chunks(r), 0);
    assert_int_equal(cache_rec_add(r, "", 0, &lp, 1), 0);
    assert_int_equal(cache_rec_add(r, "\xe2\x82\xac", 3, &lp, 1), 0);
    assert_int_equal(cache_rec_n_chunks(r), 2);
    size_t n;
    const char *t = cache_rec_text(r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(t, "\xe2\x82\xac", 3);
    /* partial build (single-flight catch-up) and refcounts */
    cache_meta_t m = meta(1);
    m.finish = CACHE_FINISH_NONE;
    cache_entry_t *p = cache_rec_build(r, &m);
    assert_non_null(p);
    assert_int_equal(p->n_chunks, 2);
    assert_int_equal(p->chunks[0].len, 0);
    assert_int_equal(p->chunks[0].n_lp, 1);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(p, &b), BAR_ERR_INVALID); /* unfinished */
    assert_int_equal(b.n, 0);
    assert_ptr_equal(cache_entry_ref(p), p);
    assert_int_equal(p->refs, 2);
    cache_entry_release(p);
    cache_entry_release(p);
    cache_entry_release(NULL);
    /* too many alternatives: recording stops */
    lp_alt_t tops[CACHE_LP_MAX_TOP + 1];
    memset(tops, 0, sizeof tops);
    for (int i = 0; i <= CACHE_LP_MAX_TOP; i++)
        tops[i] = (lp_alt_t){"x", 1, -1};
    lp_tok_t big = {"x", 1, -1, CACHE_LP_MAX_TOP + 1, tops};
    assert_int_equal(cache_rec_add(r, "x", 1, &big, 1), BAR_ERR_RANGE);
    assert_int_equal(cache_rec_add(r, "y", 1, NULL, 0), BAR_ERR_RANGE); /* sticky */
    assert_null(cache_rec_build(r, &m));
    cache_rec_destroy(r);
    buf_free(&b);
}

static void test_size_limit(void **st)
{
    (void)st;
    cache_rec_t *r = cache_rec_create(0);
    size_t chunk = 1 << 20;
    char *big = malloc(chunk);
    memset(big, 'a', chunk);
    int rc = 0;
    size_t i;
    for (i = 0; i < 100 && !rc; i++)
        rc = cache_rec_add(r, big, chunk, NULL, 0);
    assert_int_equal(rc, BAR_ERR_RANGE);
    assert_true(i <= 65);
    free(big);
    cache_rec_destroy(r);
}

static void test_round_trip(void **st)
{
    (void)st;
    for (int lp = 0; lp < 2; lp++) {
        cache_entry_t *e = sample(lp);
        buf_t b = {0};
        assert_int_equal(cache_entry_encode(e, &b), 0);
        cache_entry_t *d;
        bar_msg_t m;
        assert_int_equal(cache_entry_decode(b.p, b.n, &d, &m), 0);
        assert_same(e, d);
        check_consistent(d);
        assert_int_equal(d->refs, 1);
        /* encoding is deterministic */
        buf_t b2 = {0};
        assert_int_equal(cache_entry_encode(d, &b2), 0);
        assert_int_equal(b.n, b2.n);
        assert_memory_equal(b.p, b2.p, b.n);
        buf_free(&b2);
        cache_entry_release(d);
        cache_entry_release(e);
        buf_free(&b);
    }
    /* empty reply, LENGTH, no TTL, appended after other bytes */
    cache_rec_t *r = cache_rec_create(0);
    cache_meta_t mt = meta(3);
    mt.finish = CACHE_FINISH_LENGTH;
    mt.ttl_ms = 0;
    mt.model = NULL;
    cache_entry_t *e = cache_rec_build(r, &mt);
    cache_rec_destroy(r);
    buf_t b = {0};
    buf_puts(&b, "prefix");
    assert_int_equal(cache_entry_encode(e, &b), 0);
    cache_entry_t *d;
    bar_msg_t m;
    assert_int_equal(cache_entry_decode(b.p + 6, b.n - 6, &d, &m), 0);
    assert_same(e, d);
    assert_int_equal(d->text_len, 0);
    assert_int_equal(cache_entry_expires_ms(d), 0);
    cache_entry_release(d);
    cache_entry_release(e);
    buf_free(&b);
}

/* n = 3 choices recorded interleaved: each chunk keeps its choice, each
 * choice its finish; round trip; a choice cut short makes it unstorable;
 * version 1 entries are refused. */
static void test_choices(void **st)
{
    (void)st;
    cache_rec_t *r = cache_rec_create(1);
    const char *pieces[] = {"A", "b", "C", "d", "E"};
    const int idx[] = {0, 1, 2, 1, 0};
    for (int i = 0; i < 5; i++) {
        lp_tok_t lp = {pieces[i], 1, -0.5 * i, 0, NULL};
        assert_int_equal(cache_rec_add_choice(r, idx[i], pieces[i], 1, &lp, 1), 0);
    }
    assert_int_equal(cache_rec_end_choice(r, 2, CACHE_FINISH_STOP), 0);
    assert_int_equal(cache_rec_end_choice(r, 0, CACHE_FINISH_LENGTH), 0);
    cache_meta_t m = meta(5);
    /* mid-way (a joiner's catch-up): choice 1 still runs */
    cache_meta_t partial = m;
    partial.finish = CACHE_FINISH_NONE;
    cache_entry_t *p = cache_rec_build(r, &partial);
    assert_non_null(p);
    assert_int_equal(p->n_choices, 3);
    assert_int_equal(p->choice_finish[1], CACHE_FINISH_NONE);
    assert_int_equal(p->choice_finish[2], CACHE_FINISH_STOP);
    cache_entry_release(p);
    assert_int_equal(cache_rec_end_choice(r, 1, CACHE_FINISH_STOP), 0);
    cache_entry_t *e = cache_rec_build(r, &m);
    assert_non_null(e);
    assert_int_equal(e->finish, CACHE_FINISH_STOP);
    assert_int_equal(e->n_choices, 3);
    assert_int_equal(e->choice_finish[0], CACHE_FINISH_LENGTH);
    assert_int_equal(e->n_chunks, 5);
    assert_memory_equal(e->text, "AbCdE", 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(e->chunks[i].index, idx[i]);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(e, &b), 0);
    cache_entry_t *d;
    bar_msg_t msg;
    assert_int_equal(cache_entry_decode(b.p, b.n, &d, &msg), 0);
    assert_same(e, d);
    check_consistent(d);
    cache_entry_release(d);
    /* an old (version 1) entry, or one of an unknown later version, is a
     * miss, not a wrong reply (checksum re-fixed: the version check alone) */
    const uint8_t versions[] = {0, 1, 3, 255};
    for (size_t v = 0; v < sizeof versions; v++) {
        b.p[3] = (char)versions[v];
        uint64_t sum = XXH3_64bits(b.p, b.n - 8);
        for (int i = 0; i < 8; i++)
            b.p[b.n - 8 + (size_t)i] = (char)(sum >> (8 * i));
        assert_int_equal(cache_entry_decode(b.p, b.n, &d, &msg), BAR_ERR_FORMAT);
        assert_non_null(strstr(msg.text, "version"));
    }
    buf_free(&b);
    cache_entry_release(e);
    /* a choice cut short (timeout): the entry is not a complete reply */
    assert_int_equal(cache_rec_end_choice(r, 1, CACHE_FINISH_NONE), 0);
    e = cache_rec_build(r, &m);
    assert_non_null(e);
    assert_int_equal(e->finish, CACHE_FINISH_NONE);
    assert_int_equal(cache_entry_encode(e, &b), BAR_ERR_INVALID);
    cache_entry_release(e);
    buf_free(&b);
    cache_rec_destroy(r);
    /* a choice index out of range stops the recording */
    r = cache_rec_create(0);
    assert_int_equal(cache_rec_add_choice(r, CACHE_CHOICES_MAX, "x", 1, NULL, 0), BAR_ERR_RANGE);
    cache_rec_destroy(r);
}

static void test_truncations(void **st)
{
    (void)st;
    cache_entry_t *e = sample(1);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(e, &b), 0);
    for (size_t n = 0; n < b.n; n++) {
        /* exact-size heap copy so ASan sees any over-read */
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, b.p, n);
        cache_entry_t *d = (cache_entry_t *)1;
        bar_msg_t m;
        if (cache_entry_decode(c, n, &d, &m) != BAR_ERR_FORMAT)
            fail_msg("prefix of %zu/%zu bytes accepted", n, b.n);
        assert_null(d);
        free(c);
    }
    /* one byte too many */
    buf_append(&b, "", 1);
    cache_entry_t *d;
    bar_msg_t m;
    assert_int_equal(cache_entry_decode(b.p, b.n, &d, &m), BAR_ERR_FORMAT);
    assert_int_equal(cache_entry_decode(NULL, 0, &d, &m), BAR_ERR_FORMAT);
    cache_entry_release(e);
    buf_free(&b);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fix_checksum(uint8_t *p, size_t n)
{
    uint64_t h = XXH3_64bits(p, n - 8);
    for (int i = 0; i < 8; i++)
        p[n - 8 + (size_t)i] = (uint8_t)(h >> (8 * i));
}

static void test_byte_flips(void **st)
{
    (void)st;
    cache_entry_t *e = sample(1);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(e, &b), 0);
    uint8_t *c = malloc(b.n);
    size_t accepted_fixed = 0;
    for (size_t pos = 0; pos < b.n; pos++) {
        for (int round = 0; round < 4; round++) {
            memcpy(c, b.p, b.n);
            uint8_t x = (uint8_t)(next_rand() | 1);
            if (round == 0) x = 0xff;
            c[pos] ^= x;
            cache_entry_t *d;
            bar_msg_t m;
            /* as stored: the checksum catches it */
            if (cache_entry_decode(c, b.n, &d, &m) != BAR_ERR_FORMAT)
                fail_msg("flip at %zu accepted", pos);
            /* with the checksum recomputed: structural checks, no crash */
            if (pos < b.n - 8) {
                fix_checksum(c, b.n);
                if (cache_entry_decode(c, b.n, &d, &m) == 0) {
                    check_consistent(d);
                    cache_entry_release(d);
                    accepted_fixed++;
                }
            }
        }
    }
    /* flips inside text/logprob bytes legitimately decode; lengths never do */
    assert_true(accepted_fixed > 0);
    /* many random multi-byte corruptions with fixed checksums */
    for (int it = 0; it < 20000; it++) {
        memcpy(c, b.p, b.n);
        int k = 1 + (int)(next_rand() % 6);
        for (int j = 0; j < k; j++)
            c[next_rand() % (b.n - 8)] = (uint8_t)next_rand();
        fix_checksum(c, b.n);
        cache_entry_t *d;
        bar_msg_t m;
        if (cache_entry_decode(c, b.n, &d, &m) == 0) {
            check_consistent(d);
            cache_entry_release(d);
        }
    }
    free(c);
    cache_entry_release(e);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recorder),   cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_byte_flips), cmocka_unit_test(test_choices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
