/* batches.c — OpenAI's Batch API over HTTP: POST /v1/batches, GET
 * /v1/batches[/{id}] (list: limit, after), POST /v1/batches/{id}/cancel,
 * and the batch metrics.
 *
 * States as OpenAI's: validating → in_progress → finalizing → completed |
 * failed | expired; cancel: cancelling → cancelled. A batch belongs to the
 * tenant that created it (api_owner_of); another owner's batch is a 404.
 * Creating checks the input file and endpoint, writes the state file and
 * hands the batch to the loader (batches_state.c), which reads its input and
 * starts the runner (batches_run.c).
 *
 * Not for: running lines or finishing (batches_run.c), the state on disk
 * and resuming (batches_state.c), the file objects (files.c), HTTP framing. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/batches_int.h"
#include "api/reply.h"
#include "batch/batch_store.h"
#include "util/timeutil.h"

/* ---- HTTP ---- */

static void respond_buf(srv_req_t *r, int status, buf_t *b)
{
    if (!b->p)
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
    else
        srv_respond(r, status, "application/json", b->p, b->n, NULL);
    buf_free(b);
}

static void respond_batch(srv_req_t *r, const batch_t *x)
{
    buf_t b = {0};
    batch_json(&b, x, 0);
    buf_puts(&b, "\n");
    respond_buf(r, 200, &b);
}

static char *header_dup(const http_req_t *h, const char *name)
{
    http_slice_t v = http_req_header(h, name);
    if (!v.p) return NULL;
    char *s = malloc(v.n + 1);
    if (s) {
        memcpy(s, v.p, v.n);
        s[v.n] = '\0';
    }
    return s;
}

static void h_create(api_t *a, srv_req_t *r, const char *owner)
{
    const http_req_t *h = srv_req_http(r);
    oai_err_t e;
    cJSON *root = NULL;
    if (oai_parse_json(h->body.p ? h->body.p : "", h->body.n, &root, &e) < 0) {
        reply_send_error(r, &e);
        return;
    }
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input_file_id");
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(root, "endpoint");
    const cJSON *win = cJSON_GetObjectItemCaseSensitive(root, "completion_window");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    api_file_t *f = NULL;
    if (!cJSON_IsObject(root)) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", NULL,
                    "The request body must be a JSON object.");
    } else if (!in || cJSON_IsNull(in)) {
        reply_error(r, 400, "invalid_request_error", "missing_required_parameter", "input_file_id",
                    "Missing required parameter: 'input_file_id'.");
    } else if (!cJSON_IsString(in)) {
        reply_error(r, 400, "invalid_request_error", "invalid_type", "input_file_id",
                    "Invalid type for 'input_file_id': expected a string.");
    } else if (!cJSON_IsString(ep)) {
        reply_error(r, 400, "invalid_request_error", "missing_required_parameter", "endpoint",
                    "Missing required parameter: 'endpoint'.");
    } else if (strcmp(ep->valuestring, "/v1/chat/completions") &&
               strcmp(ep->valuestring, "/v1/completions") &&
               strcmp(ep->valuestring, "/v1/embeddings")) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", "endpoint",
                    "Invalid 'endpoint': '%.100s'. Supported: '/v1/chat/completions', "
                    "'/v1/completions', '/v1/embeddings'.",
                    ep->valuestring);
    } else if (!cJSON_IsString(win) || strcmp(win->valuestring, "24h")) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", "completion_window",
                    "Invalid 'completion_window': only '24h' is supported.");
    } else if (meta && !cJSON_IsNull(meta) && !cJSON_IsObject(meta)) {
        reply_error(r, 400, "invalid_request_error", "invalid_type", "metadata",
                    "Invalid type for 'metadata': expected an object.");
    } else if (!(f = files_find(a, in->valuestring, owner))) {
        reply_error(r, 404, "invalid_request_error", "not_found", "input_file_id",
                    "No such File object: '%.100s'.", in->valuestring);
    } else if (strcmp(f->purpose, "batch")) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", "input_file_id",
                    "The file '%s' was not uploaded with purpose 'batch'.", f->id);
    } else if (f->lines > a->set->batch_max_lines) {
        reply_error(r, 400, "invalid_request_error", "batch_too_large", "input_file_id",
                    "The file has %ld requests; a batch takes at most %lld "
                    "(--batch-max-lines).",
                    f->lines, a->set->batch_max_lines);
    } else if (f->lines == 0) {
        reply_error(r, 400, "invalid_request_error", "empty_file", "input_file_id",
                    "The file '%s' has no requests.", f->id);
    } else {
        batch_t *x = calloc(1, sizeof *x);
        if (!x) {
            reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
            cJSON_Delete(root);
            return;
        }
        x->bs = a->batches;
        x->out_fd = x->err_fd = -1;
        reply_make_id(&a->rng, x->id, sizeof x->id, "batch_");
        snprintf(x->owner, sizeof x->owner, "%s", owner);
        snprintf(x->input_file_id, sizeof x->input_file_id, "%s", f->id);
        snprintf(x->endpoint, sizeof x->endpoint, "%s", ep->valuestring);
        x->st = B_VALIDATING;
        x->created_at = time_now_unix();
        x->expires_at = x->created_at + WINDOW_S;
        x->total = (int)f->lines;
        if (cJSON_IsObject(meta)) x->metadata = cJSON_PrintUnformatted(meta);
        x->auth = header_dup(h, "authorization");
        if (!x->auth && (x->auth = header_dup(h, "api-key"))) {
            /* lines carry the key as a bearer token: one header to keep */
            size_t kn = strlen(x->auth);
            char *bearer = malloc(kn + 8);
            if (bearer) snprintf(bearer, kn + 8, "Bearer %s", x->auth);
            free(x->auth);
            x->auth = bearer;
        }
        x->xns = header_dup(h, "x-cache-namespace");
        x->next = a->batches->list;
        a->batches->list = x;
        batch_persist(a, x);
        respond_batch(r, x);
        batch_load(a, x);
    }
    cJSON_Delete(root);
}

static void h_cancel(api_t *a, srv_req_t *r, batch_t *x)
{
    if (x->st != B_VALIDATING && x->st != B_IN_PROGRESS && x->st != B_CANCELLING) {
        reply_error(r, 409, "invalid_request_error", "conflict", NULL,
                    "Cannot cancel a batch with status '%s'.", batch_state_name[x->st]);
        return;
    }
    if (x->st != B_CANCELLING) {
        x->st = B_CANCELLING;
        x->cancelling_at = time_now_unix();
        batch_persist(a, x);
        batch_abort_lines(x);
    }
    respond_batch(r, x); /* cancelling: the client polls for cancelled */
    batch_finish(a, x);  /* at once unless results are still being written */
}

static void h_list(api_t *a, srv_req_t *r, const char *owner)
{
    http_slice_t q = http_req_query(srv_req_http(r));
    long limit = 20;
    char after[64] = "";
    /* ?limit=N&after=ID */
    size_t i = 0;
    while (i < q.n) {
        size_t e = i;
        while (e < q.n && q.p[e] != '&')
            e++;
        if (e - i > 6 && !memcmp(q.p + i, "limit=", 6)) {
            char tmp[16];
            size_t n = e - i - 6;
            char *end = NULL;
            if (n < sizeof tmp) {
                memcpy(tmp, q.p + i + 6, n);
                tmp[n] = '\0';
                limit = strtol(tmp, &end, 10);
            }
            if (!end || *end || limit < 1 || limit > 100) {
                reply_error(r, 400, "invalid_request_error", "invalid_value", "limit",
                            "Invalid 'limit': an integer from 1 to 100.");
                return;
            }
        } else if (e - i > 6 && !memcmp(q.p + i, "after=", 6) && e - i - 6 < sizeof after) {
            memcpy(after, q.p + i + 6, e - i - 6);
            after[e - i - 6] = '\0';
        }
        i = e + 1;
    }
    batch_t *x = a->batches->list;
    if (after[0]) {
        batch_t *y = x;
        while (y && strcmp(y->id, after))
            y = y->next;
        x = y ? y->next : NULL;
    }
    buf_t b = {0};
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    int n = 0;
    const char *first = NULL, *last = NULL;
    for (; x && n < limit; x = x->next) {
        if (strcmp(x->owner, owner)) continue;
        if (n++) buf_puts(&b, ",");
        batch_json(&b, x, 0);
        if (!first) first = x->id;
        last = x->id;
    }
    while (x && strcmp(x->owner, owner))
        x = x->next;
    buf_puts(&b, "],\"first_id\":");
    first ? oai_json_string(&b, first, strlen(first)) : buf_puts(&b, "null");
    buf_puts(&b, ",\"last_id\":");
    last ? oai_json_string(&b, last, strlen(last)) : buf_puts(&b, "null");
    buf_printf(&b, ",\"has_more\":%s}\n", x ? "true" : "false");
    respond_buf(r, 200, &b);
}

void batches_handle(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn)
{
    api_route_path_t p;
    if (!files_route_split(a, r, rest, tn, "/v1/batches", "/cancel", h_create, h_list, &p)) return;
    const http_req_t *h = srv_req_http(r);
    const char *owner = p.owner;
    size_t idn = p.id.n;
    int cancel = p.sub;
    batch_t *x = a->batches->list;
    while (x && !(strlen(x->id) == idn && !memcmp(x->id, rest.p, idn) && !strcmp(x->owner, owner)))
        x = x->next;
    if (!x) {
        reply_error(r, 404, "invalid_request_error", "not_found", "batch_id",
                    "No such Batch object: '%.*s'.", (int)(idn > 100 ? 100 : idn), rest.p);
        return;
    }
    if (cancel != (h->method == HTTP_POST)) {
        reply_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                    cancel ? "Use POST on /v1/batches/{id}/cancel."
                           : "Use GET on /v1/batches/{id}.");
        return;
    }
    if (cancel)
        h_cancel(a, r, x);
    else
        respond_batch(r, x);
}

void batches_metrics(const api_t *a, buf_t *b)
{
    const batches_t *bs = a->batches;
    if (!bs) return;
    int active_n = 0;
    for (const batch_t *x = bs->list; x; x = x->next)
        active_n += batch_active(x);
    obs_metrics_gauge(b, "barista_batches_active",
                      "Batches validating, in progress, finalizing or cancelling.", active_n);
    obs_metrics_gauge(b, "barista_batch_lines_running", "Batch lines running now.", bs->running);
    buf_puts(b, "# HELP barista_batch_lines_total Batch lines answered since start, by where "
                "their result went (completed: output file; failed: error file), and 503s put "
                "back to run later (retried).\n# TYPE barista_batch_lines_total counter\n");
    buf_printf(b, "barista_batch_lines_total{result=\"completed\"} %llu\n", bs->n_ok);
    buf_printf(b, "barista_batch_lines_total{result=\"failed\"} %llu\n", bs->n_fail);
    buf_printf(b, "barista_batch_lines_total{result=\"retried\"} %llu\n", bs->n_retry);
}
