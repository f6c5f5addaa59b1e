/* api.c — routing, admin endpoints (/health, /ready, /v1/models, /v1/config,
 * /metrics), authentication and the api object's lifecycle. Generation
 * endpoints live in gen.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_int.h"
#include "engine/chat.h"
#include "util/timeutil.h"

void api_send_error(srv_req_t *r, const oai_err_t *e)
{
    buf_t b = {0};
    oai_error_body(&b, e);
    const char *extra = e->status == 503 ? "Retry-After: 1\r\n" : NULL;
    srv_respond(r, e->status, "application/json", b.p ? b.p : "", b.n, extra);
    buf_free(&b);
}

void api_error(srv_req_t *r, int status, const char *type, const char *code, const char *param,
               const char *fmt, ...)
{
    oai_err_t e;
    oai_err(&e, status, type, code, param, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    api_send_error(r, &e);
}

static void respond_json(srv_req_t *r, int status, buf_t *b)
{
    srv_respond(r, status, "application/json", b->p ? b->p : "", b->n, NULL);
    buf_free(b);
}

static void model_obj(const api_t *a, buf_t *b, const char *id)
{
    buf_puts(b, "{\"id\":");
    oai_json_string(b, id, strlen(id));
    buf_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"barista\"", a->created);
    buf_printf(b, ",\"meta\":{\"n_ctx\":%d,\"ready\":%s}}", a->n_ctx, a->engine ? "true" : "false");
}

static void h_models(api_t *a, srv_req_t *r, const char *id, size_t id_len)
{
    buf_t b = {0};
    if (id) {
        int ok = (id_len == strlen(a->model_id) && !memcmp(id, a->model_id, id_len)) ||
                 (id_len == 7 && !memcmp(id, "default", 7));
        if (!ok) {
            api_error(r, 404, "invalid_request_error", "model_not_found", "model",
                      "The model '%.*s' does not exist.", (int)(id_len > 200 ? 200 : id_len), id);
            return;
        }
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%.*s", (int)id_len, id);
        model_obj(a, &b, tmp);
        buf_puts(&b, "\n");
        respond_json(r, 200, &b);
        return;
    }
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    model_obj(a, &b, a->model_id);
    buf_puts(&b, ",");
    model_obj(a, &b, "default");
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
    if (!a->engine) {
        buf_puts(&b, "{\"status\":\"loading\"}\n");
        srv_respond(r, 503, "application/json", b.p, b.n, "Retry-After: 1\r\n");
        buf_free(&b);
        return;
    }
    buf_puts(&b, "{\"status\":\"ready\",\"model\":");
    oai_json_string(&b, a->model_id, strlen(a->model_id));
    buf_puts(&b, "}\n");
    respond_json(r, 200, &b);
}

static void h_config(api_t *a, srv_req_t *r)
{
    const cfg_t *c = a->cfg;
    buf_t b = {0};
    buf_puts(&b, "{\"object\":\"barista.config\",\"settings\":{");
    for (size_t i = 0; i < c->n_opts; i++) {
        const cfg_opt_t *o = &c->opts[i];
        char v[4200];
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

static void h_metrics(api_t *a, srv_req_t *r)
{
    buf_t b = {0};
    obs_metrics_render(a->metrics, &b);
    engine_stats_t st;
    memset(&st, 0, sizeof st);
    if (a->engine) engine_stats(a->engine, &st);
    obs_metrics_gauge(&b, "barista_engine_active_sequences",
                      "Sequences the engine is decoding now.", st.n_active);
    obs_metrics_gauge(&b, "barista_engine_queued_requests", "Requests waiting for an engine slot.",
                      st.n_queued);
    obs_metrics_gauge(&b, "barista_api_generations", "Generation requests not yet finished.",
                      a->n_gens);
    obs_metrics_gauge(&b, "barista_http_connections", "Open HTTP connections.",
                      a->srv ? srv_n_connections(a->srv) : 0);
    obs_metrics_gauge(&b, "barista_model_loaded", "1 once the model is loaded.", a->engine ? 1 : 0);
    api_cache_metrics(a->cache, &b);
    srv_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.p ? b.p : "", b.n, NULL);
    buf_free(&b);
}

static int slice_is(http_slice_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && !memcmp(s.p, lit, n);
}

/* Whether h carries 'Authorization: Bearer <key>' (key "" = always). */
static int bearer_is(const char *key, const http_req_t *h)
{
    if (!key[0]) return 1;
    http_slice_t v = http_req_header(h, "authorization");
    size_t kn = strlen(key);
    if (!v.p || v.n != 7 + kn || strncasecmp(v.p, "Bearer ", 7)) return 0;
    /* constant-time compare */
    unsigned diff = 0;
    for (size_t i = 0; i < kn; i++)
        diff |= (unsigned char)v.p[7 + i] ^ (unsigned char)key[i];
    return diff == 0;
}

static int authorized(const api_t *a, const http_req_t *h)
{
    return bearer_is(a->set->api_key, h);
}

/* /v1/cache, /v1/cache/stats, /v1/cache/{key}: the cache admin API, only
 * with --admin-key (otherwise 404: it does not exist). No key → 401, another
 * key → 403. */
static void h_cache_admin(api_t *a, srv_req_t *r)
{
    const http_req_t *h = srv_req_http(r);
    srv_req_set_label(r, "cache_admin");
    if (!a->set->admin_key[0] || !a->cache) {
        api_error(r, 404, "invalid_request_error", "not_found", NULL,
                  "The cache admin API is off; start barista with --admin-key to enable it.");
        return;
    }
    if (!http_req_header(h, "authorization").p) {
        api_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                  "The cache admin API needs 'Authorization: Bearer <admin key>'.");
        return;
    }
    if (!bearer_is(a->set->admin_key, h)) {
        api_error(r, 403, "invalid_request_error", "forbidden", NULL,
                  "This key may not use the cache admin API.");
        return;
    }
    api_cache_admin(a->cache, r);
}

enum { M_GET = 1, M_POST = 2 };

static void method_not_allowed(srv_req_t *r, const char *allow, http_slice_t path)
{
    oai_err_t e;
    oai_err(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
            "Method %s is not allowed on %.*s; use %s.", http_req_method_name(srv_req_http(r)),
            (int)(path.n > 200 ? 200 : path.n), path.p, allow);
    buf_t b = {0};
    oai_error_body(&b, &e);
    char extra[64];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    srv_respond(r, 405, "application/json", b.p, b.n, extra);
    buf_free(&b);
}

void api_handle(void *ud, srv_req_t *r)
{
    api_t *a = ud;
    const http_req_t *h = srv_req_http(r);
    http_slice_t path = http_req_path(h);
    int m = h->method == HTTP_GET || h->method == HTTP_HEAD ? M_GET
            : h->method == HTTP_POST                        ? M_POST
                                                            : 0;
    /* strip one trailing slash */
    if (path.n > 1 && path.p[path.n - 1] == '/') path.n--;
    if (path.n >= 9 && !memcmp(path.p, "/v1/cache", 9) && (path.n == 9 || path.p[9] == '/')) {
        h_cache_admin(a, r);
        return;
    }
    static const struct {
        const char *path;
        int methods;
        const char *label;
        int open; /* no API key needed */
    } routes[] = {
        {"/v1/chat/completions", M_POST, "chat_completions", 0},
        {"/v1/completions", M_POST, "completions", 0},
        {"/v1/models", M_GET, "models", 0},
        {"/health", M_GET, "health", 1},
        {"/ready", M_GET, "ready", 1},
        {"/v1/config", M_GET, "config", 0},
        {"/metrics", M_GET, "metrics", 1},
    };
    int idx = -1;
    const char *model_id = NULL;
    size_t model_id_len = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (slice_is(path, routes[i].path)) {
            idx = (int)i;
            break;
        }
    if (idx < 0 && path.n > 11 && !memcmp(path.p, "/v1/models/", 11)) {
        idx = 2;
        model_id = path.p + 11;
        model_id_len = path.n - 11;
    }
    if (idx < 0) {
        srv_req_set_label(r, "not_found");
        api_error(r, 404, "invalid_request_error", "not_found", NULL,
                  "Unknown request URL: %s %.*s. See the API reference for valid endpoints.",
                  http_req_method_name(h), (int)(path.n > 200 ? 200 : path.n), path.p);
        return;
    }
    srv_req_set_label(r, routes[idx].label);
    if (!(routes[idx].methods & m)) {
        method_not_allowed(r, routes[idx].methods == M_POST ? "POST" : "GET, HEAD", path);
        return;
    }
    if (!routes[idx].open && !authorized(a, h)) {
        api_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                  "Incorrect or missing API key: send 'Authorization: Bearer <key>'.");
        return;
    }
    switch (idx) {
    case 0:
        gen_handle(a, r, OAI_CHAT);
        break;
    case 1:
        gen_handle(a, r, OAI_COMPLETION);
        break;
    case 2:
        h_models(a, r, model_id, model_id_len);
        break;
    case 3:
        h_health(a, r);
        break;
    case 4:
        h_ready(a, r);
        break;
    case 5:
        h_config(a, r);
        break;
    default:
        h_metrics(a, r);
        break;
    }
}

void api_on_response(void *ud, const char *label, int status)
{
    api_t *a = ud;
    obs_metrics_request(a->metrics, label, status);
}

int api_create(api_t **out, uv_loop_t *loop, const srv_settings_t *s, const cfg_t *cfg,
               bar_msg_t *msg)
{
    api_t *a = calloc(1, sizeof *a);
    if (!a || !(a->metrics = obs_metrics_create())) {
        free(a);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    a->loop = loop;
    a->set = s;
    a->cfg = cfg;
    a->created = time_now_unix();
    a->rng = ((uint64_t)time_now_unix() << 20) ^ (uint64_t)getpid() ^
             (uint64_t)(time_now_mono() * 1e9) ^ 0x2545F4914F6CDD1Dull;
    if (!a->rng) a->rng = 1;
    int rc = api_cache_create(&a->cache, loop, s, gen_on_sf_empty, a, msg);
    if (rc) {
        obs_metrics_destroy(a->metrics);
        free(a);
        return rc;
    }
    pthread_mutex_init(&a->mu, NULL);
    uv_async_init(loop, &a->async, gen_on_async);
    a->async.data = a;
    *out = a;
    return 0;
}

void api_set_engine(api_t *a, engine_t *e)
{
    engine_stats_t st;
    engine_stats(e, &st);
    a->engine = e;
    a->tok = engine_tok(e);
    a->n_ctx = st.n_ctx;
    chat_tmpl_t tmpl;
    bar_msg_t msg = {{0}};
    int rc = chat_template_detect(engine_gguf(e), &tmpl, &msg);
    if (rc == BAR_ERR_NOTFOUND) {
        tmpl = CHAT_TMPL_CHATML; /* no template in the file: ChatML, as llama.cpp */
        rc = 0;
    }
    a->chat_ok = rc == 0;
    a->chat_tmpl = (int)tmpl;
    if (rc) snprintf(a->chat_err, sizeof a->chat_err, "%.200s", msg.text);
    if (a->set->model_id[0])
        snprintf(a->model_id, sizeof a->model_id, "%s", a->set->model_id);
    else
        snprintf(a->model_id, sizeof a->model_id, "%s", st.model_id ? st.model_id : "model");
}

void api_set_model_digest(api_t *a, const char *digest)
{
    if (a->cache) api_cache_set_digest(a->cache, digest);
}

void api_set_server(api_t *a, srv_t *s)
{
    a->srv = s;
}

void api_cancel_all(api_t *a)
{
    if (a->engine) gen_cancel_all(a);
}

int api_n_generations(const api_t *a)
{
    return a->n_gens;
}

void api_drain_events(api_t *a)
{
    gen_on_async(&a->async);
}

void api_maybe_free(api_t *a)
{
    if (!a->async_closed || a->n_work) return;
    pthread_mutex_destroy(&a->mu);
    obs_metrics_destroy(a->metrics);
    free(a);
}

static void on_async_closed(uv_handle_t *h)
{
    api_t *a = h->data;
    a->async_closed = 1;
    api_maybe_free(a);
}

void api_destroy(api_t *a)
{
    if (!a) return;
    api_drain_events(a);
    a->engine = NULL;            /* work finishing later must not submit */
    api_cache_destroy(a->cache); /* snapshot, Redis; freed by close callbacks */
    uv_close((uv_handle_t *)&a->async, on_async_closed);
}
