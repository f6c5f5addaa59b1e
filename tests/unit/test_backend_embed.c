/* test_backend_embed.c — the embedding backend (src/backend/backend_embed.c)
 * with the real all-MiniLM-L6-v2 and a real libuv loop: results arrive on the
 * loop (never inside bk_embed), match the published similarity, the feature
 * cache answers repeats (and counts them), token-id inputs equal their text,
 * out-of-vocabulary ids are refused naming input, queued requests share
 * forward passes, cancel suppresses the callback, destroy answers what is
 * still pending, generation is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "backend/backend_embed.h"
#include "testutil.h"

typedef struct {
    int called;
    int err, status, n, dim, n_cached;
    char msg[256];
    float vecs[32 * 384];
    int n_tokens[32];
} res_t;

static void on_result(void *user, const bk_embed_result_t *r)
{
    res_t *o = user;
    o->called++;
    o->err = r->err;
    o->status = r->status;
    snprintf(o->msg, sizeof o->msg, "%s", r->msg ? r->msg : "");
    if (r->err) return;
    o->n = r->n;
    o->dim = r->dim;
    o->n_cached = r->n_cached;
    assert_true(r->n <= 32);
    memcpy(o->vecs, r->vecs, (size_t)r->n * (size_t)r->dim * sizeof(float));
    memcpy(o->n_tokens, r->n_tokens, (size_t)r->n * sizeof(int));
}

typedef struct {
    uv_loop_t loop;
    backend_t *b;
} fix_t;

static int setup(void **state)
{
    static fix_t f;
    char dir[1024];
    test_model_path(dir, sizeof dir, "all-MiniLM-L6-v2");
    uv_loop_init(&f.loop);
    bar_msg_t msg = {{0}};
    if (backend_embed_create(&f.b, &f.loop, dir, 2, 64, &msg)) {
        fprintf(stderr, "test_backend_embed: %s (run scripts/fetch-models or set BARISTA_MODELS)\n",
                msg.text);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    bk_destroy(f->b);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    return 0;
}

static void run_until(fix_t *f, res_t *r, int n)
{
    for (int i = 0; i < 100000 && r->called < n; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(r->called, n);
}

static int embed_texts(fix_t *f, const char *const *texts, int n, res_t *r, uint64_t *id)
{
    size_t lens[32];
    for (int i = 0; i < n; i++)
        lens[i] = strlen(texts[i]);
    bk_embed_req_t q = {n, texts, lens, NULL, NULL, on_result, r};
    bar_msg_t msg = {{0}};
    int rc = bk_embed(f->b, &q, id, &msg);
    snprintf(r->msg, sizeof r->msg, "%.200s", msg.text);
    return rc;
}

static float dot(const float *a, const float *b)
{
    double s = 0;
    for (int i = 0; i < 384; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}

static void test_embed_texts(void **state)
{
    fix_t *f = *state;
    static res_t r;
    memset(&r, 0, sizeof r);
    const char *t[] = {"The weather is lovely today.", "It's so sunny outside!",
                       "He drove to the stadium."};
    uint64_t id = 0;
    assert_int_equal(embed_texts(f, t, 3, &r, &id), 0);
    assert_true(id != 0);
    assert_int_equal(r.called, 0); /* never from inside bk_embed */
    run_until(f, &r, 1);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.dim, 384);
    assert_int_equal(r.n_cached, 0);
    assert_int_equal(r.n_tokens[0], 8); /* [CLS] the weather is lovely today . [SEP] */
    for (int i = 0; i < 3; i++)
        assert_true(fabsf(dot(r.vecs + i * 384, r.vecs + i * 384) - 1.0f) < 1e-5f);
    /* sbert.net's published similarities for these sentences (see bert_numpy.py) */
    assert_true(fabsf(dot(r.vecs, r.vecs + 384) - 0.6660f) < 2e-4f);
    assert_true(fabsf(dot(r.vecs, r.vecs + 768) - 0.1046f) < 2e-4f);
    assert_true(fabsf(dot(r.vecs + 384, r.vecs + 768) - 0.1411f) < 2e-4f);

    /* the same again: all three from the feature cache, same vectors */
    static res_t r2;
    memset(&r2, 0, sizeof r2);
    backend_embed_stats_t s0, s1;
    backend_embed_cache_stats(f->b, &s0);
    assert_int_equal(embed_texts(f, t, 3, &r2, &id), 0);
    assert_int_equal(r2.called, 0);
    run_until(f, &r2, 1);
    assert_int_equal(r2.n_cached, 3);
    assert_memory_equal(r2.vecs, r.vecs, 3 * 384 * sizeof(float));
    assert_memory_equal(r2.n_tokens, r.n_tokens, 3 * sizeof(int));
    backend_embed_cache_stats(f->b, &s1);
    assert_int_equal(s1.hits - s0.hits, 3);
    assert_int_equal(s1.misses, s0.misses);
    assert_int_equal(s1.inputs, s0.inputs); /* the encoder did nothing */
}

static void test_token_ids(void **state)
{
    fix_t *f = *state;
    static res_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    const char *t[] = {"hello world"};
    uint64_t id;
    assert_int_equal(embed_texts(f, t, 1, &a, &id), 0);
    run_until(f, &a, 1);
    /* ids used as given: the same ids as the text gives -> the same vector */
    int32_t ids0[] = {101, 7592, 2088, 102};
    static int32_t ids1[300];
    for (int i = 0; i < 300; i++)
        ids1[i] = 1000 + i;
    const int32_t *ids[] = {ids0, ids1};
    size_t n_ids[] = {4, 300};
    bk_embed_req_t q = {2, NULL, NULL, ids, n_ids, on_result, &b};
    bar_msg_t msg = {{0}};
    assert_int_equal(bk_embed(f->b, &q, &id, &msg), 0);
    run_until(f, &b, 1);
    assert_int_equal(b.err, 0);
    assert_int_equal(b.n_tokens[0], 4);
    assert_int_equal(b.n_tokens[1], 256); /* truncated to the window */
    assert_true(dot(a.vecs, b.vecs) > 0.99999f);
    /* out of the vocabulary: refused at once, naming input, no callback */
    int32_t bad[] = {101, 30522, 102};
    const int32_t *pb[] = {bad};
    size_t nb[] = {3};
    static res_t c;
    memset(&c, 0, sizeof c);
    bk_embed_req_t q2 = {1, NULL, NULL, pb, nb, on_result, &c};
    assert_int_equal(bk_embed(f->b, &q2, &id, &msg), BAR_ERR_INVALID);
    assert_non_null(strstr(msg.text, "input[0][1]"));
    assert_non_null(strstr(msg.text, "30522"));
    int32_t neg[] = {-1};
    pb[0] = neg;
    nb[0] = 1;
    assert_int_equal(bk_embed(f->b, &q2, &id, &msg), BAR_ERR_INVALID);
    nb[0] = 0;
    assert_int_equal(bk_embed(f->b, &q2, &id, &msg), BAR_ERR_INVALID);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(c.called, 0);
}

static void test_batching(void **state)
{
    fix_t *f = *state;
    enum { NJ = 12 };
    static res_t r[NJ], one[NJ];
    static char texts[NJ][64];
    backend_embed_stats_t s0, s1;
    backend_embed_cache_stats(f->b, &s0);
    uint64_t id;
    for (int i = 0; i < NJ; i++) {
        memset(&r[i], 0, sizeof r[i]);
        snprintf(texts[i], sizeof texts[i], "batching test sentence number %d of %d", i, NJ);
        const char *t[] = {texts[i]};
        assert_int_equal(embed_texts(f, t, 1, &r[i], &id), 0);
    }
    for (int i = 0; i < 100000; i++) {
        int done = 0;
        for (int k = 0; k < NJ; k++)
            done += r[k].called;
        if (done == NJ) break;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    backend_embed_cache_stats(f->b, &s1);
    fprintf(stderr, "test_backend_embed: %d requests in %llu forward passes\n", NJ,
            (unsigned long long)(s1.batches - s0.batches));
    assert_true(s1.batches - s0.batches < NJ); /* queued requests shared passes */
    assert_int_equal(s1.inputs - s0.inputs, NJ);
    /* each equals its own one-input embedding (a fresh text: no cache) */
    for (int i = 0; i < NJ; i++) {
        assert_int_equal(r[i].called, 1);
        assert_int_equal(r[i].err, 0);
        char t2[80];
        snprintf(t2, sizeof t2, "%.63s", texts[i]);
        t2[0] = 'B'; /* a different text: not from the cache */
        memset(&one[i], 0, sizeof one[i]);
        const char *t[] = {t2};
        assert_int_equal(embed_texts(f, t, 1, &one[i], &id), 0);
        run_until(f, &one[i], 1);
        /* "Batching" lower-cases to the same ids: the same vector up to rounding */
        assert_true(dot(one[i].vecs, r[i].vecs) > 0.99999f);
    }
}

static void test_cancel(void **state)
{
    fix_t *f = *state;
    static res_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    const char *t1[] = {"a request that is cancelled", "with two inputs"};
    const char *t2[] = {"a request that is not cancelled"};
    uint64_t ida, idb;
    assert_int_equal(embed_texts(f, t1, 2, &a, &ida), 0);
    assert_int_equal(embed_texts(f, t2, 1, &b, &idb), 0);
    bk_cancel(f->b, ida);
    bk_cancel(f->b, ida);      /* twice: no-op */
    bk_cancel(f->b, 99999999); /* unknown: no-op */
    run_until(f, &b, 1);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(a.called, 0);
    assert_int_equal(b.err, 0);
    bk_stats_t st;
    bk_stats(f->b, &st);
    assert_string_equal(st.kind, "embed");
    assert_int_equal(st.n_ctx, 256);
    assert_int_equal(st.n_jobs, 0);
    assert_int_equal(st.n_threads, 2);
}

static void test_refusals(void **state)
{
    fix_t *f = *state;
    bk_req_t req = {0};
    uint64_t id;
    bar_msg_t msg = {{0}};
    assert_int_equal(bk_submit(f->b, &req, &id, &msg), BAR_ERR_UNSUPPORTED);
    assert_non_null(strstr(msg.text, "embedding"));
    bk_embed_req_t q = {0, NULL, NULL, NULL, NULL, on_result, NULL};
    assert_int_equal(bk_embed(f->b, &q, &id, &msg), BAR_ERR_INVALID);
    assert_true(backend_is_embed(f->b));
    assert_int_equal(backend_embed_dim(f->b), 384);
    assert_int_equal(backend_embed_max_tokens(f->b), 256);
}

/* a second backend destroyed with work queued answers it (cancelled, 503) */
static void test_destroy_pending(void **state)
{
    (void)state;
    char dir[1024];
    test_model_path(dir, sizeof dir, "all-MiniLM-L6-v2");
    uv_loop_t loop;
    uv_loop_init(&loop);
    backend_t *b = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(backend_embed_create(&b, &loop, dir, 1, 0, &msg), 0);
    static res_t r[4];
    static char text[4][2000];
    uint64_t id;
    for (int i = 0; i < 4; i++) {
        memset(&r[i], 0, sizeof r[i]);
        memset(text[i], 0, sizeof text[i]);
        for (int k = 0; k < 40; k++) /* short: the scalar level under ASan is slow */
            strcat(text[i], i % 2 ? "word " : "other ");
        const char *t[] = {text[i]};
        size_t len = strlen(text[i]);
        bk_embed_req_t q = {1, t, &len, NULL, NULL, on_result, &r[i]};
        assert_int_equal(bk_embed(b, &q, &id, &msg), 0);
    }
    bk_destroy(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].called, 1); /* finished or cancelled, never lost */
        assert_true(r[i].err == 0 || (r[i].err == BAR_ERR_CANCELLED && r[i].status == 503));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_texts), cmocka_unit_test(test_token_ids),
        cmocka_unit_test(test_batching),    cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_refusals),    cmocka_unit_test(test_destroy_pending),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
