/* http.h — HTTP/1.1 request reading on top of Node's http_parser, and the
 * response-head formatting that goes with it.
 *
 * An http_rx_t turns a byte stream into complete requests, one at a time:
 * feed bytes, and the reader stops right after a complete request (so
 * pipelined requests are handed out strictly in order) or at the first error,
 * which carries the HTTP status the server should answer with (400, 413, 431,
 * 505) before closing. Content-Length and chunked bodies are both decoded into
 * req.body. Limits: header bytes (request line + headers, → 431), header
 * count (→ 431) and body bytes (→ 413, checked against Content-Length before
 * any body byte arrives so `Expect: 100-continue` can be refused early).
 *
 * Not for: sockets, timers or routing (server.c), or JSON (src/api/). */
#ifndef BARISTA_SERVER_HTTP_H
#define BARISTA_SERVER_HTTP_H

#include <http_parser.h>
#include <stddef.h>

#include "util/buf.h"

#define HTTP_MAX_HEADERS 100

typedef struct {
    const char *p;
    size_t n;
} http_slice_t;

typedef struct {
    size_t name_off, name_len, value_off, value_len; /* into http_req_t.hbuf */
} http_hdr_t;

typedef struct {
    int method; /* enum http_method */
    int http_major, http_minor;
    int keep_alive;      /* the client wants the connection kept open */
    int expect_continue; /* Expect: 100-continue was sent */
    buf_t url;           /* raw request target */
    size_t path_len;     /* url.p[0..path_len) is the path, the rest after '?' the query */
    buf_t hbuf;          /* header names and values, NUL-separated */
    http_hdr_t hdrs[HTTP_MAX_HEADERS];
    int n_hdrs;
    buf_t body; /* decoded body (chunked framing removed) */
} http_req_t;

typedef enum {
    HTTP_RX_IDLE = 0, /* between requests: no byte of the next one yet */
    HTTP_RX_HEAD,     /* request line / headers in progress */
    HTTP_RX_BODY,     /* headers complete, body in progress */
    HTTP_RX_DONE,     /* a complete request is in req; call http_rx_next */
    HTTP_RX_ERROR,    /* err_status says what to answer; the connection must close */
} http_rx_state_t;

typedef struct {
    http_parser parser;
    http_parser_settings settings;
    http_rx_state_t state;
    int err_status;       /* HTTP status for HTTP_RX_ERROR */
    const char *err_text; /* short reason for logs / error bodies */
    size_t max_header_bytes, max_body_bytes;
    size_t header_bytes;
    int last_was_value; /* header callback state */
    http_req_t req;
} http_rx_t;

/* Set up a reader with the given limits. */
void http_rx_init(http_rx_t *rx, size_t max_header_bytes, size_t max_body_bytes);

/* Free the reader's buffers. */
void http_rx_free(http_rx_t *rx);

/* Feed bytes. Returns how many were consumed; the reader stops early when a
 * request completes (state DONE) or on an error (state ERROR). Feeding 0 bytes
 * signals EOF: a request cut short then becomes an ERROR (400). */
size_t http_rx_feed(http_rx_t *rx, const char *data, size_t len);

/* After DONE: forget the request and get ready for the next one. */
void http_rx_next(http_rx_t *rx);

/* Header value by case-insensitive name (first match), or {NULL, 0}. */
http_slice_t http_req_header(const http_req_t *req, const char *name);
http_slice_t http_req_path(const http_req_t *req);
http_slice_t http_req_query(const http_req_t *req);
const char *http_req_method_name(const http_req_t *req);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_status_text(int status);

/* Append a response head: status line, Date-free fixed headers, Content-Type,
 * Content-Length (content_length >= 0) or Transfer-Encoding: chunked
 * (content_length < 0), Connection, then `extra` (already "\r\n"-terminated
 * lines, may be NULL) and the blank line. */
int http_format_head(buf_t *out, int status, const char *content_type, long long content_length,
                     int keep_alive, const char *extra);

#endif
