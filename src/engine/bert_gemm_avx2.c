/* bert_gemm_avx2.c — bert_gemm.h's product with AVX2 + FMA: tiles of 3
 * tokens x 32 outputs (12 ymm accumulators), one k step = 4 panel loads, 3
 * broadcasts, 12 FMAs; the token tail goes one at a time. Each output is a
 * plain k-ordered FMA chain (close to, not equal to, the scalar level). */
#include <immintrin.h>

#include "engine/bert_gemm.h"

#define TB 12 /* tokens per block */
#define AI static inline __attribute__((always_inline))

AI void tile(int MR, const float *w, int K, const float *X, int ldx, float *Y, int ldy)
{
    __m256 acc[3][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++)
            acc[r][v] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 wv[4];
        for (int v = 0; v < 4; v++)
            wv[v] = _mm256_load_ps(w + (long)k * 32 + 8 * v);
        for (int r = 0; r < MR; r++) {
            __m256 x = _mm256_broadcast_ss(X + (long)r * ldx + k);
            for (int v = 0; v < 4; v++)
                acc[r][v] = _mm256_fmadd_ps(x, wv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++)
            _mm256_storeu_ps(Y + (long)r * ldy + 8 * v, acc[r][v]);
}

void bert_gemm_avx2(const float *Wp, int K, int p0, int p1, const float *X, int ldx, int T,
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
            for (; t + 3 <= te; t += 3)
                tile(3, w, K, X + (long)t * ldx, ldx, y + (long)t * ldy, ldy);
            for (; t < te; t++)
                tile(1, w, K, X + (long)t * ldx, ldx, y + (long)t * ldy, ldy);
        }
    }
}
