/* kern_avx2.c — the AVX2 + FMA + F16C kernel level (built with -mavx2 -mfma -mf16c).
 *
 * Quantized matmul: every weight type is brought to one form per 32-block —
 * 32 weight codes and a pair [d_w, m_w] of floats — so one loop body serves
 * them all:
 *   Q4_0: codes = nibble,        m_w = -8 d_w     (nibble - 8 = nibble + (-8))
 *   Q4_1: codes = nibble,        m_w = m
 *   Q5_0: codes = q5,            m_w = -16 d_w
 *   Q5_1: codes = q5,            m_w = m
 *   Q8_0: codes = q (signed),    m_w = 0  (sign trick: |q| x sign(a, q))
 * and dot(block) = d_w d_a sum(code * qa) + m_w t_a (t_a: see quant.h), the
 * integer sum from maddubs (u8 x s8 -> pairs of i16) then madd with ones.
 * Layout: 4 weight rows at a time, two per ymm (128-bit lane = one row's
 * elements 0..15, another ymm for 16..31) against the activation block
 * broadcast to both lanes, so the 4 rows' block scales are finished together
 * in one vector; the next 4 rows are prefetched in step. Each unpacked block
 * serves up to 4 activation rows (the batch reuse that matters for prefill).
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

/* ---- quantized matmul: 4 weight rows x up to 4 activation rows ---------- */

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

AI int has_m(int t)
{
    return t == KT_Q4_1 || t == KT_Q5_1;
}

AI float m_scale(int t) /* m_w / d_w of the symmetric types (Q8_0 uses the sign trick) */
{
    return t == KT_Q4_0 ? -8.0f : t == KT_Q5_0 ? -16.0f : 0.0f;
}

AI const uint8_t *blk_qs(int t, const uint8_t *b)
{
    switch (t) {
    case KT_Q4_0:
        return ((const block_q4_0 *)b)->qs;
    case KT_Q4_1:
        return ((const block_q4_1 *)b)->qs;
    case KT_Q5_0:
        return ((const block_q5_0 *)b)->qs;
    case KT_Q5_1:
        return ((const block_q5_1 *)b)->qs;
    default:
        return (const uint8_t *)((const block_q8_0 *)b)->qs;
    }
}

AI uint32_t blk_qh(int t, const uint8_t *b)
{
    uint32_t h;
    memcpy(&h, t == KT_Q5_0 ? ((const block_q5_0 *)b)->qh : ((const block_q5_1 *)b)->qh, 4);
    return h;
}

AI int ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* mask bit j -> 0x10 in byte j */
AI __m256i bits_to_0x10(uint32_t h)
{
    const __m256i rep =
        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), rep);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AI __m256i load2x128(const uint8_t *p0, const uint8_t *p1) /* [16 B at p0 | 16 B at p1] */
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
                                   _mm_loadu_si128((const __m128i *)p1), 1);
}

/* One block of rows (b0, b1) as codes, 128-bit lane i = row i:
 * lo = elements 0..15, hi = elements 16..31 (Q8_0: signed q, else unsigned). */
AI void codes_pair(int t, const uint8_t *b0, const uint8_t *b1, __m256i *lo, __m256i *hi)
{
    const uint8_t *q0 = blk_qs(t, b0), *q1 = blk_qs(t, b1);
    if (t == KT_Q8_0) {
        *lo = load2x128(q0, q1);
        *hi = load2x128(q0 + 16, q1 + 16);
        return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i z = load2x128(q0, q1);
    *lo = _mm256_and_si256(z, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(z, 4), m4);
    if (t == KT_Q5_0 || t == KT_Q5_1) {
        uint32_t h0 = blk_qh(t, b0), h1 = blk_qh(t, b1);
        *lo = _mm256_or_si256(*lo, bits_to_0x10((h0 & 0xFFFF) | h1 << 16));
        *hi = _mm256_or_si256(*hi, bits_to_0x10(h0 >> 16 | (h1 & 0xFFFF0000u)));
    }
}

/* [d0 m0 d1 m1 d2 m2 d3 m3] of one block of 4 rows; for the symmetric types
 * the m slots repeat d (m_w = m_scale * d is applied on the activation side). */
AI __m256 dm_quad(int t, const uint8_t *b0, const uint8_t *b1, const uint8_t *b2, const uint8_t *b3)
{
    __m128i x = _mm_cvtsi32_si128(ld_i32(b0));
    x = _mm_insert_epi32(x, ld_i32(b1), 1);
    x = _mm_insert_epi32(x, ld_i32(b2), 2);
    x = _mm_insert_epi32(x, ld_i32(b3), 3);
    if (!has_m(t))
        x = _mm_shuffle_epi8(x, _mm_setr_epi8(0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13));
    return _mm256_cvtph_ps(x);
}

/* Integer dot of one 2-row code pair with an activation block broadcast to
 * both lanes: 8 x i32, lanes 0..3 row 0, 4..7 row 1. */
AI __m256i idot_pair(int t, __m256i lo, __m256i hi, __m256i alo, __m256i ahi)
{
    const __m256i ones = _mm256_set1_epi16(1);
    if (t == KT_Q8_0) { /* |w| x sign(a, w); one maddubs may reach 2*128*127 */
        __m256i pl = _mm256_maddubs_epi16(_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(alo, lo));
        __m256i ph = _mm256_maddubs_epi16(_mm256_sign_epi8(hi, hi), _mm256_sign_epi8(ahi, hi));
        return _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones));
    }
    /* unsigned codes <= 31: two maddubs pairs sum to at most 4*31*127, no i16 overflow */
    return _mm256_madd_epi16(
        _mm256_add_epi16(_mm256_maddubs_epi16(lo, alo), _mm256_maddubs_epi16(hi, ahi)), ones);
}

/* The (d_a, t_a) float pair that finishes a block of type t (see quant.h). */
AI const double *act_pair(int t, const block_q8a *a)
{
    return (const double *)(has_m(t) ? &a->d : &a->d2);
}

/* Rows p0..p3 (at block 0, stepping bs per block; pf = where the next 4 rows
 * start, prefetched in step) x BB activation rows. Per activation row:
 *   acc[b][0]: lanes 4i..4i+3 = row i (i = 0, 1) partial d_w d_a * integer sums
 *   acc[b][1]: the same for rows 2, 3
 *   ms[b]:     lane 2i+1 = row i's sum of m_w t_a (even lanes are scratch). */
AI void quad_rows(int t, int BB, const uint8_t *p0, const uint8_t *p1, const uint8_t *p2,
                  const uint8_t *p3, const uint8_t *pf, const block_q8a *const *a, int nblk,
                  float out[][4])
{
    const size_t bs = blk_bytes(t);
    const __m256i sp01 = _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    const __m256i sp23 = _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6);
    const __m256 msc = _mm256_setr_ps(1, m_scale(t), 1, m_scale(t), 1, m_scale(t), 1, m_scale(t));
    __m256 acc[4][2], ms[4];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        acc[b][0] = acc[b][1] = ms[b] = _mm256_setzero_ps();
    }
    for (int k = 0; k < nblk; k++, p0 += bs, p1 += bs, p2 += bs, p3 += bs, pf += 4 * bs) {
        _mm_prefetch((const char *)pf, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 128, _MM_HINT_T0);
        __m256i lo01, hi01, lo23, hi23;
        codes_pair(t, p0, p1, &lo01, &hi01);
        codes_pair(t, p2, p3, &lo23, &hi23);
        __m256 dm = dm_quad(t, p0, p1, p2, p3);
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++) {
            const block_q8a *ab = a[b] + k;
            __m256i alo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ab->qs));
            __m256i ahi =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ab->qs + 16)));
            __m256i i01 = idot_pair(t, lo01, hi01, alo, ahi);
            __m256i i23 = idot_pair(t, lo23, hi23, alo, ahi);
            __m256 pr = _mm256_castpd_ps(_mm256_broadcast_sd(act_pair(t, ab)));
            if (!has_m(t)) pr = _mm256_mul_ps(pr, msc);
            __m256 v = _mm256_mul_ps(dm, pr); /* [d_w d_a, m_w t_a] per row */
            ms[b] = _mm256_add_ps(ms[b], v);
            acc[b][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i01), _mm256_permutevar8x32_ps(v, sp01),
                                        acc[b][0]);
            acc[b][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i23), _mm256_permutevar8x32_ps(v, sp23),
                                        acc[b][1]);
        }
    }
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        /* hadd twice: [r0 r0 r2 r2 | r1 r1 r3 r3] -> [r0 r2 r0 r2 | r1 r3 r1 r3] */
        __m256 h = _mm256_hadd_ps(acc[b][0], acc[b][1]);
        h = _mm256_hadd_ps(h, h);
        __m128 r = _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        /* r = [r0 r1 r2 r3]; m lanes 1, 3, 5, 7 */
        __m128 m = _mm_shuffle_ps(_mm256_castps256_ps128(ms[b]), _mm256_extractf128_ps(ms[b], 1),
                                  _MM_SHUFFLE(3, 1, 3, 1));
        _mm_storeu_ps(out[b], _mm_add_ps(r, m));
    }
}

AI void quad_bb(int t, int BB, const uint8_t *const *rows, const uint8_t *pf, const block_q8a *acts,
                int nblk, int b0, int r, int nr, float *Y, int ldy)
{
    const block_q8a *a[4];
    float o[4][4];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++)
        a[b] = acts + (size_t)(b0 + b) * nblk;
    quad_rows(t, BB, rows[0], rows[1], rows[2], rows[3], pf, a, nblk, o);
    for (int b = 0; b < BB; b++)
        for (int i = 0; i < nr; i++)
            Y[(size_t)(b0 + b) * ldy + r + i] = o[b][i];
}

/* Rows in quads (a short last quad repeats its last row), activation rows in
 * groups of up to 4 sharing each unpacked block. */
AI void matmul_q(int t, const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq,
                 int nb, float *Y, int ldy)
{
    const int nblk = n / QK;
    const block_q8a *acts = xq;
    for (int r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? r1 - r : 4;
        const uint8_t *rows[4];
        for (int i = 0; i < 4; i++)
            rows[i] = (const uint8_t *)W + (size_t)(r + (i < nr ? i : nr - 1)) * row_bytes;
        const uint8_t *pf = r + 4 < r1 ? (const uint8_t *)W + (size_t)(r + 4) * row_bytes : rows[0];
        for (int b = 0; b < nb; b += 4) {
            switch (nb - b) {
            case 1:
                quad_bb(t, 1, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            case 2:
                quad_bb(t, 2, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            case 3:
                quad_bb(t, 3, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            default:
                quad_bb(t, 4, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            }
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
    return r + kern_scalar_dot_f16(a + i, b + i, n - i);
}

static void axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                   _mm256_loadu_ps(y + i)));
    kern_scalar_axpy_f16(y + i, a, x + i, n - i);
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
    .dot_hh = kern_scalar_dot_hh,
    .expf_v = kern_scalar_expf_v,
};
