/* api.c — the api object (its models, lifecycle), the route table and its
 * dispatcher (authentication by the row's key), and the plain endpoints
 * (/health, /ready, /v1/models, /v1/config, /metrics). Generation endpoints
 * are pipeline.c; /v1/embeddings embed_job.c; the cache admin endpoints
 * api_cache.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_int.h"
#include "api/reply.h"
#include "api/route.h"
#include "backend/backend_embed.h"
#include "backend/backend_upstream.h"
#include "backend/backend_local.h"
#include "util/timeutil.h"

#include <openssl/crypto.h>

#define API_GRAM_CACHE 64 /* compiled schemas kept (engine/gram_cache.h) */

static void respond_json(srv_req_t *r, int status, buf_t *b)
{
    srv_respond(r, status, "application/json", b->p ? b->p : "", b->n, NULL);
    buf_free(b);
}

/* "sampling_defaults": what a request that leaves a parameter out gets, and
 * "sampling_defaults_from": where each value comes from (model_list: the
 * --models entry; gguf: the file's general.sampling.*; barista: the shipped
 * defaults; openai: OpenAI's, for a model that brings none). */
static void model_sampling_obj(buf_t *b, const api_model_t *m)
{
    oai_req_t q;
    memset(&q, 0, sizeof q);
    q.kind = OAI_CHAT;
    q.max_tokens = -1;
    bk_sampling_t sp;
    api_model_sampling(m, &q, &sp);
    buf_printf(b,
               ",\"sampling_defaults\":{\"temperature\":%.9g,\"top_p\":%.9g,\"top_k\":%d,"
               "\"min_p\":%.9g,\"repeat_penalty\":%.9g,\"presence_penalty\":%.9g,"
               "\"frequency_penalty\":%.9g",
               sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.repeat_penalty, sp.presence_penalty,
               sp.frequency_penalty);
    if (sp.has_seed) buf_printf(b, ",\"seed\":%llu", (unsigned long long)sp.seed);
    if (sp.max_tokens > 0) buf_printf(b, ",\"max_tokens\":%d", sp.max_tokens);
    buf_puts(b, "},\"sampling_defaults_from\":{");
    static const struct {
        const char *name;
        unsigned bit;
        int own; /* a model's own default can set it */
    } f[] = {{"temperature", MODEL_HAS_TEMPERATURE, 1},
             {"top_p", MODEL_HAS_TOP_P, 1},
             {"top_k", MODEL_HAS_TOP_K, 1},
             {"min_p", MODEL_HAS_MIN_P, 1},
             {"repeat_penalty", MODEL_HAS_REPEAT_PENALTY, 1},
             {"presence_penalty", MODEL_HAS_PRESENCE_PENALTY, 0},
             {"frequency_penalty", MODEL_HAS_FREQUENCY_PENALTY, 0}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const char *from = m->cfg.has & f[i].bit                                     ? "model_list"
                           : f[i].own && m->has_dflt && m->dflt.from_file & f[i].bit ? "gguf"
                           : f[i].own && m->has_dflt                                 ? "barista"
                                                                                     : "openai";
        buf_printf(b, "%s\"%s\":\"%s\"", i ? "," : "", f[i].name, from);
    }
    buf_puts(b, "}");
}

static void model_obj(const api_t *a, buf_t *b, const api_model_t *m, const char *id)
{
    (void)a;
    buf_puts(b, "{\"id\":");
    oai_json_string(b, id, strlen(id));
    buf_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"barista\"", m->created);
    buf_printf(b, ",\"meta\":{\"n_ctx\":%d,\"ready\":%s,\"backend\":\"%s\",\"mode\":\"%s\"",
               m->n_ctx, m->bk ? "true" : "false",
               m->cfg.kind == MODEL_KIND_UPSTREAM ? "upstream" : "local",
               m->cfg.mode == MODEL_MODE_EMBEDDING ? "embedding" : "chat");
    if (m->embed_dim) buf_printf(b, ",\"dimensions\":%d", m->embed_dim);
    buf_puts(b, "}");
    if (m->cfg.mode == MODEL_MODE_CHAT) model_sampling_obj(b, m);
    buf_puts(b, "}");
}

/* A tenant sees only the models its key may use (a keys file's `models`). */
static void h_models(api_t *a, srv_req_t *r, http_slice_t id, const api_tenant_t *tn)
{
    const tenant_key_t *k = tn->key;
    buf_t b = {0};
    if (id.n) {
        char tmp[MODEL_NAME_MAX];
        api_model_t *m = NULL;
        if (id.n < sizeof tmp) {
            memcpy(tmp, id.p, id.n);
            tmp[id.n] = '\0';
            m = api_model_find(a, tmp);
        }
        if (m && !tenant_key_allows(k, m->cfg.name)) m = NULL;
        if (!m) {
            reply_error(r, 404, "invalid_request_error", "model_not_found", "model",
                        "The model '%.*s' does not exist.", (int)(id.n > 200 ? 200 : id.n), id.p);
            return;
        }
        model_obj(a, &b, m, tmp);
        buf_puts(&b, "\n");
        respond_json(r, 200, &b);
        return;
    }
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    int n = 0;
    for (int i = 0; i < a->n_models; i++) {
        if (!tenant_key_allows(k, a->models[i].cfg.name)) continue;
        if (n++) buf_puts(&b, ",");
        model_obj(a, &b, &a->models[i], a->models[i].cfg.name);
    }
    if (tenant_key_allows(k, a->models[a->default_idx].cfg.name)) {
        if (n) buf_puts(&b, ",");
        model_obj(a, &b, &a->models[a->default_idx], "default");
    }
    buf_puts(&b, "]}\n");
    respond_json(r, 200, &b);
}

static void h_health(api_t *a, srv_req_t *r)
{
    (void)a;
    buf_t b = {0};
    buf_puts(&b, "{\"status\":\"ok\"}\n");
    respond_json(r, 200, &b);
}

static void h_ready(api_t *a, srv_req_t *r)
{
    buf_t b = {0};
    if (a->n_ready < a->n_models) {
        buf_printf(&b, "{\"status\":\"loading\",\"models_ready\":%d,\"models\":%d}\n", a->n_ready,
                   a->n_models);
        srv_respond(r, 503, "application/json", b.p, b.n, "Retry-After: 1\r\n");
        buf_free(&b);
        return;
    }
    const char *name = a->models[a->default_idx].cfg.name;
    buf_puts(&b, "{\"status\":\"ready\",\"model\":");
    oai_json_string(&b, name, strlen(name));
    buf_puts(&b, ",\"models\":[");
    for (int i = 0; i < a->n_models; i++) {
        if (i) buf_puts(&b, ",");
        oai_json_string(&b, a->models[i].cfg.name, strlen(a->models[i].cfg.name));
    }
    buf_puts(&b, "]}\n");
    respond_json(r, 200, &b);
}

static void h_config(api_t *a, srv_req_t *r)
{
    const cfg_t *c = a->cfg;
    buf_t b = {0};
    buf_puts(&b, "{\"object\":\"barista.config\",\"settings\":{");
    for (size_t i = 0; i < c->n_opts; i++) {
        const cfg_opt_t *o = &c->opts[i];
        char v[16600];
        cfg_format(c, (int)i, v, sizeof v);
        buf_printf(&b, "%s\"%s\":{\"value\":", i ? "," : "", o->name);
        if (o->type == CFG_STR)
            oai_json_string(&b, v, strlen(v));
        else
            buf_puts(&b, v); /* integers and true/false are JSON as they are */
        buf_printf(&b, ",\"source\":\"%s\",\"secret\":%s,\"help\":",
                   cfg_source_name(c->src ? c->src[i] : CFG_SRC_DEFAULT),
                   (o->flags & CFG_SECRET) ? "true" : "false");
        oai_json_string(&b, o->help, strlen(o->help));
        buf_puts(&b, "}");
    }
    buf_puts(&b, "}}\n");
    respond_json(r, 200, &b);
}

/* Per-replica series of the upstream models (backend_upstream.c). */
static void upstream_metrics(const api_t *a, buf_t *b)
{
    backend_t *bs[64];
    const char *names[64];
    int n = 0;
    for (int i = 0; i < a->n_models && n < 64; i++)
        if (a->models[i].bk && backend_is_upstream(a->models[i].bk)) {
            bs[n] = a->models[i].bk;
            names[n++] = a->models[i].cfg.name;
        }
    backend_upstream_metrics(bs, names, n, b);
}

static void h_metrics(api_t *a, srv_req_t *r)
{
    buf_t b = {0};
    obs_metrics_render(a->metrics, &b);
    int active = 0, queued = 0;
    bk_stats_t kv = {0}; /* the paged KV caches of all local engines, summed */
    for (int i = 0; i < a->n_models; i++) {
        if (!a->models[i].bk) continue;
        bk_stats_t st;
        bk_stats(a->models[i].bk, &st);
        active += st.n_active;
        queued += st.n_queued;
        kv.kv_blocks_total += st.kv_blocks_total;
        kv.kv_blocks_used += st.kv_blocks_used;
        kv.kv_blocks_cached += st.kv_blocks_cached;
        kv.kv_blocks_free += st.kv_blocks_free;
        kv.kv_evictions += st.kv_evictions;
        kv.prefix_hit_tokens += st.prefix_hit_tokens;
        kv.preemptions += st.preemptions;
        kv.prefill_tokens += st.prefill_tokens;
    }
    obs_metrics_gauge(&b, "barista_kv_blocks_capacity", "Blocks of the paged KV caches.",
                      kv.kv_blocks_total);
    obs_metrics_gauge(&b, "barista_kv_blocks_used", "KV blocks held by running sequences.",
                      kv.kv_blocks_used);
    obs_metrics_gauge(&b, "barista_kv_blocks_cached",
                      "KV blocks no sequence holds that keep a cached prefix (evictable).",
                      kv.kv_blocks_cached);
    obs_metrics_gauge(&b, "barista_kv_blocks_free", "KV blocks holding nothing.",
                      kv.kv_blocks_free);
    obs_metrics_counter(&b, "barista_prefix_cache_hit_tokens_total",
                        "Prompt tokens mapped from the prefix cache instead of computed.",
                        kv.prefix_hit_tokens);
    obs_metrics_counter(&b, "barista_prefill_tokens_total",
                        "Prompt tokens the engines computed (the n choices of a request share "
                        "one prefill).",
                        kv.prefill_tokens);
    obs_metrics_counter(&b, "barista_kv_evictions_total",
                        "Cached prefix blocks evicted to make room.", kv.kv_evictions);
    obs_metrics_counter(&b, "barista_preemptions_total",
                        "Sequences pre-empted for lack of KV blocks (resumed by recompute).",
                        kv.preemptions);
    obs_metrics_gauge(&b, "barista_engine_active_sequences",
                      "Sequences the engines are decoding now.", active);
    obs_metrics_gauge(&b, "barista_engine_queued_requests", "Requests waiting for an engine slot.",
                      queued);
    obs_metrics_gauge(&b, "barista_api_generations", "Generation requests not yet finished.",
                      a->n_gens);
    srv_stats_t ss = {0};
    if (a->srv) srv_stats(a->srv, &ss);
    obs_metrics_gauge(&b, "barista_http_connections", "Open HTTP connections.", ss.connections);
    obs_metrics_gauge(&b, "barista_http_output_queued_bytes",
                      "Reply bytes queued on sockets that clients have not read yet.",
                      (double)ss.output_queued_bytes);
    obs_metrics_gauge(&b, "barista_http_output_paused",
                      "Connections that stopped taking requests until their output drains.",
                      ss.output_paused);
    obs_metrics_counter(&b, "barista_http_output_paused_total",
                        "Times a connection stopped taking pipelined requests because its "
                        "unsent output passed --write-queue-bytes.",
                        (unsigned long long)ss.output_paused_total);
    obs_metrics_gauge(&b, "barista_model_loaded", "1 once every model is loaded.",
                      a->n_ready == a->n_models ? 1 : 0);
    obs_metrics_gauge(&b, "barista_models_loaded", "Models loaded and serving.", a->n_ready);
    api_obs_gauges(a, &b);
    api_cache_metrics(a->cache, &b);
    embed_metrics(a, &b);
    upstream_metrics(a, &b);
    rlr_t *rr = api_tenants_rlr(a->tenants);
    if (rr) {
        rlr_stats_t rs;
        rlr_stats(rr, &rs);
        obs_metrics_gauge(&b, "barista_ratelimit_redis_up",
                          "1 while the rate limiter's Redis connection is up.", rs.up);
        obs_metrics_counter(&b, "barista_ratelimit_redis_checks_total",
                            "Rate-limit checks sent to Redis.", rs.checks);
        obs_metrics_counter(&b, "barista_ratelimit_redis_timeouts_total",
                            "Rate-limit checks Redis did not answer within --ratelimit-wait-ms.",
                            rs.timeouts);
        obs_metrics_counter(&b, "barista_ratelimit_local_decisions_total",
                            "Rate-limit checks decided by this replica alone (Redis down or slow).",
                            rs.local);
    }
    batches_metrics(a, &b);
    srv_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.n, NULL);
    buf_free(&b);
}

/* Whether h carries 'Authorization: Bearer <key>' (key "" = never): the
 * SHA-256 digests are compared, so the time shows neither the key's length
 * nor where it differs. */
static int bearer_is(const char *key, const http_req_t *h)
{
    if (!key[0]) return 0;
    http_slice_t v = http_req_header(h, "authorization");
    if (!v.p || v.n < 7 || strncasecmp(v.p, "Bearer ", 7)) return 0;
    uint8_t d1[32], d2[32];
    tenant_sha256(v.p + 7, v.n - 7, d1);
    tenant_sha256(key, strlen(key), d2);
    return CRYPTO_memcmp(d1, d2, 32) == 0;
}

enum {
    H_CHAT,
    H_COMPLETIONS,
    H_EMBEDDINGS,
    H_MODELS,
    H_HEALTH,
    H_READY,
    H_CONFIG,
    H_METRICS,
    H_DASHBOARD,
    H_DASHBOARD_SNAPSHOT,
    H_CACHE_ADMIN,
    H_FILES,
    H_BATCHES,
    H_ASYNC,
};

/* The route table: a new endpoint is one row (route.h). */
static const route_t ROUTES[] = {
    {ROUTE_POST, "/v1/chat/completions", "chat_completions", ROUTE_API_KEY, H_CHAT},
    {ROUTE_POST, "/v1/completions", "completions", ROUTE_API_KEY, H_COMPLETIONS},
    {ROUTE_POST, "/v1/embeddings", "embeddings", ROUTE_API_KEY, H_EMBEDDINGS},
    {ROUTE_GET, "/v1/models", "models", ROUTE_API_KEY, H_MODELS},
    {ROUTE_GET, "/v1/models/", "models", ROUTE_API_KEY, H_MODELS},
    {ROUTE_GET, "/health", "health", ROUTE_OPEN, H_HEALTH},
    {ROUTE_GET, "/ready", "ready", ROUTE_OPEN, H_READY},
    {ROUTE_GET, "/v1/config", "config", ROUTE_API_KEY, H_CONFIG},
    {ROUTE_GET, "/metrics", "metrics", ROUTE_OPEN, H_METRICS},
    {ROUTE_GET, "/dashboard", "dashboard", ROUTE_OPEN, H_DASHBOARD},
    {ROUTE_GET, "/v1/dashboard/snapshot", "dashboard", ROUTE_ADMIN_IF_SET, H_DASHBOARD_SNAPSHOT},
    {ROUTE_GET, "/v1/cache/stats", "cache_admin", ROUTE_ADMIN_KEY, H_CACHE_ADMIN},
    {ROUTE_DELETE, "/v1/cache", "cache_admin", ROUTE_ADMIN_KEY, H_CACHE_ADMIN},
    {ROUTE_DELETE, "/v1/cache/", "cache_admin", ROUTE_ADMIN_KEY, H_CACHE_ADMIN},
    {ROUTE_GET | ROUTE_POST, "/v1/files", "files", ROUTE_API_KEY, H_FILES},
    {ROUTE_GET | ROUTE_DELETE, "/v1/files/", "files", ROUTE_API_KEY, H_FILES},
    {ROUTE_GET | ROUTE_POST, "/v1/batches", "batches", ROUTE_API_KEY, H_BATCHES},
    {ROUTE_GET | ROUTE_POST, "/v1/batches/", "batches", ROUTE_API_KEY, H_BATCHES},
    {ROUTE_GET, "/v1/async/", "async", ROUTE_API_KEY, H_ASYNC},
};

static void method_not_allowed(srv_req_t *r, const char *allow, http_slice_t path)
{
    oai_err_t e;
    oai_err(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
            "Method %s is not allowed on %.*s; use %s.", http_req_method_name(srv_req_http(r)),
            (int)(path.n > 200 ? 200 : path.n), path.p, allow);
    buf_t b = {0};
    oai_error_body(&b, &e);
    char extra[80];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    srv_respond(r, 405, "application/json", b.p, b.n, extra);
    buf_free(&b);
}

/* The row's key: 0 to go on with *tn (release it), or answered
 * (401/403/404) and -1. *admin: the admin API may be used for anything. */
static int check_auth(api_t *a, srv_req_t *r, const route_t *row, api_tenant_t *tn, int *admin)
{
    const http_req_t *h = srv_req_http(r);
    memset(tn, 0, sizeof *tn);
    *admin = 0;
    if (row->auth == ROUTE_OPEN) return 0;
    if (row->auth == ROUTE_ADMIN_IF_SET) { /* open without --admin-key */
        if (!a->set->admin_key[0] || bearer_is(a->set->admin_key, h)) return 0;
        if (api_tenants_authed(a->tenants) && api_tenant_resolve(a->tenants, h, tn) == 0) {
            if (tn->admin) return 0; /* a keys-file key with admin: true */
            api_tenant_release(tn);
        }
        reply_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                    "The dashboard's data needs 'Authorization: Bearer <admin key>'.");
        return -1;
    }
    if (row->auth == ROUTE_API_KEY) {
        if (api_tenant_resolve(a->tenants, h, tn) == 0) return 0;
        reply_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                    "Incorrect or missing API key: send 'Authorization: Bearer <key>' or "
                    "'api-key: <key>'.");
        return -1;
    }
    int authed = api_tenants_authed(a->tenants);
    if ((!a->set->admin_key[0] && !authed) || !a->cache) {
        reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                    "The cache admin API is off; start barista with --admin-key to enable it.");
        return -1;
    }
    if (!http_req_header(h, "authorization").p && !http_req_header(h, "api-key").p) {
        reply_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                    "The cache admin API needs 'Authorization: Bearer <admin key>'.");
        return -1;
    }
    if (bearer_is(a->set->admin_key, h)) {
        *admin = 1;
        return 0;
    }
    if (authed && api_tenant_resolve(a->tenants, h, tn) == 0) {
        *admin = tn->admin;
        /* a tenant may purge its own namespaces (api_cache_admin scopes it) */
        if (*admin || h->method == HTTP_DELETE) return 0;
        api_tenant_release(tn);
    }
    reply_error(r, 403, "invalid_request_error", "forbidden", NULL,
                "This key may not use the cache admin API.");
    return -1;
}

void api_handle(void *ud, srv_req_t *r)
{
    api_t *a = ud;
    const http_req_t *h = srv_req_http(r);
    http_slice_t path = http_req_path(h);
    const route_t *row;
    http_slice_t rest;
    route_status_t st =
        route_find(ROUTES, sizeof ROUTES / sizeof ROUTES[0], path, h->method, &row, &rest);
    if (st == ROUTE_NOT_FOUND) {
        srv_req_set_label(r, "not_found");
        reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                    "Unknown request URL: %s %.*s. See the API reference for valid endpoints.",
                    http_req_method_name(h), (int)(path.n > 200 ? 200 : path.n), path.p);
        return;
    }
    srv_req_set_label(r, row->label);
    if (st == ROUTE_BAD_METHOD) {
        /* every row with this path says which methods it takes */
        unsigned methods = 0;
        for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
            if (!strcmp(ROUTES[i].path, row->path)) methods |= ROUTES[i].methods;
        char allow[64];
        route_allow(methods, allow, sizeof allow);
        api_tenant_t tn;
        int admin;
        if (row->auth == ROUTE_ADMIN_KEY) {
            if (check_auth(a, r, row, &tn, &admin) < 0) return;
            api_tenant_release(&tn);
        }
        method_not_allowed(r, allow, path);
        return;
    }
    api_tenant_t tn;
    int admin;
    if (check_auth(a, r, row, &tn, &admin) < 0) return;
    if (tn.name[0]) OBS_TRACE_SET(srv_req_obs(r), tenant, tn.name); /* the access log's tenant */
    switch (row->handler) {
    case H_CHAT:
    case H_COMPLETIONS: {
        oai_kind_t kind = row->handler == H_CHAT ? OAI_CHAT : OAI_COMPLETION;
        if (async_wanted(h))
            async_start(a, r, kind, &tn);
        else
            pipeline_handle(a, r, kind, &tn);
        break;
    }
    case H_FILES:
        files_handle(a, r, rest, &tn);
        break;
    case H_BATCHES:
        batches_handle(a, r, rest, &tn);
        break;
    case H_ASYNC:
        async_handle(a, r, rest, &tn);
        break;
    case H_EMBEDDINGS:
        embed_handle(a, r, &tn);
        break;
    case H_MODELS:
        h_models(a, r, rest, &tn);
        break;
    case H_HEALTH:
        h_health(a, r);
        break;
    case H_READY:
        h_ready(a, r);
        break;
    case H_CONFIG:
        h_config(a, r);
        break;
    case H_METRICS:
        h_metrics(a, r);
        break;
    case H_DASHBOARD:
        api_dashboard_page(a, r);
        break;
    case H_DASHBOARD_SNAPSHOT:
        api_dashboard_snapshot(a, r);
        break;
    default: {
        api_cache_caller_t who = {admin, &tn, a->tenants};
        api_cache_admin(a->cache, r, &who);
        break;
    }
    }
    api_tenant_release(&tn);
}

int api_reload_keys(api_t *a, bar_msg_t *msg)
{
    return api_tenants_reload(a->tenants, msg);
}

static void api_maybe_free(api_t *a)
{
    if (!a->destroyed || !a->closed || a->n_gens || a->n_work) return;
    batches_free(a);
    async_free(a);
    files_free(a);
    gram_cache_destroy(a->grams);
    obs_metrics_destroy(a->metrics);
    api_tenants_destroy(a->tenants);
    free(a->models);
    free(a);
}

int api_create(api_t **out, uv_loop_t *loop, const srv_settings_t *s, const cfg_t *cfg,
               const model_list_t *models, bar_msg_t *msg)
{
    if (!models || models->n < 1) return bar_fail(msg, BAR_ERR_INVALID, "no model to serve");
    api_t *a = calloc(1, sizeof *a);
    if (!a || !(a->metrics = obs_metrics_create()) ||
        !(a->models = calloc((size_t)models->n, sizeof *a->models))) {
        if (a) obs_metrics_destroy(a->metrics);
        free(a);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    a->loop = loop;
    a->set = s;
    a->cfg = cfg;
    a->on_last_gen = api_maybe_free;
    a->fallback = pipeline_fallback;
    a->created = time_now_unix();
    a->n_models = models->n;
    a->default_idx = models->default_idx;
    a->embed_idx = models->embed_idx;
    for (int i = 0; i < models->n; i++) {
        a->models[i].cfg = models->v[i];
        a->models[i].created = a->created;
    }
    a->rng = ((uint64_t)time_now_unix() << 20) ^ (uint64_t)getpid() ^
             (uint64_t)(time_now_mono() * 1e9) ^ 0x2545F4914F6CDD1Dull;
    if (!a->rng) a->rng = 1;
    int rc = gram_cache_create(&a->grams, API_GRAM_CACHE)
                 ? bar_fail(msg, BAR_ERR_NOMEM, "out of memory")
                 : api_tenants_create(&a->tenants, loop, s, msg);
    if (!rc) rc = files_init(a, msg);
    if (!rc) rc = batches_init(a, msg);
    if (!rc) rc = api_cache_create(&a->cache, loop, s, gen_on_sf_empty, a, msg);
    if (rc) {
        gram_cache_destroy(a->grams);
        batches_free(a);
        files_free(a);
        api_tenants_destroy(a->tenants);
        obs_metrics_destroy(a->metrics);
        free(a->models);
        free(a);
        return rc;
    }
    uv_timer_init(loop, &a->closer);
    a->closer.data = a;
    batches_start(a); /* resumes unfinished batches */
    *out = a;
    return 0;
}

void api_set_backend(api_t *a, int i, backend_t *b, const char *digest)
{
    api_model_t *m = &a->models[i];
    bk_stats_t st;
    bk_stats(b, &st);
    m->bk = b;
    m->n_ctx = st.n_ctx;
    if (backend_is_embed(b)) m->embed_dim = backend_embed_dim(b);
    m->has_dflt = backend_local_sampling_defaults(b, &m->dflt) == 0;
    snprintf(m->digest, sizeof m->digest, "%s", digest ? digest : "");
    a->n_ready++;
}

backend_t *api_backend(api_t *a, int i)
{
    return a->models[i].bk;
}

void api_set_server(api_t *a, srv_t *s)
{
    a->srv = s;
}

void api_cancel_all(api_t *a)
{
    batches_stop(a);
    async_stop(a);
    gen_cancel_all(a);
    embed_cancel_all(a);
}

int api_n_generations(const api_t *a)
{
    return a->n_gens;
}

static void on_closer_closed(uv_handle_t *h)
{
    api_t *a = h->data;
    a->closed = 1;
    api_maybe_free(a);
}

void api_destroy(api_t *a)
{
    if (!a) return;
    a->destroyed = 1;
    api_tenants_close(a->tenants); /* requests waiting for Redis's verdict are decided now */
    batches_stop(a);               /* their running lines are given up: they run again on resume */
    async_stop(a);
    embed_cancel_all(a); /* before their backends go: a cancelled job is never called back */
    /* every backend ends its jobs (DONE/CANCELLED) now or on the next loop
     * turns; their generations free themselves, the last one frees the api */
    for (int i = 0; i < a->n_models; i++) {
        backend_t *b = a->models[i].bk;
        a->models[i].bk = NULL;
        bk_destroy(b);
    }
    api_cache_destroy(a->cache); /* snapshot, Redis; freed by close callbacks */
    a->cache = NULL;
    /* freed on a later loop turn at the earliest: the server may still report
     * responses of aborted requests to the api while it is destroyed */
    uv_close((uv_handle_t *)&a->closer, on_closer_closed);
}
