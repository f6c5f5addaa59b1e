/* cli_serve.c — `barista serve`: settings → listener → model load → serve →
 * graceful shutdown on SIGTERM/SIGINT (exit 0).
 *
 * The listener opens first and the model loads on a libuv worker thread, so
 * /health answers at once and /ready turns 200 when the model is in. Not for:
 * HTTP or API logic (src/server/, src/api/). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <xxhash.h>

#include "api/api.h"
#include "backend/backend_embed.h"
#include "backend/backend_local.h"
#include "backend/backend_upstream.h"
#include "backend/model_list.h"
#include "control/fallback.h"
#include "cache/cache_key.h"
#include "cli/cli.h"
#include "engine/engine.h"
#include "obs/access_log.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/fault.h"

typedef struct {
    uv_loop_t loop;
    srv_settings_t set;
    cfg_source_t src[64];
    cfg_t cfg;
    api_t *api;
    srv_t *srv;
    model_list_t models;
    int cur;          /* the model being loaded */
    int threads_each; /* matmul threads of a model that does not set its own */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_work_t load;
    int loading;
    int load_rc;
    bar_msg_t load_msg;
    engine_t *loaded;
    char digest[CACHE_KEY_HEX_LEN + 1]; /* model file digest for cache keys */
    int stopping;
    int cleaned;
    int exit_code;
    obs_alog_t *alog; /* --access-log, NULL: off */
} serve_t;

/* IPv6 literals go in brackets in URLs */
#define V6L(s) (strchr((s)->set.host, ':') ? "[" : "")
#define V6R(s) (strchr((s)->set.host, ':') ? "]" : "")

static void cleanup(serve_t *s)
{
    if (s->cleaned || s->loading) return;
    s->cleaned = 1;
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    api_destroy(s->api); /* stops every backend: pending requests get DONE/CANCELLED */
    s->api = NULL;       /* freed by the loop later: never touch it again from here */
    srv_destroy(s->srv);
}

static void on_idle(void *ud)
{
    serve_t *s = ud;
    fprintf(stderr, "barista serve: all connections closed, exiting\n");
    cleanup(s);
}

static void on_grace_expired(void *ud)
{
    serve_t *s = ud;
    if (!s->api) return; /* already cleaned up */
    int n = api_n_generations(s->api);
    if (n) fprintf(stderr, "barista serve: grace period over, cancelling %d generation(s)\n", n);
    api_cancel_all(s->api);
}

static void begin_shutdown(serve_t *s, const char *why)
{
    if (!s->stopping)
        fprintf(stderr,
                "barista serve: %s: no new connections; finishing in-flight requests "
                "(grace %lld ms)\n",
                why, s->set.shutdown_grace_ms);
    else
        fprintf(stderr, "barista serve: %s again: cancelling now\n", why);
    s->stopping = 1;
    srv_shutdown(s->srv);
}

/* A model could not start: exit 1 at once (the second srv_shutdown skips
 * the grace). */
static void fail_start(serve_t *s)
{
    s->exit_code = 1;
    s->stopping = 1;
    srv_shutdown(s->srv);
    srv_shutdown(s->srv);
}

static void on_signal(uv_signal_t *h, int signum)
{
    begin_shutdown(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* SIGHUP: re-read the keys file; a bad one keeps the old keys (one line). */
static void on_hup(uv_signal_t *h, int signum)
{
    serve_t *s = h->data;
    (void)signum;
    if (!s->api || !s->set.keys[0]) return;
    bar_msg_t msg = {{0}};
    if (api_reload_keys(s->api, &msg))
        fprintf(stderr, "barista serve: SIGHUP: keys file not reloaded, the old keys stay: %s\n",
                msg.text);
    else
        fprintf(stderr, "barista serve: SIGHUP: keys file %s reloaded\n", s->set.keys);
}

/* Models load one after the other on a worker thread, each into its own
 * engine (own thread, slots and matmul pool). */
static void load_work(uv_work_t *w)
{
    serve_t *s = w->data;
    const model_entry_t *m = &s->models.v[s->cur];
    s->loaded = NULL;
    s->load_rc = 0;
    if (m->mode == MODEL_MODE_EMBEDDING || m->kind == MODEL_KIND_UPSTREAM)
        return; /* its backend starts on the loop (after_load) */
    engine_config_t ec = {0};
    ec.model_path = m->path;
    ec.n_threads = m->threads > 0 ? (int)m->threads : s->threads_each;
    ec.n_ctx = m->ctx > 0 ? (int)m->ctx : (int)s->set.ctx;
    ec.n_seq_max = m->parallel > 0 ? (int)m->parallel : (int)s->set.parallel;
    ec.kv_mem = (size_t)s->set.kv_mem;
    s->load_rc = engine_create(&s->loaded, &ec, &s->load_msg);
    if (s->load_rc == 0) {
        /* the response cache keys on the file's bytes, not its name */
        bar_msg_t msg = {{0}};
        if (cache_key_file_digest(m->path, s->digest, &msg)) {
            fprintf(stderr, "barista serve: warning: model digest: %s\n", msg.text);
            s->digest[0] = '\0';
        }
    }
}

static void next_model(serve_t *s);

/* An embedding model's backend (its own encoder threads and feature cache),
 * created on the loop thread. */
static int load_embedding(serve_t *s, const model_entry_t *m, backend_t **b, bar_msg_t *msg)
{
    int threads = m->threads > 0 ? (int)m->threads : s->threads_each;
    return backend_embed_create(b, &s->loop, m->path, threads, (int)s->set.embedding_cache_entries,
                                msg);
}

/* An upstream group's backend. Its cache digest is made of the upstream
 * model ids (there are no weights here to hash). Nothing is contacted: an
 * unreachable replica fails its first requests and is ejected. */
static int start_upstream(serve_t *s, const model_entry_t *m, backend_t **b, bar_msg_t *msg)
{
    int idx = (int)(m - s->models.v);
    int rc = backend_upstream_create(b, &s->loop, &s->models, idx, msg);
    if (rc) return rc;
    XXH3_state_t *st = XXH3_createState();
    char digest[CACHE_KEY_HEX_LEN + 1] = "";
    if (st) {
        XXH3_128bits_reset(st);
        XXH3_128bits_update(st, "upstream", 9);
        int n = 0;
        for (int i = 0; i < s->models.n_ups; i++) {
            const model_upstream_t *u = &s->models.ups[i];
            if (u->entry != idx) continue;
            XXH3_128bits_update(st, u->model, strlen(u->model) + 1);
            fprintf(stderr, "barista serve: model %s: upstream replica %s serving %s\n", m->name,
                    u->api_base, u->model); /* never the key */
            n++;
        }
        XXH128_hash_t h = XXH3_128bits_digest(st);
        XXH3_freeState(st);
        snprintf(digest, sizeof digest, "%016llx%016llx", (unsigned long long)h.high64,
                 (unsigned long long)h.low64);
        fprintf(stderr, "barista serve: model %s ready (upstream group of %d)\n", m->name, n);
    }
    api_set_backend(s->api, s->cur, *b, digest);
    return 0;
}

static void after_load(uv_work_t *w, int status)
{
    serve_t *s = w->data;
    const model_entry_t *m = &s->models.v[s->cur];
    s->loading = 0;
    if (status || s->load_rc) {
        fprintf(stderr, "barista serve: cannot load model %s (%s): %s\n", m->name, m->path,
                s->load_rc ? s->load_msg.text : uv_strerror(status));
        if (s->loaded) engine_destroy(s->loaded);
        fail_start(s);
        return;
    }
    if (s->stopping) {
        if (s->loaded) engine_destroy(s->loaded);
        cleanup(s);
        return;
    }
    backend_t *b = NULL;
    bar_msg_t msg = {{0}};
    if (m->kind == MODEL_KIND_UPSTREAM) {
        if (start_upstream(s, m, &b, &msg)) {
            fprintf(stderr, "barista serve: %s\n", msg.text);
            fail_start(s);
            return;
        }
        next_model(s);
        return;
    }
    if (m->mode == MODEL_MODE_EMBEDDING) {
        if (load_embedding(s, m, &b, &msg)) {
            fprintf(stderr, "barista serve: cannot load embedding model %s (%s): %s\n", m->name,
                    m->path, msg.text);
            fail_start(s);
            return;
        }
        api_set_backend(s->api, s->cur, b, "");
        fprintf(stderr, "barista serve: embedding model %s ready (%s) threads=%d\n", m->name,
                m->path, m->threads > 0 ? (int)m->threads : s->threads_each);
        next_model(s);
        return;
    }
    if (backend_local_create(&b, &s->loop, s->loaded, (int)s->set.max_tokens_default, &msg)) {
        fprintf(stderr, "barista serve: %s\n", msg.text);
        engine_destroy(s->loaded);
        fail_start(s);
        return;
    }
    if (backend_local_set_token_cache(b, (size_t)s->set.token_cache_bytes)) {
        fprintf(stderr, "barista serve: out of memory for the token cache\n");
        bk_destroy(b);
        fail_start(s);
        return;
    }
    engine_stats_t st;
    engine_stats(s->loaded, &st);
    api_set_backend(s->api, s->cur, b, s->digest);
    fprintf(stderr,
            "barista serve: model %s ready (%s) kernel=%s threads=%d ctx=%d parallel=%d "
            "kv-mem=%zu (%d blocks of %d positions)\n",
            m->name, m->path, st.kernel_level ? st.kernel_level : "?", st.n_threads, st.n_ctx,
            m->parallel > 0 ? (int)m->parallel : (int)s->set.parallel, st.kv_mem,
            st.kv_blocks_total, st.kv_block);
    next_model(s);
}

/* Load the next model, or say the server is ready. */
static void next_model(serve_t *s)
{
    if (++s->cur < s->models.n) {
        s->loading = 1;
        uv_queue_work(&s->loop, &s->load, load_work, after_load);
        return;
    }
    fprintf(stderr, "barista serve: ready on http://%s%s%s:%d with %d model(s), default %s\n",
            V6L(s), s->set.host, V6R(s), srv_port(s->srv), s->models.n,
            s->models.v[s->models.default_idx].name);
    fault_arm(); /* a fault-injection build fails allocations from here on */
}

/* The model list: --models FILE, then each --model [NAME=]PATH; with
 * neither, the fetched default model. */
static int build_models(serve_t *s, bar_msg_t *msg)
{
    int rc;
    if (s->set.models[0] && (rc = model_list_load_file(&s->models, s->set.models, msg))) return rc;
    int from_flags = 0;
    for (char *p = s->set.model; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (*p) {
            if ((rc = model_list_add_arg(&s->models, p, msg))) return rc;
            from_flags++;
        }
        if (!nl) break;
        *nl = '\n';
        p = nl + 1;
    }
    if (s->models.n == 0) {
        char path[4096];
        if ((rc = cli_default_model_find(path, sizeof path, msg))) return rc;
        if ((rc = model_list_add_arg(&s->models, path, msg))) return rc;
        from_flags = 1;
    }
    /* --model-id renames a single model given by path */
    if (s->set.model_id[0] && s->models.n == 1 && from_flags == 1 && !strchr(s->set.model, '='))
        snprintf(s->models.v[0].name, sizeof s->models.v[0].name, "%.127s", s->set.model_id);
    /* the embedding model: --embedding-model, else the fetched default when
     * present and the list has none ("auto"), or none at all */
    const char *em = s->set.embedding_model;
    if (!strcmp(em, "auto") || !em[0]) {
        const char *def = cli_default_embed_model(); /* <dir>/model.safetensors */
        FILE *f = model_list_has_embedding(&s->models) ? NULL : fopen(def, "rb");
        if (f) {
            fclose(f);
            if ((rc = model_list_add_embedding(&s->models, def, msg))) return rc;
        }
    } else if (strcmp(em, "none") && (rc = model_list_add_embedding(&s->models, em, msg))) {
        return rc;
    }
    if ((rc = model_list_finish(&s->models, msg))) return rc;
    if ((rc = fallback_check(&s->models, msg))) return rc; /* a chain naming an unknown model */
    /* threads: a model without its own setting gets an equal share of
     * --threads (0 = the cores), so engines together never oversubscribe */
    long cores = (long)uv_available_parallelism();
    long total = s->set.threads > 0 ? (long)s->set.threads : cores;
    int unset = 0; /* an embedding model idles between requests: it takes no share */
    for (int i = 0; i < s->models.n; i++)
        if (s->models.v[i].threads <= 0 && s->models.v[i].mode == MODEL_MODE_CHAT &&
            s->models.v[i].kind == MODEL_KIND_LOCAL)
            unset++;
    s->threads_each = (int)(unset ? total / unset : total);
    if (s->threads_each < 1) s->threads_each = 1;
    return 0;
}

static const char *DESC =
    "Serve the model over an OpenAI-compatible HTTP API: POST /v1/chat/completions,\n"
    "POST /v1/completions (streaming with \"stream\": true), POST /v1/embeddings (the\n"
    "fetched all-MiniLM-L6-v2 when present, or --embedding-model), GET /v1/models, /health,\n"
    "/ready, /v1/config and /metrics. With no options it serves the fetched default\n"
    "model on http://127.0.0.1:8080; --model NAME=PATH (repeatable) or --models FILE\n"
    "(a LiteLLM-style model_list YAML) serve several models, routed by \"model\". Every option can "
    "also be set in the config file\n"
    "(--config FILE: one 'name = value' per line, '#' comments) or in the environment\n"
    "(BARISTA_NAME, e.g. BARISTA_PORT=9000).";

int cli_serve_main(int argc, char **argv)
{
    serve_t *s = calloc(1, sizeof *s);
    if (!s) return 1;
    s->cfg = srv_settings_cfg(&s->set, s->src);
    bar_msg_t msg = {{0}};
    int help = 0;
    if (srv_settings_count() > sizeof s->src / sizeof s->src[0]) {
        free(s);
        return 1;
    }
    if (cfg_load(&s->cfg, argc, argv, "config", &help, &msg)) {
        fprintf(stderr, "barista serve: %s\nRun 'barista serve --help' for the options.\n",
                msg.text);
        free(s);
        return 2;
    }
    if (help) {
        char desc[4096];
        snprintf(desc, sizeof desc, "%s\n\n%s", DESC, cli_default_model_help());
        cfg_print_help(&s->cfg, stdout, "barista serve [OPTIONS]", desc);
        free(s);
        return 0;
    }
    if (build_models(s, &msg)) {
        fprintf(stderr, "barista serve: %s\n", msg.text);
        model_list_free(&s->models);
        free(s);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->loop);
    if (api_create(&s->api, &s->loop, &s->set, &s->cfg, &s->models, &msg)) {
        fprintf(stderr, "barista serve: %s\n", msg.text);
        model_list_free(&s->models);
        free(s);
        return 1;
    }
    const char *al = s->set.access_log;
    if (al[0] && strcmp(al, "none")) {
        if (al[0] == '-' && al[1]) {
            fprintf(stderr, "barista serve: --access-log needs FILE or '-' (stdout), not '%s'\n",
                    al);
            api_destroy(s->api);
            uv_run(&s->loop, UV_RUN_DEFAULT);
            uv_loop_close(&s->loop);
            model_list_free(&s->models);
            free(s);
            return 2;
        }
        if (obs_alog_open(&s->alog, al, &msg)) {
            fprintf(stderr, "barista serve: %s\n", msg.text);
            api_destroy(s->api);
            uv_run(&s->loop, UV_RUN_DEFAULT);
            uv_loop_close(&s->loop);
            model_list_free(&s->models);
            free(s);
            return 1;
        }
    }
    srv_opts_t o = {0};
    o.host = s->set.host;
    o.port = (int)s->set.port;
    o.max_body_bytes = (size_t)s->set.max_body_bytes;
    o.max_header_bytes = (size_t)s->set.max_header_bytes;
    o.max_connections = (int)s->set.max_connections;
    o.header_timeout_ms = (uint64_t)s->set.header_timeout_ms;
    o.body_timeout_ms = (uint64_t)s->set.body_timeout_ms;
    o.idle_timeout_ms = (uint64_t)s->set.idle_timeout_ms;
    o.shutdown_grace_ms = (uint64_t)s->set.shutdown_grace_ms;
    o.write_queue_bytes = (size_t)s->set.write_queue_bytes;
    o.send_buffer_bytes = (int)s->set.send_buffer_bytes;
    o.access_log = s->alog;
    o.handler = api_handle;
    o.ud = s->api;
    o.on_response = api_on_response;
    o.owner = s;
    o.on_grace_expired = on_grace_expired;
    o.on_idle = on_idle;
    if (srv_create(&s->srv, &s->loop, &o, &msg)) {
        fprintf(stderr, "barista serve: %s\n", msg.text);
        api_destroy(s->api);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        obs_alog_close(s->alog);
        free(s);
        return 1;
    }
    api_set_server(s->api, s->srv);

    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_hup, on_hup, SIGHUP);

    fprintf(stderr, "barista serve: listening on http://%s%s%s:%d, loading %d model(s)\n", V6L(s),
            s->set.host, V6R(s), srv_port(s->srv), s->models.n);
    s->load.data = s;
    s->loading = 1;
    uv_queue_work(&s->loop, &s->load, load_work, after_load);

    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (!s->cleaned) {
        cleanup(s);
        uv_run(&s->loop, UV_RUN_DEFAULT);
    }
    int rc = uv_loop_close(&s->loop);
    if (rc) fprintf(stderr, "barista serve: loop not empty at exit: %s\n", uv_strerror(rc));
    int code = s->exit_code;
    obs_alog_close(s->alog);
    model_list_free(&s->models);
    free(s);
    return code;
}
