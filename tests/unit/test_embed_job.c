/* test_embed_job.c — the /v1/embeddings handler (src/api/embed_job.c) in a
 * real server on a real loop, against a scripted embedding backend: the
 * reply and usage, a backend error and a refusal as HTTP errors, dimensions
 * checked against the answer, model routing both ways, the deadline (504 +
 * cancel), a client that leaves (cancel, nobody answered) and shutdown (503
 * to a waiting request, its job cancelled before the backend goes). The
 * real encoder is exercised by tests/e2e/test_embeddings.py.
 *
 * The loop runs on the main thread; a client thread speaks HTTP over
 * sockets and records what it got; cmocka asserts on the main thread after
 * the loop ends (asserts must not longjmp across threads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "backend/backend.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/timeutil.h"

/* ---- the scripted embedding backend ---- */

typedef struct fjob {
    uint64_t id;
    bk_embed_fn cb;
    void *user;
    int n;
    int never; /* first input "never": answered only by cancel (never) */
    int fail;  /* first input "fail": an error result */
    struct fjob *next;
} fjob_t;

typedef struct {
    backend_t base;
    uv_timer_t tick; /* answers queued jobs on the next loop turn */
    fjob_t *jobs;
    uint64_t next_id;
} fake_t;

/* Counters that outlive the backend (read by the client thread: atomics). */
static int n_embed, n_cancel, n_pending_at_destroy;

static void fake_tick(uv_timer_t *t)
{
    fake_t *f = t->data;
    fjob_t **pp = &f->jobs;
    while (*pp) {
        fjob_t *j = *pp;
        if (j->never) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        bk_embed_result_t r = {0};
        float v[8 * 4];
        int nt[8];
        if (j->fail) {
            r.err = BAR_ERR_INVALID;
            r.status = 400;
            r.msg = "input[0]: token id 999999 is out of the vocabulary (30522)";
            r.param = "input";
        } else {
            for (int i = 0; i < j->n && i < 8; i++) {
                for (int k = 0; k < 4; k++)
                    v[i * 4 + k] = (float)i + (float)k / 10;
                nt[i] = i + 2;
            }
            r.vecs = v;
            r.dim = 4;
            r.n_tokens = nt;
            r.n = j->n;
            r.n_cached = j->n > 1 ? 1 : 0;
        }
        j->cb(j->user, &r);
        free(j);
    }
}

static int fake_submit(backend_t *b, const bk_req_t *req, uint64_t *id, bar_msg_t *msg)
{
    (void)b, (void)req, (void)id;
    return bar_fail(msg, BAR_ERR_UNSUPPORTED, "an embedding model does not generate");
}

static void fake_cancel(backend_t *b, uint64_t id)
{
    fake_t *f = (fake_t *)b;
    for (fjob_t **pp = &f->jobs; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            fjob_t *j = *pp;
            *pp = j->next;
            free(j);
            __atomic_add_fetch(&n_cancel, 1, __ATOMIC_SEQ_CST);
            return;
        }
}

static void fake_stats(backend_t *b, bk_stats_t *out)
{
    (void)b;
    memset(out, 0, sizeof *out);
    out->n_ctx = 256;
    out->kind = "local";
}

static int fake_embed(backend_t *b, const bk_embed_req_t *req, uint64_t *id, bar_msg_t *msg)
{
    fake_t *f = (fake_t *)b;
    const char *t0 = req->texts ? req->texts[0] : "";
    size_t l0 = req->texts ? req->lens[0] : 0;
    if (l0 == 4 && !memcmp(t0, "busy", 4)) return bar_fail(msg, BAR_ERR_BUSY, "queue full");
    fjob_t *j = calloc(1, sizeof *j);
    if (!j) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    j->id = ++f->next_id;
    j->cb = req->cb;
    j->user = req->user;
    j->n = req->n;
    j->never = l0 == 5 && !memcmp(t0, "never", 5);
    j->fail = l0 == 4 && !memcmp(t0, "fail", 4);
    j->next = f->jobs;
    f->jobs = j;
    *id = j->id;
    __atomic_add_fetch(&n_embed, 1, __ATOMIC_SEQ_CST);
    uv_timer_start(&f->tick, fake_tick, 1, 0);
    return 0;
}

static void fake_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_destroy(backend_t *b)
{
    fake_t *f = (fake_t *)b;
    /* the api cancels its embed jobs before it destroys the backend */
    for (fjob_t *j = f->jobs; j; j = j->next)
        n_pending_at_destroy++;
    while (f->jobs) {
        fjob_t *j = f->jobs;
        f->jobs = j->next;
        free(j);
    }
    uv_close((uv_handle_t *)&f->tick, fake_closed);
}

static const bk_ops_t FAKE_OPS = {fake_submit, fake_cancel,  fake_stats, NULL,
                                  fake_embed,  fake_destroy, NULL};

/* A chat model that is never asked to generate here. */
static void chat_destroy(backend_t *b)
{
    free(b);
}
static const bk_ops_t CHAT_OPS = {fake_submit, fake_cancel,  fake_stats, NULL,
                                  NULL,        chat_destroy, NULL};

/* ---- the client thread ---- */

#define N_REQ 16
typedef struct {
    int status;
    char body[65536];
} resp_t;

typedef struct {
    int port;
    resp_t r[N_REQ];
    char metrics[65536];
    int cancel_seen; /* fake cancels counted when the disconnect was noticed */
    uv_async_t done, shut;
    int shutdown_status;
} client_t;

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_req(int fd, const char *method, const char *path, const char *body)
{
    char head[512];
    size_t n = body ? strlen(body) : 0;
    int k = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, n);
    if (write(fd, head, (size_t)k) != k) return;
    if (n && write(fd, body, n) != (ssize_t)n) return;
}

/* Read to EOF: the status and the body (cut to fit). */
static void read_resp(int fd, resp_t *out)
{
    static char buf[1 << 16];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    out->status = n > 12 ? atoi(buf + 9) : -1;
    const char *b = strstr(buf, "\r\n\r\n");
    snprintf(out->body, sizeof out->body, "%s", b ? b + 4 : "");
}

static void http(client_t *c, int i, const char *method, const char *path, const char *body)
{
    int fd = dial(c->port);
    if (fd < 0) {
        c->r[i].status = -2;
        return;
    }
    send_req(fd, method, path, body);
    read_resp(fd, &c->r[i]);
    close(fd);
}

static void get_metrics(client_t *c)
{
    static resp_t m;
    int fd = dial(c->port);
    if (fd < 0) return;
    send_req(fd, "GET", "/metrics", NULL);
    read_resp(fd, &m);
    close(fd);
    snprintf(c->metrics, sizeof c->metrics, "%s", m.body);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    const char *P = "/v1/embeddings";
    /* first: the dimensions are not known before the first answer */
    http(c, 4, "POST", P, "{\"input\":\"a\",\"dimensions\":8}");
    http(c, 5, "POST", P, "{\"input\":\"a\",\"dimensions\":8}"); /* refused before the backend */
    http(c, 0, "POST", P, "{\"input\":[\"a\",\"b\"]}");
    http(c, 1, "POST", P, "{\"input\":\"a\",\"encoding_format\":\"base64\",\"model\":\"emb\"}");
    http(c, 2, "POST", P, "{\"input\":\"fail\"}");
    http(c, 3, "POST", P, "{\"input\":\"busy\"}");
    http(c, 6, "POST", P, "{\"input\":\"a\",\"model\":\"chat\"}");
    http(c, 7, "POST", P, "{\"input\":\"a\",\"model\":\"nope\"}");
    http(c, 8, "POST", P, "{\"input\":\"never\",\"timeout\":0.05}");
    http(c, 9, "POST", "/v1/chat/completions",
         "{\"model\":\"emb\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    http(c, 10, "GET", "/v1/models", NULL);
    http(c, 11, "POST", P, "{\"input\":[\"a\",3]}");
    /* a client that leaves while its job waits */
    int fd = dial(c->port);
    send_req(fd, "POST", P, "{\"input\":\"never\"}");
    double t0 = time_now_mono();
    while (__atomic_load_n(&n_embed, __ATOMIC_SEQ_CST) < 6 && time_now_mono() - t0 < 10)
        usleep(1000);
    close(fd);
    while (__atomic_load_n(&n_cancel, __ATOMIC_SEQ_CST) < 2 && time_now_mono() - t0 < 10)
        usleep(1000);
    c->cancel_seen = __atomic_load_n(&n_cancel, __ATOMIC_SEQ_CST);
    get_metrics(c);
    /* shutdown while a request waits: the main thread cancels all */
    fd = dial(c->port);
    send_req(fd, "POST", P, "{\"input\":\"never\"}");
    t0 = time_now_mono();
    while (__atomic_load_n(&n_embed, __ATOMIC_SEQ_CST) < 7 && time_now_mono() - t0 < 10)
        usleep(1000);
    uv_async_send(&c->shut);
    read_resp(fd, &c->r[12]);
    close(fd);
    uv_async_send(&c->done);
    return NULL;
}

/* ---- the server ---- */

static api_t *A;
static srv_t *S;

static void on_shut(uv_async_t *h)
{
    (void)h;
    api_cancel_all(A);
}

static void on_done(uv_async_t *h)
{
    client_t *c = h->data;
    uv_close((uv_handle_t *)&c->done, NULL);
    uv_close((uv_handle_t *)&c->shut, NULL);
    api_destroy(A);
    srv_destroy(S);
}

static cJSON *json(const resp_t *r)
{
    cJSON *j = cJSON_Parse(r->body);
    if (!j) print_error("not JSON: %s\n", r->body);
    assert_non_null(j);
    return j;
}

static void assert_error(const resp_t *r, int status, const char *param, const char *sub)
{
    if (r->status != status || !strstr(r->body, sub))
        print_error("status %d body %s (want %d, '%s')\n", r->status, r->body, status, sub);
    assert_int_equal(r->status, status);
    cJSON *j = json(r);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_non_null(e);
    cJSON *p = cJSON_GetObjectItem(e, "param");
    if (param)
        assert_string_equal(p->valuestring, param);
    else
        assert_true(cJSON_IsNull(p));
    assert_non_null(strstr(cJSON_GetObjectItem(e, "message")->valuestring, sub));
    cJSON_Delete(j);
}

static void test_handler(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    static srv_settings_t set;
    static cfg_source_t src[64];
    cfg_t cfg = srv_settings_cfg(&set, src);
    bar_msg_t msg = {{0}};
    assert_int_equal(cfg_set_defaults(&cfg, &msg), 0);
    model_list_t ml = {0};
    assert_int_equal(model_list_add_arg(&ml, "chat=/nonexistent/chat.gguf", &msg), 0);
    assert_int_equal(model_list_add_embedding(&ml, "emb=/nonexistent/emb", &msg), 0);
    assert_int_equal(model_list_finish(&ml, &msg), 0);
    assert_int_equal(api_create(&A, &loop, &set, &cfg, &ml, &msg), 0);

    backend_t *chat = calloc(1, sizeof *chat);
    chat->ops = &CHAT_OPS;
    fake_t *f = calloc(1, sizeof *f);
    f->base.ops = &FAKE_OPS;
    uv_timer_init(&loop, &f->tick);
    f->tick.data = f;
    api_set_backend(A, 0, chat, "");
    api_set_backend(A, 1, &f->base, "");

    srv_opts_t o = {0};
    o.host = "127.0.0.1";
    o.max_body_bytes = 1 << 20;
    o.max_header_bytes = 16384;
    o.max_connections = 64;
    o.header_timeout_ms = o.body_timeout_ms = o.idle_timeout_ms = 10000;
    o.shutdown_grace_ms = 1000;
    o.write_queue_bytes = 65536;
    o.handler = api_handle;
    o.ud = A;
    o.on_response = api_on_response;
    assert_int_equal(srv_create(&S, &loop, &o, &msg), 0);
    api_set_server(A, S);

    static client_t c;
    memset(&c, 0, sizeof c);
    c.port = srv_port(S);
    uv_async_init(&loop, &c.done, on_done);
    uv_async_init(&loop, &c.shut, on_shut);
    c.done.data = c.shut.data = &c;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &c), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
    model_list_free(&ml);

    /* 0: two inputs, rows in order, usage = the tokens of both */
    assert_int_equal(c.r[0].status, 200);
    cJSON *j = json(&c.r[0]);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "emb");
    cJSON *data = cJSON_GetObjectItem(j, "data");
    assert_int_equal(cJSON_GetArraySize(data), 2);
    cJSON *row1 = cJSON_GetObjectItem(cJSON_GetArrayItem(data, 1), "embedding");
    assert_int_equal(cJSON_GetArraySize(row1), 4);
    assert_true((float)cJSON_GetArrayItem(row1, 2)->valuedouble == 1.0f + 2.0f / 10);
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 2 + 3);
    assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 5);
    cJSON_Delete(j);
    /* 1: base64 of 4 floats = 16 bytes = 24 characters */
    assert_int_equal(c.r[1].status, 200);
    j = json(&c.r[1]);
    const char *b64 =
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "embedding")
            ->valuestring;
    assert_int_equal(strlen(b64), 24);
    assert_string_equal(b64, "AAAAAM3MzD3NzEw+mpmZPg=="); /* 0, 0.1f, 0.2f, 0.3f LE */
    cJSON_Delete(j);
    /* 2: the backend's error, its status and param; 3: a refusal at submit */
    assert_error(&c.r[2], 400, "input", "out of the vocabulary");
    assert_error(&c.r[3], 503, NULL, "queue full");
    /* 4: dimensions checked against the answer; 5: then before the backend */
    assert_error(&c.r[4], 400, "dimensions", "fixed 4 dimensions");
    assert_error(&c.r[5], 400, "dimensions", "fixed 4 dimensions");
    /* 6, 7, 9: routing */
    assert_error(&c.r[6], 400, "model", "use the embedding model 'emb'");
    assert_error(&c.r[7], 404, "model", "does not exist");
    assert_error(&c.r[9], 400, "model", "is an embedding model");
    /* 8: the deadline: 504 and the job cancelled */
    assert_error(&c.r[8], 504, NULL, "deadline");
    /* 10: the model list says which is which */
    assert_int_equal(c.r[10].status, 200);
    assert_non_null(strstr(c.r[10].body, "\"id\":\"emb\""));
    assert_non_null(strstr(c.r[10].body, "\"mode\":\"embedding\""));
    assert_non_null(strstr(c.r[10].body, "\"dimensions\":4"));
    assert_non_null(strstr(c.r[10].body, "\"mode\":\"chat\""));
    /* 11: a schema error never reaches the backend */
    assert_error(&c.r[11], 400, "input", "input[1]");
    /* the disconnect cancelled its job (timeout 1 + disconnect 1) */
    assert_int_equal(c.cancel_seen, 2);
    assert_non_null(strstr(c.metrics, "barista_embeddings_requests_total{result=\"ok\"} 2\n"));
    assert_non_null(strstr(c.metrics, "barista_embeddings_requests_total{result=\"error\"} 3\n"));
    assert_non_null(
        strstr(c.metrics, "barista_embeddings_requests_total{result=\"cancelled\"} 2\n"));
    assert_non_null(strstr(c.metrics, "barista_embeddings_inputs_total 3\n"));
    assert_non_null(strstr(c.metrics, "barista_embeddings_tokens_total 7\n"));
    /* no backend_embed here: the feature-cache series are there, at 0 */
    assert_non_null(strstr(c.metrics, "barista_feature_cache_hits_total{cache=\"embedding\"} 0\n"));
    assert_non_null(strstr(c.metrics, "barista_embeddings_in_flight 0\n"));
    assert_non_null(strstr(c.metrics, "barista_cancelled_requests_total{reason=\"disconnect\"} 1"));
    /* shutdown: the waiting request got 503; every job was cancelled before
     * its backend was destroyed */
    assert_error(&c.r[12], 503, NULL, "shutting down");
    assert_int_equal(n_pending_at_destroy, 0);
    assert_int_equal(n_cancel, 3);
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
    const struct CMUnitTest tests[] = {T(test_handler)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
