/* test_safetensors.c — engine/safetensors.c: small files are assembled in
 * memory from a JSON header and a data blob; the reader must return what was
 * written, and reject every malformed variant (bad JSON, bad lengths, bad
 * dtypes/shapes/offsets, every truncated prefix) with a negative code and a
 * message that names an offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "engine/safetensors.h"

/* u64 LE header length, the header text, `pad` spaces, then data_n bytes. */
static uint8_t *make_file(const char *json, size_t pad, size_t data_n, size_t *n_out)
{
    size_t hn = strlen(json) + pad;
    size_t n = 8 + hn + data_n;
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)hn >> (8 * i));
    memcpy(p + 8, json, strlen(json));
    memset(p + 8 + strlen(json), ' ', pad);
    for (size_t i = 0; i < data_n; i++)
        p[8 + hn + i] = (uint8_t)(i * 13 + 1);
    *n_out = n;
    return p;
}

/* 24 + 6 + 8 + 0 + 3 = 41 data bytes; the data ends with the last tensor. */
static const char valid_json[] =
    "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9\"},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]},"
    "\"z\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[38,41]},"
    "\"e\":{\"dtype\":\"BOOL\",\"shape\":[0, 5],\"data_offsets\":[38,38]},"
    "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[30,38]}}";
#define VALID_DATA 41

static void test_valid(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_file(valid_json, 6, VALID_DATA, &n);
    safet_t *s = NULL;
    bar_msg_t msg = {{0}};
    int rc = safet_parse(&s, p, n, &msg);
    if (rc) fail_msg("parse: %s", msg.text);
    size_t hn = strlen(valid_json) + 6;
    assert_int_equal(safet_header_size(s), hn);
    assert_int_equal(safet_data_offset(s), 8 + hn);
    assert_int_equal(safet_file_size(s), n);
    assert_int_equal(safet_tensor_count(s), 5);
    /* data order: w b i e z (e and z share begin 38; e is empty, so it sorts first) */
    static const char *order[5] = {"w", "b", "i", "e", "z"};
    for (size_t i = 0; i < 5; i++) {
        const safet_tensor_t *t = safet_tensor_at(s, i);
        assert_string_equal(t->name, order[i]);
        assert_ptr_equal(safet_tensor_find(s, order[i]), t);
        assert_ptr_equal(t->data, p + 8 + hn + t->begin);
        assert_int_equal(t->n_bytes, t->end - t->begin);
    }
    assert_null(safet_tensor_at(s, 5));
    assert_null(safet_tensor_find(s, "x"));
    assert_null(safet_tensor_find(s, "__metadata__"));
    const safet_tensor_t *w = safet_tensor_find(s, "w");
    assert_int_equal(w->dtype, SAFET_F32);
    assert_int_equal(w->n_dims, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->n_elems, 6);
    assert_int_equal(w->n_bytes, 24);
    const safet_tensor_t *i = safet_tensor_find(s, "i");
    assert_int_equal(i->n_dims, 0);
    assert_int_equal(i->n_elems, 1);
    assert_int_equal(i->dtype, SAFET_I64);
    const safet_tensor_t *e = safet_tensor_find(s, "e");
    assert_int_equal(e->n_elems, 0);
    assert_int_equal(e->dtype, SAFET_BOOL);

    assert_int_equal(safet_meta_count(s), 2);
    assert_string_equal(safet_meta_at(s, 0)->key, "format");
    assert_string_equal(safet_meta_at(s, 1)->key, "note");
    assert_null(safet_meta_at(s, 2));
    assert_string_equal(safet_meta_find(s, "format"), "pt");
    assert_string_equal(safet_meta_find(s, "note"), "caf\xc3\xa9");
    assert_null(safet_meta_find(s, "nope"));
    safet_close(s);
    free(p);
}

static void test_empty_header(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_file("{}", 0, 0, &n);
    safet_t *s = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(safet_parse(&s, p, n, &msg), 0);
    assert_int_equal(safet_tensor_count(s), 0);
    assert_int_equal(safet_meta_count(s), 0);
    assert_null(safet_tensor_find(s, "a"));
    assert_null(safet_meta_find(s, "a"));
    safet_close(s);
    safet_close(NULL);
    free(p);
}

static void test_dtype_table(void **state)
{
    (void)state;
    static const char *names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "U16", "I16", "F16",
                                  "BF16", "U32", "I32", "F32",     "U64",     "I64", "F64"};
    static const size_t sizes[] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    for (uint32_t d = 0; d < SAFET_DTYPE_COUNT; d++) {
        assert_string_equal(safet_dtype_name(d), names[d]);
        assert_int_equal(safet_dtype_size(d), sizes[d]);
        /* every dtype parses, with the right byte count */
        char json[256];
        snprintf(json, sizeof json,
                 "{\"t\":{\"dtype\":\"%s\",\"shape\":[2,2],"
                 "\"data_offsets\":[0,%zu]}}",
                 names[d], 4 * sizes[d]);
        size_t n;
        uint8_t *p = make_file(json, 0, 4 * sizes[d], &n);
        safet_t *s = NULL;
        bar_msg_t msg = {{0}};
        if (safet_parse(&s, p, n, &msg)) fail_msg("%s: %s", names[d], msg.text);
        assert_int_equal(safet_tensor_at(s, 0)->dtype, d);
        safet_close(s);
        free(p);
    }
    assert_null(safet_dtype_name(SAFET_DTYPE_COUNT));
    assert_int_equal(safet_dtype_size(99), 0);
}

static void expect_fail(const uint8_t *p, size_t n, const char *label, const char *needle)
{
    safet_t *s = (safet_t *)1;
    bar_msg_t msg = {{0}};
    int rc = safet_parse(&s, p, n, &msg);
    if (rc >= 0) fail_msg("%s: parse succeeded, expected an error", label);
    if (s != NULL) fail_msg("%s: out not NULL on error", label);
    if (strncmp(msg.text, "offset ", 7) != 0)
        fail_msg("%s: message does not start with an offset: '%s'", label, msg.text);
    if (needle && !strstr(msg.text, needle))
        fail_msg("%s: message '%s' lacks '%s'", label, msg.text, needle);
    if (getenv("TEST_VERBOSE")) printf("%-40s %s\n", label, msg.text);
}

typedef struct {
    const char *label;
    const char *json;
    size_t data_n;
    const char *needle;
} bad_t;

#define T1(dtype, shape, offs)                                                                     \
    "{\"t\":{\"dtype\":" dtype ",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static const bad_t bads[] = {
    {"not JSON", "{\"t\":", 0, "not valid JSON"},
    {"unterminated string", "{\"t", 0, "not valid JSON"},
    {"root is an array", "[1,2]", 0, "JSON object"},
    {"root is a string", "\"{}\"", 0, "JSON object"},
    {"trailing garbage", "{} x", 0, "after the JSON"},
    {"two objects", "{}{}", 0, "after the JSON"},
    {"tensor not an object", "{\"t\":[1]}", 0, "not an object"},
    {"no dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
    {"dtype not a string", T1("7", "[1]", "[0,4]"), 4, "dtype"},
    {"unknown dtype", T1("\"Q4_0\"", "[1]", "[0,4]"), 4, "dtype 'Q4_0'"},
    {"lowercase dtype", T1("\"f32\"", "[1]", "[0,4]"), 4, "dtype 'f32'"},
    {"no shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape"},
    {"shape not array", T1("\"F32\"", "4", "[0,4]"), 4, "shape"},
    {"shape negative", T1("\"F32\"", "[-1]", "[0,4]"), 4, "shape[0]"},
    {"shape fraction", T1("\"F32\"", "[1.5]", "[0,4]"), 4, "shape[0]"},
    {"shape string", T1("\"F32\"", "[\"1\"]", "[0,4]"), 4, "shape[0]"},
    {"shape 2^53", T1("\"F32\"", "[9007199254740992]", "[0,4]"), 4, "shape[0]"},
    {"shape 9 dims", T1("\"U8\"", "[1,1,1,1,1,1,1,1,1]", "[0,1]"), 1, "9 dimensions"},
    {"shape product overflow", T1("\"U8\"", "[4294967296,4294967296]", "[0,1]"), 1, "overflow"},
    {"bytes overflow", T1("\"F64\"", "[4294967296,1073741824]", "[0,1]"), 1, "hold"},
    {"no data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"},
    {"data_offsets one item", T1("\"F32\"", "[1]", "[4]"), 4, "data_offsets"},
    {"data_offsets three items", T1("\"F32\"", "[1]", "[0,4,8]"), 4, "data_offsets"},
    {"data_offsets negative", T1("\"F32\"", "[1]", "[-4,0]"), 4, "data_offsets"},
    {"data_offsets begin > end", T1("\"F32\"", "[1]", "[8,4]"), 8, "begin <= end"},
    {"data_offsets past end", T1("\"F32\"", "[1]", "[4,8]"), 4, "data section"},
    {"data_offsets far past end", T1("\"F32\"", "[1]", "[0,4000000000000]"), 4, "data section"},
    {"size mismatch (dtype)", T1("\"F16\"", "[2]", "[0,8]"), 8, "expected 2 elements x 2 bytes"},
    {"size mismatch (shape)", T1("\"F32\"", "[3]", "[0,8]"), 8, "hold 8 bytes"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "overlaps"},
    {"duplicate name",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate tensor name 'a'"},
    {"metadata not object", "{\"__metadata__\":[1]}", 0, "__metadata__"},
    {"metadata value not string", "{\"__metadata__\":{\"a\":1}}", 0, "not a string"},
    {"metadata null value", "{\"__metadata__\":{\"a\":null}}", 0, "not a string"},
    {"two metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__"},
    {"duplicate metadata key", "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate"},
};

static void test_bad_headers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        size_t n;
        uint8_t *p = make_file(bads[i].json, 0, bads[i].data_n, &n);
        expect_fail(p, n, bads[i].label, bads[i].needle);
        free(p);
    }
}

static void test_bad_lengths(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_file(valid_json, 0, VALID_DATA, &n);
    uint8_t *c = malloc(n);
    static const struct {
        const char *label;
        uint64_t hn;
        const char *needle;
    } cases[] = {
        {"header len past end", 1u << 20, "exceeds the"},
        {"header len file+1", 0, "exceeds the"}, /* filled in below */
        {"header len 100MB+1", SAFET_MAX_HEADER_BYTES + 1ull, "at most 100000000"},
        {"header len 2^64-1", UINT64_MAX, "at most"},
        {"header len 0", 0, "'{'"},
        {"header len 1", 1, "'{'"},
        {"header len short", 20, "not valid JSON"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(c, p, n);
        uint64_t hn = k == 1 ? n - 8 + 1 : cases[k].hn;
        for (int i = 0; i < 8; i++)
            c[i] = (uint8_t)(hn >> (8 * i));
        expect_fail(c, n, cases[k].label, cases[k].needle);
    }
    memcpy(c, p, n);
    c[8] = '[';
    expect_fail(c, n, "header starts with [", "'{'");
    /* a NUL inside the header */
    memcpy(c, p, n);
    c[10] = 0;
    expect_fail(c, n, "NUL in header", NULL);
    free(c);
    free(p);
}

static void test_every_prefix(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_file(valid_json, 3, VALID_DATA, &n);
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k ? k : 1); /* exactly k bytes for ASan */
        memcpy(c, p, k);
        char label[64];
        snprintf(label, sizeof label, "prefix %zu of %zu", k, n);
        expect_fail(k ? c : NULL, k, label, NULL);
        free(c);
    }
    free(p);
}

static void test_open_file(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = make_file(valid_json, 0, VALID_DATA, &n);
    char path[] = "/tmp/test_safet_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
    safet_t *s = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(safet_open(&s, path, &msg), 0);
    const safet_tensor_t *z = safet_tensor_find(s, "z");
    assert_non_null(z);
    assert_memory_equal(z->data, p + 8 + strlen(valid_json) + 38, 3);
    safet_close(s);
    assert_int_equal(truncate(path, (off_t)(n - 1)), 0);
    assert_int_equal(safet_open(&s, path, &msg), BAR_ERR_FORMAT);
    assert_null(s);
    assert_non_null(strstr(msg.text, path));
    assert_non_null(strstr(msg.text, "offset "));
    unlink(path);
    assert_true(safet_open(&s, path, &msg) < 0);
    assert_null(s);
    free(p);
}

#ifdef BARISTA_SOURCE_DIR
/* The real all-MiniLM-L6-v2 file, when it has been fetched. */
static void test_real_minilm(void **state)
{
    (void)state;
    char path[4096];
    test_model_path(path, sizeof path, "all-MiniLM-L6-v2/model.safetensors");
    if (access(path, R_OK) != 0) skip();
    safet_t *s = NULL;
    bar_msg_t msg = {{0}};
    if (safet_open(&s, path, &msg)) fail_msg("%s", msg.text);
    const safet_tensor_t *t = safet_tensor_find(s, "embeddings.word_embeddings.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 30522);
    assert_int_equal(t->shape[1], 384);
    safet_close(s);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),       cmocka_unit_test(test_empty_header),
        cmocka_unit_test(test_dtype_table), cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_lengths), cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_open_file),
#ifdef BARISTA_SOURCE_DIR
        cmocka_unit_test(test_real_minilm),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
