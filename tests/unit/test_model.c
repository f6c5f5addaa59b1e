/* test_model.c — the llama forward pass against llama.cpp.
 *
 * Vectors: tests/ref/model_vectors.json, made by tests/ref/gen_model_vectors.py
 * with llama-cpp-python on the same GGUF (see tests/ref/MODEL_VECTORS.md).
 * 1. Teacher forcing: top-1 agreement with llama.cpp at every prompt position,
 *    and the mean KL(llama.cpp || barista) over llama.cpp's top-32 tokens.
 * 2. Greedy continuations (raw and chat), all cases decoded together as one
 *    batch of sequences (so continuous batching is exercised), compared with
 *    llama.cpp's 32 tokens.
 * Measured (2026-11-26): 94.5-96.6% top-1 (by level), KL 0.0035-0.0043 nats, 12-16/31 identical
 * greedy continuations (raw; chat 10-14/31 depending on the kernel level). The bounds below sit
 * just under that, so a regression in any layer fails; the goal (99% / 90%) is not reached
 * yet: the gap is rounding-level (a float64 numpy forward of the same weights differs from
 * llama.cpp by as much as we do), see the engine notes.
 * Runs with whatever kernel level BARISTA_CPU selects (ctest runs it twice). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels/kern.h"
#include "engine/model.h"
#include "engine/pool.h"

#define GEN 32 /* greedy tokens in the reference */

/* How much runs: every case and GEN greedy tokens in release on a SIMD level;
 * the first 8 cases on the (slow) scalar level; under sanitizers (memory
 * safety is the point) the first 4 cases and 16 greedy tokens. On the scalar
 * level under sanitizers a token costs over a second (and test_kernels checks
 * that level equal to SIMD bit for bit): the first case, 2 greedy tokens, and
 * no chat continuation (the raw one's code path, with a 54-token prompt).
 * Picked in setup (the level is known at run time). */
#define MAX_CASES 64
static int max_cases = MAX_CASES, gen_cmp, sanitized_scalar;
static void pick_workload(void)
{
    int scalar = !strcmp(kern_level_name(), "scalar");
#ifdef BARISTA_SANITIZED
    sanitized_scalar = scalar;
    max_cases = scalar ? 1 : 4;
    gen_cmp = scalar ? 2 : 16;
#else
    max_cases = scalar ? 8 : MAX_CASES;
    gen_cmp = GEN;
#endif
}
/* The goal: >= 90% of continuations identical to llama.cpp's.
 * Measured since the kernels follow llama.cpp's summation order: all of them
 * (31/31 raw and chat on every level; 8/8 scalar; 4/4 sanitized; 1/1 raw
 * sanitized scalar). */
#define GREEDY_MIN(n) (((n)*9 + 9) / 10)

typedef struct {
    int n_prompt;
    int32_t prompt[256];
    int top1[256];
    int top_id[256][32];
    float top_lp[256][32];
    int n_ref;
    int32_t ref[GEN + 1];
    int n_chat;
    int32_t chat[512];
    int n_ref_chat;
    int32_t ref_chat[GEN + 1];
} tcase_t;

static tcase_t *cases;
static int n_cases;
static model_t *model;
static pool_t *pool;

static int read_ids(const cJSON *arr, int32_t *out, int cap)
{
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (n < cap) out[n] = (int32_t)it->valuedouble;
        n++;
    }
    return n > cap ? cap : n;
}

static int setup(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/ref/model_vectors.json", BARISTA_SOURCE_DIR);
    char *txt = test_read_file(path, NULL);
    if (!txt) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    if (!root) return -1;
    pick_workload();
    cases = calloc(MAX_CASES, sizeof(tcase_t));
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases"))
    {
        if (n_cases == max_cases) break;
        tcase_t *t = &cases[n_cases++];
        t->n_prompt = read_ids(cJSON_GetObjectItem(c, "tokens"), t->prompt, 256);
        const cJSON *teacher = cJSON_GetObjectItem(c, "teacher");
        int32_t tmp[256];
        int n1 = read_ids(cJSON_GetObjectItem(teacher, "top1"), tmp, 256);
        for (int i = 0; i < n1; i++)
            t->top1[i] = tmp[i];
        int pos = 0;
        const cJSON *row;
        cJSON_ArrayForEach(row, cJSON_GetObjectItem(teacher, "top"))
        {
            int k = 0;
            const cJSON *pair;
            cJSON_ArrayForEach(pair, row)
            {
                if (k < 32 && pos < 256) {
                    t->top_id[pos][k] = cJSON_GetArrayItem(pair, 0)->valueint;
                    t->top_lp[pos][k] = (float)cJSON_GetArrayItem(pair, 1)->valuedouble;
                }
                k++;
            }
            pos++;
        }
        t->n_ref = read_ids(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "greedy_raw"), "tokens"),
                            t->ref, GEN + 1);
        t->n_chat = read_ids(cJSON_GetObjectItem(c, "chat_tokens"), t->chat, 512);
        t->n_ref_chat =
            read_ids(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "greedy_chat"), "tokens"),
                     t->ref_chat, GEN + 1);
    }
    cJSON_Delete(root);

    test_model_path(path, sizeof path, TEST_SMOLLM2);
    bar_msg_t msg = {{0}};
    if (model_load(&model, path, &msg)) {
        fprintf(stderr, "model_load %s: %s (run scripts/fetch-models)\n", path, msg.text);
        return -1;
    }
    pool = pool_create(2);
    fprintf(stderr, "kernel level: %s, %d cases\n", kern_level_name(), n_cases);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    model_free(model);
    if (pool) pool_destroy(pool);
    free(cases);
    return 0;
}

static void test_teacher_forcing(void **state)
{
    (void)state;
    const model_hparams_t *hp = model_hparams(model);
    assert_int_equal(hp->n_layer, 30);
    assert_int_equal(hp->n_vocab, 49152);
    kv_cache_t *kv;
    model_ctx_t *ctx;
    bar_msg_t msg = {{0}};
    assert_int_equal(kv_create(&kv, model, 1, 512, &msg), 0);
    assert_int_equal(model_ctx_create(&ctx, model, 256, 512, pool, &msg), 0);
    float *logits = malloc((size_t)256 * hp->n_vocab * sizeof(float));
    int pos[256], slot[256], row[256];
    int agree = 0, total = 0;
    double kl_sum = 0.0, lp_maxdiff = 0.0;
    for (int ci = 0; ci < n_cases; ci++) {
        tcase_t *t = &cases[ci];
        for (int i = 0; i < t->n_prompt; i++) {
            pos[i] = i;
            slot[i] = 0;
            row[i] = i;
        }
        model_batch_t b = {t->n_prompt, t->prompt, pos, slot, row};
        assert_int_equal(model_forward(ctx, kv, &b, logits, &msg), 0);
        for (int i = 0; i < t->n_prompt; i++) {
            const float *l = logits + (size_t)i * hp->n_vocab;
            int best = 0;
            float mx = l[0];
            for (int v = 1; v < hp->n_vocab; v++)
                if (l[v] > mx) {
                    mx = l[v];
                    best = v;
                }
            double s = 0.0;
            for (int v = 0; v < hp->n_vocab; v++)
                s += exp((double)(l[v] - mx));
            double lse = mx + log(s);
            double kl = 0.0;
            for (int k = 0; k < 32; k++) {
                double lp_ref = t->top_lp[i][k];
                double lp_ours = l[t->top_id[i][k]] - lse;
                kl += exp(lp_ref) * (lp_ref - lp_ours);
                if (fabs(lp_ours - lp_ref) > lp_maxdiff) lp_maxdiff = fabs(lp_ours - lp_ref);
            }
            kl_sum += kl;
            if (getenv("BARISTA_TEST_VERBOSE") && (best != t->top1[i] || kl > 0.02))
                fprintf(stderr, "  case %d pos %d/%d: ours %d ref %d (ref gap %.4f) kl %.4f\n", ci,
                        i, t->n_prompt, best, t->top1[i], t->top_lp[i][0] - t->top_lp[i][1], kl);
            agree += best == t->top1[i];
            total++;
        }
    }
    double rate = (double)agree / total, mean_kl = kl_sum / total;
    fprintf(stderr,
            "teacher forcing: top-1 agreement %d/%d = %.2f%%, mean KL %.2g nats, "
            "max |logprob - llama.cpp| %.2g (reference rounded to 1e-5)\n",
            agree, total, 100.0 * rate, mean_kl, lp_maxdiff);
    assert_true(total > (max_cases < MAX_CASES ? 20 * n_cases : 500));
    /* the goal is 99%; barista's logits equal llama.cpp's, so every
     * position agrees and the 32 best logprobs match to the reference's
     * rounding (before the exact order: 94.5-97.3%, KL 0.0035-0.0043) */
    assert_true(rate >= 0.99);
    assert_true(mean_kl < 1e-4);
    assert_true(lp_maxdiff < 1e-4);
    free(logits);
    model_ctx_destroy(ctx);
    kv_destroy(kv);
}

/* Greedy-decode every case together, one sequence per KV slot. */
static int greedy_batch(int chat)
{
    const model_hparams_t *hp = model_hparams(model);
    int n = n_cases;
    kv_cache_t *kv;
    model_ctx_t *ctx;
    bar_msg_t msg = {{0}};
    assert_int_equal(kv_create(&kv, model, n, 512, &msg), 0);
    assert_int_equal(model_ctx_create(&ctx, model, 512, 512, pool, &msg), 0);
    float *logits = malloc((size_t)n * hp->n_vocab * sizeof(float));
    int32_t *tok = malloc(512 * sizeof(int32_t));
    int *pos = malloc(512 * sizeof(int)), *slot = malloc(512 * sizeof(int)),
        *row = malloc(512 * sizeof(int));
    int32_t(*gen)[GEN + 1] = calloc((size_t)n, sizeof *gen);
    int *n_gen = calloc((size_t)n, sizeof(int)), *done = calloc((size_t)n, sizeof(int));
    int *n_past = calloc((size_t)n, sizeof(int));
    /* prefill: each case's prompt (chunks of whole prompts up to 512 tokens) */
    for (int ci = 0; ci < n;) {
        int m = 0, start = ci;
        while (ci < n) {
            const int32_t *p = chat ? cases[ci].chat : cases[ci].prompt;
            int np = chat ? cases[ci].n_chat : cases[ci].n_prompt;
            if (m + np > 512) break;
            for (int i = 0; i < np; i++) {
                tok[m] = p[i];
                pos[m] = i;
                slot[m] = ci;
                row[m] = i == np - 1 ? ci - start : -1;
                m++;
            }
            n_past[ci] = np;
            ci++;
        }
        model_batch_t b = {m, tok, pos, slot, row};
        assert_int_equal(model_forward(ctx, kv, &b, logits, &msg), 0);
        for (int k = start; k < ci; k++) {
            const float *l = logits + (size_t)(k - start) * hp->n_vocab;
            int best = 0;
            for (int v = 1; v < hp->n_vocab; v++)
                if (l[v] > l[best]) best = v;
            gen[k][n_gen[k]++] = best;
            if (best == 0 || best == 2) done[k] = 1;
        }
    }
    /* decode all unfinished sequences together */
    for (int step = 1; step < gen_cmp; step++) {
        int m = 0;
        for (int k = 0; k < n; k++) {
            if (done[k]) continue;
            tok[m] = gen[k][n_gen[k] - 1];
            pos[m] = n_past[k]++;
            slot[m] = k;
            row[m] = m;
            m++;
        }
        if (m == 0) break;
        model_batch_t b = {m, tok, pos, slot, row};
        assert_int_equal(model_forward(ctx, kv, &b, logits, &msg), 0);
        for (int r = 0; r < m; r++) {
            int k = slot[r];
            const float *l = logits + (size_t)r * hp->n_vocab;
            int best = 0;
            for (int v = 1; v < hp->n_vocab; v++)
                if (l[v] > l[best]) best = v;
            gen[k][n_gen[k]++] = best;
            if (best == 0 || best == 2) done[k] = 1;
        }
    }
    int same = 0;
    for (int k = 0; k < n; k++) {
        const int32_t *ref = chat ? cases[k].ref_chat : cases[k].ref;
        int nr = chat ? cases[k].n_ref_chat : cases[k].n_ref;
        if (nr > gen_cmp) nr = gen_cmp;
        int ok = nr == n_gen[k] && !memcmp(ref, gen[k], (size_t)nr * sizeof(int32_t));
        if (!ok) {
            int d = 0;
            while (d < nr && d < n_gen[k] && ref[d] == gen[k][d])
                d++;
            fprintf(stderr, "  %s case %d differs at token %d of %d\n", chat ? "chat" : "raw", k, d,
                    nr);
        }
        same += ok;
    }
    free(logits);
    free(tok);
    free(pos);
    free(slot);
    free(row);
    free(gen);
    free(n_gen);
    free(done);
    free(n_past);
    model_ctx_destroy(ctx);
    kv_destroy(kv);
    return same;
}

static void test_greedy_raw(void **state)
{
    (void)state;
    int same = greedy_batch(0);
    fprintf(stderr, "greedy raw: %d/%d continuations identical to llama.cpp\n", same, n_cases);
    assert_true(same >= GREEDY_MIN(n_cases));
}

static void test_greedy_chat(void **state)
{
    (void)state;
    if (sanitized_scalar) skip(); /* see pick_workload */
    int same = greedy_batch(1);
    fprintf(stderr, "greedy chat: %d/%d continuations identical to llama.cpp\n", same, n_cases);
    assert_true(same >= GREEDY_MIN(n_cases));
}

static void test_load_errors(void **state)
{
    (void)state;
    model_t *m = NULL;
    bar_msg_t msg = {{0}};
    assert_int_not_equal(model_load(&m, "/nonexistent.gguf", &msg), 0);
    assert_null(m);
    assert_true(strlen(msg.text) > 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/CMakeLists.txt", BARISTA_SOURCE_DIR);
    assert_int_not_equal(model_load(&m, path, &msg), 0);
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_teacher_forcing),
        cmocka_unit_test(test_greedy_raw),
        cmocka_unit_test(test_greedy_chat),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
