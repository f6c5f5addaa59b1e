/* embed_job.c — POST /v1/embeddings: one HTTP request waiting for its
 * embedding backend's answer.
 *
 *   parse    JSON + the embeddings schema (embeddings.c)      → 400
 *   model    "model" picks an embedding entry ("" / "default": the default
 *            embedding model)                                  → 404 / 400
 *   limit    the tenant's rate limits as for generations (api_limit.h):
 *            rpm, tpm on the input tokens (estimated as text bytes / 4 +
 *            token ids at admission, corrected to the count the model
 *            reports), max_concurrency                         → 429
 *   embed    bk_embed on the model's backend; the job waits for its one
 *            callback, the client's disconnect (bk_cancel), or its deadline
 *            (bk_cancel + 504)
 *   reply    the OpenAI list object (float or base64), usage = tokens
 *            after truncation; counters for /metrics
 *
 * The response cache is not consulted: an embedding is cheap to recompute and
 * the backend's feature cache keeps recent inputs' vectors. Not for: the
 * schema (embeddings.c), the model itself (backend_embed). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_limit.h"
#include "api/embeddings.h"
#include "api/reply.h"
#include "backend/backend_embed.h"
#include "util/timeutil.h"

struct embed_job {
    api_t *a;
    api_model_t *m;
    srv_req_t *r; /* NULL once answered or gone */
    uint64_t id;  /* the backend's job */
    int n;        /* inputs */
    int base64;
    int dimensions; /* 0: not asked */
    double t0;
    uv_timer_t timer; /* the deadline, when timer_on */
    int timer_on;
    embed_job_t *prev, *next; /* in a->embeds */
    api_tenant_t tn;          /* a reference: its limits, until the job ends */
    cJSON *root;              /* the request, until it is submitted */
    emb_req_t q;
    int submitted;         /* the backend has it: id is valid */
    int rl_held, rl_redis; /* a slot / charge held (settled in job_free); charged in Redis */
    long long rl_tokens, rl_reserved, rl_used; /* asked, charged, used (-1: unknown) */
    rlr_op_t *rl_op;                           /* a Redis check in flight */
};

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Unlink j and free it (after its timer is closed). */
static void job_free(embed_job_t *j)
{
    api_t *a = j->a;
    rlr_cancel(j->rl_op);
    j->rl_op = NULL;
    if (j->rl_held) api_limit_settle(a, &j->tn, j->rl_redis, j->rl_reserved, j->rl_used);
    j->rl_held = 0;
    api_tenant_release(&j->tn);
    emb_req_free(&j->q);
    cJSON_Delete(j->root);
    j->root = NULL;
    if (j->prev)
        j->prev->next = j->next;
    else if (a->embeds == j)
        a->embeds = j->next;
    if (j->next) j->next->prev = j->prev;
    a->n_embeds--;
    if (j->timer_on) {
        uv_timer_stop(&j->timer);
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
        return;
    }
    free(j);
}

/* Answer j's client with an error, if it is still there. */
static void job_fail(embed_job_t *j, const oai_err_t *e)
{
    srv_req_t *r = j->r;
    j->r = NULL;
    if (r) {
        srv_req_set_user(r, NULL, NULL, NULL);
        reply_send_error(r, e);
    }
}

static void on_result(void *user, const bk_embed_result_t *res)
{
    embed_job_t *j = user;
    api_t *a = j->a;
    oai_err_t e;
    if (res->err) {
        a->emb.failed++;
        oai_err(&e, res->status >= 400 ? res->status : 500,
                res->status >= 500 || res->status < 400 ? "server_error" : "invalid_request_error",
                res->status == 400 ? "invalid_value" : NULL, res->param, "%s",
                res->msg ? res->msg : "the embedding failed");
        job_fail(j, &e);
        job_free(j);
        return;
    }
    if (res->n != j->n || res->dim < 1 || !res->vecs) {
        a->emb.failed++;
        oai_err(&e, 500, "server_error", NULL, NULL,
                "the embedding backend answered %d vectors of %d for %d inputs", res->n, res->dim,
                j->n);
        job_fail(j, &e);
        job_free(j);
        return;
    }
    j->m->embed_dim = res->dim;
    if (j->dimensions && j->dimensions != res->dim) {
        a->emb.failed++;
        oai_err(&e, 400, "invalid_request_error", "invalid_value", "dimensions",
                "Invalid 'dimensions': the model '%s' has a fixed %d dimensions; give %d or leave "
                "'dimensions' out.",
                j->m->cfg.name, res->dim, res->dim);
        job_fail(j, &e);
        job_free(j);
        return;
    }
    long long tokens = 0;
    for (int i = 0; i < res->n; i++)
        tokens += res->n_tokens ? res->n_tokens[i] : 0;
    j->rl_used = tokens; /* the tokens limit counts what the model read */
    a->emb.requests++;
    a->emb.inputs += (uint64_t)res->n;
    a->emb.tokens += (uint64_t)tokens;
    srv_req_t *r = j->r;
    j->r = NULL;
    if (r) {
        buf_t b = {0};
        srv_req_set_user(r, NULL, NULL, NULL);
        if (emb_format_response(&b, j->m->cfg.name, res->vecs, res->n, res->dim, j->base64,
                                tokens)) {
            buf_free(&b);
            reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        } else {
            srv_respond(r, 200, "application/json", b.p, b.n, NULL);
            buf_free(&b);
        }
    }
    job_free(j);
}

/* The client went away: the backend drops the job, nobody is answered. */
static void on_abort(void *user, srv_req_t *r)
{
    embed_job_t *j = user;
    (void)r;
    j->r = NULL;
    if (j->m->bk && j->submitted) bk_cancel(j->m->bk, j->id);
    obs_metrics_cancelled(j->a->metrics, "disconnect");
    j->a->emb.cancelled++;
    job_free(j);
}

static void on_deadline(uv_timer_t *t)
{
    embed_job_t *j = t->data;
    if (j->m->bk && j->submitted) bk_cancel(j->m->bk, j->id);
    obs_metrics_cancelled(j->a->metrics, "timeout");
    j->a->emb.cancelled++;
    oai_err_t e;
    oai_err(&e, 504, "server_error", "timeout", NULL,
            "The embeddings request ran past its deadline (%.3f s).", time_now_mono() - j->t0);
    job_fail(j, &e);
    job_free(j);
}

void embed_cancel_all(api_t *a)
{
    while (a->embeds) {
        embed_job_t *j = a->embeds;
        if (j->m->bk && j->submitted) bk_cancel(j->m->bk, j->id);
        obs_metrics_cancelled(a->metrics, "shutdown");
        a->emb.cancelled++;
        oai_err_t e;
        oai_err(&e, 503, "server_error", "shutting_down", NULL,
                "The server is shutting down; retry on another replica.");
        job_fail(j, &e);
        job_free(j);
    }
}

/* The embedding model the request names, or answered (404/400/503) and NULL. */
static api_model_t *pick_model(api_t *a, srv_req_t *r, const char *name, const tenant_key_t *key)
{
    api_model_t *m = api_model_find_embedding(a, name);
    if (m && !tenant_key_allows(key, m->cfg.name)) { /* as if it did not exist */
        reply_error(r, 404, "invalid_request_error", "model_not_found", "model",
                    "The model '%s' does not exist.", name[0] ? name : "default");
        return NULL;
    }
    if (m && m->cfg.mode != MODEL_MODE_EMBEDDING) {
        const api_model_t *d = a->embed_idx >= 0 ? &a->models[a->embed_idx] : NULL;
        reply_error(r, 400, "invalid_request_error", "invalid_model", "model",
                    "The model '%s' is a chat/completion model and does not create embeddings; "
                    "%s%s%s.",
                    m->cfg.name, d ? "use the embedding model '" : "no embedding model is served",
                    d ? d->cfg.name : "", d ? "'" : "");
        return NULL;
    }
    if (!m) {
        if (!name[0] || !strcmp(name, "default"))
            reply_error(r, 404, "invalid_request_error", "model_not_found", "model",
                        "No embedding model is served: start barista with --embedding-model PATH "
                        "(or an entry with model_info: {mode: embedding}).");
        else
            reply_error(r, 404, "invalid_request_error", "model_not_found", "model",
                        "The model '%s' does not exist.", name);
        return NULL;
    }
    if (!m->bk) {
        reply_error(r, 503, "server_error", "model_not_ready", NULL,
                    "The model '%s' is still loading; retry when GET /ready answers 200.",
                    m->cfg.name);
        return NULL;
    }
    return m;
}

/* A backend's refusal at submit time as an HTTP error. */
static void submit_failed(srv_req_t *r, int rc, const bar_msg_t *msg)
{
    switch (rc) {
    case BAR_ERR_INVALID:
    case BAR_ERR_RANGE:
    case BAR_ERR_UNSUPPORTED:
        reply_error(r, 400, "invalid_request_error", "invalid_value", "input", "%s", msg->text);
        break;
    case BAR_ERR_BUSY:
        reply_error(r, 503, "server_error", "overloaded", NULL, "%s", msg->text);
        break;
    default:
        reply_error(r, 500, "server_error", NULL, NULL, "%s",
                    msg->text[0] ? msg->text : "the embedding could not start");
        break;
    }
}

/* Hand j to its backend; on a refusal j's client is answered and j freed. */
static void job_submit(embed_job_t *j)
{
    bk_embed_req_t br = {0};
    br.n = j->q.n;
    if (j->q.is_tokens) {
        br.ids = j->q.ids;
        br.n_ids = j->q.n_ids;
    } else {
        br.texts = j->q.texts;
        br.lens = j->q.lens;
    }
    br.cb = on_result;
    br.user = j;
    bar_msg_t msg = {{0}};
    int rc = bk_embed(j->m->bk, &br, &j->id, &msg);
    if (rc) {
        j->a->emb.failed++;
        srv_req_t *r = j->r;
        j->r = NULL;
        if (r) {
            srv_req_set_user(r, NULL, NULL, NULL);
            submit_failed(r, rc, &msg);
        }
        job_free(j);
        return;
    }
    j->submitted = 1;
    emb_req_free(&j->q); /* the backend copied the inputs */
    cJSON_Delete(j->root);
    j->root = NULL;
}

/* The rpm/tpm verdict v: headers, then 1 (admitted) or 0 (429 sent, j freed). */
static int limit_verdict(embed_job_t *j, const rl_verdict_t *v)
{
    api_limit_headers(j->r, v);
    if (v->refused != RL_OK) {
        srv_req_t *r = j->r;
        j->r = NULL;
        api_limit_refuse(j->a, r, &j->tn, v, j->rl_tokens);
        job_free(j);
        return 0;
    }
    if (j->tn.limits.rpm > 0 || j->tn.limits.tpm > 0) j->rl_reserved = j->rl_tokens;
    return 1;
}

/* Redis answered (v), or did not in time (NULL: this replica decides). */
static void limit_decided(void *user, const rl_verdict_t *v)
{
    embed_job_t *j = user;
    j->rl_op = NULL;
    rl_verdict_t loc;
    if (v) {
        j->rl_redis = v->refused == RL_OK; /* charged in Redis: corrected there */
    } else {
        api_limit_local(&j->tn, j->rl_tokens, time_now_mono(), &loc);
        v = &loc;
    }
    if (limit_verdict(j, v)) job_submit(j);
}

/* The tokens an embeddings request reserves: its texts' bytes / 4 (the
 * prompt estimate generations use) or its token ids. */
static long long input_tokens(const emb_req_t *q)
{
    long long n = 0;
    for (int i = 0; i < q->n; i++)
        n += q->is_tokens ? (long long)q->n_ids[i] : ((long long)q->lens[i] + 3) / 4;
    return n;
}

/* The tenant's limits (api_limit.h): 1 admitted, 0 pending (limit_decided
 * goes on), -1 refused (429 sent, j freed). */
static int limit_admit(embed_job_t *j)
{
    if (!j->tn.rl) return 1;
    double now = time_now_mono();
    rl_verdict_t v;
    j->rl_tokens = input_tokens(&j->q);
    if (api_limit_slot(&j->tn, now, &v) != RL_OK) {
        api_limit_headers(j->r, &v);
        srv_req_t *r = j->r;
        j->r = NULL;
        api_limit_refuse(j->a, r, &j->tn, &v, j->rl_tokens);
        job_free(j);
        return -1;
    }
    j->rl_held = 1;
    if (api_limit_rate(j->a, &j->tn, j->rl_tokens, now, limit_decided, j, &j->rl_op, &v)) return 0;
    return limit_verdict(j, &v) ? 1 : -1;
}

void embed_handle(api_t *a, srv_req_t *r, const api_tenant_t *tn)
{
    double t0 = time_now_mono();
    const http_req_t *h = srv_req_http(r);
    cJSON *root = NULL;
    emb_req_t q;
    memset(&q, 0, sizeof q);
    oai_err_t e;
    api_limit_peek_headers(r, tn, t0); /* for answers before the limit check */
    if (oai_parse_json(h->body.p ? h->body.p : "", h->body.n, &root, &e) < 0 ||
        emb_parse(&q, root, &e) < 0) {
        reply_send_error(r, &e);
        goto out;
    }
    api_model_t *m = pick_model(a, r, q.model, tn->key);
    if (!m) goto out;
    if (q.dimensions && m->embed_dim && q.dimensions != m->embed_dim) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", "dimensions",
                    "Invalid 'dimensions': the model '%s' has a fixed %d dimensions; give %d or "
                    "leave 'dimensions' out.",
                    m->cfg.name, m->embed_dim, m->embed_dim);
        goto out;
    }
    embed_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    j->a = a;
    j->m = m;
    j->r = r;
    j->n = q.n;
    j->base64 = q.base64;
    j->dimensions = q.dimensions;
    j->t0 = t0;
    j->rl_used = -1;
    api_tenant_copy(&j->tn, tn);
    j->root = root; /* the job owns the request now */
    j->q = q;
    root = NULL;
    memset(&q, 0, sizeof q);
    j->next = a->embeds;
    if (a->embeds) a->embeds->prev = j;
    a->embeds = j;
    a->n_embeds++;
    srv_req_set_user(r, j, on_abort, NULL);
    /* the deadline: the body's "timeout", capped by --request-timeout-ms */
    double s = a->set->request_timeout_ms ? (double)a->set->request_timeout_ms / 1e3 : 0;
    if (j->q.timeout_s > 0 && (s == 0 || j->q.timeout_s < s)) s = j->q.timeout_s;
    if (s > 0) {
        double left = t0 + s - time_now_mono();
        uv_timer_init(a->loop, &j->timer);
        j->timer.data = j;
        j->timer_on = 1;
        uv_timer_start(&j->timer, on_deadline, left > 0 ? (uint64_t)(left * 1e3) + 1 : 0, 0);
    }
    if (limit_admit(j) == 1) job_submit(j);
out:
    emb_req_free(&q);
    cJSON_Delete(root);
}

void embed_metrics(const api_t *a, buf_t *b)
{
    const api_embed_stats_t *s = &a->emb;
    buf_printf(b,
               "# HELP barista_embeddings_requests_total Embeddings requests by outcome.\n"
               "# TYPE barista_embeddings_requests_total counter\n"
               "barista_embeddings_requests_total{result=\"ok\"} %llu\n"
               "barista_embeddings_requests_total{result=\"error\"} %llu\n"
               "barista_embeddings_requests_total{result=\"cancelled\"} %llu\n"
               "# HELP barista_embeddings_inputs_total Inputs embedded (answered requests).\n"
               "# TYPE barista_embeddings_inputs_total counter\n"
               "barista_embeddings_inputs_total %llu\n"
               "# HELP barista_embeddings_tokens_total Tokens of embedded inputs after "
               "truncation (usage.prompt_tokens).\n"
               "# TYPE barista_embeddings_tokens_total counter\n"
               "barista_embeddings_tokens_total %llu\n",
               (unsigned long long)s->requests, (unsigned long long)s->failed,
               (unsigned long long)s->cancelled, (unsigned long long)s->inputs,
               (unsigned long long)s->tokens);
    /* the embedding backends' own counters: they also count the lookups of
     * other users of the backend (the semantic cache tier) */
    backend_embed_stats_t t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < a->n_models; i++) {
        backend_t *bk = a->models[i].bk;
        if (!bk || !backend_is_embed(bk)) continue;
        backend_embed_stats_t x;
        backend_embed_cache_stats(bk, &x);
        t.hits += x.hits;
        t.misses += x.misses;
        t.evictions += x.evictions;
        t.entries += x.entries;
        t.batches += x.batches;
        t.encode_seconds += x.encode_seconds;
    }
    /* the local models' prompt text -> token ids caches (cache="tokens") */
    unsigned long long th = 0, tm = 0, tev = 0, ten = 0;
    for (int i = 0; i < a->n_models; i++) {
        backend_t *bk = a->models[i].bk;
        if (!bk || backend_is_embed(bk)) continue;
        bk_stats_t x;
        bk_stats(bk, &x);
        th += x.tok_cache_hits;
        tm += x.tok_cache_misses;
        tev += x.tok_cache_evictions;
        ten += x.tok_cache_entries;
    }
    buf_printf(b,
               "# HELP barista_feature_cache_hits_total Feature-cache lookups that found the "
               "value (embedding: input to vector).\n"
               "# TYPE barista_feature_cache_hits_total counter\n"
               "barista_feature_cache_hits_total{cache=\"embedding\"} %llu\n"
               "barista_feature_cache_hits_total{cache=\"tokens\"} %llu\n"
               "# HELP barista_feature_cache_misses_total Feature-cache lookups that had to "
               "compute the value.\n"
               "# TYPE barista_feature_cache_misses_total counter\n"
               "barista_feature_cache_misses_total{cache=\"embedding\"} %llu\n"
               "barista_feature_cache_misses_total{cache=\"tokens\"} %llu\n"
               "# HELP barista_feature_cache_evictions_total Feature-cache entries dropped for "
               "room.\n"
               "# TYPE barista_feature_cache_evictions_total counter\n"
               "barista_feature_cache_evictions_total{cache=\"embedding\"} %llu\n"
               "barista_feature_cache_evictions_total{cache=\"tokens\"} %llu\n"
               "# HELP barista_feature_cache_entries Entries in the feature cache.\n"
               "# TYPE barista_feature_cache_entries gauge\n"
               "barista_feature_cache_entries{cache=\"embedding\"} %d\n"
               "barista_feature_cache_entries{cache=\"tokens\"} %llu\n"
               "# HELP barista_embedding_batches_total Forward passes of the embedding models.\n"
               "# TYPE barista_embedding_batches_total counter\n"
               "barista_embedding_batches_total %llu\n"
               "# HELP barista_embedding_encode_seconds_total Time the embedding models spent "
               "in forward passes.\n"
               "# TYPE barista_embedding_encode_seconds_total counter\n"
               "barista_embedding_encode_seconds_total %.6f\n",
               (unsigned long long)t.hits, th, (unsigned long long)t.misses, tm,
               (unsigned long long)t.evictions, tev, t.entries, ten, (unsigned long long)t.batches,
               t.encode_seconds);
    obs_metrics_gauge(b, "barista_embeddings_in_flight", "Embeddings requests not yet answered.",
                      a->n_embeds);
}
