/* test_embeddings.c — the /v1/embeddings schema (src/api/embeddings.c): every
 * input form, every refusal with the field it names, and the response object
 * in float (read back to the same float32) and base64 (little-endian bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/embeddings.h"

static cJSON *root;
static emb_req_t R;
static oai_err_t E;

static int parse(const char *body)
{
    cJSON_Delete(root);
    emb_req_free(&R);
    memset(&E, 0, sizeof E);
    root = NULL;
    if (oai_parse_json(body, strlen(body), &root, &E) < 0) return -E.status;
    return emb_parse(&R, root, &E);
}

static int teardown(void **st)
{
    (void)st;
    cJSON_Delete(root);
    root = NULL;
    emb_req_free(&R);
    return 0;
}

/* body must be refused with status, param and a message containing sub. */
static void refuse_at(const char *body, int status, const char *param, const char *sub, int line)
{
    int rc = parse(body);
    if (rc != -status || strcmp(E.param, param) || !strstr(E.message, sub))
        print_error("line %d: %s\n  rc %d param '%s' message: %s\n", line, body, rc, E.param,
                    E.message);
    assert_int_equal(rc, -status);
    assert_int_equal(E.status, status);
    assert_string_equal(E.param, param);
    assert_non_null(strstr(E.message, sub));
}
#define refuse(body, status, param, sub) refuse_at(body, status, param, sub, __LINE__)

static void test_string_input(void **st)
{
    (void)st;
    assert_int_equal(parse("{\"input\":\"hello world\",\"model\":\"all-MiniLM-L6-v2\","
                           "\"user\":\"u1\",\"stream\":false,\"unknown\":{}}"),
                     0);
    assert_int_equal(R.n, 1);
    assert_false(R.is_tokens);
    assert_int_equal(R.lens[0], 11);
    assert_memory_equal(R.texts[0], "hello world", 11);
    assert_string_equal(R.model, "all-MiniLM-L6-v2");
    assert_false(R.base64);
    assert_int_equal(R.dimensions, 0);
    /* model absent → "" (the default embedding model) */
    assert_int_equal(parse("{\"input\":\"x\"}"), 0);
    assert_string_equal(R.model, "");
    assert_int_equal(parse("{\"input\":\"x\",\"model\":null,\"encoding_format\":null}"), 0);
}

static void test_array_inputs(void **st)
{
    (void)st;
    assert_int_equal(parse("{\"input\":[\"a\",\"bb\",\"caf\\u00e9\"],"
                           "\"encoding_format\":\"base64\",\"dimensions\":384}"),
                     0);
    assert_int_equal(R.n, 3);
    assert_int_equal(R.lens[1], 2);
    assert_int_equal(R.lens[2], 5); /* UTF-8 bytes */
    assert_true(R.base64);
    assert_int_equal(R.dimensions, 384);
    assert_int_equal(R.n_bytes, 8);

    /* one input as token ids */
    assert_int_equal(parse("{\"input\":[101,7592,2088,102]}"), 0);
    assert_int_equal(R.n, 1);
    assert_true(R.is_tokens);
    assert_int_equal(R.n_ids[0], 4);
    assert_int_equal(R.ids[0][1], 7592);
    assert_int_equal(R.ids[0][3], 102);

    /* several inputs as token-id arrays */
    assert_int_equal(parse("{\"input\":[[1,2,3],[4],[0,2147483647]]}"), 0);
    assert_int_equal(R.n, 3);
    assert_true(R.is_tokens);
    assert_int_equal(R.n_ids[0], 3);
    assert_int_equal(R.n_ids[1], 1);
    assert_int_equal(R.ids[1][0], 4);
    assert_int_equal(R.ids[2][1], 2147483647);

    /* exactly the limit is fine */
    buf_t b = {0};
    buf_puts(&b, "{\"input\":[");
    for (int i = 0; i < EMB_MAX_INPUTS; i++)
        buf_printf(&b, "%s\"t%d\"", i ? "," : "", i);
    buf_puts(&b, "]}");
    assert_int_equal(parse(b.p), 0);
    assert_int_equal(R.n, EMB_MAX_INPUTS);
    assert_memory_equal(R.texts[2047], "t2047", 5);
    /* one more is not */
    b.n -= 2;
    buf_puts(&b, ",\"x\"]}");
    refuse(b.p, 400, "input", "at most 2048 inputs");
    buf_free(&b);
}

static void test_refusals(void **st)
{
    (void)st;
    refuse("{}", 400, "input", "Missing required parameter: 'input'");
    refuse("{\"input\":null}", 400, "input", "Missing required parameter");
    refuse("{\"input\":\"\"}", 400, "input", "the input is empty");
    refuse("{\"input\":[]}", 400, "input", "the input is empty");
    refuse("{\"input\":[\"a\",\"\"]}", 400, "input", "'input[1]': the input is empty");
    refuse("{\"input\":[[1],[]]}", 400, "input", "'input[1]': the input is empty");
    refuse("{\"input\":42}", 400, "input", "Invalid type for 'input'");
    refuse("{\"input\":{\"a\":1}}", 400, "input", "but got an object");
    refuse("{\"input\":[\"a\",3]}", 400, "input", "'input[1]': expected a string");
    refuse("{\"input\":[\"a\",null]}", 400, "input", "'input[1]': expected a string, but got null");
    refuse("{\"input\":[1,\"a\"]}", 400, "input", "'input[1]': expected a token id");
    refuse("{\"input\":[[1],\"a\"]}", 400, "input", "'input[1]': expected an array of token ids");
    refuse("{\"input\":[[1],[2,\"x\"]]}", 400, "input", "'input[1][1]': expected a token id");
    refuse("{\"input\":[true]}", 400, "input", "'input[0]'");
    refuse("{\"input\":[{}]}", 400, "input", "'input[0]'");
    refuse("{\"input\":[1.5]}", 400, "input", "a token id is an integer");
    refuse("{\"input\":[-1]}", 400, "input", "a token id is an integer");
    refuse("{\"input\":[2147483648]}", 400, "input", "a token id is an integer");
    refuse("{\"input\":[[3],[1e300]]}", 400, "input", "'input[1][0]': a token id is an integer");
    refuse("{\"input\":\"a\",\"encoding_format\":\"int8\"}", 400, "encoding_format",
           "Supported values are: 'float' and 'base64'");
    refuse("{\"input\":\"a\",\"encoding_format\":1}", 400, "encoding_format", "expected a string");
    refuse("{\"input\":\"a\",\"dimensions\":0}", 400, "dimensions", "an integer >= 1");
    refuse("{\"input\":\"a\",\"dimensions\":3.5}", 400, "dimensions", "an integer >= 1");
    refuse("{\"input\":\"a\",\"dimensions\":\"384\"}", 400, "dimensions", "expected an integer");
    refuse("{\"input\":\"a\",\"stream\":true}", 400, "stream", "streaming is not available");
    refuse("{\"input\":\"a\",\"stream\":1}", 400, "stream", "expected a boolean");
    refuse("{\"input\":\"a\",\"user\":7}", 400, "user", "expected a string");
    refuse("{\"input\":\"a\",\"model\":7}", 400, "model", "expected a string");
    refuse("{\"input\":\"a\",\"timeout\":-1}", 400, "timeout", "seconds from 0");
    refuse("[\"a\"]", 400, "", "must be a JSON object");
    refuse("{\"input\":\"a\"", 400, "", "could not parse");
}

/* A float written by the float format reads back as the same float32. */
static void test_format_float(void **st)
{
    (void)st;
    float v[2 * 4] = {0.1f, -0.5f, 1e-7f, 0.333333343f, 1.0f, -1e-30f, NAN, 0.0f};
    buf_t b = {0};
    assert_int_equal(emb_format_response(&b, "mini", v, 2, 4, 0, 17), 0);
    assert_int_equal(b.p[b.n], '\0');
    cJSON *j = cJSON_Parse(b.p);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "mini");
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 17);
    assert_int_equal(cJSON_GetObjectItem(u, "total_tokens")->valueint, 17);
    cJSON *data = cJSON_GetObjectItem(j, "data");
    assert_int_equal(cJSON_GetArraySize(data), 2);
    for (int i = 0; i < 2; i++) {
        cJSON *d = cJSON_GetArrayItem(data, i);
        assert_string_equal(cJSON_GetObjectItem(d, "object")->valuestring, "embedding");
        assert_int_equal(cJSON_GetObjectItem(d, "index")->valueint, i);
        cJSON *emb = cJSON_GetObjectItem(d, "embedding");
        assert_int_equal(cJSON_GetArraySize(emb), 4);
        for (int k = 0; k < 4; k++) {
            float want = isfinite(v[i * 4 + k]) ? v[i * 4 + k] : 0.0f;
            float got = (float)cJSON_GetArrayItem(emb, k)->valuedouble;
            assert_memory_equal(&got, &want, 4);
        }
    }
    cJSON_Delete(j);
    buf_free(&b);
}

/* Every magnitude float32 has, and random bit patterns: the float format
 * reads back (strtof) as the same float, bit for bit. */
static void test_format_roundtrip(void **st)
{
    (void)st;
    enum { N = 200000, DIM = 100 };
    float *v = malloc(N * sizeof *v);
    assert_non_null(v);
    uint64_t r = 0x9E3779B97F4A7C15ull;
    int k = 0;
    /* edges: powers of ten and their neighbours, the decimal/scientific switch */
    const float edge[] = {1e-7f,  9.99999997e-8f, 1e9f,   999999999.f, 1.0f,       0.1f,
                          1e-45f, 3.40282347e38f, 1e-38f, 0.5f,        9.9999999f, 123456789.f};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        v[k++] = edge[i];
        v[k++] = -edge[i];
        v[k++] = nextafterf(edge[i], 0);
        v[k++] = nextafterf(edge[i], INFINITY);
    }
    while (k < N) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        uint32_t u = (uint32_t)r;
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f)) continue;
        if (k & 1)
            f = ldexpf((float)(r >> 40) / (float)(1 << 24) - 0.5f, -(int)(r % 12)); /* typical */
        v[k++] = f;
    }
    buf_t b = {0};
    assert_int_equal(emb_format_response(&b, "m", v, N / DIM, DIM, 0, 1), 0);
    const char *p = strstr(b.p, "\"embedding\":[");
    int bad = 0;
    for (int i = 0; i < N; i++) {
        p = strchr(p, i % DIM ? ',' : '[') + 1;
        char *end;
        float got = strtof(p, &end);
        assert_true(end > p && (*end == ',' || *end == ']'));
        float want = isfinite(v[i]) && v[i] != 0 ? v[i] : 0.0f; /* FLT_MAX+1ulp is inf */
        if (memcmp(&got, &want, 4) && !(got == 0 && want == 0)) {
            if (bad++ < 5) print_error("%.9g printed as %.*s\n", (double)want, (int)(end - p), p);
        }
    }
    assert_int_equal(bad, 0);
    buf_free(&b);
    free(v);
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* base64 of the little-endian float32 bytes, padded; dims 1..5 cover every
 * padding case (4, 8, 12, 16, 20 bytes). */
static void test_format_base64(void **st)
{
    (void)st;
    for (int dim = 1; dim <= 5; dim++) {
        float v[5];
        for (int k = 0; k < dim; k++)
            v[k] = (float)(k + 1) * -0.123f + 0.01f * (float)dim;
        buf_t b = {0};
        assert_int_equal(emb_format_response(&b, "m", v, 1, dim, 1, 3), 0);
        cJSON *j = cJSON_Parse(b.p);
        assert_non_null(j);
        const char *s =
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "embedding")
                ->valuestring;
        size_t n = strlen(s);
        assert_int_equal(n, ((size_t)dim * 4 + 2) / 3 * 4);
        unsigned char bytes[32];
        size_t nb = 0;
        for (size_t i = 0; i < n; i += 4) {
            unsigned x = 0;
            int pad = 0;
            for (int k = 0; k < 4; k++) {
                int c = s[i + (size_t)k] == '=' ? (pad++, 0) : b64val(s[i + (size_t)k]);
                assert_true(c >= 0);
                x = x << 6 | (unsigned)c;
            }
            bytes[nb++] = (unsigned char)(x >> 16);
            if (pad < 2) bytes[nb++] = (unsigned char)(x >> 8);
            if (pad < 1) bytes[nb++] = (unsigned char)x;
        }
        assert_int_equal(nb, (size_t)dim * 4);
        for (int k = 0; k < dim; k++) {
            uint32_t u = (uint32_t)bytes[k * 4] | (uint32_t)bytes[k * 4 + 1] << 8 |
                         (uint32_t)bytes[k * 4 + 2] << 16 | (uint32_t)bytes[k * 4 + 3] << 24;
            float f;
            memcpy(&f, &u, 4);
            assert_memory_equal(&f, &v[k], 4);
        }
        cJSON_Delete(j);
        buf_free(&b);
    }
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_string_input), T(test_array_inputs),  T(test_refusals),
        T(test_format_float), T(test_format_base64), T(test_format_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
