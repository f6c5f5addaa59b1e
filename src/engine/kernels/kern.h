/* kern.h — the CPU compute kernels of the forward pass: quantized and float
 * matrix x activation products, activation quantization, row dequantization
 * and the small float helpers attention needs.
 *
 * One implementation per instruction set (kern_scalar.c, kern_avx2.c,
 * kern_avx512.c); kern.c picks one from CPUID at first use, or the level named
 * by the environment variable BARISTA_CPU=scalar|avx2|avx512 (a level the CPU
 * lacks falls back to the best available one, with a warning on stderr). The
 * scalar path is the reference the others are tested against.
 *
 * Not for: threading (engine/pool.h splits rows; every function here is
 * reentrant and works on the row range it is given), memory allocation (none
 * happens here), or model layout knowledge. */
#ifndef BARISTA_ENGINE_KERNELS_KERN_H
#define BARISTA_ENGINE_KERNELS_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h" /* ggml_type_t */

/* Select the implementation. Idempotent and thread-safe (pthread_once); every
 * other function calls it implicitly, so calling it is optional. */
void kern_init(void);

/* "scalar", "avx2" or "avx512": the level in use (static string). */
const char *kern_level_name(void);

/* 1 for the weight types kern_matmul / kern_dequant_row accept
 * (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0), else 0. */
int kern_type_supported(ggml_type_t t);

/* Bytes of one weight row of n elements of type t (n % 32 == 0 for the block
 * types). 0 for an unsupported type or a block type with n % 32 != 0. */
size_t kern_row_bytes(ggml_type_t t, int n);

/* Bytes of one quantized activation row of n floats (n % 32 == 0):
 * n / 32 blocks of 48 bytes (block_q8a in kernels/quant.h). */
size_t kern_act_bytes(int n);

/* Quantize one activation row x[n] (n % 32 == 0) into xq (kern_act_bytes(n)
 * bytes, 4-byte aligned): per 32-block, with D = max|x| / 127, q = x * (127/max|x|)
 * rounded to nearest, ties to even (nearbyintf / cvtps2dq); the block keeps
 * d = D and s = D * sum(q), both rounded to fp16 as llama.cpp's Q8_1 does.
 * All levels produce bit-identical output. */
void kern_quantize_act(const float *x, void *xq, int n);

/* Y[b*ldy + r] = dot(W row r, activation row b) for r in [r0, r1), b in [0, nb).
 *
 * W: rows of n elements of type wt; row r at (const char *)W + r * kern_row_bytes(wt, n).
 * Quantized wt (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0): xq holds nb rows made by
 * kern_quantize_act, row b at (const char *)xq + b * kern_act_bytes(n); x and
 * ldx are ignored (may be NULL / 0).
 * Float wt (F32 F16 BF16): x holds nb float rows, row b at x + b * ldx; xq is
 * ignored; any n >= 1 is allowed.
 * Y rows may alias nothing else. Only Y[b*ldy + r0 .. r1) is written, so
 * threads may share Y with disjoint row ranges (see pool_split).
 *
 * nb = 1 is the decode case (memory bound); for nb >= 4 the AVX-512 path
 * repacks 16-row weight tiles once and reuses them across the batch, so
 * splitting rows between threads in multiples of 16 (pool_split) is best. */
void kern_matmul(ggml_type_t wt, const void *W, int n, int r0, int r1, const void *xq,
                 const float *x, int ldx, int nb, float *Y, int ldy);

/* Dequantize one row of n elements of type t (any supported type) to floats. */
void kern_dequant_row(ggml_type_t t, const void *row, float *out, int n);

/* out[r] = sum over i < n of a_r[i] * b[i] for rows r < nrows of fp16 values,
 * in one of llama.cpp's two orders (all levels give the same bits). Row r's
 * element i is at a[r * row_stride + (i / 64) * seg_stride + i % 64]: rows
 * may be stored in segments of KERN_SEG elements (the V cache is); for
 * contiguous rows pass seg_stride = KERN_SEG. b is contiguous. Orders:
 *  KERN_ORDER_TILE (its batched sgemm; needs n % 16 == 0, else VEC is used):
 *    16 lanes, lane i = fma chain over elements i, i+16, ...; kern_hsum16.
 *  KERN_ORDER_VEC (its single-row vec_dot): 4 x 16 lanes over steps of 64,
 *    folded (L0+L2)+(L1+L3), kern_hsum16, then the n % 64 tail in double. */
enum { KERN_ORDER_TILE = 0, KERN_ORDER_VEC = 1, KERN_SEG = 64 };
/* The fixed fold of 16 float lanes both orders end with (also used for
 * softmax sums): t_i = v[8+i] + v[i], u_i = t[4+i] + t[i], (u0+u2) + (u1+u3). */
float kern_hsum16(const float v[16]);
void kern_dot_hh(const uint16_t *a, size_t row_stride, size_t seg_stride, int nrows,
                 const uint16_t *b, int n, int order, float *out);

/* out[r] = sum over i < n of rows[r][i] * b[i] for r < nrows: int8 x int8
 * dot products, exact in int32 (any int8 values, n <= 65536), so every level
 * gives the same result. Rows are separate pointers (graph neighbours are
 * scattered); each row and b hold n bytes, any alignment. The vector index's
 * scan (cache/vindex.c). */
void kern_dot_i8(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out);

/* y[i] = exp(x[i]) as llama.cpp's AVX-512 ggml_v_expf computes it (a
 * polynomial, not libm; exp of -inf is 0). y may equal x. */
void kern_expf(const float *x, float *y, int n);

#endif
