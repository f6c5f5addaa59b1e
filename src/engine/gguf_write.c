/* gguf_write.c — the GGUF v3 writer (see gguf_write.h). Metadata and tensor
 * infos are assembled in memory (a few MB at most: the vocabulary arrays);
 * tensor data goes straight to the file. Not for: reading GGUF (gguf.c). */
#include "engine/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/buf.h"

typedef struct {
    uint64_t n_bytes;
} winfo_t;

struct gguf_writer {
    char *path, *tmp;
    FILE *f;
    uint32_t align;
    buf_t kv, ti; /* serialized KV pairs / tensor infos */
    uint64_t n_kv;
    winfo_t *t;
    size_t n_t, cap_t, next; /* declared, capacity, next to write */
    uint64_t data_off;       /* running offset in the data section */
    uint64_t got;            /* bytes of tensor `next` written so far */
    int began, done;
};

static int put(buf_t *b, const void *p, size_t n, bar_msg_t *msg)
{
    return buf_append(b, p, n) ? bar_fail(msg, BAR_ERR_NOMEM, "out of memory") : 0;
}

static int put_u32(buf_t *b, uint32_t v, bar_msg_t *msg)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return put(b, x, 4, msg);
}

static int put_u64(buf_t *b, uint64_t v, bar_msg_t *msg)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    return put(b, x, 8, msg);
}

static int put_str(buf_t *b, const char *p, size_t n, bar_msg_t *msg)
{
    int rc = put_u64(b, n, msg);
    return rc ? rc : put(b, p, n, msg);
}

int gguf_writer_create(gguf_writer_t **out, const char *path, uint32_t alignment, bar_msg_t *msg)
{
    *out = NULL;
    if (alignment == 0) alignment = 32;
    if (alignment & (alignment - 1))
        return bar_fail(msg, BAR_ERR_INVALID, "alignment %u is not a power of two", alignment);
    gguf_writer_t *w = calloc(1, sizeof *w);
    if (!w) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    w->align = alignment;
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 16);
    if (!w->path || !w->tmp) {
        gguf_writer_destroy(w);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp, n + 16, "%s.tmp%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        int e = errno;
        gguf_writer_destroy(w);
        return bar_fail(msg, BAR_ERR_IO, "%s: %s", path, strerror(e));
    }
    *out = w;
    return 0;
}

void gguf_writer_destroy(gguf_writer_t *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    if (!w->done && w->tmp) unlink(w->tmp);
    buf_free(&w->kv);
    buf_free(&w->ti);
    free(w->t);
    free(w->path);
    free(w->tmp);
    free(w);
}

static int kv_head(gguf_writer_t *w, const char *key, size_t key_n, uint32_t type, bar_msg_t *msg)
{
    if (w->began) return bar_fail(msg, BAR_ERR_INVALID, "metadata after the header was written");
    int rc = put_str(&w->kv, key, key_n, msg);
    if (!rc) rc = put_u32(&w->kv, type, msg);
    if (!rc) w->n_kv++;
    return rc;
}

int gguf_writer_kv_copy(gguf_writer_t *w, const gguf_kv_t *kv, bar_msg_t *msg)
{
    int rc = kv_head(w, kv->key.p, kv->key.n, kv->type, msg);
    if (rc) return rc;
    switch (kv->type) {
    case GGUF_T_STRING:
        return put_str(&w->kv, kv->str.p, kv->str.n, msg);
    case GGUF_T_ARRAY:
        if ((rc = put_u32(&w->kv, kv->arr_type, msg)) || (rc = put_u64(&w->kv, kv->arr_n, msg)))
            return rc;
        /* arr_data..arr_bytes is the array's encoded body as it was on disk
         * (packed scalars, or length-prefixed strings). */
        return put(&w->kv, kv->arr_data, kv->arr_bytes, msg);
    default: {
        size_t sz = gguf_vtype_size(kv->type);
        if (!sz)
            return bar_fail(msg, BAR_ERR_FORMAT, "KV %.*s: unknown type %u", (int)kv->key.n,
                            kv->key.p, (unsigned)kv->type);
        uint8_t x[8];
        uint64_t v = kv->v.u; /* widened; the low sz bytes are the value */
        if (kv->type == GGUF_T_F32) {
            float f = (float)kv->v.f;
            uint32_t u;
            memcpy(&u, &f, 4);
            v = u;
        } else if (kv->type == GGUF_T_F64) {
            memcpy(&v, &kv->v.f, 8);
        } else if (kv->type == GGUF_T_BOOL) {
            v = kv->v.b ? 1 : 0;
        }
        for (size_t i = 0; i < sz; i++)
            x[i] = (uint8_t)(v >> (8 * i));
        return put(&w->kv, x, sz, msg);
    }
    }
}

int gguf_writer_kv_u32(gguf_writer_t *w, const char *key, uint32_t v, bar_msg_t *msg)
{
    int rc = kv_head(w, key, strlen(key), GGUF_T_U32, msg);
    return rc ? rc : put_u32(&w->kv, v, msg);
}

int gguf_writer_kv_str(gguf_writer_t *w, const char *key, const char *v, bar_msg_t *msg)
{
    int rc = kv_head(w, key, strlen(key), GGUF_T_STRING, msg);
    return rc ? rc : put_str(&w->kv, v, strlen(v), msg);
}

static uint64_t align_up(uint64_t x, uint32_t a)
{
    return (x + a - 1) & ~(uint64_t)(a - 1);
}

int gguf_writer_tensor_info(gguf_writer_t *w, const char *name, uint32_t n_dims, const int64_t *ne,
                            ggml_type_t type, bar_msg_t *msg)
{
    if (w->began) return bar_fail(msg, BAR_ERR_INVALID, "tensor info after the header");
    size_t be = ggml_type_block_elems(type), bb = ggml_type_block_bytes(type);
    if (!be || !bb) return bar_fail(msg, BAR_ERR_UNSUPPORTED, "tensor %s: type %u", name, type);
    if (n_dims < 1 || n_dims > 4)
        return bar_fail(msg, BAR_ERR_INVALID, "tensor %s: %u dims", name, n_dims);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return bar_fail(msg, BAR_ERR_INVALID, "tensor %s: dim %u <= 0", name, d);
        nel *= (uint64_t)ne[d];
    }
    if (ne[0] % (int64_t)be)
        return bar_fail(msg, BAR_ERR_INVALID, "tensor %s: row of %lld not a multiple of %zu", name,
                        (long long)ne[0], be);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        winfo_t *t = realloc(w->t, cap * sizeof *t);
        if (!t) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    int rc = put_str(&w->ti, name, strlen(name), msg);
    if (!rc) rc = put_u32(&w->ti, n_dims, msg);
    for (uint32_t d = 0; !rc && d < n_dims; d++)
        rc = put_u64(&w->ti, (uint64_t)ne[d], msg);
    if (!rc) rc = put_u32(&w->ti, type, msg);
    if (!rc) rc = put_u64(&w->ti, w->data_off, msg);
    if (rc) return rc;
    uint64_t nb = nel / be * bb;
    w->t[w->n_t++].n_bytes = nb;
    w->data_off = align_up(w->data_off + nb, w->align);
    return 0;
}

static int wr(gguf_writer_t *w, const void *p, size_t n, bar_msg_t *msg)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        return bar_fail(msg, BAR_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    return 0;
}

static int pad(gguf_writer_t *w, uint64_t at, bar_msg_t *msg)
{
    static const uint8_t zeros[64];
    uint64_t n = align_up(at, w->align) - at;
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        int rc = wr(w, zeros, k, msg);
        if (rc) return rc;
        n -= k;
    }
    return 0;
}

int gguf_writer_begin_data(gguf_writer_t *w, bar_msg_t *msg)
{
    if (w->began) return bar_fail(msg, BAR_ERR_INVALID, "header already written");
    buf_t h = {0};
    int rc = put(&h, "GGUF", 4, msg);
    if (!rc) rc = put_u32(&h, 3, msg);
    if (!rc) rc = put_u64(&h, w->n_t, msg);
    if (!rc) rc = put_u64(&h, w->n_kv, msg);
    if (!rc) rc = wr(w, h.p, h.n, msg);
    if (!rc) rc = wr(w, w->kv.p, w->kv.n, msg);
    if (!rc) rc = wr(w, w->ti.p, w->ti.n, msg);
    if (!rc) rc = pad(w, h.n + w->kv.n + w->ti.n, msg);
    buf_free(&h);
    w->began = 1;
    return rc;
}

int gguf_writer_tensor(gguf_writer_t *w, const void *data, size_t n, bar_msg_t *msg)
{
    const char *p = data;
    if (!w->began) return bar_fail(msg, BAR_ERR_INVALID, "tensor data before the header");
    while (n) {
        if (w->next >= w->n_t)
            return bar_fail(msg, BAR_ERR_INVALID, "more tensor data than declared");
        uint64_t left = w->t[w->next].n_bytes - w->got;
        size_t k = n < left ? n : (size_t)left;
        int rc = wr(w, p, k, msg);
        if (rc) return rc;
        p += k;
        n -= k;
        w->got += k;
        if (w->got == w->t[w->next].n_bytes) {
            if ((rc = pad(w, w->got, msg))) return rc;
            w->next++;
            w->got = 0;
        }
    }
    return 0;
}

int gguf_writer_finish(gguf_writer_t *w, bar_msg_t *msg)
{
    if (!w->began || w->next != w->n_t)
        return bar_fail(msg, BAR_ERR_INVALID, "%zu of %zu tensors written", w->next, w->n_t);
    int rc = fflush(w->f) || fsync(fileno(w->f));
    int e = errno;
    if (fclose(w->f)) rc = 1, e = errno;
    w->f = NULL;
    if (rc) return bar_fail(msg, BAR_ERR_IO, "%s: %s", w->path, strerror(e));
    if (rename(w->tmp, w->path))
        return bar_fail(msg, BAR_ERR_IO, "%s: rename: %s", w->path, strerror(errno));
    w->done = 1;
    return 0;
}
