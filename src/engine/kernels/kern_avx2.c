/* kern_avx2.c — the AVX2 + FMA + F16C kernel level (built with -mavx2 -mfma -mf16c).
 *
 * Quantized matmul, in llama.cpp's exact order (the scalar level's dot_q;
 * the result is bit-identical to it): per (weight row, activation row) pair
 * and 32-block, one ymm of 8 i32 lanes, lane l = the exact integer sum of
 * code * qa over elements 4l..4l+3 (codes unpacked in element order: low
 * 128 bits elements 0..15, high 128 bits 16..31, then maddubs into i16
 * pairs and madd with ones), converted and fused into 8 float accumulators
 * with fma(d_w * d_a, lanes, acc); at the end kern_hsum8's fold, then the
 * fma chain of m_w * s_a for Q4_1 / Q5_1. The symmetric types' signed codes
 * enter the integer sum exactly: Q4_0 / Q5_0 as unsigned code times qa minus
 * the offset times the qa pair sums, Q8_0 by the sign trick.
 * Layout: decode (one activation row) takes 4 weight rows per step, their
 * [d_w, m_w] pairs converted in one vector whose product with [d_a, s_a]
 * gives the 4 scale products (broadcast per row by a permute) and advances
 * the 4 m_w * s_a chains. Batches go 8 activation rows at a time: their
 * scales are transposed once (and the Q4_0 / Q5_0 offset shares tabled),
 * then each weight row is unpacked once per block for all 8, with the 8
 * products d_w * d_a formed by one multiply into a small table per chunk of
 * blocks. Weight rows a few tiles ahead are prefetched in step.
 * Attention helpers: kern_dot_hh's two fp16 dot orders (16 lanes as two ymm
 * fma chains, or 4 x 16 over 64-steps with the double tail) and
 * kern_scalar_expf1's polynomial 8 lanes at a time, the final scaling by
 * 2^n rounded once as ldexpf does.
 * Float weights stream through FMA, converted with F16C / a shift for bf16.
 * Dequantization reuses the scalar code (only used for embedding lookups).
 * Not for: anything that needs AVX-512 (kern_avx512.c). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern.h"
#include "engine/kernels/kern_int.h"
#include "util/fp16.h"

#define AI static inline __attribute__((always_inline))

/* kern_hsum8's order: ((a4+a0) + (a6+a2)) + ((a5+a1) + (a7+a3)) */
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
        /* 127 / amax, not 1 / d: llama.cpp's multiplier, which rounds differently */
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        /* cvtps2dq rounds to nearest even under the default MXCSR; the
         * max only matters where 127 / amax overflowed (the scalar clamp) */
        const __m256i lo = _mm256_set1_epi32(-127);
        __m256i i0 = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x0, vid)), lo);
        __m256i i1 = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x1, vid)), lo);
        __m256i i2 = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x2, vid)), lo);
        __m256i i3 = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x3, vid)), lo);
        int sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        /* packs work per 128-bit lane: [0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31] */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[k].qs, p);
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them (s from the
         * unrounded d); the codes above used the exact multiplier. */
        out[k].d = fp16_to_f32(fp16_from_f32(d));
        out[k].s = fp16_to_f32(fp16_from_f32(d * (float)sum));
        out[k].d2 = out[k].d;
        out[k].ds = out[k].d * (float)sum;
    }
}

/* ---- quantized matmul --------------------------------------------------- */

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

AI int has_m(int t) /* Q4_1 / Q5_1: unsigned codes plus the m_w * s_a chain */
{
    return t == KT_Q4_1 || t == KT_Q5_1;
}

AI int sym_off(int t) /* Q4_0 / Q5_0: signed code = unsigned code - sym_off */
{
    return t == KT_Q4_0 ? 8 : t == KT_Q5_0 ? 16 : 0;
}

AI int ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 16 packed nibbles -> 32 bytes in element order: low 128 bits the low
 * nibbles (elements 0..15), high 128 bits the high nibbles (16..31). */
AI __m256i nibbles(const uint8_t *qs)
{
    __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    x = _mm256_srlv_epi32(x, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(x, _mm256_set1_epi8(0x0F));
}

/* byte e = 0x10 where bit e of the little-endian qh is set, else 0 */
AI __m256i qh_bits(const uint8_t *qh)
{
    const __m256i rep =
        _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(ld_i32(qh)), rep);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* The 32 codes of one block, byte e = element e: unsigned (nibble, q5) for
 * the 4- and 5-bit types, the signed q for Q8_0. */
AI __m256i blk_codes(int t, const uint8_t *b)
{
    switch (t) {
    case KT_Q4_0:
        return nibbles(((const block_q4_0 *)b)->qs);
    case KT_Q4_1:
        return nibbles(((const block_q4_1 *)b)->qs);
    case KT_Q5_0:
        return _mm256_or_si256(nibbles(((const block_q5_0 *)b)->qs),
                               qh_bits(((const block_q5_0 *)b)->qh));
    case KT_Q5_1:
        return _mm256_or_si256(nibbles(((const block_q5_1 *)b)->qs),
                               qh_bits(((const block_q5_1 *)b)->qh));
    default:
        return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)b)->qs);
    }
}

AI __m256 bcast_f16(const uint8_t *p) /* the fp16 at p, as a float in all 8 lanes */
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16((short)h));
}

/* Exact i16 pair products of one block: pair j = code_2j qa_2j + code_2j+1
 * qa_2j+1 with the signed codes. Unsigned codes u go straight into maddubs;
 * for Q4_0 / Q5_0 the offset's share, off * (qa_2j + qa_2j+1), is subtracted
 * (corr, made once per activation block); Q8_0 uses the sign trick
 * |q| x sign(qa, q) (|q| <= 128, |qa| <= 127: a pair stays below 2^15). */
AI __m256i pair_products(int t, __m256i c, __m256i qa, __m256i corr)
{
    if (t == KT_Q8_0) return _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(qa, c));
    __m256i p = _mm256_maddubs_epi16(c, qa);
    return sym_off(t) ? _mm256_sub_epi16(p, corr) : p;
}

AI __m256i sym_corr(int t, __m256i qa) /* off * (qa pairs), the offset's share */
{
    return _mm256_maddubs_epi16(_mm256_set1_epi8((char)sym_off(t)), qa);
}

/* i32 lane l = pair 2l + pair 2l+1: elements 4l..4l+3, as a float (exact) */
AI __m256 lane_sums(__m256i p)
{
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

#define PF_TILES 3 /* prefetch the weight rows this many tiles ahead */

/* Decode (one activation row a): 4 weight rows w[r]. Their leading fp16 pairs [d_w, m_w] are
 * converted together and multiplied by [d_a, s_a]: even lanes are the products d_w * d_a (broadcast
 * per row), odd lanes carry the m_w * s_a fma chains (symmetric types: the odd lanes hold whatever
 * follows d and are ignored). pf: rows to prefetch. */
AI void qtile4(int t, const uint8_t *const *w, const uint8_t *pf, const block_q8a *a, int nblk,
               float *out)
{
    const size_t bs = blk_bytes(t);
    __m256 acc[4], ms = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++)
        acc[r] = _mm256_setzero_ps();
    for (int k = 0; k < nblk; k++, pf += 4 * bs) {
#pragma GCC unroll 4
        for (size_t o = 0; o < 4 * bs; o += 64)
            _mm_prefetch((const char *)pf + o, _MM_HINT_T0);
        const uint8_t *p[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            p[r] = w[r] + (size_t)k * bs;
        __m256 dm =
            _mm256_cvtph_ps(_mm_setr_epi32(ld_i32(p[0]), ld_i32(p[1]), ld_i32(p[2]), ld_i32(p[3])));
        __m256 as = _mm256_castpd_ps(_mm256_broadcast_sd((const double *)&a[k].d));
        __m256 dd = _mm256_mul_ps(dm, as);
        if (has_m(t)) ms = _mm256_fmadd_ps(dm, as, ms);
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[k].qs);
        __m256i corr = sym_off(t) ? sym_corr(t, qa) : _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            __m256 f = lane_sums(pair_products(t, blk_codes(t, p[r]), qa, corr));
            __m256 ddr = _mm256_permutevar8x32_ps(dd, _mm256_set1_epi32(2 * r));
            acc[r] = _mm256_fmadd_ps(ddr, f, acc[r]);
        }
    }
    float m[8];
    _mm256_storeu_ps(m, ms);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
        float s = hsum8(acc[r]);
        out[r] = has_m(t) ? s + m[2 * r + 1] : s;
    }
}

#define KC 32             /* blocks per chunk of the d_w * d_a table */
#define CORR_TAB_MAX 4096 /* largest offset-share table (x 32 bytes, on the stack) */

/* Batch: one weight row w x B <= 8 activation rows a[b]. da_t / sa_t hold
 * the activation rows' d and s transposed (8 per block, lanes >= B zero),
 * corr_t their Q4_0 / Q5_0 offset shares. For each chunk of KC blocks a
 * table of d_w * d_a is filled 8 products per multiply, and the m_w * s_a
 * chains (lane b = activation row b) advance; the inner loop then only
 * broadcasts from the table. pf: the row to prefetch. */
AI void qtile(int t, int B, int tab, const uint8_t *w, const uint8_t *pf, const block_q8a *const *a,
              const float *da_t, const float *sa_t, const __m256i *corr_t, int nblk, float *out)
{
    const size_t bs = blk_bytes(t);
    __m256 acc[8], ms = _mm256_setzero_ps();
    float dd[KC][8];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
        acc[b] = _mm256_setzero_ps();
    for (int k0 = 0; k0 < nblk; k0 += KC) {
        const int kc = nblk - k0 < KC ? nblk - k0 : KC;
        for (int i = 0; i < kc; i++) {
            const int k = k0 + i;
            const uint8_t *p = w + (size_t)k * bs;
            _mm_prefetch((const char *)pf + (size_t)k * bs, _MM_HINT_T0);
            __m256 d;
            if (has_m(t)) { /* [d m d m ...] from one conversion */
                __m256 dm = _mm256_cvtph_ps(_mm_set1_epi32(ld_i32(p)));
                d = _mm256_moveldup_ps(dm);
                ms = _mm256_fmadd_ps(_mm256_movehdup_ps(dm), _mm256_loadu_ps(sa_t + (size_t)k * 8),
                                     ms);
            } else {
                d = bcast_f16(p);
            }
            _mm256_storeu_ps(dd[i], _mm256_mul_ps(d, _mm256_loadu_ps(da_t + (size_t)k * 8)));
        }
        for (int i = 0; i < kc; i++) {
            const int k = k0 + i;
            const __m256i c = blk_codes(t, w + (size_t)k * bs);
#pragma GCC unroll 8
            for (int b = 0; b < B; b++) {
                __m256i qa = _mm256_loadu_si256((const __m256i *)a[b][k].qs);
                __m256i corr = _mm256_setzero_si256();
                if (sym_off(t))
                    corr = tab ? _mm256_loadu_si256(corr_t + (size_t)k * B + b) : sym_corr(t, qa);
                __m256 f = lane_sums(pair_products(t, c, qa, corr));
                acc[b] = _mm256_fmadd_ps(_mm256_broadcast_ss(&dd[i][b]), f, acc[b]);
            }
        }
    }
    float m[8];
    _mm256_storeu_ps(m, ms);
#pragma GCC unroll 8
    for (int b = 0; b < B; b++) {
        float s = hsum8(acc[b]);
        out[b] = has_m(t) ? s + m[b] : s;
    }
}

/* Activation rows b0 .. b0+B-1 against weight rows [r0, r1): B = 1 in tiles
 * of 4 rows (a short last tile repeats its last row), else row by row. */
AI void act_tile(int t, int B, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                 const block_q8a *acts, int b0, float *Y, int ldy)
{
    const block_q8a *a[8];
#pragma GCC unroll 8
    for (int b = 0; b < B; b++)
        a[b] = acts + (size_t)(b0 + b) * nblk;
    if (B == 1) {
        for (int r = r0; r < r1; r += 4) {
            int nr = r1 - r < 4 ? r1 - r : 4;
            const uint8_t *rows[4];
            for (int i = 0; i < 4; i++)
                rows[i] = (const uint8_t *)W + (size_t)(r + (i < nr ? i : nr - 1)) * row_bytes;
            int rp = r + 4 * PF_TILES < r1 ? r + 4 * PF_TILES : r;
            float o[4];
            qtile4(t, rows, (const uint8_t *)W + (size_t)rp * row_bytes, a[0], nblk, o);
            for (int i = 0; i < nr; i++)
                Y[(size_t)b0 * ldy + r + i] = o[i];
        }
        return;
    }
    /* the activation rows' scales transposed, and the offset shares */
    float da_t[nblk * 8 + 8], sa_t[nblk * 8 + 8];
    for (int k = 0; k < nblk; k++)
        for (int b = 0; b < 8; b++) {
            da_t[k * 8 + b] = b < B ? a[b][k].d : 0.0f;
            sa_t[k * 8 + b] = b < B ? a[b][k].s : 0.0f;
        }
    const int tab = sym_off(t) && nblk * B <= CORR_TAB_MAX;
    __m256i corr_t[tab ? nblk * B : 1];
    if (tab)
        for (int k = 0; k < nblk; k++)
            for (int b = 0; b < B; b++)
                _mm256_storeu_si256(corr_t + (size_t)k * B + b,
                                    sym_corr(t, _mm256_loadu_si256((const __m256i *)a[b][k].qs)));
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)r * row_bytes;
        const uint8_t *pf =
            (const uint8_t *)W + (size_t)(r + PF_TILES < r1 ? r + PF_TILES : r) * row_bytes;
        float o[8];
        if (tab)
            qtile(t, B, 1, row, pf, a, da_t, sa_t, corr_t, nblk, o);
        else
            qtile(t, B, 0, row, pf, a, da_t, sa_t, corr_t, nblk, o);
        for (int b = 0; b < B; b++)
            Y[(size_t)(b0 + b) * ldy + r] = o[b];
    }
}

AI void matmul_q(int t, const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq,
                 int nb, float *Y, int ldy)
{
    const int nblk = n / QK;
    const block_q8a *acts = xq;
    for (int b0 = 0; b0 < nb; b0 += 8) {
        /* B is a compile-time constant in each case (act_tile is inlined) */
        switch (nb - b0) {
#define ACT_CASE(B)                                                                                \
    case B:                                                                                        \
        act_tile(t, B, W, row_bytes, nblk, r0, r1, acts, b0, Y, ldy);                              \
        break;
            ACT_CASE(1)
            ACT_CASE(2)
            ACT_CASE(3)
            ACT_CASE(4)
            ACT_CASE(5)
            ACT_CASE(6)
            ACT_CASE(7)
#undef ACT_CASE
        default:
            act_tile(t, 8, W, row_bytes, nblk, r0, r1, acts, b0, Y, ldy);
            break;
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

/* ---- llama.cpp-order fp16 dots and exp --------------------------------- */

AI __m256 ld_h8(const uint16_t *p) /* 8 halves -> 8 floats */
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* kern_hsum16 of the 16 lanes [lo | hi]: t = hi + lo, then kern_hsum8(t). */
AI float hsum16(__m256 lo, __m256 hi)
{
    return hsum8(_mm256_add_ps(hi, lo));
}

/* element i of a segmented row (see kern_dot_hh) */
AI const uint16_t *seg_at(const uint16_t *a, size_t ss, int i)
{
    return a + ((size_t)i >> 6) * ss + ((size_t)i & 63);
}

/* TILE order, 2 rows at once (two independent chains per lane half) */
AI void tile2(const uint16_t *a, size_t rs, size_t ss, const uint16_t *b, int n, float *out)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, t0 = s0, t1 = s0;
    for (int i = 0; i < n; i += 16) {
        const uint16_t *p = seg_at(a, ss, i);
        __m256 b0 = ld_h8(b + i), b1 = ld_h8(b + i + 8);
        s0 = _mm256_fmadd_ps(ld_h8(p), b0, s0);
        s1 = _mm256_fmadd_ps(ld_h8(p + 8), b1, s1);
        t0 = _mm256_fmadd_ps(ld_h8(p + rs), b0, t0);
        t1 = _mm256_fmadd_ps(ld_h8(p + rs + 8), b1, t1);
    }
    out[0] = hsum16(s0, s1);
    out[1] = hsum16(t0, t1);
}

static float dot_hh1(const uint16_t *a, size_t ss, const uint16_t *b, int n, int order)
{
    if (order == KERN_ORDER_TILE && n % 16 == 0) {
        /* lane i (of 16) = fma chain over elements i, i + 16, ... */
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            const uint16_t *p = seg_at(a, ss, i);
            s0 = _mm256_fmadd_ps(ld_h8(p), ld_h8(b + i), s0);
            s1 = _mm256_fmadd_ps(ld_h8(p + 8), ld_h8(b + i + 8), s1);
        }
        return hsum16(s0, s1);
    }
    /* 4 accumulators of 16 lanes, accumulator j = elements 16j .. 16j+15 of
     * each 64-step; folded (L0 + L2) + (L1 + L3) lane by lane. */
    const int np = n & ~63;
    __m256 s[4][2];
    for (int j = 0; j < 4; j++)
        s[j][0] = s[j][1] = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64) {
        const uint16_t *p = seg_at(a, ss, i);
        for (int j = 0; j < 4; j++) {
            s[j][0] = _mm256_fmadd_ps(ld_h8(p + 16 * j), ld_h8(b + i + 16 * j), s[j][0]);
            s[j][1] = _mm256_fmadd_ps(ld_h8(p + 16 * j + 8), ld_h8(b + i + 16 * j + 8), s[j][1]);
        }
    }
    __m256 lo = _mm256_add_ps(_mm256_add_ps(s[0][0], s[2][0]), _mm256_add_ps(s[1][0], s[3][0]));
    __m256 hi = _mm256_add_ps(_mm256_add_ps(s[0][1], s[2][1]), _mm256_add_ps(s[1][1], s[3][1]));
    double sum = (double)hsum16(lo, hi);
    for (int i = np; i < n; i++)
        sum += (double)(_cvtsh_ss(*seg_at(a, ss, i)) * _cvtsh_ss(b[i]));
    return (float)sum;
}

static void dot_hh(const uint16_t *a, size_t rs, size_t ss, int nrows, const uint16_t *b, int n,
                   int order, float *out)
{
    int r = 0;
    if (order == KERN_ORDER_TILE && n % 16 == 0)
        for (; r + 2 <= nrows; r += 2)
            tile2(a + (size_t)r * rs, rs, ss, b, n, out + r);
    for (; r < nrows; r++)
        out[r] = dot_hh1(a + (size_t)r * rs, ss, b, n, order);
}

/* 2^e for integer lanes e in [-126, 127] */
AI __m256 pow2i(__m256i e)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
}

/* kern_scalar_expf1 on 8 lanes: the same fused steps, then j * 2^n rounded
 * once as ldexpf does: one multiply when 2^n is a normal float, else
 * (j * 2^(n>>1)) * 2^(n - (n>>1)), whose first product is exact. */
AI __m256 expf8(__m256 x)
{
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    /* |n| > 126 or NaN: not (|n| <= 126) */
    const __m256 big = _mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_NLE_UQ);
    const __m256i ni = _mm256_cvttps_epi32(n);
    if (!_mm256_movemask_ps(big)) return _mm256_mul_ps(j, pow2i(ni));
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(j, pow2i(n1)), pow2i(_mm256_sub_epi32(ni, n1)));
    /* |n| > 192: 0 for n <= 0, +inf above; NaN stays n */
    const __m256 out = _mm256_cmp_ps(an, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 alt = _mm256_blendv_ps(_mm256_set1_ps(__builtin_inff()), _mm256_setzero_ps(),
                                        _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ));
    res = _mm256_blendv_ps(res, alt, out);
    return _mm256_blendv_ps(res, n, _mm256_cmp_ps(n, n, _CMP_UNORD_Q));
}

static void expf_v(const float *x, float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, expf8(_mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] = kern_scalar_expf1(x[i]);
}

/* int8 dot: 16 bytes at a time sign-extended to int16, madd_epi16 forms
 * int32 pair sums (|product| <= 2^14, so exact), 8 int32 lanes summed at the
 * end; the n % 16 tail in scalar. */
static void dot_i8(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out)
{
    int nv = n & ~15;
    for (int r = 0; r < nrows; r++) {
        const int8_t *a = rows[r];
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        int i = 0;
        for (; i + 32 <= nv; i += 32) {
            __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i)));
            __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
            __m256i a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i + 16)));
            __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i + 16)));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
        }
        for (; i < nv; i += 16) {
            __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + i)));
            __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + i)));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
        }
        __m256i acc = _mm256_add_epi32(acc0, acc1);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        out[r] = _mm_cvtsi128_si32(s4) + kern_scalar_dot_i8_1(a + nv, b + nv, n - nv);
    }
}

const kern_vtable_t kern_vtable_avx2 = {
    .name = "avx2",
    .quantize_act = quantize_act,
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q4_0, matmul_q4_1, matmul_q5_0,
               matmul_q5_1, matmul_q8_0},
    .dequant_row = KERN_SCALAR_DEQUANT_TABLE,
    .dot_hh = dot_hh,
    .expf_v = expf_v,
    .dot_i8 = dot_i8,
};
