/* test_quantize.c — engine/quantize.c (row quantizers, quant_file) and
 * engine/gguf_write.c: hand-checked blocks for each rounding rule, the
 * round-trip error bound of every type through the kernels' dequantizer, a
 * written GGUF read back field for field by the reader, and failures that
 * leave no file behind. (Bytes equal to llama.cpp's reference quantizer on a
 * whole model: tests/e2e/test_quantize.py, against gguf-py.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/kernels/kern.h"
#include "engine/kernels/quant.h"
#include "engine/quantize.h"
#include "util/fp16.h"

static void test_parse_types(void **state)
{
    (void)state;
    ggml_type_t t;
    assert_int_equal(quant_type_parse("q4_0", &t), 0);
    assert_int_equal(t, GGML_Q4_0);
    assert_int_equal(quant_type_parse("Q5_1", &t), 0);
    assert_int_equal(t, GGML_Q5_1);
    assert_int_equal(quant_type_parse("bf16", &t), 0);
    assert_int_equal(t, GGML_BF16);
    assert_int_not_equal(quant_type_parse("Q6_K", &t), 0);
    assert_int_not_equal(quant_type_parse("", &t), 0);
    assert_true(quant_type_writable(GGML_Q8_0));
    assert_false(quant_type_writable(GGML_Q6_K));
}

/* Q8_0: d = max|x| / 127, q = round(x / d) with halves away from zero. */
static void test_q8_0_block(void **state)
{
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i - 16) / 16.0f; /* -1 .. 0.9375 */
    block_q8_0 b;
    quant_row(GGML_Q8_0, x, &b, 32);
    assert_int_equal(b.d, fp16_from_f32(1.0f / 127));
    assert_int_equal(b.qs[0], -127);
    assert_int_equal(b.qs[16], 0);
    /* 0.5 * 127 = 63.5 -> 64 (away from zero); -0.5 -> -64 */
    assert_int_equal(b.qs[24], 64);
    assert_int_equal(b.qs[8], -64);
}

/* Q4_0: the scale takes the sign of the largest-magnitude element, which
 * lands on code 0; the opposite end is clamped at 15. */
static void test_q4_0_block(void **state)
{
    (void)state;
    float x[32] = {0};
    x[0] = -8.0f;
    x[1] = 8.0f;
    x[2] = 1.0f;
    x[17] = -1.0f;
    block_q4_0 b;
    quant_row(GGML_Q4_0, x, &b, 32);
    assert_int_equal(b.d, fp16_from_f32(1.0f)); /* -8 / -8 */
    assert_int_equal(b.qs[0] & 15, 0);          /* -8 -> 0 */
    assert_int_equal(b.qs[1] & 15, 15);         /* 8 -> 16.5 -> clamped 15 */
    assert_int_equal(b.qs[2] & 15, 9);          /* 1 -> 9 */
    assert_int_equal(b.qs[1] >> 4, 7);          /* element 17: -1 -> 7 */
    assert_int_equal(b.qs[3] & 15, 8);          /* 0 -> 8 */
    /* all zero: d = 0, every code 8 */
    float z[32] = {0};
    quant_row(GGML_Q4_0, z, &b, 32);
    assert_true(fp16_to_f32(b.d) == 0.0f); /* -0: 0 / -8 */
    for (int j = 0; j < 16; j++)
        assert_int_equal(b.qs[j], 0x88);
}

static void test_q4_1_and_q5_blocks(void **state)
{
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++)
        x[i] = 2.0f + (float)i; /* min 2, max 33 */
    block_q4_1 b4;
    quant_row(GGML_Q4_1, x, &b4, 32);
    assert_int_equal(b4.m, fp16_from_f32(2.0f));
    assert_int_equal(b4.d, fp16_from_f32(31.0f / 15));
    assert_int_equal(b4.qs[0] & 15, 0);
    assert_int_equal(b4.qs[15] >> 4, 15); /* element 31 = max */
    block_q5_1 b5;
    quant_row(GGML_Q5_1, x, &b5, 32);
    assert_int_equal(b5.d, fp16_from_f32(1.0f)); /* 31 / 31 */
    /* element i -> code i: low nibble in qs, bit 4 in qh */
    uint32_t qh = (uint32_t)b5.qh[0] | (uint32_t)b5.qh[1] << 8 | (uint32_t)b5.qh[2] << 16 |
                  (uint32_t)b5.qh[3] << 24;
    for (int i = 0; i < 32; i++) {
        int lo = i < 16 ? (b5.qs[i] & 15) : (b5.qs[i - 16] >> 4);
        int code = lo | (int)((qh >> i) & 1) << 4;
        assert_int_equal(code, i);
    }
    block_q5_0 b50;
    for (int i = 0; i < 32; i++)
        x[i] = (float)(i - 16); /* -16 .. 15 */
    quant_row(GGML_Q5_0, x, &b50, 32);
    assert_int_equal(b50.d, fp16_from_f32(1.0f)); /* -16 / -16 */
    qh = (uint32_t)b50.qh[0] | (uint32_t)b50.qh[1] << 8 | (uint32_t)b50.qh[2] << 16 |
         (uint32_t)b50.qh[3] << 24;
    for (int i = 0; i < 32; i++) {
        int lo = i < 16 ? (b50.qs[i] & 15) : (b50.qs[i - 16] >> 4);
        int code = lo | (int)((qh >> i) & 1) << 4;
        assert_int_equal(code, i); /* x / d + 16 = i */
    }
}

/* Every type, through the kernels' dequantizer: |x - deq| <= half a step
 * (plus fp16 rounding of the scale), on random rows. */
static void test_roundtrip_bounds(void **state)
{
    (void)state;
    const ggml_type_t types[] = {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1,
                                 GGML_Q8_0, GGML_F16,  GGML_BF16, GGML_F32};
    /* codes across the block range; Q4_0/Q5_0 put the largest magnitude on
     * an end code and clamp the other side, so one element may be off by a
     * whole step there (amax / 8, amax / 16) */
    const double steps[] = {8, 15, 16, 31, 254, 0, 0, 0};
    enum { N = 256 };
    float x[N], y[N];
    uint8_t q[N * 4 + 64];
    unsigned s = 12345;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < N; i++) {
                s = s * 1103515245u + 12345u;
                x[i] = ((float)(s >> 8) / (float)(1u << 24) - 0.5f) * (float)(1 + rep);
            }
            quant_row(types[t], x, q, N);
            kern_dequant_row(types[t], q, y, N);
            for (int b = 0; b < N / 32; b++) {
                float mn = INFINITY, mx = -INFINITY;
                for (int j = 0; j < 32; j++) {
                    mn = fminf(mn, x[b * 32 + j]);
                    mx = fmaxf(mx, x[b * 32 + j]);
                }
                double range = (double)mx - mn, amax = fmax(fabs(mn), fabs(mx));
                double tol;
                if (steps[t] == 0) /* float types: relative rounding */
                    tol = amax * (types[t] == GGML_BF16 ? 1.0 / 256 : 1.0 / 2048) + 1e-30;
                else if (types[t] == GGML_Q4_0 || types[t] == GGML_Q5_0)
                    tol = amax / steps[t] * 1.01 + amax * 2e-3; /* one step on the clamped side */
                else if (types[t] == GGML_Q8_0)
                    tol = amax * 2 / steps[t] * 0.5 * 1.01 + amax * 2e-3; /* half a step */
                else
                    tol = range / steps[t] * 0.5 * 1.01 + amax * 2e-3;
                for (int j = 0; j < 32; j++) {
                    double err = fabs((double)x[b * 32 + j] - y[b * 32 + j]);
                    if (err > tol)
                        fail_msg("%s rep %d elem %d: x %g got %g (tol %g)",
                                 ggml_type_name(types[t]), rep, b * 32 + j, x[b * 32 + j],
                                 y[b * 32 + j], tol);
                }
            }
        }
    }
}

static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "/tmp/barista-test-quant-%ld-%s", (long)getpid(), name);
    return buf;
}

/* Write a small GGUF with every kind of KV and two tensors (alignment 64),
 * read it back with the reader. */
static void test_writer_roundtrip(void **state)
{
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "w.gguf");
    bar_msg_t msg = {0};
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_create(&w, path, 64, &msg), 0);
    assert_int_equal(gguf_writer_kv_u32(w, "general.alignment", 64, &msg), 0);
    assert_int_equal(gguf_writer_kv_str(w, "general.name", "tiny", &msg), 0);
    int64_t ne_a[2] = {32, 3}, ne_b[1] = {5};
    assert_int_equal(gguf_writer_tensor_info(w, "a", 2, ne_a, GGML_Q8_0, &msg), 0);
    assert_int_equal(gguf_writer_tensor_info(w, "b", 1, ne_b, GGML_F32, &msg), 0);
    /* a row length that is not a block multiple is refused */
    int64_t bad[2] = {33, 1};
    assert_int_not_equal(gguf_writer_tensor_info(w, "c", 2, bad, GGML_Q4_0, &msg), 0);
    assert_int_equal(gguf_writer_begin_data(w, &msg), 0);
    block_q8_0 rows[3];
    float x[32];
    for (int r = 0; r < 3; r++) {
        for (int j = 0; j < 32; j++)
            x[j] = (float)(r + 1) * (float)(j - 10);
        quant_row(GGML_Q8_0, x, &rows[r], 32);
        assert_int_equal(gguf_writer_tensor(w, &rows[r], sizeof rows[r], &msg), 0); /* row by row */
    }
    float bv[5] = {1, 2, 3, 4, 5};
    assert_int_equal(gguf_writer_tensor(w, bv, sizeof bv, &msg), 0);
    assert_int_not_equal(gguf_writer_tensor(w, bv, 4, &msg), 0); /* past the end */
    assert_int_equal(gguf_writer_finish(w, &msg), 0);
    gguf_writer_destroy(w);

    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, &msg), 0);
    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_alignment(g), 64);
    assert_int_equal(gguf_data_offset(g) % 64, 0);
    gguf_str_t name;
    assert_int_equal(gguf_get_str(g, "general.name", &name), 0);
    assert_int_equal(name.n, 4);
    assert_memory_equal(name.p, "tiny", 4);
    assert_int_equal(gguf_tensor_count(g), 2);
    const gguf_tensor_t *a = gguf_tensor_find(g, "a"), *b = gguf_tensor_find(g, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->type, GGML_Q8_0);
    assert_int_equal(a->ne[1], 3);
    assert_int_equal(b->offset % 64, 0);
    assert_memory_equal(a->data, rows, sizeof rows);
    assert_memory_equal(b->data, bv, sizeof bv);

    /* copy every KV of that file into a second one: identical values */
    char path2[256];
    tmp_path(path2, sizeof path2, "w2.gguf");
    assert_int_equal(gguf_writer_create(&w, path2, 64, &msg), 0);
    for (size_t i = 0; i < gguf_kv_count(g); i++)
        assert_int_equal(gguf_writer_kv_copy(w, gguf_kv_at(g, i), &msg), 0);
    assert_int_equal(gguf_writer_begin_data(w, &msg), 0);
    assert_int_equal(gguf_writer_finish(w, &msg), 0);
    gguf_writer_destroy(w);
    gguf_t *g2;
    assert_int_equal(gguf_open(&g2, path2, &msg), 0);
    assert_int_equal(gguf_kv_count(g2), gguf_kv_count(g));
    uint32_t al;
    assert_int_equal(gguf_get_u32(g2, "general.alignment", &al), 0);
    assert_int_equal(al, 64);
    gguf_close(g2);
    gguf_close(g);
    unlink(path);
    unlink(path2);
}

/* A writer that never finishes leaves nothing behind; nor does a missing
 * tensor. */
static void test_writer_failures_leave_no_file(void **state)
{
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "x.gguf");
    unlink(path);
    bar_msg_t msg = {0};
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_create(&w, path, 0, &msg), 0);
    int64_t ne[1] = {4};
    assert_int_equal(gguf_writer_tensor_info(w, "t", 1, ne, GGML_F32, &msg), 0);
    assert_int_equal(gguf_writer_begin_data(w, &msg), 0);
    assert_int_not_equal(gguf_writer_finish(w, &msg), 0); /* tensor t never written */
    assert_non_null(strstr(msg.text, "0 of 1"));
    gguf_writer_destroy(w);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_not_equal(gguf_writer_create(&w, path, 48, &msg), 0); /* not a power of two */
    assert_int_not_equal(gguf_writer_create(&w, "/nonexistent-dir/x.gguf", 0, &msg), 0);
}

/* The real model to Q8_0: loads, every matrix has the new type, norms stay,
 * metadata equal; an unreadable input fails without creating OUT. */
static void test_quant_file_model(void **state)
{
    (void)state;
    char in[1024], out[256];
    test_model_path(in, sizeof in, TEST_SMOLLM2);
    if (access(in, R_OK)) skip();
    tmp_path(out, sizeof out, "m.gguf");
    quant_opts_t o = {.type = GGML_Q5_0};
    quant_report_t rep;
    bar_msg_t msg = {0};
    assert_int_equal(quant_file(in, out, &o, &rep, &msg), 0);
    assert_true(rep.n_converted > 0);
    gguf_t *a, *b;
    assert_int_equal(gguf_open(&a, in, &msg), 0);
    assert_int_equal(gguf_open(&b, out, &msg), 0);
    assert_int_equal(gguf_kv_count(a), gguf_kv_count(b));
    uint32_t ft;
    assert_int_equal(gguf_get_u32(b, "general.file_type", &ft), 0);
    assert_int_equal(ft, 8); /* LLAMA_FTYPE_MOSTLY_Q5_0 */
    assert_int_equal(gguf_tensor_count(a), gguf_tensor_count(b));
    for (size_t i = 0; i < gguf_tensor_count(a); i++) {
        const gguf_tensor_t *ta = gguf_tensor_at(a, i), *tb = gguf_tensor_at(b, i);
        assert_int_equal(ta->name.n, tb->name.n);
        assert_memory_equal(ta->name.p, tb->name.p, ta->name.n);
        if (ta->n_dims == 1) {
            assert_int_equal(tb->type, ta->type);
            assert_memory_equal(ta->data, tb->data, ta->n_bytes);
        } else if (ta->name.n == 17 && !memcmp(ta->name.p, "token_embd.weight", 17)) {
            assert_int_equal(tb->type, GGML_Q8_0); /* kept at 8 bits without --pure */
        } else {
            assert_int_equal(tb->type, GGML_Q5_0);
        }
    }
    gguf_close(a);
    gguf_close(b);
    unlink(out);
    assert_int_not_equal(quant_file("/nonexistent.gguf", out, &o, &rep, &msg), 0);
    assert_int_not_equal(access(out, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_types),
        cmocka_unit_test(test_q8_0_block),
        cmocka_unit_test(test_q4_0_block),
        cmocka_unit_test(test_q4_1_and_q5_blocks),
        cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_writer_failures_leave_no_file),
        cmocka_unit_test(test_quant_file_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
