/* gguf.h — a bounds-checked reader for GGUF v2/v3 model files.
 *
 * The file is mmapped read-only (util/mfile.h); the reader validates the whole
 * header (KV pairs, tensor infos, alignment, data extents) once in gguf_open and
 * afterwards hands out pointers into the mapping. Not for: interpreting the
 * model (engine/model.c does that) or writing GGUF.
 *
 * Ownership: gguf_open returns a heap gguf_t the caller frees with gguf_close;
 * every pointer obtained from it (strings, arrays, tensor data) lives in the
 * mapping and is valid until gguf_close. */
#ifndef BARISTA_ENGINE_GGUF_H
#define BARISTA_ENGINE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* GGUF metadata value types (on-disk ids). */
typedef enum {
    GGUF_T_U8 = 0,
    GGUF_T_I8 = 1,
    GGUF_T_U16 = 2,
    GGUF_T_I16 = 3,
    GGUF_T_U32 = 4,
    GGUF_T_I32 = 5,
    GGUF_T_F32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9,
    GGUF_T_U64 = 10,
    GGUF_T_I64 = 11,
    GGUF_T_F64 = 12,
} gguf_vtype_t;

/* ggml tensor types (on-disk ids) that barista knows the block size of. */
typedef enum {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q5_0 = 6,
    GGML_Q5_1 = 7,
    GGML_Q8_0 = 8,
    GGML_Q8_1 = 9,
    GGML_Q2_K = 10,
    GGML_Q3_K = 11,
    GGML_Q4_K = 12,
    GGML_Q5_K = 13,
    GGML_Q6_K = 14,
    GGML_Q8_K = 15,
    GGML_BF16 = 30,
} ggml_type_t;

/* A string slice pointing into the mapping (not NUL-terminated). */
typedef struct {
    const char *p;
    size_t n;
} gguf_str_t;

typedef struct {
    gguf_str_t key;
    gguf_vtype_t type;
    /* scalar value, widened; valid for non-string, non-array types */
    union {
        uint64_t u;
        int64_t i;
        double f;
        int b;
    } v;
    gguf_str_t str;          /* valid when type == GGUF_T_STRING */
    gguf_vtype_t arr_type;   /* valid when type == GGUF_T_ARRAY */
    uint64_t arr_n;          /* element count */
    const uint8_t *arr_data; /* first element in the mapping */
    size_t arr_bytes;        /* bytes the array occupies */
} gguf_kv_t;

typedef struct {
    gguf_str_t name;
    uint32_t n_dims;
    int64_t ne[4]; /* ne[0] is the contiguous row length; unused dims = 1 */
    ggml_type_t type;
    uint64_t offset;  /* relative to the data section */
    uint64_t n_bytes; /* computed from type and shape */
    const void *data; /* pointer into the mapping */
} gguf_tensor_t;

typedef struct gguf gguf_t;

/* Open and fully validate `path`. On error returns NULL-out, a negative code,
 * and msg names the byte offset and what was expected. */
int gguf_open(gguf_t **out, const char *path, bar_msg_t *msg);

/* Parse an in-memory buffer (not copied; must outlive the gguf_t). Used by the
 * fuzzer and by gguf_open. */
int gguf_parse(gguf_t **out, const uint8_t *data, size_t size, bar_msg_t *msg);

void gguf_close(gguf_t *g);

uint32_t gguf_version(const gguf_t *g);
uint32_t gguf_alignment(const gguf_t *g);
size_t gguf_data_offset(const gguf_t *g);
size_t gguf_file_size(const gguf_t *g);

size_t gguf_kv_count(const gguf_t *g);
const gguf_kv_t *gguf_kv_at(const gguf_t *g, size_t i);
/* NULL when absent. */
const gguf_kv_t *gguf_kv_find(const gguf_t *g, const char *key);

/* Typed getters; return 0, or BAR_ERR_NOTFOUND / BAR_ERR_FORMAT (wrong type).
 * Integer getters accept any integer type whose value fits. */
int gguf_get_u32(const gguf_t *g, const char *key, uint32_t *out);
int gguf_get_f32(const gguf_t *g, const char *key, float *out);
int gguf_get_bool(const gguf_t *g, const char *key, int *out);
int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out);

/* Element i of a string array kv (arrays of strings are walked on demand;
 * gguf_arr_strings builds an index once). Returns 0 or a negative code.
 * Precisely: fills out[0..n) with the first n strings of the array (n <=
 * kv->arr_n; pass arr_n for all of them), slices into the mapping;
 * BAR_ERR_INVALID when kv is not a string array, BAR_ERR_RANGE when n > arr_n. */
int gguf_arr_strings(const gguf_kv_t *kv, gguf_str_t *out, uint64_t n);

size_t gguf_tensor_count(const gguf_t *g);
const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, size_t i);
const gguf_tensor_t *gguf_tensor_find(const gguf_t *g, const char *name);

/* Names and block geometry of ggml types; NULL / 0 for unknown ids. */
const char *ggml_type_name(uint32_t type);
size_t ggml_type_block_elems(uint32_t type);
size_t ggml_type_block_bytes(uint32_t type);
const char *gguf_vtype_name(uint32_t t);
/* Bytes of one value of a fixed-size value type (u8..f64, bool); 0 for string,
 * array and unknown ids. Array elements of such types are packed little-endian
 * at kv->arr_data. */
size_t gguf_vtype_size(uint32_t t);

#endif
