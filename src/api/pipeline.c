/* pipeline.c — the request path of POST /v1/chat/completions and
 * /v1/completions, one named stage after the other (docs/ARCHITECTURE.md):
 *
 *   memo      a byte-identical repeat of an exact L1 hit: answer at once
 *   parse     JSON + OpenAI schema validation          → 400
 *   model     route by "model"                          → 404 model_not_found
 *   tenant    who asks (the route table resolved the key to a tenant, whose
 *             namespace id keys the caches); its priority; its model list
 *   limit     the tenant's rate limits (rpm, tpm, concurrency) → 429
 *   cache     key of the validated request; walk the tiers (L1 → L2), then
 *             follow an identical generation in flight (single-flight)
 *   semantic  embed the query, look for a stored reply to a question with
 *             the same meaning in the same partition (semantic tier)
 *   admit     admission hook (no-op today) — after the cache, so no hit from
 *             any tier is ever refused for capacity
 *   backend   submit to the model's backend (gen.c follows it)
 *
 * Each stage returns 0 to go on, or answers the request and returns -1.
 * Not for: generations and fan-out (gen.c), reply bytes (reply.c). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "api/api_limit.h"
#include "api/reply.h"
#include "control/fallback.h"
#include "util/timeutil.h"

/* Body members that never change the generated text: left out of the key
 * (docs/CACHE.md). "model" is replaced by the resolved name + weights digest;
 * the sampling members are replaced by the values actually used. */
static const char *const KEY_SKIP[] = {
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
    "priority",
    "timeout",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    NULL,
};

/* The canonical bytes of the sampling values actually used: each value's
 * 8 bytes in a fixed order (-0 folded to 0, so equal values are equal bytes;
 * no NaN passes validation). Cheaper than printing them, on every keyed
 * request. Returns the length (out holds at least 10 * 8 bytes). */
static void put_f64(char **p, double v)
{
    if (v == 0) v = 0; /* -0 → 0 */
    memcpy(*p, &v, 8);
    *p += 8;
}

static void put_i64(char **p, int64_t v)
{
    memcpy(*p, &v, 8);
    *p += 8;
}

static size_t sampling_bytes(const bk_sampling_t *sp, char *out)
{
    char *p = out;
    put_f64(&p, sp->temperature);
    put_f64(&p, sp->top_p);
    put_i64(&p, sp->top_k);
    put_f64(&p, sp->min_p);
    put_f64(&p, sp->repeat_penalty);
    put_f64(&p, sp->presence_penalty);
    put_f64(&p, sp->frequency_penalty);
    put_i64(&p, sp->has_seed ? 1 : 0);
    put_i64(&p, sp->has_seed ? (int64_t)sp->seed : 0);
    put_i64(&p, sp->max_tokens);
    return (size_t)(p - out);
}

/* A client for r; takes tn (released with the client, or here on OOM). */
static client_t *client_new(api_t *a, srv_req_t *r, oai_kind_t kind, double t0, api_tenant_t *tn)
{
    client_t *c = calloc(1, sizeof *c);
    if (!c) {
        api_tenant_release(tn);
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    c->a = a;
    c->r = r;
    c->kind = kind;
    c->t0 = t0;
    c->tenant = *tn;
    memset(tn, 0, sizeof *tn);
    c->rl_used = -1;
    return c;
}

/* A stage boundary of c's request (its Server-Timing, access log). */
static void mark(client_t *c, obs_stage_t st)
{
    if (c->r) obs_trace_mark(srv_req_obs(c->r), st, time_now_mono());
}

/* ---- rate limits ---- */

/* The x-ratelimit-* headers every response of a limited tenant carries. */
static void limit_headers(client_t *c, const rl_verdict_t *v)
{
    api_limit_headers(c->r, v);
}

/* The tenant's limits refused c: 429 in OpenAI's words, c freed. */
static void limit_refuse(client_t *c, const rl_verdict_t *v, long long tokens)
{
    srv_req_t *r = c->r;
    c->r = NULL;
    api_limit_refuse(c->a, r, &c->tenant, v, tokens);
    client_free(c);
}

/* The per-minute limits decided (v; NULL: Redis did not answer in time, or
 * is down: the local limiter decides). Go on with c->rl_cont, or 429. */
static void limit_decided(void *user, const rl_verdict_t *v)
{
    client_t *c = user;
    c->rl_op = NULL;
    rl_verdict_t loc;
    if (v) {
        c->rl_redis = v->refused == RL_OK; /* charged in Redis: corrected there at the end */
    } else {
        api_limit_local(&c->tenant, c->rl_tokens, time_now_mono(), &loc);
        v = &loc;
    }
    limit_headers(c, v);
    if (v->refused != RL_OK) {
        limit_refuse(c, v, c->rl_tokens);
        return;
    }
    c->rl_reserved = c->rl_tokens;
    c->rl_cont(c);
}

/* Admit c under its tenant's limits, charging `tokens` (api_limit.h).
 * 0: admitted, go on now; 1: the answer comes later (cont(c) then, unless
 * refused); -1: refused, a 429 sent (c freed). */
static int limit_admit(client_t *c, long long tokens, void (*cont)(client_t *c))
{
    api_tenant_t *t = &c->tenant;
    if (!t->rl) return 0;
    double now = time_now_mono();
    rl_verdict_t v;
    if (api_limit_slot(t, now, &v) != RL_OK) {
        limit_headers(c, &v);
        limit_refuse(c, &v, tokens);
        return -1;
    }
    c->rl_held = 1; /* the concurrency slot (if any): given back by client_free */
    c->rl_tokens = tokens;
    c->rl_cont = cont;
    if (api_limit_rate(c->a, t, tokens, now, limit_decided, c, &c->rl_op, &v)) {
        client_wait(c); /* a disconnect frees c, which cancels the check */
        return 1;
    }
    limit_headers(c, &v);
    if (v.refused != RL_OK) {
        limit_refuse(c, &v, tokens);
        return -1;
    }
    if (t->limits.rpm > 0 || t->limits.tpm > 0) c->rl_reserved = tokens;
    return 0;
}

/* The client was answered before it reached a generation. */
static int answer_error(client_t *c, const oai_err_t *e)
{
    srv_req_t *r = c->r;
    c->r = NULL;
    reply_send_error(r, e);
    client_free(c);
    return -1;
}

/* ---- stages ---- */

/* Answer c from the L1 entry its memo found (c->memo_hit). */
static void memo_reply(client_t *c)
{
    cache_entry_t *hit = c->memo_hit;
    c->memo_hit = NULL;
    api_cache_count(c->a->cache, API_CACHE_HIT_L1);
    gen_reply_entry(c, hit, "L1");
    cache_entry_release(hit);
}

/* memo: a byte-identical repeat of a request answered as an exact L1 hit. */
static int stage_memo(api_t *a, srv_req_t *r, oai_kind_t kind, double t0, api_tenant_t *tn)
{
    const api_cache_memo_t *m = api_cache_memo_find(a->cache, srv_req_http(r), (int)kind, tn->ns);
    if (!m) return 0;
    cache_entry_t *hit = api_cache_l1_get(a->cache, &m->cq);
    if (!hit) return 0;
    api_cache_memo_t mm = *m;
    client_t *c = client_new(a, r, kind, t0, tn);
    if (!c) {
        cache_entry_release(hit);
        return -1;
    }
    m = &mm;
    c->m = &a->models[m->model];
    c->cq = m->cq;
    c->stream = m->stream;
    c->include_usage = m->include_usage;
    c->want_lp = m->want_lp;
    OBS_TRACE_SET(srv_req_obs(r), model, c->m->cfg.name);
    mark(c, OBS_CACHE);
    c->memo_hit = hit;
    /* a hit counts against requests, not tokens */
    int rc = limit_admit(c, 0, memo_reply);
    if (rc == 0) memo_reply(c);
    return -1;
}

/* parse: JSON and the OpenAI schema. */
static int stage_parse(client_t *c, cJSON **root)
{
    const http_req_t *h = srv_req_http(c->r);
    oai_err_t e;
    if (oai_parse_json(h->body.p ? h->body.p : "", h->body.n, root, &e) < 0 ||
        oai_parse_tree_cached(&c->q, c->kind, *root, c->a->grams, &e) < 0)
        return answer_error(c, &e);
    c->stream = c->q.stream;
    c->include_usage = c->q.include_usage;
    c->want_lp = c->q.logprobs;
    /* X-Priority: interactive (0) | batch (10); the body's "priority" wins */
    http_slice_t pr = http_req_header(h, "x-priority");
    if (pr.p) {
        int v = pr.n == 11 && !strncasecmp(pr.p, "interactive", 11) ? 0
                : pr.n == 5 && !strncasecmp(pr.p, "batch", 5)       ? 10
                                                                    : -1000;
        if (v == -1000) {
            oai_err(&e, 400, "invalid_request_error", "invalid_value", "X-Priority",
                    "Invalid 'X-Priority' header: 'interactive' or 'batch'.");
            return answer_error(c, &e);
        }
        if (!cJSON_GetObjectItemCaseSensitive(*root, "priority")) c->q.priority = v;
    }
    return 0;
}

/* model: the request's "model" picks the backend. */
static int stage_model(client_t *c)
{
    api_t *a = c->a;
    c->m = api_model_find(a, c->q.model);
    oai_err_t e;
    if (c->m && c->m->cfg.mode == MODEL_MODE_EMBEDDING) {
        oai_err(&e, 400, "invalid_request_error", "invalid_model", "model",
                "The model '%s' is an embedding model: use POST /v1/embeddings.", c->q.model);
        return answer_error(c, &e);
    }
    /* a model the tenant may not use is answered as one that does not exist */
    const tenant_key_t *k = c->tenant.key;
    if (c->m && tenant_key_allows(k, c->m->cfg.name)) {
        OBS_TRACE_SET(srv_req_obs(c->r), model, c->m->cfg.name);
        return api_model_check(c->m, &c->q, &e) < 0 ? answer_error(c, &e) : 0;
    }
    c->m = NULL;
    char names[512];
    size_t n = 0;
    names[0] = '\0';
    for (int i = 0; i < a->n_models && n + 4 < sizeof names; i++)
        if (tenant_key_allows(k, a->models[i].cfg.name))
            n += (size_t)snprintf(names + n, sizeof names - n, "%s'%s'", n ? ", " : "",
                                  a->models[i].cfg.name);
    oai_err(&e, 404, "invalid_request_error", "model_not_found", "model",
            "The model '%s' does not exist. Available: %s (alias 'default').", c->q.model, names);
    return answer_error(c, &e);
}

/* tenant: who asks. The route table resolved the key to c->tenant, whose
 * namespace id keys the caches and salts the prefix cache. The keys file's
 * priority is a floor: a request may ask to run later, never sooner. */
static int stage_tenant(client_t *c)
{
    if (c->q.priority < c->tenant.priority) c->q.priority = c->tenant.priority;
    return 0;
}

/* limit: the tenant's rate limits. Tokens are reserved at admission: the
 * prompt's estimate (4 bytes a token, as the body stands) + max_tokens (the
 * server's default when the request sets none); corrected to the real count
 * when the request ends (client_free). */
static void after_limit(client_t *c);

static int stage_rate_limit(client_t *c)
{
    if (!c->tenant.rl) return 0;
    const http_req_t *h = srv_req_http(c->r);
    long long mt = c->q.max_tokens > 0 ? c->q.max_tokens : c->a->set->max_tokens_default;
    return limit_admit(c, (long long)(h->body.n + 3) / 4 + mt, after_limit);
}

/* A budget header in ms: 0 absent, 1 set (*ms), -1 malformed (a reply sent). */
static int budget_header(srv_req_t *r, const char *name, const char *shown, double *ms)
{
    http_slice_t v = http_req_header(srv_req_http(r), name);
    if (!v.p) return 0;
    long long x = 0;
    int ok = v.n > 0 && v.n <= 9;
    for (size_t i = 0; ok && i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            ok = 0;
        else
            x = x * 10 + (v.p[i] - '0');
    }
    if (!ok || x < 1 || x > 86400000LL) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", shown,
                    "Invalid '%s' header: an integer number of milliseconds from 1 to "
                    "86400000.",
                    shown);
        return -1;
    }
    *ms = (double)x;
    return 1;
}

/* budgets: the smallest of the request's (body "timeout" in seconds,
 * X-Timeout-Ms), the model entry's `timeout` and the server's for the whole
 * reply; X-First-Token-Timeout-Ms
 * and --first-token-timeout-ms for the first token; --inter-token-timeout-ms
 * between a stream's tokens. Checked before the memo, so a malformed header
 * is a 400 even for a request the cache could answer. Counted from t0, when
 * the request was read. */
typedef struct {
    double total_ms, ttft_ms; /* 0 = none from headers */
} budget_t;

static int stage_budget_headers(srv_req_t *r, budget_t *b)
{
    memset(b, 0, sizeof *b);
    if (budget_header(r, "x-timeout-ms", "X-Timeout-Ms", &b->total_ms) < 0) return -1;
    if (budget_header(r, "x-first-token-timeout-ms", "X-First-Token-Timeout-Ms", &b->ttft_ms) < 0)
        return -1;
    return 0;
}

static double min_pos(double a, double b)
{
    return a <= 0 ? b : b <= 0 ? a : a < b ? a : b;
}

static void set_deadline(client_t *c, const budget_t *b)
{
    const srv_settings_t *set = c->a->set;
    double s = min_pos((double)set->request_timeout_ms / 1e3, c->q.timeout_s);
    s = min_pos(s, b->total_ms / 1e3);
    s = min_pos(s, c->m->cfg.timeout); /* the model entry's (--models) */
    c->deadline = s > 0 ? c->t0 + s : 0;
    double f = min_pos((double)set->first_token_timeout_ms / 1e3, b->ttft_ms / 1e3);
    c->ttft_deadline = f > 0 ? c->t0 + f : 0;
    c->itl_s = (double)set->inter_token_timeout_ms / 1e3;
}

static void after_walk(client_t *c);

/* An asynchronous tier answered. */
static void on_walk(void *user, cache_entry_t *e, int tier)
{
    client_t *c = user;
    c->walk = NULL;
    mark(c, OBS_CACHE);
    if (e) {
        cache_tiers_t *ts = api_cache_tiers(c->a->cache);
        api_cache_count(c->a->cache, tier == 0 ? API_CACHE_HIT_L1 : API_CACHE_HIT_L2);
        gen_reply_entry(c, e, ts->v[tier]->ops->name);
        cache_entry_release(e);
        return;
    }
    after_walk(c);
}

/* cache: decide, walk the tiers, join a twin. 1: go on to the backend. */
static int stage_cache(client_t *c, const cJSON *root)
{
    api_t *a = c->a;
    if (!api_cache_on(a->cache)) return 1;
    bk_sampling_t sp;
    api_model_sampling(c->m, &c->q, &sp);
    /* the server-side settings that change the output are part of the key:
     * the max_tokens actually used (the server default when neither the
     * request nor the model sets it) and the context cap */
    if (sp.max_tokens <= 0) sp.max_tokens = (int)a->set->max_tokens_default;
    bk_stats_t bs = {0};
    if (c->m->bk) bk_stats(c->m->bk, &bs);
    char extra[11 * 8];
    api_cache_keyin_t in = {0};
    in.endpoint = c->kind == OAI_CHAT ? "chat" : "completions";
    in.model = c->m->cfg.name;
    in.digest = c->m->digest;
    in.skip = KEY_SKIP;
    in.extra = extra;
    in.extra_len = sampling_bytes(&sp, extra);
    int64_t n_ctx = bs.n_ctx;
    memcpy(extra + in.extra_len, &n_ctx, 8);
    in.extra_len += 8;
    in.reproducible = sp.temperature == 0 || sp.has_seed;
    in.ns = c->tenant.ns;
    api_cache_decide(a->cache, srv_req_http(c->r), root, &in, &c->cq);
    if (!c->cq.cacheable) {
        mark(c, OBS_CACHE);
        c->xcache = "BYPASS";
        api_cache_count(a->cache, API_CACHE_BYPASS);
        return 1;
    }
    oai_err_t e;
    if (api_sem_prepare(c, root, &in, &e) < 0) {
        answer_error(c, &e);
        return 0;
    }
    if (c->cq.no_cache) return 1;
    cache_entry_t *hit = NULL;
    int tier = -1;
    int64_t now = api_cache_now_ms();
    if (!cache_tiers_lookup(api_cache_tiers(a->cache), &c->cq.key, c->cq.ns,
                            c->cq.max_age >= 0 ? c->cq.max_age * 1000 : -1, now, on_walk, c,
                            &c->walk, &hit, &tier)) {
        mark(c, OBS_CACHE);
        /* an asynchronous tier (L2) answers later: a twin may start meanwhile */
        sf_t *sf = api_cache_sf(a->cache);
        sf_entry_t *sfe = sf ? sf_find(sf, &c->cq.key) : NULL;
        if (sfe) {
            cache_tiers_cancel(api_cache_tiers(a->cache), c->walk);
            c->walk = NULL;
            gen_join(c, sfe);
            return 0;
        }
        client_wait(c);
        client_arm_deadline(c);
        return 0;
    }
    mark(c, OBS_CACHE);
    if (hit) {
        api_cache_count(a->cache, tier == 0 ? API_CACHE_HIT_L1 : API_CACHE_HIT_L2);
        if (tier == 0) {
            const http_req_t *h = srv_req_http(c->r);
            api_cache_memo_t m = {c->cq, (int)(c->m - a->models), c->stream, c->include_usage,
                                  c->want_lp};
            api_cache_memo_put(a->cache, h, (int)c->kind, c->tenant.ns, &m);
        }
        gen_reply_entry(c, hit, api_cache_tiers(a->cache)->v[tier]->ops->name);
        cache_entry_release(hit);
        return 0;
    }
    return 1;
}

/* admission: refuse at once what cannot be served in time, instead of
 * letting it queue, use capacity and time out (docs/SERVE.md "Admission control"). Never
 * reached by a cache hit. A request is refused (503 overloaded, Retry-After
 * from the estimate) when its model's queue is at --max-queue, or when the
 * backend's estimate (backend.h bk_est_t: the wait for a decoding place in
 * the request's priority class, the prompt's prefill, then its output tokens
 * at the step time of the batch it will run in) says that its first token
 * cannot come before its first-token deadline or its last token before its
 * total deadline. A model with a fallback chain answers with the chain
 * instead (pipeline_fallback). An upstream group whose every replica is at
 * its rpm/tpm this minute is refused with 429 (Retry-After: the next
 * minute). */

/* The output tokens per choice admission counts for c on m: the request's
 * max_tokens — an upper bound, exact with ignore_eos; without one, the cap
 * that applies (the model entry's max_tokens or the server's default), or,
 * when the answer may stop early (no ignore_eos) and the backend has seen
 * such answers end, their mean length + 2 mean deviations when that is
 * smaller. Never more than the context leaves after the prompt. */
static int admit_out_tokens(const client_t *c, const api_model_t *m, const bk_stats_t *st,
                            double n_prompt)
{
    int n;
    if (c->q.max_tokens > 0) {
        n = c->q.max_tokens;
    } else {
        bk_sampling_t sp;
        api_model_sampling(m, &c->q, &sp);
        n = sp.max_tokens > 0 ? sp.max_tokens : (int)c->a->set->max_tokens_default;
        double e = st->mean_out_tokens + 2 * st->dev_out_tokens;
        if (!c->q.ignore_eos && st->mean_out_tokens > 0 && e < n) n = (int)e + 1;
    }
    if (st->n_ctx > 0 && n > st->n_ctx - (int)n_prompt) n = st->n_ctx - (int)n_prompt;
    return n > 1 ? n : 1;
}

/* admit_why: NULL (admit), "upstream_limit", "queue" or "budget" for c on
 * model m; *st and *est what the backend said. always: judge the budget even
 * with --no-admission (a fallback step choosing whether to start). */
static const char *admit_why(client_t *c, api_model_t *m, bk_stats_t *st, bk_est_t *est, int always)
{
    api_t *a = c->a;
    memset(est, 0, sizeof *est);
    if (!m->bk) return NULL;
    bk_stats(m->bk, st);
    if (st->rate_wait > 0) return "upstream_limit"; /* an upstream group at its rpm/tpm */
    if (a->set->max_queue > 0 && st->n_waiting >= a->set->max_queue) return "queue";
    if ((!a->set->admission && !always) || (c->deadline <= 0 && c->ttft_deadline <= 0)) return NULL;
    bk_est_in_t in = {0};
    in.priority = c->q.priority;
    in.n_prompt = (double)srv_req_http(c->r)->body.n / 4.0; /* 4 bytes a token */
    in.n_out = admit_out_tokens(c, m, st, in.n_prompt);
    in.n_seq = c->q.n > 1 ? c->q.n : 1;
    bk_estimate(m->bk, st, &in, est);
    if (!est->known) return NULL; /* nothing measured yet: nothing to judge by */
    double now = time_now_mono();
    if (c->ttft_deadline > 0 && now + est->first > c->ttft_deadline) return "budget";
    if (c->deadline > 0 && now + est->done > c->deadline) return "budget";
    return NULL;
}

static int stage_admit(client_t *c)
{
    api_t *a = c->a;
    bk_stats_t st = {0};
    bk_est_t est;
    const char *why = admit_why(c, c->m, &st, &est, 0);
    if (!why) return 0;
    if (pipeline_fallback(c)) return -1; /* the model's fallback chain answers */
    c->rl_used = 0; /* refused before generating: the tenant keeps its tokens */
    double wait = est.known ? est.wait : st.est_wait;
    int retry = (int)(wait + 0.999);
    if (retry < 1) retry = 1;
    oai_err_t e;
    if (!strcmp(why, "upstream_limit")) {
        retry = (int)(st.rate_wait + 0.999);
        oai_err(&e, 429, "requests", "rate_limit_exceeded", NULL,
                "Every replica of model '%s' is at its rpm/tpm limit this minute; retry after "
                "%d s.",
                c->m->cfg.name, retry);
    } else if (!strcmp(why, "queue"))
        oai_err(&e, 503, "server_error", "overloaded", NULL,
                "The model's queue is full (%d waiting); retry after %d s.", st.n_waiting, retry);
    else
        oai_err(&e, 503, "server_error", "overloaded", NULL,
                "The model cannot answer within this request's budget now (expected: first "
                "token in %.0f ms, about %.0f ms of it queue ahead; completion in %.0f ms at "
                "%.1f ms per token); retry after %d s.",
                est.first * 1e3, est.wait * 1e3, est.done * 1e3, est.tpot * 1e3, retry);
    e.retry_after_s = retry;
    obs_metrics_rejected(a->metrics, why);
    return answer_error(c, &e);
}

/* ---- fallback chains (latency control; control/fallback.h) ---- */

/* A semantic step: the reply to the most similar stored question at the
 * step's relaxed threshold, from the in-process tier only (an answer is due
 * now: no Redis round trip). 1 answered. */
static int fallback_semantic(client_t *c, const fallback_step_t *st)
{
    api_t *a = c->a;
    api_sem_t *s = c->sem;
    if (!s || !s->vec || !s->lookup || !c->cq.cacheable) return 0;
    semantic_t *store = api_cache_semantic(a->cache, s->dim);
    if (!store) return 0;
    double thr = st->min_sim > 0 ? st->min_sim
                                 : api_cache_semantic_threshold(a->cache) - FALLBACK_SEMANTIC_RELAX;
    if (thr <= 0) thr = 0.01;
    semantic_hit_t h;
    int64_t now = api_cache_now_ms();
    if (!semantic_lookup(store, c->cq.ns, s->part, s->vec, s->text, s->text_len, thr, now, &h))
        return 0;
    api_cache_req_t q = c->cq;
    q.key = h.key;
    cache_entry_t *e = api_cache_l1_get(a->cache, &q);
    if (!e) return 0;
    c->sem_hit = 1;
    c->sem_sim = h.sim;
    c->cq.key = e->key;
    cache_key_hex(&c->cq.key, c->cq.hex);
    api_cache_count(a->cache, API_CACHE_HIT_SEM);
    gen_reply_entry(c, e, "semantic");
    cache_entry_release(e);
    return 1;
}

/* A model step: submit c to model `name` when its tenant may use it and its
 * estimate fits what is left of the budget. 1 submitted (or answered). */
static int fallback_model(client_t *c, const fallback_step_t *st)
{
    api_t *a = c->a;
    api_model_t *m = NULL;
    for (int i = 0; i < a->n_models; i++)
        if (strlen(a->models[i].cfg.name) == st->arg_len &&
            !memcmp(a->models[i].cfg.name, st->arg, st->arg_len))
            m = &a->models[i];
    if (!m || !m->bk) return 0;
    if (!tenant_key_allows(c->tenant.key, m->cfg.name)) return 0; /* not this tenant's */
    double now = time_now_mono();
    if (c->deadline > 0 && now >= c->deadline) return 0; /* no time left to generate */
    if (c->ttft_deadline > 0 && now >= c->ttft_deadline)
        c->ttft_deadline = 0; /* that budget is spent: the total one bounds the step */
    /* the same test as admission, with what is left of the budget: a
     * generation the budget would cut is not started (the next step answers) */
    bk_stats_t bs = {0};
    bk_est_t est;
    if (admit_why(c, m, &bs, &est, 1)) return 0;
    /* a local engine with nothing measured yet and every place taken: it
     * would queue for an unknown time */
    if (!est.known && bs.kind && !strcmp(bs.kind, "local") && bs.n_slots > 0 &&
        bs.n_jobs >= bs.n_slots)
        return 0;
    c->m = m;
    /* the reply comes from another model: it is neither looked up nor stored
     * under the request's key, nor shared with twins */
    c->cq.cacheable = 0;
    c->xcache = NULL;
    client_arm_deadline(c);
    gen_start(c);
    return 1;
}

int pipeline_fallback(client_t *c)
{
    api_t *a = c->a;
    if (!c->fb_origin) c->fb_origin = c->m;
    const model_entry_t *chain = &c->fb_origin->cfg;
    if (fallback_chain_len(chain) == 0) return 0;
    fallback_step_t st;
    while (fallback_chain_step(chain, c->fb_next++, &st)) {
        fallback_step_name(&st, c->fb, sizeof c->fb);
        if (c->r) OBS_TRACE_SET(srv_req_obs(c->r), fallback, c->fb); /* the access log's */
        int done = 0;
        if (st.kind == FALLBACK_STATIC) {
            gen_reply_text(c, st.arg, st.arg_len);
            done = 1;
        } else if (st.kind == FALLBACK_SEMANTIC) {
            done = fallback_semantic(c, &st);
        } else {
            done = fallback_model(c, &st);
        }
        if (done) {
            obs_metrics_fallback(a->metrics, fallback_kind_name(st.kind));
            return 1;
        }
    }
    c->fb[0] = 0;
    if (c->r) OBS_TRACE_SET(srv_req_obs(c->r), fallback, "exhausted");
    obs_metrics_fallback(a->metrics, "exhausted");
    oai_err_t e;
    oai_err(&e, 504, "timeout", "timeout", NULL,
            "The request cannot be answered within its budget and every step of the model's "
            "fallback chain failed.");
    api_sem_cancel(c);
    answer_error(c, &e);
    return 1;
}

/* The exact tiers and the semantic tier missed: follow a twin in flight
 * (one may have started while the query was embedded), or admit and submit. */
static void after_semantic(client_t *c)
{
    sf_t *sf = api_cache_sf(c->a->cache);
    sf_entry_t *sfe = c->cq.cacheable && !c->cq.no_cache && sf ? sf_find(sf, &c->cq.key) : NULL;
    if (sfe) {
        gen_join(c, sfe);
        return;
    }
    if (stage_admit(c) < 0) return;
    mark(c, OBS_ADMIT);
    gen_start(c);
}

/* Answer c from the entry a semantic lookup found. */
static void semantic_reply(client_t *c, cache_entry_t *e)
{
    c->sem_hit = 1;
    c->cq.key = e->key; /* X-Cache-Key names the reply served (the purge handle) */
    cache_key_hex(&c->cq.key, c->cq.hex);
    api_cache_count(c->a->cache, API_CACHE_HIT_SEM);
    gen_reply_entry(c, e, "semantic");
}

/* The exact tiers answered for a semantic hit's key. */
static void on_semantic_walk(void *user, cache_entry_t *e, int tier)
{
    client_t *c = user;
    (void)tier;
    c->walk = NULL;
    if (e) {
        semantic_reply(c, e);
        cache_entry_release(e);
        return;
    }
    /* the reply is gone (purged, expired, evicted): so is its index entry */
    semantic_t *st = api_cache_semantic(c->a->cache, c->sem ? c->sem->dim : 0);
    if (st) semantic_del(st, &c->sem_key);
    after_semantic(c);
}

/* semantic: the query's embedding came (ok) or failed (go on without). The
 * hook for the relaxed fallback step (latency control) is here: a miss
 * knows the best similarity seen (h.best_sim) and why candidates were refused. */
static void on_embedded(client_t *c, int ok)
{
    api_t *a = c->a;
    api_sem_t *s = c->sem;
    mark(c, OBS_SEMANTIC);
    semantic_t *st = ok ? api_cache_semantic(a->cache, s->dim) : NULL;
    semantic_hit_t h;
    int64_t now = api_cache_now_ms();
    if (st && s->lookup &&
        semantic_lookup(st, c->cq.ns, s->part, s->vec, s->text, s->text_len, s->min_sim, now, &h)) {
        c->sem_key = h.key;
        c->sem_sim = h.sim;
        cache_entry_t *hit = NULL;
        int tier = -1;
        if (!cache_tiers_lookup(api_cache_tiers(a->cache), &h.key, c->cq.ns,
                                c->cq.max_age >= 0 ? c->cq.max_age * 1000 : -1, now,
                                on_semantic_walk, c, &c->walk, &hit, &tier))
            return; /* an asynchronous tier (L2) answers later */
        if (hit) {
            semantic_reply(c, hit);
            cache_entry_release(hit);
            return;
        }
        semantic_del(st, &h.key);
    }
    after_semantic(c);
}

/* The exact tiers missed: the semantic tier, or on to the backend. */
static void after_walk(client_t *c)
{
    sf_t *sf = api_cache_sf(c->a->cache);
    sf_entry_t *sfe = c->cq.cacheable && !c->cq.no_cache && sf ? sf_find(sf, &c->cq.key) : NULL;
    if (sfe) {
        gen_join(c, sfe);
        return;
    }
    if (c->sem && api_sem_embed(c, on_embedded)) {
        client_wait(c); /* a disconnect or the deadline cancels the embedding */
        return;
    }
    after_semantic(c);
}

void pipeline_handle(api_t *a, srv_req_t *r, oai_kind_t kind, api_tenant_t *tn)
{
    double t0 = time_now_mono();
    obs_trace_mark(srv_req_obs(r), OBS_AUTH, t0);
    budget_t budget;
    api_limit_peek_headers(r, tn, t0); /* for answers before the limit stage */
    if (stage_budget_headers(r, &budget) < 0 || stage_memo(a, r, kind, t0, tn) < 0) {
        api_tenant_release(tn);
        return;
    }
    client_t *c = client_new(a, r, kind, t0, tn);
    if (!c) return;
    cJSON *root = NULL;
    if (stage_parse(c, &root) < 0 || stage_model(c) < 0 || stage_tenant(c) < 0) {
        cJSON_Delete(root);
        return;
    }
    set_deadline(c, &budget);
    c->root = root; /* kept while the limit stage may wait for Redis */
    int rc = stage_rate_limit(c);
    if (rc == 0) after_limit(c);
}

/* The limits admitted c: the cache tiers, then the backend. */
static void after_limit(client_t *c)
{
    mark(c, OBS_PARSE); /* parse, model, tenant and limits (a wait for Redis included) */
    cJSON *root = c->root;
    c->root = NULL;
    int go_on = stage_cache(c, root);
    cJSON_Delete(root);
    if (!go_on) return;
    client_arm_deadline(c);
    after_walk(c);
}
