/* kern_avx2.c — the AVX2 + FMA + F16C kernel level (built with -mavx2 -mfma -mf16c).
 *
 * Quantized matmul: every weight type is brought to one form per 32-block —
 * 32 weight codes in a ymm and a pair [d_w, m_w] of floats — so one loop body
 * serves them all:
 *   Q4_0: codes = nibble,        m_w = -8 d_w     (nibble - 8 = nibble + (-8))
 *   Q4_1: codes = nibble,        m_w = m
 *   Q5_0: codes = q5,            m_w = -16 d_w
 *   Q5_1: codes = q5,            m_w = m
 *   Q8_0: codes = q (signed),    m_w = 0  (sign trick: |q| x sign(a, q))
 * and dot(block) = d_w d_a sum(code * qa) + m_w s_a, the integer sum from
 * maddubs (u8 x s8 -> pairs of i16; at most 2*31*127 = 7874, no saturation)
 * then madd with ones (-> 8 x i32). Each weight block is unpacked once and used
 * against up to 4 activation rows (the batch reuse that matters for prefill).
 * Float weights stream through FMA, converted with F16C / a shift for bf16.
 * Dequantization reuses the scalar code (only used for embedding lookups).
 * Not for: anything that needs AVX-512 (kern_avx512.c). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern_int.h"
#include "util/fp16.h"

#define AI static inline __attribute__((always_inline))

AI float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI int hsum8i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* ---- activation quantization (bit-identical to the scalar level) -------- */

static void quantize_act(const float *x, void *xq, int n)
{
    block_q8a *out = xq;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int k = 0; k < n / QK; k++) {
        const float *v = x + k * QK;
        __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8);
        __m256 x2 = _mm256_loadu_ps(v + 16), x3 = _mm256_loadu_ps(v + 24);
        __m256 m =
            _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, x0), _mm256_andnot_ps(sign, x1)),
                          _mm256_max_ps(_mm256_andnot_ps(sign, x2), _mm256_andnot_ps(sign, x3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        /* cvtps2dq rounds to nearest even under the default MXCSR */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, vid));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, vid));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, vid));
        int sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        /* packs work per 128-bit lane: [0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31] */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[k].qs, p);
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them, so dot
         * products match it; the codes above used the exact scale. */
        out[k].d = fp16_to_f32(fp16_from_f32(d));
        out[k].s = fp16_to_f32(fp16_from_f32(d * (float)sum));
        out[k].d2 = out[k].d;
        out[k].ds = out[k].d * (float)sum;
    }
}

/* ---- weight block -> (32 codes, [d_w, m_w]) ------------------------------ */

AI size_t blk_bytes(int t)
{
    switch (t) {
    case KT_Q4_0:
        return sizeof(block_q4_0);
    case KT_Q4_1:
        return sizeof(block_q4_1);
    case KT_Q5_0:
        return sizeof(block_q5_0);
    case KT_Q5_1:
        return sizeof(block_q5_1);
    default:
        return sizeof(block_q8_0);
    }
}

/* 16 packed bytes -> 32 nibble codes: low nibbles are elements 0..15, high 16..31 */
AI __m256i nibbles(const uint8_t *qs)
{
    __m128i x = _mm_loadu_si128((const __m128i *)qs);
    __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
    return _mm256_and_si256(y, _mm256_set1_epi8(0x0F));
}

/* qh bit j -> 0x10 in byte j */
AI __m256i fifth_bits(const uint8_t *qh)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i rep =
        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), rep);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AI __m128 f16x2(const void *p) /* [f16 p[0], f16 p[1], 0, 0] */
{
    uint32_t u;
    memcpy(&u, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
}

AI __m128 f16_dm(const void *p, float mscale) /* [d, mscale * d, 0, 0] */
{
    uint16_t h;
    memcpy(&h, p, 2);
    __m128 d = _mm_cvtph_ps(_mm_set1_epi16((short)h));
    return _mm_mul_ps(d, _mm_setr_ps(1.0f, mscale, 0.0f, 0.0f));
}

AI __m256i load_codes(int t, const uint8_t *b, __m128 *dm)
{
    switch (t) {
    case KT_Q4_0:
        *dm = f16_dm(b, -8.0f);
        return nibbles(((const block_q4_0 *)b)->qs);
    case KT_Q4_1:
        *dm = f16x2(b);
        return nibbles(((const block_q4_1 *)b)->qs);
    case KT_Q5_0:
        *dm = f16_dm(b, -16.0f);
        return _mm256_or_si256(nibbles(((const block_q5_0 *)b)->qs),
                               fifth_bits(((const block_q5_0 *)b)->qh));
    case KT_Q5_1:
        *dm = f16x2(b);
        return _mm256_or_si256(nibbles(((const block_q5_1 *)b)->qs),
                               fifth_bits(((const block_q5_1 *)b)->qh));
    default:
        *dm = f16_dm(b, 0.0f);
        return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)b)->qs);
    }
}

/* The (d_a, t_a) float pair that finishes a block of type t (see quant.h). */
AI const double *act_pair(int t, const block_q8a *a)
{
    return (const double *)(t == KT_Q4_1 || t == KT_Q5_1 ? &a->d : &a->d2);
}

/* One weight row against BB activation rows.
 * acc[b][k&1]: 8 lanes of d_w d_a * partial integer sums (two chains to hide
 * FMA latency); ms[b]: lane 1 accumulates m_w * s_a. */
AI void qrow(int t, int BB, const uint8_t *row, const block_q8a *const *a, int nblk, float *out)
{
    const size_t bs = blk_bytes(t);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
    __m128 ms[4];
    for (int b = 0; b < BB; b++) {
        acc[b][0] = acc[b][1] = _mm256_setzero_ps();
        ms[b] = _mm_setzero_ps();
    }
    for (int k = 0; k < nblk; k++) {
        __m128 dm;
        __m256i w = load_codes(t, row + (size_t)k * bs, &dm);
        __m256i wabs = w;
        if (t == KT_Q8_0) wabs = _mm256_sign_epi8(w, w);
        for (int b = 0; b < BB; b++) {
            const block_q8a *ab = a[b] + k;
            __m256i qa = _mm256_loadu_si256((const __m256i *)ab->qs);
            if (t == KT_Q8_0) qa = _mm256_sign_epi8(qa, w);
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, qa), ones);
            /* [d_a, s_a] (asymmetric) or [d_a, d_a sum q] (symmetric) */
            __m128 v = _mm_mul_ps(dm, _mm_castpd_ps(_mm_load_sd(act_pair(t, ab))));
            acc[b][k & 1] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(v), acc[b][k & 1]);
            ms[b] = _mm_add_ps(ms[b], v);
        }
    }
    for (int b = 0; b < BB; b++) {
        __m128 m = ms[b];
        out[b] = hsum8(_mm256_add_ps(acc[b][0], acc[b][1])) +
                 _mm_cvtss_f32(_mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 1, 1, 1)));
    }
}

AI void matmul_q(int t, const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq,
                 int nb, float *Y, int ldy)
{
    const int nblk = n / QK;
    const block_q8a *acts = xq;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)r * row_bytes;
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            const block_q8a *a[4];
            float o[4];
            for (int i = 0; i < 4; i++)
                a[i] = acts + (size_t)(b + i) * nblk;
            qrow(t, 4, row, a, nblk, o);
            for (int i = 0; i < 4; i++)
                Y[(size_t)(b + i) * ldy + r] = o[i];
        }
        for (; b < nb; b++) {
            const block_q8a *a[1] = {acts + (size_t)b * nblk};
            float o[1];
            qrow(t, 1, row, a, nblk, o);
            Y[(size_t)b * ldy + r] = o[0];
        }
    }
}

#define DEF_MATMUL_Q(T, KT)                                                                        \
    static void matmul_##T(const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq, \
                           const float *x, int ldx, int nb, float *Y, int ldy)                     \
    {                                                                                              \
        (void)x;                                                                                   \
        (void)ldx;                                                                                 \
        matmul_q(KT, W, row_bytes, n, r0, r1, xq, nb, Y, ldy);                                     \
    }
DEF_MATMUL_Q(q4_0, KT_Q4_0)
DEF_MATMUL_Q(q4_1, KT_Q4_1)
DEF_MATMUL_Q(q5_0, KT_Q5_0)
DEF_MATMUL_Q(q5_1, KT_Q5_1)
DEF_MATMUL_Q(q8_0, KT_Q8_0)

/* ---- float weights ------------------------------------------------------ */

/* 8 weights at element i of a row of type t, as floats */
AI __m256 ldw8(int t, const void *row, int i)
{
    switch (t) {
    case KT_F32:
        return _mm256_loadu_ps((const float *)row + i);
    case KT_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    default:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i))),
            16));
    }
}

AI float ldw1(int t, const void *row, int i)
{
    uint16_t h;
    switch (t) {
    case KT_F32:
        return ((const float *)row)[i];
    case KT_F16:
        memcpy(&h, (const uint16_t *)row + i, 2);
        return _cvtsh_ss(h);
    default: {
        memcpy(&h, (const uint16_t *)row + i, 2);
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    }
}

/* One float weight row against BB float rows; BB == 1 runs 4 chains. */
AI void frow(int t, int BB, const void *row, int n, const float *const *x, float *out)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    int i = 0;
    if (BB == 1) {
        for (; i + 32 <= n; i += 32)
            for (int u = 0; u < 4; u++)
                acc[u] = _mm256_fmadd_ps(ldw8(t, row, i + 8 * u), _mm256_loadu_ps(x[0] + i + 8 * u),
                                         acc[u]);
        acc[0] = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        acc[1] = acc[2] = acc[3] = _mm256_setzero_ps();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 w = ldw8(t, row, i);
        for (int b = 0; b < BB; b++)
            acc[b] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x[b] + i), acc[b]);
    }
    for (int b = 0; b < BB; b++) {
        float s = hsum8(acc[b]);
        for (int j = i; j < n; j++)
            s += ldw1(t, row, j) * x[b][j];
        out[b] = s;
    }
}

AI void matmul_f(int t, const void *W, size_t row_bytes, int n, int r0, int r1, const float *x,
                 int ldx, int nb, float *Y, int ldy)
{
    for (int r = r0; r < r1; r++) {
        const void *row = (const char *)W + (size_t)r * row_bytes;
        int b = 0;
        for (; b + 4 <= nb; b += 4) {
            const float *xs[4];
            float o[4];
            for (int i = 0; i < 4; i++)
                xs[i] = x + (size_t)(b + i) * ldx;
            frow(t, 4, row, n, xs, o);
            for (int i = 0; i < 4; i++)
                Y[(size_t)(b + i) * ldy + r] = o[i];
        }
        for (; b < nb; b++) {
            const float *xs[1] = {x + (size_t)b * ldx};
            float o[1];
            frow(t, 1, row, n, xs, o);
            Y[(size_t)b * ldy + r] = o[0];
        }
    }
}

#define DEF_MATMUL_F(T, KT)                                                                        \
    static void matmul_##T(const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq, \
                           const float *x, int ldx, int nb, float *Y, int ldy)                     \
    {                                                                                              \
        (void)xq;                                                                                  \
        matmul_f(KT, W, row_bytes, n, r0, r1, x, ldx, nb, Y, ldy);                                 \
    }
DEF_MATMUL_F(f32, KT_F32)
DEF_MATMUL_F(f16, KT_F16)
DEF_MATMUL_F(bf16, KT_BF16)

/* ---- float helpers ------------------------------------------------------ */

static float dot_f32(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy_f32(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

/* fp16 KV rows: 8 halves -> 8 floats per F16C conversion. */
static float dot_f16(const float *a, const uint16_t *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i),
                              _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i))), acc);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++)
        r += a[i] * fp16_to_f32(b[i]);
    return r;
}

static void axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                   _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * fp16_to_f32(x[i]);
}

const kern_vtable_t kern_vtable_avx2 = {
    .name = "avx2",
    .quantize_act = quantize_act,
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q4_0, matmul_q4_1, matmul_q5_0,
               matmul_q5_1, matmul_q8_0},
    .dequant_row = KERN_SCALAR_DEQUANT_TABLE,
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .dot_f16 = dot_f16,
    .axpy_f16 = axpy_f16,
};
