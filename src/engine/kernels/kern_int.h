/* kern_int.h — internals shared by kern.c and the per-instruction-set kernel
 * files: the function table each level fills in, and the scalar helpers the
 * SIMD tables reuse for the entries they do not specialise.
 *
 * Not for: callers outside engine/kernels (use kern.h) — except unit tests,
 * which fetch each level's table with kern_vtable_for to compare levels. */
#ifndef BARISTA_ENGINE_KERNELS_KERN_INT_H
#define BARISTA_ENGINE_KERNELS_KERN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "engine/kernels/quant.h"

/* Dense index of the supported weight types (the tables are indexed by it). */
typedef enum {
    KT_F32 = 0,
    KT_F16,
    KT_BF16,
    KT_Q4_0,
    KT_Q4_1,
    KT_Q5_0,
    KT_Q5_1,
    KT_Q8_0,
    KT_COUNT
} kern_type_t;

/* Matmul over rows [r0, r1) of W (row stride row_bytes) and nb activations;
 * same contract as kern_matmul. */
typedef void (*kern_matmul_fn)(const void *W, size_t row_bytes, int n, int r0, int r1,
                               const void *xq, const float *x, int ldx, int nb, float *Y, int ldy);
typedef void (*kern_dequant_fn)(const void *row, float *out, int n);

/* One instruction-set level. Every entry is non-NULL. */
typedef struct {
    const char *name; /* "scalar" | "avx2" | "avx512" */
    void (*quantize_act)(const float *x, void *xq, int n);
    kern_matmul_fn matmul[KT_COUNT];
    kern_dequant_fn dequant_row[KT_COUNT];
    void (*dot_hh)(const uint16_t *a, size_t row_stride, size_t seg_stride, int nrows,
                   const uint16_t *b, int n, int order, float *out);
    void (*expf_v)(const float *x, float *y, int n);
    void (*dot_i8)(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out);
} kern_vtable_t;

extern const kern_vtable_t kern_vtable_scalar;
extern const kern_vtable_t kern_vtable_avx2;
extern const kern_vtable_t kern_vtable_avx512;

/* The table of level "scalar" / "avx2" / "avx512", or NULL when the name is
 * unknown or this CPU (and OS) cannot run it. Does not change the level in use. */
const kern_vtable_t *kern_vtable_for(const char *level);

/* KT_* index of a ggml type, or -1 when unsupported. */
int kern_type_index(ggml_type_t t);

/* Scalar entry points (kern_scalar.c) reused by SIMD tables. */
void kern_scalar_dequant_f32(const void *row, float *out, int n);
void kern_scalar_dequant_f16(const void *row, float *out, int n);
void kern_scalar_dequant_bf16(const void *row, float *out, int n);
void kern_scalar_dequant_q4_0(const void *row, float *out, int n);
void kern_scalar_dequant_q4_1(const void *row, float *out, int n);
void kern_scalar_dequant_q5_0(const void *row, float *out, int n);
void kern_scalar_dequant_q5_1(const void *row, float *out, int n);
void kern_scalar_dequant_q8_0(const void *row, float *out, int n);
/* Exact-order helpers; SIMD levels use them for their tails. */
/* one row of kern_dot_hh (element i at a[(i / 64) * seg_stride + i % 64]) */
float kern_scalar_dot_hh1(const uint16_t *a, size_t seg_stride, const uint16_t *b, int n,
                          int order);
void kern_scalar_dot_hh(const uint16_t *a, size_t row_stride, size_t seg_stride, int nrows,
                        const uint16_t *b, int n, int order, float *out);
/* llama.cpp's AVX-512 expf (ggml_v_expf) for one value; SIMD tails use it. */
float kern_scalar_expf1(float x);
/* sum of a[i] * b[i] over i < n, int32; SIMD levels use it for their tails. */
int32_t kern_scalar_dot_i8_1(const int8_t *a, const int8_t *b, int n);
void kern_scalar_expf_v(const float *x, float *y, int n);
/* The fixed fold of 8 float lanes the quantized dots end with:
 * ((a4+a0)+(a6+a2)) + ((a5+a1)+(a7+a3)); kern_hsum16 is in kern.h. */
float kern_hsum8(const float a[8]);

#define KERN_SCALAR_DEQUANT_TABLE                                                                  \
    {                                                                                              \
        kern_scalar_dequant_f32, kern_scalar_dequant_f16, kern_scalar_dequant_bf16,                \
            kern_scalar_dequant_q4_0, kern_scalar_dequant_q4_1, kern_scalar_dequant_q5_0,          \
            kern_scalar_dequant_q5_1, kern_scalar_dequant_q8_0                                     \
    }

#endif
