/* quantize.h — converting model weights between ggml types: the row
 * quantizers (llama.cpp's reference rounding, so the bytes equal what its
 * `quantize_row_*_ref` functions and gguf-py's numpy quantizer produce) and
 * the whole-file conversion behind `barista quantize`.
 *
 * Block formats are the ones in kernels/quant.h. Rounding, per 32-element
 * block:
 *  Q4_0: m = the element of largest magnitude (sign kept), d = m / -8,
 *        q = min(15, trunc(x / d + 8.5));         value = (q - 8) * d
 *  Q4_1: d = (max - min) / 15, q = min(15, trunc((x - min) / d + 0.5)),
 *        stored m = min;                           value = q * d + m
 *  Q5_0: as Q4_0 with d = m / -16, q = min(31, trunc(x / d + 16.5))
 *  Q5_1: as Q4_1 with d = (max - min) / 31, q = trunc((x - min) / d + 0.5)
 *  Q8_0: d = max|x| / 127, q = round-half-away(x / d)
 * where "x / d" is x * (1 / d) computed in float, and d is stored as fp16
 * (round to nearest even). F16 / BF16 / F32 are plain conversions.
 *
 * Not for: activations (kern_quantize_act) or reading/writing GGUF files
 * (gguf.h, gguf_write.h). */
#ifndef BARISTA_ENGINE_QUANTIZE_H
#define BARISTA_ENGINE_QUANTIZE_H

#include <stddef.h>

#include "engine/gguf.h"
#include "util/err.h"

/* 1 for the types quant_row writes: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0. */
int quant_type_writable(ggml_type_t t);

/* "Q4_0" / "q4_0" ... → type; BAR_ERR_INVALID for anything else. */
int quant_type_parse(const char *name, ggml_type_t *out);

/* Convert one row of n floats (n % 32 == 0 for block types) into out
 * (ggml_type_block_bytes(t) * n / block elems bytes). */
void quant_row(ggml_type_t t, const float *x, void *out, int n);

typedef struct {
    ggml_type_t type; /* target for the 2-D weight matrices */
    int pure;         /* 1: the token embedding (tied output) gets `type` too */
    int verbose;      /* print one line per tensor to stderr */
} quant_opts_t;

typedef struct {
    size_t n_tensors, n_converted;
    size_t bytes_in, bytes_out; /* tensor data */
} quant_report_t;

/* Read the GGUF at `in`, write `out` with every 2-D weight matrix converted
 * to opts->type (dequantized to float first when it is quantized), 1-D
 * tensors (norms) unchanged, all metadata copied with general.file_type set
 * to the new type's llama.cpp file type. Without opts->pure the token
 * embedding matrix becomes Q8_0 when the target has fewer bits (llama.cpp
 * gives the output matrix more bits too — Q6_K, which barista does not
 * implement). Errors name the tensor. */
int quant_file(const char *in, const char *out, const quant_opts_t *opts, quant_report_t *rep,
               bar_msg_t *msg);

#endif
