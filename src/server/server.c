/* server.c — listener, connections, timeouts, limits, graceful shutdown.
 * See server.h for the contract. Not for: routing or JSON (src/api/).
 *
 * Connection life: accepted → reading (header timer) → request parsed
 * (dispatch; reading continues only to notice a disconnect, up to a bound of
 * buffered pipelined bytes) → response finished → keep-alive (idle timer) or
 * lingering close (shut down our side, discard input until EOF or a short
 * timer, so the client reads the response instead of a reset). */
#include "server/server.h"
#include "server/server_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "obs/access_log.h"
#include "util/buf.h"
#include "util/timeutil.h"

#define INBUF_MAX (64 * 1024) /* buffered pipelined bytes before reading pauses */
#define PEER_CHECK_MS 250     /* disconnect poll while reading is paused */
#define LINGER_MS 2000
#define BACKSTOP_MS 3000  /* after the grace period, force-close this much later */
#define MAX_REJECTING 256 /* connections being sent a 503 at once */

typedef struct conn conn_t;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    srv_t *s;
    conn_t *prev, *next;
    http_rx_t rx;
    buf_t inbuf;
    buf_t head; /* response head, reused across keep-alive requests */
    srv_req_t req;
    char peer[64];
    int active;  /* req is with the handler */
    int closing; /* uv_close issued */
    int n_open;  /* handles not yet closed */
    int reading;
    int in_process;
    int lingering;    /* our side is shut down; discarding input */
    int rejected;     /* over the connection limit: 503 then close */
    int eof;          /* the client sent FIN */
    int n_writes;     /* uv_write requests in flight */
    int out_paused;   /* unsent output over the bound: no dispatch, no reading */
    int write_failed; /* a write failed: closing on the next loop turn */
};

struct srv {
    uv_loop_t *loop;
    srv_opts_t o;
    char host[256];
    uv_tcp_t listener;
    uv_timer_t grace;
    uv_timer_t accept_retry; /* an accept that found no memory tries again */
    int port;
    conn_t *conns; /* open (not closing) connections */
    int n_conns;   /* counted toward max_connections */
    int n_rejecting;
    int n_alloc;           /* conn_t not yet freed */
    uint64_t n_out_paused; /* times a connection stopped for its unsent output */
    int n_own_open;        /* listener + grace + accept_retry handles not yet closed */
    int listener_closed;
    int shutting_down;
    int grace_over;
    int idle_fired;
    int destroying;
    obs_idgen_t idgen; /* X-Request-Id for requests without one */
    char rbuf[64 * 1024];
};

typedef struct {
    uv_write_t w;
    conn_t *c;
    char *mem;
} wreq_t;

static void conn_close(conn_t *c);
static void conn_process(conn_t *c);
static void conn_read_start(conn_t *c);

/* ---- small helpers ---- */

static void maybe_free_srv(srv_t *s)
{
    if (s->destroying && s->n_alloc == 0 && s->n_own_open == 0) free(s);
}

static void check_idle(srv_t *s)
{
    if (s->shutting_down && !s->idle_fired && s->n_conns + s->n_rejecting == 0) {
        s->idle_fired = 1;
        if (s->o.on_idle && !s->destroying) s->o.on_idle(s->o.owner);
    }
}

/* Replies to pipelined requests queue up on a socket whose client does not
 * read; past the write-queue bound the connection stops taking requests
 * (dispatching, then reading) until the queue drains, so a client that
 * never reads holds at most the bound plus the input buffer. */
static int out_over(const conn_t *c)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) >=
           c->s->o.write_queue_bytes;
}

static void on_write(uv_write_t *w, int status)
{
    wreq_t *wr = (wreq_t *)w;
    conn_t *c = wr->c;
    free(wr->mem);
    free(wr);
    c->n_writes--;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    srv_req_t *r = &c->req;
    if (c->active && r->want_drain && srv_req_writable(r)) {
        r->want_drain = 0;
        if (r->on_drain) r->on_drain(r->user, r);
    }
    if (c->out_paused && !out_over(c)) {
        c->out_paused = 0;
        conn_process(c);
    }
}

/* Send bufs on the socket. What the kernel takes at once is written now
 * (uv_try_write: no request, no allocation, no callback, and no epoll change
 * — the common case for a reply that fits the socket buffer); the rest is
 * copied into one block and queued with uv_write. The caller keeps its
 * buffers. Bytes are never reordered: uv_try_write refuses while earlier
 * writes are queued. */
static void on_fail_timer(uv_timer_t *t)
{
    conn_close(t->data);
}

/* A write failed (no memory, a dead socket). The writer is the request's
 * handler, deep in its own code: closing now would call its on_abort from
 * inside its write call and free what it is still using. So the connection
 * stops taking bytes and requests now, and closes (on_abort included) on the
 * next loop turn. */
static void conn_fail_later(conn_t *c)
{
    if (c->write_failed || c->closing) return;
    c->write_failed = 1;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uv_timer_start(&c->timer, on_fail_timer, 0, 0);
}

static int conn_writev(conn_t *c, const uv_buf_t *bufs, int nbufs)
{
    size_t total = 0;
    for (int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (c->write_failed) return BAR_ERR_IO;
    if (c->closing || c->lingering || total == 0) return c->closing ? BAR_ERR_IO : 0;
    if (c->active) c->req.bytes_out += total;
    size_t done = 0;
    if (c->n_writes == 0) {
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, (unsigned)nbufs);
        if (w > 0) done = (size_t)w;
        /* an error (EPIPE, ECONNRESET ...) is reported by the queued write below */
        if (done == total) return 0;
    }
    wreq_t *wr = malloc(sizeof *wr);
    char *mem = malloc(total - done);
    if (!wr || !mem) {
        free(wr);
        free(mem);
        conn_fail_later(c);
        return BAR_ERR_NOMEM;
    }
    size_t skip = done, k = 0;
    for (int i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(mem + k, bufs[i].base + skip, len - skip);
        k += len - skip;
        skip = 0;
    }
    wr->c = c;
    wr->mem = mem;
    uv_buf_t ub = uv_buf_init(mem, (unsigned)k);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc) {
        free(mem);
        free(wr);
        conn_fail_later(c);
        return BAR_ERR_IO;
    }
    c->n_writes++;
    return 0;
}

/* Queue b's bytes on the socket; frees b. */
static int conn_write(conn_t *c, buf_t *b)
{
    uv_buf_t ub = uv_buf_init(b->p, (unsigned)b->n);
    int rc = conn_writev(c, &ub, 1);
    buf_free(b);
    return rc;
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->n_open > 0) return;
    srv_t *s = c->s;
    http_rx_free(&c->rx);
    buf_free(&c->inbuf);
    buf_free(&c->head);
    free(c);
    s->n_alloc--;
    maybe_free_srv(s);
}

static void conn_unlink(conn_t *c)
{
    srv_t *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (c->rejected)
        s->n_rejecting--;
    else
        s->n_conns--;
}

/* The request's last byte went out (or its client left: 499): close its
 * trace, log it, count it. */
static void req_log(conn_t *c, srv_req_t *r, int status, double now)
{
    srv_t *s = c->s;
    obs_trace_end(&r->obs, now, status, r->bytes_out);
    if (s->o.access_log) {
        const http_req_t *h = &c->rx.req;
        http_slice_t path = http_req_path(h);
        obs_alog_write(s->o.access_log, &r->obs, c->peer, http_req_method_name(h), path.p, path.n);
    }
    if (s->o.on_response) s->o.on_response(s->o.ud, &r->obs);
}

static void conn_close(conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    srv_t *s = c->s;
    if (c->active) {
        srv_req_t *r = &c->req;
        c->active = 0;
        req_log(c, r, 499, time_now_mono());
        if (r->on_abort) r->on_abort(r->user, r);
        r->user = NULL;
    }
    conn_unlink(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    check_idle(s);
}

static void on_linger_timer(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    free(req);
    if (c->closing) return;
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_linger_timer, LINGER_MS, 0);
}

/* Finish the connection politely: flush, send FIN, discard input briefly. */
static void conn_linger_close(conn_t *c)
{
    if (c->closing || c->lingering || c->write_failed) return;
    c->lingering = 1;
    buf_clear(&c->inbuf);
    /* a reader that never drains our queued bytes must not hold the socket forever */
    uv_timer_start(&c->timer, on_linger_timer, c->s->o.idle_timeout_ms + LINGER_MS, 0);
    uv_shutdown_t *sr = malloc(sizeof *sr);
    if (!sr || uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown_done)) {
        free(sr);
        conn_close(c);
        return;
    }
    sr->data = c;
    if (!c->reading && !c->eof) {
        /* keep reading (and discarding) so the kernel does not reset */
        c->reading = 1;
        conn_read_start(c);
    }
}

/* The server's own error answer (parse errors, limits, timeouts): an
 * OpenAI-style error body, Connection: close, then a lingering close. */
static void conn_error(conn_t *c, int status, const char *text)
{
    srv_t *s = c->s;
    if (c->closing || c->lingering) return;
    const char *code = status == 413   ? "request_too_large"
                       : status == 431 ? "headers_too_large"
                       : status == 408 ? "request_timeout"
                       : status == 503 ? "too_many_connections"
                                       : "bad_request";
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    buf_t body = {0}, out = {0};
    int bad = buf_puts(&body, "{\"error\":{\"message\":");
    bad = bad || buf_json_str(&body, text, strlen(text));
    bad =
        bad || buf_printf(&body, ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}\n", type, code);
    bad = bad || http_format_head(&out, status, "application/json", (long long)body.n, 0,
                                  status == 503 ? "Retry-After: 1\r\n" : NULL);
    bad = bad || buf_append(&out, body.p, body.n);
    buf_free(&body);
    {
        /* no request was dispatched: a trace of its own, without timings */
        obs_trace_t t;
        obs_trace_begin(&t, time_now_mono(), NULL, 0, &s->idgen);
        t.endpoint = "other";
        t.status = status;
        t.finished = 1;
        if (s->o.access_log) obs_alog_write(s->o.access_log, &t, c->peer, NULL, NULL, 0);
        if (s->o.on_response) s->o.on_response(s->o.ud, &t);
    }
    if (bad) { /* out of memory: a half reply is worse than none */
        buf_free(&out);
        conn_close(c);
        return;
    }
    conn_write(c, &out);
    conn_linger_close(c);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->s->rbuf, sizeof c->s->rbuf);
}

static void arm_timer(conn_t *c, uint64_t ms);

/* While a request is with its handler and reading is paused (the client
 * pipelined more than the input buffer), a disconnect raises no read event:
 * ask the kernel every PEER_CHECK_MS whether the peer closed (FIN: CLOSE_WAIT,
 * RST: CLOSE) and abort the request as a read would have. */
static void on_peer_check(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (!c->active || c->reading || c->closing) {
        uv_timer_stop(t);
        return;
    }
    uv_os_fd_t fd;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
        return;
    if (ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_CLOSE) conn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = st->data;
    (void)buf;
    if (nread == 0 || c->closing) return;
    if (c->lingering) {
        if (nread < 0) conn_close(c);
        return;
    }
    if (nread < 0) {
        if (c->active || nread != UV_EOF) {
            conn_close(c);
            return;
        }
        /* EOF: finish what is buffered; a request cut short gets a 400 */
        c->eof = 1;
        c->reading = 0;
        if (c->inbuf.n) {
            conn_process(c);
            if (c->closing || c->lingering || c->active) return;
        }
        if (c->rx.state == HTTP_RX_HEAD || c->rx.state == HTTP_RX_BODY) {
            http_rx_feed(&c->rx, NULL, 0);
            conn_error(c, c->rx.err_status ? c->rx.err_status : 400,
                       c->rx.err_text ? c->rx.err_text : "connection closed mid-request");
            return;
        }
        if (c->n_writes)
            conn_linger_close(c); /* flush the answers already queued */
        else
            conn_close(c);
        return;
    }
    if (c->rejected) return; /* discard */
    if (buf_append(&c->inbuf, buf->base, (size_t)nread)) {
        conn_error(c, 500, "out of memory");
        return;
    }
    conn_process(c);
    if (!c->closing && c->reading && c->inbuf.n > INBUF_MAX) {
        uv_read_stop(st);
        c->reading = 0;
        if (c->active) uv_timer_start(&c->timer, on_peer_check, PEER_CHECK_MS, PEER_CHECK_MS);
    }
}

static void conn_read_start(conn_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) conn_close(c);
}

static void on_conn_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->active || c->closing || c->lingering) return;
    if (c->rx.state == HTTP_RX_HEAD || c->rx.state == HTTP_RX_BODY || c->inbuf.n)
        conn_error(c, 408,
                   c->rx.state == HTTP_RX_BODY ? "timed out reading the request body"
                                               : "timed out reading the request headers");
    else
        conn_close(c); /* idle keep-alive connection */
}

static void arm_timer(conn_t *c, uint64_t ms)
{
    if (c->write_failed) return; /* the close timer is set */
    uv_timer_start(&c->timer, on_conn_timer, ms, 0);
}

static void dispatch(conn_t *c)
{
    srv_req_t *r = &c->req;
    memset(r, 0, sizeof *r);
    r->c = c;
    r->t_start = time_now_mono();
    http_slice_t id = http_req_header(&c->rx.req, "x-request-id");
    obs_trace_begin(&r->obs, r->t_start, id.p, id.n, &c->s->idgen);
    c->active = 1;
    uv_timer_stop(&c->timer);
    c->s->o.handler(c->s->o.ud, r);
}

static void conn_process(conn_t *c)
{
    if (c->in_process) return;
    c->in_process = 1;
    srv_t *s = c->s;
    while (!c->closing && !c->lingering && !c->active && !c->out_paused && !c->write_failed) {
        if (c->rx.state == HTTP_RX_DONE) {
            if (out_over(c)) {
                c->out_paused = 1;
                s->n_out_paused++;
                if (c->reading) {
                    uv_read_stop((uv_stream_t *)&c->tcp);
                    c->reading = 0;
                }
                break;
            }
            dispatch(c);
            continue;
        }
        if (c->rx.state == HTTP_RX_ERROR) {
            conn_error(c, c->rx.err_status, c->rx.err_text ? c->rx.err_text : "bad request");
            break;
        }
        if (!c->inbuf.n) break;
        http_rx_state_t before = c->rx.state;
        size_t n = http_rx_feed(&c->rx, c->inbuf.p, c->inbuf.n);
        buf_consume(&c->inbuf, n);
        http_rx_state_t after = c->rx.state;
        if (before == HTTP_RX_IDLE && after == HTTP_RX_HEAD) arm_timer(c, s->o.header_timeout_ms);
        if (after == HTTP_RX_BODY && before != HTTP_RX_BODY) {
            arm_timer(c, s->o.body_timeout_ms);
            if (c->rx.req.expect_continue) {
                buf_t b = {0};
                buf_puts(&b, "HTTP/1.1 100 Continue\r\n\r\n");
                conn_write(c, &b);
            }
        }
        if (n == 0 && after != HTTP_RX_DONE && after != HTTP_RX_ERROR) break;
    }
    c->in_process = 0;
    if (!c->closing && !c->lingering && !c->reading && !c->eof && !c->out_paused &&
        !c->write_failed && c->inbuf.n <= INBUF_MAX) {
        c->reading = 1;
        conn_read_start(c);
    }
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *ls, int status);

static void on_accept_retry(uv_timer_t *t)
{
    srv_t *s = t->data;
    if (!s->listener_closed) on_connection((uv_stream_t *)&s->listener, 0);
}

static void on_connection(uv_stream_t *ls, int status)
{
    srv_t *s = ls->data;
    if (status < 0) return;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        /* the connection stays pending in the kernel; libuv stops accepting
         * until we do, so try again shortly instead of never */
        if (!s->listener_closed) uv_timer_start(&s->accept_retry, on_accept_retry, 10, 0);
        return;
    }
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->n_open = 2;
    s->n_alloc++;
    http_rx_init(&c->rx, (size_t)s->o.max_header_bytes, (size_t)s->o.max_body_bytes);
    /* link first so conn_close can unlink */
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    int over = s->n_conns >= s->o.max_connections || s->shutting_down;
    if (over)
        c->rejected = 1, s->n_rejecting++;
    else
        s->n_conns++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (s->o.send_buffer_bytes > 0) {
        int sz = s->o.send_buffer_bytes;
        uv_send_buffer_size((uv_handle_t *)&c->tcp, &sz);
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "?");
    if (!uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len)) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof c->peer);
    }
    if (over) {
        if (s->n_rejecting > MAX_REJECTING) {
            conn_close(c);
            return;
        }
        c->reading = 1;
        conn_read_start(c);
        conn_error(c, 503, "too many connections; try again later");
        return;
    }
    c->reading = 1;
    conn_read_start(c);
    arm_timer(c, s->o.header_timeout_ms);
}

static void on_own_closed(uv_handle_t *h)
{
    srv_t *s = h->data;
    s->n_own_open--;
    maybe_free_srv(s);
}

int srv_create(srv_t **out, uv_loop_t *loop, const srv_opts_t *o, bar_msg_t *msg)
{
    srv_t *s = calloc(1, sizeof *s);
    if (!s) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    s->loop = loop;
    s->o = *o;
    snprintf(s->host, sizeof s->host, "%s", o->host ? o->host : "127.0.0.1");
    s->o.host = s->host;
    struct sockaddr_storage addr;
    int rc;
    if (strchr(s->host, ':'))
        rc = uv_ip6_addr(s->host, o->port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(s->host, o->port, (struct sockaddr_in *)&addr);
    if (rc) {
        free(s);
        return bar_fail(msg, BAR_ERR_INVALID, "bad listen address '%s': %s", o->host,
                        uv_strerror(rc));
    }
    uv_tcp_init(loop, &s->listener);
    uv_timer_init(loop, &s->grace);
    s->listener.data = s;
    s->grace.data = s;
    uv_timer_init(loop, &s->accept_retry);
    s->accept_retry.data = s;
    s->n_own_open = 3;
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (!rc) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc) {
        bar_fail(msg, BAR_ERR_IO, "cannot listen on %s:%d: %s", s->host, o->port, uv_strerror(rc));
        s->destroying = 1;
        uv_close((uv_handle_t *)&s->listener, on_own_closed);
        uv_close((uv_handle_t *)&s->grace, on_own_closed);
        uv_close((uv_handle_t *)&s->accept_retry, on_own_closed);
        uv_run(loop, UV_RUN_NOWAIT);
        return BAR_ERR_IO;
    }
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    obs_idgen_init(&s->idgen);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;
}

void srv_local_log(srv_req_t *r, srv_t *s)
{
    if (!r->local || !s || !s->o.access_log) return;
    if (!r->obs.id[0]) obs_trace_begin(&r->obs, r->t_start, NULL, 0, &s->idgen);
    r->obs.local = 1;
    r->local->alog = s->o.access_log;
}

int srv_port(const srv_t *s)
{
    return s->port;
}

int srv_shutting_down(const srv_t *s)
{
    return s->shutting_down;
}

void srv_stats(const srv_t *s, srv_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->connections = s->n_conns;
    out->output_paused_total = s->n_out_paused;
    for (const conn_t *c = s->conns; c; c = c->next) {
        out->output_queued_bytes += uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
        out->output_paused += c->out_paused;
    }
}

int srv_n_connections(const srv_t *s)
{
    return s->n_conns;
}

static void on_backstop(uv_timer_t *t)
{
    srv_t *s = t->data;
    while (s->conns)
        conn_close(s->conns);
}

static void grace_over(srv_t *s)
{
    if (s->grace_over) return;
    s->grace_over = 1;
    if (s->o.on_grace_expired) s->o.on_grace_expired(s->o.owner);
    if (s->conns) uv_timer_start(&s->grace, on_backstop, BACKSTOP_MS, 0);
}

static void on_grace(uv_timer_t *t)
{
    grace_over(t->data);
}

void srv_shutdown(srv_t *s)
{
    if (s->shutting_down) {
        grace_over(s);
        return;
    }
    s->shutting_down = 1;
    if (!s->listener_closed) {
        s->listener_closed = 1;
        uv_close((uv_handle_t *)&s->listener, on_own_closed);
    }
    for (conn_t *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (!c->active && c->rx.state == HTTP_RX_IDLE && !c->inbuf.n) conn_close(c);
    }
    uv_timer_start(&s->grace, on_grace, s->o.shutdown_grace_ms, 0);
    check_idle(s);
}

void srv_destroy(srv_t *s)
{
    if (!s) return;
    s->destroying = 1;
    while (s->conns)
        conn_close(s->conns);
    if (!s->listener_closed) {
        s->listener_closed = 1;
        uv_close((uv_handle_t *)&s->listener, on_own_closed);
    }
    uv_close((uv_handle_t *)&s->grace, on_own_closed);
    uv_close((uv_handle_t *)&s->accept_retry, on_own_closed);
}

/* ---- requests ---- */

const http_req_t *srv_req_http(const srv_req_t *r)
{
    return r->local ? &r->local->h : &r->c->rx.req;
}

uv_loop_t *srv_req_loop(const srv_req_t *r)
{
    return r->local ? r->local->loop : r->c->s->loop;
}

void srv_req_set_user(srv_req_t *r, void *user, srv_abort_fn on_abort, srv_drain_fn on_drain)
{
    r->user = user;
    r->on_abort = on_abort;
    r->on_drain = on_drain;
}

void srv_req_set_label(srv_req_t *r, const char *label)
{
    r->label = label;
    r->obs.endpoint = label;
}

obs_trace_t *srv_req_obs(srv_req_t *r)
{
    return &r->obs;
}

int srv_req_set_headers(srv_req_t *r, const char *lines)
{
    size_t n = strlen(lines);
    if (n >= sizeof r->hdr) return BAR_ERR_RANGE;
    memcpy(r->hdr, lines, n + 1);
    r->hdr_n = n;
    return 0;
}

size_t srv_req_queued_bytes(const srv_req_t *r)
{
    if (r->local) return 0;
    return uv_stream_get_write_queue_size((const uv_stream_t *)&r->c->tcp);
}

int srv_req_writable(const srv_req_t *r)
{
    srv_req_t *m = (srv_req_t *)r;
    if (r->local) return 1;
    if (srv_req_queued_bytes(r) < r->c->s->o.write_queue_bytes) return 1;
    m->want_drain = 1;
    return 0;
}

/* now: the caller's clock reading (0: read it here). */
static void req_finish(srv_req_t *r, double now)
{
    conn_t *c = r->c;
    srv_t *s = c->s;
    req_log(c, r, r->status, now > 0 ? now : time_now_mono());
    c->active = 0;
    r->hdr_n = 0;
    r->hdr[0] = '\0';
    r->user = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (!r->keep || s->shutting_down) {
        conn_linger_close(c);
        return;
    }
    http_rx_next(&c->rx);
    arm_timer(c, s->o.idle_timeout_ms);
    conn_process(c);
}

/* The one place a response head is made: the handler's `extra` lines, then
 * the request's own (srv_req_set_headers: x-ratelimit-*), then X-Request-Id and
 * Server-Timing, all before the head's final blank line. */
static int format_head(srv_req_t *r, buf_t *out, int status, const char *ct, long long len,
                       const char *extra, double now)
{
    int rc = http_format_head(out, status, ct, len, r->keep, extra);
    if (rc) return rc;
    out->n -= 2; /* the blank line */
    if (r->hdr_n) rc = buf_append(out, r->hdr, r->hdr_n);
    if (!rc) rc = obs_trace_headers(&r->obs, now, out);
    return rc ? rc : buf_append(out, "\r\n", 2);
}

static int send_head(srv_req_t *r, int status, const char *ct, long long len, const char *extra)
{
    conn_t *c = r->c;
    r->status = status;
    r->keep = c->rx.req.keep_alive && !c->s->shutting_down;
    buf_t out = {0};
    if (format_head(r, &out, status, ct, len, extra, time_now_mono())) {
        buf_free(&out);
        return BAR_ERR_NOMEM;
    }
    return conn_write(c, &out);
}

int srv_respond(srv_req_t *r, int status, const char *content_type, const char *body, size_t n,
                const char *extra)
{
    if (r->local) {
        srv_local_t *l = r->local;
        if (!l->active || r->streaming) return BAR_ERR_INVALID;
        int rc = srv_local_head(l, status, content_type, extra);
        if (!rc && n) rc = buf_append(&l->body, body, n) ? BAR_ERR_NOMEM : 0;
        if (rc) l->req.status = 500;
        srv_local_finish(l);
        return rc;
    }
    conn_t *c = r->c;
    if (!c->active || r->streaming) return BAR_ERR_INVALID;
    r->status = status;
    r->keep = c->rx.req.keep_alive && !c->s->shutting_down;
    /* the head goes into the connection's reusable buffer; the body is sent
     * from the caller's memory (copied only if the socket cannot take it now) */
    buf_clear(&c->head);
    /* one clock reading for the head's Server-Timing and the trace's end */
    double now = time_now_mono();
    int rc = format_head(r, &c->head, status, content_type, (long long)n, extra, now);
    if (rc) {
        r->keep = 0;
    } else {
        uv_buf_t v[2] = {uv_buf_init(c->head.p, (unsigned)c->head.n),
                         uv_buf_init((char *)(body ? body : ""), (unsigned)n)};
        rc = conn_writev(c, v, c->rx.req.method != HTTP_HEAD && n ? 2 : 1);
    }
    req_finish(r, now);
    return rc;
}

int srv_stream_begin(srv_req_t *r, int status, const char *content_type, const char *extra)
{
    if (r->local) {
        if (!r->local->active || r->streaming) return BAR_ERR_INVALID;
        r->streaming = 1;
        return srv_local_head(r->local, status, content_type, extra);
    }
    if (!r->c->active || r->streaming) return BAR_ERR_INVALID;
    r->streaming = 1;
    return send_head(r, status, content_type, -1, extra);
}

int srv_stream_write(srv_req_t *r, const char *data, size_t n)
{
    if (r->local) {
        if (!r->local->active || !r->streaming) return BAR_ERR_INVALID;
        return n && buf_append(&r->local->body, data, n) ? BAR_ERR_NOMEM : 0;
    }
    if (!r->c->active || !r->streaming) return BAR_ERR_INVALID;
    if (!n) return 0;
    buf_t out = {0};
    if (buf_reserve(&out, n + 32) || buf_printf(&out, "%zx\r\n", n) || buf_append(&out, data, n) ||
        buf_puts(&out, "\r\n")) {
        buf_free(&out);
        return BAR_ERR_NOMEM;
    }
    return conn_write(r->c, &out);
}

int srv_stream_end(srv_req_t *r)
{
    if (r->local) {
        if (!r->local->active || !r->streaming) return BAR_ERR_INVALID;
        return srv_local_finish(r->local);
    }
    if (!r->c->active || !r->streaming) return BAR_ERR_INVALID;
    buf_t out = {0};
    buf_puts(&out, "0\r\n\r\n");
    int rc = conn_write(r->c, &out);
    req_finish(r, 0);
    return rc;
}
