/* test_backend_upstream.c — the balancing and health rules of
 * src/backend/backend_upstream.c (included, to reach its statics) and
 * src/control/balance.c, which it calls: P2C over
 * peak-EWMA × (in-flight + 1), least-busy, weighted shuffle, the circuit
 * breaker (ejection, growing cooldowns, one half-open trial, panic routing
 * when all are out), rpm/tpm per minute, the wait estimate (est_wait), the
 * latency histograms, the retry budget, the request body sent upstream, and
 * the backend's create/destroy with keys from the environment. Transfers
 * themselves are tested end to end (tests/e2e/test_gateway.py). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "../../src/backend/backend_upstream.c"

static ups_t *group(int n, model_route_t how)
{
    ups_t *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->reps = calloc((size_t)n, sizeof *g->reps);
    g->hs = calloc((size_t)n, sizeof *g->hs);
    assert_non_null(g->reps);
    assert_non_null(g->hs);
    g->n_reps = n;
    g->rt = (model_router_t){how, 2, 3, 5.0, 0, 0};
    g->rng = 12345;
    g->retry_tokens = RETRY_RESERVE;
    snprintf(g->name, sizeof g->name, "g");
    for (int i = 0; i < n; i++) {
        g->reps[i].g = g;
        g->reps[i].idx = i;
        g->reps[i].h.weight = 1;
        g->hs[i] = &g->reps[i].h;
        snprintf(g->reps[i].base, sizeof g->reps[i].base, "http://r%d/v1", i);
    }
    return g;
}

static void group_free(ups_t *g)
{
    free(g->reps);
    free(g->hs);
    free(g);
}

static int pick_idx(ups_t *g)
{
    job_t j = {0};
    j.g = g;
    replica_t *r = pick(g, &j);
    return r ? r->idx : -1;
}

static void test_p2c_prefers_cheaper(void **st)
{
    (void)st;
    ups_t *g = group(2, ROUTE_LATENCY);
    double now = time_now_mono();
    bal_observe(&g->reps[0].h, 0.100, now);
    bal_observe(&g->reps[1].h, 0.010, now);
    for (int i = 0; i < 50; i++)
        assert_int_equal(pick_idx(g), 1); /* two replicas: both are always compared */
    g->reps[1].h.inflight = 20;           /* 0.010 × 21 > 0.100 × 1 */
    for (int i = 0; i < 50; i++)
        assert_int_equal(pick_idx(g), 0);
    /* peak EWMA: a slow sample replaces the estimate at once */
    g->reps[1].h.inflight = 0;
    bal_observe(&g->reps[1].h, 0.500, now);
    assert_true(g->reps[1].h.ewma == 0.500);
    assert_int_equal(pick_idx(g), 0);
    /* a faster one pulls it down, more the longer since the last */
    bal_observe(&g->reps[1].h, 0.010, now + 100);
    assert_true(g->reps[1].h.ewma < 0.02);
    /* an idle replica's cost decays, so it is tried again */
    assert_true(bal_cost(&g->reps[0].h, now + 30) < bal_cost(&g->reps[0].h, now) / 10);
    group_free(g);
}

static void test_p2c_spreads_over_many(void **st)
{
    (void)st;
    ups_t *g = group(8, ROUTE_LATENCY);
    int seen[8] = {0};
    for (int i = 0; i < 400; i++)
        seen[pick_idx(g)]++;
    for (int i = 0; i < 8; i++)
        assert_true(seen[i] > 0);
    group_free(g);
}

static void test_least_busy_and_shuffle(void **st)
{
    (void)st;
    ups_t *g = group(3, ROUTE_LEAST_BUSY);
    g->reps[0].h.inflight = 3;
    g->reps[1].h.inflight = 1;
    g->reps[2].h.inflight = 2;
    for (int i = 0; i < 20; i++)
        assert_int_equal(pick_idx(g), 1);
    group_free(g);

    g = group(2, ROUTE_SHUFFLE);
    g->reps[0].h.weight = 1;
    g->reps[1].h.weight = 3;
    int seen[2] = {0};
    for (int i = 0; i < 4000; i++)
        seen[pick_idx(g)]++;
    assert_true(seen[1] > 2 * seen[0]); /* ≈ 3:1 */
    assert_true(seen[0] > 500);
    group_free(g);
}

static void test_breaker(void **st)
{
    (void)st;
    ups_t *g = group(2, ROUTE_LATENCY);
    replica_t *r = &g->reps[0];
    double now = time_now_mono();
    rep_fail(r, now);
    rep_fail(r, now);
    assert_true(bal_eligible(&r->h, now));      /* 2 < allowed_fails */
    assert_true(r->h.ewma >= BAL_FAIL_PENALTY); /* failing fast does not look fast */
    rep_fail(r, now);
    assert_false(bal_eligible(&r->h, now)); /* ejected for cooldown_time */
    assert_true(r->h.until == now + 5.0);
    assert_int_equal(r->h.n_ejections, 1);
    for (int i = 0; i < 20; i++)
        assert_int_equal(pick_idx(g), 1);
    /* after the cooldown: one trial (half-open) */
    double later = r->h.until + 0.001;
    assert_true(bal_eligible(&r->h, later));
    r->h.until = time_now_mono() - 0.001; /* cooldown over now: pick gives it its trial */
    assert_int_equal(pick_idx(g), 0);
    r->h.until = later - 0.001;
    r->h.probing = 1;
    assert_false(bal_eligible(&r->h, later));
    /* the trial fails: ejected again, for twice as long */
    rep_fail(r, later);
    assert_true(r->h.until == later + 10.0);
    assert_int_equal(r->h.probing, 0);
    for (int k = 0; k < 10; k++) /* grows ×2 per ejection, capped at 8× */
        rep_fail(r, later);
    assert_true(r->h.until == later + 5.0 * BAL_EJECT_MAX_FACTOR);
    /* success closes it */
    bal_ok(&r->h);
    assert_true(bal_eligible(&r->h, now));
    assert_int_equal(r->h.fails, 0);
    assert_true(r->h.until == 0);
    group_free(g);
}

static void test_panic_and_tried(void **st)
{
    (void)st;
    ups_t *g = group(3, ROUTE_LATENCY);
    double now = time_now_mono();
    g->reps[0].h.until = now + 30;
    g->reps[1].h.until = now + 10;
    g->reps[2].h.until = now + 20;
    assert_int_equal(pick_idx(g), 1); /* all out: the one back soonest */
    job_t j = {0};
    j.g = g;
    j.tried = 1u << 1;
    assert_int_equal(pick(g, &j)->idx, 2); /* never a replica the request tried */
    j.tried = 7;
    assert_null(pick(g, &j));
    group_free(g);
}

static void test_retry_budget(void **st)
{
    (void)st;
    ups_t *g = group(3, ROUTE_LATENCY);
    job_t j = {0};
    j.g = g;
    j.tried = 1;
    j.n_tries = 1;
    g->retry_tokens = 1.5;
    assert_true(may_retry(&j));
    assert_false(may_retry(&j)); /* 0.5 left: below one retry */
    assert_int_equal(g->n_budget_denied, 1);
    g->retry_tokens = 5;
    j.sent = 1;
    assert_false(may_retry(&j)); /* bytes went to the client */
    j.sent = 0;
    j.n_tries = 3; /* num_retries 2 used */
    assert_false(may_retry(&j));
    j.n_tries = 1;
    j.tried = 7; /* no replica left */
    assert_false(may_retry(&j));
    group_free(g);
}

static void test_hedge_delay(void **st)
{
    (void)st;
    ups_t *g = group(2, ROUTE_LATENCY);
    for (int i = 0; i < HEDGE_MIN_SAMPLES - 1; i++)
        g->ttfb[g->n_ttfb++] = 0.010;
    assert_true(ttfb_p95(g) == 0); /* too few samples: no hedging */
    g->ttfb[g->n_ttfb++] = 0.010;
    assert_true(ttfb_p95(g) == 0.010);
    for (int i = 0; i < 200; i++) /* the ring keeps the last TTFB_RING */
        g->ttfb[g->n_ttfb++ % TTFB_RING] = i < 190 ? 0.020 : 1.0;
    assert_true(ttfb_p95(g) == 1.0); /* 10 of 128 slow: above the 95th percentile */
    for (int i = 0; i < TTFB_RING; i++)
        g->ttfb[i] = 0.0001;
    assert_true(ttfb_p95(g) == HEDGE_MIN_DELAY);
    /* a hedge needs a healthy replica the job has not tried */
    job_t j = {0};
    j.tried = 1;
    assert_true(hedge_target(g, &j));
    g->reps[1].h.until = time_now_mono() + 10;
    assert_false(hedge_target(g, &j));
    group_free(g);
}

/* rpm/tpm: a replica at its limit this minute is not picked (not even by
 * panic routing); when all are, up_stats says how long until the minute
 * turns; the next minute counts from zero. */
static void test_rate_limits(void **st)
{
    (void)st;
    ups_t *g = group(2, ROUTE_LATENCY);
    double t = 6000.5; /* early in a minute */
    g->reps[0].h.rpm = 2;
    g->reps[1].h.tpm = 10;
    assert_false(bal_over_limit(&g->reps[0].h, t));
    bal_count(&g->reps[0].h, 1, 0, t);
    assert_false(bal_over_limit(&g->reps[0].h, t + 1));
    bal_count(&g->reps[0].h, 1, 500, t + 1); /* tokens do not matter without tpm */
    assert_true(bal_over_limit(&g->reps[0].h, t + 2));
    for (int i = 0; i < 20; i++)
        assert_int_equal(bal_pick(g->hs, 2, 0, ROUTE_LATENCY, &g->rng, t + 2), 1);
    bal_count(&g->reps[1].h, 1, 9, t + 3);
    assert_false(bal_over_limit(&g->reps[1].h, t + 3));
    bal_count(&g->reps[1].h, 0, 1, t + 3);
    assert_true(bal_over_limit(&g->reps[1].h, t + 3));
    assert_int_equal(bal_pick(g->hs, 2, 0, ROUTE_LATENCY, &g->rng, t + 3), -1);
    g->reps[0].h.until = t + 100; /* ejected and limited: still not picked */
    assert_int_equal(bal_pick(g->hs, 2, 0, ROUTE_SHUFFLE, &g->rng, t + 3), -1);
    g->reps[0].h.until = 0;
    assert_true(fabs(bal_limit_reset(t + 3) - 56.5) < 1e-6);
    /* the next minute: both again, counts from zero */
    assert_false(bal_over_limit(&g->reps[0].h, t + 60));
    assert_false(bal_over_limit(&g->reps[1].h, t + 60));
    int seen[2] = {0, 0};
    for (int i = 0; i < 40; i++)
        seen[bal_pick(g->hs, 2, 0, ROUTE_SHUFFLE, &g->rng, t + 60)]++;
    assert_true(seen[0] > 0 && seen[1] > 0);
    bal_count(&g->reps[0].h, 1, 0, t + 60);
    assert_int_equal(g->reps[0].h.min_req, 1);
    /* up_stats on the real clock: rate_wait only while every replica is over */
    double now = time_now_mono();
    if (bal_limit_reset(now) < 2) now += bal_limit_reset(now) + 0.5; /* not at a minute's edge */
    while (time_now_mono() < now)
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    now = time_now_mono();
    g->reps[0].h.minute = g->reps[1].h.minute = 0;
    bal_count(&g->reps[0].h, 2, 0, now);
    bk_stats_t s;
    up_stats(&g->base, &s);
    assert_true(s.rate_wait == 0);
    bal_count(&g->reps[1].h, 0, 10, now);
    up_stats(&g->base, &s);
    assert_true(s.rate_wait > 0 && s.rate_wait <= 60);
    group_free(g);
}

/* est_wait: (N - C + 1) × S / C once N attempts fill the capacity C; 0 while
 * there is room or a replica's capacity is unknown. */
static void test_est_wait(void **st)
{
    (void)st;
    ups_t *g = group(2, ROUTE_LATENCY);
    bk_stats_t s;
    g->svc_ewma = 0.5;
    g->tpot_ewma = 0.01;
    g->reps[0].h.inflight = 3;
    g->reps[1].h.inflight = 2;
    up_stats(&g->base, &s); /* capacity unknown */
    assert_true(s.est_wait == 0);
    assert_true(s.s_per_output_token == 0.01);
    g->reps[0].max_par = 2;
    g->reps[1].max_par = 2;
    up_stats(&g->base, &s); /* N 5, C 4: the 2nd in line for a slot */
    assert_true(fabs(s.est_wait - 2 * 0.5 / 4) < 1e-9);
    assert_int_equal(s.n_waiting, 1);
    assert_int_equal(s.n_slots, 4);
    g->reps[0].h.inflight = 1;
    up_stats(&g->base, &s); /* room left */
    assert_true(s.est_wait == 0);
    assert_int_equal(s.n_waiting, 0);
    group_free(g);
}

/* Histograms: cumulative buckets, count and sum. */
static void test_hist(void **st)
{
    (void)st;
    bal_hist_t h = {0};
    bal_hist_observe(&h, 0.003);
    bal_hist_observe(&h, 0.2);
    bal_hist_observe(&h, 100);
    assert_int_equal(h.counts[0], 1);  /* <= 0.005 */
    assert_int_equal(h.counts[5], 2);  /* <= 0.25 */
    assert_int_equal(h.counts[11], 2); /* <= 30 */
    assert_int_equal(h.n, 3);
    assert_true(fabs(h.sum - 100.203) < 1e-9);
}

static void test_body(void **st)
{
    (void)st;
    job_t j = {0};
    bk_msg_t msgs[2] = {{"system", "be brief", 8}, {"user", "hi \"there\"\n", 11}};
    const char *stops[] = {"\n\n"};
    bk_req_t q = {0};
    q.is_chat = 1;
    q.msgs = msgs;
    q.n_msgs = 2;
    q.sp.temperature = 0;
    q.sp.top_p = 1;
    q.sp.repeat_penalty = 1;
    q.sp.max_tokens = 7;
    q.sp.seed = 42;
    q.sp.has_seed = 1;
    q.sp.stop = stops;
    q.sp.n_stop = 1;
    assert_int_equal(build_tail(&j, &q), 0);
    assert_int_equal(j.tail[0], ',');
    char *full = malloc(j.tail_len + 16);
    snprintf(full, j.tail_len + 16, "{\"model\":\"m\"%s", j.tail);
    cJSON *o = cJSON_Parse(full);
    assert_non_null(o);
    assert_string_equal(cJSON_GetObjectItem(o, "model")->valuestring, "m");
    cJSON *m = cJSON_GetObjectItem(o, "messages");
    assert_int_equal(cJSON_GetArraySize(m), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "content")->valuestring,
                        "hi \"there\"\n");
    assert_int_equal(cJSON_GetObjectItem(o, "max_tokens")->valueint, 7);
    assert_int_equal(cJSON_GetObjectItem(o, "seed")->valueint, 42);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o, "stream")));
    assert_true(cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(o, "stream_options"), "include_usage")));
    assert_null(cJSON_GetObjectItem(o, "repeat_penalty")); /* default: left out */
    assert_null(cJSON_GetObjectItem(o, "top_k"));
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "stop"), 0)->valuestring, "\n\n");
    cJSON_Delete(o);
    free(full);
    free(j.tail);
}

static void test_create_destroy(void **st)
{
    (void)st;
    model_list_t l = {0};
    bar_msg_t msg;
    const char *y = "model_list:\n"
                    "  - model_name: g\n"
                    "    litellm_params: {model: openai/a, api_base: 'http://127.0.0.1:9/', "
                    "api_key: os.environ/TEST_BU_KEY}\n"
                    "  - model_name: g\n"
                    "    litellm_params: {model: openai/b, api_base: 'https://x.example/v1'}\n";
    assert_int_equal(model_list_load_mem(&l, y, strlen(y), NULL, &msg), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    backend_t *b = NULL;
    unsetenv("TEST_BU_KEY");
    assert_int_equal(backend_upstream_create(&b, &loop, &l, 0, &msg), BAR_ERR_INVALID);
    assert_non_null(strstr(msg.text, "TEST_BU_KEY"));
    setenv("TEST_BU_KEY", "secret-xyz", 1);
    assert_int_equal(backend_upstream_create(&b, &loop, &l, 0, &msg), 0);
    assert_true(backend_is_upstream(b));
    ups_t *g = (ups_t *)b;
    assert_int_equal(g->n_reps, 2);
    assert_string_equal(g->reps[0].base, "http://127.0.0.1:9/v1"); /* "/v1" added */
    assert_string_equal(g->reps[1].base, "https://x.example/v1");
    assert_string_equal(g->reps[0].key, "secret-xyz");
    assert_null(g->reps[1].key);
    bk_stats_t s;
    bk_stats(b, &s);
    assert_string_equal(s.kind, "upstream");
    buf_t out = {0};
    const char *names[] = {"g"};
    backend_upstream_metrics(&b, names, 1, &out);
    assert_non_null(strstr(out.p, "barista_upstream_requests_total{model=\"g\","
                                  "upstream=\"http://127.0.0.1:9/v1\"} 0"));
    assert_null(strstr(out.p, "secret-xyz"));
    buf_free(&out);
    bk_destroy(b);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    model_list_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p2c_prefers_cheaper),
        cmocka_unit_test(test_p2c_spreads_over_many),
        cmocka_unit_test(test_least_busy_and_shuffle),
        cmocka_unit_test(test_breaker),
        cmocka_unit_test(test_panic_and_tried),
        cmocka_unit_test(test_retry_budget),
        cmocka_unit_test(test_hedge_delay),
        cmocka_unit_test(test_rate_limits),
        cmocka_unit_test(test_est_wait),
        cmocka_unit_test(test_hist),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_create_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
