/* test_metrics.c — the metrics registry (src/obs/metrics.c): requests by
 * endpoint/code/model, the vLLM-named histograms (cumulative buckets, sum,
 * count), label escaping, families that fill up, and the dashboard snapshot's
 * per-second series with percentiles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs/metrics.h"

static obs_trace_t gen_trace(const char *model, int status, double ttft, double total)
{
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 10.0, NULL, 0, &g);
    t.endpoint = "chat_completions";
    OBS_TRACE_SET(&t, model, model);
    obs_trace_cache(&t, "MISS");
    obs_trace_first_token(&t, 10.0 + ttft);
    obs_trace_generated(&t, 10.0 + total, 20, 11, 0, 0.001, ttft);
    obs_trace_end(&t, 10.0 + total, status, 100);
    return t;
}

static void test_finish_counts_and_histograms(void **st)
{
    (void)st;
    obs_metrics_t *m = obs_metrics_create();
    assert_non_null(m);
    obs_trace_t a = gen_trace("small", 200, 0.030, 0.530);
    obs_metrics_finish(m, &a);
    obs_metrics_finish(m, &a);
    obs_trace_t b = gen_trace("we\"ird\\", 503, 0.0002, 0.001);
    obs_metrics_finish(m, &b);
    buf_t o = {0};
    assert_int_equal(obs_metrics_render(m, &o), 0);
    const char *s = o.p;
    assert_non_null(
        strstr(s, "barista_requests_total{endpoint=\"chat_completions\",code=\"200\"} 2\n"));
    assert_non_null(strstr(s, "barista_model_requests_total{model_name=\"small\",endpoint=\"chat_"
                              "completions\",code=\"200\"} 2\n"));
    assert_non_null(strstr(s, "{model_name=\"we\\\"ird\\\\\",endpoint=\"chat_completions\","
                              "code=\"503\"} 1\n")); /* escaped */
    /* ttft 0.03 falls in le=0.04 (not 0.02); cumulative from there on */
    assert_non_null(strstr(
        s, "barista_time_to_first_token_seconds_bucket{model_name=\"small\",le=\"0.02\"} 0\n"));
    assert_non_null(strstr(
        s, "barista_time_to_first_token_seconds_bucket{model_name=\"small\",le=\"0.04\"} 2\n"));
    assert_non_null(strstr(
        s, "barista_time_to_first_token_seconds_bucket{model_name=\"small\",le=\"+Inf\"} 2\n"));
    assert_non_null(
        strstr(s, "barista_time_to_first_token_seconds_count{model_name=\"small\"} 2\n"));
    assert_non_null(
        strstr(s, "barista_e2e_request_latency_seconds_sum{model_name=\"small\"} 1.06\n"));
    /* 10 inter-token gaps in 0.5 s of decode */
    assert_non_null(strstr(
        s, "barista_time_per_output_token_seconds_bucket{model_name=\"small\",le=\"0.05\"} 2\n"));
    assert_non_null(
        strstr(s, "barista_request_generation_tokens_bucket{model_name=\"small\",le=\"20\"} 2\n"));
    assert_non_null(
        strstr(s, "barista_request_generation_tokens_bucket{model_name=\"small\",le=\"10\"} 0\n"));
    assert_non_null(strstr(s, "# TYPE barista_request_queue_time_seconds histogram\n"));
    assert_non_null(
        strstr(s, "barista_request_duration_seconds_count{endpoint=\"chat_completions\"} 3\n"));
    /* no colon in any metric name */
    for (const char *ln = s; *ln;) {
        const char *e = strchr(ln, '\n');
        if (*ln != '#') {
            size_t n = strcspn(ln, "{ ");
            assert_null(memchr(ln, ':', n));
        }
        ln = e ? e + 1 : ln + strlen(ln);
    }
    buf_free(&o);
    obs_metrics_destroy(m);
}

static void test_early_errors_and_other_endpoints(void **st)
{
    (void)st;
    obs_metrics_t *m = obs_metrics_create();
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 1.0, NULL, 0, &g);
    t.endpoint = "other";
    t.status = 431; /* the server's own: no OBS_TOTAL */
    obs_metrics_finish(m, &t);
    obs_trace_begin(&t, 1.0, NULL, 0, &g);
    t.endpoint = "health";
    obs_trace_end(&t, 1.001, 200, 10);
    obs_metrics_finish(m, &t);
    obs_metrics_rejected(m, "queue");
    obs_metrics_fallback(m, "semantic_relaxed");
    buf_t o = {0};
    obs_metrics_render(m, &o);
    /* the unlabelled legacy histogram shows zero buckets before it is observed (as before) */
    assert_non_null(strstr(o.p, "barista_ttft_seconds_bucket{le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(o.p, "barista_requests_total{endpoint=\"other\",code=\"431\"} 1\n"));
    assert_non_null(strstr(o.p, "barista_request_duration_seconds_count{endpoint=\"health\"} 1\n"));
    assert_null(strstr(o.p, "barista_e2e_request_latency_seconds_count")); /* not a generation */
    assert_non_null(strstr(o.p, "barista_rejected_requests_total{reason=\"queue\"} 1\n"));
    assert_non_null(strstr(o.p, "barista_fallbacks_total{step=\"semantic_relaxed\"} 1\n"));
    /* upstream series are the gateway's (backend_upstream_metrics): never twice */
    assert_null(strstr(o.p, "barista_upstream_"));
    buf_free(&o);
    /* a full family: later label values share one "other" series */
    for (int i = 0; i < 300; i++) {
        char r[16];
        snprintf(r, sizeof r, "r%d", i);
        obs_metrics_rejected(m, r);
    }
    obs_metrics_render(m, &o);
    assert_non_null(strstr(o.p, "barista_rejected_requests_total{reason=\"other\"}"));
    buf_free(&o);
    obs_metrics_destroy(m);
}

static void test_snapshot_series(void **st)
{
    (void)st;
    obs_metrics_t *m = obs_metrics_create();
    for (int i = 1; i <= 100; i++) {
        obs_trace_t t = gen_trace("small", 200, i / 1000.0, i / 100.0);
        obs_metrics_finish(m, &t);
    }
    long now = (long)time(NULL);
    buf_t o = {0};
    buf_puts(&o, "{");
    /* seconds later: the second with the traffic is finished, quiet ones follow */
    obs_metrics_snapshot(m, now + 3, &o);
    buf_puts(&o, "}");
    assert_non_null(strstr(o.p, "\"requests\":[100,0,0]"));
    assert_non_null(strstr(o.p, "\"miss\":[100,0,0]"));
    assert_non_null(strstr(o.p, "\"tokens\":[1100,0,0]"));
    assert_non_null(strstr(o.p, "\"ttft_p50\":[0.05,null,null]"));
    assert_non_null(strstr(o.p, "\"ttft_p99\":[0.099,null,null]"));
    assert_non_null(strstr(o.p, "\"e2e_p95\":[0.95,null,null]"));
    assert_non_null(strstr(o.p, "\"totals\":{\"requests\":100,"));
    assert_non_null(strstr(o.p, "{\"name\":\"small\",\"requests\":100,"));
    buf_free(&o);
    obs_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finish_counts_and_histograms),
        cmocka_unit_test(test_early_errors_and_other_endpoints),
        cmocka_unit_test(test_snapshot_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
