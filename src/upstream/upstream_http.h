/* upstream_http.h — HTTP/1.1 requests to upstream servers with libcurl's
 * multi interface, driven by a libuv loop (curl_multi_socket_action from
 * uv_poll and uv_timer callbacks): no thread per request, no blocking on the
 * loop (curl's threaded resolver does DNS), kept-alive connections reused
 * across requests, TLS when the URL is https.
 *
 * Every function and callback runs on the loop thread. Callbacks never come
 * from inside uphttp_post or uphttp_abort; a callback may call post and
 * abort (they are deferred until curl returns when curl is mid-call).
 *
 * Not for: what the bodies mean (backend_upstream.c), SSE (upstream_sse.c). */
#ifndef BARISTA_UPSTREAM_UPSTREAM_HTTP_H
#define BARISTA_UPSTREAM_UPSTREAM_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "util/err.h"

typedef struct uphttp uphttp_t;
typedef struct uphttp_xfer uphttp_xfer_t;

/* How a transfer ended (on_done). */
typedef enum {
    UPHTTP_OK = 0,  /* the whole response came (any status) */
    UPHTTP_CONNECT, /* could not connect or resolve: nothing was sent */
    UPHTTP_TIMEOUT, /* the transfer's timeout passed */
    UPHTTP_BROKEN,  /* the connection broke mid-response (reset, cut, bad HTTP) */
    UPHTTP_STOPPED, /* on_data asked to stop */
} uphttp_end_t;

typedef struct {
    const char *method; /* "POST" (body) or "GET" */
    const char *url;    /* borrowed for the call */
    const char *body;   /* copied; NULL for GET */
    size_t body_len;
    const char *bearer; /* API key for "Authorization: Bearer", NULL: none; copied */
    const char *header; /* one more header line "Name: value", NULL: none; copied */
    long timeout_ms;    /* whole transfer, 0 = none */
    long connect_timeout_ms;
    /* The response status, once its head is in (before any on_data). */
    void (*on_status)(void *ud, long status);
    /* Body bytes as they arrive. Return 0 to go on, non-zero to stop the
     * transfer (on_done with UPHTTP_STOPPED follows). */
    int (*on_data)(void *ud, const char *p, size_t n);
    /* The end, once. status: the HTTP status (0 when no head came); why: a
     * short reason for non-OK ends (curl's). Never called after uphttp_abort. */
    void (*on_done)(void *ud, uphttp_end_t end, long status, const char *why);
    void *ud;
} uphttp_req_t;

/* A client on loop. 0, or BAR_ERR_NOMEM / BAR_ERR_INTERNAL (curl). max_conns:
 * idle connections kept for reuse (0: curl's default). */
int uphttp_create(uphttp_t **out, uv_loop_t *loop, int max_conns, bar_msg_t *msg);

/* Start a request. 0 and *out (valid until on_done or uphttp_abort), or an
 * error (nothing is called back). */
int uphttp_start(uphttp_t *h, const uphttp_req_t *r, uphttp_xfer_t **out, bar_msg_t *msg);

/* Stop a transfer: its connection is closed (the upstream sees the client
 * leave) and no callback comes for it any more. */
void uphttp_abort(uphttp_xfer_t *x);

/* Transfers running. */
int uphttp_n_active(const uphttp_t *h);

/* Abort every transfer (no callbacks), release curl, close the loop handles
 * (the memory goes once their close callbacks ran: keep running the loop). */
void uphttp_destroy(uphttp_t *h);

#endif
