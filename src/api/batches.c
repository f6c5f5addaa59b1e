/* batches.c — OpenAI's Batch API: POST /v1/batches, GET /v1/batches[/{id}],
 * POST /v1/batches/{id}/cancel, and the runner that answers a batch's lines.
 *
 * States as OpenAI's: validating → in_progress → finalizing → completed |
 * failed | expired; cancel: cancelling → cancelled. Each line runs as a local
 * request (server.h) through the same handler an HTTP request would reach
 * (pipeline.c, embed_job.c: caches, admission, model routing), with
 * X-Priority: batch (priority 10, the lowest class) and the creator's
 * Authorization and X-Cache-Namespace (so its cache namespace and owner are
 * the creator's). Idle capacity only: at most --batch-concurrency lines run
 * at once (default the model's slots minus one) while nothing else runs,
 * one while interactive requests run, and none starts while a request waits
 * for an engine slot. A 503 (overloaded, shutting down) puts the line back; any
 * other answer is its result.
 *
 * Durability (batch/batch_store.h): a result line is appended and fsynced
 * before the line counts as done; the state file is rewritten atomically on
 * every state change. At start every unfinished batch is loaded again: the
 * input is re-read, the custom_ids already in its result files are skipped,
 * so a line answered twice (running when the process died) yields one
 * result. Reading the input and every append run on the libuv thread pool.
 *
 * Not for: the file objects (files.c), HTTP framing. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "api/api_int.h"
#include "api/reply.h"
#include "batch/batch_store.h"
#include "util/timeutil.h"

#define TICK_MS 100
#define RETRY_S 1.0
#define WINDOW_S (24 * 3600)

typedef enum {
    B_VALIDATING,
    B_FAILED,
    B_IN_PROGRESS,
    B_FINALIZING,
    B_COMPLETED,
    B_EXPIRED,
    B_CANCELLING,
    B_CANCELLED,
} bstate_t;

static const char *const STATE[] = {"validating", "failed",  "in_progress", "finalizing",
                                    "completed",  "expired", "cancelling",  "cancelled"};

typedef struct batch batch_t;

typedef enum { L_TODO, L_RUNNING, L_WRITING, L_DONE } lstate_t;

typedef struct {
    batch_t *b;
    char custom_id[128];
    char *body;
    size_t body_len;
    lstate_t st;
    double retry_at; /* monotonic; a 503 waits until then */
    srv_req_t *r;    /* while running */
} bline_t;

struct batch {
    batch_t *next;
    batches_t *bs;
    char id[48], owner[API_OWNER_LEN + 1], input_file_id[48], endpoint[32];
    bstate_t st;
    long created_at, in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at,
        cancelling_at, cancelled_at;
    char output_file_id[64], error_file_id[64];
    int total, n_ok, n_fail;
    char *errors;   /* the "errors" object as JSON, or NULL */
    char *metadata; /* the "metadata" object as JSON, or NULL */
    char *auth, *xns;
    /* running */
    bline_t *lines;
    int n_lines;
    int running, writing, loading;
    int out_fd, err_fd;
};

struct batches {
    api_t *a;
    batch_t *list; /* newest first */
    uv_timer_t tick;
    int stopping;
    int running;                              /* lines in flight, all batches */
    int started;                              /* the tick timer exists */
    unsigned long long n_ok, n_fail, n_retry; /* lines, since start */
};

/* ---- the batch object and its state file ---- */

static void opt_time(buf_t *b, const char *k, long v)
{
    if (v)
        buf_printf(b, ",\"%s\":%ld", k, v);
    else
        buf_printf(b, ",\"%s\":null", k);
}

static void opt_str(buf_t *b, const char *k, const char *v)
{
    buf_printf(b, ",\"%s\":", k);
    if (v && v[0])
        oai_json_string(b, v, strlen(v));
    else
        buf_puts(b, "null");
}

/* The batch object (private: also the members only the state file keeps). */
static void batch_json(buf_t *b, const batch_t *x, int private)
{
    buf_puts(b, "{\"id\":");
    oai_json_string(b, x->id, strlen(x->id));
    buf_puts(b, ",\"object\":\"batch\",\"endpoint\":");
    oai_json_string(b, x->endpoint, strlen(x->endpoint));
    buf_printf(b, ",\"errors\":%s,\"input_file_id\":", x->errors ? x->errors : "null");
    oai_json_string(b, x->input_file_id, strlen(x->input_file_id));
    buf_printf(b, ",\"completion_window\":\"24h\",\"status\":\"%s\"", STATE[x->st]);
    opt_str(b, "output_file_id", x->output_file_id);
    opt_str(b, "error_file_id", x->error_file_id);
    buf_printf(b, ",\"created_at\":%ld", x->created_at);
    opt_time(b, "in_progress_at", x->in_progress_at);
    opt_time(b, "expires_at", x->expires_at);
    opt_time(b, "finalizing_at", x->finalizing_at);
    opt_time(b, "completed_at", x->completed_at);
    opt_time(b, "failed_at", x->failed_at);
    opt_time(b, "expired_at", x->expired_at);
    opt_time(b, "cancelling_at", x->cancelling_at);
    opt_time(b, "cancelled_at", x->cancelled_at);
    buf_printf(b, ",\"request_counts\":{\"total\":%d,\"completed\":%d,\"failed\":%d}", x->total,
               x->n_ok, x->n_fail);
    buf_printf(b, ",\"metadata\":%s", x->metadata ? x->metadata : "null");
    if (private) {
        opt_str(b, "owner", x->owner);
        opt_str(b, "auth", x->auth);
        opt_str(b, "xns", x->xns);
    }
    buf_puts(b, "}");
}

static void batch_path(const api_t *a, const batch_t *x, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/batches/%s%s", a->set->data_dir, x->id, suffix);
}

/* Rewrite the state file (small; on the loop). */
static void persist(api_t *a, const batch_t *x)
{
    buf_t b = {0};
    batch_json(&b, x, 1);
    buf_puts(&b, "\n");
    char path[API_PATH_MAX];
    batch_path(a, x, ".json", path, sizeof path);
    bar_msg_t m = {{0}};
    if (!b.p || batch_store_write(path, b.p, b.n, &m))
        fprintf(stderr, "barista: batch %s: cannot save its state: %s\n", x->id, m.text);
    buf_free(&b);
}

static void lines_free(batch_t *x)
{
    for (int i = 0; i < x->n_lines; i++)
        free(x->lines[i].body);
    free(x->lines);
    x->lines = NULL;
    x->n_lines = 0;
    if (x->out_fd > 0) close(x->out_fd);
    if (x->err_fd > 0) close(x->err_fd);
    x->out_fd = x->err_fd = -1;
}

static void batch_free(batch_t *x)
{
    lines_free(x);
    free(x->errors);
    free(x->metadata);
    free(x->auth);
    free(x->xns);
    free(x);
}

static int active(const batch_t *x)
{
    return x->st == B_VALIDATING || x->st == B_IN_PROGRESS || x->st == B_FINALIZING ||
           x->st == B_CANCELLING;
}

static void api_work_done(api_t *a)
{
    a->n_work--;
    if (a->destroyed && a->on_last_gen) a->on_last_gen(a);
}

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
static void finish(api_t *a, batch_t *x)
{
    if (x->running || x->writing || x->loading) return;
    bstate_t end = x->st == B_CANCELLING ? B_CANCELLED : x->expired_at ? B_EXPIRED : B_COMPLETED;
    if (x->st != B_CANCELLING && x->st != B_FINALIZING) {
        x->st = B_FINALIZING;
        x->finalizing_at = time_now_unix();
        persist(a, x);
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
    persist(a, x);
    lines_free(x);
}

static void fail_batch(api_t *a, batch_t *x, const char *code, const char *msg)
{
    buf_t b = {0};
    buf_printf(&b, "{\"object\":\"list\",\"data\":[{\"code\":\"%s\",\"message\":", code);
    oai_json_string(&b, msg, strlen(msg));
    buf_puts(&b, ",\"param\":null,\"line\":null}]}");
    free(x->errors);
    x->errors = buf_release(&b);
    x->st = B_FAILED;
    x->failed_at = time_now_unix();
    persist(a, x);
    lines_free(x);
}

static void maybe_done(api_t *a, batch_t *x)
{
    if (x->st == B_CANCELLING) {
        finish(a, x);
        return;
    }
    if (x->st != B_IN_PROGRESS && x->st != B_FINALIZING) return;
    for (int i = 0; i < x->n_lines; i++)
        if (x->lines[i].st != L_DONE) return;
    finish(a, x);
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

static void pump(batches_t *bs);

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
        maybe_done(a, x);
        pump(a->batches);
    }
    api_work_done(a);
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
        if (x->st == B_CANCELLING) finish(a, x);
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
    persist(a, x);
    finish(a, x);
}

static void pump(batches_t *bs)
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
    pump(t->data);
}

/* ---- loading a batch's input (thread pool) ---- */

typedef struct {
    uv_work_t w;
    api_t *a;
    batch_t *x;
    int resume;
    long max_lines;
    char in_path[API_PATH_MAX], out_path[API_PATH_MAX], err_path[API_PATH_MAX];
    /* results */
    bline_t *lines;
    int n_lines, n_invalid, n_ok, n_fail;
    int out_fd, err_fd;
    const char *fail_code;
    char fail_msg[256];
} ljob_t;

/* custom_id → line index, open addressing */
typedef struct {
    int *slot;
    size_t cap;
} idset_t;

static int idset_init(idset_t *s, int n)
{
    s->cap = 16;
    while (s->cap < (size_t)n * 2 + 2)
        s->cap <<= 1;
    s->slot = malloc(s->cap * sizeof *s->slot);
    if (!s->slot) return -1;
    for (size_t i = 0; i < s->cap; i++)
        s->slot[i] = -1;
    return 0;
}

/* The index of id among lines, or -1; with add >= 0, insert add when missing. */
static int idset_find(idset_t *s, const bline_t *lines, const char *id, int add)
{
    size_t h = (size_t)XXH3_64bits(id, strlen(id)) & (s->cap - 1);
    while (s->slot[h] >= 0) {
        if (!strcmp(lines[s->slot[h]].custom_id, id)) return s->slot[h];
        h = (h + 1) & (s->cap - 1);
    }
    if (add >= 0) s->slot[h] = add;
    return -1;
}

static void invalid_line(buf_t *e, uint64_t *rng, long lineno, const char *custom_id,
                         const char *code, const char *why)
{
    char rid[48];
    reply_make_id(rng, rid, sizeof rid, "batch_req_");
    buf_printf(e, "{\"id\":\"%s\",\"custom_id\":", rid);
    if (custom_id && custom_id[0])
        oai_json_string(e, custom_id, strlen(custom_id));
    else
        buf_puts(e, "null");
    buf_printf(e, ",\"response\":null,\"error\":{\"code\":\"%s\",\"message\":", code);
    char msg[400];
    snprintf(msg, sizeof msg, "Line %ld: %s", lineno, why);
    oai_json_string(e, msg, strlen(msg));
    buf_puts(e, "}}\n");
}

static void load_work(uv_work_t *w)
{
    ljob_t *j = (ljob_t *)w;
    buf_t in = {0}, errs = {0};
    bar_msg_t m = {{0}};
    idset_t ids = {0};
    uint64_t rng = (uint64_t)(uintptr_t)j ^ 0x9E3779B97F4A7C15ull;
    j->out_fd = j->err_fd = -1;
    if (batch_store_read(j->in_path, &in, &m)) {
        j->fail_code = "invalid_file";
        snprintf(j->fail_msg, sizeof j->fail_msg, "The input file cannot be read (deleted?).");
        goto out;
    }
    long n_nonblank = 0;
    for (size_t i = 0; i < in.n; i++)
        n_nonblank += in.p[i] == '\n';
    j->lines = calloc((size_t)n_nonblank + 2, sizeof *j->lines);
    if (!j->lines || idset_init(&ids, (int)n_nonblank + 2)) {
        j->fail_code = "server_error";
        snprintf(j->fail_msg, sizeof j->fail_msg, "out of memory");
        goto out;
    }
    long lineno = 0;
    size_t s = 0;
    for (size_t i = 0; i <= in.n; i++) {
        if (i < in.n && in.p[i] != '\n') continue;
        const char *p = in.p ? in.p + s : "";
        size_t n = i - s;
        s = i + 1;
        lineno++;
        int blank = 1;
        for (size_t k = 0; k < n && blank; k++)
            blank = p[k] == ' ' || p[k] == '\t' || p[k] == '\r';
        if (blank) continue;
        if (j->n_lines + j->n_invalid >= j->max_lines) {
            j->fail_code = "batch_too_large";
            snprintf(j->fail_msg, sizeof j->fail_msg,
                     "The input file has more than %ld requests (--batch-max-lines).",
                     j->max_lines);
            goto out;
        }
        batch_line_t bl;
        const char *code = NULL;
        char why[256];
        if (batch_line_parse(p, n, j->x->endpoint, &bl, &code, why, sizeof why) < 0) {
            invalid_line(&errs, &rng, lineno, bl.custom_id, code, why);
            j->n_invalid++;
            continue;
        }
        bline_t *l = &j->lines[j->n_lines];
        snprintf(l->custom_id, sizeof l->custom_id, "%s", bl.custom_id);
        if (idset_find(&ids, j->lines, l->custom_id, j->n_lines) >= 0) {
            free(bl.body);
            invalid_line(&errs, &rng, lineno, bl.custom_id, "duplicate_custom_id",
                         "The custom_id is used by an earlier line; each must be unique.");
            j->n_invalid++;
            continue;
        }
        l->body = bl.body;
        l->body_len = bl.body_len;
        l->b = j->x;
        j->n_lines++;
    }
    if (j->n_lines + j->n_invalid == 0) {
        j->fail_code = "empty_file";
        snprintf(j->fail_msg, sizeof j->fail_msg, "The input file has no requests.");
        goto out;
    }
    if (!j->resume) {
        /* a fresh start (also a batch that died while validating): empty results */
        int f1 = open(j->out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        int f2 = open(j->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (f1 >= 0) close(f1);
        if (f2 >= 0) close(f2);
    }
    j->out_fd = open(j->out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    j->err_fd = open(j->err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (j->out_fd < 0 || j->err_fd < 0) {
        j->fail_code = "server_error";
        snprintf(j->fail_msg, sizeof j->fail_msg, "Cannot open the result files.");
        goto out;
    }
    if (!j->resume) {
        if (errs.n && batch_store_append(j->err_fd, errs.p, errs.n, &m)) {
            j->fail_code = "server_error";
            snprintf(j->fail_msg, sizeof j->fail_msg, "Cannot write the error file.");
            goto out;
        }
        j->n_fail = j->n_invalid;
    } else {
        /* resume: every result already written is done (torn last lines cut) */
        for (int f = 0; f < 2; f++) {
            buf_t r = {0};
            batch_store_trim(f ? j->err_path : j->out_path, &r, &m);
            size_t a0 = 0;
            for (size_t i = 0; i < r.n; i++) {
                if (r.p[i] != '\n') continue;
                char id[128];
                int is_result = batch_result_custom_id(r.p + a0, i - a0, id);
                a0 = i + 1;
                if (f) j->n_fail++;
                if (!is_result) continue;
                int k = idset_find(&ids, j->lines, id, -1);
                if (k >= 0 && j->lines[k].st != L_DONE) {
                    j->lines[k].st = L_DONE;
                    if (!f) j->n_ok++;
                } else if (!f) {
                    j->n_ok++; /* (cannot happen: a result is written once) */
                }
            }
            buf_free(&r);
        }
    }
out:
    free(ids.slot);
    buf_free(&in);
    buf_free(&errs);
}

static void load_done(uv_work_t *w, int status)
{
    ljob_t *j = (ljob_t *)w;
    api_t *a = j->a;
    batch_t *x = j->x;
    x->loading = 0;
    x->lines = j->lines;
    x->n_lines = j->n_lines;
    x->out_fd = j->out_fd;
    x->err_fd = j->err_fd;
    if (a->batches->stopping) {
        lines_free(x);
    } else if (j->fail_code || status) {
        fail_batch(a, x, j->fail_code ? j->fail_code : "server_error", j->fail_msg);
    } else {
        x->total = j->n_lines + j->n_invalid;
        x->n_ok = j->n_ok;
        x->n_fail = j->n_fail;
        if (x->st == B_VALIDATING) {
            x->st = B_IN_PROGRESS;
            x->in_progress_at = time_now_unix();
            persist(a, x);
        }
        maybe_done(a, x);
        pump(a->batches);
    }
    free(j);
    api_work_done(a);
}

static void load(api_t *a, batch_t *x)
{
    ljob_t *j = calloc(1, sizeof *j);
    if (!j) {
        fail_batch(a, x, "server_error", "out of memory");
        return;
    }
    j->a = a;
    j->x = x;
    j->resume = x->st != B_VALIDATING;
    j->max_lines = (long)a->set->batch_max_lines;
    files_path(a, x->input_file_id, ".jsonl", j->in_path, sizeof j->in_path);
    batch_path(a, x, ".out", j->out_path, sizeof j->out_path);
    batch_path(a, x, ".err", j->err_path, sizeof j->err_path);
    x->loading = 1;
    if (uv_queue_work(a->loop, &j->w, load_work, load_done)) {
        x->loading = 0;
        free(j);
        fail_batch(a, x, "server_error", "cannot queue the input read");
        return;
    }
    a->n_work++;
}

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
        persist(a, x);
        respond_batch(r, x);
        load(a, x);
    }
    cJSON_Delete(root);
}

static void h_cancel(api_t *a, srv_req_t *r, batch_t *x)
{
    if (x->st != B_VALIDATING && x->st != B_IN_PROGRESS && x->st != B_CANCELLING) {
        reply_error(r, 409, "invalid_request_error", "conflict", NULL,
                    "Cannot cancel a batch with status '%s'.", STATE[x->st]);
        return;
    }
    if (x->st != B_CANCELLING) {
        x->st = B_CANCELLING;
        x->cancelling_at = time_now_unix();
        persist(a, x);
        for (int i = 0; i < x->n_lines; i++) {
            bline_t *l = &x->lines[i];
            if (l->st != L_RUNNING || !l->r) continue;
            srv_req_t *lr = l->r;
            l->r = NULL;
            l->st = L_TODO;
            x->running--;
            a->batches->running--;
            srv_local_abort(lr); /* line_done never comes */
        }
    }
    respond_batch(r, x); /* cancelling: the client polls for cancelled */
    finish(a, x);        /* at once unless results are still being written */
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
    if (files_check_on(a, r) < 0) return;
    const http_req_t *h = srv_req_http(r);
    char owner[API_OWNER_LEN + 1];
    api_owner_of(tn, h, owner);
    if (!rest.n) {
        if (h->method == HTTP_POST)
            h_create(a, r, owner);
        else
            h_list(a, r, owner);
        return;
    }
    size_t idn = 0;
    while (idn < rest.n && rest.p[idn] != '/')
        idn++;
    int cancel = idn < rest.n;
    if (cancel && (rest.n - idn != 7 || memcmp(rest.p + idn, "/cancel", 7))) {
        reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                    "Unknown request URL under /v1/batches/: use /v1/batches/{id} or "
                    "/v1/batches/{id}/cancel.");
        return;
    }
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
        active_n += active(x);
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

/* ---- lifecycle ---- */

static long num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
}

static void str_into(const cJSON *o, const char *k, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsString(v)) snprintf(out, size, "%s", v->valuestring);
}

static char *str_dup(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

static char *obj_dup(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsObject(v) ? cJSON_PrintUnformatted(v) : NULL;
}

static batch_t *batch_from_json(batches_t *bs, const cJSON *o)
{
    char st[24] = "";
    str_into(o, "status", st, sizeof st);
    int k = -1;
    for (int i = 0; i < (int)(sizeof STATE / sizeof STATE[0]); i++)
        if (!strcmp(st, STATE[i])) k = i;
    batch_t *x = calloc(1, sizeof *x);
    if (!x || k < 0) {
        free(x);
        return NULL;
    }
    x->bs = bs;
    x->out_fd = x->err_fd = -1;
    x->st = (bstate_t)k;
    str_into(o, "id", x->id, sizeof x->id);
    str_into(o, "owner", x->owner, sizeof x->owner);
    str_into(o, "input_file_id", x->input_file_id, sizeof x->input_file_id);
    str_into(o, "endpoint", x->endpoint, sizeof x->endpoint);
    str_into(o, "output_file_id", x->output_file_id, sizeof x->output_file_id);
    str_into(o, "error_file_id", x->error_file_id, sizeof x->error_file_id);
    x->created_at = num(o, "created_at");
    x->in_progress_at = num(o, "in_progress_at");
    x->expires_at = num(o, "expires_at");
    x->finalizing_at = num(o, "finalizing_at");
    x->completed_at = num(o, "completed_at");
    x->failed_at = num(o, "failed_at");
    x->expired_at = num(o, "expired_at");
    x->cancelling_at = num(o, "cancelling_at");
    x->cancelled_at = num(o, "cancelled_at");
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(o, "request_counts");
    x->total = (int)num(rc, "total");
    x->n_ok = (int)num(rc, "completed");
    x->n_fail = (int)num(rc, "failed");
    x->errors = obj_dup(o, "errors");
    x->metadata = obj_dup(o, "metadata");
    x->auth = str_dup(o, "auth");
    x->xns = str_dup(o, "xns");
    if (!x->id[0] || !x->owner[0] || !x->endpoint[0]) {
        batch_free(x);
        return NULL;
    }
    return x;
}

static void list_insert(batches_t *bs, batch_t *x)
{
    batch_t **pp = &bs->list;
    while (*pp && ((*pp)->created_at > x->created_at ||
                   ((*pp)->created_at == x->created_at && strcmp((*pp)->id, x->id) > 0)))
        pp = &(*pp)->next;
    x->next = *pp;
    *pp = x;
}

int batches_init(api_t *a, bar_msg_t *msg)
{
    batches_t *bs = calloc(1, sizeof *bs);
    if (!bs) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    bs->a = a;
    a->batches = bs;
    if (!a->files_on) return 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/batches", a->set->data_dir);
    DIR *d = opendir(dir);
    if (!d) return bar_fail(msg, BAR_ERR_IO, "cannot read %s", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json")) continue;
        char path[API_PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        buf_t b = {0};
        bar_msg_t m = {{0}};
        cJSON *o = NULL;
        batch_t *x = NULL;
        if (!batch_store_read(path, &b, &m) && (o = cJSON_ParseWithLength(b.p, b.n)))
            x = batch_from_json(bs, o);
        if (x)
            list_insert(bs, x);
        else
            fprintf(stderr, "barista: skipping unreadable batch record %s\n", path);
        cJSON_Delete(o);
        buf_free(&b);
    }
    closedir(d);
    return 0;
}

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
        if (active(x)) {
            load(a, x);
            resumed++;
        }
    if (resumed) fprintf(stderr, "barista: resuming %d unfinished batch(es)\n", resumed);
}

void batches_stop(api_t *a)
{
    batches_t *bs = a->batches;
    if (!bs || bs->stopping) return;
    bs->stopping = 1;
    for (batch_t *x = bs->list; x; x = x->next)
        for (int i = 0; i < x->n_lines; i++) {
            bline_t *l = &x->lines[i];
            if (l->st != L_RUNNING || !l->r) continue;
            srv_req_t *lr = l->r;
            l->r = NULL;
            l->st = L_TODO;
            x->running--;
            bs->running--;
            srv_local_abort(lr);
        }
    if (bs->started) uv_close((uv_handle_t *)&bs->tick, NULL);
}

void batches_free(api_t *a)
{
    batches_t *bs = a->batches;
    if (!bs) return;
    while (bs->list) {
        batch_t *x = bs->list;
        bs->list = x->next;
        batch_free(x);
    }
    free(bs);
    a->batches = NULL;
}
