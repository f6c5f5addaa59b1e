/* upstream_http.c — libcurl multi on a libuv loop (see upstream_http.h).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION → one
 * uv_poll_t per socket) and when to call it back (CURLMOPT_TIMERFUNCTION →
 * one uv_timer_t); readiness goes back through curl_multi_socket_action, and
 * finished transfers are collected with curl_multi_info_read afterwards.
 *
 * curl refuses curl_multi_add_handle / curl_multi_remove_handle from inside
 * its own callbacks (the write callback delivers data to the backend, which
 * may start or abort transfers), so while curl is running (h->depth > 0)
 * starts and aborts are only marked, and `flush` applies them after curl
 * returns. An aborted transfer is never called back again. Not for: request
 * or response meaning. */
#include "upstream/upstream_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "util/dlist.h"

#define IDLE_EASY 16 /* easy handles kept for reuse */

struct uphttp_xfer {
    uphttp_t *h;
    uphttp_xfer_t *prev, *next; /* h->xfers */
    CURL *e;
    struct curl_slist *hdrs;
    char *body;
    char *auth; /* "Authorization: Bearer ..." (wiped before free) */
    uphttp_req_t r;
    long status;
    int status_sent;
    int in_multi; /* added to the multi handle */
    int aborted;  /* uphttp_abort: remove and free at the next flush, no callbacks */
    int stopped;  /* on_data asked to stop */
    char err[CURL_ERROR_SIZE];
};

typedef struct sock {
    uv_poll_t poll;
    uphttp_t *h;
    struct sock *prev, *next;
    curl_socket_t fd;
} sock_t;

struct uphttp {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    uphttp_xfer_t *xfers;
    sock_t *socks;
    int n_active;
    int depth; /* inside a curl call */
    int open;  /* libuv handles not yet closed */
    int destroyed;
    /* easy handles of finished transfers, reset and kept for the next ones:
     * curl_easy_init + curl_easy_cleanup were ~15,000 instructions a request */
    CURL *idle[IDLE_EASY];
    int n_idle;
    /* no proxy variable was set at start: transfers say "no proxy" instead
     * of curl reading the environment for each one */
    int no_proxy_env;
};

static int curl_ready;

static void maybe_free(uphttp_t *h)
{
    if (h->destroyed && h->open == 0) free(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
    if (hd->type == UV_POLL) {
        sock_t *s = hd->data;
        uphttp_t *h = s->h;
        free(s);
        h->open--;
        maybe_free(h);
    } else {
        uphttp_t *h = hd->data;
        h->open--;
        maybe_free(h);
    }
}

static void sock_close(uphttp_t *h, sock_t *s)
{
    DLIST_UNLINK(h->socks, s);
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/* Take x out of curl's multi handle and the list of live transfers. */
static void xfer_unlink(uphttp_t *h, uphttp_xfer_t *x)
{
    if (x->in_multi) {
        curl_multi_remove_handle(h->multi, x->e);
        x->in_multi = 0;
    }
    DLIST_UNLINK(h->xfers, x);
}

/* Free a transfer already unlinked. */
static void xfer_free(uphttp_xfer_t *x)
{
    uphttp_t *h = x->h;
    h->n_active--;
    if (!h->destroyed && !x->aborted && h->n_idle < IDLE_EASY) {
        curl_easy_reset(x->e); /* every option goes; the multi keeps the connections */
        h->idle[h->n_idle++] = x->e;
    } else {
        curl_easy_cleanup(x->e);
    }
    curl_slist_free_all(x->hdrs);
    free(x->body);
    if (x->auth) {
        memset(x->auth, 0, strlen(x->auth));
        free(x->auth);
    }
    free(x);
}

static void xfer_unlink_free(uphttp_xfer_t *x)
{
    xfer_unlink(x->h, x);
    xfer_free(x);
}

static void flush(uphttp_t *h);

/* Collect finished transfers, then call their on_done (after curl is left
 * alone, so the callbacks may start and abort transfers). */
static void check_done(uphttp_t *h)
{
    CURLMsg *m;
    int left;
    uphttp_xfer_t *done = NULL, **tail = &done;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        uphttp_xfer_t *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x) continue;
        CURLcode rc = m->data.result;
        xfer_unlink(h, x); /* to the local list; status and reason kept */
        if (x->status == 0) curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &x->status);
        uphttp_end_t end = rc == CURLE_OK ? UPHTTP_OK
                           : x->stopped   ? UPHTTP_STOPPED
                           : (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
                               ? UPHTTP_CONNECT
                           : rc == CURLE_OPERATION_TIMEDOUT ? UPHTTP_TIMEOUT
                                                            : UPHTTP_BROKEN;
        if (rc != CURLE_OK && !x->err[0])
            snprintf(x->err, sizeof x->err, "%s", curl_easy_strerror(rc));
        x->stopped = (int)end; /* reuse: the end kind, for the loop below */
        *tail = x;
        tail = &x->next;
    }
    /* a callback may abort a transfer still on the local list (a hedge's
     * loser that ended in the same batch): as inside curl, aborts are only
     * marked then, and the loop frees it without a callback; starts wait
     * for flush */
    h->depth++;
    while (done) {
        uphttp_xfer_t *x = done;
        done = x->next;
        int aborted = x->aborted;
        uphttp_end_t end = (uphttp_end_t)x->stopped;
        long status = x->status;
        uphttp_req_t r = x->r;
        char why[CURL_ERROR_SIZE];
        snprintf(why, sizeof why, "%s", x->err);
        xfer_free(x);
        if (!aborted && r.on_done) r.on_done(r.ud, end, status, why);
    }
    h->depth--;
}

static void run_action(uphttp_t *h, curl_socket_t fd, int flags)
{
    int running;
    h->depth++;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    h->depth--;
    check_done(h);
    flush(h);
}

/* Apply deferred starts and aborts. */
static void flush(uphttp_t *h)
{
    if (h->depth) return;
    for (uphttp_xfer_t *x = h->xfers, *nx; x; x = nx) {
        nx = x->next;
        if (x->aborted) {
            xfer_unlink_free(x);
        } else if (!x->in_multi) {
            if (curl_multi_add_handle(h->multi, x->e) == CURLM_OK) {
                x->in_multi = 1;
                continue;
            }
            uphttp_req_t r = x->r;
            xfer_unlink_free(x);
            if (r.on_done) r.on_done(r.ud, UPHTTP_CONNECT, 0, "cannot start the transfer");
            flush(h); /* the callback may have changed the list */
            return;
        }
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    run_action(s->h, s->fd, flags);
}

static void on_timer(uv_timer_t *t)
{
    run_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e;
    uphttp_t *h = userp;
    sock_t *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            sock_close(h, s);
            if (!h->destroyed) curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd)) {
            free(s);
            return -1;
        }
        s->h = h;
        s->fd = fd;
        s->poll.data = s;
        h->open++;
        DLIST_PUSH(h->socks, s);
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    uphttp_t *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    uphttp_xfer_t *x = ud;
    size_t n = size * nmemb;
    if (x->aborted) return 0;
    if (!x->status_sent) {
        x->status_sent = 1;
        curl_easy_getinfo(x->e, CURLINFO_RESPONSE_CODE, &x->status);
        if (x->r.on_status) x->r.on_status(x->r.ud, x->status);
        if (x->aborted) return 0;
    }
    if (n && x->r.on_data && x->r.on_data(x->r.ud, p, n)) {
        x->stopped = 1;
        return 0;
    }
    return x->aborted ? 0 : n;
}

int uphttp_create(uphttp_t **out, uv_loop_t *loop, int max_conns, bar_msg_t *msg)
{
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT))
            return bar_fail(msg, BAR_ERR_INTERNAL, "libcurl would not initialise");
        curl_ready = 1;
    }
    uphttp_t *h = calloc(1, sizeof *h);
    if (!h) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi) {
        free(h);
        return bar_fail(msg, BAR_ERR_INTERNAL, "curl_multi_init failed");
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    if (max_conns > 0) curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)max_conns);
    static const char *const proxy_env[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                            "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    h->no_proxy_env = 1;
    for (size_t i = 0; i < sizeof proxy_env / sizeof proxy_env[0]; i++)
        if (getenv(proxy_env[i])) h->no_proxy_env = 0;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open = 1;
    *out = h;
    return 0;
}

int uphttp_start(uphttp_t *h, const uphttp_req_t *r, uphttp_xfer_t **out, bar_msg_t *msg)
{
    uphttp_xfer_t *x = calloc(1, sizeof *x);
    if (!x) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    x->h = h;
    x->r = *r;
    x->e = h->n_idle ? h->idle[--h->n_idle] : curl_easy_init();
    if (!x->e) {
        free(x);
        return bar_fail(msg, BAR_ERR_NOMEM, "curl_easy_init failed");
    }
    CURL *e = x->e;
    int bad = 0;
    if (r->body) {
        x->body = malloc(r->body_len + 1);
        if (!x->body)
            bad = 1;
        else {
            memcpy(x->body, r->body, r->body_len);
            x->body[r->body_len] = '\0';
        }
    }
    struct curl_slist *l;
    if (!bad && r->body) {
        l = curl_slist_append(x->hdrs, "Content-Type: application/json");
        if (l)
            x->hdrs = l;
        else
            bad = 1;
    }
    if (!bad) {
        l = curl_slist_append(x->hdrs, "Expect:"); /* no 100-continue round trip */
        if (l)
            x->hdrs = l;
        else
            bad = 1;
    }
    if (!bad && r->header) {
        l = curl_slist_append(x->hdrs, r->header);
        if (l)
            x->hdrs = l;
        else
            bad = 1;
    }
    if (!bad && r->bearer && r->bearer[0]) {
        size_t kn = strlen(r->bearer);
        x->auth = malloc(kn + 24);
        if (!x->auth)
            bad = 1;
        else {
            snprintf(x->auth, kn + 24, "Authorization: Bearer %s", r->bearer);
            l = curl_slist_append(x->hdrs, x->auth);
            if (l)
                x->hdrs = l;
            else
                bad = 1;
        }
    }
    if (bad) {
        curl_easy_cleanup(e);
        curl_slist_free_all(x->hdrs);
        free(x->body);
        free(x->auth);
        free(x);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->err);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
    if (h->no_proxy_env) curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (r->body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    }
    if (r->timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    if (r->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
    DLIST_PUSH(h->xfers, x);
    h->n_active++;
    if (!h->depth) {
        if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
            xfer_unlink_free(x);
            return bar_fail(msg, BAR_ERR_INTERNAL, "curl_multi_add_handle failed");
        }
        x->in_multi = 1;
    } /* else: added by flush once curl returns */
    *out = x;
    return 0;
}

void uphttp_abort(uphttp_xfer_t *x)
{
    if (!x || x->aborted) return;
    x->aborted = 1;
    if (!x->h->depth) xfer_unlink_free(x);
}

int uphttp_n_active(const uphttp_t *h)
{
    return h->n_active;
}

void uphttp_destroy(uphttp_t *h)
{
    if (!h) return;
    while (h->xfers)
        xfer_unlink_free(h->xfers);
    h->destroyed = 1;
    while (h->n_idle)
        curl_easy_cleanup(h->idle[--h->n_idle]);
    curl_multi_cleanup(h->multi); /* closes pooled connections */
    h->multi = NULL;
    while (h->socks)
        sock_close(h, h->socks);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
}
