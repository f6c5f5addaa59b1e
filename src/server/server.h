/* server.h — the HTTP/1.1 server: listener, connections, limits, shutdown.
 *
 * One srv_t lives on one libuv loop and owns every socket on it. Each
 * connection reads with http.c, hands complete requests to one handler
 * callback strictly one at a time (pipelined requests wait, so responses go
 * out in order), and keeps-alive between them. It enforces the connection
 * limit (503 + close), header/body read timeouts (408 + close), the idle
 * keep-alive timeout, header/body size limits (431/413) and answers
 * `Expect: 100-continue`. A handler may answer at once (srv_respond) or later
 * from the same loop, and may stream (srv_stream_*): chunked transfer with
 * write-queue back-pressure reported through srv_req_writable/on_drain.
 *
 * Shutdown: srv_shutdown stops accepting, closes idle connections, lets
 * active requests finish (every response then says Connection: close) and
 * calls on_grace_expired after the grace period so the owner can cancel what
 * is left; on_idle fires once no connection remains.
 *
 * Not for: routing, JSON or the engine (src/api/). */
#ifndef BARISTA_SERVER_SERVER_H
#define BARISTA_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "obs/access_log.h"
#include "obs/trace.h"
#include "server/http.h"
#include "util/err.h"

typedef struct srv srv_t;
typedef struct srv_req srv_req_t;

/* A complete request arrived. The handler owns `r` until it finishes it with
 * srv_respond or srv_stream_end, or until on_abort is called. */
typedef void (*srv_handler_fn)(void *ud, srv_req_t *r);
/* The connection of an unfinished request died (client gone, write error,
 * forced shutdown). After this returns `r` is freed: drop every pointer to it. */
typedef void (*srv_abort_fn)(void *user, srv_req_t *r);
/* The connection's write queue fell below the back-pressure bound. */
typedef void (*srv_drain_fn)(void *user, srv_req_t *r);

typedef struct {
    const char *host;
    int port; /* 0 = any free port (see srv_port) */
    size_t max_body_bytes, max_header_bytes;
    int max_connections;
    uint64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms, shutdown_grace_ms;
    size_t write_queue_bytes; /* back-pressure bound per connection */
    int send_buffer_bytes;    /* SO_SNDBUF for accepted sockets; 0 = OS default */
    obs_alog_t *access_log;   /* one JSON line per response; NULL: off (borrowed) */
    srv_handler_fn handler;
    void *ud;                              /* passed to handler and on_response */
    void *owner;                           /* passed to on_grace_expired and on_idle */
    void (*on_grace_expired)(void *owner); /* shutdown grace is over: cancel what is left */
    void (*on_idle)(void *owner);          /* shutting down and no connection remains */
    /* every finished response (also the server's own 4xx), for metrics: its
     * closed trace (endpoint label, status — 499 when the client left — and
     * timings; the server's own early errors have no OBS_TOTAL) */
    void (*on_response)(void *ud, const obs_trace_t *t);
} srv_opts_t;

/* Bind and listen. Ownership: *out is freed by srv_destroy (after the loop
 * has run the close callbacks, see srv_destroy). */
int srv_create(srv_t **out, uv_loop_t *loop, const srv_opts_t *o, bar_msg_t *msg);

/* The bound TCP port. */
int srv_port(const srv_t *s);

/* Begin a graceful shutdown (idempotent). A second call skips the remaining grace. */
void srv_shutdown(srv_t *s);
int srv_shutting_down(const srv_t *s);

/* Number of open connections. */
int srv_n_connections(const srv_t *s);

typedef struct {
    int connections;
    int output_paused;            /* connections paused now for unsent output */
    uint64_t output_paused_total; /* times a connection paused for unsent output */
    uint64_t output_queued_bytes; /* reply bytes queued on sockets, all connections */
} srv_stats_t;
/* Counters for /metrics. */
void srv_stats(const srv_t *s, srv_stats_t *out);

/* Close every handle (unfinished requests are aborted) and free the server
 * once the loop has processed the closes: call, then run the loop until it
 * returns. */
void srv_destroy(srv_t *s);

/* ---- per request ---- */

const http_req_t *srv_req_http(const srv_req_t *r);
uv_loop_t *srv_req_loop(const srv_req_t *r);

/* Attach the handler's state and hooks (any may be NULL). */
void srv_req_set_user(srv_req_t *r, void *user, srv_abort_fn on_abort, srv_drain_fn on_drain);

/* Name this request's endpoint for metrics/logs (a static string). Every
 * response head carries X-Request-Id and Server-Timing (obs/trace.h). */
void srv_req_set_label(srv_req_t *r, const char *label);

/* The request's trace (id, stage timings, access-log fields): the handler
 * marks its stages and fills what it knows. Valid until the request ends. */
obs_trace_t *srv_req_obs(srv_req_t *r);

/* Answer in one go and finish the request. `extra` are additional header
 * lines, each ending in "\r\n" (may be NULL). 0 or an error (the request is
 * finished either way). */
/* Header lines ("Name: value\r\n" each) that the response head of r
 * carries, whatever answers it (errors and streams too); a later call
 * replaces them. At most 383 bytes: BAR_ERR_RANGE beyond. */
int srv_req_set_headers(srv_req_t *r, const char *lines);

int srv_respond(srv_req_t *r, int status, const char *content_type, const char *body, size_t n,
                const char *extra);

/* Streaming: send the head (chunked transfer), then chunks, then end (which
 * finishes the request). Writing never blocks: bytes queue on the socket;
 * check srv_req_writable and wait for on_drain to keep the queue bounded. */
int srv_stream_begin(srv_req_t *r, int status, const char *content_type, const char *extra);
int srv_stream_write(srv_req_t *r, const char *data, size_t n);
int srv_stream_end(srv_req_t *r);

/* Whether the connection's unsent bytes are below the back-pressure bound. */
int srv_req_writable(const srv_req_t *r);
/* Unsent bytes queued on the connection. */
size_t srv_req_queued_bytes(const srv_req_t *r);

/* ---- local requests: a handler run without a socket ----
 *
 * The seam for callers inside the process (batch lines, Prefer:
 * respond-async): a srv_req_t built from a method, target, headers and body
 * that any handler takes like one read from a connection. srv_respond and
 * srv_stream_* collect the reply instead of writing it; on finish `done` gets
 * the status, the header lines the handler gave (Content-Type first) and the
 * whole body, borrowed for the call, and the request is freed on a later
 * loop turn (run the loop). A local request is always writable; it is never counted in the
 * server's metrics, and logged only after srv_local_log. */
typedef void (*srv_local_done_fn)(void *ud, int status, const char *headers, const char *body,
                                  size_t n);

typedef struct {
    const char *name, *value; /* NUL-terminated */
} srv_header_t;

/* A local request (method: an HTTP_* of http_parser; target: path[?query]).
 * Everything is copied. NULL on OOM. The caller then hands it to a handler,
 * which owns it until it answers (done is called) or until srv_local_abort. */
srv_req_t *srv_local_create(uv_loop_t *loop, int method, const char *target,
                            const srv_header_t *hdrs, int n_hdrs, const char *body, size_t n,
                            srv_local_done_fn done, void *ud);

/* Give local request r (just created) a line in s's access log, when one is
 * open, once it is answered: as a connection's, with "local": true, no peer,
 * and an id made here when its headers had none. An aborted one has none. */
void srv_local_log(srv_req_t *r, srv_t *s);

/* The caller gives up on an unanswered local request (batch cancelled,
 * shutdown): done is never called. The handler's on_abort runs now, as for a
 * client that went away, and the request is freed; a handler that set no
 * on_abort still holds it, and it is freed when that handler answers. */
void srv_local_abort(srv_req_t *r);

/* Whether r is a local request. */
int srv_req_is_local(const srv_req_t *r);

#endif
