/* files.c — the Files API as the Batch API needs it (OpenAI's shapes):
 * POST /v1/files (multipart/form-data: purpose=batch, file), GET /v1/files,
 * GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}.
 *
 * Files live under --data-dir (batch/batch_store.h has the layout); the list
 * of files is kept in memory, loaded at start. Bytes are written and read on
 * the libuv thread pool (an upload is written to a temporary file, fsynced and
 * renamed before it is listed); the small metadata file is written on the
 * loop. Every file belongs to the owner that uploaded it (api_owner_of);
 * another owner's file answers 404, as a missing one does.
 *
 * Not for: batches (batches.c), multipart syntax (multipart.c). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_int.h"
#include "api/multipart.h"
#include "api/reply.h"
#include "batch/batch_store.h"
#include "util/timeutil.h"

void api_owner_of(const api_tenant_t *tn, const http_req_t *h, char out[API_OWNER_LEN + 1])
{
    http_slice_t sub = http_req_header(h, "x-cache-namespace");
    size_t nn = strlen(tn->name), n = nn + 1 + (sub.p ? sub.n : 0);
    char *s = malloc(n ? n : 1);
    uint8_t d[32] = {0};
    if (s) {
        memcpy(s, tn->name, nn + 1); /* the NUL keeps ("ab","c") apart from ("a","bc") */
        if (sub.p) memcpy(s + nn + 1, sub.p, sub.n);
        tenant_sha256(s, n, d);
        free(s);
    } else {
        tenant_sha256(tn->name, nn, d); /* out of memory: the tenant without its sub-namespace */
    }
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void files_path(const api_t *a, const char *id, const char *suffix, char *out, size_t size)
{
    snprintf(out, size, "%s/files/%s%s", a->set->data_dir, id, suffix);
}

int files_check_on(api_t *a, srv_req_t *r)
{
    if (a->files_on) return 0;
    reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                "The Files and Batch API are off: start barista with --data-dir DIR.");
    return -1;
}

static void file_json(buf_t *b, const api_file_t *f)
{
    buf_puts(b, "{\"id\":");
    oai_json_string(b, f->id, strlen(f->id));
    buf_printf(b, ",\"object\":\"file\",\"bytes\":%lld,\"created_at\":%ld,\"filename\":", f->bytes,
               f->created);
    oai_json_string(b, f->filename, strlen(f->filename));
    buf_printf(b,
               ",\"purpose\":\"%s\",\"status\":\"processed\",\"expires_at\":null,"
               "\"status_details\":null}",
               f->purpose);
}

static void respond_buf(srv_req_t *r, int status, buf_t *b)
{
    if (!b->p) {
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
    } else {
        srv_respond(r, status, "application/json", b->p, b->n, NULL);
    }
    buf_free(b);
}

/* ---- the list ---- */

api_file_t *files_find(api_t *a, const char *id, const char *owner)
{
    for (api_file_t *f = a->files; f; f = f->next)
        if (!strcmp(f->id, id) && (!owner || !strcmp(f->owner, owner))) return f;
    return NULL;
}

static int owner_count(const api_t *a, const char *owner)
{
    int n = 0;
    for (const api_file_t *f = a->files; f; f = f->next)
        n += !strcmp(f->owner, owner);
    return n;
}

/* Insert keeping the list newest first (then by id, for a stable cursor). */
static void list_insert(api_t *a, api_file_t *f)
{
    api_file_t **pp = &a->files;
    while (*pp && ((*pp)->created > f->created ||
                   ((*pp)->created == f->created && strcmp((*pp)->id, f->id) > 0)))
        pp = &(*pp)->next;
    f->next = *pp;
    *pp = f;
}

static int meta_write(api_t *a, const api_file_t *f, bar_msg_t *msg)
{
    buf_t b = {0};
    file_json(&b, f);
    if (b.n) b.n--; /* reopen the object: the private members follow */
    buf_puts(&b, ",\"owner\":");
    oai_json_string(&b, f->owner, strlen(f->owner));
    buf_printf(&b, ",\"lines\":%ld}\n", f->lines);
    char path[API_PATH_MAX];
    files_path(a, f->id, ".json", path, sizeof path);
    int rc = b.p ? batch_store_write(path, b.p, b.n, msg) : BAR_ERR_NOMEM;
    buf_free(&b);
    return rc;
}

int files_add(api_t *a, const api_file_t *src, bar_msg_t *msg)
{
    api_file_t *f = malloc(sizeof *f);
    if (!f) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    *f = *src;
    int rc = meta_write(a, f, msg);
    if (rc) {
        free(f);
        return rc;
    }
    list_insert(a, f);
    return 0;
}

static int str_member(const cJSON *o, const char *k, char *out, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size) return -1;
    snprintf(out, size, "%s", v->valuestring);
    return 0;
}

/* One files/<id>.json record read at start-up (batch_store_each_record). */
static int take_file(void *ud, const cJSON *o)
{
    api_t *a = ud;
    api_file_t f = {0};
    if (!o || str_member(o, "id", f.id, sizeof f.id) ||
        str_member(o, "owner", f.owner, sizeof f.owner) ||
        str_member(o, "filename", f.filename, sizeof f.filename) ||
        str_member(o, "purpose", f.purpose, sizeof f.purpose))
        return -1;
    f.bytes = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "bytes"));
    f.lines = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "lines"));
    f.created = (long)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "created_at"));
    api_file_t *x = malloc(sizeof *x);
    if (x) {
        *x = f;
        list_insert(a, x);
    }
    return 0;
}

int files_init(api_t *a, bar_msg_t *msg)
{
    if (!a->set->data_dir[0]) return 0;
    int rc = batch_store_open(a->set->data_dir, msg);
    if (rc) return rc;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/files", a->set->data_dir);
    if ((rc = batch_store_each_record(dir, "file", take_file, a, msg))) return rc;
    a->files_on = 1;
    return 0;
}

void files_free(api_t *a)
{
    while (a->files) {
        api_file_t *f = a->files;
        a->files = f->next;
        free(f);
    }
}

/* ---- disk jobs on the thread pool ---- */

typedef struct {
    uv_work_t w;
    api_t *a;
    srv_req_t *r; /* NULL once the client left */
    api_file_t f;
    buf_t data; /* upload: the bytes to write; content: the bytes read */
    char path[API_PATH_MAX];
    int rc;
    bar_msg_t msg;
} fjob_t;

static void fjob_abort(void *user, srv_req_t *r)
{
    fjob_t *j = user;
    (void)r;
    j->r = NULL;
}

static void upload_work(uv_work_t *w)
{
    fjob_t *j = (fjob_t *)w;
    j->rc = batch_store_write(j->path, j->data.p ? j->data.p : "", j->data.n, &j->msg);
}

static void upload_done(uv_work_t *w, int status)
{
    fjob_t *j = (fjob_t *)w;
    api_t *a = j->a;
    a->n_work--;
    buf_free(&j->data);
    if (!j->rc && status == 0) j->rc = files_add(a, &j->f, &j->msg);
    if (j->r) {
        srv_req_set_user(j->r, NULL, NULL, NULL);
        if (j->rc) {
            reply_error(j->r, 500, "server_error", NULL, NULL, "Could not store the file: %s",
                        j->msg.text);
        } else {
            buf_t b = {0};
            file_json(&b, &j->f);
            buf_puts(&b, "\n");
            respond_buf(j->r, 200, &b);
        }
    }
    if (j->rc) unlink(j->path);
    free(j);
}

static long count_lines(const char *p, size_t n)
{
    long k = 0;
    size_t s = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '\n') {
            int blank = 1;
            for (size_t x = s; x < i && blank; x++)
                blank = p[x] == ' ' || p[x] == '\t' || p[x] == '\r';
            k += !blank;
            s = i + 1;
        }
    }
    return k;
}

static void h_upload(api_t *a, srv_req_t *r, const char *owner)
{
    const http_req_t *h = srv_req_http(r);
    http_slice_t boundary;
    const char *why = NULL;
    mp_part_t parts[MP_MAX_PARTS];
    int n = 0;
    if (mp_boundary(http_req_header(h, "content-type"), &boundary, &why) < 0 ||
        mp_parse(h->body.p ? h->body.p : "", h->body.n, boundary, parts, MP_MAX_PARTS, &n, &why) <
            0) {
        reply_error(r, 400, "invalid_request_error", "invalid_multipart", NULL,
                    "Malformed multipart/form-data body: %s.", why);
        return;
    }
    const mp_part_t *purpose = mp_find(parts, n, "purpose");
    const mp_part_t *file = mp_find(parts, n, "file");
    if (!purpose) {
        reply_error(r, 400, "invalid_request_error", "missing_required_parameter", "purpose",
                    "Missing required parameter: 'purpose'.");
        return;
    }
    if (purpose->data.n != 5 || memcmp(purpose->data.p, "batch", 5)) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", "purpose",
                    "Invalid 'purpose': this server takes files for 'batch' only.");
        return;
    }
    if (!file || !file->filename.p) {
        reply_error(r, 400, "invalid_request_error", "missing_required_parameter", "file",
                    "Missing required parameter: 'file' (a file part with a filename).");
        return;
    }
    if ((long long)file->data.n > a->set->batch_max_file_bytes) {
        reply_error(r, 413, "invalid_request_error", "file_too_large", "file",
                    "The file is %zu bytes; the limit is %lld (--batch-max-file-bytes).",
                    file->data.n, a->set->batch_max_file_bytes);
        return;
    }
    if (owner_count(a, owner) >= a->set->batch_max_files) {
        reply_error(r, 400, "invalid_request_error", "too_many_files", NULL,
                    "This key already keeps %lld files, the limit (--batch-max-files); delete "
                    "some first.",
                    a->set->batch_max_files);
        return;
    }
    fjob_t *j = calloc(1, sizeof *j);
    if (!j || buf_append(&j->data, file->data.p ? file->data.p : "", file->data.n)) {
        if (j) buf_free(&j->data);
        free(j);
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    j->a = a;
    j->r = r;
    reply_make_id(&a->rng, j->f.id, sizeof j->f.id, "file-");
    snprintf(j->f.owner, sizeof j->f.owner, "%s", owner);
    size_t fl =
        file->filename.n < sizeof j->f.filename ? file->filename.n : sizeof j->f.filename - 1;
    memcpy(j->f.filename, file->filename.p, fl);
    snprintf(j->f.purpose, sizeof j->f.purpose, "batch");
    j->f.bytes = (long long)file->data.n;
    j->f.lines = count_lines(file->data.p ? file->data.p : "", file->data.n);
    j->f.created = time_now_unix();
    files_path(a, j->f.id, ".jsonl", j->path, sizeof j->path);
    srv_req_set_user(r, j, fjob_abort, NULL);
    if (uv_queue_work(srv_req_loop(r), &j->w, upload_work, upload_done)) {
        srv_req_set_user(r, NULL, NULL, NULL);
        buf_free(&j->data);
        free(j);
        reply_error(r, 500, "server_error", NULL, NULL, "could not queue the write");
        return;
    }
    a->n_work++;
}

static void content_work(uv_work_t *w)
{
    fjob_t *j = (fjob_t *)w;
    j->rc = batch_store_read(j->path, &j->data, &j->msg);
}

static void content_done(uv_work_t *w, int status)
{
    fjob_t *j = (fjob_t *)w;
    j->a->n_work--;
    if (j->r) {
        srv_req_set_user(j->r, NULL, NULL, NULL);
        if (j->rc || status)
            reply_error(j->r, 500, "server_error", NULL, NULL, "Could not read the file: %s",
                        j->msg.text);
        else
            srv_respond(j->r, 200, "application/octet-stream", j->data.p ? j->data.p : "",
                        j->data.n, NULL);
    }
    buf_free(&j->data);
    free(j);
}

static void h_content(api_t *a, srv_req_t *r, const api_file_t *f)
{
    fjob_t *j = calloc(1, sizeof *j);
    if (!j) {
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    j->a = a;
    j->r = r;
    files_path(a, f->id, ".jsonl", j->path, sizeof j->path);
    srv_req_set_user(r, j, fjob_abort, NULL);
    if (uv_queue_work(srv_req_loop(r), &j->w, content_work, content_done)) {
        srv_req_set_user(r, NULL, NULL, NULL);
        free(j);
        reply_error(r, 500, "server_error", NULL, NULL, "could not queue the read");
        return;
    }
    a->n_work++;
}

static void h_delete(api_t *a, srv_req_t *r, api_file_t *f)
{
    char path[API_PATH_MAX];
    files_path(a, f->id, ".json", path, sizeof path);
    unlink(path); /* the record first: a crash between the two leaves no listed ghost */
    files_path(a, f->id, ".jsonl", path, sizeof path);
    unlink(path);
    for (api_file_t **pp = &a->files; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    buf_t b = {0};
    buf_puts(&b, "{\"id\":");
    oai_json_string(&b, f->id, strlen(f->id));
    buf_puts(&b, ",\"object\":\"file\",\"deleted\":true}\n");
    free(f);
    respond_buf(r, 200, &b);
}

/* ?limit=N&after=ID&order=asc|desc&purpose=P (unknown parameters ignored) */
static int query_get(http_slice_t q, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    size_t i = 0;
    while (i < q.n) {
        size_t e = i;
        while (e < q.n && q.p[e] != '&')
            e++;
        if (e - i > kl && !memcmp(q.p + i, key, kl) && q.p[i + kl] == '=') {
            size_t vn = e - i - kl - 1;
            if (vn >= size) return -1;
            memcpy(out, q.p + i + kl + 1, vn);
            out[vn] = '\0';
            return 1;
        }
        i = e + 1;
    }
    return 0;
}

static void h_list(api_t *a, srv_req_t *r, const char *owner)
{
    http_slice_t q = http_req_query(srv_req_http(r));
    char lim[16] = "", after[64] = "", purpose[32] = "", order[8] = "desc";
    long limit = 10000;
    if (query_get(q, "limit", lim, sizeof lim) < 0 ||
        query_get(q, "after", after, sizeof after) < 0 ||
        query_get(q, "purpose", purpose, sizeof purpose) < 0 ||
        query_get(q, "order", order, sizeof order) < 0 ||
        (strcmp(order, "asc") && strcmp(order, "desc"))) {
        reply_error(r, 400, "invalid_request_error", "invalid_value", NULL,
                    "Invalid query: limit (1-10000), after (a file id), order (asc|desc), "
                    "purpose.");
        return;
    }
    if (lim[0]) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || limit < 1 || limit > 10000) {
            reply_error(r, 400, "invalid_request_error", "invalid_value", "limit",
                        "Invalid 'limit': an integer from 1 to 10000.");
            return;
        }
    }
    /* the owner's files in the asked order */
    int n = 0;
    for (api_file_t *f = a->files; f; f = f->next)
        n += !strcmp(f->owner, owner) && (!purpose[0] || !strcmp(f->purpose, purpose));
    api_file_t **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) {
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    int k = 0;
    for (api_file_t *f = a->files; f; f = f->next)
        if (!strcmp(f->owner, owner) && (!purpose[0] || !strcmp(f->purpose, purpose))) v[k++] = f;
    int asc = !strcmp(order, "asc");
    int start = 0;
    if (after[0])
        for (int i = 0; i < n; i++)
            if (!strcmp(v[asc ? n - 1 - i : i]->id, after)) start = i + 1;
    buf_t b = {0};
    buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    int shown = 0;
    const char *first = NULL, *last = NULL;
    for (int i = start; i < n && shown < limit; i++, shown++) {
        api_file_t *f = v[asc ? n - 1 - i : i];
        if (shown) buf_puts(&b, ",");
        file_json(&b, f);
        if (!first) first = f->id;
        last = f->id;
    }
    buf_puts(&b, "],\"first_id\":");
    first ? oai_json_string(&b, first, strlen(first)) : buf_puts(&b, "null");
    buf_puts(&b, ",\"last_id\":");
    last ? oai_json_string(&b, last, strlen(last)) : buf_puts(&b, "null");
    buf_printf(&b, ",\"has_more\":%s}\n", start + shown < n ? "true" : "false");
    free(v);
    respond_buf(r, 200, &b);
}

int files_route_split(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn,
                      const char *base, const char *sub, api_collection_fn post,
                      api_collection_fn get, api_route_path_t *p)
{
    if (files_check_on(a, r) < 0) return 0;
    api_owner_of(tn, srv_req_http(r), p->owner);
    p->id = (http_slice_t){rest.p, 0};
    p->sub = 0;
    if (!rest.n) {
        (srv_req_http(r)->method == HTTP_POST ? post : get)(a, r, p->owner);
        return 0;
    }
    while (p->id.n < rest.n && rest.p[p->id.n] != '/')
        p->id.n++;
    size_t subn = strlen(sub);
    p->sub = p->id.n < rest.n;
    if (p->sub && (rest.n - p->id.n != subn || memcmp(rest.p + p->id.n, sub, subn))) {
        reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                    "Unknown request URL under %s/: use %s/{id} or %s/{id}%s.", base, base, base,
                    sub);
        return 0;
    }
    return 1;
}

void files_handle(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn)
{
    api_route_path_t p;
    if (!files_route_split(a, r, rest, tn, "/v1/files", "/content", h_upload, h_list, &p)) return;
    const http_req_t *h = srv_req_http(r);
    char id[64];
    size_t idn = p.id.n;
    int content = p.sub;
    api_file_t *f = NULL;
    if (idn < sizeof id) {
        memcpy(id, rest.p, idn);
        id[idn] = '\0';
        f = files_find(a, id, p.owner);
    }
    if (!f) {
        reply_error(r, 404, "invalid_request_error", "not_found", "file_id",
                    "No such File object: '%.*s'.", (int)(idn > 100 ? 100 : idn), rest.p);
        return;
    }
    if (content) {
        if (h->method != HTTP_GET && h->method != HTTP_HEAD) {
            reply_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                        "Use GET on /v1/files/{id}/content.");
            return;
        }
        h_content(a, r, f);
        return;
    }
    if (h->method == HTTP_DELETE) {
        h_delete(a, r, f);
        return;
    }
    buf_t b = {0};
    file_json(&b, f);
    buf_puts(&b, "\n");
    respond_buf(r, 200, &b);
}
