/* kern_avx512.c — the AVX-512 (F/BW/VL/DQ) + VNNI kernel level.
 *
 * Quantized matmul gives the scalar level's bits: llama.cpp's summation
 * order (kern_scalar.c, dot_q). Per (weight row, activation row) there are
 * eight float lanes; block k adds fma(d_w * d_a, isum_l, lane l), isum_l =
 * sum of code * qa over elements 4l..4l+3 with the signed code (Q4_0 nibble-8,
 * Q5_0 q5-16, Q8_0 q; Q4_1/Q5_1 unsigned, plus fma(m_w, s_a, summs) apart);
 * the lanes fold as kern_hsum8, then summs is added. The integer sums are
 * exact, so they may be formed any way: VNNI dpbusd (u8 x s8, four products
 * per i32 lane) of the unsigned codes
 *   Q4_0: nibble   Q5_0: q5   Q8_0: q ^ 0x80 (= q + 128)   Q4_1/Q5_1: as is
 * started from the bias -off * (sum of the lane's 4 qa) (off = 8/16/128, the
 * code's offset): one dpbusd of off bytes with the activation block
 * (act_bias), made once per call (direct path) or once per 16-row tile
 * (tiled path) and reused across those weight rows. Only the float steps (d_w * d_a, one
 * fma per lane per block, the final fold) have a fixed order, and every lane
 * is its own vector lane, so nothing is summed horizontally before the fold.
 * Two paths:
 *  - direct (nb < REPACK_MIN_NB, i.e. decode): 4 weight rows at a time, one
 *    row per 128-bit chunk of a zmm: lo = elements 0..15, hi = 16..31 against
 *    the activation's qs[0..15] / qs[16..31] broadcast to all chunks, so the
 *    dword lanes of chunk i are row i's lanes 0..3 (lo) and 4..7 (hi), kept
 *    in two float accumulators. The next 4 rows are prefetched in step (4
 *    interleaved row streams defeat the hardware prefetcher). Each unpacked
 *    block serves up to DIRECT_BB activation rows.
 *  - tiled (prefill / batched decode): 16 weight rows x up to KC blocks are
 *    unpacked and transposed once into a tile whose dword lane i holds row i,
 *    so one dpbusd with a broadcast dword g of the activation gives lane g of
 *    16 rows; eight float accumulators (one per lane g) per activation row,
 *    TILE_BB activation rows at a time. When K is longer than KC blocks the
 *    accumulators are carried from chunk to chunk through a stack scratch
 *    (NB_PASS activation rows per pass), never summed early. Compute bound:
 *    per 16 rows x 32 elements x 1 activation row, 8 dpbusd + 8 cvt + 8 fma
 *    + 1 mul; dpbusd, fma and mul share Zen 4's two multiply pipes, which
 *    makes it ~1.6x the cost of the former one-integer-sum-per-block form.
 * dot_hh and expf_v are llama.cpp's fp16 dots and ggml_v_expf in zmm, in the
 * scalar level's order. Float weights (F32/F16/BF16) stream through zmm FMAs
 * with masked tails (close to, not equal to, the scalar level).
 * Not for: the reference semantics (kern_scalar.c); dequantization reuses it. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern.h"
#include "engine/kernels/kern_int.h"

#define AI static inline __attribute__((always_inline))

enum {
    TILE_ROWS = 16,    /* rows per tile = i32 lanes of a zmm */
    KC = 32,           /* blocks per K chunk: the tile is 32 * (512 + 128) B = 20 KB (L1) */
    REPACK_MIN_NB = 4, /* batch size from which the tiled path is used */
    DIRECT_BB = 3,     /* activation rows per pass of the direct path */
    TILE_BB = 3,       /* activation rows per tile_dot call (8 accumulators each; see the switch) */
    NB_PASS = 64,      /* activation rows per pass when K is split (carry scratch) */
    BIAS_CAP = 512     /* direct path: blocks per activation row with precomputed biases */
};

/* A repacked 16-row x kc-block weight tile.
 * q[k][g] (64 bytes) = for row i = 0..15: the 4 codes of elements 4g..4g+3 of
 * block k, i.e. exactly the dword lane i that dpbusd pairs with dword g of an
 * activation block. d/m[k][i] = the block scales of row i (0 for padding
 * rows; m only for Q4_1/Q5_1). */
typedef struct {
    uint8_t q[KC][8][64];
    float d[KC][TILE_ROWS];
    float m[KC][TILE_ROWS];
} tile_t;

/* ---- activation quantization (bit-identical to the scalar level) -------- */

static void quantize_act(const float *x, void *xq, int n)
{
    block_q8a *out = xq;
    for (int k = 0; k < n / QK; k++) {
        __m512 x0 = _mm512_loadu_ps(x + k * QK), x1 = _mm512_loadu_ps(x + k * QK + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        float d = amax / 127.0f;
        /* 127 / amax, not 1 / d: llama.cpp's multiplier, which rounds differently */
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        /* cvtps2dq rounds to nearest even under the default MXCSR; |x id| <= 127 */
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        /* a block so tiny that 127 / amax is inf gives inf / NaN products,
         * which convert to INT_MIN: every level maps them to -127 */
        i0 = _mm512_max_epi32(i0, _mm512_set1_epi32(-127));
        i1 = _mm512_max_epi32(i1, _mm512_set1_epi32(-127));
        _mm_storeu_si128((__m128i *)out[k].qs, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(out[k].qs + 16), _mm512_cvtsepi32_epi8(i1));
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them (s from the
         * unrounded d); the codes above used the exact multiplier. F16C
         * rounds to nearest even like the scalar level's fp16_from_f32. */
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        __m128 h = _mm_cvtph_ps(
            _mm_cvtps_ph(_mm_setr_ps(d, d * (float)sum, 0.0f, 0.0f), _MM_FROUND_TO_NEAREST_INT));
        out[k].d = _mm_cvtss_f32(h);
        out[k].s = _mm_cvtss_f32(_mm_movehdup_ps(h));
        out[k].d2 = out[k].d;
        out[k].ds = out[k].d * (float)sum;
    }
}

/* ---- weight block -> (32 unsigned codes, d_w [, m_w]) -------------------- */

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

AI int code_off(int t) /* unsigned code - signed code (0 for Q4_1/Q5_1) */
{
    return t == KT_Q4_0 ? 8 : t == KT_Q5_0 ? 16 : t == KT_Q8_0 ? 128 : 0;
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

/* The dpbusd start values of one activation block for a symmetric type:
 * dword l = -off * (qs[4l] + ... + qs[4l+3]), so that dpbusd(bias, unsigned
 * codes, qs) is the signed-code lane sum isum_l exactly. */
AI __m256i act_bias(int t, const block_q8a *a)
{
    __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)code_off(t)),
                                    _mm256_loadu_si256((const __m256i *)a->qs));
    return _mm256_sub_epi32(_mm256_setzero_si256(), s);
}

/* ---- direct path: 4 weight rows x up to DIRECT_BB activation rows ------- */

/* One block of 4 rows as two zmm of unsigned codes, 128-bit chunk i = row i:
 * lo = elements 0..15, hi = elements 16..31. dpbusd against the activation's
 * qs[0..15] / qs[16..31] broadcast to all four chunks leaves row i's lanes
 * 0..3 (lo) and 4..7 (hi) in the four dwords of chunk i. */
AI void codes_quad(int t, const uint8_t *b0, const uint8_t *b1, const uint8_t *b2,
                   const uint8_t *b3, __m512i *lo, __m512i *hi)
{
    const uint8_t *q0 = blk_qs(t, b0), *q1 = blk_qs(t, b1);
    const uint8_t *q2 = blk_qs(t, b2), *q3 = blk_qs(t, b3);
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q0));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)q1), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)q2), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)q3), 3);
    if (t == KT_Q8_0) {
        __m512i h = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(q0 + 16)));
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(q1 + 16)), 1);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(q2 + 16)), 2);
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)(q3 + 16)), 3);
        *lo = _mm512_xor_si512(z, _mm512_set1_epi8(-128));
        *hi = _mm512_xor_si512(h, _mm512_set1_epi8(-128));
        return;
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    *lo = _mm512_and_si512(z, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
    if (t == KT_Q5_0 || t == KT_Q5_1) {
        uint32_t h0 = blk_qh(t, b0), h1 = blk_qh(t, b1), h2 = blk_qh(t, b2), h3 = blk_qh(t, b3);
        uint64_t ml = (uint64_t)(h0 & 0xFFFF) | (uint64_t)(h1 & 0xFFFF) << 16 |
                      (uint64_t)(h2 & 0xFFFF) << 32 | (uint64_t)(h3 & 0xFFFF) << 48;
        uint64_t mh = (uint64_t)(h0 >> 16) | (uint64_t)(h1 >> 16) << 16 |
                      (uint64_t)(h2 >> 16) << 32 | (uint64_t)(h3 >> 16) << 48;
        *lo = _mm512_mask_add_epi8(*lo, ml, *lo, _mm512_set1_epi8(0x10));
        *hi = _mm512_mask_add_epi8(*hi, mh, *hi, _mm512_set1_epi8(0x10));
    }
}

/* [d0 m0 d1 m1 d2 m2 d3 m3] of one block of 4 rows (the m slots are
 * meaningless for the symmetric types). */
AI __m256 dm_quad(const uint8_t *b0, const uint8_t *b1, const uint8_t *b2, const uint8_t *b3)
{
    __m128i x = _mm_cvtsi32_si128(ld_i32(b0));
    x = _mm_insert_epi32(x, ld_i32(b1), 1);
    x = _mm_insert_epi32(x, ld_i32(b2), 2);
    x = _mm_insert_epi32(x, ld_i32(b3), 3);
    return _mm256_cvtph_ps(x);
}

/* Rows p0..p3 (at block 0; stepping bs per block) x BB activation rows into
 * out[b][i] = dot(row i, activation b). bias[b] (pre) holds act_bias of
 * activation b's blocks; without pre they are computed here.
 *   lo[b] / hi[b]: lanes 4i..4i+3 = row i's float lanes 0..3 / 4..7
 *   ms[b]: lane 2i+1 = row i's summs (even lanes are scratch). */
AI void quad_rows(int t, int BB, int pre, const uint8_t *p0, const uint8_t *p1, const uint8_t *p2,
                  const uint8_t *p3, const uint8_t *pf, const block_q8a *const *a,
                  const __m256i *const *bias, int nblk, float out[][4])
{
    const size_t bs = blk_bytes(t);
    const int sym = !has_m(t);
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    __m512 lo[DIRECT_BB], hi[DIRECT_BB];
    __m256 ms[DIRECT_BB];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        lo[b] = _mm512_setzero_ps();
        hi[b] = _mm512_setzero_ps();
        ms[b] = _mm256_setzero_ps();
    }
    for (int k = 0; k < nblk; k++, p0 += bs, p1 += bs, p2 += bs, p3 += bs, pf += 4 * bs) {
        /* four interleaved row streams defeat the hardware prefetcher: pull
         * the next quad's 4 * bs bytes in linearly, in step with this one */
        _mm_prefetch((const char *)pf, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 128, _MM_HINT_T0);
        __m512i cl, ch;
        codes_quad(t, p0, p1, p2, p3, &cl, &ch);
        __m256 dm = dm_quad(p0, p1, p2, p3);
        __m512 dw = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(dm)); /* d_w of row i */
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++) {
            const block_q8a *ab = a[b] + k;
            __m512i il = _mm512_setzero_si512(), ih = _mm512_setzero_si512();
            if (sym && pre) {
                const __m128i *bp = (const __m128i *)(bias[b] + k);
                il = _mm512_broadcast_i32x4(_mm_load_si128(bp));
                ih = _mm512_broadcast_i32x4(_mm_load_si128(bp + 1));
            } else if (sym) {
                __m256i bv = act_bias(t, ab);
                il = _mm512_broadcast_i32x4(_mm256_castsi256_si128(bv));
                ih = _mm512_broadcast_i32x4(_mm256_extracti128_si256(bv, 1));
            }
            il = _mm512_dpbusd_epi32(
                il, cl, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)ab->qs)));
            ih = _mm512_dpbusd_epi32(
                ih, ch, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(ab->qs + 16))));
            __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(ab->d));
            lo[b] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(il), lo[b]);
            hi[b] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(ih), hi[b]);
            if (!sym) ms[b] = _mm256_fmadd_ps(dm, _mm256_set1_ps(ab->s), ms[b]);
        }
    }
    /* kern_hsum8 per row: r_j = lane j+4 + lane j, then (r0+r2) + (r1+r3) */
    const __m512i first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7);
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        __m512 x = _mm512_add_ps(lo[b], hi[b]);
        x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
        x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
        __m128 r = _mm512_castps512_ps128(_mm512_permutexvar_ps(first, x));
        if (!sym)
            r = _mm_add_ps(r, _mm512_castps512_ps128(
                                  _mm512_permutexvar_ps(odd, _mm512_castps256_ps512(ms[b]))));
        _mm_storeu_ps(out[b], r);
    }
}

AI void direct_bb(int t, int BB, int pre, const uint8_t *const *rows, const uint8_t *pf,
                  const block_q8a *acts, const __m256i *bias, int nblk, int b0, int r, int nr,
                  float *Y, int ldy)
{
    const block_q8a *a[DIRECT_BB];
    const __m256i *bi[DIRECT_BB];
    float o[DIRECT_BB][4];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        a[b] = acts + (size_t)(b0 + b) * nblk;
        bi[b] = bias + (size_t)(b0 + b) * nblk;
    }
    quad_rows(t, BB, pre, rows[0], rows[1], rows[2], rows[3], pf, a, bi, nblk, o);
    for (int b = 0; b < BB; b++)
        for (int i = 0; i < nr; i++)
            Y[(size_t)(b0 + b) * ldy + r + i] = o[b][i];
}

AI void direct_rows(int t, int pre, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                    const block_q8a *acts, const __m256i *bias, int nb, float *Y, int ldy)
{
    for (int r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? r1 - r : 4;
        const uint8_t *rows[4]; /* a short last quad repeats its last row */
        for (int i = 0; i < 4; i++)
            rows[i] = (const uint8_t *)W + (size_t)(r + (i < nr ? i : nr - 1)) * row_bytes;
        /* where the next quad starts (itself for the last one) */
        const uint8_t *pf = r + 4 < r1 ? (const uint8_t *)W + (size_t)(r + 4) * row_bytes : rows[0];
        for (int b = 0; b < nb; b += DIRECT_BB) {
            switch (nb - b) {
            case 1:
                direct_bb(t, 1, pre, rows, pf, acts, bias, nblk, b, r, nr, Y, ldy);
                break;
            case 2:
                direct_bb(t, 2, pre, rows, pf, acts, bias, nblk, b, r, nr, Y, ldy);
                break;
            default:
                direct_bb(t, 3, pre, rows, pf, acts, bias, nblk, b, r, nr, Y, ldy);
                break;
            }
        }
    }
}

AI void matmul_direct(int t, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                      const block_q8a *acts, int nb, float *Y, int ldy)
{
    if (has_m(t)) {
        direct_rows(t, 0, W, row_bytes, nblk, r0, r1, acts, NULL, nb, Y, ldy);
        return;
    }
    /* the symmetric types' per-activation-block biases, once for all rows */
    __m256i bias[DIRECT_BB * BIAS_CAP];
    if ((size_t)nb * nblk > sizeof bias / sizeof *bias) {
        direct_rows(t, 0, W, row_bytes, nblk, r0, r1, acts, NULL, nb, Y, ldy);
        return;
    }
    for (size_t i = 0; i < (size_t)nb * nblk; i++)
        bias[i] = act_bias(t, acts + i);
    direct_rows(t, 1, W, row_bytes, nblk, r0, r1, acts, bias, nb, Y, ldy);
}

/* ---- tiled path ---------------------------------------------------------- */

/* Codes of rows i and i+8 of one block: [row i: 32 codes | row i+8: 32 codes]. */
AI __m512i codes_pair(int t, const uint8_t *b0, const uint8_t *b1)
{
    if (t == KT_Q8_0) {
        __m512i z = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)blk_qs(t, b0)));
        z = _mm512_inserti64x4(z, _mm256_loadu_si256((const __m256i *)blk_qs(t, b1)), 1);
        return _mm512_xor_si512(z, _mm512_set1_epi8(-128));
    }
    /* [qs0 | qs0 | qs1 | qs1], high copies shifted down 4 bits, then & 0x0F */
    __m512i z = _mm512_castsi256_si512(
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)blk_qs(t, b0))));
    z = _mm512_inserti64x4(
        z, _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)blk_qs(t, b1))), 1);
    z = _mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4);
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    if (t == KT_Q5_0 || t == KT_Q5_1) {
        __mmask64 hb = (__mmask64)blk_qh(t, b0) | (__mmask64)blk_qh(t, b1) << 32;
        z = _mm512_mask_add_epi8(z, hb, z, _mm512_set1_epi8(0x10));
    }
    return z;
}

/* 8x8 transpose of dwords inside each 256-bit half:
 * in  z[i]  = [row i: g0..g7 | row i+8: g0..g7]
 * out z[g]  = [rows 0..7: dword g | rows 8..15: dword g]  (lane = row) */
AI void transpose8x8_halves(__m512i z[8])
{
    __m512i t[8], u[8];
#pragma GCC unroll 16
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(z[2 * i], z[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(z[2 * i], z[2 * i + 1]);
    }
/* t0: r0g0 r1g0 r0g1 r1g1 (| g4,g5 in the next 128); t1: g2,g3 (| g6,g7) */
#pragma GCC unroll 16
    for (int h = 0; h < 2; h++) {
        __m512i *tt = t + 4 * h, *uu = u + 4 * h;
        uu[0] = _mm512_unpacklo_epi64(tt[0], tt[2]); /* g0 | g4 */
        uu[1] = _mm512_unpackhi_epi64(tt[0], tt[2]); /* g1 | g5 */
        uu[2] = _mm512_unpacklo_epi64(tt[1], tt[3]); /* g2 | g6 */
        uu[3] = _mm512_unpackhi_epi64(tt[1], tt[3]); /* g3 | g7 */
    }
    /* u[j] (rows 0-3) and u[4+j] (rows 4-7): 128-bit chunks [gj, gj+4, gj', gj+4'] */
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 16
    for (int j = 0; j < 4; j++) {
        z[j] = _mm512_permutex2var_epi64(u[j], lo, u[4 + j]);
        z[j + 4] = _mm512_permutex2var_epi64(u[j], hi, u[4 + j]);
    }
}

/* Unpack rows [r, r+nr) (nr <= 16), blocks [k0, k0+kc) of W into tl. Padding
 * rows repeat row r's codes but get zero scales (and are never stored).
 * next_rows (<= 16) rows after the tile get the same blocks prefetched. */
AI void repack(int t, const void *W, size_t row_bytes, int r, int nr, int next_rows, int k0, int kc,
               tile_t *tl)
{
    const size_t bs = blk_bytes(t);
    const uint8_t *rows[TILE_ROWS];
    for (int i = 0; i < TILE_ROWS; i++)
        rows[i] = (const uint8_t *)W + (size_t)(r + (i < nr ? i : 0)) * row_bytes + (size_t)k0 * bs;
    const __mmask16 valid = (__mmask16)((1u << nr) - 1);
    /* the same blocks of the next 16 rows, prefetched in step: 16 interleaved
     * row streams are more than the hardware prefetcher follows */
    const uint8_t *next =
        (const uint8_t *)W + (size_t)(r + TILE_ROWS) * row_bytes + (size_t)k0 * bs;
    const int pf = nr == TILE_ROWS && next_rows > 0;
    /* one prefetch per row every pstep blocks: pstep * bs <= 64, so every
     * cache line of each row is touched once or twice */
    const int pstep = (int)(64 / bs);
    for (int k = 0, kp = 0; k < kc; k++, kp = kp + 1 == pstep ? 0 : kp + 1) {
        if (pf && kp == 0)
            for (int i = 0; i < next_rows; i++)
                _mm_prefetch((const char *)next + (size_t)i * row_bytes + (size_t)k * bs,
                             _MM_HINT_T1); /* to L2: L1 has too few miss buffers */
        __m512i z[8];
#pragma GCC unroll 16
        for (int i = 0; i < 8; i++)
            z[i] = codes_pair(t, rows[i] + (size_t)k * bs, rows[i + 8] + (size_t)k * bs);
        transpose8x8_halves(z);
#pragma GCC unroll 16
        for (int g = 0; g < 8; g++)
            _mm512_store_si512((__m512i *)tl->q[k][g], z[g]);
        /* the first dword of each row's block: fp16 d (| fp16 m << 16); plain
         * loads beat vpgatherdd here */
        const size_t o = (size_t)k * bs;
        __m512i dm = _mm512_setr_epi32(
            ld_i32(rows[0] + o), ld_i32(rows[1] + o), ld_i32(rows[2] + o), ld_i32(rows[3] + o),
            ld_i32(rows[4] + o), ld_i32(rows[5] + o), ld_i32(rows[6] + o), ld_i32(rows[7] + o),
            ld_i32(rows[8] + o), ld_i32(rows[9] + o), ld_i32(rows[10] + o), ld_i32(rows[11] + o),
            ld_i32(rows[12] + o), ld_i32(rows[13] + o), ld_i32(rows[14] + o), ld_i32(rows[15] + o));
        dm = _mm512_maskz_mov_epi32(valid, dm);
        _mm512_store_ps(tl->d[k], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm)));
        if (has_m(t))
            _mm512_store_ps(tl->m[k],
                            _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16))));
    }
}

/* acc[b][g] (lane i = row i's float lane g) and ms[b] (row i's summs) over the
 * tile's kc blocks, in the scalar order; a[b] points at activation b's block
 * k0. The symmetric types' act_bias of block k + 1 is made (into the other
 * half of biasbuf) while block k runs: as a separate pass before the loop it
 * cost ~10%, and in the same iteration the broadcasts wait for the stores. */
AI void tile_dot(int t, const tile_t *tl, int kc, int BB, const block_q8a *const *a,
                 __m512 acc[][8], __m512 *ms)
{
    const int sym = !has_m(t);
    int32_t biasbuf[2][TILE_BB][8] __attribute__((aligned(32)));
    if (sym)
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++)
            _mm256_store_si256((__m256i *)biasbuf[0][b], act_bias(t, a[b]));
    for (int k = 0; k < kc; k++) {
        int32_t(*bias)[8] = biasbuf[k & 1];
        if (sym) {
            if (k + 1 < kc)
#pragma GCC unroll 16
                for (int b = 0; b < BB; b++)
                    _mm256_store_si256((__m256i *)biasbuf[(k + 1) & 1][b],
                                       act_bias(t, a[b] + k + 1));
            __asm__("" : "+m"(biasbuf)); /* broadcast from memory, not through shuffles */
        }
        __m512 dd[TILE_BB];
        const __m512 dw = _mm512_load_ps(tl->d[k]);
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++)
            dd[b] = _mm512_mul_ps(dw, _mm512_set1_ps(a[b][k].d));
#pragma GCC unroll 16
        for (int g = 0; g < 8; g++) {
            const __m512i w = _mm512_load_si512((const __m512i *)tl->q[k][g]);
#pragma GCC unroll 16
            for (int b = 0; b < BB; b++) {
                __m512i is = sym ? _mm512_set1_epi32(bias[b][g]) : _mm512_setzero_si512();
                is = _mm512_dpbusd_epi32(
                    is, w, _mm512_set1_epi32(ld_i32((const uint8_t *)a[b][k].qs + 4 * g)));
                acc[b][g] = _mm512_fmadd_ps(dd[b], _mm512_cvtepi32_ps(is), acc[b][g]);
            }
        }
    }
    if (!sym)
        for (int k = 0; k < kc; k++) {
            const __m512 mw = _mm512_load_ps(tl->m[k]);
#pragma GCC unroll 16
            for (int b = 0; b < BB; b++)
                ms[b] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a[b][k].s), ms[b]);
        }
}

/* One group of BB activation rows (from b0) against the tile's kc blocks
 * (from k0). carry ([BB][9][16], the 8 lanes and summs of each activation
 * row) takes the accumulators from chunk to chunk: read unless first, written
 * unless last; the last chunk folds them into Y. */
AI void tile_run(int t, const tile_t *tl, int kc, int BB, const block_q8a *acts, int nblk, int k0,
                 int b0, int first, int last, float (*carry)[9][16], __mmask16 valid, float *Y,
                 int ldy, int r)
{
    const block_q8a *a[TILE_BB];
    __m512 acc[TILE_BB][8], ms[TILE_BB];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        a[b] = acts + (size_t)(b0 + b) * nblk + k0;
#pragma GCC unroll 16
        for (int g = 0; g < 8; g++)
            acc[b][g] = first ? _mm512_setzero_ps() : _mm512_load_ps(carry[b][g]);
        ms[b] = first ? _mm512_setzero_ps() : _mm512_load_ps(carry[b][8]);
    }
    tile_dot(t, tl, kc, BB, a, acc, ms);
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        if (!last) {
#pragma GCC unroll 16
            for (int g = 0; g < 8; g++)
                _mm512_store_ps(carry[b][g], acc[b][g]);
            _mm512_store_ps(carry[b][8], ms[b]);
            continue;
        }
        /* kern_hsum8 lanewise over the 16 rows, then summs */
        __m512 r0 = _mm512_add_ps(acc[b][4], acc[b][0]), r1 = _mm512_add_ps(acc[b][5], acc[b][1]);
        __m512 r2 = _mm512_add_ps(acc[b][6], acc[b][2]), r3 = _mm512_add_ps(acc[b][7], acc[b][3]);
        __m512 s = _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
        if (has_m(t)) s = _mm512_add_ps(s, ms[b]);
        _mm512_mask_storeu_ps(Y + (size_t)(b0 + b) * ldy + r, valid, s);
    }
}

AI void matmul_tiled(int t, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                     const block_q8a *acts, int nb, float *Y, int ldy)
{
    tile_t tl __attribute__((aligned(64)));
    float carry[NB_PASS][9][16] __attribute__((aligned(64)));
    int nchunk = (nblk + KC - 1) / KC;
    int kstep = (nblk + nchunk - 1) / nchunk;
    /* a split K carries 9 vectors per activation row: NB_PASS rows per pass */
    int bstep = nchunk > 1 ? NB_PASS : nb;
    for (int r = r0; r < r1; r += TILE_ROWS) {
        int nr = r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS;
        __mmask16 valid = (__mmask16)((1u << nr) - 1);
        int next_rows = r1 - r - TILE_ROWS;
        next_rows = next_rows < TILE_ROWS ? next_rows : TILE_ROWS;
        for (int bp = 0; bp < nb; bp += bstep) {
            int nbp = nb - bp < bstep ? nb - bp : bstep;
            for (int k0 = 0; k0 < nblk; k0 += kstep) {
                int kc = nblk - k0 < kstep ? nblk - k0 : kstep;
                int first = k0 == 0, last = k0 + kc == nblk;
                repack(t, W, row_bytes, r, nr, next_rows, k0, kc, &tl);
                /* nbp split into ceil(nbp / TILE_BB) groups of near-equal size,
                 * so a short tail group does not run with too few chains */
                int ng = (nbp + TILE_BB - 1) / TILE_BB;
                for (int g = 0, b = 0; g < ng; g++) {
                    int bb = nbp / ng + (g < nbp % ng ? 1 : 0);
                    float(*cy)[9][16] = nchunk > 1 ? carry + b : carry;
                    switch (bb) { /* TILE_BB == 3 */
                    case 1:
                        tile_run(t, &tl, kc, 1, acts, nblk, k0, bp + b, first, last, cy, valid, Y,
                                 ldy, r);
                        break;
                    case 2:
                        tile_run(t, &tl, kc, 2, acts, nblk, k0, bp + b, first, last, cy, valid, Y,
                                 ldy, r);
                        break;
                    default:
                        tile_run(t, &tl, kc, 3, acts, nblk, k0, bp + b, first, last, cy, valid, Y,
                                 ldy, r);
                        break;
                    }
                    b += bb;
                }
            }
        }
    }
}

AI void matmul_q(int t, const void *W, size_t row_bytes, int n, int r0, int r1, const void *xq,
                 int nb, float *Y, int ldy)
{
    if (nb >= REPACK_MIN_NB)
        matmul_tiled(t, W, row_bytes, n / QK, r0, r1, xq, nb, Y, ldy);
    else
        matmul_direct(t, W, row_bytes, n / QK, r0, r1, xq, nb, Y, ldy);
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

/* 16 weights at element i of a row of type t (lanes outside mk are 0) */
AI __m512 ldw16(int t, const void *row, int i, __mmask16 mk)
{
    const uint16_t *h = (const uint16_t *)row + i;
    switch (t) {
    case KT_F32:
        return _mm512_maskz_loadu_ps(mk, (const float *)row + i);
    case KT_F16:
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, h));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, h)), 16));
    }
}

/* One float weight row against BB float rows; BB == 1 runs 4 chains. */
AI void frow(int t, int BB, const void *row, int n, const float *const *x, float *out)
{
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    int i = 0;
    if (BB == 1) {
        for (; i + 64 <= n; i += 64)
#pragma GCC unroll 16
            for (int u = 0; u < 4; u++)
                acc[u] = _mm512_fmadd_ps(ldw16(t, row, i + 16 * u, 0xFFFF),
                                         _mm512_loadu_ps(x[0] + i + 16 * u), acc[u]);
    }
    for (; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 w = ldw16(t, row, i, mk);
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++)
            acc[b] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mk, x[b] + i), acc[b]);
    }
    if (BB == 1)
        acc[0] = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++)
        out[b] = _mm512_reduce_add_ps(acc[b]);
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
#pragma GCC unroll 16
            for (int i = 0; i < 4; i++)
                xs[i] = x + (size_t)(b + i) * ldx;
            frow(t, 4, row, n, xs, o);
#pragma GCC unroll 16
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

/* ---- fp16 dots and expf in llama.cpp's order ------------------------------ */

AI __m512 ldh16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* kern_hsum16: t_i = v_{8+i} + v_i, u_i = t_{4+i} + t_i, (u0 + u2) + (u1 + u3) */
AI float hsum16(__m512 v)
{
    __m256 t = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
    __m128 u = _mm_add_ps(_mm256_extractf128_ps(t, 1), _mm256_castps256_ps128(t));
    __m128 w = _mm_add_ps(u, _mm_movehl_ps(u, u));
    return _mm_cvtss_f32(_mm_add_ss(w, _mm_movehdup_ps(w)));
}

/* element i of a segmented row (see kern_dot_hh) */
AI const uint16_t *seg_at(const uint16_t *a, size_t ss, int i)
{
    return a + ((size_t)i >> 6) * ss + ((size_t)i & 63);
}

/* TILE order, 4 rows at once: four independent fma chains hide the latency
 * of the one chain per lane the order fixes. */
AI void tile4(const uint16_t *a, size_t rs, size_t ss, const uint16_t *b, int n, float *out)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int i = 0; i < n; i += 16) {
        const uint16_t *p = seg_at(a, ss, i);
        __m512 bv = ldh16(b + i);
        c0 = _mm512_fmadd_ps(ldh16(p), bv, c0);
        c1 = _mm512_fmadd_ps(ldh16(p + rs), bv, c1);
        c2 = _mm512_fmadd_ps(ldh16(p + 2 * rs), bv, c2);
        c3 = _mm512_fmadd_ps(ldh16(p + 3 * rs), bv, c3);
    }
    out[0] = hsum16(c0);
    out[1] = hsum16(c1);
    out[2] = hsum16(c2);
    out[3] = hsum16(c3);
}

static float dot_hh1(const uint16_t *a, size_t ss, const uint16_t *b, int n, int order)
{
    if (order == KERN_ORDER_TILE && n % 16 == 0) {
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16)
            acc = _mm512_fmadd_ps(ldh16(seg_at(a, ss, i)), ldh16(b + i), acc);
        return hsum16(acc);
    }
    int np = n & ~63;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int i = 0; i < np; i += 64) {
        const uint16_t *p = seg_at(a, ss, i);
        c0 = _mm512_fmadd_ps(ldh16(p), ldh16(b + i), c0);
        c1 = _mm512_fmadd_ps(ldh16(p + 16), ldh16(b + i + 16), c1);
        c2 = _mm512_fmadd_ps(ldh16(p + 32), ldh16(b + i + 32), c2);
        c3 = _mm512_fmadd_ps(ldh16(p + 48), ldh16(b + i + 48), c3);
    }
    double sum = (double)hsum16(_mm512_add_ps(_mm512_add_ps(c0, c2), _mm512_add_ps(c1, c3)));
    for (int i = np; i < n; i++)
        sum += (double)(_cvtsh_ss(*seg_at(a, ss, i)) * _cvtsh_ss(b[i]));
    return (float)sum;
}

static void dot_hh(const uint16_t *a, size_t rs, size_t ss, int nrows, const uint16_t *b, int n,
                   int order, float *out)
{
    int r = 0;
    if (order == KERN_ORDER_TILE && n % 16 == 0)
        for (; r + 4 <= nrows; r += 4)
            tile4(a + (size_t)r * rs, rs, ss, b, n, out + r);
    for (; r < nrows; r++)
        out[r] = dot_hh1(a + (size_t)r * rs, ss, b, n, order);
}

/* llama.cpp's ggml_v_expf (AVX-512): exp(x) = 2^n (1 + b p(b)), n = round(x
 * log2 e), b = x - n ln 2 in two steps; |n| > 192 gives 0 or +inf. */
AI __m512 v_expf(__m512 x)
{
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (!d) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(d, res, alt);
}

static void expf_v(const float *x, float *y, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, v_expf(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 mk = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, mk, v_expf(_mm512_maskz_loadu_ps(mk, x + i)));
    }
}

/* int8 dot with VNNI: dpbusd multiplies unsigned by signed bytes, so the row
 * is biased to a ^ 0x80 = a + 128 (0..255) and 128 * sum(b) is taken off at
 * the end; four products per int32 lane, no saturation, so exact. 64 bytes a
 * step in two accumulators; the n % 64 tail in scalar. */
static void dot_i8(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out)
{
    int nv = n & ~63;
    int32_t bsum = 0;
    for (int i = 0; i < nv; i++)
        bsum += b[i];
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int r = 0; r < nrows; r++) {
        const int8_t *a = rows[r];
        __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
        int i = 0;
        for (; i + 128 <= nv; i += 128) {
            __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(a + i), bias);
            __m512i a1 = _mm512_xor_si512(_mm512_loadu_si512(a + i + 64), bias);
            acc0 = _mm512_dpbusd_epi32(acc0, a0, _mm512_loadu_si512(b + i));
            acc1 = _mm512_dpbusd_epi32(acc1, a1, _mm512_loadu_si512(b + i + 64));
        }
        if (i < nv) {
            __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(a + i), bias);
            acc0 = _mm512_dpbusd_epi32(acc0, a0, _mm512_loadu_si512(b + i));
        }
        int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1)) - 128 * bsum;
        out[r] = s + kern_scalar_dot_i8_1(a + nv, b + nv, n - nv);
    }
}

const kern_vtable_t kern_vtable_avx512 = {
    .name = "avx512",
    .quantize_act = quantize_act,
    .matmul = {matmul_f32, matmul_f16, matmul_bf16, matmul_q4_0, matmul_q4_1, matmul_q5_0,
               matmul_q5_1, matmul_q8_0},
    .dequant_row = KERN_SCALAR_DEQUANT_TABLE,
    .dot_hh = dot_hh,
    .expf_v = expf_v,
    .dot_i8 = dot_i8,
};
