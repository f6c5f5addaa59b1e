/* gguf_write.h — writes GGUF v3 files: metadata copied from a reader or set
 * by the caller, tensor infos, then the tensor data streamed in order.
 *
 * Layout written (little-endian): magic "GGUF", version 3, tensor count, KV
 * count, the KV pairs, the tensor infos (name, n_dims, ne[], type, offset
 * relative to the data section), zero padding to the alignment, then each
 * tensor's bytes padded to the alignment. The file is written under a
 * temporary name next to `path` and renamed over it only when complete, so a
 * failed run never leaves a half file behind.
 *
 * Not for: reading (gguf.h) or converting tensor data (quantize.h).
 *
 * Use: gguf_writer_create → add KVs and tensor infos → gguf_writer_begin_data
 * → gguf_writer_tensor with each declared tensor's bytes in order →
 * gguf_writer_finish.
 * gguf_writer_destroy frees the writer (and removes the temporary file if
 * finish was not reached). */
#ifndef BARISTA_ENGINE_GGUF_WRITE_H
#define BARISTA_ENGINE_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "util/err.h"

typedef struct gguf_writer gguf_writer_t;

/* A writer for `path` with the given data alignment (a power of two; 0 means
 * 32, GGUF's default). The caller owns it and frees it with
 * gguf_writer_destroy. */
int gguf_writer_create(gguf_writer_t **out, const char *path, uint32_t alignment, bar_msg_t *msg);
void gguf_writer_destroy(gguf_writer_t *w);

/* Copy one KV pair from a reader as it is (key, type, value, arrays
 * included). */
int gguf_writer_kv_copy(gguf_writer_t *w, const gguf_kv_t *kv, bar_msg_t *msg);
/* Add a u32 / string KV pair. */
int gguf_writer_kv_u32(gguf_writer_t *w, const char *key, uint32_t v, bar_msg_t *msg);
int gguf_writer_kv_str(gguf_writer_t *w, const char *key, const char *v, bar_msg_t *msg);

/* Declare a tensor: name, 1..4 dims (ne[0] contiguous), type and its byte
 * size (checked against the type's block geometry). Offsets are assigned in
 * declaration order. */
int gguf_writer_tensor_info(gguf_writer_t *w, const char *name, uint32_t n_dims, const int64_t *ne,
                            ggml_type_t type, bar_msg_t *msg);

/* Write the header; after this only tensor data may follow. */
int gguf_writer_begin_data(gguf_writer_t *w, bar_msg_t *msg);
/* Bytes of the tensors in declaration order: a tensor's data may come in
 * several calls (row by row); once its declared size is reached the padding
 * is written and the next tensor starts. A call that would run past the last
 * tensor fails. */
int gguf_writer_tensor(gguf_writer_t *w, const void *data, size_t n, bar_msg_t *msg);
/* Check every tensor was written, flush, rename into place. */
int gguf_writer_finish(gguf_writer_t *w, bar_msg_t *msg);

#endif
