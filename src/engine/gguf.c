/* gguf.c — the GGUF v2/v3 reader behind gguf.h.
 *
 * gguf_parse walks the whole header once with a bounds-checked cursor (rd_t):
 * every count is checked against what the remaining bytes could hold before
 * anything is allocated, every string length against the remaining bytes,
 * every value type and ggml type id against the known tables, every tensor's
 * shape, byte size, alignment and extent against the file, with overflow checks
 * on every product and sum. Afterwards nothing reads the mapping without a
 * checked length, so the accessors are plain lookups. Errors name the byte
 * offset of the field that was wrong and what was expected there.
 *
 * Not for: interpreting model hyper-parameters or tensor contents (the engine
 * does that), writing GGUF, or big-endian GGUF files (rejected by version). */
#include "engine/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mfile.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DIMS 4u
#define GGUF_MAX_ARRAY_DEPTH 4    /* an array may hold arrays, 4 levels in all */
#define GGUF_KV_MIN_BYTES 13u     /* key length (8) + value type (4) + 1-byte value */
#define GGUF_TENSOR_MIN_BYTES 24u /* name length (8) + n_dims (4) + type (4) + offset (8) */

struct gguf {
    mfile_t mf; /* zeroed when parsing a caller's buffer */
    const uint8_t *base;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    size_t data_off;
    size_t n_kv;
    gguf_kv_t *kv;
    const gguf_kv_t **kv_by_key; /* sorted by key, for binary search */
    size_t n_tensors;
    gguf_tensor_t *tensors;
    const gguf_tensor_t **t_by_name; /* sorted by name */
};

/* ---- type tables ---------------------------------------------------------- */

typedef struct {
    uint32_t id;
    const char *name;
    uint32_t block_elems;
    uint32_t block_bytes;
} ggml_type_info_t;

static const ggml_type_info_t ggml_types[] = {
    {GGML_F32, "F32", 1, 4},       {GGML_F16, "F16", 1, 2},       {GGML_Q4_0, "Q4_0", 32, 18},
    {GGML_Q4_1, "Q4_1", 32, 20},   {GGML_Q5_0, "Q5_0", 32, 22},   {GGML_Q5_1, "Q5_1", 32, 24},
    {GGML_Q8_0, "Q8_0", 32, 34},   {GGML_Q8_1, "Q8_1", 32, 36},   {GGML_Q2_K, "Q2_K", 256, 84},
    {GGML_Q3_K, "Q3_K", 256, 110}, {GGML_Q4_K, "Q4_K", 256, 144}, {GGML_Q5_K, "Q5_K", 256, 176},
    {GGML_Q6_K, "Q6_K", 256, 210}, {GGML_Q8_K, "Q8_K", 256, 292}, {GGML_BF16, "BF16", 1, 2},
};

static const ggml_type_info_t *ggml_type_info(uint32_t type)
{
    for (size_t i = 0; i < sizeof ggml_types / sizeof ggml_types[0]; i++)
        if (ggml_types[i].id == type) return &ggml_types[i];
    return NULL;
}

const char *ggml_type_name(uint32_t type)
{
    const ggml_type_info_t *t = ggml_type_info(type);
    return t ? t->name : NULL;
}

size_t ggml_type_block_elems(uint32_t type)
{
    const ggml_type_info_t *t = ggml_type_info(type);
    return t ? t->block_elems : 0;
}

size_t ggml_type_block_bytes(uint32_t type)
{
    const ggml_type_info_t *t = ggml_type_info(type);
    return t ? t->block_bytes : 0;
}

static const char *const vtype_names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};

const char *gguf_vtype_name(uint32_t t)
{
    return t < sizeof vtype_names / sizeof vtype_names[0] ? vtype_names[t] : NULL;
}

size_t gguf_vtype_size(uint32_t t)
{
    switch (t) {
    case GGUF_T_U8:
    case GGUF_T_I8:
    case GGUF_T_BOOL:
        return 1;
    case GGUF_T_U16:
    case GGUF_T_I16:
        return 2;
    case GGUF_T_U32:
    case GGUF_T_I32:
    case GGUF_T_F32:
        return 4;
    case GGUF_T_U64:
    case GGUF_T_I64:
    case GGUF_T_F64:
        return 8;
    default:
        return 0;
    }
}

/* Smallest number of bytes one value of type t can occupy. */
static size_t vtype_min_bytes(uint32_t t)
{
    if (t == GGUF_T_STRING) return 8; /* length */
    if (t == GGUF_T_ARRAY) return 12; /* element type + count */
    return gguf_vtype_size(t);
}

/* ---- little-endian loads -------------------------------------------------- */

static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
}

/* ---- bounds-checked cursor ------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t off;
    bar_msg_t *msg;
} rd_t;

static size_t rd_left(const rd_t *r)
{
    return r->size - r->off;
}

static int rd_need(rd_t *r, size_t n, const char *what)
{
    if (n > rd_left(r))
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: expected %s (%zu bytes) but only %zu bytes remain", r->off,
                        what, n, rd_left(r));
    return 0;
}

static int rd_u32(rd_t *r, uint32_t *v, const char *what)
{
    int rc = rd_need(r, 4, what);
    if (rc) return rc;
    *v = ld32(r->p + r->off);
    r->off += 4;
    return 0;
}

static int rd_u64(rd_t *r, uint64_t *v, const char *what)
{
    int rc = rd_need(r, 8, what);
    if (rc) return rc;
    *v = ld64(r->p + r->off);
    r->off += 8;
    return 0;
}

/* Render up to 48 bytes of an untrusted name for an error message: printable
 * ASCII as is, everything else as \xHH, longer names cut with "...". */
static const char *safe_name(char buf[256], const char *p, size_t n)
{
    size_t o = 0;
    size_t lim = n < 48 ? n : 48;
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, 5, "\\x%02x", c);
    }
    if (n > lim) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* A string: u64 byte length, then the bytes (no NUL). */
static int rd_str(rd_t *r, gguf_str_t *s, const char *what)
{
    size_t at = r->off;
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc) return rc;
    if (n > rd_left(r))
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: %s length %llu exceeds the %zu remaining bytes", at, what,
                        (unsigned long long)n, rd_left(r));
    s->p = (const char *)(r->p + r->off);
    s->n = (size_t)n;
    r->off += (size_t)n;
    return 0;
}

/* A value type id (i32 on disk); must name one of the 13 GGUF value types. */
static int rd_vtype(rd_t *r, uint32_t *t, const char *what)
{
    size_t at = r->off;
    int rc = rd_u32(r, t, what);
    if (rc) return rc;
    if (*t > GGUF_T_F64)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: %s %d is not a GGUF value type (expected 0..12)", at, what,
                        (int32_t)*t);
    return 0;
}

/* Fixed-size elements: checks the bytes exist (and bools are 0 or 1). */
static int rd_fixed_run(rd_t *r, uint32_t t, uint64_t count, const char *what)
{
    size_t esz = gguf_vtype_size(t);
    /* caller already checked count <= left / esz */
    size_t n = (size_t)count * esz;
    int rc = rd_need(r, n, what);
    if (rc) return rc;
    if (t == GGUF_T_BOOL) {
        for (size_t i = 0; i < n; i++)
            if (r->p[r->off + i] > 1)
                return bar_fail(r->msg, BAR_ERR_FORMAT,
                                "offset %zu: bool value %u, expected 0 or 1", r->off + i,
                                r->p[r->off + i]);
    }
    r->off += n;
    return 0;
}

/* An array body after its header is read: `count` elements of type `et`. */
static int rd_array_body(rd_t *r, uint32_t et, uint64_t count, int depth);

/* An array header (element type, count) and body. depth = nesting level of
 * this array, 1 for an array that is a kv's value. */
static int rd_array(rd_t *r, int depth, uint32_t *et_out, uint64_t *n_out)
{
    size_t at = r->off;
    uint32_t et;
    int rc = rd_vtype(r, &et, "array element type");
    if (rc) return rc;
    if (et == GGUF_T_ARRAY && depth >= GGUF_MAX_ARRAY_DEPTH)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: arrays nested more than %d deep, expected at most %d", at,
                        depth + 1, GGUF_MAX_ARRAY_DEPTH);
    size_t count_at = r->off;
    uint64_t count;
    rc = rd_u64(r, &count, "array count");
    if (rc) return rc;
    size_t min = vtype_min_bytes(et);
    if (count > rd_left(r) / min)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: array count %llu exceeds what %zu remaining bytes can hold "
                        "(%s elements need at least %zu bytes each)",
                        count_at, (unsigned long long)count, rd_left(r), gguf_vtype_name(et), min);
    rc = rd_array_body(r, et, count, depth);
    if (rc) return rc;
    *et_out = et;
    *n_out = count;
    return 0;
}

static int rd_array_body(rd_t *r, uint32_t et, uint64_t count, int depth)
{
    if (et == GGUF_T_STRING) {
        for (uint64_t i = 0; i < count; i++) {
            gguf_str_t s;
            int rc = rd_str(r, &s, "array string");
            if (rc) return rc;
        }
        return 0;
    }
    if (et == GGUF_T_ARRAY) {
        for (uint64_t i = 0; i < count; i++) {
            uint32_t inner_t;
            uint64_t inner_n;
            int rc = rd_array(r, depth + 1, &inner_t, &inner_n);
            if (rc) return rc;
        }
        return 0;
    }
    return rd_fixed_run(r, et, count, "array elements");
}

/* One KV value of type t into kv. */
static int rd_value(rd_t *r, gguf_kv_t *kv)
{
    const uint8_t *p = r->p + r->off;
    size_t at = r->off;
    uint32_t t = kv->type;
    if (t == GGUF_T_STRING) return rd_str(r, &kv->str, "string value");
    if (t == GGUF_T_ARRAY) {
        uint32_t et;
        uint64_t n;
        int rc = rd_array(r, 1, &et, &n);
        if (rc) return rc;
        size_t start = at + 12; /* after the element type and count */
        kv->arr_type = (gguf_vtype_t)et;
        kv->arr_n = n;
        kv->arr_data = r->p + start;
        kv->arr_bytes = r->off - start;
        return 0;
    }
    int rc = rd_fixed_run(r, t, 1, gguf_vtype_name(t));
    if (rc) return rc;
    switch (t) {
    case GGUF_T_U8:
        kv->v.u = p[0];
        break;
    case GGUF_T_I8:
        kv->v.i = (int8_t)p[0];
        break;
    case GGUF_T_U16:
        kv->v.u = ld16(p);
        break;
    case GGUF_T_I16:
        kv->v.i = (int16_t)ld16(p);
        break;
    case GGUF_T_U32:
        kv->v.u = ld32(p);
        break;
    case GGUF_T_I32:
        kv->v.i = (int32_t)ld32(p);
        break;
    case GGUF_T_U64:
        kv->v.u = ld64(p);
        break;
    case GGUF_T_I64:
        kv->v.i = (int64_t)ld64(p);
        break;
    case GGUF_T_BOOL:
        kv->v.b = p[0];
        break;
    case GGUF_T_F32: {
        uint32_t bits = ld32(p);
        float f;
        memcpy(&f, &bits, 4);
        kv->v.f = f;
        break;
    }
    case GGUF_T_F64: {
        uint64_t bits = ld64(p);
        memcpy(&kv->v.f, &bits, 8);
        break;
    }
    default:
        break;
    }
    return 0;
}

/* ---- sorting and lookup --------------------------------------------------- */

static int str_cmp(gguf_str_t a, gguf_str_t b)
{
    size_t n = a.n < b.n ? a.n : b.n;
    int c = n ? memcmp(a.p, b.p, n) : 0;
    if (c) return c;
    return a.n < b.n ? -1 : a.n > b.n;
}

static int kv_ptr_cmp(const void *a, const void *b)
{
    return str_cmp((*(const gguf_kv_t *const *)a)->key, (*(const gguf_kv_t *const *)b)->key);
}

static int tensor_ptr_cmp(const void *a, const void *b)
{
    return str_cmp((*(const gguf_tensor_t *const *)a)->name,
                   (*(const gguf_tensor_t *const *)b)->name);
}

/* ---- parse ---------------------------------------------------------------- */

static int parse_kvs(gguf_t *g, rd_t *r)
{
    for (size_t i = 0; i < g->n_kv; i++) {
        gguf_kv_t *kv = &g->kv[i];
        int rc = rd_str(r, &kv->key, "key");
        if (rc) return rc;
        uint32_t t;
        rc = rd_vtype(r, &t, "value type");
        if (rc) return rc;
        kv->type = (gguf_vtype_t)t;
        rc = rd_value(r, kv);
        if (rc) return rc;
    }
    if (g->n_kv) {
        g->kv_by_key = malloc(g->n_kv * sizeof *g->kv_by_key);
        if (!g->kv_by_key)
            return bar_fail(r->msg, BAR_ERR_NOMEM, "out of memory indexing %zu keys", g->n_kv);
        for (size_t i = 0; i < g->n_kv; i++)
            g->kv_by_key[i] = &g->kv[i];
        qsort(g->kv_by_key, g->n_kv, sizeof *g->kv_by_key, kv_ptr_cmp);
        for (size_t i = 1; i < g->n_kv; i++) {
            if (str_cmp(g->kv_by_key[i - 1]->key, g->kv_by_key[i]->key) == 0) {
                const gguf_kv_t *a = g->kv_by_key[i - 1], *b = g->kv_by_key[i];
                const gguf_kv_t *later = a > b ? a : b;
                char nb[256];
                return bar_fail(r->msg, BAR_ERR_FORMAT,
                                "offset %zu: duplicate key '%s', expected each key once",
                                (size_t)((const uint8_t *)later->key.p - g->base) - 8,
                                safe_name(nb, later->key.p, later->key.n));
            }
        }
    }
    return 0;
}

static int parse_alignment(gguf_t *g, bar_msg_t *msg)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv_t *kv = gguf_kv_find(g, "general.alignment");
    if (!kv) return 0;
    size_t at = (size_t)((const uint8_t *)kv->key.p - g->base) + kv->key.n + 4;
    if (kv->type != GGUF_T_U32)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "offset %zu: general.alignment has type %s, expected u32", at,
                        gguf_vtype_name(kv->type));
    uint64_t a = kv->v.u;
    if (a == 0 || (a & (a - 1)) != 0)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "offset %zu: general.alignment %llu, expected a power of two", at + 4,
                        (unsigned long long)a);
    g->alignment = (uint32_t)a;
    return 0;
}

/* a * b into *out, failing on uint64 overflow. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

static int parse_tensor_info(gguf_t *g, rd_t *r, gguf_tensor_t *t)
{
    char nb[256];
    int rc = rd_str(r, &t->name, "tensor name");
    if (rc) return rc;
    const char *nm = safe_name(nb, t->name.p, t->name.n);
    size_t at = r->off;
    rc = rd_u32(r, &t->n_dims, "tensor n_dims");
    if (rc) return rc;
    if (t->n_dims > GGUF_MAX_DIMS)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' has %u dimensions, expected at most %u", at, nm,
                        t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        at = r->off;
        uint64_t v;
        rc = rd_u64(r, &v, "tensor dimension");
        if (rc) return rc;
        if (v > (uint64_t)INT64_MAX)
            return bar_fail(r->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' ne[%u] = %lld, expected >= 0", at, nm, d,
                            (long long)(int64_t)v);
        t->ne[d] = (int64_t)v;
        if (mul_u64(n_elems, v, &n_elems) != 0 || n_elems > (uint64_t)INT64_MAX)
            return bar_fail(r->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' element count overflows at ne[%u] = %lld, "
                            "expected a product below 2^63",
                            at, nm, d, (long long)t->ne[d]);
    }
    at = r->off;
    uint32_t type;
    rc = rd_u32(r, &type, "tensor type");
    if (rc) return rc;
    const ggml_type_info_t *ti = ggml_type_info(type);
    if (!ti)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' has ggml type %d, expected a known type "
                        "(F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K..Q8_K)",
                        at, nm, (int32_t)type);
    t->type = (ggml_type_t)type;
    if ((uint64_t)t->ne[0] % ti->block_elems != 0)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' row length ne[0] = %lld, expected a multiple of "
                        "the %s block size %u",
                        at, nm, (long long)t->ne[0], ti->name, ti->block_elems);
    uint64_t bytes;
    if (mul_u64((uint64_t)t->ne[0] / ti->block_elems, ti->block_bytes, &bytes) != 0 ||
        mul_u64(bytes, (uint64_t)t->ne[1], &bytes) != 0 ||
        mul_u64(bytes, (uint64_t)t->ne[2], &bytes) != 0 ||
        mul_u64(bytes, (uint64_t)t->ne[3], &bytes) != 0)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' byte size overflows 64 bits, expected a "
                        "size that fits",
                        at, nm);
    t->n_bytes = bytes;
    at = r->off;
    rc = rd_u64(r, &t->offset, "tensor data offset");
    if (rc) return rc;
    if (t->offset % g->alignment != 0)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' data offset %llu, expected a multiple of the "
                        "alignment %u",
                        at, nm, (unsigned long long)t->offset, g->alignment);
    return 0;
}

/* Byte offset in the file of tensor t's data-offset field (for messages). */
static size_t tensor_offset_field(const gguf_t *g, const gguf_tensor_t *t)
{
    return (size_t)((const uint8_t *)t->name.p - g->base) + t->name.n + 4 + 8 * t->n_dims + 4;
}

static int parse_tensors(gguf_t *g, rd_t *r)
{
    for (size_t i = 0; i < g->n_tensors; i++) {
        int rc = parse_tensor_info(g, r, &g->tensors[i]);
        if (rc) return rc;
    }
    /* the data section starts at the first multiple of the alignment */
    size_t pad = (g->alignment - r->off % g->alignment) % g->alignment;
    if (pad > SIZE_MAX - r->off)
        return bar_fail(r->msg, BAR_ERR_FORMAT, "offset %zu: data section start overflows", r->off);
    g->data_off = r->off + pad;
    if (g->n_tensors == 0) {
        if (g->data_off > g->size) g->data_off = g->size; /* no data section needed */
    } else if (g->data_off > g->size) {
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: expected the data section at offset %zu (aligned to %u) "
                        "but the file ends at %zu",
                        r->off, g->data_off, g->alignment, g->size);
    }
    size_t data_size = g->size - g->data_off;
    for (size_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor_t *t = &g->tensors[i];
        if (t->offset > data_size || t->n_bytes > data_size - t->offset) {
            char nb[256];
            return bar_fail(r->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' data [%llu, %llu + %llu) runs past the end "
                            "of the %zu-byte data section, expected it inside",
                            tensor_offset_field(g, t), safe_name(nb, t->name.p, t->name.n),
                            (unsigned long long)t->offset, (unsigned long long)t->offset,
                            (unsigned long long)t->n_bytes, data_size);
        }
        t->data = g->base + g->data_off + t->offset;
    }
    if (g->n_tensors) {
        g->t_by_name = malloc(g->n_tensors * sizeof *g->t_by_name);
        if (!g->t_by_name)
            return bar_fail(r->msg, BAR_ERR_NOMEM, "out of memory indexing %zu tensors",
                            g->n_tensors);
        for (size_t i = 0; i < g->n_tensors; i++)
            g->t_by_name[i] = &g->tensors[i];
        qsort(g->t_by_name, g->n_tensors, sizeof *g->t_by_name, tensor_ptr_cmp);
        for (size_t i = 1; i < g->n_tensors; i++) {
            const gguf_tensor_t *a = g->t_by_name[i - 1], *b = g->t_by_name[i];
            if (str_cmp(a->name, b->name) == 0) {
                const gguf_tensor_t *later = a > b ? a : b;
                char nb[256];
                return bar_fail(r->msg, BAR_ERR_FORMAT,
                                "offset %zu: duplicate tensor name '%s', expected each name once",
                                (size_t)((const uint8_t *)later->name.p - g->base) - 8,
                                safe_name(nb, later->name.p, later->name.n));
            }
        }
    }
    return 0;
}

/* A count field (i64 on disk): non-negative and no more than the remaining
 * bytes could hold at `min` bytes per entry. */
static int rd_count(rd_t *r, size_t *out, size_t min, const char *what)
{
    size_t at = r->off;
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc) return rc;
    if (n > (uint64_t)INT64_MAX)
        return bar_fail(r->msg, BAR_ERR_FORMAT, "offset %zu: %s %lld, expected >= 0", at, what,
                        (long long)(int64_t)n);
    if (n > rd_left(r) / min)
        return bar_fail(r->msg, BAR_ERR_FORMAT,
                        "offset %zu: %s %llu exceeds what %zu remaining bytes can hold "
                        "(at least %zu bytes each)",
                        at, what, (unsigned long long)n, rd_left(r), min);
    *out = (size_t)n;
    return 0;
}

int gguf_parse(gguf_t **out, const uint8_t *data, size_t size, bar_msg_t *msg)
{
    *out = NULL;
    rd_t r = {data, data ? size : 0, 0, msg};
    if (r.size < 4 || memcmp(data, GGUF_MAGIC, 4) != 0)
        return bar_fail(msg, BAR_ERR_FORMAT, "offset 0: expected magic \"GGUF\"%s",
                        r.size < 4 ? " but the file is shorter than 4 bytes" : "");
    r.off = 4;
    uint32_t version;
    int rc = rd_u32(&r, &version, "version");
    if (rc) return rc;
    if (version != 2 && version != 3)
        return bar_fail(msg, BAR_ERR_FORMAT, "offset 4: version %u, expected 2 or 3%s", version,
                        (version & 0xffff) == 0 ? " (big-endian GGUF is not supported)" : "");
    gguf_t *g = calloc(1, sizeof *g);
    if (!g) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    g->base = data;
    g->size = r.size;
    g->version = version;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    /* the two counts come before either table, so the tensor count can only be
     * bounded by all remaining bytes; the KV table is checked precisely next */
    rc = rd_count(&r, &g->n_tensors, GGUF_TENSOR_MIN_BYTES, "tensor count");
    if (rc) goto fail;
    rc = rd_count(&r, &g->n_kv, GGUF_KV_MIN_BYTES, "kv count");
    if (rc) goto fail;
    if (g->n_kv && !(g->kv = calloc(g->n_kv, sizeof *g->kv))) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory for %zu keys", g->n_kv);
        goto fail;
    }
    rc = parse_kvs(g, &r);
    if (rc) goto fail;
    rc = parse_alignment(g, msg);
    if (rc) goto fail;
    if (g->n_tensors > rd_left(&r) / GGUF_TENSOR_MIN_BYTES) {
        rc = bar_fail(msg, BAR_ERR_FORMAT,
                      "offset 8: tensor count %zu exceeds what the %zu bytes after the "
                      "metadata (offset %zu) can hold",
                      g->n_tensors, rd_left(&r), r.off);
        goto fail;
    }
    if (g->n_tensors && !(g->tensors = calloc(g->n_tensors, sizeof *g->tensors))) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory for %zu tensors", g->n_tensors);
        goto fail;
    }
    rc = parse_tensors(g, &r);
    if (rc) goto fail;
    *out = g;
    return 0;
fail:
    gguf_close(g);
    return rc;
}

int gguf_open(gguf_t **out, const char *path, bar_msg_t *msg)
{
    *out = NULL;
    mfile_t mf;
    int rc = mfile_open(&mf, path, msg);
    if (rc) return rc;
    gguf_t *g;
    bar_msg_t inner = {{0}};
    rc = gguf_parse(&g, mf.data, mf.size, &inner);
    if (rc) {
        mfile_close(&mf);
        return bar_fail(msg, rc, "%s: %s", path, inner.text);
    }
    g->mf = mf;
    *out = g;
    return 0;
}

void gguf_close(gguf_t *g)
{
    if (!g) return;
    free(g->kv);
    free(g->kv_by_key);
    free(g->tensors);
    free(g->t_by_name);
    mfile_close(&g->mf);
    free(g);
}

/* ---- accessors ------------------------------------------------------------ */

uint32_t gguf_version(const gguf_t *g)
{
    return g->version;
}

uint32_t gguf_alignment(const gguf_t *g)
{
    return g->alignment;
}

size_t gguf_data_offset(const gguf_t *g)
{
    return g->data_off;
}

size_t gguf_file_size(const gguf_t *g)
{
    return g->size;
}

size_t gguf_kv_count(const gguf_t *g)
{
    return g->n_kv;
}

const gguf_kv_t *gguf_kv_at(const gguf_t *g, size_t i)
{
    return i < g->n_kv ? &g->kv[i] : NULL;
}

/* Compare a slice with a C string as str_cmp would. */
static int str_cmp_c(gguf_str_t a, const char *b)
{
    gguf_str_t s = {b, strlen(b)};
    return str_cmp(a, s);
}

const gguf_kv_t *gguf_kv_find(const gguf_t *g, const char *key)
{
    if (!g->kv_by_key) return NULL;
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp_c(g->kv_by_key[mid]->key, key);
        if (c == 0) return g->kv_by_key[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t gguf_tensor_count(const gguf_t *g)
{
    return g->n_tensors;
}

const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const gguf_tensor_t *gguf_tensor_find(const gguf_t *g, const char *name)
{
    if (!g->t_by_name) return NULL;
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp_c(g->t_by_name[mid]->name, name);
        if (c == 0) return g->t_by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int is_unsigned_int(uint32_t t)
{
    return t == GGUF_T_U8 || t == GGUF_T_U16 || t == GGUF_T_U32 || t == GGUF_T_U64;
}

static int is_signed_int(uint32_t t)
{
    return t == GGUF_T_I8 || t == GGUF_T_I16 || t == GGUF_T_I32 || t == GGUF_T_I64;
}

int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return BAR_ERR_NOTFOUND;
    if (is_unsigned_int(kv->type) && kv->v.u <= UINT32_MAX) {
        *out = (uint32_t)kv->v.u;
        return 0;
    }
    if (is_signed_int(kv->type) && kv->v.i >= 0 && kv->v.i <= (int64_t)UINT32_MAX) {
        *out = (uint32_t)kv->v.i;
        return 0;
    }
    return BAR_ERR_FORMAT;
}

int gguf_get_f32(const gguf_t *g, const char *key, float *out)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return BAR_ERR_NOTFOUND;
    if (kv->type != GGUF_T_F32 && kv->type != GGUF_T_F64) return BAR_ERR_FORMAT;
    *out = (float)kv->v.f;
    return 0;
}

int gguf_get_bool(const gguf_t *g, const char *key, int *out)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return BAR_ERR_NOTFOUND;
    if (kv->type != GGUF_T_BOOL) return BAR_ERR_FORMAT;
    *out = kv->v.b;
    return 0;
}

int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return BAR_ERR_NOTFOUND;
    if (kv->type != GGUF_T_STRING) return BAR_ERR_FORMAT;
    *out = kv->str;
    return 0;
}

int gguf_arr_strings(const gguf_kv_t *kv, gguf_str_t *out, uint64_t n)
{
    if (!kv || kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING) return BAR_ERR_INVALID;
    if (n > kv->arr_n) return BAR_ERR_RANGE;
    /* validated by gguf_parse; the bounds are re-checked anyway */
    size_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (kv->arr_bytes - off < 8) return BAR_ERR_FORMAT;
        uint64_t len = ld64(kv->arr_data + off);
        off += 8;
        if (len > kv->arr_bytes - off) return BAR_ERR_FORMAT;
        out[i].p = (const char *)kv->arr_data + off;
        out[i].n = (size_t)len;
        off += (size_t)len;
    }
    return 0;
}
