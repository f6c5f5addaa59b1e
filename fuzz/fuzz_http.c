/* fuzz_http.c — libFuzzer target for the HTTP request reader
 * (src/server/http.c).
 *
 * The first input byte picks how the rest is cut into reads (1..256 bytes
 * each), the way a socket delivers it; the rest is fed to one http_rx_t with
 * small limits, request after request (pipelining), then EOF. Every complete
 * request is walked: path and query must lie inside the URL, every header
 * name/value inside the header buffer, the body within the body limit. An
 * error must carry a 4xx/5xx status. Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "server/http.h"

static void check_request(const http_req_t *r, size_t max_body)
{
    http_slice_t path = http_req_path(r), q = http_req_query(r);
    if (path.n > r->url.n || q.n > r->url.n) abort();
    touch(path.p, path.n);
    touch(q.p, q.n);
    if (r->n_hdrs < 0 || r->n_hdrs > HTTP_MAX_HEADERS) abort();
    for (int i = 0; i < r->n_hdrs; i++) {
        const http_hdr_t *h = &r->hdrs[i];
        if (h->name_off + h->name_len > r->hbuf.n) abort();
        if (h->value_off && h->value_off + h->value_len > r->hbuf.n) abort();
        touch(r->hbuf.p + h->name_off, h->name_len);
        if (h->value_off) touch(r->hbuf.p + h->value_off, h->value_len);
    }
    http_slice_t v = http_req_header(r, "content-type");
    touch(v.p, v.n);
    if (r->body.n > max_body) abort();
    touch(r->body.p, r->body.n);
    touch(http_req_method_name(r), 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = (size_t)data[0] + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    http_rx_t rx;
    http_rx_init(&rx, 512, 1024);
    size_t off = 0;
    int requests = 0;
    while (off < n && rx.state != HTTP_RX_ERROR) {
        size_t len = n - off < step ? n - off : step;
        size_t used = http_rx_feed(&rx, p + off, len);
        if (used > len) abort();
        off += used;
        if (rx.state == HTTP_RX_DONE) {
            check_request(&rx.req, 1024);
            http_rx_next(&rx);
            if (++requests > 10000) abort();
        } else if (rx.state != HTTP_RX_ERROR && used == 0) {
            abort(); /* no progress without a reason */
        }
    }
    if (rx.state != HTTP_RX_ERROR) http_rx_feed(&rx, NULL, 0);
    if (rx.state == HTTP_RX_ERROR && (rx.err_status < 400 || rx.err_status > 599)) abort();
    buf_t head = {0};
    http_format_head(&head, rx.state == HTTP_RX_ERROR ? rx.err_status : 200, "text/plain", 0, 1,
                     NULL);
    buf_free(&head);
    http_rx_free(&rx);
    return 0;
}
