/* test_engine_fork.c — engine.c's n > 1 choices and logit_bias on the real
 * SmolLM2 model: one prefill is forked into n sequences that share its KV
 * blocks; choice i of a request with seed S draws exactly what a single
 * request with seed S + i draws (so choice 0 is bit for bit the unforked
 * run); the choices' texts differ; every choice ends with its own DONE (also
 * when the request is cancelled before it forks); no block leaks; logit_bias
 * -100 keeps a token out and +100 forces it; bad n / bias ids are refused;
 * with an output grammar each choice is constrained on its own (its grammar
 * state starts at the fork) and ends as a complete sentence.
 * Kept small (a few tokens per choice): it runs under ASan in CI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/kernels/kern.h"
#include "engine/tokenizer.h"

#define MAX_CHOICES 4

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;      /* choices expected */
    int n_done; /* DONE events seen */
    int done[MAX_CHOICES];
    engine_finish_t finish[MAX_CHOICES];
    char text[MAX_CHOICES][1024];
    size_t n_text[MAX_CHOICES];
    int tok[MAX_CHOICES][64];
    int n_tok[MAX_CHOICES];
    int n_gen[MAX_CHOICES];
    int bad_index;
} res_t;

static void on_ev(void *user, const engine_event_t *ev)
{
    res_t *r = user;
    pthread_mutex_lock(&r->mu);
    int i = ev->index;
    if (i < 0 || i >= r->n || r->done[i]) {
        r->bad_index++;
    } else if (ev->type == ENGINE_EV_TOKEN) {
        if (ev->token >= 0 && r->n_tok[i] < 64) r->tok[i][r->n_tok[i]++] = ev->token;
        if (r->n_text[i] + ev->text_len < sizeof r->text[i]) {
            memcpy(r->text[i] + r->n_text[i], ev->text, ev->text_len);
            r->n_text[i] += ev->text_len;
        }
    } else {
        r->done[i] = 1;
        r->finish[i] = ev->finish;
        r->n_gen[i] = ev->n_gen;
        r->n_done++;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

static engine_t *eng;

/* The scalar level is CI's slowest (about 0.5 s a token in release on 2
 * shared cores, a second under ASan+UBSan; test_kernels checks it equal to
 * SIMD bit for bit): there the fork test uses a prompt inside one block (the
 * shared partial block and its copy on write are still exercised; sharing
 * full blocks is checked on the other levels), fewer tokens, and compares
 * fewer choices with single runs; the sanitizers shrink it further. */
static int sanitized, scalar;

static int setup(void **state)
{
    (void)state;
    char path[4096];
    test_model_path(path, sizeof path, TEST_SMOLLM2);
    engine_config_t cfg = {.model_path = path, .n_threads = 2, .n_ctx = 256, .n_seq_max = 4};
    bar_msg_t msg = {{0}};
    if (engine_create(&eng, &cfg, &msg)) {
        fprintf(stderr, "engine_create: %s\n", msg.text);
        return -1;
    }
    scalar = !strcmp(kern_level_name(), "scalar");
#ifdef BARISTA_SANITIZED
    sanitized = 1;
#endif
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_destroy(eng);
    return 0;
}

static uint64_t submit(const char *prompt, engine_sampling_t sp, res_t *r, int *rc_out)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->n = sp.n > 1 ? sp.n : 1;
    int32_t ids[256];
    size_t n = 0;
    assert_int_equal(tok_encode(engine_tok(eng), prompt, strlen(prompt), 1, 0, ids, 256, &n), 0);
    engine_req_t req = {.prompt = ids, .n_prompt = n, .sampling = sp, .cb = on_ev, .user = r};
    uint64_t id = 0;
    bar_msg_t msg = {{0}};
    int rc = engine_submit(eng, &req, &id, &msg);
    if (rc_out)
        *rc_out = rc;
    else
        assert_int_equal(rc, 0);
    return id;
}

static void res_wait(res_t *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->n_done < r->n)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n; i++)
        r->text[i][r->n_text[i]] = 0;
    assert_int_equal(r->bad_index, 0);
}

static void wait_idle(void)
{
    engine_stats_t st;
    for (int i = 0; i < 4000; i++) {
        engine_stats(eng, &st);
        if (st.n_active == 0 && st.n_queued == 0) return;
        usleep(1000);
    }
    fail_msg("engine did not go idle");
}

static engine_sampling_t sampled(int n, uint64_t seed, int max_tokens)
{
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = 1.0f;
    sp.top_k = 40;
    sp.seed = seed;
    sp.has_seed = 1;
    sp.max_tokens = max_tokens;
    sp.ignore_eos = 1;
    sp.n = n;
    return sp;
}

/* A prompt over one KV block (64 positions), so the fork shares a full block
 * and copies the partial one. */
static const char *LONG_PROMPT =
    "Caching is useful because the same questions come back again and again: a "
    "server that remembers the answers it gave can reply at once, without running "
    "the model, and it saves both time and energy. Here is one more reason why "
    "caching matters for large language models in production, and for the people "
    "who pay for the machines that run them every single day of the year:";

static void test_fork_equals_seeds(void **state)
{
    (void)state;
    const int n = 3, mt = sanitized ? (scalar ? 2 : 3) : (scalar ? 3 : 6);
    const char *prompt = scalar ? "Once upon a time" : LONG_PROMPT;
    engine_stats_t before, after;
    wait_idle();
    engine_stats(eng, &before);
    res_t forked;
    submit(prompt, sampled(n, 1234, mt), &forked, NULL);
    res_wait(&forked);
    wait_idle();
    engine_stats(eng, &after);
    int n_prompt = 0;
    {
        int32_t ids[256];
        size_t np = 0;
        tok_encode(engine_tok(eng), prompt, strlen(prompt), 1, 0, ids, 256, &np);
        n_prompt = (int)np;
    }
    if (!scalar) assert_true(n_prompt > 64); /* a full block is shared */
    /* one prefill for the three choices */
    assert_int_equal((int)(after.n_tokens_prompt - before.n_tokens_prompt), n_prompt);
    assert_int_equal((int)(after.n_tokens_gen - before.n_tokens_gen), n * mt);
    assert_int_equal(after.kv_blocks_used, 0); /* every shared block went back */
    for (int i = 0; i < n; i++) {
        assert_int_equal(forked.finish[i], ENGINE_FINISH_LENGTH);
        assert_int_equal(forked.n_gen[i], mt);
        assert_int_equal(forked.n_tok[i], mt);
    }
    /* choice i == a single request with seed + i, token for token */
    for (int i = 0; i < n; i++) {
        if ((sanitized || scalar) && i == 1) continue; /* 0 (unforked), 2 (seed + 2) suffice */
        res_t one;
        submit(prompt, sampled(1, 1234 + (uint64_t)i, mt), &one, NULL);
        res_wait(&one);
        fprintf(stderr, "choice %d: %s\n", i, forked.text[i]);
        assert_memory_equal(one.tok[0], forked.tok[i], (size_t)mt * sizeof(int));
        assert_string_equal(one.text[0], forked.text[i]);
    }
    int distinct = strcmp(forked.text[0], forked.text[1]) || strcmp(forked.text[1], forked.text[2]);
    assert_true(distinct);
    wait_idle();
}

static void test_fork_with_stop_and_short_prompt(void **state)
{
    (void)state;
    /* a prompt inside one block; a stop string; choices end on their own */
    engine_sampling_t sp = sampled(4, 7, scalar ? 3 : 8);
    sp.stop[0] = " ";
    sp.n_stop = 1;
    res_t r;
    submit("Once upon a time", sp, &r, NULL);
    res_wait(&r);
    for (int i = 0; i < 4; i++) {
        assert_true(r.finish[i] == ENGINE_FINISH_STOP || r.finish[i] == ENGINE_FINISH_LENGTH);
        assert_null(strchr(r.text[i], ' '));
    }
    wait_idle();
    engine_stats_t st;
    engine_stats(eng, &st);
    assert_int_equal(st.kv_blocks_used, 0);
}

static void test_cancel_before_fork(void **state)
{
    (void)state;
    res_t r;
    uint64_t id = submit(scalar ? "Once upon a time" : LONG_PROMPT, sampled(3, 1, 50), &r, NULL);
    engine_cancel(eng, id);
    res_wait(&r); /* three DONE events, whenever the cancel landed */
    for (int i = 0; i < 3; i++)
        assert_true(r.finish[i] == ENGINE_FINISH_CANCELLED || r.finish[i] == ENGINE_FINISH_LENGTH);
    wait_idle();
    engine_stats_t st;
    engine_stats(eng, &st);
    assert_int_equal(st.kv_blocks_used, 0);
}

static int tok_of(const char *s)
{
    int32_t ids[8];
    size_t n = 0;
    assert_int_equal(tok_encode(engine_tok(eng), s, strlen(s), 0, 0, ids, 8, &n), 0);
    assert_int_equal((int)n, 1);
    return ids[0];
}

static void test_logit_bias(void **state)
{
    (void)state;
    const int nt = scalar ? (sanitized ? 1 : 2) : 4; /* tokens per request */
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = 0.0f;
    sp.max_tokens = nt;
    sp.ignore_eos = 1;
    res_t plain;
    submit("The capital of France is", sp, &plain, NULL);
    res_wait(&plain);
    int first = plain.tok[0][0];
    /* -100 bans the greedy choice */
    engine_bias_t ban = {first, -100.0f};
    sp.logit_bias = &ban;
    sp.n_logit_bias = 1;
    res_t banned;
    submit("The capital of France is", sp, &banned, NULL);
    res_wait(&banned);
    for (int k = 0; k < banned.n_tok[0]; k++)
        assert_int_not_equal(banned.tok[0][k], first);
    /* +100 forces a token, also when sampling */
    engine_bias_t force = {tok_of(" banana"), 100.0f};
    sp = sampled(2, 5, nt);
    sp.logit_bias = &force;
    sp.n_logit_bias = 1;
    res_t forced;
    submit("The capital of France is", sp, &forced, NULL);
    res_wait(&forced);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(forced.n_tok[i], nt);
        for (int k = 0; k < nt; k++)
            assert_int_equal(forced.tok[i][k], force.token);
    }
    wait_idle();
}

/* A pool too small for the choices' copies of the shared partial block: the
 * copy on write pre-empts a choice, which resumes once another one ends;
 * every choice still completes and no block leaks. */
static void test_fork_under_preemption(void **state)
{
    (void)state;
    engine_stats_t st;
    engine_stats(eng, &st);
    char path[4096];
    test_model_path(path, sizeof path, TEST_SMOLLM2);
    engine_config_t cfg = {.model_path = path,
                           .n_threads = 2,
                           .n_ctx = 256,
                           .n_seq_max = 4,
                           .kv_mem = 2 * (st.kv_mem / (size_t)st.kv_blocks_total)};
    engine_t *small = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(engine_create(&small, &cfg, &msg), 0);
    engine_t *saved = eng;
    eng = small; /* submit() and wait_idle() use eng */
    /* the copies on write come with each choice's first token */
    const int mt = sanitized && scalar ? 2 : 3;
    res_t r;
    submit("Once upon a time", sampled(3, 9, mt), &r, NULL);
    res_wait(&r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.finish[i], ENGINE_FINISH_LENGTH);
        assert_int_equal(r.n_gen[i], mt);
    }
    wait_idle();
    engine_stats(small, &st);
    assert_true(st.preemptions >= 1);
    assert_int_equal(st.kv_blocks_used, 0);
    eng = saved;
    engine_destroy(small);
}

/* n > 1 with an output constraint (structured outputs): every choice gets its
 * own grammar state at the fork, so each is a complete sentence of the
 * schema's grammar and ends with STOP when nothing can extend it. */
static void test_fork_with_grammar(void **state)
{
    (void)state;
    static const char schema[] = "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":"
                                 "\"boolean\"}},\"required\":[\"ok\"],"
                                 "\"additionalProperties\":false}";
    const char *js = scalar ? "{\"type\":\"boolean\"}" : schema; /* scalar: 1-2 tokens */
    gram_t *g = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(json_schema_compile(js, strlen(js), &g, &msg), 0);
    engine_sampling_t sp = sampled(3, 21, 48);
    sp.ignore_eos = 0;
    sp.grammar = g; /* engine_submit takes its own reference */
    res_t r;
    submit("Once upon a time", sp, &r, NULL);
    res_wait(&r);
    for (int i = 0; i < 3; i++) {
        fprintf(stderr, "choice %d: %s\n", i, r.text[i]);
        assert_int_equal(r.finish[i], ENGINE_FINISH_STOP);
        gram_state_t *st = NULL;
        assert_int_equal(gram_state_create(&st, g), 0);
        assert_int_equal(gram_state_feed(st, r.text[i], r.n_text[i]), 0);
        assert_true(gram_state_done(st));
        gram_state_destroy(st);
    }
    gram_release(g);
    wait_idle();
    engine_stats_t st;
    engine_stats(eng, &st);
    assert_int_equal(st.kv_blocks_used, 0);
}

static void test_submit_errors(void **state)
{
    (void)state;
    res_t r;
    int rc = 0;
    submit("Hello", sampled(5, 1, 2), &r, &rc); /* 4 sequences at most */
    assert_int_equal(rc, BAR_ERR_RANGE);
    engine_bias_t bad = {1 << 20, 1.0f};
    engine_sampling_t sp = sampled(1, 1, 2);
    sp.logit_bias = &bad;
    sp.n_logit_bias = 1;
    submit("Hello", sp, &r, &rc);
    assert_int_equal(rc, BAR_ERR_INVALID);
    bad.token = -1;
    submit("Hello", sp, &r, &rc);
    assert_int_equal(rc, BAR_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_errors),
        cmocka_unit_test(test_fork_equals_seeds),
        cmocka_unit_test(test_fork_with_stop_and_short_prompt),
        cmocka_unit_test(test_cancel_before_fork),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_fork_under_preemption),
        cmocka_unit_test(test_fork_with_grammar),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
