/* kern_avx512.c — the AVX-512 (F/BW/VL/DQ) + VNNI kernel level.
 *
 * Quantized matmul, like the AVX2 level, first maps every weight type to 32
 * unsigned codes and a pair (d_w, m_w) per block so that
 *   dot(block) = d_w d_a sum(code * qa) + m_w s_a:
 *   Q4_0: nibble, m_w = -8 d_w      Q4_1: nibble, m_w = m
 *   Q5_0: q5,     m_w = -16 d_w     Q5_1: q5,     m_w = m
 *   Q8_0: q ^ 0x80 (= q + 128), m_w = -128 d_w
 * and sum(code * qa) is VNNI dpbusd (u8 x s8, four products per i32 lane).
 * Two paths:
 *  - direct (nb < REPACK_MIN_NB, i.e. decode): 4 weight rows at a time, one
 *    row per 128-bit chunk of a zmm (elements 0..15, then 16..31) against the
 *    activation block broadcast to all chunks; the block scales of the 4 rows
 *    are finished together in one vector. The next 4 rows are prefetched in
 *    step (4 interleaved row streams defeat the hardware prefetcher). Each
 *    unpacked block serves up to DIRECT_BB activation rows. Memory bound on
 *    DRAM-resident weights.
 *  - tiled (prefill / batched decode): 16 weight rows x up to KC blocks are
 *    unpacked and transposed once into a tile whose dword lane i holds row i,
 *    so one dpbusd with a broadcast dword of the activation does 16 rows x 4
 *    elements and the per-row sums land in separate lanes (no horizontal
 *    reductions); the tile is reused across every activation row, TILE_BB at
 *    a time (independent dpbusd chains). Compute bound: ~12 zmm ops per
 *    16 rows x 32 elements x 1 activation row.
 * Float weights (F32/F16/BF16) stream through zmm FMAs with masked tails.
 * Not for: the reference semantics (kern_scalar.c); dequantization reuses it. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/kern_int.h"
#include "util/fp16.h"

#define AI static inline __attribute__((always_inline))

enum {
    TILE_ROWS = 16,    /* rows per tile = i32 lanes of a zmm */
    KC = 32,           /* blocks per K chunk: the tile is 32 * (512 + 128) B = 20 KB (L1) */
    REPACK_MIN_NB = 4, /* batch size from which the tiled path is used */
    DIRECT_BB = 3      /* activation rows per pass of the direct path */
};

/* A repacked 16-row x kc-block weight tile.
 * q[k][g] (64 bytes) = for row i = 0..15: the 4 codes of elements 4g..4g+3 of
 * block k, i.e. exactly the dword lane i that dpbusd pairs with dword g of an
 * activation block. d/m[k][i] = the block scales of row i (0 for padding rows). */
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
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        /* cvtps2dq rounds to nearest even under the default MXCSR */
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        _mm_storeu_si128((__m128i *)out[k].qs, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(out[k].qs + 16), _mm512_cvtsepi32_epi8(i1));
        /* scales rounded to fp16 as llama.cpp's Q8_1 stores them, so dot
         * products match it; the codes above used the exact scale. */
        out[k].d = fp16_to_f32(fp16_from_f32(d));
        int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
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

AI int has_m(int t)
{
    return t == KT_Q4_1 || t == KT_Q5_1;
}

AI float m_scale(int t) /* m_w / d_w for the symmetric types */
{
    return t == KT_Q4_0 ? -8.0f : t == KT_Q5_0 ? -16.0f : -128.0f;
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

/* ---- direct path: 4 weight rows x up to DIRECT_BB activation rows ------- */

/* One block of 4 rows as two zmm of codes, 128-bit chunk i = row i:
 * lo = elements 0..15, hi = elements 16..31. dpbusd against the activation's
 * qs[0..15] / qs[16..31] broadcast to all four chunks leaves, per row, four
 * i32 lanes whose sum is the block's integer dot. */
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

AI int ld_i32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
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

/* Rows p0..p3 (at block 0; stepping bs per block) x BB activation rows:
 *   acc[b]: lanes 4i..4i+3 = row i's (d_w d_a * partial integer sums)
 *   ms[b]:  lane 2i+1 = row i's sum of m_w s_a (even lanes are scratch). */
AI void quad_rows(int t, int BB, const uint8_t *p0, const uint8_t *p1, const uint8_t *p2,
                  const uint8_t *p3, const uint8_t *pf, const block_q8a *const *a, int nblk,
                  float out[][4])
{
    const size_t bs = blk_bytes(t);
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
    const __m256 msc = _mm256_setr_ps(1, m_scale(t), 1, m_scale(t), 1, m_scale(t), 1, m_scale(t));
    __m512 acc[DIRECT_BB];
    __m256 ms[DIRECT_BB];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        acc[b] = _mm512_setzero_ps();
        ms[b] = _mm256_setzero_ps();
    }
    for (int k = 0; k < nblk; k++, p0 += bs, p1 += bs, p2 += bs, p3 += bs, pf += 4 * bs) {
        /* four interleaved row streams defeat the hardware prefetcher: pull
         * the next quad's 4 * bs bytes in linearly, in step with this one */
        _mm_prefetch((const char *)pf, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + 128, _MM_HINT_T0);
        __m512i lo, hi;
        codes_quad(t, p0, p1, p2, p3, &lo, &hi);
        __m256 dm = dm_quad(t, p0, p1, p2, p3);
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++) {
            const block_q8a *ab = a[b] + k;
            __m512i p = _mm512_dpbusd_epi32(
                _mm512_setzero_si512(), lo,
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)ab->qs)));
            p = _mm512_dpbusd_epi32(
                p, hi, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(ab->qs + 16))));
            /* [d_a, s_a] (asymmetric) or [d_a, d_a sum q] (symmetric) */
            __m256 pr = _mm256_castpd_ps(
                _mm256_broadcast_sd((const double *)(has_m(t) ? &ab->d : &ab->d2)));
            if (!has_m(t)) pr = _mm256_mul_ps(pr, msc);
            __m256 v = _mm256_mul_ps(dm, pr); /* [d_w d_a, m_w s_a] per row */
            ms[b] = _mm256_add_ps(ms[b], v);
            __m512 sc = _mm512_permutexvar_ps(spread, _mm512_castps256_ps512(v));
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), sc, acc[b]);
        }
    }
    /* row sums: add the four lanes of each 128-bit chunk, then the m lane */
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7, 1, 3, 5, 7);
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        __m512 x = acc[b];
        x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(2, 3, 0, 1)));
        x = _mm512_add_ps(x, _mm512_permute_ps(x, _MM_SHUFFLE(1, 0, 3, 2)));
        /* lane 4i now holds row i's integer part; gather to lanes 0..3 */
        __m128 r = _mm512_castps512_ps128(_mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x));
        __m128 m =
            _mm512_castps512_ps128(_mm512_permutexvar_ps(odd, _mm512_castps256_ps512(ms[b])));
        _mm_storeu_ps(out[b], _mm_add_ps(r, m));
    }
}

AI void direct_bb(int t, int BB, const uint8_t *const *rows, const uint8_t *pf,
                  const block_q8a *acts, int nblk, int b0, int r, int nr, float *Y, int ldy)
{
    const block_q8a *a[DIRECT_BB];
    float o[DIRECT_BB][4];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++)
        a[b] = acts + (size_t)(b0 + b) * nblk;
    quad_rows(t, BB, rows[0], rows[1], rows[2], rows[3], pf, a, nblk, o);
    for (int b = 0; b < BB; b++)
        for (int i = 0; i < nr; i++)
            Y[(size_t)(b0 + b) * ldy + r + i] = o[b][i];
}

AI void matmul_direct(int t, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                      const block_q8a *acts, int nb, float *Y, int ldy)
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
                direct_bb(t, 1, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            case 2:
                direct_bb(t, 2, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            default:
                direct_bb(t, 3, rows, pf, acts, nblk, b, r, nr, Y, ldy);
                break;
            }
        }
    }
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
 * rows repeat row r's codes but get zero scales, so they contribute 0.
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
        __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
        __m512 m = has_m(t) ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
                            : _mm512_mul_ps(d, _mm512_set1_ps(m_scale(t)));
        _mm512_store_ps(tl->d[k], d);
        _mm512_store_ps(tl->m[k], m);
    }
}

/* acc[b] (lane i = row i) += dot(tile rows, activation b) over the tile's kc
 * blocks; a[b] points at activation b's block k0. */
AI void tile_dot(int t, const tile_t *tl, int kc, int BB, const block_q8a *const *a, __m512 *acc)
{
    for (int k = 0; k < kc; k++) {
        __m512i is[8];
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++)
            is[b] = _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int g = 0; g < 8; g++) {
            __m512i w = _mm512_load_si512((const __m512i *)tl->q[k][g]);
#pragma GCC unroll 16
            for (int b = 0; b < BB; b++) {
                int32_t q4;
                memcpy(&q4, a[b][k].qs + 4 * g, 4);
                is[b] = _mm512_dpbusd_epi32(is[b], w, _mm512_set1_epi32(q4));
            }
        }
        __m512 dv = _mm512_load_ps(tl->d[k]), mv = _mm512_load_ps(tl->m[k]);
#pragma GCC unroll 16
        for (int b = 0; b < BB; b++) {
            __m512 sc = _mm512_mul_ps(dv, _mm512_set1_ps(a[b][k].d));
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[b]), sc, acc[b]);
            acc[b] = _mm512_fmadd_ps(mv, _mm512_set1_ps(has_m(t) ? a[b][k].s : a[b][k].ds), acc[b]);
        }
    }
}

#define TILE_BB 6 /* max activation rows per tile_dot call (<= 8, see the switch) */

AI void tile_run(int t, const tile_t *tl, int kc, int BB, const block_q8a *acts, int nblk, int k0,
                 int b0, int first, __mmask16 valid, float *Y, int ldy, int r)
{
    const block_q8a *a[8];
    __m512 acc[8];
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        a[b] = acts + (size_t)(b0 + b) * nblk + k0;
        acc[b] = _mm512_setzero_ps();
    }
    tile_dot(t, tl, kc, BB, a, acc);
#pragma GCC unroll 16
    for (int b = 0; b < BB; b++) {
        float *y = Y + (size_t)(b0 + b) * ldy + r;
        if (!first) acc[b] = _mm512_add_ps(acc[b], _mm512_maskz_loadu_ps(valid, y));
        _mm512_mask_storeu_ps(y, valid, acc[b]);
    }
}

AI void matmul_tiled(int t, const void *W, size_t row_bytes, int nblk, int r0, int r1,
                     const block_q8a *acts, int nb, float *Y, int ldy)
{
    tile_t tl __attribute__((aligned(64)));
    int nchunk = (nblk + KC - 1) / KC;
    int kstep = (nblk + nchunk - 1) / nchunk;
    for (int r = r0; r < r1; r += TILE_ROWS) {
        int nr = r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS;
        __mmask16 valid = (__mmask16)((1u << nr) - 1);
        for (int k0 = 0; k0 < nblk; k0 += kstep) {
            int kc = nblk - k0 < kstep ? nblk - k0 : kstep;
            int next_rows = r1 - r - TILE_ROWS;
            repack(t, W, row_bytes, r, nr, next_rows < TILE_ROWS ? next_rows : TILE_ROWS, k0, kc,
                   &tl);
            /* nb split into ceil(nb / TILE_BB) groups of near-equal size, so a
             * short tail group does not run with too few independent chains */
            int ng = (nb + TILE_BB - 1) / TILE_BB;
            for (int g = 0, b = 0; g < ng; g++) {
                int bb = nb / ng + (g < nb % ng ? 1 : 0);
                switch (bb) {
#define TILE_CASE(N)                                                                               \
    case N:                                                                                        \
        tile_run(t, &tl, kc, N, acts, nblk, k0, b, k0 == 0, valid, Y, ldy, r);                     \
        break;
                    TILE_CASE(1)
                    TILE_CASE(2)
                    TILE_CASE(3)
                    TILE_CASE(4)
                    TILE_CASE(5)
                    TILE_CASE(6)
                    TILE_CASE(7)
                    TILE_CASE(8)
#undef TILE_CASE
                default:
                    break;
                }
                b += bb;
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

/* ---- float helpers ------------------------------------------------------ */

static float dot_f32(const float *a, const float *b, int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        s0 =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + i), _mm512_maskz_loadu_ps(mk, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void axpy_f32(float *y, float a, const float *x, int n)
{
    __m512 va = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, mk,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(mk, x + i),
                                              _mm512_maskz_loadu_ps(mk, y + i)));
    }
}

/* fp16 KV rows: 16 halves -> 16 floats per conversion. */
static float dot_f16(const float *a, const uint16_t *b, int n)
{
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
                              _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + i))), acc);
    float r = _mm512_reduce_add_ps(acc);
    return r + kern_scalar_dot_f16(a + i, b + i, n - i);
}

static void axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(
            y + i,
            _mm512_fmadd_ps(va, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))),
                            _mm512_loadu_ps(y + i)));
    kern_scalar_axpy_f16(y + i, a, x + i, n - i);
}

const kern_vtable_t kern_vtable_avx512 = {
    .name = "avx512",
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
