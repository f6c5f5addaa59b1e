/* kern_scalar.c — the reference implementation of every kernel, in plain C.
 *
 * This is what the SIMD levels are tested against (bit for bit), so it
 * favours the obvious formulation: one weight row against one activation row
 * at a time, in the summation order of llama.cpp's AVX-512 CPU build (see
 * dot_q below and docs/ARCHITECTURE.md, "Numerics"): that order is what makes
 * barista's tokens equal llama.cpp's. fmaf is a library call without -mfma.
 * Not for: speed. No intrinsics, no ISA flags. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern.h"
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
        /* 127 / amax, not 1 / d: llama.cpp's multiplier, which rounds differently */
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK; i++) {
            float r = nearbyintf(v[i] * id); /* ties to even, as cvtps2dq */
            /* |r| <= 127 always, except in a block so tiny that 127 / amax is
             * inf: its inf / NaN products map to -127 (where cvtps2dq gives
             * INT_MIN and the SIMD levels clamp) */
            int q = r >= -127.0f && r <= 127.0f ? (int)r : -127;
            out[k].qs[i] = (int8_t)q;
            sum += q;
        }
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them (s from the
         * unrounded d); the codes above used the exact multiplier. */
        out[k].d = fp16_to_f32(fp16_from_f32(d));
        out[k].s = fp16_to_f32(fp16_from_f32(d * (float)sum));
        out[k].d2 = out[k].d;
        out[k].ds = out[k].d * (float)sum;
    }
}

/* ---- per-row dots in llama.cpp's summation order ------------------------
 * Eight float lanes; lane l of block k gets fma(d_w * d_a, isum_l, lane),
 * isum_l = sum of code * qa over elements 4l..4l+3 (signed codes for the
 * symmetric types); the asymmetric types chain fma(m_w, s_a, summs) apart.
 * The lanes then fold as kern_hsum8 says, and summs is added last. */

float kern_hsum8(const float a[8])
{
    float r0 = a[4] + a[0], r1 = a[5] + a[1], r2 = a[6] + a[2], r3 = a[7] + a[3];
    return (r0 + r2) + (r1 + r3);
}

float kern_hsum16(const float v[16])
{
    float t[8];
    for (int i = 0; i < 8; i++)
        t[i] = v[8 + i] + v[i];
    float u0 = t[4] + t[0], u1 = t[5] + t[1], u2 = t[6] + t[2], u3 = t[7] + t[3];
    return (u0 + u2) + (u1 + u3);
}

/* codes of one block (signed for Q4_0/Q5_0/Q8_0) and its d, m (m = 0 when symmetric) */
static int block_codes(int t, const uint8_t *b, int q[QK], float *d, float *m)
{
    switch (t) {
    case KT_Q4_0: {
        const block_q4_0 *w = (const block_q4_0 *)b;
        for (int j = 0; j < QK / 2; j++) {
            q[j] = (w->qs[j] & 15) - 8;
            q[j + 16] = (w->qs[j] >> 4) - 8;
        }
        *d = ld_f16(&w->d);
        *m = 0.0f;
        return 0;
    }
    case KT_Q4_1: {
        const block_q4_1 *w = (const block_q4_1 *)b;
        for (int j = 0; j < QK / 2; j++) {
            q[j] = w->qs[j] & 15;
            q[j + 16] = w->qs[j] >> 4;
        }
        *d = ld_f16(&w->d);
        *m = ld_f16(&w->m);
        return 1;
    }
    case KT_Q5_0: {
        const block_q5_0 *w = (const block_q5_0 *)b;
        uint32_t qh = ld_u32(w->qh);
        for (int j = 0; j < QK / 2; j++) {
            q[j] = ((w->qs[j] & 15) | (int)((qh >> j) & 1) << 4) - 16;
            q[j + 16] = ((w->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
        }
        *d = ld_f16(&w->d);
        *m = 0.0f;
        return 0;
    }
    case KT_Q5_1: {
        const block_q5_1 *w = (const block_q5_1 *)b;
        uint32_t qh = ld_u32(w->qh);
        for (int j = 0; j < QK / 2; j++) {
            q[j] = (w->qs[j] & 15) | (int)((qh >> j) & 1) << 4;
            q[j + 16] = (w->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        }
        *d = ld_f16(&w->d);
        *m = ld_f16(&w->m);
        return 1;
    }
    default: {
        const block_q8_0 *w = (const block_q8_0 *)b;
        for (int j = 0; j < QK; j++)
            q[j] = w->qs[j];
        *d = ld_f16(&w->d);
        *m = 0.0f;
        return 0;
    }
    }
}

static float dot_q(int t, size_t bs, const uint8_t *row, const block_q8a *a, int nblk)
{
    float acc[8] = {0}, summs = 0.0f;
    int asym = 0;
    for (int k = 0; k < nblk; k++) {
        int q[QK];
        float d, m;
        asym = block_codes(t, row + (size_t)k * bs, q, &d, &m);
        if (asym) summs = fmaf(m, a[k].s, summs);
        float dd = d * a[k].d;
        for (int l = 0; l < 8; l++) {
            int s = 0;
            for (int e = 4 * l; e < 4 * l + 4; e++)
                s += q[e] * a[k].qs[e];
            acc[l] = fmaf(dd, (float)s, acc[l]);
        }
    }
    float r = kern_hsum8(acc);
    return asym ? r + summs : r;
}

#define DEF_DOT_Q(T, KT, BT)                                                                       \
    static float dot_##T(const void *row, const block_q8a *a, int nblk)                            \
    {                                                                                              \
        return dot_q(KT, sizeof(BT), row, a, nblk);                                                \
    }
DEF_DOT_Q(q4_0, KT_Q4_0, block_q4_0)
DEF_DOT_Q(q4_1, KT_Q4_1, block_q4_1)
DEF_DOT_Q(q5_0, KT_Q5_0, block_q5_0)
DEF_DOT_Q(q5_1, KT_Q5_1, block_q5_1)
DEF_DOT_Q(q8_0, KT_Q8_0, block_q8_0)

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

/* fp16 . fp16 in llama.cpp's two orders (see kern.h, kern_dot_hh). */
#define SEG(a, ss, i) ((a)[((size_t)(i) / 64) * (ss) + (size_t)(i) % 64])

float kern_scalar_dot_hh1(const uint16_t *a, size_t ss, const uint16_t *b, int n, int order)
{
    if (order == KERN_ORDER_TILE && n % 16 == 0) {
        float acc[16] = {0};
        for (int l = 0; l < n; l += 16)
            for (int i = 0; i < 16; i++)
                acc[i] = fmaf(fp16_to_f32(SEG(a, ss, l + i)), fp16_to_f32(b[l + i]), acc[i]);
        return kern_hsum16(acc);
    }
    int np = n & ~63;
    float acc[4][16] = {{0}};
    for (int l = 0; l < np; l += 64)
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 16; i++) {
                int e = l + 16 * j + i;
                acc[j][i] = fmaf(fp16_to_f32(SEG(a, ss, e)), fp16_to_f32(b[e]), acc[j][i]);
            }
    float x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (acc[0][i] + acc[2][i]) + (acc[1][i] + acc[3][i]);
    double sum = (double)kern_hsum16(x);
    for (int l = np; l < n; l++)
        sum += (double)(fp16_to_f32(SEG(a, ss, l)) * fp16_to_f32(b[l]));
    return (float)sum;
}

void kern_scalar_dot_hh(const uint16_t *a, size_t row_stride, size_t seg_stride, int nrows,
                        const uint16_t *b, int n, int order, float *out)
{
    for (int r = 0; r < nrows; r++)
        out[r] = kern_scalar_dot_hh1(a + (size_t)r * row_stride, seg_stride, b, n, order);
}

float kern_scalar_expf1(float x)
{
    float z = fmaf(x, 0x1.715476p+0f, 0x1.8p23f), n = z - 0x1.8p23f;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (fabsf(n) > 192.0f || n != n) return n <= 0.0f ? 0.0f : n > 0.0f ? INFINITY : n;
    float u = b * b;
    float j = fmaf(
        fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    return ldexpf(j, (int)n);
}

void kern_scalar_expf_v(const float *x, float *y, int n)
{
    for (int i = 0; i < n; i++)
        y[i] = kern_scalar_expf1(x[i]);
}

int32_t kern_scalar_dot_i8_1(const int8_t *a, const int8_t *b, int n)
{
    int32_t s = 0;
    for (int i = 0; i < n; i++)
        s += (int32_t)a[i] * b[i];
    return s;
}

static void dot_i8(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out)
{
    for (int r = 0; r < nrows; r++)
        out[r] = kern_scalar_dot_i8_1(rows[r], b, n);
}

const kern_vtable_t kern_vtable_scalar = {
    .name = "scalar",
    .quantize_act = quantize_act,
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q4_0, matmul_q4_1, matmul_q5_0,
               matmul_q5_1, matmul_q8_0},
    .dequant_row = KERN_SCALAR_DEQUANT_TABLE,
    .dot_hh = kern_scalar_dot_hh,
    .expf_v = kern_scalar_expf_v,
    .dot_i8 = dot_i8,
};
