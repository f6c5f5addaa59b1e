/* kern_scalar.c — the reference implementation of every kernel, in plain C.
 *
 * This is what the SIMD levels are tested against, so it favours the obvious
 * formulation: one weight row against one activation row at a time, integer
 * dot products per 32-block finished in float as
 *   acc += (d_w * d_a) * isum + m_w * s_a          (m_w = 0 for symmetric types)
 * where isum = sum(qw * qa) with qw the signed weight code for Q4_0/Q5_0/Q8_0
 * ((nibble - 8), (q5 - 16), q) and the unsigned code for Q4_1/Q5_1.
 * Not for: speed. No intrinsics, no ISA flags. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern_int.h"
#include "util/fp16.h"

static inline float ld_f16(const uint16_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_f32(h);
}

static inline uint32_t ld_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- activation quantization ---------------------------------------- */

static void quantize_act(const float *x, void *xq, int n)
{
    block_q8a *out = xq;
    for (int k = 0; k < n / QK; k++) {
        const float *v = x + k * QK;
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            float a = fabsf(v[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK; i++) {
            int q = (int)nearbyintf(v[i] * id); /* ties to even, as cvtps2dq */
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            out[k].qs[i] = (int8_t)q;
            sum += q;
        }
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them, so dot
         * products match it; the codes above used the exact scale. */
        out[k].d = fp16_to_f32(fp16_from_f32(d));
        out[k].s = fp16_to_f32(fp16_from_f32(d * (float)sum));
        out[k].d2 = out[k].d;
        out[k].ds = out[k].d * (float)sum;
    }
}

/* ---- per-row dots: one weight row (nblk blocks) x one activation row ---- */

static float dot_q4_0(const void *row, const block_q8a *a, int nblk)
{
    const block_q4_0 *w = row;
    float acc = 0.0f;
    for (int k = 0; k < nblk; k++) {
        int isum = 0;
        for (int j = 0; j < QK / 2; j++) {
            isum += ((w[k].qs[j] & 15) - 8) * a[k].qs[j];
            isum += ((w[k].qs[j] >> 4) - 8) * a[k].qs[j + 16];
        }
        acc += ld_f16(&w[k].d) * a[k].d * (float)isum;
    }
    return acc;
}

static float dot_q4_1(const void *row, const block_q8a *a, int nblk)
{
    const block_q4_1 *w = row;
    float acc = 0.0f;
    for (int k = 0; k < nblk; k++) {
        int isum = 0;
        for (int j = 0; j < QK / 2; j++) {
            isum += (w[k].qs[j] & 15) * a[k].qs[j];
            isum += (w[k].qs[j] >> 4) * a[k].qs[j + 16];
        }
        acc += ld_f16(&w[k].d) * a[k].d * (float)isum + ld_f16(&w[k].m) * a[k].s;
    }
    return acc;
}

static float dot_q5_0(const void *row, const block_q8a *a, int nblk)
{
    const block_q5_0 *w = row;
    float acc = 0.0f;
    for (int k = 0; k < nblk; k++) {
        uint32_t qh = ld_u32(w[k].qh);
        int isum = 0;
        for (int j = 0; j < QK / 2; j++) {
            int lo = (w[k].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (w[k].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += (lo - 16) * a[k].qs[j] + (hi - 16) * a[k].qs[j + 16];
        }
        acc += ld_f16(&w[k].d) * a[k].d * (float)isum;
    }
    return acc;
}

static float dot_q5_1(const void *row, const block_q8a *a, int nblk)
{
    const block_q5_1 *w = row;
    float acc = 0.0f;
    for (int k = 0; k < nblk; k++) {
        uint32_t qh = ld_u32(w[k].qh);
        int isum = 0;
        for (int j = 0; j < QK / 2; j++) {
            int lo = (w[k].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (w[k].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += lo * a[k].qs[j] + hi * a[k].qs[j + 16];
        }
        acc += ld_f16(&w[k].d) * a[k].d * (float)isum + ld_f16(&w[k].m) * a[k].s;
    }
    return acc;
}

static float dot_q8_0(const void *row, const block_q8a *a, int nblk)
{
    const block_q8_0 *w = row;
    float acc = 0.0f;
    for (int k = 0; k < nblk; k++) {
        int isum = 0;
        for (int j = 0; j < QK; j++)
            isum += w[k].qs[j] * a[k].qs[j];
        acc += ld_f16(&w[k].d) * a[k].d * (float)isum;
    }
    return acc;
}

typedef float (*qdot_fn)(const void *row, const block_q8a *a, int nblk);

static void matmul_q(qdot_fn dot, const void *W, size_t row_bytes, int n, int r0, int r1,
                     const void *xq, int nb, float *Y, int ldy)
{
    int nblk = n / QK;
    for (int r = r0; r < r1; r++) {
        const void *row = (const char *)W + (size_t)r * row_bytes;
        for (int b = 0; b < nb; b++)
            Y[(size_t)b * ldy + r] = dot(row, (const block_q8a *)xq + (size_t)b * nblk, nblk);
    }
}

#define DEF_MATMUL_Q(T)                                                                            \
    static void matmul_##T(const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq, \
                           const float *x, int ldx, int nb, float *Y, int ldy)                     \
    {                                                                                              \
        (void)x;                                                                                   \
        (void)ldx;                                                                                 \
        matmul_q(dot_##T, W, row_bytes, n, r0, r1, xq, nb, Y, ldy);                                \
    }
DEF_MATMUL_Q(q4_0)
DEF_MATMUL_Q(q4_1)
DEF_MATMUL_Q(q5_0)
DEF_MATMUL_Q(q5_1)
DEF_MATMUL_Q(q8_0)

/* ---- float weights: W row (f32/f16/bf16) . x row (f32) ---------------- */

static float wf_f32(const void *row, int i)
{
    float f;
    memcpy(&f, (const char *)row + (size_t)i * 4, 4);
    return f;
}
static float wf_f16(const void *row, int i)
{
    return ld_f16((const uint16_t *)row + i);
}
static float wf_bf16(const void *row, int i)
{
    uint16_t h;
    memcpy(&h, (const uint16_t *)row + i, 2);
    return bf16_to_f32(h);
}

typedef float (*wload_fn)(const void *row, int i);

static void matmul_f(wload_fn wl, const void *W, size_t row_bytes, int n, int r0, int r1,
                     const float *x, int ldx, int nb, float *Y, int ldy)
{
    for (int r = r0; r < r1; r++) {
        const void *row = (const char *)W + (size_t)r * row_bytes;
        for (int b = 0; b < nb; b++) {
            const float *xb = x + (size_t)b * ldx;
            float acc = 0.0f;
            for (int i = 0; i < n; i++)
                acc += wl(row, i) * xb[i];
            Y[(size_t)b * ldy + r] = acc;
        }
    }
}

#define DEF_MATMUL_F(T)                                                                            \
    static void matmul_##T(const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq, \
                           const float *x, int ldx, int nb, float *Y, int ldy)                     \
    {                                                                                              \
        (void)xq;                                                                                  \
        matmul_f(wf_##T, W, row_bytes, n, r0, r1, x, ldx, nb, Y, ldy);                             \
    }
DEF_MATMUL_F(f32)
DEF_MATMUL_F(f16)
DEF_MATMUL_F(bf16)

/* ---- row dequantization ----------------------------------------------- */

void kern_scalar_dequant_f32(const void *row, float *out, int n)
{
    memcpy(out, row, (size_t)n * sizeof(float));
}

void kern_scalar_dequant_f16(const void *row, float *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = wf_f16(row, i);
}

void kern_scalar_dequant_bf16(const void *row, float *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = wf_bf16(row, i);
}

void kern_scalar_dequant_q4_0(const void *row, float *out, int n)
{
    const block_q4_0 *w = row;
    for (int k = 0; k < n / QK; k++, out += QK) {
        float d = ld_f16(&w[k].d);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)((w[k].qs[j] & 15) - 8) * d;
            out[j + 16] = (float)((w[k].qs[j] >> 4) - 8) * d;
        }
    }
}

void kern_scalar_dequant_q4_1(const void *row, float *out, int n)
{
    const block_q4_1 *w = row;
    for (int k = 0; k < n / QK; k++, out += QK) {
        float d = ld_f16(&w[k].d), m = ld_f16(&w[k].m);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)(w[k].qs[j] & 15) * d + m;
            out[j + 16] = (float)(w[k].qs[j] >> 4) * d + m;
        }
    }
}

void kern_scalar_dequant_q5_0(const void *row, float *out, int n)
{
    const block_q5_0 *w = row;
    for (int k = 0; k < n / QK; k++, out += QK) {
        float d = ld_f16(&w[k].d);
        uint32_t qh = ld_u32(w[k].qh);
        for (int j = 0; j < QK / 2; j++) {
            int lo = (w[k].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (w[k].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            out[j] = (float)(lo - 16) * d;
            out[j + 16] = (float)(hi - 16) * d;
        }
    }
}

void kern_scalar_dequant_q5_1(const void *row, float *out, int n)
{
    const block_q5_1 *w = row;
    for (int k = 0; k < n / QK; k++, out += QK) {
        float d = ld_f16(&w[k].d), m = ld_f16(&w[k].m);
        uint32_t qh = ld_u32(w[k].qh);
        for (int j = 0; j < QK / 2; j++) {
            int lo = (w[k].qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            int hi = (w[k].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            out[j] = (float)lo * d + m;
            out[j + 16] = (float)hi * d + m;
        }
    }
}

void kern_scalar_dequant_q8_0(const void *row, float *out, int n)
{
    const block_q8_0 *w = row;
    for (int k = 0; k < n / QK; k++, out += QK) {
        float d = ld_f16(&w[k].d);
        for (int j = 0; j < QK; j++)
            out[j] = (float)w[k].qs[j] * d;
    }
}

/* ---- float helpers ------------------------------------------------------ */

static float dot_f32(const float *a, const float *b, int n)
{
    float acc = 0.0f;
    for (int i = 0; i < n; i++)
        acc += a[i] * b[i];
    return acc;
}

static void axpy_f32(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

float kern_scalar_dot_f16(const float *a, const uint16_t *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * fp16_to_f32(b[i]);
    return s;
}

void kern_scalar_axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * fp16_to_f32(x[i]);
}

const kern_vtable_t kern_vtable_scalar = {
    .name = "scalar",
    .quantize_act = quantize_act,
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q4_0, matmul_q4_1, matmul_q5_0,
               matmul_q5_1, matmul_q8_0},
    .dequant_row = KERN_SCALAR_DEQUANT_TABLE,
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .dot_f16 = kern_scalar_dot_f16,
    .axpy_f16 = kern_scalar_axpy_f16,
};
