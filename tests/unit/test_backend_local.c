/* test_backend_local.c — the local backend's engine-event → backend-event
 * mapping (src/backend/backend_local.c, included for its statics): a job
 * whose token event was lost to out-of-memory ends with an error, never with
 * a normal finish (so its reply is never completed or cached); the engine's
 * finish reasons map one to one. The whole backend against a real engine is
 * exercised end to end by tests/e2e. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/backend_local.c"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lost_token_fails_the_job),
        cmocka_unit_test(test_finish_mapping),
        cmocka_unit_test(test_finish_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
