/* test_ratelimit.c — src/control/ratelimit.c (the local GCRA limiter: bursts,
 * refill, all-or-nothing charging, token correction, concurrency, headers)
 * and ratelimit_redis.c's reading of the Lua script's reply. Time is passed
 * in, so nothing here sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "control/ratelimit.h"
#include "control/ratelimit_redis.h"

static void test_rpm_burst_then_refill(void **st)
{
    (void)st;
    rl_t *r = rl_create();
    rl_state_t *s = rl_state(r, "t");
    tenant_limits_t lim = {6, 0, 0}; /* one every 10 s, 6 at once */
    rl_verdict_t v;
    double now = 1000;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(rl_admit(s, &lim, 0, now, &v), RL_OK);
        assert_int_equal(v.lim_req, 6);
        assert_int_equal(v.rem_req, 5 - i);
    }
    assert_int_equal(rl_admit(s, &lim, 0, now, &v), RL_REQUESTS);
    assert_int_equal(v.rem_req, 0);
    assert_true(v.retry_s > 9.9 && v.retry_s <= 10.0);
    assert_true(v.reset_req_s > 59.9 && v.reset_req_s <= 60.0);
    /* a refusal charged nothing: 10 s later exactly one more passes */
    assert_int_equal(rl_admit(s, &lim, 0, now + 9.9, &v), RL_REQUESTS);
    assert_int_equal(rl_admit(s, &lim, 0, now + 10.0, &v), RL_OK);
    assert_int_equal(rl_admit(s, &lim, 0, now + 10.0, &v), RL_REQUESTS);
    /* a minute idle: the whole burst again */
    int ok = 0;
    while (rl_admit(s, &lim, 0, now + 200, &v) == RL_OK)
        ok++;
    assert_int_equal(ok, 6);
    /* tenants are apart; the same name is the same state */
    assert_ptr_equal(rl_state(r, "t"), s);
    rl_state_t *u = rl_state(r, "u");
    assert_ptr_not_equal(u, s);
    assert_int_equal(rl_admit(u, &lim, 0, now + 200, &v), RL_OK);
    rl_destroy(r);
}

static void test_tpm_reserve_correct_and_too_large(void **st)
{
    (void)st;
    rl_t *r = rl_create();
    rl_state_t *s = rl_state(r, "t");
    tenant_limits_t lim = {0, 1000, 0};
    rl_verdict_t v;
    double now = 50;
    assert_int_equal(rl_admit(s, &lim, 600, now, &v), RL_OK);
    assert_int_equal(v.rem_tok, 400);
    assert_int_equal(rl_admit(s, &lim, 600, now, &v), RL_TOKENS);
    assert_false(v.too_large);
    assert_int_equal(v.rem_tok, 400);
    /* the request used 100 of its 600: 500 come back */
    rl_settle(s, &lim, 600, 100, now);
    assert_int_equal(rl_admit(s, &lim, 600, now, &v), RL_OK);
    assert_int_equal(v.rem_tok, 300);
    /* used more than reserved: the difference is charged */
    rl_settle(s, &lim, 0, 300, now);
    rl_peek(s, &lim, now, &v);
    assert_int_equal(v.rem_tok, 0);
    /* used < 0: the reservation stays */
    rl_settle(s, &lim, 600, -1, now);
    rl_peek(s, &lim, now, &v);
    assert_int_equal(v.rem_tok, 0);
    /* more than the whole limit can never pass */
    assert_int_equal(rl_admit(s, &lim, 1001, now + 1000, &v), RL_TOKENS);
    assert_true(v.too_large);
    /* a refund never banks beyond a full bucket */
    rl_settle(s, &lim, 1000, 0, now + 5000);
    rl_peek(s, &lim, now + 5000, &v);
    assert_int_equal(v.rem_tok, 1000);
    assert_int_equal(rl_admit(s, &lim, 1000, now + 5000, &v), RL_OK);
    assert_int_equal(rl_admit(s, &lim, 1, now + 5000, &v), RL_TOKENS);
    rl_destroy(r);
}

static void test_all_or_nothing_and_concurrency(void **st)
{
    (void)st;
    rl_t *r = rl_create();
    rl_state_t *s = rl_state(r, "t");
    tenant_limits_t lim = {100, 100, 2};
    rl_verdict_t v;
    assert_int_equal(rl_admit(s, &lim, 90, 0, &v), RL_OK);
    /* tokens refuse: the request was not charged either */
    assert_int_equal(rl_admit(s, &lim, 20, 0, &v), RL_TOKENS);
    assert_int_equal(v.rem_req, 99);
    assert_int_equal(rl_inflight(s), 1);
    assert_int_equal(rl_admit(s, &lim, 5, 0, &v), RL_OK);
    assert_int_equal(rl_inflight(s), 2);
    assert_int_equal(rl_admit(s, &lim, 0, 0, &v), RL_CONCURRENCY);
    rl_settle(s, &lim, 5, 5, 0);
    assert_int_equal(rl_inflight(s), 1);
    assert_int_equal(rl_admit(s, &lim, 0, 0, &v), RL_OK);
    /* without max_concurrency, no slot is taken or given */
    tenant_limits_t nolim = {100, 0, 0};
    assert_int_equal(rl_admit(s, &nolim, 0, 0, &v), RL_OK);
    assert_int_equal(rl_inflight(s), 2);
    rl_settle(s, &nolim, 0, 0, 0);
    assert_int_equal(rl_inflight(s), 2);
    rl_destroy(r);
}

static void test_many_tenants(void **st)
{
    (void)st;
    rl_t *r = rl_create();
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "t%d", i);
        assert_non_null(rl_state(r, name));
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "t%d", i);
        rl_state_t *s = rl_state(r, name);
        assert_ptr_equal(s, rl_state(r, name));
    }
    rl_destroy(r);
}

static void test_headers_and_durations(void **st)
{
    (void)st;
    char d[32];
    rl_duration(0.02, d, sizeof d);
    assert_string_equal(d, "20ms");
    rl_duration(1.5, d, sizeof d);
    assert_string_equal(d, "1.5s");
    rl_duration(360, d, sizeof d);
    assert_string_equal(d, "6m0s");
    rl_duration(-3, d, sizeof d);
    assert_string_equal(d, "0ms");
    rl_verdict_t v = {0};
    v.lim_req = 60;
    v.rem_req = 59;
    v.reset_req_s = 1;
    char h[512];
    rl_headers(&v, h, sizeof h);
    assert_string_equal(h, "x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: "
                           "59\r\nx-ratelimit-reset-requests: 1s\r\n");
    v.lim_tok = 1000;
    v.rem_tok = 10;
    v.reset_tok_s = 0.5;
    rl_headers(&v, h, sizeof h);
    assert_non_null(strstr(h, "x-ratelimit-limit-tokens: 1000\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-remaining-tokens: 10\r\n"));
    assert_non_null(strstr(h, "x-ratelimit-reset-tokens: 500ms\r\n"));
    memset(&v, 0, sizeof v);
    rl_headers(&v, h, sizeof h);
    assert_string_equal(h, "");
}

static void test_redis_reply(void **st)
{
    (void)st;
    tenant_limits_t lim = {6, 600, 0};
    rl_verdict_t v;
    long long ok[5] = {0, 0, 20000, 30000, 0};
    assert_int_equal(rlr_parse_reply(ok, 5, &lim, &v), 0);
    assert_int_equal(v.refused, RL_OK);
    assert_int_equal(v.rem_req, 4); /* 20 s of a 60 s window used, 10 s each */
    assert_int_equal(v.rem_tok, 300);
    assert_true(v.reset_req_s == 20.0);
    long long no[5] = {2, 1500, 0, 60000, 1};
    assert_int_equal(rlr_parse_reply(no, 5, &lim, &v), 0);
    assert_int_equal(v.refused, RL_TOKENS);
    assert_true(v.too_large);
    assert_true(v.retry_s == 1.5);
    assert_int_equal(v.rem_tok, 0);
    /* 3: the shared concurrency cap (the Redis leases) is full */
    long long conc[5] = {3, 1000, 20000, 30000, 0};
    assert_int_equal(rlr_parse_reply(conc, 5, &lim, &v), 0);
    assert_int_equal(v.refused, RL_CONCURRENCY);
    assert_true(v.retry_s == 1.0);
    assert_int_equal(v.rem_req, 4);
    long long four[5] = {4, 0, 0, 0, 0};
    assert_int_equal(rlr_parse_reply(four, 5, &lim, &v), -1);
    long long bad[5] = {7, 0, 0, 0, 0};
    assert_int_equal(rlr_parse_reply(bad, 5, &lim, &v), -1);
    assert_int_equal(rlr_parse_reply(ok, 4, &lim, &v), -1);
    /* a stale clock never yields more than the limit */
    long long neg[5] = {0, 0, -5000, -1, 0};
    assert_int_equal(rlr_parse_reply(neg, 5, &lim, &v), 0);
    assert_int_equal(v.rem_req, 6);
    assert_int_equal(v.rem_tok, 600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpm_burst_then_refill),
        cmocka_unit_test(test_tpm_reserve_correct_and_too_large),
        cmocka_unit_test(test_all_or_nothing_and_concurrency),
        cmocka_unit_test(test_many_tenants),
        cmocka_unit_test(test_headers_and_durations),
        cmocka_unit_test(test_redis_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
