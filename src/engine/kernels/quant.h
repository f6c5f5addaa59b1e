/* quant.h — the on-disk quantized block layouts (ggml/GGUF) and the Q8
 * activation block the matmul kernels consume.
 *
 * Every block covers QK = 32 consecutive elements of one row. Scales are IEEE
 * fp16 stored as raw uint16_t (convert with util/fp16.h or F16C). Structures
 * are packed by construction (only uint16_t / uint8_t / int8_t / float members
 * in size order), and each size is checked with a _Static_assert so a layout
 * change cannot slip in silently. Not for: arithmetic — the kernels in
 * kern_*.c do that; this header only says where the bits are.
 *
 * Nibble order (Q4_x, Q5_x): the low nibble of qs[j] is element j, the high
 * nibble is element j + 16. Q5 fifth bits: qh[4] read as a little-endian
 * uint32_t, bit j is bit 4 of element j. */
#ifndef BARISTA_ENGINE_KERNELS_QUANT_H
#define BARISTA_ENGINE_KERNELS_QUANT_H

#include <stdint.h>

#define QK 32 /* elements per quantized block */

/* value = (nibble - 8) * d */
typedef struct {
    uint16_t d; /* fp16 */
    uint8_t qs[QK / 2];
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 is 18 bytes");

/* value = nibble * d + m */
typedef struct {
    uint16_t d; /* fp16 */
    uint16_t m; /* fp16 */
    uint8_t qs[QK / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 is 20 bytes");

/* value = (q5 - 16) * d, q5 = nibble | (qh bit j) << 4 */
typedef struct {
    uint16_t d; /* fp16 */
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 is 22 bytes");

/* value = q5 * d + m */
typedef struct {
    uint16_t d; /* fp16 */
    uint16_t m; /* fp16 */
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 is 24 bytes");

/* value = q * d */
typedef struct {
    uint16_t d; /* fp16 */
    int8_t qs[QK];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* Activation block, produced by kern_quantize_act (never stored on disk).
 * With D = max|x| / 127: q = nearest-even(x * (127 / max|x|)), d = fp16(D)
 * and s = fp16(D * sum(q)) — exactly the values llama.cpp's Q8_1 / Q8_0
 * blocks hold (fp16-rounded, kept as floats so kernels need no conversion).
 * The kernels dot every weight type in llama.cpp's order (kern_scalar.c):
 * 8 lanes of fma(d_w * d, isum of 4 elements, lane) per block, plus an fma
 * chain of m_w * s for Q4_1/Q5_1. d2 repeats d and ds = d * sum(q) (exact);
 * no level reads them any more. qs is 16-byte aligned in an aligned row. */
typedef struct {
    float d;
    float s;
    float d2; /* == d */
    float ds; /* == d * sum(qs), exact */
    int8_t qs[QK];
} block_q8a;
_Static_assert(sizeof(block_q8a) == 48, "block_q8a is 48 bytes");

#endif
