/* test_http.c — the HTTP request reader (src/server/http.c): fragments,
 * pipelining, chunked bodies, limits and malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "server/http.h"

static http_rx_t rx;

static int setup(void **st)
{
    (void)st;
    http_rx_init(&rx, 1024, 4096);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    http_rx_free(&rx);
    return 0;
}

static size_t feed_str(const char *s)
{
    return http_rx_feed(&rx, s, strlen(s));
}

static void test_simple_get(void **st)
{
    (void)st;
    const char *req = "GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing: yes\r\n\r\n";
    assert_int_equal(feed_str(req), strlen(req));
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_int_equal(rx.req.method, HTTP_GET);
    http_slice_t p = http_req_path(&rx.req), q = http_req_query(&rx.req);
    assert_int_equal(p.n, strlen("/v1/models"));
    assert_memory_equal(p.p, "/v1/models", p.n);
    assert_int_equal(q.n, 3);
    assert_memory_equal(q.p, "x=1", 3);
    http_slice_t h = http_req_header(&rx.req, "x-thing");
    assert_int_equal(h.n, 3);
    assert_memory_equal(h.p, "yes", 3);
    assert_null(http_req_header(&rx.req, "missing").p);
    assert_true(rx.req.keep_alive);
}

static void test_byte_by_byte(void **st)
{
    (void)st;
    const char *req = "POST /x HTTP/1.1\r\nContent-Length: 5\r\nHost: a\r\n\r\nhello";
    size_t n = strlen(req);
    for (size_t i = 0; i < n; i++) {
        assert_int_not_equal(rx.state, HTTP_RX_DONE);
        assert_int_equal(http_rx_feed(&rx, req + i, 1), 1);
    }
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_int_equal(rx.req.body.n, 5);
    assert_memory_equal(rx.req.body.p, "hello", 5);
    assert_int_equal(http_req_header(&rx.req, "host").n, 1);
}

static void test_pipelined(void **st)
{
    (void)st;
    const char *two =
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        "GET /c HTTP/1.1\r\n\r\n";
    size_t off = 0, n = strlen(two);
    const char *paths[] = {"/a", "/b", "/c"};
    for (int k = 0; k < 3; k++) {
        off += http_rx_feed(&rx, two + off, n - off);
        assert_int_equal(rx.state, HTTP_RX_DONE);
        http_slice_t p = http_req_path(&rx.req);
        assert_int_equal(p.n, 2);
        assert_memory_equal(p.p, paths[k], 2);
        if (k == 1) assert_memory_equal(rx.req.body.p, "hi", 2);
        http_rx_next(&rx);
    }
    assert_int_equal(off, n);
    assert_int_equal(rx.state, HTTP_RX_IDLE);
}

static void test_chunked(void **st)
{
    (void)st;
    const char *req = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_int_equal(feed_str(req), strlen(req));
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_int_equal(rx.req.body.n, 11);
    assert_memory_equal(rx.req.body.p, "hello world", 11);
}

/* Trailers after a chunked body never become request headers: a client
 * cannot add Authorization or X-Cache-Namespace after the head was checked. */
static void test_chunked_trailers_ignored(void **st)
{
    (void)st;
    const char *req = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                      "5\r\nhello\r\n0\r\nAuthorization: Bearer stolen\r\n"
                      "X-Cache-Namespace: other\r\nX-A: 2\r\n\r\n";
    assert_int_equal(feed_str(req), strlen(req));
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_null(http_req_header(&rx.req, "authorization").p);
    assert_null(http_req_header(&rx.req, "x-cache-namespace").p);
    http_slice_t a = http_req_header(&rx.req, "x-a");
    assert_int_equal(a.n, 1);
    assert_memory_equal(a.p, "1", 1);
    assert_memory_equal(rx.req.body.p, "hello", 5);
}

static void test_bad_chunk_size(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n");
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 400);
}

static void test_chunked_too_big(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[2100];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 3 && rx.state != HTTP_RX_ERROR; i++) {
        feed_str("834\r\n");
        http_rx_feed(&rx, chunk, sizeof chunk);
        feed_str("\r\n");
    }
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 413);
}

static void test_garbage_request_line(void **st)
{
    (void)st;
    feed_str("\x01\x02 garbage\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 400);
}

static void test_huge_headers(void **st)
{
    (void)st;
    feed_str("GET / HTTP/1.1\r\nX-Big: ");
    char big[2000];
    memset(big, 'b', sizeof big);
    http_rx_feed(&rx, big, sizeof big);
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 431);
}

static void test_too_many_headers(void **st)
{
    (void)st;
    http_rx_free(&rx);
    http_rx_init(&rx, 1 << 20, 4096);
    feed_str("GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS && rx.state != HTTP_RX_ERROR; i++)
        feed_str("A: b\r\n");
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 431);
}

static void test_content_length_too_big(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 413);
}

static void test_expect_continue(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_BODY);
    assert_true(rx.req.expect_continue);
    feed_str("ok");
    assert_int_equal(rx.state, HTTP_RX_DONE);
}

static void test_truncated_body_eof(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(rx.state, HTTP_RX_BODY);
    http_rx_feed(&rx, NULL, 0);
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 400);
}

static void test_cl_and_chunked(void **st)
{
    (void)st;
    feed_str("POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_ERROR);
    assert_int_equal(rx.err_status, 400);
}

static void test_http10_close(void **st)
{
    (void)st;
    feed_str("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_false(rx.req.keep_alive);
}

static void test_connection_close(void **st)
{
    (void)st;
    feed_str("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_int_equal(rx.state, HTTP_RX_DONE);
    assert_false(rx.req.keep_alive);
}

static void test_format_head(void **st)
{
    (void)st;
    buf_t b = {0};
    assert_int_equal(http_format_head(&b, 404, "application/json", 12, 1, "X-A: 1\r\n"), 0);
    assert_non_null(strstr(b.p, "HTTP/1.1 404 Not Found\r\n"));
    assert_non_null(strstr(b.p, "Content-Length: 12\r\n"));
    assert_non_null(strstr(b.p, "Connection: keep-alive\r\n"));
    assert_non_null(strstr(b.p, "X-A: 1\r\n\r\n"));
    buf_clear(&b);
    http_format_head(&b, 200, "text/event-stream", -1, 0, NULL);
    assert_non_null(strstr(b.p, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(b.p, "Connection: close\r\n"));
    buf_free(&b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_simple_get),
        T(test_byte_by_byte),
        T(test_pipelined),
        T(test_chunked),
        T(test_chunked_trailers_ignored),
        T(test_bad_chunk_size),
        T(test_chunked_too_big),
        T(test_garbage_request_line),
        T(test_huge_headers),
        T(test_too_many_headers),
        T(test_content_length_too_big),
        T(test_expect_continue),
        T(test_truncated_body_eof),
        T(test_cl_and_chunked),
        T(test_http10_close),
        T(test_connection_close),
        T(test_format_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
