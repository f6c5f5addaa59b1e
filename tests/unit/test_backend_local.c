/* test_backend_local.c — the local backend's engine-event → backend-event
 * mapping (src/backend/backend_local.c, included for its statics): a job
 * whose token event was lost to out-of-memory ends with an error, never with
 * a normal finish (so its reply is never completed or cached); the engine's
 * finish reasons map one to one; admission's estimate (step time by batch
 * size within its bounds, the wait per priority class, the completion). The
 * whole backend against a real engine is exercised end to end by tests/e2e. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/backend_local.c"
#include "backend/backend_local_cost.c"

static bk_event_t got;
static int n_got;
static char got_msg[256];

static void on_event(void *user, const bk_event_t *ev)
{
    (void)user;
    got = *ev;
    n_got++;
    snprintf(got_msg, sizeof got_msg, "%s", ev->msg ? ev->msg : "");
    got.msg = NULL; /* points into the event, freed after the callback */
}

/* One job in b's list, as local_submit leaves it. */
static job_t *job_new(local_t *b)
{
    job_t *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->b = b;
    j->cb = on_event;
    j->next = b->jobs;
    if (b->jobs) b->jobs->prev = j;
    b->jobs = j;
    b->n_jobs++;
    return j;
}

/* Deliver the engine's DONE with finish f for a job (lost or not). */
static void done(engine_finish_t f, int lost)
{
    local_t b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    job_t *j = job_new(&b);
    j->lost = lost;
    qev_t *q = calloc(1, sizeof *q + 1);
    assert_non_null(q);
    q->kind = EV_DONE;
    q->j = j;
    q->finish = f;
    q->n_prompt = 7;
    q->n_gen = 5;
    if (f == ENGINE_FINISH_ERROR) {
        q->err = BAR_ERR_IO;
        snprintf(q->msg, sizeof q->msg, "disk on fire");
    }
    n_got = 0;
    deliver(&b, q); /* frees q and the job */
    assert_int_equal(n_got, 1);
    assert_int_equal(got.type, BK_EV_DONE);
    assert_int_equal(b.n_jobs, 0);
    assert_null(b.jobs);
    pthread_mutex_destroy(&b.mu);
}

static void test_lost_token_fails_the_job(void **st)
{
    (void)st;
    /* whatever the engine says, a job that lost a token event is an error */
    engine_finish_t fs[] = {ENGINE_FINISH_STOP, ENGINE_FINISH_LENGTH, ENGINE_FINISH_CANCELLED};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) {
        done(fs[i], 1);
        assert_int_equal(got.finish, BK_FINISH_ERROR);
        assert_int_equal(got.status, 500);
        assert_int_equal(got.err, BAR_ERR_NOMEM);
        assert_non_null(strstr(got_msg, "lost"));
    }
}

static void test_finish_mapping(void **st)
{
    (void)st;
    static const struct {
        engine_finish_t in;
        bk_finish_t out;
    } t[] = {
        {ENGINE_FINISH_STOP, BK_FINISH_STOP},       {ENGINE_FINISH_LENGTH, BK_FINISH_LENGTH},
        {ENGINE_FINISH_TIMEOUT, BK_FINISH_TIMEOUT}, {ENGINE_FINISH_CANCELLED, BK_FINISH_CANCELLED},
        {ENGINE_FINISH_ERROR, BK_FINISH_ERROR},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        done(t[i].in, 0);
        assert_int_equal(got.finish, t[i].out);
        assert_int_equal(got.n_prompt, 7);
        assert_int_equal(got.n_gen, 5);
        if (t[i].out == BK_FINISH_ERROR) {
            assert_int_equal(got.status, 500);
            assert_int_equal(got.err, BAR_ERR_IO);
            assert_string_equal(got_msg, "disk on fire");
        } else {
            assert_int_equal(got.status, 0);
        }
    }
}

static void test_finish_names(void **st)
{
    (void)st;
    assert_string_equal(bk_finish_name(BK_FINISH_STOP), "stop");
    assert_string_equal(bk_finish_name(BK_FINISH_TIMEOUT), "timeout");
    assert_string_equal(bk_finish_name(BK_FINISH_ERROR), "error");
    assert_string_equal(bk_finish_name((bk_finish_t)99), "?");
}

/* A job as the cost model sees it: priority, tokens generated so far (0:
 * waiting), its max_tokens. */
static job_t *cost_job(local_t *b, int prio, int n_gen, int max_tokens)
{
    job_t *j = job_new(b);
    j->priority = prio;
    j->n_gen = n_gen;
    j->sp.max_tokens = max_tokens;
    if (n_gen > 0) {
        j->decoding = 1;
        b->n_decoding++;
    }
    return j;
}

static void cost_free(local_t *b)
{
    while (b->jobs)
        job_free(b->jobs);
    assert_int_equal(b->n_decoding, 0);
}

static void step(local_t *b, int k, double t)
{
    b->step[k] = t;
    b->step_n[k] = STEP_MIN;
}

static void test_step_time_by_batch_size(void **st)
{
    (void)st;
    local_t b;
    memset(&b, 0, sizeof b);
    b.n_seq_max = 4;
    b.tpot = 0.5;
    assert_true(tpot_at(&b, 2) == 0.5); /* nothing by size: the overall EWMA */
    step(&b, 1, 0.010);
    /* one size measured: itself, never faster for more, at most serial */
    assert_true(fabs(tpot_at(&b, 1) - 0.010) < 1e-12);
    assert_true(fabs(tpot_at(&b, 2) - 0.020) < 1e-12);
    assert_true(fabs(tpot_at(&b, 4) - 0.040) < 1e-12);
    assert_true(fabs(tpot_at(&b, 9) - 0.040) < 1e-12); /* beyond the places: every place */
    b.step_n[1] = STEP_MIN - 1;                        /* too few samples: not trusted */
    assert_true(tpot_at(&b, 1) == 0.5);
    step(&b, 1, 0.010);
    step(&b, 2, 0.012);
    /* two: the line t = 0.008 + 0.002 k through them, within the bounds */
    assert_true(fabs(tpot_at(&b, 3) - 0.014) < 1e-9);
    assert_true(fabs(tpot_at(&b, 4) - 0.016) < 1e-9);
    /* a line that would fall below a measured smaller batch is raised to it */
    step(&b, 2, 0.009);
    assert_true(tpot_at(&b, 3) >= 0.010 - 1e-12);
    assert_true(tpot_at(&b, 4) >= 0.010 - 1e-12);
    /* a measured bigger batch bounds a smaller one from above */
    memset(b.step_n, 0, sizeof b.step_n);
    step(&b, 4, 0.020);
    assert_true(tpot_at(&b, 2) <= 0.020 + 1e-12 && tpot_at(&b, 2) >= 0.010 - 1e-12);
}

static void test_wait_per_priority_class(void **st)
{
    (void)st;
    local_t b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    b.n_seq_max = 2;
    b.tpot = 0.01;
    b.max_tokens_default = 100;
    step(&b, 2, 0.01);
    step(&b, 1, 0.01);
    /* both places run batch work (100 tokens left each), one batch job waits */
    cost_job(&b, 10, 10, 110);
    cost_job(&b, 10, 10, 110);
    cost_job(&b, 10, 0, 100);
    /* an interactive request pre-empts the batch work: no wait */
    assert_true(lcost_wait(&b, 0, 1) == 0);
    /* a batch request waits for the first place to free up (1 s), and the
     * waiting batch job takes it: its place frees after ~1 s more */
    assert_true(fabs(lcost_wait(&b, 10, 1) - 1.0) < 1e-9);
    assert_true(fabs(lcost_wait(&b, 10, 2) - 2.0) < 1e-9);
    /* interactive work ahead counts for an interactive request */
    cost_free(&b);
    cost_job(&b, 0, 10, 110);
    cost_job(&b, 10, 10, 60);
    assert_true(lcost_wait(&b, 0, 1) == 0);                /* the batch one is pre-empted */
    assert_true(fabs(lcost_wait(&b, 0, 2) - 1.0) < 1e-9);  /* two places: the other frees */
    assert_true(fabs(lcost_wait(&b, 10, 1) - 0.5) < 1e-9); /* batch: the batch one ends first */
    /* no parking place left (two sequences parked already): no pre-emption */
    cost_free(&b);
    for (int i = 0; i < 4; i++)
        cost_job(&b, 10, 10, 110);
    assert_true(lcost_wait(&b, 0, 1) > 0.9);
    cost_free(&b);
    pthread_mutex_destroy(&b.mu);
}

static void test_estimate_completion(void **st)
{
    (void)st;
    local_t b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    b.n_seq_max = 2;
    b.max_tokens_default = 100;
    bk_est_in_t in = {0, 40, 101, 1};
    bk_est_t e;
    lcost_estimate(&b, &in, &e);
    assert_int_equal(e.known, 0); /* nothing measured: no judgement */
    b.tpot = 0.01;
    b.prefill_tok = 0.001;
    step(&b, 1, 0.010);
    step(&b, 2, 0.015);
    lcost_estimate(&b, &in, &e);
    assert_int_equal(e.known, 1);
    assert_int_equal(e.batch, 1); /* alone on an idle engine */
    assert_true(e.wait == 0 && fabs(e.first - 0.040) < 1e-9);
    assert_true(fabs(e.done - (0.040 + 100 * 0.010 * ADMIT_TPOT_SAFETY)) < 1e-9);
    /* one sequence decoding: it runs in a batch of two, every step slower */
    cost_job(&b, 0, 5, 50);
    lcost_estimate(&b, &in, &e);
    assert_int_equal(e.batch, 2);
    assert_true(fabs(e.tpot - 0.015 * ADMIT_TPOT_SAFETY) < 1e-9);
    assert_true(e.done > e.first + 100 * 0.015);
    cost_free(&b);
    pthread_mutex_destroy(&b.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lost_token_fails_the_job),
        cmocka_unit_test(test_finish_mapping),
        cmocka_unit_test(test_finish_names),
        cmocka_unit_test(test_step_time_by_batch_size),
        cmocka_unit_test(test_wait_per_priority_class),
        cmocka_unit_test(test_estimate_completion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
