/* api_limit.c — rate-limit admission shared by the generation pipeline and
 * embeddings (api_limit.h): the concurrency slot, the rpm/tpm check (Redis
 * or local), the x-ratelimit-* headers, OpenAI's 429, the settlement.
 * Not for: the limiter algorithms (control/ratelimit*.c). */
#include "api/api_limit.h"

#include "api/api_int.h"
#include "api/reply.h"
#include "util/timeutil.h"

void api_limit_headers(srv_req_t *r, const rl_verdict_t *v)
{
    char h[384];
    rl_headers(v, h, sizeof h);
    if (h[0] && r) srv_req_set_headers(r, h);
}

void api_limit_peek_headers(srv_req_t *r, const api_tenant_t *t, double now)
{
    if (!t->rl) return;
    rl_verdict_t v;
    rl_peek(t->rl, &t->limits, now, &v);
    api_limit_headers(r, &v);
}

void api_limit_refuse(api_t *a, srv_req_t *r, const api_tenant_t *t, const rl_verdict_t *v,
                      long long tokens)
{
    oai_err_t e;
    int retry = (int)(v->retry_s + 0.999);
    if (v->refused == RL_TOKENS && v->too_large) {
        oai_err(&e, 429, "tokens", "rate_limit_exceeded", NULL,
                "Request too large for tenant '%s': it needs about %lld tokens and the limit is "
                "%lld tokens per minute. Send fewer tokens (prompt + max_tokens).",
                t->name, tokens, t->limits.tpm);
    } else if (v->refused == RL_TOKENS) {
        char d[32];
        rl_duration(v->retry_s, d, sizeof d);
        oai_err(&e, 429, "tokens", "rate_limit_exceeded", NULL,
                "Rate limit reached for tenant '%s' on tokens per min (TPM): Limit %lld, "
                "Remaining %lld, Requested %lld. Please try again in %s.",
                t->name, t->limits.tpm, v->rem_tok, tokens, d);
    } else if (v->refused == RL_REQUESTS) {
        oai_err(&e, 429, "requests", "rate_limit_exceeded", NULL,
                "Rate limit reached for tenant '%s' on requests per min (RPM): Limit %lld, "
                "Remaining 0. Please try again in %d s.",
                t->name, t->limits.rpm, retry < 1 ? 1 : retry);
    } else {
        oai_err(&e, 429, "requests", "rate_limit_exceeded", NULL,
                "Too many requests in flight for tenant '%s': the limit is %d at once.", t->name,
                t->limits.max_concurrency);
    }
    e.retry_after_s = retry < 1 ? 1 : retry;
    obs_metrics_rejected(a->metrics, "rate_limit");
    if (!r) return;
    srv_req_set_user(r, NULL, NULL, NULL);
    reply_send_error(r, &e);
}

rl_what_t api_limit_slot(const api_tenant_t *t, double now, rl_verdict_t *v)
{
    tenant_limits_t conc = {0, 0, t->limits.max_concurrency};
    rl_verdict_t cv;
    if (conc.max_concurrency <= 0 || rl_admit(t->rl, &conc, 0, now, &cv) == RL_OK) {
        v->refused = RL_OK;
        return RL_OK;
    }
    rl_peek(t->rl, &t->limits, now, v);
    v->refused = cv.refused;
    v->retry_s = cv.retry_s;
    return v->refused;
}

void api_limit_local(const api_tenant_t *t, long long tokens, double now, rl_verdict_t *v)
{
    tenant_limits_t l = t->limits;
    l.max_concurrency = 0; /* taken by api_limit_slot */
    rl_admit(t->rl, &l, tokens, now, v);
}

int api_limit_rate(api_t *a, const api_tenant_t *t, long long tokens, double now, rlr_done_fn done,
                   void *user, rlr_op_t **op, rl_verdict_t *v)
{
    if (t->limits.rpm <= 0 && t->limits.tpm <= 0 && t->limits.max_concurrency <= 0) {
        rl_peek(t->rl, &t->limits, now, v);
        v->refused = RL_OK;
        return 0;
    }
    rlr_t *rr = api_tenants_rlr(a->tenants);
    if (rr && rlr_admit(rr, t->name, &t->limits, tokens, done, user, op)) return 1;
    api_limit_local(t, tokens, now, v); /* no Redis (or it is down): this replica decides */
    return 0;
}

void api_limit_settle(api_t *a, const api_tenant_t *t, int redis, long long reserved,
                      long long used)
{
    if (!t->rl) return;
    tenant_limits_t l = t->limits;
    if (redis) {
        rlr_release(api_tenants_rlr(a->tenants), t->name); /* its lease, if it took one */
        if (used >= 0) rlr_settle(api_tenants_rlr(a->tenants), t->name, &l, used - reserved);
        l.tpm = 0; /* here: only the concurrency slot */
    }
    rl_settle(t->rl, &l, reserved, used, time_now_mono());
}
