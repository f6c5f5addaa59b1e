/* test_engine.c — the engine thread on the real SmolLM2 model: continuous
 * batching gives the same greedy text as running alone, stop strings,
 * cancellation frees the slot, prefix reuse, priorities, deadlines, errors. */
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
#include "engine/kernels/kern.h"
#include "engine/model.h"
#include "engine/pool.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "util/timeutil.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    engine_finish_t finish;
    char text[8192];
    size_t n_text;
    int n_gen, n_cached, n_events;
    double t_done;
    int order;    /* completion order stamp */
    float lp[64]; /* logprob of each generated token (when asked) */
    int n_lp;
    engine_top_t top[20]; /* the first token's alternatives (when asked) */
    int n_top;
} res_t;

static int g_order;
static pthread_mutex_t g_order_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_ev(void *user, const engine_event_t *ev)
{
    res_t *r = user;
    pthread_mutex_lock(&r->mu);
    r->n_events++;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (r->n_lp == 0 && ev->n_top > 0) {
            r->n_top = ev->n_top < 20 ? ev->n_top : 20;
            memcpy(r->top, ev->top, (size_t)r->n_top * sizeof(engine_top_t));
        }
        if (r->n_lp < 64) r->lp[r->n_lp++] = ev->logprob;
        if (r->n_text + ev->text_len < sizeof r->text) {
            memcpy(r->text + r->n_text, ev->text, ev->text_len);
            r->n_text += ev->text_len;
        }
    } else {
        r->done = 1;
        r->finish = ev->finish;
        r->n_gen = ev->n_gen;
        r->n_cached = ev->n_cached;
        r->t_done = time_now_mono();
        pthread_mutex_lock(&g_order_mu);
        r->order = ++g_order;
        pthread_mutex_unlock(&g_order_mu);
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

static void res_init(res_t *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void res_wait(res_t *r)
{
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    r->text[r->n_text] = 0;
}

#ifdef BARISTA_SANITIZED /* smaller workload under ASan+UBSan */
#define BUSY_TOKENS 12
#define N_GEN 10
#else
#define BUSY_TOKENS 48
#define N_GEN 24
#endif

static engine_t *eng;

static int setup(void **state)
{
    (void)state;
    char path[4096];
    test_model_path(path, sizeof path, TEST_SMOLLM2);
    engine_config_t cfg = {.model_path = path, .n_threads = 2, .n_ctx = 512, .n_seq_max = 4};
    bar_msg_t msg = {{0}};
    if (engine_create(&eng, &cfg, &msg)) {
        fprintf(stderr, "engine_create: %s\n", msg.text);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_destroy(eng);
    return 0;
}

static size_t encode(const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    assert_int_equal(tok_encode(engine_tok(eng), text, strlen(text), 1, 0, ids, cap, &n), 0);
    return n;
}

static uint64_t submit_ids(const int32_t *ids, size_t n, engine_sampling_t sp, res_t *r,
                           int priority)
{
    res_init(r);
    engine_req_t req = {
        .prompt = ids, .n_prompt = n, .sampling = sp, .cb = on_ev, .user = r, .priority = priority};
    uint64_t id = 0;
    bar_msg_t msg = {{0}};
    assert_int_equal(engine_submit(eng, &req, &id, &msg), 0);
    return id;
}

static uint64_t submit(const char *prompt, engine_sampling_t sp, res_t *r, int priority)
{
    int32_t ids[512];
    size_t n = encode(prompt, ids, 512);
    return submit_ids(ids, n, sp, r, priority);
}

static engine_sampling_t greedy(int n)
{
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = 0.0f;
    sp.max_tokens = n;
    return sp;
}

static void wait_idle(void)
{
    engine_stats_t st;
    for (int i = 0; i < 2000; i++) {
        engine_stats(eng, &st);
        if (st.n_active == 0 && st.n_queued == 0) return;
        usleep(1000);
    }
    fail_msg("engine did not go idle");
}

static const char *prompts[4] = {"The quick brown fox", "In 1969, the first humans",
                                 "def fibonacci(n):", "Caching is useful because"};

static void test_batching_matches_alone(void **state)
{
    (void)state;
    res_t alone[4], together[4];
    for (int i = 0; i < 4; i++) {
        submit(prompts[i], greedy(N_GEN), &alone[i], 0);
        res_wait(&alone[i]);
        assert_int_equal(
            alone[i].finish == ENGINE_FINISH_LENGTH || alone[i].finish == ENGINE_FINISH_STOP, 1);
    }
    for (int i = 0; i < 4; i++)
        submit(prompts[i], greedy(N_GEN), &together[i], 0);
    int same = 0;
    for (int i = 0; i < 4; i++) {
        res_wait(&together[i]);
        same += !strcmp(alone[i].text, together[i].text);
    }
    fprintf(stderr, "batched == alone for %d/4 prompts (kernel %s)\n", same, kern_level_name());
    /* Every level sums each sequence in an order fixed by that sequence alone
     * (llama.cpp's, docs/ARCHITECTURE.md "Numerics"), never by the batch it
     * shares, so batching cannot change a token. */
    assert_int_equal(same, 4);
    wait_idle();
}

/* Chunking never leaves a one-token prefill step (llama.cpp would sum that
 * token's attention in its single-row order, so the logits would depend on
 * how the engine split the prompt). */
static void test_prefill_take(void **state)
{
    (void)state;
    static const int T[][3] = {/* todo, room, take */
                               {1, 512, 1},     {5, 512, 5}, {512, 512, 512}, {513, 512, 511},
                               {600, 512, 512}, {3, 2, 0},   {10, 1, 0},      {10, 2, 2},
                               {3, 3, 3},       {4, 3, 2},   {2, 1, 0},       {1, 1, 1}};
    for (size_t i = 0; i < sizeof T / sizeof *T; i++) {
        int got = engine_prefill_take(T[i][0], T[i][1]);
        if (got != T[i][2])
            fail_msg("engine_prefill_take(%d, %d) = %d, want %d", T[i][0], T[i][1], got, T[i][2]);
    }
}

/* n token ids of a long text (salt picks the text) */
static void long_ids(int salt, int32_t *ids, size_t n)
{
    static const char *texts[2] = {
        "Coffee houses spread across Europe in the seventeenth century, and merchants met "
        "there to trade news, insure ships and sign contracts. ",
        "A cache keeps answers close to where they are needed, so that a repeated question "
        "costs a lookup instead of a computation. "};
    char buf[16384] = "";
    size_t got = 0;
    while (got < n) {
        strncat(buf, texts[salt], sizeof buf - strlen(buf) - 1);
        got = encode(buf, ids, 512);
    }
}

/* The first token's 20 best logprobs llama.cpp's order gives for this prompt
 * evaluated in one batch (every attention sum in its batched order). */
static void reference_top(const int32_t *ids, int n, engine_top_t top[20])
{
    const model_t *m = engine_model(eng);
    int n_vocab = model_hparams(m)->n_vocab;
    pool_t *pool = pool_create(2);
    kv_cache_t *kv;
    model_ctx_t *ctx;
    bar_msg_t msg = {{0}};
    assert_int_equal(kv_create(&kv, m, 1, 512, &msg), 0);
    assert_int_equal(model_ctx_create(&ctx, m, 512, 512, pool, &msg), 0);
    int *pos = malloc((size_t)n * sizeof(int)), *slot = calloc((size_t)n, sizeof(int)),
        *row = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        row[i] = i == n - 1 ? 0 : -1;
    }
    float *logits = malloc((size_t)n_vocab * sizeof(float));
    model_batch_t b = {n, ids, pos, slot, row};
    assert_int_equal(model_forward(ctx, kv, &b, logits, &msg), 0);
    sampler_t *smp;
    assert_int_equal(sampler_create(&smp, n_vocab), 0);
    engine_sampling_t sp = greedy(1);
    sp.logprobs = 1;
    sp.top_logprobs = 20;
    sampler_reset(smp, &sp, ids, n);
    float lp = 0.0f;
    sampler_sample(smp, logits, &lp, top, 20);
    sampler_destroy(smp);
    free(logits);
    free(pos);
    free(slot);
    free(row);
    model_ctx_destroy(ctx);
    kv_destroy(kv);
    pool_destroy(pool);
}

static void check_top(const char *what, const res_t *r, const engine_top_t want[20])
{
    assert_int_equal(r->n_top, 20);
    for (int i = 0; i < 20; i++)
        if (r->top[i].token != want[i].token ||
            memcmp(&r->top[i].logprob, &want[i].logprob, sizeof(float)))
            fail_msg("%s: alternative %d is %d (%.9g), one batch gives %d (%.9g)", what, i,
                     r->top[i].token, r->top[i].logprob, want[i].token, want[i].logprob);
}

/* A prompt split across steps by other work, and the same prompt again with
 * its prefix reused, give logits bit-identical to one fresh batch. */
static void test_split_prefill_exact(void **state)
{
    (void)state;
    if (!strcmp(kern_level_name(), "scalar")) {
        print_message("skipped on the scalar level (two 512-token prefills are too slow)\n");
        return; /* engine_prefill_take is tested above on every level */
    }
    enum { NA = 300, NB = 212 };
    int32_t a_ids[512], b_ids[512];
    long_ids(0, a_ids, NA);
    long_ids(1, b_ids, NB);
    engine_top_t want_a[20], want_b[20];
    reference_top(a_ids, NA, want_a);
    reference_top(b_ids, NB, want_b);

    /* a busy decoder holds the engine while A and B queue up, so they are
     * admitted together: 1 decode + 300 + 212 > 512 splits one of them */
    res_t busy, a, b, again;
    engine_sampling_t sp = greedy(4);
    sp.logprobs = 1;
    sp.top_logprobs = 20;
    submit("The weather today", greedy(BUSY_TOKENS), &busy, 0);
    usleep(20000);
    submit_ids(a_ids, NA, sp, &a, 0);
    submit_ids(b_ids, NB, sp, &b, 0);
    res_wait(&busy);
    res_wait(&a);
    res_wait(&b);
    check_top("split prefill A", &a, want_a);
    check_top("split prefill B", &b, want_b);

    /* the same prompt again: its KV is reused, the rest re-evaluated (A: its
     * last token alone in a step moves its logprobs by ~1e-3) */
    submit_ids(a_ids, NA, sp, &again, 0);
    res_wait(&again);
    assert_true(again.n_cached > 0);
    check_top("prefix reuse", &again, want_a);
    assert_string_equal(again.text, a.text);
    wait_idle();
}

static void test_stop_string(void **state)
{
    (void)state;
    res_t a, b;
    submit(prompts[1], greedy(N_GEN), &a, 0);
    res_wait(&a);
    assert_true(a.n_text > 12);
    /* stop on a piece from the middle of the text */
    char stop[8];
    size_t at = a.n_text / 2;
    memcpy(stop, a.text + at, 4);
    stop[4] = 0;
    const char *first = strstr(a.text, stop);
    size_t expect = (size_t)(first - a.text);
    engine_sampling_t sp = greedy(N_GEN);
    sp.stop[0] = "\x01never";
    sp.stop[1] = stop;
    sp.n_stop = 2;
    submit(prompts[1], sp, &b, 0);
    res_wait(&b);
    assert_int_equal(b.finish, ENGINE_FINISH_STOP);
    assert_int_equal(b.n_text, expect);
    assert_memory_equal(b.text, a.text, expect);
}

static void test_cancel_frees_slot(void **state)
{
    (void)state;
    res_t r;
    engine_sampling_t sp = greedy(400);
    sp.ignore_eos = 1;
    uint64_t id = submit("Tell me a very long story about", sp, &r, 0);
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&r.mu);
        int ev = r.n_events;
        pthread_mutex_unlock(&r.mu);
        if (ev >= 2) break;
        usleep(1000);
    }
    engine_cancel(eng, id);
    res_wait(&r);
    assert_int_equal(r.finish, ENGINE_FINISH_CANCELLED);
    assert_true(r.n_gen < 400);
    wait_idle();
    engine_cancel(eng, id);       /* already finished: ignored */
    engine_cancel(eng, 1u << 30); /* unknown: ignored */
}

static void test_prefix_reuse(void **state)
{
    (void)state;
    res_t a, b;
    const char *base = "Paris is the capital and most populous city of France. It is";
    submit(base, greedy(4), &a, 0);
    res_wait(&a);
    submit(base, greedy(4), &b, 0);
    res_wait(&b);
    assert_true(b.n_cached > 5);
    assert_string_equal(a.text, b.text);
}

static void test_priority(void **state)
{
    (void)state;
    /* fill all 4 slots with long requests, then queue low and high */
    res_t busy[4], low, high;
    engine_sampling_t sp = greedy(BUSY_TOKENS);
    sp.ignore_eos = 1;
    for (int i = 0; i < 4; i++)
        submit(prompts[i], sp, &busy[i], 0);
    submit("Low priority request", greedy(2), &low, 0);
    submit("High priority request", greedy(2), &high, 5);
    res_wait(&low);
    res_wait(&high);
    for (int i = 0; i < 4; i++)
        res_wait(&busy[i]);
    assert_true(high.order < low.order);
}

static void test_deadline(void **state)
{
    (void)state;
    int32_t ids[64];
    size_t n = encode("Count to one thousand:", ids, 64);
    res_t r;
    res_init(&r);
    engine_sampling_t sp = greedy(400);
    sp.ignore_eos = 1;
    engine_req_t req = {.prompt = ids,
                        .n_prompt = n,
                        .sampling = sp,
                        .cb = on_ev,
                        .user = &r,
                        .deadline = time_now_mono() + 0.3};
    bar_msg_t msg = {{0}};
    assert_int_equal(engine_submit(eng, &req, NULL, &msg), 0);
    res_wait(&r);
    assert_int_equal(r.finish, ENGINE_FINISH_TIMEOUT);
    assert_true(r.n_gen < 400);
}

static void test_submit_errors(void **state)
{
    (void)state;
    res_t r;
    res_init(&r);
    bar_msg_t msg = {{0}};
    engine_req_t req = {
        .prompt = NULL, .n_prompt = 0, .sampling = greedy(4), .cb = on_ev, .user = &r};
    assert_int_equal(engine_submit(eng, &req, NULL, &msg), BAR_ERR_INVALID);
    int32_t *big = calloc(600, sizeof(int32_t));
    req.prompt = big;
    req.n_prompt = 600;
    assert_int_equal(engine_submit(eng, &req, NULL, &msg), BAR_ERR_RANGE);
    assert_non_null(strstr(msg.text, "600"));
    big[0] = 999999;
    req.n_prompt = 4;
    assert_int_equal(engine_submit(eng, &req, NULL, &msg), BAR_ERR_INVALID);
    free(big);
    assert_int_equal(r.n_events, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_errors),
        cmocka_unit_test(test_batching_matches_alone),
        cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_cancel_frees_slot),
        cmocka_unit_test(test_prefix_reuse),
        cmocka_unit_test(test_prefill_take),
        cmocka_unit_test(test_split_prefill_exact),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_deadline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
