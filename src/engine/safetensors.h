/* safetensors.h — a bounds-checked reader for Hugging Face .safetensors files.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (an object
 * mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]},
 * plus an optional "__metadata__" object of string values), then the data
 * section; data_offsets are relative to byte 8 + N. safet_parse validates the
 * whole header once (length, JSON, dtypes, shapes, offsets against the data
 * size, byte counts against shape x dtype, no overlapping tensors, no
 * duplicate names) and afterwards hands out pointers into the mapping.
 *
 * Not for: converting dtypes or interpreting the model (engine/bert.c does
 * that), or writing safetensors.
 *
 * Ownership: safet_open / safet_parse return a heap safet_t the caller frees
 * with safet_close. Names and metadata strings are decoded copies owned by the
 * safet_t; tensor data pointers point into the mapping (safet_open) or the
 * caller's buffer (safet_parse). All of them are valid until safet_close. */
#ifndef BARISTA_ENGINE_SAFETENSORS_H
#define BARISTA_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Largest JSON header accepted (the reference implementation's limit). */
#define SAFET_MAX_HEADER_BYTES 100000000u
/* Most dimensions a tensor may have. */
#define SAFET_MAX_DIMS 8

/* Element types, as named in the header's "dtype". */
typedef enum {
    SAFET_BOOL = 0,
    SAFET_U8,
    SAFET_I8,
    SAFET_F8_E5M2,
    SAFET_F8_E4M3,
    SAFET_U16,
    SAFET_I16,
    SAFET_F16,
    SAFET_BF16,
    SAFET_U32,
    SAFET_I32,
    SAFET_F32,
    SAFET_U64,
    SAFET_I64,
    SAFET_F64,
    SAFET_DTYPE_COUNT
} safet_dtype_t;

typedef struct {
    const char *name; /* NUL-terminated, owned by the safet_t */
    safet_dtype_t dtype;
    uint32_t n_dims;               /* 0 (a scalar) .. SAFET_MAX_DIMS */
    int64_t shape[SAFET_MAX_DIMS]; /* row-major: shape[n_dims - 1] is contiguous */
    uint64_t n_elems;              /* product of shape (1 for a scalar) */
    uint64_t begin, end;           /* data_offsets, relative to the data section */
    uint64_t n_bytes;              /* end - begin == n_elems * dtype size */
    const void *data;              /* into the mapping; unaligned in general */
} safet_tensor_t;

typedef struct {
    const char *key;   /* NUL-terminated, owned by the safet_t */
    const char *value; /* NUL-terminated, owned by the safet_t */
} safet_meta_t;

typedef struct safet safet_t;

/* Map `path` read-only and validate it. On error *out is NULL, the return is a
 * negative code and msg reads "PATH: offset N: what was expected". */
int safet_open(safet_t **out, const char *path, bar_msg_t *msg);

/* Validate an in-memory file (not copied; must outlive the safet_t). On error
 * *out is NULL and msg reads "offset N: what was expected". */
int safet_parse(safet_t **out, const uint8_t *data, size_t size, bar_msg_t *msg);

/* Frees everything; NULL is fine. */
void safet_close(safet_t *s);

/* Length N of the JSON header; the data section starts at 8 + N. */
size_t safet_header_size(const safet_t *s);
size_t safet_data_offset(const safet_t *s);
size_t safet_file_size(const safet_t *s);

/* Tensors in data order (ascending begin, then name). */
size_t safet_tensor_count(const safet_t *s);
/* NULL when i is out of range. */
const safet_tensor_t *safet_tensor_at(const safet_t *s, size_t i);
/* NULL when absent. */
const safet_tensor_t *safet_tensor_find(const safet_t *s, const char *name);

/* The "__metadata__" entries, in key order. */
size_t safet_meta_count(const safet_t *s);
const safet_meta_t *safet_meta_at(const safet_t *s, size_t i);
/* The value, or NULL when absent. */
const char *safet_meta_find(const safet_t *s, const char *key);

/* "F32", "BF16", ...; NULL for an unknown id. */
const char *safet_dtype_name(uint32_t dtype);
/* Bytes per element; 0 for an unknown id. */
size_t safet_dtype_size(uint32_t dtype);

#endif
