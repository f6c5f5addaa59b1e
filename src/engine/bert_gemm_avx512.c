/* bert_gemm_avx512.c — bert_gemm.h's product with AVX-512F: tiles of 12
 * tokens x 32 outputs (24 zmm accumulators), one k step = 2 panel loads, 12
 * broadcasts, 24 FMAs; the token tail goes 4 then 1 at a time. Each output
 * is a plain k-ordered FMA chain (close to, not equal to, the scalar level). */
#include <immintrin.h>

#include "engine/bert_gemm.h"

#define TB 48 /* tokens per block */
#define AI static inline __attribute__((always_inline))

AI void tile(int MR, const float *w, int K, const float *X, int ldx, float *Y, int ldy)
{
    __m512 acc[12][2];
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 w0 = _mm512_load_ps(w + (long)k * 32), w1 = _mm512_load_ps(w + (long)k * 32 + 16);
        for (int r = 0; r < MR; r++) {
            __m512 x = _mm512_set1_ps(X[(long)r * ldx + k]);
            acc[r][0] = _mm512_fmadd_ps(x, w0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < MR; r++) {
        _mm512_storeu_ps(Y + (long)r * ldy, acc[r][0]);
        _mm512_storeu_ps(Y + (long)r * ldy + 16, acc[r][1]);
    }
}

void bert_gemm_avx512(const float *Wp, int K, int p0, int p1, const float *X, int ldx, int T,
                      float *Y, int ldy)
{
    /* token blocks outermost: a block of X stays in L1/L2 while the panels
     * stream past it */
    for (int tb = 0; tb < T; tb += TB) {
        int te = tb + TB < T ? tb + TB : T;
        for (int p = p0; p < p1; p++) {
            const float *w = Wp + (long)p * K * BERT_GEMM_NR;
            float *y = Y + p * BERT_GEMM_NR;
            int t = tb;
            for (; t + 12 <= te; t += 12)
                tile(12, w, K, X + (long)t * ldx, ldx, y + (long)t * ldy, ldy);
            for (; t + 4 <= te; t += 4)
                tile(4, w, K, X + (long)t * ldx, ldx, y + (long)t * ldy, ldy);
            for (; t < te; t++)
                tile(1, w, K, X + (long)t * ldx, ldx, y + (long)t * ldy, ldy);
        }
    }
}
