/* http.c — http_parser glue: bytes in, complete requests out (see http.h).
 * Not for: sockets, timers, routing. */
#include "server/http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define RX(p) ((http_rx_t *)(p)->data)

static int fail(http_rx_t *rx, int status, const char *text)
{
    if (rx->state != HTTP_RX_ERROR) {
        rx->state = HTTP_RX_ERROR;
        rx->err_status = status;
        rx->err_text = text;
    }
    return -1;
}

static int count_head(http_rx_t *rx, size_t n)
{
    rx->header_bytes += n;
    if (rx->header_bytes > rx->max_header_bytes)
        return fail(rx, 431, "request header fields too large");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    http_rx_t *rx = RX(p);
    rx->state = HTTP_RX_HEAD;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_rx_t *rx = RX(p);
    if (count_head(rx, n)) return -1;
    if (buf_append(&rx->req.url, at, n)) return fail(rx, 500, "out of memory");
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_rx_t *rx = RX(p);
    http_req_t *r = &rx->req;
    if (count_head(rx, n + 4)) return -1;
    /* a chunked body's trailer fields: counted against the limit, never
     * added to the headers that auth and the cache namespace read */
    if (rx->state == HTTP_RX_BODY) return 0;
    if (rx->last_was_value || r->n_hdrs == 0) {
        if (r->n_hdrs == HTTP_MAX_HEADERS) return fail(rx, 431, "too many header fields");
        if (r->n_hdrs > 0 && buf_append(&r->hbuf, "", 1)) return fail(rx, 500, "out of memory");
        http_hdr_t *h = &r->hdrs[r->n_hdrs++];
        h->name_off = r->hbuf.n;
        h->name_len = 0;
        h->value_off = 0;
        h->value_len = 0;
        rx->last_was_value = 0;
    }
    http_hdr_t *h = &r->hdrs[r->n_hdrs - 1];
    if (buf_append(&r->hbuf, at, n)) return fail(rx, 500, "out of memory");
    h->name_len += n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_rx_t *rx = RX(p);
    http_req_t *r = &rx->req;
    if (count_head(rx, n)) return -1;
    if (rx->state == HTTP_RX_BODY) return 0; /* trailer */
    if (r->n_hdrs == 0) return fail(rx, 400, "header value without a name");
    http_hdr_t *h = &r->hdrs[r->n_hdrs - 1];
    if (!rx->last_was_value) {
        if (buf_append(&r->hbuf, "", 1)) return fail(rx, 500, "out of memory");
        h->value_off = r->hbuf.n;
        rx->last_was_value = 1;
    }
    if (buf_append(&r->hbuf, at, n)) return fail(rx, 500, "out of memory");
    h->value_len += n;
    return 0;
}

static int slice_ieq(http_slice_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && !strncasecmp(s.p, lit, n);
}

static int on_headers_complete(http_parser *p)
{
    http_rx_t *rx = RX(p);
    http_req_t *r = &rx->req;
    r->method = p->method;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p);
    if (r->http_major != 1) return fail(rx, 505, "HTTP version not supported");
    const char *q = memchr(r->url.p ? r->url.p : "", '?', r->url.n);
    r->path_len = q ? (size_t)(q - r->url.p) : r->url.n;
    http_slice_t ex = http_req_header(r, "expect");
    if (ex.p) {
        if (!slice_ieq(ex, "100-continue")) return fail(rx, 417, "unsupported Expect value");
        r->expect_continue = 1;
    }
    /* content_length is ULLONG_MAX when absent (or chunked) */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > rx->max_body_bytes)
        return fail(rx, 413, "request body too large");
    rx->state = HTTP_RX_BODY;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_rx_t *rx = RX(p);
    if (rx->req.body.n + n > rx->max_body_bytes) return fail(rx, 413, "request body too large");
    if (buf_append(&rx->req.body, at, n)) return fail(rx, 500, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    http_rx_t *rx = RX(p);
    rx->state = HTTP_RX_DONE;
    http_parser_pause(p, 1);
    return 0;
}

void http_rx_init(http_rx_t *rx, size_t max_header_bytes, size_t max_body_bytes)
{
    memset(rx, 0, sizeof *rx);
    http_parser_init(&rx->parser, HTTP_REQUEST);
    rx->parser.data = rx;
    http_parser_settings_init(&rx->settings);
    rx->settings.on_message_begin = on_message_begin;
    rx->settings.on_url = on_url;
    rx->settings.on_header_field = on_header_field;
    rx->settings.on_header_value = on_header_value;
    rx->settings.on_headers_complete = on_headers_complete;
    rx->settings.on_body = on_body;
    rx->settings.on_message_complete = on_message_complete;
    rx->max_header_bytes = max_header_bytes;
    rx->max_body_bytes = max_body_bytes;
}

void http_rx_free(http_rx_t *rx)
{
    buf_free(&rx->req.url);
    buf_free(&rx->req.hbuf);
    buf_free(&rx->req.body);
}

static int errno_status(enum http_errno e)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        return 431;
    case HPE_INVALID_VERSION:
        return 505;
    default:
        return 400;
    }
}

size_t http_rx_feed(http_rx_t *rx, const char *data, size_t len)
{
    if (rx->state == HTTP_RX_DONE || rx->state == HTTP_RX_ERROR) return 0;
    if (len == 0) {
        /* EOF: a request in progress was cut short */
        if (rx->state == HTTP_RX_HEAD || rx->state == HTTP_RX_BODY)
            fail(rx, 400, "connection closed mid-request");
        return 0;
    }
    size_t n = http_parser_execute(&rx->parser, &rx->settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&rx->parser);
    if (rx->state == HTTP_RX_DONE) {
        /* paused after a complete request; leave the rest for later */
        return n;
    }
    if (rx->state == HTTP_RX_ERROR) return n;
    if (e != HPE_OK) {
        fail(rx, errno_status(e), http_errno_description(e));
        return n;
    }
    return n;
}

void http_rx_next(http_rx_t *rx)
{
    http_req_t *r = &rx->req;
    buf_clear(&r->url);
    buf_clear(&r->hbuf);
    if (r->body.cap > 64 * 1024)
        buf_free(&r->body); /* do not keep a big body's memory per idle connection */
    else
        buf_clear(&r->body);
    r->n_hdrs = 0;
    r->path_len = 0;
    r->expect_continue = 0;
    r->keep_alive = 0;
    rx->header_bytes = 0;
    rx->last_was_value = 0;
    rx->state = HTTP_RX_IDLE;
    http_parser_pause(&rx->parser, 0);
}

http_slice_t http_req_header(const http_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < req->n_hdrs; i++) {
        const http_hdr_t *h = &req->hdrs[i];
        if (h->name_len == n && !strncasecmp(req->hbuf.p + h->name_off, name, n)) {
            http_slice_t s = {req->hbuf.p + h->value_off, h->value_len};
            if (!h->value_off) s.p = "";
            return s;
        }
    }
    return (http_slice_t){NULL, 0};
}

http_slice_t http_req_path(const http_req_t *req)
{
    return (http_slice_t){req->url.p ? req->url.p : "", req->path_len};
}

http_slice_t http_req_query(const http_req_t *req)
{
    if (req->path_len >= req->url.n) return (http_slice_t){"", 0};
    return (http_slice_t){req->url.p + req->path_len + 1, req->url.n - req->path_len - 1};
}

const char *http_req_method_name(const http_req_t *req)
{
    return http_method_str((enum http_method)req->method);
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* Decimal digits of v (v >= 0) into the end of tmp; returns the first. */
static char *fmt_ull(char tmp[24], unsigned long long v)
{
    char *p = tmp + 24;
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    return p;
}

int http_format_head(buf_t *out, int status, const char *content_type, long long content_length,
                     int keep_alive, const char *extra)
{
    /* hot on every response: plain appends, no printf */
    static const char server[] = "Server: barista/" BARISTA_VERSION "\r\n";
    char tmp[24];
    const char *st = http_status_text(status);
    if (status < 100 || status > 999) status = 500;
    char code[5] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), ' ', 0};
    int rc = buf_reserve(out, 160 + (content_type ? strlen(content_type) : 0) +
                                  (extra ? strlen(extra) : 0));
    if (!rc) rc = buf_append(out, "HTTP/1.1 ", 9);
    if (!rc) rc = buf_append(out, code, 4);
    if (!rc) rc = buf_puts(out, st);
    if (!rc) rc = buf_append(out, "\r\n", 2);
    if (!rc) rc = buf_append(out, server, sizeof server - 1);
    if (!rc && content_type) {
        rc = buf_append(out, "Content-Type: ", 14);
        if (!rc) rc = buf_puts(out, content_type);
        if (!rc) rc = buf_append(out, "\r\n", 2);
    }
    if (!rc) {
        if (content_length >= 0) {
            char *d = fmt_ull(tmp, (unsigned long long)content_length);
            rc = buf_append(out, "Content-Length: ", 16);
            if (!rc) rc = buf_append(out, d, (size_t)(tmp + sizeof tmp - d));
            if (!rc) rc = buf_append(out, "\r\n", 2);
        } else {
            rc = buf_puts(out, "Transfer-Encoding: chunked\r\n");
        }
    }
    if (!rc)
        rc = buf_puts(out, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (!rc && extra) rc = buf_puts(out, extra);
    if (!rc) rc = buf_append(out, "\r\n", 2);
    return rc;
}
