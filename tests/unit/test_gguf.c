/* test_gguf.c — engine/gguf.c: a tiny GGUF writer builds valid files in
 * memory; the reader must return exactly what was written, and reject every
 * malformed variant (patched fields, every truncated prefix) with a negative
 * code and a message that names an offset. */
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

#include "engine/gguf.h"
#include "util/buf.h"

/* ---- a tiny GGUF writer --------------------------------------------------- */

static void put(buf_t *b, const void *d, size_t n)
{
    assert_int_equal(buf_append(b, d, n), 0);
}

static void put_u8(buf_t *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put_le(buf_t *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_u8(b, (uint8_t)(v >> (8 * i)));
}

static void put_u32(buf_t *b, uint32_t v)
{
    put_le(b, v, 4);
}

static void put_u64(buf_t *b, uint64_t v)
{
    put_le(b, v, 8);
}

static void put_str(buf_t *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void put_f32(buf_t *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}

static void patch_le(buf_t *b, size_t at, uint64_t v, size_t n)
{
    assert_true(at + n <= b->n);
    for (size_t i = 0; i < n; i++)
        b->p[at + i] = (uint8_t)(v >> (8 * i));
}

/* Where the interesting fields of the valid file are, for patching. */
typedef struct {
    size_t tensor_count, kv_count;
    size_t first_key_len, first_vtype;
    size_t align_vtype, align_val;
    size_t bool_val;
    size_t sarr_etype, sarr_count;
    size_t dup_key_a, dup_key_b; /* "k1"'s and "k2"'s bytes */
    size_t t_name[3], t_ndims[3], t_ne[3][4], t_type[3], t_off[3];
    size_t data_start;
    size_t t_bytes[3];
    uint64_t t_offset[3];
} pos_t;

typedef struct {
    uint32_t version;
    int alignment; /* 0: no general.alignment kv */
} opts_t;

static size_t align_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* A valid file with 14 kvs and 3 tensors; the data ends exactly at the end
 * of the last tensor, so every shorter prefix is invalid. */
static void build_valid(buf_t *b, pos_t *ps, opts_t o)
{
    memset(ps, 0, sizeof *ps);
    b->n = 0;
    size_t align = o.alignment ? (size_t)o.alignment : 32;
    put(b, "GGUF", 4);
    put_u32(b, o.version);
    ps->tensor_count = b->n;
    put_u64(b, 3);
    ps->kv_count = b->n;
    put_u64(b, o.alignment ? 14 : 13);

    ps->first_key_len = b->n;
    put_str(b, "general.architecture");
    ps->first_vtype = b->n;
    put_u32(b, GGUF_T_STRING);
    put_str(b, "llama");
    if (o.alignment) {
        put_str(b, "general.alignment");
        ps->align_vtype = b->n;
        put_u32(b, GGUF_T_U32);
        ps->align_val = b->n;
        put_u32(b, (uint32_t)o.alignment);
    }
    put_str(b, "llama.block_count");
    put_u32(b, GGUF_T_U32);
    put_u32(b, 2);
    put_str(b, "t.u8");
    put_u32(b, GGUF_T_U8);
    put_u8(b, 200);
    put_str(b, "t.i8");
    put_u32(b, GGUF_T_I8);
    put_u8(b, 0xfe); /* -2 */
    put_str(b, "t.u16");
    put_u32(b, GGUF_T_U16);
    put_le(b, 65535, 2);
    put_str(b, "t.i16");
    put_u32(b, GGUF_T_I16);
    put_le(b, (uint16_t)-300, 2);
    put_str(b, "t.f32");
    put_u32(b, GGUF_T_F32);
    put_f32(b, 1e-5f);
    put_str(b, "t.bool");
    put_u32(b, GGUF_T_BOOL);
    ps->bool_val = b->n;
    put_u8(b, 1);
    put_str(b, "t.u64");
    put_u32(b, GGUF_T_U64);
    put_u64(b, 1ull << 40);
    put_str(b, "t.i64");
    put_u32(b, GGUF_T_I64);
    put_u64(b, (uint64_t)-5);
    put_str(b, "t.tokens");
    put_u32(b, GGUF_T_ARRAY);
    ps->sarr_etype = b->n;
    put_u32(b, GGUF_T_STRING);
    ps->sarr_count = b->n;
    put_u64(b, 3);
    put_str(b, "a");
    put_str(b, "bc");
    put_str(b, "");
    /* an array of two u8 arrays: [[1, 2], [3]] */
    put_str(b, "k1");
    ps->dup_key_a = b->n - 2;
    put_u32(b, GGUF_T_ARRAY);
    put_u32(b, GGUF_T_ARRAY);
    put_u64(b, 2);
    put_u32(b, GGUF_T_U8);
    put_u64(b, 2);
    put_u8(b, 1);
    put_u8(b, 2);
    put_u32(b, GGUF_T_U8);
    put_u64(b, 1);
    put_u8(b, 3);
    /* f32 array */
    put_str(b, "k2");
    ps->dup_key_b = b->n - 2;
    put_u32(b, GGUF_T_ARRAY);
    put_u32(b, GGUF_T_F32);
    put_u64(b, 2);
    put_f32(b, 0.5f);
    put_f32(b, -2.0f);

    /* tensors: a F32 [4, 2], b Q4_0 [32, 1], c Q8_0 [64] */
    static const char *names[3] = {"a", "b", "c"};
    static const uint32_t ndims[3] = {2, 2, 1};
    static const int64_t nes[3][2] = {{4, 2}, {32, 1}, {64, 0}};
    static const uint32_t types[3] = {GGML_F32, GGML_Q4_0, GGML_Q8_0};
    static const size_t bytes[3] = {32, 18, 68};
    size_t off = 0;
    for (int t = 0; t < 3; t++) {
        ps->t_name[t] = b->n;
        put_str(b, names[t]);
        ps->t_ndims[t] = b->n;
        put_u32(b, ndims[t]);
        for (uint32_t d = 0; d < ndims[t]; d++) {
            ps->t_ne[t][d] = b->n;
            put_u64(b, (uint64_t)nes[t][d]);
        }
        ps->t_type[t] = b->n;
        put_u32(b, types[t]);
        ps->t_off[t] = b->n;
        put_u64(b, off);
        ps->t_offset[t] = off;
        ps->t_bytes[t] = bytes[t];
        off = align_up(off + bytes[t], align);
    }
    while (b->n % align)
        put_u8(b, 0);
    ps->data_start = b->n;
    size_t end = ps->data_start + ps->t_offset[2] + bytes[2];
    for (size_t i = b->n; i < end; i++)
        put_u8(b, (uint8_t)(i * 7));
}

static const opts_t V3 = {3, 32};

/* ---- valid files ---------------------------------------------------------- */

static void check_valid(opts_t o)
{
    buf_t b = {0};
    pos_t ps;
    build_valid(&b, &ps, o);
    gguf_t *g = NULL;
    bar_msg_t msg = {{0}};
    int rc = gguf_parse(&g, (const uint8_t *)b.p, b.n, &msg);
    if (rc) fail_msg("parse failed: %s", msg.text);
    assert_non_null(g);
    assert_int_equal(gguf_version(g), o.version);
    assert_int_equal(gguf_alignment(g), o.alignment ? (uint32_t)o.alignment : 32);
    assert_int_equal(gguf_data_offset(g), ps.data_start);
    assert_int_equal(gguf_file_size(g), b.n);
    assert_int_equal(gguf_kv_count(g), o.alignment ? 14 : 13);
    assert_int_equal(gguf_tensor_count(g), 3);

    const gguf_kv_t *kv = gguf_kv_at(g, 0);
    assert_int_equal(kv->type, GGUF_T_STRING);
    assert_int_equal(kv->key.n, strlen("general.architecture"));
    assert_memory_equal(kv->str.p, "llama", 5);
    assert_null(gguf_kv_at(g, 99));
    assert_null(gguf_kv_find(g, "nope"));
    assert_null(gguf_kv_find(g, "general"));
    assert_non_null(gguf_kv_find(g, "general.architecture"));

    uint32_t u;
    assert_int_equal(gguf_get_u32(g, "llama.block_count", &u), 0);
    assert_int_equal(u, 2);
    assert_int_equal(gguf_get_u32(g, "t.u8", &u), 0);
    assert_int_equal(u, 200);
    assert_int_equal(gguf_get_u32(g, "t.i8", &u), BAR_ERR_FORMAT);  /* negative */
    assert_int_equal(gguf_get_u32(g, "t.u64", &u), BAR_ERR_FORMAT); /* too big */
    assert_int_equal(gguf_get_u32(g, "t.f32", &u), BAR_ERR_FORMAT);
    assert_int_equal(gguf_get_u32(g, "missing", &u), BAR_ERR_NOTFOUND);
    assert_int_equal(gguf_kv_find(g, "t.i16")->v.i, -300);
    assert_int_equal(gguf_kv_find(g, "t.u16")->v.u, 65535);
    assert_int_equal(gguf_kv_find(g, "t.i64")->v.i, -5);
    assert_int_equal(gguf_kv_find(g, "t.u64")->v.u, 1ull << 40);
    float f;
    assert_int_equal(gguf_get_f32(g, "t.f32", &f), 0);
    assert_true(f == 1e-5f);
    assert_int_equal(gguf_get_f32(g, "t.u8", &f), BAR_ERR_FORMAT);
    int bv;
    assert_int_equal(gguf_get_bool(g, "t.bool", &bv), 0);
    assert_int_equal(bv, 1);
    assert_int_equal(gguf_get_bool(g, "t.u8", &bv), BAR_ERR_FORMAT);
    gguf_str_t s;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s), 0);
    assert_int_equal(s.n, 5);
    assert_int_equal(gguf_get_str(g, "t.u8", &s), BAR_ERR_FORMAT);
    assert_int_equal(gguf_get_str(g, "missing", &s), BAR_ERR_NOTFOUND);

    const gguf_kv_t *tok = gguf_kv_find(g, "t.tokens");
    assert_non_null(tok);
    assert_int_equal(tok->type, GGUF_T_ARRAY);
    assert_int_equal(tok->arr_type, GGUF_T_STRING);
    assert_int_equal(tok->arr_n, 3);
    gguf_str_t strs[3];
    assert_int_equal(gguf_arr_strings(tok, strs, 3), 0);
    assert_int_equal(strs[0].n, 1);
    assert_memory_equal(strs[0].p, "a", 1);
    assert_int_equal(strs[1].n, 2);
    assert_memory_equal(strs[1].p, "bc", 2);
    assert_int_equal(strs[2].n, 0);
    assert_int_equal(gguf_arr_strings(tok, strs, 4), BAR_ERR_RANGE);
    assert_int_equal(gguf_arr_strings(gguf_kv_find(g, "k2"), strs, 1), BAR_ERR_INVALID);
    assert_int_equal(gguf_arr_strings(gguf_kv_find(g, "t.u8"), strs, 1), BAR_ERR_INVALID);

    const gguf_kv_t *nested = gguf_kv_find(g, "k1");
    assert_int_equal(nested->arr_type, GGUF_T_ARRAY);
    assert_int_equal(nested->arr_n, 2);
    assert_int_equal(nested->arr_bytes, 2 * 12 + 3);
    const gguf_kv_t *fa = gguf_kv_find(g, "k2");
    assert_int_equal(fa->arr_type, GGUF_T_F32);
    assert_int_equal(fa->arr_bytes, 8);
    assert_int_equal(gguf_vtype_size(fa->arr_type), 4);
    float f0;
    memcpy(&f0, fa->arr_data, 4);
    assert_true(f0 == 0.5f);

    static const char *names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, (size_t)i);
        assert_ptr_equal(gguf_tensor_find(g, names[i]), t);
        assert_int_equal(t->name.n, 1);
        assert_int_equal(t->offset, ps.t_offset[i]);
        assert_int_equal(t->n_bytes, ps.t_bytes[i]);
        assert_ptr_equal(t->data, b.p + ps.data_start + ps.t_offset[i]);
    }
    const gguf_tensor_t *ta = gguf_tensor_find(g, "a");
    assert_int_equal(ta->type, GGML_F32);
    assert_int_equal(ta->n_dims, 2);
    assert_int_equal(ta->ne[0], 4);
    assert_int_equal(ta->ne[1], 2);
    assert_int_equal(ta->ne[2], 1);
    assert_int_equal(ta->ne[3], 1);
    assert_int_equal(gguf_tensor_find(g, "c")->ne[1], 1);
    assert_null(gguf_tensor_find(g, "d"));
    assert_null(gguf_tensor_find(g, ""));
    assert_null(gguf_tensor_at(g, 3));
    gguf_close(g);
    free(b.p);
}

static void test_valid_v3(void **state)
{
    (void)state;
    check_valid(V3);
}

static void test_valid_v2(void **state)
{
    (void)state;
    check_valid((opts_t){2, 32});
}

static void test_valid_default_alignment(void **state)
{
    (void)state;
    check_valid((opts_t){3, 0});
}

static void test_valid_alignment_64(void **state)
{
    (void)state;
    check_valid((opts_t){3, 64});
}

static void test_empty_file_no_tensors(void **state)
{
    (void)state;
    buf_t b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 0);
    gguf_t *g = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(gguf_parse(&g, (const uint8_t *)b.p, b.n, &msg), 0);
    assert_int_equal(gguf_tensor_count(g), 0);
    assert_int_equal(gguf_kv_count(g), 0);
    assert_null(gguf_kv_find(g, "x"));
    assert_null(gguf_tensor_find(g, "x"));
    gguf_close(g);
    free(b.p);
}

static void test_type_tables(void **state)
{
    (void)state;
    assert_string_equal(ggml_type_name(GGML_Q4_1), "Q4_1");
    assert_int_equal(ggml_type_block_elems(GGML_Q4_1), 32);
    assert_int_equal(ggml_type_block_bytes(GGML_Q4_1), 20);
    assert_int_equal(ggml_type_block_bytes(GGML_Q8_0), 34);
    assert_int_equal(ggml_type_block_bytes(GGML_Q6_K), 210);
    assert_int_equal(ggml_type_block_elems(GGML_Q6_K), 256);
    assert_int_equal(ggml_type_block_bytes(GGML_BF16), 2);
    assert_null(ggml_type_name(4));
    assert_int_equal(ggml_type_block_elems(4), 0);
    assert_int_equal(ggml_type_block_bytes(99), 0);
    assert_string_equal(gguf_vtype_name(GGUF_T_STRING), "string");
    assert_string_equal(gguf_vtype_name(GGUF_T_F64), "f64");
    assert_null(gguf_vtype_name(13));
    assert_int_equal(gguf_vtype_size(GGUF_T_U16), 2);
    assert_int_equal(gguf_vtype_size(GGUF_T_STRING), 0);
    assert_int_equal(gguf_vtype_size(77), 0);
}

/* ---- malformed files ------------------------------------------------------ */

static void expect_fail(const uint8_t *p, size_t n, const char *label, const char *needle)
{
    gguf_t *g = (gguf_t *)1;
    bar_msg_t msg = {{0}};
    int rc = gguf_parse(&g, p, n, &msg);
    if (rc >= 0) fail_msg("%s: parse succeeded, expected an error", label);
    if (g != NULL) fail_msg("%s: out not NULL on error", label);
    if (!msg.text[0]) fail_msg("%s: empty message", label);
    if (strncmp(msg.text, "offset ", 7) != 0)
        fail_msg("%s: message does not start with an offset: %s", label, msg.text);
    if (needle && !strstr(msg.text, needle))
        fail_msg("%s: message '%s' lacks '%s'", label, msg.text, needle);
    if (getenv("TEST_VERBOSE")) printf("%-50s %s\n", label, msg.text);
}

typedef struct {
    const char *label;
    int field; /* which pos_t field */
    int index; /* tensor index, for tensor fields */
    size_t width;
    uint64_t value;
    const char *needle; /* substring the message must hold, or NULL */
} patch_t;

enum {
    F_ABS,
    F_TCOUNT,
    F_KVCOUNT,
    F_KEYLEN,
    F_VTYPE,
    F_ALIGN_T,
    F_ALIGN_V,
    F_BOOL,
    F_SARR_ET,
    F_SARR_N,
    F_DUPKEY,
    F_NAME,
    F_NDIMS,
    F_NE0,
    F_NE1,
    F_TTYPE,
    F_TOFF,
};

static size_t field_at(const pos_t *ps, const patch_t *pt)
{
    switch (pt->field) {
    case F_TCOUNT:
        return ps->tensor_count;
    case F_KVCOUNT:
        return ps->kv_count;
    case F_KEYLEN:
        return ps->first_key_len;
    case F_VTYPE:
        return ps->first_vtype;
    case F_ALIGN_T:
        return ps->align_vtype;
    case F_ALIGN_V:
        return ps->align_val;
    case F_BOOL:
        return ps->bool_val;
    case F_SARR_ET:
        return ps->sarr_etype;
    case F_SARR_N:
        return ps->sarr_count;
    case F_DUPKEY:
        return ps->dup_key_b + 1; /* "k2" -> "k1" */
    case F_NAME:
        return ps->t_name[pt->index] + 8;
    case F_NDIMS:
        return ps->t_ndims[pt->index];
    case F_NE0:
        return ps->t_ne[pt->index][0];
    case F_NE1:
        return ps->t_ne[pt->index][1];
    case F_TTYPE:
        return ps->t_type[pt->index];
    case F_TOFF:
        return ps->t_off[pt->index];
    default:
        return 0;
    }
}

static const patch_t patches[] = {
    {"bad magic", F_ABS, 0, 1, 'X', "magic"},
    {"version 1", F_ABS, 4, 4, 1, "version 1"},
    {"version 4", F_ABS, 4, 4, 4, "version 4"},
    {"version big-endian 3", F_ABS, 4, 4, 0x03000000, "version"},
    {"tensor count 9999999999", F_TCOUNT, 0, 8, 9999999999ull, "tensor count 9999999999"},
    {"tensor count negative", F_TCOUNT, 0, 8, (uint64_t)-1, "tensor count"},
    {"tensor count too many for the rest", F_TCOUNT, 0, 8, 20, "tensor count"},
    {"kv count huge", F_KVCOUNT, 0, 8, 1ull << 60, "kv count"},
    {"kv count negative", F_KVCOUNT, 0, 8, (uint64_t)INT64_MIN, "kv count"},
    {"kv count one too many", F_KVCOUNT, 0, 8, 15, NULL},
    {"key length huge", F_KEYLEN, 0, 8, 1ull << 62, "length"},
    {"key length max", F_KEYLEN, 0, 8, UINT64_MAX, "length"},
    {"value type 13", F_VTYPE, 0, 4, 13, "value type 13"},
    {"value type -1", F_VTYPE, 0, 4, 0xffffffffu, "value type -1"},
    {"alignment 0", F_ALIGN_V, 0, 4, 0, "alignment 0"},
    {"alignment 3", F_ALIGN_V, 0, 4, 3, "alignment 3"},
    {"alignment 48", F_ALIGN_V, 0, 4, 48, "power of two"},
    {"alignment i32", F_ALIGN_T, 0, 4, GGUF_T_I32, "u32"},
    {"alignment 4096 misaligns the offsets", F_ALIGN_V, 0, 4, 4096, "alignment 4096"},
    {"bool 2", F_BOOL, 0, 1, 2, "bool"},
    {"array element type 13", F_SARR_ET, 0, 4, 13, "element type"},
    {"array element type u64 (count too big then)", F_SARR_ET, 0, 4, GGUF_T_U64, NULL},
    {"array count huge", F_SARR_N, 0, 8, 1ull << 61, "array count"},
    {"array count max", F_SARR_N, 0, 8, UINT64_MAX, "array count"},
    {"duplicate key", F_DUPKEY, 0, 1, '1', "duplicate key"},
    {"duplicate tensor name", F_NAME, 1, 1, 'a', "duplicate tensor"},
    {"n_dims 5", F_NDIMS, 0, 4, 5, "5 dimensions"},
    {"n_dims huge", F_NDIMS, 0, 4, 0xffffffffu, "dimensions"},
    {"ne negative", F_NE0, 0, 8, (uint64_t)-4, "expected >= 0"},
    {"ne product overflow", F_NE0, 0, 8, 1ull << 62, "overflow"},
    {"ne1 product overflow", F_NE1, 0, 8, 1ull << 62, "overflow"},
    {"bytes overflow", F_NE0, 0, 8, 3ull << 60, "overflows 64 bits"},
    {"row length not a block multiple", F_NE0, 1, 8, 48, "multiple"},
    {"tensor type 4 (removed)", F_TTYPE, 0, 4, 4, "ggml type 4"},
    {"tensor type 99", F_TTYPE, 2, 4, 99, "ggml type 99"},
    {"tensor type -1", F_TTYPE, 2, 4, 0xffffffffu, "ggml type -1"},
    {"shape too big for file", F_NE1, 0, 8, 1000, "runs past"},
    {"offset misaligned", F_TOFF, 0, 8, 1, "alignment"},
    {"offset misaligned 16", F_TOFF, 1, 8, 48, "alignment"},
    {"offset past end", F_TOFF, 2, 8, 1ull << 40, "runs past"},
    {"offset near 2^64", F_TOFF, 2, 8, UINT64_MAX - 31, "runs past"},
    {"offset just past end", F_TOFF, 2, 8, 96, "runs past"},
};

static void test_patched(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        const patch_t *pt = &patches[i];
        buf_t b = {0};
        pos_t ps;
        build_valid(&b, &ps, V3);
        size_t at = pt->field == F_ABS ? (size_t)pt->index : field_at(&ps, pt);
        patch_le(&b, at, pt->value, pt->width);
        expect_fail((const uint8_t *)b.p, b.n, pt->label, pt->needle);
        free(b.p);
    }
}

static void test_every_prefix(void **state)
{
    (void)state;
    opts_t os[2] = {V3, {2, 0}};
    for (int k = 0; k < 2; k++) {
        buf_t b = {0};
        pos_t ps;
        build_valid(&b, &ps, os[k]);
        for (size_t n = 0; n < b.n; n++) {
            /* a heap copy of exactly n bytes, so ASan sees any overread */
            uint8_t *c = malloc(n ? n : 1);
            memcpy(c, b.p, n);
            char label[64];
            snprintf(label, sizeof label, "prefix %zu of %zu", n, b.n);
            expect_fail(n ? c : NULL, n, label, NULL);
            free(c);
        }
        free(b.p);
    }
}

static void test_nesting_limit(void **state)
{
    (void)state;
    for (int depth = 1; depth <= 6; depth++) {
        buf_t b = {0};
        put(&b, "GGUF", 4);
        put_u32(&b, 3);
        put_u64(&b, 0);
        put_u64(&b, 1);
        put_str(&b, "nested");
        put_u32(&b, GGUF_T_ARRAY);
        for (int d = 1; d < depth; d++) {
            put_u32(&b, GGUF_T_ARRAY);
            put_u64(&b, 1);
        }
        put_u32(&b, GGUF_T_U8);
        put_u64(&b, 1);
        put_u8(&b, 7);
        gguf_t *g = NULL;
        bar_msg_t msg = {{0}};
        int rc = gguf_parse(&g, (const uint8_t *)b.p, b.n, &msg);
        if (depth <= 4) {
            if (rc) fail_msg("depth %d: %s", depth, msg.text);
            gguf_close(g);
        } else {
            expect_fail((const uint8_t *)b.p, b.n, "nested too deep", "nested");
        }
        free(b.p);
    }
}

static void test_open_file(void **state)
{
    (void)state;
    buf_t b = {0};
    pos_t ps;
    build_valid(&b, &ps, V3);
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    gguf_t *g = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(gguf_open(&g, path, &msg), 0);
    assert_int_equal(gguf_tensor_count(g), 3);
    assert_int_equal(((const uint8_t *)gguf_tensor_find(g, "b")->data)[0],
                     ((const uint8_t *)b.p)[ps.data_start + ps.t_offset[1]]);
    gguf_close(g);

    /* truncated on disk: the message is prefixed with the path */
    assert_int_equal(truncate(path, (off_t)(b.n - 1)), 0);
    assert_int_equal(gguf_open(&g, path, &msg), BAR_ERR_FORMAT);
    assert_null(g);
    assert_non_null(strstr(msg.text, path));
    assert_non_null(strstr(msg.text, "offset "));
    unlink(path);
    assert_true(gguf_open(&g, path, &msg) < 0);
    assert_null(g);
    assert_true(msg.text[0] != 0);
    gguf_close(NULL);
    free(b.p);
}

#ifdef BARISTA_SOURCE_DIR
/* The real SmolLM2 file, when it has been fetched (model-facts.md). */
static void test_real_smollm2(void **state)
{
    (void)state;
    char path[4096];
    test_model_path(path, sizeof path, TEST_SMOLLM2);
    if (access(path, R_OK) != 0) skip();
    gguf_t *g = NULL;
    bar_msg_t msg = {{0}};
    if (gguf_open(&g, path, &msg)) fail_msg("%s", msg.text);
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_tensor_count(g), 272);
    gguf_str_t arch;
    assert_int_equal(gguf_get_str(g, "general.architecture", &arch), 0);
    assert_int_equal(arch.n, 5);
    assert_memory_equal(arch.p, "llama", 5);
    uint32_t u;
    assert_int_equal(gguf_get_u32(g, "llama.block_count", &u), 0);
    assert_int_equal(u, 30);
    assert_int_equal(gguf_get_u32(g, "llama.embedding_length", &u), 0);
    assert_int_equal(u, 576);
    const gguf_tensor_t *t = gguf_tensor_find(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, GGML_Q8_0);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 49152);
    assert_int_equal(gguf_tensor_find(g, "blk.0.attn_q.weight")->type, GGML_Q4_1);
    assert_int_equal(gguf_tensor_find(g, "blk.29.ffn_norm.weight")->type, GGML_F32);
    assert_null(gguf_tensor_find(g, "output.weight")); /* tied embeddings */
    const gguf_kv_t *tok = gguf_kv_find(g, "tokenizer.ggml.tokens");
    assert_non_null(tok);
    assert_int_equal(tok->arr_n, 49152);
    gguf_str_t first[3];
    assert_int_equal(gguf_arr_strings(tok, first, 3), 0);
    assert_int_equal(first[2].n, strlen("<|im_end|>"));
    assert_memory_equal(first[2].p, "<|im_end|>", first[2].n);
    gguf_close(g);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3),
        cmocka_unit_test(test_valid_v2),
        cmocka_unit_test(test_valid_default_alignment),
        cmocka_unit_test(test_valid_alignment_64),
        cmocka_unit_test(test_empty_file_no_tensors),
        cmocka_unit_test(test_type_tables),
        cmocka_unit_test(test_patched),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_open_file),
#ifdef BARISTA_SOURCE_DIR
        cmocka_unit_test(test_real_smollm2),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
