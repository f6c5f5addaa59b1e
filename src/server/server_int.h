/* server_int.h — what server.c (connections, responses) shares with
 * server_local.c (requests without a socket, srv_local_create): the request
 * object and a local request's answer collector. Internal to src/server; the
 * loop thread. */
#ifndef BARISTA_SERVER_SERVER_INT_H
#define BARISTA_SERVER_SERVER_INT_H

#include "obs/trace.h"
#include "server/http.h"
#include "server/server.h"
#include "util/buf.h"

typedef struct conn conn_t; /* server.c */
typedef struct srv_local srv_local_t;

struct srv_req {
    conn_t *c;          /* NULL for a local request */
    srv_local_t *local; /* NULL for a connection's request */
    void *user;
    srv_abort_fn on_abort;
    srv_drain_fn on_drain;
    const char *label;
    int status;
    int streaming;
    int keep; /* keep-alive decided when the head was sent */
    int want_drain;
    double t_start;
    size_t bytes_out;
    obs_trace_t obs; /* id, stage timings, access-log fields */
    char hdr[384];   /* srv_req_set_headers: lines every response head of this request carries */
    size_t hdr_n;
};

struct srv_local {
    srv_req_t req;
    uv_loop_t *loop;
    http_req_t h;
    srv_local_done_fn done;
    void *ud;
    int active; /* with the handler */
    int orphan; /* the caller gave up: free on the answer, call nothing */
    buf_t head; /* Content-Type and the handler's header lines */
    buf_t body;
    uv_timer_t closer; /* freed from its close callback: never under a caller's feet */
    obs_alog_t *alog;  /* srv_local_log: the server's access log (borrowed), NULL: none */
};

/* A local request's answer head: its status, Content-Type and the handler's
 * header lines. 0 or BAR_ERR_NOMEM. */
int srv_local_head(srv_local_t *l, int status, const char *ct, const char *extra);
/* The handler answered: hand the reply to the caller, free the request. */
int srv_local_finish(srv_local_t *l);

#endif
