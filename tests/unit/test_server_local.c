/* test_server_local.c — local requests (src/server/server.c,
 * srv_local_create): a handler sees the method, target, query, headers and
 * body it was given; srv_respond and srv_stream_* reach the caller's done
 * callback with status, header lines and the whole body; srv_local_abort
 * runs the handler's on_abort and done never comes, or — with no on_abort —
 * lets the handler answer later into nothing (ASan checks the frees). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <uv.h>

#include "server/server.h"

typedef struct {
    int calls, status;
    char headers[256], body[256];
} done_t;

static void on_done(void *ud, int status, const char *headers, const char *body, size_t n)
{
    done_t *d = ud;
    d->calls++;
    d->status = status;
    snprintf(d->headers, sizeof d->headers, "%s", headers);
    snprintf(d->body, sizeof d->body, "%.*s", (int)n, body);
}

static const srv_header_t HDRS[] = {{"Authorization", "Bearer k"}, {"x-empty", ""}};

static srv_req_t *make(uv_loop_t *loop, done_t *d)
{
    return srv_local_create(loop, HTTP_POST, "/v1/x?a=1", HDRS, 2, "{\"q\":1}", 7, on_done, d);
}

static void test_respond(void **st)
{
    (void)st;
    done_t d = {0};
    srv_req_t *r = make(uv_default_loop(), &d);
    assert_non_null(r);
    assert_true(srv_req_is_local(r));
    const http_req_t *h = srv_req_http(r);
    assert_int_equal(h->method, HTTP_POST);
    http_slice_t p = http_req_path(h), q = http_req_query(h);
    assert_int_equal(p.n, 5);
    assert_memory_equal(p.p, "/v1/x", 5);
    assert_int_equal(q.n, 3);
    http_slice_t a = http_req_header(h, "authorization");
    assert_int_equal(a.n, 8);
    assert_memory_equal(a.p, "Bearer k", 8);
    assert_non_null(http_req_header(h, "X-Empty").p);
    assert_null(http_req_header(h, "prefer").p);
    assert_int_equal(h->body.n, 7);
    assert_ptr_equal(srv_req_loop(r), uv_default_loop());
    assert_true(srv_req_writable(r));
    assert_int_equal(srv_respond(r, 404, "application/json", "{}", 2, "X-A: b\r\n"), 0);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 404);
    assert_string_equal(d.headers, "Content-Type: application/json\r\nX-A: b\r\n");
    assert_string_equal(d.body, "{}");
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}

static void test_stream(void **st)
{
    (void)st;
    done_t d = {0};
    srv_req_t *r = make(uv_default_loop(), &d);
    assert_int_equal(srv_stream_begin(r, 200, "text/event-stream", NULL), 0);
    assert_int_equal(srv_respond(r, 200, "x", "y", 1, NULL), BAR_ERR_INVALID);
    assert_int_equal(srv_stream_write(r, "data: 1\n\n", 9), 0);
    assert_int_equal(srv_stream_write(r, "data: 2\n\n", 9), 0);
    assert_int_equal(d.calls, 0);
    assert_int_equal(srv_stream_end(r), 0);
    assert_int_equal(d.calls, 1);
    assert_string_equal(d.body, "data: 1\n\ndata: 2\n\n");
    assert_string_equal(d.headers, "Content-Type: text/event-stream\r\n");
    uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}

static int aborted;
static void on_abort(void *user, srv_req_t *r)
{
    (void)r;
    aborted += *(int *)user;
}

static void test_abort(void **st)
{
    (void)st;
    done_t d = {0};
    int one = 1;
    srv_req_t *r = make(uv_default_loop(), &d);
    srv_req_set_user(r, &one, on_abort, NULL);
    aborted = 0;
    srv_local_abort(r); /* freed here */
    assert_int_equal(aborted, 1);
    assert_int_equal(d.calls, 0);
    /* no on_abort: the handler still holds it and answers into nothing */
    r = make(uv_default_loop(), &d);
    srv_local_abort(r);
    srv_local_abort(r); /* idempotent */
    assert_int_equal(srv_respond(r, 200, "application/json", "{}", 2, NULL), 0);
    assert_int_equal(d.calls, 0);
    uv_run(uv_default_loop(), UV_RUN_DEFAULT); /* the frees */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_respond),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
