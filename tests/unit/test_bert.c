/* test_bert.c — the BERT encoder (src/engine/bert.c) with the real
 * all-MiniLM-L6-v2:
 *  - every kernel level this CPU has (BARISTA_CPU=avx2 / avx512) gives the
 *    scalar level's vectors within 2e-6 per component: the test re-runs
 *    itself with `--dump` under each BARISTA_CPU (the level is chosen once per
 *    process) and compares the raw floats;
 *  - a batch of sequences of different lengths equals embedding each alone;
 *  - sbert.net's published similarities (see tests/ref/bert_numpy.py);
 *  - shapes, bad ids and lengths are refused, load errors name the file.
 * The reference comparison on 560 texts is tests/e2e/test_embed.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "engine/bert.h"
#include "engine/kernels/kern.h"
#include "engine/kernels/kern_int.h"
#include "testutil.h"

static const char *const TEXTS[] = {
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "a",
    "Café crème brûlée, 我爱北京天安门, emoji 😀 and code: for (i = 0; i < n; i++) x[i] += y;",
    ("The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes "
     "up and chases the fox across the whole field and into the forest beyond the river."),
};
#define NT ((int)(sizeof TEXTS / sizeof TEXTS[0]))

static bert_t *load(void)
{
    char dir[1024];
    test_model_path(dir, sizeof dir, "all-MiniLM-L6-v2");
    bert_t *m = NULL;
    bar_msg_t msg = {{0}};
    if (bert_load(&m, dir, &msg)) {
        fprintf(stderr, "test_bert: %s (run scripts/fetch-models or set BARISTA_MODELS)\n",
                msg.text);
        return NULL;
    }
    return m;
}

/* embed TEXTS as one batch into out[NT * 384] */
static void embed_all(bert_t *m, bert_ctx_t *c, float *out)
{
    static int32_t ids[NT][256];
    const int32_t *p[NT];
    int lens[NT];
    for (int i = 0; i < NT; i++) {
        size_t n = 0;
        assert_int_equal(bert_tokenize(m, TEXTS[i], strlen(TEXTS[i]), ids[i], 256, &n, NULL), 0);
        p[i] = ids[i];
        lens[i] = (int)n;
    }
    assert_int_equal(bert_embed(c, p, lens, NT, out), 0);
}

static float dot(const float *a, const float *b)
{
    double s = 0;
    for (int i = 0; i < 384; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}

static void test_levels_equal_scalar(void **state)
{
    (void)state;
    static const char *const LEVELS[] = {"scalar", "avx2", "avx512"};
    static float vec[3][NT * 384];
    int have[3] = {0};
    for (int l = 0; l < 3; l++) {
        if (!kern_vtable_for(LEVELS[l])) continue;
        char cmd[256];
        snprintf(cmd, sizeof cmd, "BARISTA_CPU=%s /proc/%d/exe --dump", LEVELS[l], (int)getpid());
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t got = fread(vec[l], sizeof(float), NT * 384, f);
        assert_int_equal(pclose(f), 0);
        assert_int_equal(got, NT * 384);
        have[l] = 1;
    }
    assert_true(have[0]);
    for (int l = 1; l < 3; l++) {
        if (!have[l]) {
            fprintf(stderr, "test_bert: level %s not on this CPU\n", LEVELS[l]);
            continue;
        }
        float worst = 0;
        for (int i = 0; i < NT * 384; i++) {
            float d = fabsf(vec[l][i] - vec[0][i]);
            if (d > worst) worst = d;
        }
        fprintf(stderr, "test_bert: %s vs scalar: max |diff| %.3g\n", LEVELS[l], (double)worst);
        assert_true(worst < 2e-6f);
        for (int i = 0; i < NT; i++)
            assert_true(dot(vec[l] + i * 384, vec[0] + i * 384) > 0.9999999f);
    }
}

static void test_batch_equals_single(void **state)
{
    bert_t *m = *state;
    bert_ctx_t *c = bert_ctx_create(m, 1024, 2);
    assert_non_null(c);
    static float batch[NT * 384], one[384];
    embed_all(m, c, batch);
    float worst = 0;
    for (int i = 0; i < NT; i++) {
        int32_t ids[256];
        size_t n = 0;
        assert_int_equal(bert_tokenize(m, TEXTS[i], strlen(TEXTS[i]), ids, 256, &n, NULL), 0);
        const int32_t *p[1] = {ids};
        int len = (int)n;
        assert_int_equal(bert_embed(c, p, &len, 1, one), 0);
        for (int d = 0; d < 384; d++) {
            float x = fabsf(one[d] - batch[i * 384 + d]);
            if (x > worst) worst = x;
        }
        assert_true(fabsf(dot(one, one) - 1.0f) < 1e-5f);
    }
    fprintf(stderr, "test_bert: batch vs one by one: max |diff| %.3g\n", (double)worst);
    assert_true(worst < 2e-6f);
    /* published: 0.6660, 0.1046, 0.1411 (sbert.net usage page) */
    assert_true(fabsf(dot(batch, batch + 384) - 0.6660f) < 2e-4f);
    assert_true(fabsf(dot(batch, batch + 768) - 0.1046f) < 2e-4f);
    assert_true(fabsf(dot(batch + 384, batch + 768) - 0.1411f) < 2e-4f);
    bert_ctx_free(c);
}

static void test_contract(void **state)
{
    bert_t *m = *state;
    assert_int_equal(bert_dim(m), 384);
    assert_int_equal(bert_max_tokens(m), 256);
    assert_int_equal(bert_vocab_size(m), 30522);
    assert_non_null(bert_wp(m));
    bert_ctx_t *c = bert_ctx_create(m, 10, 1); /* raised to the window */
    assert_non_null(c);
    assert_int_equal(bert_ctx_max_tokens(c), 256);
    assert_int_equal(bert_ctx_threads(c), 1);
    float out[2 * 384];
    int32_t ok[] = {101, 7592, 102}, bad[] = {101, 30522, 102}, neg[] = {-1};
    const int32_t *p[2] = {ok, bad};
    int lens[2] = {3, 3};
    assert_int_equal(bert_embed(c, p, lens, 2, out), BAR_ERR_INVALID);
    p[1] = neg;
    lens[1] = 1;
    assert_int_equal(bert_embed(c, p, lens, 2, out), BAR_ERR_INVALID);
    lens[0] = 0;
    assert_int_equal(bert_embed(c, p, lens, 1, out), BAR_ERR_INVALID);
    lens[0] = 257;
    assert_int_equal(bert_embed(c, p, lens, 1, out), BAR_ERR_INVALID);
    assert_int_equal(bert_embed(c, p, lens, 0, out), 0);
    /* truncation to the window */
    static char text[4000];
    text[0] = '\0';
    for (int i = 0; i < 500; i++)
        strcat(text, "word ");
    int32_t ids[300];
    size_t n = 0, nf = 0;
    assert_int_equal(bert_tokenize(m, text, strlen(text), ids, 300, &n, &nf), 0);
    assert_int_equal(n, 256);
    assert_int_equal(nf, 502);
    assert_int_equal(ids[255], 102);
    bert_ctx_free(c);
    /* load errors */
    bert_t *x = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(bert_load(&x, "/nonexistent", &msg), BAR_ERR_IO);
    assert_null(x);
    assert_non_null(strstr(msg.text, "config.json"));
}

static int setup(void **state)
{
    bert_t *m = load();
    *state = m;
    return m ? 0 : -1;
}

static int teardown(void **state)
{
    bert_free(*state);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--dump") == 0) {
        /* child: the vectors of TEXTS at this process's kernel level */
        bert_t *m = load();
        if (!m) return 1;
        bert_ctx_t *c = bert_ctx_create(m, 1024, 1);
        static float out[NT * 384];
        embed_all(m, c, out);
        fwrite(out, sizeof(float), NT * 384, stdout);
        bert_ctx_free(c);
        bert_free(m);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_equal_scalar),
        cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_contract),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
