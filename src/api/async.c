/* async.c — `Prefer: respond-async` (RFC 7240) on POST /v1/chat/completions
 * and /v1/completions: the request runs as a local request (server.h)
 * through the same pipeline, the client gets 202 Accepted with
 * `Location: /v1/async/{id}` at once, and GET /v1/async/{id} answers 202
 * (Retry-After) while it runs, then the finished reply with its own status
 * and headers. Results are kept in memory for --async-ttl-s after they
 * finish (a restart loses them). Only the owner that asked (api_owner_of)
 * sees a result; anyone else gets 404.
 *
 * Not for: batches (batches.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "api/reply.h"
#include "util/timeutil.h"

#define ASYNC_MAX 10000 /* results kept at once (running or finished) */

typedef struct aitem aitem_t;
struct aitem {
    aitem_t *next;
    async_tab_t *t;
    char id[48];
    char owner[API_OWNER_LEN + 1];
    long created;
    srv_req_t *r; /* running */
    int done, status;
    char *ct, *extra, *body;
    size_t n;
    double expires; /* monotonic, once done */
};

struct async_tab {
    api_t *a;
    aitem_t *list;
    int n;
    uv_timer_t gc;
    int stopping;
};

int async_wanted(const http_req_t *h)
{
    http_slice_t v = http_req_header(h, "prefer");
    if (!v.p) return 0;
    /* preferences are comma-separated; each may carry parameters after ';' or '=' */
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.n && v.p[i] != ',' && v.p[i] != ';' && v.p[i] != '=' && v.p[i] != ' ')
            i++;
        if (i - s == 13 && !strncasecmp(v.p + s, "respond-async", 13)) return 1;
        while (i < v.n && v.p[i] != ',')
            i++;
    }
    return 0;
}

static void item_free(aitem_t *x)
{
    free(x->ct);
    free(x->extra);
    free(x->body);
    free(x);
}

static void on_done(void *ud, int status, const char *headers, const char *body, size_t n)
{
    aitem_t *x = ud;
    x->r = NULL;
    x->done = 1;
    x->status = status;
    x->expires = time_now_mono() + (double)x->t->a->set->async_ttl_s;
    /* headers: "Content-Type: X\r\n" first, then the handler's lines */
    const char *ct = "application/json";
    size_t ctn = strlen(ct);
    const char *rest = headers;
    if (!strncasecmp(headers, "Content-Type: ", 14)) {
        const char *e = strstr(headers, "\r\n");
        if (e) {
            ct = headers + 14;
            ctn = (size_t)(e - ct);
            rest = e + 2;
        }
    }
    x->ct = strndup(ct, ctn);
    x->extra = strdup(rest);
    x->body = malloc(n + 1);
    if (x->body) {
        memcpy(x->body, body, n);
        x->body[n] = '\0';
        x->n = n;
    }
    if (!x->ct || !x->extra || !x->body) { /* out of memory: say so when asked */
        x->status = 500;
        free(x->body);
        x->body = NULL;
        x->n = 0;
    }
}

static void on_gc(uv_timer_t *t)
{
    async_tab_t *at = t->data;
    double now = time_now_mono();
    for (aitem_t **pp = &at->list; *pp;) {
        aitem_t *x = *pp;
        if (x->done && x->expires < now) {
            *pp = x->next;
            at->n--;
            item_free(x);
        } else {
            pp = &x->next;
        }
    }
}

static async_tab_t *tab(api_t *a)
{
    if (a->async) return a->async;
    async_tab_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->a = a;
    uv_timer_init(a->loop, &t->gc);
    t->gc.data = t;
    uv_unref((uv_handle_t *)&t->gc);
    uv_timer_start(&t->gc, on_gc, 1000, 1000);
    a->async = t;
    return t;
}

static void status_json(buf_t *b, const aitem_t *x, const char *status)
{
    buf_printf(b,
               "{\"id\":\"%s\",\"object\":\"async.request\",\"status\":\"%s\",\"created_at\":%ld,"
               "\"location\":\"/v1/async/%s\"}\n",
               x->id, status, x->created, x->id);
}

void async_start(api_t *a, srv_req_t *r, oai_kind_t kind, api_tenant_t *tn)
{
    const http_req_t *h = srv_req_http(r);
    async_tab_t *t = tab(a);
    if (!t || t->stopping) {
        reply_error(r, 503, "server_error", NULL, NULL, "The server cannot take work now.");
        return;
    }
    if (t->n >= ASYNC_MAX) {
        oai_err_t e;
        oai_err(&e, 503, "server_error", "overloaded", NULL,
                "Too many asynchronous requests are kept (%d); retry later.", ASYNC_MAX);
        reply_send_error(r, &e);
        return;
    }
    /* the same request without the preference and the framing headers */
    srv_header_t hs[HTTP_MAX_HEADERS];
    char *names[HTTP_MAX_HEADERS], *vals[HTTP_MAX_HEADERS];
    int n = 0, bad = 0;
    for (int i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *x = &h->hdrs[i];
        const char *nm = h->hbuf.p + x->name_off;
        static const char *const drop[] = {"prefer",     "content-length", "transfer-encoding",
                                           "connection", "expect",         NULL};
        int skip = 0;
        for (int d = 0; drop[d]; d++)
            skip |= x->name_len == strlen(drop[d]) && !strncasecmp(nm, drop[d], x->name_len);
        if (skip) continue;
        names[n] = strndup(nm, x->name_len);
        vals[n] = strndup(x->value_off ? h->hbuf.p + x->value_off : "", x->value_len);
        if (!names[n] || !vals[n]) bad = 1;
        hs[n] = (srv_header_t){names[n] ? names[n] : "", vals[n] ? vals[n] : ""};
        n++;
    }
    aitem_t *x = bad ? NULL : calloc(1, sizeof *x);
    srv_req_t *lr = NULL;
    if (x) {
        x->t = t;
        reply_make_id(&a->rng, x->id, sizeof x->id, "async-");
        api_owner_of(tn, h, x->owner);
        x->created = time_now_unix();
        char target[64];
        snprintf(target, sizeof target, "%s",
                 kind == OAI_CHAT ? "/v1/chat/completions" : "/v1/completions");
        lr = srv_local_create(a->loop, HTTP_POST, target, hs, n, h->body.p, h->body.n, on_done, x);
    }
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(vals[i]);
    }
    if (!lr) {
        free(x);
        reply_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    x->r = lr;
    /* its access-log line carries the id of the request that made it (the 202's) */
    OBS_TRACE_SET(srv_req_obs(lr), id, srv_req_obs(r)->id);
    srv_local_log(lr, a->srv);
    x->next = t->list;
    t->list = x;
    t->n++;
    buf_t b = {0};
    status_json(&b, x, "in_progress");
    char extra[160];
    snprintf(extra, sizeof extra,
             "Location: /v1/async/%s\r\nPreference-Applied: respond-async\r\nRetry-After: 1\r\n",
             x->id);
    srv_respond(r, 202, "application/json", b.p ? b.p : "", b.n, extra);
    buf_free(&b);
    srv_req_set_label(lr, kind == OAI_CHAT ? "chat_completions" : "completions");
    pipeline_handle(a, lr, kind, tn);
}

void async_handle(api_t *a, srv_req_t *r, http_slice_t id, const api_tenant_t *tn)
{
    char owner[API_OWNER_LEN + 1];
    api_owner_of(tn, srv_req_http(r), owner);
    aitem_t *x = a->async ? a->async->list : NULL;
    while (x && !(strlen(x->id) == id.n && !memcmp(x->id, id.p, id.n) && !strcmp(x->owner, owner)))
        x = x->next;
    if (!x) {
        reply_error(r, 404, "invalid_request_error", "not_found", NULL,
                    "No such asynchronous request: '%.*s' (results are kept for %lld s).",
                    (int)(id.n > 100 ? 100 : id.n), id.p, a->set->async_ttl_s);
        return;
    }
    if (!x->done) {
        buf_t b = {0};
        status_json(&b, x, "in_progress");
        srv_respond(r, 202, "application/json", b.p ? b.p : "", b.n, "Retry-After: 1\r\n");
        buf_free(&b);
        return;
    }
    if (!x->body) {
        reply_error(r, 500, "server_error", NULL, NULL, "The result was lost (out of memory).");
        return;
    }
    srv_respond(r, x->status, x->ct, x->body, x->n, x->extra);
}

void async_stop(api_t *a)
{
    async_tab_t *t = a->async;
    if (!t || t->stopping) return;
    t->stopping = 1;
    for (aitem_t *x = t->list; x; x = x->next)
        if (x->r) {
            srv_req_t *lr = x->r;
            x->r = NULL;
            srv_local_abort(lr);
        }
    uv_close((uv_handle_t *)&t->gc, NULL);
}

void async_free(api_t *a)
{
    async_tab_t *t = a->async;
    if (!t) return;
    while (t->list) {
        aitem_t *x = t->list;
        t->list = x->next;
        item_free(x);
    }
    free(t);
    a->async = NULL;
}
