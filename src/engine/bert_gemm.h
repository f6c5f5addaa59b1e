/* bert_gemm.h — the F32 matrix product of BERT's linear layers on packed
 * weights, one implementation per instruction set (bert_gemm_avx2.c,
 * bert_gemm_avx512.c, compiled with their own -m flags), chosen by bert.c
 * from the kernel level in use (kern_level_name(), so BARISTA_CPU=scalar
 * forces the scalar reference: kern_matmul on the unpacked weights).
 *
 * Why not kern_matmul: its float path is a dot product per (weight row,
 * activation row) ending in a horizontal sum, load-bound at ~5 loads per 4
 * FMAs. Here the weights are packed in panels of BERT_GEMM_NR output columns,
 * k-major, so an MR x NR tile of Y is accumulated in registers by outer
 * products (per k: NR / lanes weight loads, MR broadcasts, MR * NR / lanes
 * FMAs): FMA-bound.
 *
 * Not for: anything but F32 [T, K] x [N, K]^T products with N % NR == 0. */
#ifndef BARISTA_ENGINE_BERT_GEMM_H
#define BARISTA_ENGINE_BERT_GEMM_H

#define BERT_GEMM_NR 32

/* Packed layout of W [N, K] (row n = output n): panel p (columns p*NR ..
 * p*NR+NR-1) at Wp + p * K * NR, element (k, j) at [k * NR + j]. */
static inline void bert_gemm_pack(const float *W, int N, int K, float *Wp)
{
    for (int p = 0; p < N / BERT_GEMM_NR; p++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j < BERT_GEMM_NR; j++)
                Wp[((long)p * K + k) * BERT_GEMM_NR + j] = W[(long)(p * BERT_GEMM_NR + j) * K + k];
}

/* Y[t * ldy + n] = sum_k X[t * ldx + k] * W[n, k] for t < T and n in panels
 * [p0, p1). Only those columns of Y are written (threads split panels). */
typedef void (*bert_gemm_fn)(const float *Wp, int K, int p0, int p1, const float *X, int ldx, int T,
                             float *Y, int ldy);

void bert_gemm_avx2(const float *Wp, int K, int p0, int p1, const float *X, int ldx, int T,
                    float *Y, int ldy);
void bert_gemm_avx512(const float *Wp, int K, int p0, int p1, const float *X, int ldx, int T,
                      float *Y, int ldy);

#endif
