/* server_local.c — requests without a socket (srv_local_create, see
 * server.h): a handler answers one as it answers a connection's, and the
 * reply is collected and handed to the caller's callback (batch lines,
 * Prefer: respond-async). Not for: connections (server.c). Loop thread. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/server_int.h"
#include "util/timeutil.h"

static void local_mem_free(srv_local_t *l)
{
    buf_free(&l->h.url);
    buf_free(&l->h.hbuf);
    buf_free(&l->h.body);
    buf_free(&l->head);
    buf_free(&l->body);
    free(l);
}

static void on_local_closed(uv_handle_t *h)
{
    local_mem_free(h->data);
}

/* Free on a later loop turn: the handler that answered (or the caller that
 * aborted) may still read the request on its way out, as it may a
 * connection's. */
static void local_free(srv_local_t *l)
{
    uv_close((uv_handle_t *)&l->closer, on_local_closed);
}

srv_req_t *srv_local_create(uv_loop_t *loop, int method, const char *target,
                            const srv_header_t *hdrs, int n_hdrs, const char *body, size_t n,
                            srv_local_done_fn done, void *ud)
{
    if (n_hdrs > HTTP_MAX_HEADERS) return NULL;
    srv_local_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->loop = loop;
    l->done = done;
    l->ud = ud;
    l->active = 1;
    l->req.local = l;
    l->req.t_start = time_now_mono();
    /* the API layer marks stages and fills fields as for any request; a local
     * one takes the caller's id, or none until srv_local_log makes one */
    const char *rid = NULL;
    for (int i = 0; i < n_hdrs && !rid; i++)
        if (!strcasecmp(hdrs[i].name, "x-request-id")) rid = hdrs[i].value;
    obs_trace_begin(&l->req.obs, l->req.t_start, rid, rid ? strlen(rid) : 0, NULL);
    http_req_t *h = &l->h;
    h->method = method;
    h->http_major = h->http_minor = 1;
    size_t tn = strlen(target);
    const char *q = memchr(target, '?', tn);
    h->path_len = q ? (size_t)(q - target) : tn;
    int bad = buf_append(&h->url, target, tn) || buf_append(&h->body, body ? body : "", n);
    /* hbuf: name NUL value NUL ...; a value offset of 0 means "empty" (http.c) */
    for (int i = 0; i < n_hdrs && !bad; i++) {
        http_hdr_t *x = &h->hdrs[h->n_hdrs++];
        x->name_off = h->hbuf.n;
        x->name_len = strlen(hdrs[i].name);
        bad = buf_append(&h->hbuf, hdrs[i].name, x->name_len + 1);
        x->value_off = h->hbuf.n;
        x->value_len = strlen(hdrs[i].value);
        bad = bad || buf_append(&h->hbuf, hdrs[i].value, x->value_len + 1);
    }
    if (bad) {
        local_mem_free(l);
        return NULL;
    }
    uv_timer_init(loop, &l->closer);
    l->closer.data = l;
    if (!h->body.p) h->body.n = 0;
    return &l->req;
}

int srv_req_is_local(const srv_req_t *r)
{
    return r->local != NULL;
}

int srv_local_finish(srv_local_t *l)
{
    l->active = 0;
    if (l->alog && !l->orphan) {
        obs_trace_end(&l->req.obs, time_now_mono(), l->req.status, l->body.n);
        obs_alog_write(l->alog, &l->req.obs, NULL, http_req_method_name(&l->h), l->h.url.p,
                       l->h.path_len);
    }
    if (!l->orphan && l->done)
        l->done(l->ud, l->req.status, l->head.p ? l->head.p : "", l->body.p ? l->body.p : "",
                l->body.n);
    local_free(l);
    return 0;
}

int srv_local_head(srv_local_t *l, int status, const char *ct, const char *extra)
{
    l->req.status = status;
    buf_clear(&l->head);
    int bad = ct && buf_printf(&l->head, "Content-Type: %s\r\n", ct);
    if (extra) bad = bad || buf_puts(&l->head, extra);
    return bad ? BAR_ERR_NOMEM : 0;
}

void srv_local_abort(srv_req_t *r)
{
    srv_local_t *l = r->local;
    if (!l || !l->active || l->orphan) return;
    l->orphan = 1;
    if (r->on_abort) {
        srv_abort_fn f = r->on_abort;
        void *user = r->user;
        r->on_abort = NULL;
        r->user = NULL;
        l->active = 0;
        f(user, r);
        local_free(l);
    }
}
