/* batches_state.c — a batch's state on disk and in memory: the batch object
 * (its JSON, public and private), the state file, reading a batch's input
 * when it starts or resumes, and loading every batch record at start-up.
 *
 * Durability (batch/batch_store.h): the state file is rewritten atomically
 * on every state change (results are appended by batches_run.c). At start
 * every unfinished batch is loaded again: the input is re-read, the
 * custom_ids already in its result files are skipped, so a line answered
 * twice (running when the process died) yields one result. Reading the
 * input runs on the libuv thread pool.
 *
 * Not for: running lines (batches_run.c), the HTTP endpoints (batches.c). */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "api/api_int.h"
#include "api/batches_int.h"
#include "api/reply.h"
#include "batch/batch_store.h"
#include "util/timeutil.h"

const char *const batch_state_name[8] = {"validating", "failed",  "in_progress", "finalizing",
                                         "completed",  "expired", "cancelling",  "cancelled"};

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
void batch_json(buf_t *b, const batch_t *x, int private)
{
    buf_puts(b, "{\"id\":");
    oai_json_string(b, x->id, strlen(x->id));
    buf_puts(b, ",\"object\":\"batch\",\"endpoint\":");
    oai_json_string(b, x->endpoint, strlen(x->endpoint));
    buf_printf(b, ",\"errors\":%s,\"input_file_id\":", x->errors ? x->errors : "null");
    oai_json_string(b, x->input_file_id, strlen(x->input_file_id));
    buf_printf(b, ",\"completion_window\":\"24h\",\"status\":\"%s\"", batch_state_name[x->st]);
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

void batch_path(const api_t *a, const batch_t *x, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/batches/%s%s", a->set->data_dir, x->id, suffix);
}

/* Rewrite the state file (small; on the loop). */
void batch_persist(api_t *a, const batch_t *x)
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

void batch_lines_free(batch_t *x)
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

void batch_free(batch_t *x)
{
    batch_lines_free(x);
    free(x->errors);
    free(x->metadata);
    free(x->auth);
    free(x->xns);
    free(x);
}

int batch_active(const batch_t *x)
{
    return x->st == B_VALIDATING || x->st == B_IN_PROGRESS || x->st == B_FINALIZING ||
           x->st == B_CANCELLING;
}

void batches_work_done(api_t *a)
{
    a->n_work--;
    if (a->destroyed && a->on_last_gen) a->on_last_gen(a);
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
        batch_lines_free(x);
    } else if (j->fail_code || status) {
        batch_fail(a, x, j->fail_code ? j->fail_code : "server_error", j->fail_msg);
    } else {
        x->total = j->n_lines + j->n_invalid;
        x->n_ok = j->n_ok;
        x->n_fail = j->n_fail;
        if (x->st == B_VALIDATING) {
            x->st = B_IN_PROGRESS;
            x->in_progress_at = time_now_unix();
            batch_persist(a, x);
        }
        batch_maybe_done(a, x);
        batches_pump(a->batches);
    }
    free(j);
    batches_work_done(a);
}

void batch_load(api_t *a, batch_t *x)
{
    ljob_t *j = calloc(1, sizeof *j);
    if (!j) {
        batch_fail(a, x, "server_error", "out of memory");
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
        batch_fail(a, x, "server_error", "cannot queue the input read");
        return;
    }
    a->n_work++;
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
    for (int i = 0; i < (int)(sizeof batch_state_name / sizeof batch_state_name[0]); i++)
        if (!strcmp(st, batch_state_name[i])) k = i;
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

/* One batches/<id>.json record read at start-up (batch_store_each_record). */
static int take_batch(void *ud, const cJSON *o)
{
    batches_t *bs = ud;
    batch_t *x = o ? batch_from_json(bs, o) : NULL;
    if (!x) return -1;
    list_insert(bs, x);
    return 0;
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
    return batch_store_each_record(dir, "batch", take_batch, bs, msg);
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
