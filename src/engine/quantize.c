/* quantize.c — weight quantization and the `barista quantize` file
 * conversion (see quantize.h for the rounding rules). Runs once, offline:
 * written for clarity, one row at a time, not for speed. Not for: the
 * forward pass's activation quantization (kernels). */
#include "engine/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/gguf_write.h"
#include "engine/kernels/kern.h"
#include "engine/kernels/quant.h"
#include "util/fp16.h"

static const struct {
    const char *name;
    ggml_type_t type;
    uint32_t ftype; /* llama.cpp's general.file_type for a file mostly of this type */
} TYPES[] = {
    {"F32", GGML_F32, 0},   {"F16", GGML_F16, 1},   {"BF16", GGML_BF16, 32}, {"Q4_0", GGML_Q4_0, 2},
    {"Q4_1", GGML_Q4_1, 3}, {"Q5_0", GGML_Q5_0, 8}, {"Q5_1", GGML_Q5_1, 9},  {"Q8_0", GGML_Q8_0, 7},
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

int quant_type_writable(ggml_type_t t)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (TYPES[i].type == t) return 1;
    return 0;
}

int quant_type_parse(const char *name, ggml_type_t *out)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (!strcasecmp(name, TYPES[i].name)) {
            *out = TYPES[i].type;
            return 0;
        }
    return BAR_ERR_INVALID;
}

static uint32_t ftype_of(ggml_type_t t)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (TYPES[i].type == t) return TYPES[i].ftype;
    return 0;
}

/* The element of largest magnitude, sign kept (the first one on ties). */
static float signed_absmax(const float *x)
{
    float amax = 0.0f, m = 0.0f;
    for (int j = 0; j < QK; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            m = x[j];
        }
    return m;
}

static void min_max(const float *x, float *mn, float *mx)
{
    *mn = INFINITY;
    *mx = -INFINITY;
    for (int j = 0; j < QK; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

/* (int8_t)(v) in C truncates toward zero; the values here are >= -0.5, so
 * this is floor for the non-negative ones and 0 for (-1, 0). */
static int trunc_i8(float v)
{
    return (int)(int8_t)v;
}

static void row_q4_0(const float *x, block_q4_0 *y, int nb)
{
    for (int i = 0; i < nb; i++, x += QK) {
        float d = signed_absmax(x) / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_f32(d);
        for (int j = 0; j < QK / 2; j++) {
            int a = trunc_i8(x[j] * id + 8.5f), b = trunc_i8(x[j + QK / 2] * id + 8.5f);
            a = a > 15 ? 15 : a;
            b = b > 15 ? 15 : b;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

static void row_q4_1(const float *x, block_q4_1 *y, int nb)
{
    for (int i = 0; i < nb; i++, x += QK) {
        float mn, mx;
        min_max(x, &mn, &mx);
        float d = (mx - mn) / 15, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_f32(d);
        y[i].m = fp16_from_f32(mn);
        for (int j = 0; j < QK / 2; j++) {
            int a = trunc_i8((x[j] - mn) * id + 0.5f),
                b = trunc_i8((x[j + QK / 2] - mn) * id + 0.5f);
            a = a > 15 ? 15 : a;
            b = b > 15 ? 15 : b;
            y[i].qs[j] = (uint8_t)(a | (b << 4));
        }
    }
}

/* Q5 fifth bits: bit j of qh is bit 4 of element j (see quant.h). */
static void put_q5(uint8_t qs[QK / 2], uint8_t qh_out[4], const int q[QK])
{
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4));
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + QK / 2] >> 4) & 1) << (j + QK / 2);
    }
    for (int k = 0; k < 4; k++)
        qh_out[k] = (uint8_t)(qh >> (8 * k));
}

static void row_q5_0(const float *x, block_q5_0 *y, int nb)
{
    for (int i = 0; i < nb; i++, x += QK) {
        float d = signed_absmax(x) / -16, id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[QK];
        for (int j = 0; j < QK; j++) {
            int v = trunc_i8(x[j] * id + 16.5f);
            q[j] = v > 31 ? 31 : v;
        }
        y[i].d = fp16_from_f32(d);
        put_q5(y[i].qs, y[i].qh, q);
    }
}

static void row_q5_1(const float *x, block_q5_1 *y, int nb)
{
    for (int i = 0; i < nb; i++, x += QK) {
        float mn, mx;
        min_max(x, &mn, &mx);
        float d = (mx - mn) / 31, id = d != 0.0f ? 1.0f / d : 0.0f;
        int q[QK];
        /* no clamp: (x - min) / d + 0.5 <= 31.5 by construction (as llama.cpp) */
        for (int j = 0; j < QK; j++)
            q[j] = (int)(uint8_t)((x[j] - mn) * id + 0.5f);
        y[i].d = fp16_from_f32(d);
        y[i].m = fp16_from_f32(mn);
        put_q5(y[i].qs, y[i].qh, q);
    }
}

static void row_q8_0(const float *x, block_q8_0 *y, int nb)
{
    for (int i = 0; i < nb; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp16_from_f32(d);
        for (int j = 0; j < QK; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static uint16_t bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);            /* nearest even */
}

void quant_row(ggml_type_t t, const float *x, void *out, int n)
{
    switch (t) {
    case GGML_F32:
        memcpy(out, x, (size_t)n * sizeof(float));
        break;
    case GGML_F16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)out)[i] = fp16_from_f32(x[i]);
        break;
    case GGML_BF16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)out)[i] = bf16_from_f32(x[i]);
        break;
    case GGML_Q4_0:
        row_q4_0(x, out, n / QK);
        break;
    case GGML_Q4_1:
        row_q4_1(x, out, n / QK);
        break;
    case GGML_Q5_0:
        row_q5_0(x, out, n / QK);
        break;
    case GGML_Q5_1:
        row_q5_1(x, out, n / QK);
        break;
    case GGML_Q8_0:
        row_q8_0(x, out, n / QK);
        break;
    default:
        break;
    }
}

/* The bits per weight of a type, to tell "fewer bits than Q8_0". */
static double type_bits(ggml_type_t t)
{
    return 8.0 * (double)ggml_type_block_bytes(t) / (double)ggml_type_block_elems(t);
}

/* What tensor `t` becomes. */
static ggml_type_t target_of(const gguf_tensor_t *t, const quant_opts_t *o)
{
    if (t->n_dims != 2 || !kern_type_supported(t->type)) return t->type;
    if (t->ne[0] % QK && ggml_type_block_elems(o->type) > 1) return t->type;
    int is_embd = t->name.n == strlen("token_embd.weight") &&
                  !memcmp(t->name.p, "token_embd.weight", t->name.n);
    int is_out =
        t->name.n == strlen("output.weight") && !memcmp(t->name.p, "output.weight", t->name.n);
    if ((is_embd || is_out) && !o->pure && type_bits(o->type) < type_bits(GGML_Q8_0))
        return GGML_Q8_0;
    return o->type;
}

int quant_file(const char *in, const char *out, const quant_opts_t *opts, quant_report_t *rep,
               bar_msg_t *msg)
{
    memset(rep, 0, sizeof *rep);
    if (!quant_type_writable(opts->type))
        return bar_fail(msg, BAR_ERR_INVALID, "cannot write type %s", ggml_type_name(opts->type));
    gguf_t *g = NULL;
    int rc = gguf_open(&g, in, msg);
    if (rc) return rc;
    gguf_writer_t *w = NULL;
    float *row = NULL;
    void *qrow = NULL;
    if ((rc = gguf_writer_create(&w, out, gguf_alignment(g), msg))) goto done;

    int have_ftype = 0;
    for (size_t i = 0; i < gguf_kv_count(g) && !rc; i++) {
        const gguf_kv_t *kv = gguf_kv_at(g, i);
        if (kv->key.n == strlen("general.file_type") &&
            !memcmp(kv->key.p, "general.file_type", kv->key.n)) {
            rc = gguf_writer_kv_u32(w, "general.file_type", ftype_of(opts->type), msg);
            have_ftype = 1;
        } else {
            rc = gguf_writer_kv_copy(w, kv, msg);
        }
    }
    if (!rc && !have_ftype)
        rc = gguf_writer_kv_u32(w, "general.file_type", ftype_of(opts->type), msg);

    size_t nt = gguf_tensor_count(g), max_row = 0;
    for (size_t i = 0; i < nt && !rc; i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        if ((size_t)t->ne[0] > max_row) max_row = (size_t)t->ne[0];
        rc = gguf_writer_tensor_info(w, name, t->n_dims, t->ne, target_of(t, opts), msg);
    }
    if (rc) goto done;
    row = malloc(max_row * sizeof(float));
    qrow = malloc(max_row * sizeof(float) + 64);
    if (!row || !qrow) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = gguf_writer_begin_data(w, msg))) goto done;

    for (size_t i = 0; i < nt && !rc; i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        ggml_type_t to = target_of(t, opts);
        rep->n_tensors++;
        rep->bytes_in += t->n_bytes;
        if (to == t->type) {
            rc = gguf_writer_tensor(w, t->data, t->n_bytes, msg);
            rep->bytes_out += t->n_bytes;
            continue;
        }
        int n = (int)t->ne[0];
        size_t rows = t->n_bytes / kern_row_bytes(t->type, n);
        size_t in_rb = kern_row_bytes(t->type, n);
        size_t out_rb = (size_t)n / ggml_type_block_elems(to) * ggml_type_block_bytes(to);
        for (size_t r = 0; r < rows && !rc; r++) {
            kern_dequant_row(t->type, (const char *)t->data + r * in_rb, row, n);
            for (int j = 0; j < n; j++)
                if (!isfinite(row[j])) {
                    rc = bar_fail(msg, BAR_ERR_FORMAT, "tensor %.*s: row %zu: not a finite value",
                                  (int)t->name.n, t->name.p, r);
                    break;
                }
            if (rc) break;
            quant_row(to, row, qrow, n);
            rc = gguf_writer_tensor(w, qrow, out_rb, msg);
        }
        rep->bytes_out += out_rb * rows;
        rep->n_converted++;
        if (opts->verbose)
            fprintf(stderr, "%.*s: %s -> %s\n", (int)t->name.n, t->name.p, ggml_type_name(t->type),
                    ggml_type_name(to));
    }
    if (!rc) rc = gguf_writer_finish(w, msg);
done:
    free(row);
    free(qrow);
    gguf_writer_destroy(w);
    gguf_close(g);
    return rc;
}
