/* test_reply.c — reply bytes (src/api/reply.c): the finish mapping, the
 * pending-logprob list, SSE events and JSON objects for given event sequences
 * and for stored cache entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/reply.h"

#define HEAD_CHAT                                                                                  \
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"          \
    "\"model\":\"m\",\"system_fingerprint\":\"barista\""
#define HEAD_CMPL                                                                                  \
    "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,"                    \
    "\"model\":\"m\",\"system_fingerprint\":\"barista\""

static const oai_resp_t CHAT = {OAI_CHAT, "chatcmpl-1", 1700000000, "m", NULL};
static const oai_resp_t CMPL = {OAI_COMPLETION, "cmpl-1", 1700000000, "m", NULL};

/* ---- SSE parsing ---- */

#define MAX_EV 32
typedef struct {
    int n;            /* events, [DONE] included */
    int done;         /* the last event is [DONE] */
    cJSON *j[MAX_EV]; /* parsed JSON of each non-[DONE] event */
} sse_t;

/* Split out into "data: X\n\n" events; every event must have that shape and
 * every payload but a final [DONE] must be JSON. */
static void sse_parse(const buf_t *out, sse_t *s)
{
    memset(s, 0, sizeof *s);
    size_t i = 0;
    while (i < out->n) {
        assert_true(s->n < MAX_EV);
        assert_false(s->done); /* nothing after [DONE] */
        assert_true(out->n - i >= 6);
        assert_memory_equal(out->p + i, "data: ", 6);
        i += 6;
        const char *end = strstr(out->p + i, "\n\n");
        assert_non_null(end);
        size_t len = (size_t)(end - (out->p + i));
        if (len == 6 && !memcmp(out->p + i, "[DONE]", 6)) {
            s->done = 1;
        } else {
            s->j[s->n] = cJSON_ParseWithLength(out->p + i, len);
            assert_non_null(s->j[s->n]);
        }
        s->n++;
        i += len + 2;
    }
    assert_int_equal(i, out->n);
}

static void sse_free(sse_t *s)
{
    for (int i = 0; i < s->n; i++)
        cJSON_Delete(s->j[i]);
}

static cJSON *choice0(cJSON *j)
{
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_non_null(c);
    return c;
}

static const char *str_at(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static double num_at(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static int near(double a, double b)
{
    return a - b < 1e-6 && b - a < 1e-6;
}

/* ---- finish mapping ---- */

static void test_finish_map(void **st)
{
    (void)st;
    assert_int_equal(reply_finish(BK_FINISH_STOP), OAI_FINISH_STOP);
    assert_int_equal(reply_finish(BK_FINISH_LENGTH), OAI_FINISH_LENGTH);
    assert_int_equal(reply_finish(BK_FINISH_TOOL_CALLS), OAI_FINISH_TOOL_CALLS);
    assert_int_equal(reply_finish(BK_FINISH_TIMEOUT), OAI_FINISH_TIMEOUT);
    assert_int_equal(reply_finish(BK_FINISH_CANCELLED), OAI_FINISH_TIMEOUT);
    assert_int_equal(reply_finish(BK_FINISH_ERROR), OAI_FINISH_NONE);
    assert_int_equal(reply_finish(BK_FINISH_NONE), OAI_FINISH_NONE);
}

/* ---- lp_list ---- */

static void test_lp_list_copies(void **st)
{
    (void)st;
    lp_list_t *l = lp_list_create();
    assert_non_null(l);
    assert_int_equal(lp_list_n(l), 0);
    assert_null(lp_list_items(l));

    char tok[8], a0[8], a1[8];
    strcpy(tok, "cat");
    strcpy(a0, "cat");
    strcpy(a1, "dog");
    lp_alt_t tops[2] = {{a0, 3, -0.25}, {a1, 3, -1.5}};
    lp_tok_t x = {tok, 3, -0.25, 2, tops};
    assert_int_equal(lp_list_push(l, &x), 0);
    /* the source is reused by the next event */
    strcpy(tok, "XYZ");
    strcpy(a0, "QQQ");
    strcpy(a1, "RRR");
    tops[1].logprob = 7;
    lp_tok_t y = {tok, 2, -3.0, 0, NULL};
    assert_int_equal(lp_list_push(l, &y), 0);

    assert_int_equal(lp_list_n(l), 2);
    const lp_tok_t *it = lp_list_items(l);
    assert_non_null(it);
    assert_int_equal(it[0].token_len, 3);
    assert_memory_equal(it[0].token, "cat", 3);
    assert_true(it[0].logprob == -0.25);
    assert_int_equal(it[0].n_top, 2);
    assert_memory_equal(it[0].top[0].token, "cat", 3);
    assert_memory_equal(it[0].top[1].token, "dog", 3);
    assert_int_equal(it[0].top[1].len, 3);
    assert_true(it[0].top[1].logprob == -1.5);
    assert_int_equal(it[1].token_len, 2);
    assert_memory_equal(it[1].token, "XY", 2);
    assert_true(it[1].logprob == -3.0);
    assert_int_equal(it[1].n_top, 0);

    lp_list_clear(l);
    assert_int_equal(lp_list_n(l), 0);
    assert_null(lp_list_items(l));
    assert_int_equal(lp_list_push(l, &y), 0);
    assert_int_equal(lp_list_n(l), 1);
    it = lp_list_items(l);
    assert_memory_equal(it[0].token, "XY", 2);
    lp_list_destroy(l);
    lp_list_destroy(NULL);
}

static void test_lp_list_growth(void **st)
{
    (void)st;
    lp_list_t *l = lp_list_create();
    assert_non_null(l);
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        char t[16], alt[3][16];
        lp_alt_t tops[3];
        snprintf(t, sizeof t, "tok%d", i);
        int nt = i % 4; /* 0..3 alternatives; tops grow past 16 too */
        for (int k = 0; k < nt; k++) {
            snprintf(alt[k], sizeof alt[k], "a%d.%d", i, k);
            tops[k] = (lp_alt_t){alt[k], strlen(alt[k]), -(double)k - 0.5};
        }
        lp_tok_t x = {t, strlen(t), -(double)i, nt, nt ? tops : NULL};
        assert_int_equal(lp_list_push(l, &x), 0);
        memset(t, '#', sizeof t);
        memset(alt, '#', sizeof alt);
    }
    assert_int_equal(lp_list_n(l), N);
    const lp_tok_t *it = lp_list_items(l);
    for (int i = 0; i < N; i++) {
        char t[16];
        snprintf(t, sizeof t, "tok%d", i);
        assert_int_equal(it[i].token_len, strlen(t));
        assert_memory_equal(it[i].token, t, strlen(t));
        assert_true(it[i].logprob == -(double)i);
        assert_int_equal(it[i].n_top, i % 4);
        for (int k = 0; k < i % 4; k++) {
            char a[16];
            snprintf(a, sizeof a, "a%d.%d", i, k);
            assert_int_equal(it[i].top[k].len, strlen(a));
            assert_memory_equal(it[i].top[k].token, a, strlen(a));
            assert_true(it[i].top[k].logprob == -(double)k - 0.5);
        }
    }
    lp_list_destroy(l);
}

/* ---- SSE ---- */

static void test_sse_open(void **st)
{
    (void)st;
    buf_t b = {0};
    assert_int_equal(reply_sse_open(&b, &CHAT), 0);
    assert_string_equal(b.p, "data: " HEAD_CHAT ",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                             "\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                             "\"finish_reason\":null}]}\n\n");
    buf_free(&b);
    assert_int_equal(reply_sse_open(&b, &CMPL), 0);
    assert_int_equal(b.n, 0);
    buf_free(&b);
}

static lp_alt_t TOPS[2] = {{"Hi", 2, -0.5}, {"Ho", 2, -1.25}};
static lp_tok_t LP_HI = {"Hi", 2, -0.5, 2, TOPS};

static void test_sse_delta_skip(void **st)
{
    (void)st;
    buf_t b = {0};
    assert_int_equal(reply_sse_delta(&b, &CHAT, "", 0, NULL, 0, 1), 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(reply_sse_delta(&b, &CMPL, NULL, 0, NULL, 0, 0), 0);
    assert_int_equal(b.n, 0);
    /* logprobs not wanted: an empty delta is still nothing */
    assert_int_equal(reply_sse_delta(&b, &CHAT, "", 0, &LP_HI, 1, 0), 0);
    assert_int_equal(b.n, 0);
    /* wanted: the event goes out for its logprobs */
    assert_int_equal(reply_sse_delta(&b, &CHAT, "", 0, &LP_HI, 1, 1), 0);
    sse_t s;
    sse_parse(&b, &s);
    assert_int_equal(s.n, 1);
    cJSON *c = choice0(s.j[0]);
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "delta"), "content"), "");
    cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(lc), 1);
    assert_string_equal(str_at(cJSON_GetArrayItem(lc, 0), "token"), "Hi");
    sse_free(&s);
    buf_free(&b);
}

static void test_sse_delta_chat(void **st)
{
    (void)st;
    buf_t b = {0};
    assert_int_equal(reply_sse_delta(&b, &CHAT, "Hi", 2, &LP_HI, 1, 1), 0);
    assert_int_equal(reply_sse_delta(&b, &CHAT, " there", 6, &LP_HI, 1, 0), 0);
    sse_t s;
    sse_parse(&b, &s);
    assert_int_equal(s.n, 2);
    assert_false(s.done);
    cJSON *c = choice0(s.j[0]);
    assert_string_equal(str_at(s.j[0], "object"), "chat.completion.chunk");
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "delta"), "content"), "Hi");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
    cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(lc), 1);
    cJSON *e0 = cJSON_GetArrayItem(lc, 0);
    assert_string_equal(str_at(e0, "token"), "Hi");
    assert_true(near(num_at(e0, "logprob"), -0.5));
    cJSON *tl = cJSON_GetObjectItem(e0, "top_logprobs");
    assert_int_equal(cJSON_GetArraySize(tl), 2);
    assert_string_equal(str_at(cJSON_GetArrayItem(tl, 0), "token"), "Hi");
    assert_string_equal(str_at(cJSON_GetArrayItem(tl, 1), "token"), "Ho");
    assert_true(near(num_at(cJSON_GetArrayItem(tl, 1), "logprob"), -1.25));
    /* not wanted: null */
    c = choice0(s.j[1]);
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "delta"), "content"), " there");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "logprobs")));
    sse_free(&s);
    buf_free(&b);
}

static void test_sse_delta_completion(void **st)
{
    (void)st;
    buf_t b = {0};
    lp_tok_t two[2] = {LP_HI, {"!", 1, -2.0, 0, NULL}};
    assert_int_equal(reply_sse_delta(&b, &CMPL, "Hi!", 3, two, 2, 1), 0);
    sse_t s;
    sse_parse(&b, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(str_at(s.j[0], "object"), "text_completion");
    cJSON *c = choice0(s.j[0]);
    assert_string_equal(str_at(c, "text"), "Hi!");
    cJSON *lp = cJSON_GetObjectItem(c, "logprobs");
    cJSON *toks = cJSON_GetObjectItem(lp, "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 2);
    assert_string_equal(cJSON_GetArrayItem(toks, 0)->valuestring, "Hi");
    assert_string_equal(cJSON_GetArrayItem(toks, 1)->valuestring, "!");
    cJSON *tlp = cJSON_GetObjectItem(lp, "token_logprobs");
    assert_int_equal(cJSON_GetArraySize(tlp), 2);
    assert_true(near(cJSON_GetArrayItem(tlp, 0)->valuedouble, -0.5));
    assert_true(near(cJSON_GetArrayItem(tlp, 1)->valuedouble, -2.0));
    cJSON *top0 = cJSON_GetArrayItem(cJSON_GetObjectItem(lp, "top_logprobs"), 0);
    assert_true(near(num_at(top0, "Ho"), -1.25));
    sse_free(&s);
    buf_free(&b);
}

static void test_sse_close(void **st)
{
    (void)st;
    buf_t b = {0};
    oai_usage_t u = {5, 2, 1};
    assert_int_equal(reply_sse_close(&b, &CHAT, OAI_FINISH_TIMEOUT, &u, 0), 0);
    assert_string_equal(b.p, "data: " HEAD_CHAT ",\"choices\":[{\"index\":0,\"delta\":{},"
                             "\"logprobs\":null,\"finish_reason\":\"timeout\"}]}\n\n"
                             "data: [DONE]\n\n");
    buf_free(&b);

    assert_int_equal(reply_sse_close(&b, &CHAT, OAI_FINISH_STOP, &u, 1), 0);
    assert_string_equal(b.p, "data: " HEAD_CHAT ",\"choices\":[{\"index\":0,\"delta\":{},"
                             "\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n"
                             "data: " HEAD_CHAT ",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
                             "\"completion_tokens\":2,\"total_tokens\":7,"
                             "\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n"
                             "data: [DONE]\n\n");
    buf_free(&b);

    assert_int_equal(reply_sse_close(&b, &CMPL, OAI_FINISH_LENGTH, &u, 0), 0);
    assert_string_equal(b.p, "data: " HEAD_CMPL ",\"choices\":[{\"index\":0,\"text\":\"\","
                             "\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n"
                             "data: [DONE]\n\n");
    buf_free(&b);
}

static void test_sse_error(void **st)
{
    (void)st;
    buf_t b = {0};
    oai_err_t e = {.status = 500, .type = "server_error", .code = NULL};
    strcpy(e.message, "the \"model\" broke");
    assert_int_equal(reply_sse_error(&b, &e), 0);
    assert_string_equal(b.p, "data: {\"error\":{\"message\":\"the \\\"model\\\" broke\","
                             "\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"
                             "data: [DONE]\n\n");
    buf_free(&b);
}

/* ---- JSON ---- */

static void check_usage(cJSON *j, int p, int c, int cached)
{
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal((int)num_at(u, "prompt_tokens"), p);
    assert_int_equal((int)num_at(u, "completion_tokens"), c);
    assert_int_equal((int)num_at(u, "total_tokens"), p + c);
    assert_int_equal((int)num_at(cJSON_GetObjectItem(u, "prompt_tokens_details"), "cached_tokens"),
                     cached);
}

static void test_reply_json(void **st)
{
    (void)st;
    buf_t b = {0};
    oai_usage_t u = {5, 2, 1};
    assert_int_equal(reply_json(&b, &CHAT, "Hello", 5, OAI_FINISH_STOP, &u, &LP_HI, 1, 0), 0);
    cJSON *j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    assert_string_equal(str_at(j, "object"), "chat.completion");
    assert_string_equal(str_at(j, "id"), "chatcmpl-1");
    cJSON *c = choice0(j);
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "message"), "content"), "Hello");
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "message"), "role"), "assistant");
    assert_string_equal(str_at(c, "finish_reason"), "stop");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "logprobs")));
    check_usage(j, 5, 2, 1);
    cJSON_Delete(j);
    buf_free(&b);

    oai_usage_t u2 = {9, 4, 0};
    assert_int_equal(reply_json(&b, &CMPL, "Hi", 2, OAI_FINISH_LENGTH, &u2, &LP_HI, 1, 1), 0);
    j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    assert_string_equal(str_at(j, "object"), "text_completion");
    c = choice0(j);
    assert_string_equal(str_at(c, "text"), "Hi");
    assert_string_equal(str_at(c, "finish_reason"), "length");
    cJSON *toks = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 1);
    assert_string_equal(cJSON_GetArrayItem(toks, 0)->valuestring, "Hi");
    check_usage(j, 9, 4, 0);
    cJSON_Delete(j);
    buf_free(&b);

    /* NULL text, a timeout */
    assert_int_equal(reply_json(&b, &CHAT, NULL, 0, OAI_FINISH_TIMEOUT, &u, NULL, 0, 0), 0);
    j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    c = choice0(j);
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "message"), "content"), "");
    assert_string_equal(str_at(c, "finish_reason"), "timeout");
    cJSON_Delete(j);
    buf_free(&b);
}

/* ---- cache entries ---- */

static const char *PIECES[] = {"Hello", ", wor", "ld!"};

/* three chunks, each with one logprob entry (2 alternatives) */
static cache_entry_t *entry(cache_finish_t fin)
{
    cache_rec_t *r = cache_rec_create(1);
    assert_non_null(r);
    for (int i = 0; i < 3; i++) {
        lp_alt_t tops[2] = {{PIECES[i], strlen(PIECES[i]), -0.1 * i}, {"alt", 3, -2.5}};
        lp_tok_t lp = {PIECES[i], strlen(PIECES[i]), -0.1 * i, 2, tops};
        assert_int_equal(cache_rec_add(r, PIECES[i], strlen(PIECES[i]), &lp, 1), 0);
    }
    cache_meta_t m = {0};
    m.model = "m";
    m.created = 1700000000;
    m.stored_ms = 1700000000123;
    m.finish = fin;
    m.prompt_tokens = 12;
    m.completion_tokens = 3;
    m.cached_tokens = 4;
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    assert_non_null(e);
    assert_int_equal(e->n_chunks, 3);
    return e;
}

static void test_entry_json(void **st)
{
    (void)st;
    cache_entry_t *e = entry(CACHE_FINISH_STOP);
    buf_t b = {0};
    assert_int_equal(reply_entry_json(&b, &CHAT, e, 1), 0);
    cJSON *j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    cJSON *c = choice0(j);
    assert_string_equal(str_at(cJSON_GetObjectItem(c, "message"), "content"), "Hello, world!");
    assert_string_equal(str_at(c, "finish_reason"), "stop");
    check_usage(j, 12, 3, 4);
    cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(lc), 3);
    for (int i = 0; i < 3; i++) {
        cJSON *x = cJSON_GetArrayItem(lc, i);
        assert_string_equal(str_at(x, "token"), PIECES[i]);
        assert_true(near(num_at(x, "logprob"), -0.1 * i));
        cJSON *t1 = cJSON_GetArrayItem(cJSON_GetObjectItem(x, "top_logprobs"), 1);
        assert_string_equal(str_at(t1, "token"), "alt");
    }
    cJSON_Delete(j);
    buf_free(&b);

    /* without logprobs: null */
    assert_int_equal(reply_entry_json(&b, &CHAT, e, 0), 0);
    j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(choice0(j), "logprobs")));
    cJSON_Delete(j);
    buf_free(&b);
    cache_entry_release(e);

    e = entry(CACHE_FINISH_LENGTH);
    assert_int_equal(reply_entry_json(&b, &CMPL, e, 0), 0);
    j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    c = choice0(j);
    assert_string_equal(str_at(c, "text"), "Hello, world!");
    assert_string_equal(str_at(c, "finish_reason"), "length");
    cJSON_Delete(j);
    buf_free(&b);
    cache_entry_release(e);
}

/* The replay: (role chunk for chat), one delta per chunk in order, the
 * finish chunk, (usage), [DONE]. */
static void check_replay(const oai_resp_t *r, const cache_entry_t *e, int include_usage,
                         const char *fin)
{
    buf_t b = {0};
    assert_int_equal(reply_entry_sse(&b, r, e, include_usage, 1), 0);
    sse_t s;
    sse_parse(&b, &s);
    int chat = r->kind == OAI_CHAT;
    int first = chat ? 1 : 0;
    assert_true(s.done);
    assert_int_equal(s.n, first + e->n_chunks + 1 + (include_usage ? 1 : 0) + 1);
    if (chat)
        assert_string_equal(str_at(cJSON_GetObjectItem(choice0(s.j[0]), "delta"), "role"),
                            "assistant");
    buf_t text = {0};
    for (int i = 0; i < e->n_chunks; i++) {
        cJSON *c = choice0(s.j[first + i]);
        const char *t =
            chat ? str_at(cJSON_GetObjectItem(c, "delta"), "content") : str_at(c, "text");
        assert_string_equal(t, PIECES[i]);
        buf_puts(&text, t);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
        cJSON *lp = cJSON_GetObjectItem(c, "logprobs");
        if (chat) {
            cJSON *lc = cJSON_GetObjectItem(lp, "content");
            assert_int_equal(cJSON_GetArraySize(lc), 1);
            assert_string_equal(str_at(cJSON_GetArrayItem(lc, 0), "token"), PIECES[i]);
        } else {
            cJSON *toks = cJSON_GetObjectItem(lp, "tokens");
            assert_int_equal(cJSON_GetArraySize(toks), 1);
            assert_string_equal(cJSON_GetArrayItem(toks, 0)->valuestring, PIECES[i]);
        }
    }
    assert_int_equal(text.n, e->text_len);
    assert_memory_equal(text.p, e->text, e->text_len);
    buf_free(&text);
    cJSON *fc = choice0(s.j[first + e->n_chunks]);
    assert_string_equal(str_at(fc, "finish_reason"), fin);
    if (include_usage) {
        cJSON *uj = s.j[first + e->n_chunks + 1];
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(uj, "choices")), 0);
        check_usage(uj, e->prompt_tokens, e->completion_tokens, e->cached_tokens);
    }
    assert_true(b.n >= 14);
    assert_memory_equal(b.p + b.n - 14, "data: [DONE]\n\n", 14);
    sse_free(&s);
    buf_free(&b);
}

static void test_entry_sse(void **st)
{
    (void)st;
    cache_entry_t *e = entry(CACHE_FINISH_STOP);
    check_replay(&CHAT, e, 1, "stop");
    check_replay(&CHAT, e, 0, "stop");
    check_replay(&CMPL, e, 1, "stop");
    cache_entry_release(e);
    e = entry(CACHE_FINISH_LENGTH);
    check_replay(&CHAT, e, 0, "length");
    check_replay(&CMPL, e, 0, "length");
    cache_entry_release(e);
}

static void test_cache_headers(void **st)
{
    (void)st;
    char h[256];
    reply_cache_headers(NULL, "L1", 3, "00ff", h, sizeof h);
    assert_string_equal(h, ""); /* no cache: no headers */
    reply_cache_headers("MISS", NULL, 0, "00ff", h, sizeof h);
    assert_string_equal(h, "X-Cache: MISS\r\nX-Cache-Key: 00ff\r\n");
    reply_cache_headers("BYPASS", NULL, 0, NULL, h, sizeof h);
    assert_string_equal(h, "X-Cache: BYPASS\r\n");
    reply_cache_headers("HIT", "L2", 1234567, "ab", h, sizeof h);
    assert_string_equal(h,
                        "X-Cache: HIT\r\nX-Cache-Tier: L2\r\nAge: 1234567\r\nX-Cache-Key: ab\r\n");
    reply_cache_headers("HIT", "L1", -5, NULL, h, sizeof h);
    assert_string_equal(h, "X-Cache: HIT\r\nX-Cache-Tier: L1\r\nAge: 0\r\n");
    char small[12];
    reply_cache_headers("HIT", "L1", 0, NULL, small, sizeof small);
    assert_string_equal(small, "X-Cache: HI"); /* cut, still terminated */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finish_map),
        cmocka_unit_test(test_lp_list_copies),
        cmocka_unit_test(test_lp_list_growth),
        cmocka_unit_test(test_sse_open),
        cmocka_unit_test(test_sse_delta_skip),
        cmocka_unit_test(test_sse_delta_chat),
        cmocka_unit_test(test_sse_delta_completion),
        cmocka_unit_test(test_sse_close),
        cmocka_unit_test(test_sse_error),
        cmocka_unit_test(test_reply_json),
        cmocka_unit_test(test_entry_json),
        cmocka_unit_test(test_entry_sse),
        cmocka_unit_test(test_cache_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
