/* batches_run.c — the Batch API's runner: starts a batch's lines, writes
 * their results, and finishes the batch.
 *
 * Each line runs as a local request (server.h) through the same handler an
 * HTTP request would reach (pipeline.c, embed_job.c: caches, admission,
 * model routing), with X-Priority: batch (priority 10, the lowest class) and
 * the creator's Authorization and X-Cache-Namespace (so its cache namespace
 * and owner are the creator's). Idle capacity only: at most
 * --batch-concurrency lines run at once (default the model's slots minus
 * one) while nothing else runs, one while interactive requests run, and none
 * starts while a request waits for an engine slot. A 503 (overloaded,
 * shutting down) or 429 puts the line back; any other answer is its result.
 * A result line is appended and fsynced (on the thread pool) before the line
 * counts as done. Finishing publishes the result files as file objects with
 * fixed ids and reaches the end state. A tick (every TICK_MS) pumps and
 * expires batches past their window.
 *
 * Not for: the HTTP endpoints (batches.c), the state file and reading a
 * batch's input (batches_state.c). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api_int.h"
#include "api/batches_int.h"
#include "api/reply.h"
#include "batch/batch_store.h"
#include "util/timeutil.h"

/* ---- finishing ---- */

/* Publish a result file as a file object with a fixed id (so a finish that
 * is repeated after a crash gives the same id). */
static void publish(api_t *a, batch_t *x, const char *suffix, const char *kind, int lines,
                    char *out_id, size_t out_size)
{
    char src[API_PATH_MAX], dst[API_PATH_MAX];
    batch_path(a, x, suffix, src, sizeof src);
    api_file_t f = {0};
    snprintf(f.id, sizeof f.id, "file-%s-%s", x->id + 6, kind);
    files_path(a, f.id, ".jsonl", dst, sizeof dst);
    bar_msg_t m = {{0}};
    struct stat st;
    if (batch_store_link(src, dst, &m) || stat(dst, &st)) {
        fprintf(stderr, "barista: batch %s: cannot publish its %s file: %s\n", x->id, kind, m.text);
        return;
    }
    api_file_t *old = files_find(a, f.id, NULL);
    if (!old) {
        snprintf(f.owner, sizeof f.owner, "%s", x->owner);
        snprintf(f.filename, sizeof f.filename, "%s_%s.jsonl", x->id, kind);
        snprintf(f.purpose, sizeof f.purpose, "batch_output");
        f.bytes = (long long)st.st_size;
        f.lines = lines;
        f.created = time_now_unix();
        if (files_add(a, &f, &m)) {
            fprintf(stderr, "barista: batch %s: %s\n", x->id, m.text);
            return;
        }
    } else {
        old->bytes = (long long)st.st_size;
    }
    snprintf(out_id, out_size, "%s", f.id);
}

/* Everything that will be written is: publish the results, reach the end
 * state (completed, or cancelled/expired as decided before). */
void batch_finish(api_t *a, batch_t *x)
{
    if (x->running || x->writing || x->loading) return;
    bstate_t end = x->st == B_CANCELLING ? B_CANCELLED : x->expired_at ? B_EXPIRED : B_COMPLETED;
    if (x->st != B_CANCELLING && x->st != B_FINALIZING) {
        x->st = B_FINALIZING;
        x->finalizing_at = time_now_unix();
        batch_persist(a, x);
    }
    if (x->out_fd > 0) fsync(x->out_fd);
    if (x->err_fd > 0) fsync(x->err_fd);
    if (x->n_ok || end == B_COMPLETED)
        publish(a, x, ".out", "output", x->n_ok, x->output_file_id, sizeof x->output_file_id);
    if (x->n_fail)
        publish(a, x, ".err", "errors", x->n_fail, x->error_file_id, sizeof x->error_file_id);
    x->st = end;
    long now = time_now_unix();
    if (end == B_COMPLETED) x->completed_at = now;
    if (end == B_CANCELLED) x->cancelled_at = now;
    batch_persist(a, x);
    batch_lines_free(x);
}

void batch_fail(api_t *a, batch_t *x, const char *code, const char *msg)
{
    buf_t b = {0};
    buf_printf(&b, "{\"object\":\"list\",\"data\":[{\"code\":\"%s\",\"message\":", code);
    oai_json_string(&b, msg, strlen(msg));
    buf_puts(&b, ",\"param\":null,\"line\":null}]}");
    free(x->errors);
    x->errors = buf_release(&b);
    x->st = B_FAILED;
    x->failed_at = time_now_unix();
    batch_persist(a, x);
    batch_lines_free(x);
}

void batch_maybe_done(api_t *a, batch_t *x)
{
    if (x->st == B_CANCELLING) {
        batch_finish(a, x);
        return;
    }
    if (x->st != B_IN_PROGRESS && x->st != B_FINALIZING) return;
    for (int i = 0; i < x->n_lines; i++)
        if (x->lines[i].st != L_DONE) return;
    batch_finish(a, x);
}

/* ---- appending a result ---- */

typedef struct {
    uv_work_t w;
    api_t *a;
    bline_t *l;
    int fd, ok;
    buf_t line;
    int rc;
    bar_msg_t msg;
} wjob_t;

static void append_work(uv_work_t *w)
{
    wjob_t *j = (wjob_t *)w;
    j->rc = batch_store_append(j->fd, j->line.p, j->line.n, &j->msg);
}

static void append_done(uv_work_t *w, int status)
{
    wjob_t *j = (wjob_t *)w;
    api_t *a = j->a;
    bline_t *l = j->l;
    batch_t *x = l->b;
    x->writing--;
    if (j->rc || status) {
        /* not on disk: it runs again (after a restart at the latest) */
        fprintf(stderr, "barista: batch %s: %s\n", x->id, j->msg.text);
        l->st = L_TODO;
        l->retry_at = time_now_mono() + RETRY_S;
    } else {
        l->st = L_DONE;
        if (j->ok)
            x->n_ok++, a->batches->n_ok++;
        else
            x->n_fail++, a->batches->n_fail++;
    }
    buf_free(&j->line);
    free(j);
    if (!a->batches->stopping) {
        batch_maybe_done(a, x);
        batches_pump(a->batches);
    }
    batches_work_done(a);
}

/* The error of a non-2xx reply body, for the result line's "error". */
static void error_of(const cJSON *body, int status, buf_t *b)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    buf_puts(b, "{\"code\":");
    if (cJSON_IsString(code))
        oai_json_string(b, code->valuestring, strlen(code->valuestring));
    else
        buf_printf(b, "\"http_%d\"", status);
    buf_puts(b, ",\"message\":");
    if (cJSON_IsString(msg))
        oai_json_string(b, msg->valuestring, strlen(msg->valuestring));
    else
        buf_printf(b, "\"HTTP %d\"", status);
    buf_puts(b, "}");
}

static void line_done(void *ud, int status, const char *headers, const char *body, size_t n)
{
    bline_t *l = ud;
    batch_t *x = l->b;
    batches_t *bs = x->bs;
    api_t *a = bs->a;
    (void)headers;
    l->r = NULL;
    x->running--;
    bs->running--;
    if (status == 503 || status == 429 || bs->stopping || x->st != B_IN_PROGRESS) {
        /* overloaded, over the tenant's rate limit, or shutting down: later
         * (or on resume) */
        bs->n_retry++;
        l->st = L_TODO;
        l->retry_at = time_now_mono() + RETRY_S;
        if (x->st == B_CANCELLING) batch_finish(a, x);
        return;
    }
    int ok = status >= 200 && status < 300;
    cJSON *root = cJSON_ParseWithLength(body, n);
    char rid[48];
    reply_make_id(&a->rng, rid, sizeof rid, "batch_req_");
    wjob_t *j = calloc(1, sizeof *j);
    if (!j) {
        cJSON_Delete(root);
        l->st = L_TODO;
        l->retry_at = time_now_mono() + RETRY_S;
        return;
    }
    buf_t *b = &j->line;
    buf_printf(b, "{\"id\":\"%s\",\"custom_id\":", rid);
    oai_json_string(b, l->custom_id, strlen(l->custom_id));
    buf_printf(b, ",\"response\":{\"status_code\":%d,\"request_id\":", status);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (cJSON_IsString(id))
        oai_json_string(b, id->valuestring, strlen(id->valuestring));
    else
        oai_json_string(b, rid + 10, strlen(rid + 10));
    buf_puts(b, ",\"body\":");
    if (root)
        buf_append(b, body, n && body[n - 1] == '\n' ? n - 1 : n);
    else
        oai_json_string(b, body, n);
    buf_puts(b, "},\"error\":");
    if (ok)
        buf_puts(b, "null");
    else
        error_of(root, status, b);
    buf_puts(b, "}\n");
    cJSON_Delete(root);
    if (!b->p) {
        free(j);
        l->st = L_TODO;
        l->retry_at = time_now_mono() + RETRY_S;
        return;
    }
    j->a = a;
    j->l = l;
    j->ok = ok;
    j->fd = ok ? x->out_fd : x->err_fd;
    l->st = L_WRITING;
    x->writing++;
    if (uv_queue_work(a->loop, &j->w, append_work, append_done)) {
        x->writing--;
        buf_free(b);
        free(j);
        l->st = L_TODO;
        l->retry_at = time_now_mono() + RETRY_S;
        return;
    }
    a->n_work++;
}

/* ---- running lines ---- */

/* Requests in the engines that are not batch lines (running or waiting). */
static int interactive_load(batches_t *bs)
{
    api_t *a = bs->a;
    int n = 0;
    for (int i = 0; i < a->n_models; i++) {
        if (!a->models[i].bk) continue;
        bk_stats_t st;
        bk_stats(a->models[i].bk, &st);
        n += st.n_active + st.n_queued;
    }
    return n - bs->running;
}

/* Lines that may run now: --batch-concurrency (default the default model's
 * slots minus one) while nothing else runs; one while interactive requests
 * run (they share every decode step with the lines, so fewer lines cost them
 * less, and one keeps the batch moving). */
static int cap_of(batches_t *bs)
{
    api_t *a = bs->a;
    api_model_t *m = &a->models[a->default_idx];
    if (!m->bk) return 0;
    int cap = (int)a->set->batch_concurrency;
    if (cap <= 0) {
        bk_stats_t st;
        bk_stats(m->bk, &st);
        cap = st.n_slots > 1 ? st.n_slots - 1 : 1;
    }
    return interactive_load(bs) > 0 ? 1 : cap;
}

/* Whether any model has requests waiting for an engine slot. */
static int engines_busy(api_t *a)
{
    for (int i = 0; i < a->n_models; i++) {
        if (!a->models[i].bk) continue;
        bk_stats_t st;
        bk_stats(a->models[i].bk, &st);
        if (st.n_queued > 0) return 1;
    }
    return 0;
}

static void start_line(batches_t *bs, batch_t *x, bline_t *l)
{
    api_t *a = bs->a;
    srv_header_t h[4];
    int n = 0;
    h[n++] = (srv_header_t){"content-type", "application/json"};
    h[n++] = (srv_header_t){"x-priority", "batch"};
    if (x->auth) h[n++] = (srv_header_t){"authorization", x->auth};
    if (x->xns) h[n++] = (srv_header_t){"x-cache-namespace", x->xns};
    srv_req_t *r =
        srv_local_create(a->loop, HTTP_POST, x->endpoint, h, n, l->body, l->body_len, line_done, l);
    if (!r) {
        l->retry_at = time_now_mono() + RETRY_S;
        return;
    }
    l->r = r;
    srv_local_log(r, a->srv); /* a line in the access log when it is answered */
    l->st = L_RUNNING;
    x->running++;
    bs->running++;
    /* the line runs as its batch's tenant, as of now: a key taken out of the
     * keys file since fails its remaining lines with 401 */
    api_tenant_t tn;
    if (api_tenant_resolve(a->tenants, srv_req_http(r), &tn) < 0) {
        reply_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                    "The batch's API key is no longer valid.");
        return;
    }
    if (!strcmp(x->endpoint, "/v1/chat/completions")) {
        srv_req_set_label(r, "chat_completions");
        pipeline_handle(a, r, OAI_CHAT, &tn);
    } else if (!strcmp(x->endpoint, "/v1/completions")) {
        srv_req_set_label(r, "completions");
        pipeline_handle(a, r, OAI_COMPLETION, &tn);
    } else {
        srv_req_set_label(r, "embeddings");
        embed_handle(a, r, &tn);
    }
    api_tenant_release(&tn);
}

static void expire(api_t *a, batch_t *x)
{
    x->expired_at = time_now_unix();
    for (int i = 0; i < x->n_lines; i++)
        if (x->lines[i].r) srv_local_abort(x->lines[i].r); /* line_done never comes */
    for (int i = 0; i < x->n_lines; i++)
        if (x->lines[i].st == L_RUNNING) {
            x->lines[i].st = L_TODO;
            x->lines[i].r = NULL;
            x->running--;
            a->batches->running--;
        }
    x->st = B_FINALIZING;
    x->finalizing_at = time_now_unix();
    batch_persist(a, x);
    batch_finish(a, x);
}

void batches_pump(batches_t *bs)
{
    api_t *a = bs->a;
    if (bs->stopping || (a->srv && srv_shutting_down(a->srv))) return;
    int cap = cap_of(bs);
    if (bs->running >= cap || engines_busy(a)) return;
    double now = time_now_mono();
    long unow = time_now_unix();
    for (batch_t *x = bs->list; x && bs->running < cap; x = x->next) {
        if (x->st != B_IN_PROGRESS) continue;
        if (x->expires_at && unow > x->expires_at) {
            expire(a, x);
            continue;
        }
        for (int i = 0; i < x->n_lines && bs->running < cap; i++) {
            bline_t *l = &x->lines[i];
            if (l->st != L_TODO || l->retry_at > now) continue;
            start_line(bs, x, l);
            if (bs->stopping || engines_busy(a)) return;
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    batches_pump(t->data);
}

/* ---- lifecycle ---- */

void batches_start(api_t *a)
{
    batches_t *bs = a->batches;
    uv_timer_init(a->loop, &bs->tick);
    bs->tick.data = bs;
    uv_unref((uv_handle_t *)&bs->tick);
    bs->started = 1;
    if (!a->files_on) return;
    uv_timer_start(&bs->tick, on_tick, TICK_MS, TICK_MS);
    int resumed = 0;
    for (batch_t *x = bs->list; x; x = x->next)
        if (batch_active(x)) {
            batch_load(a, x);
            resumed++;
        }
    if (resumed) fprintf(stderr, "barista: resuming %d unfinished batch(es)\n", resumed);
}

void batch_abort_lines(batch_t *x)
{
    for (int i = 0; i < x->n_lines; i++) {
        bline_t *l = &x->lines[i];
        if (l->st != L_RUNNING || !l->r) continue;
        srv_req_t *lr = l->r;
        l->r = NULL;
        l->st = L_TODO;
        x->running--;
        x->bs->running--;
        srv_local_abort(lr);
    }
}

void batches_stop(api_t *a)
{
    batches_t *bs = a->batches;
    if (!bs || bs->stopping) return;
    bs->stopping = 1;
    for (batch_t *x = bs->list; x; x = x->next)
        batch_abort_lines(x);
    if (bs->started) uv_close((uv_handle_t *)&bs->tick, NULL);
}
