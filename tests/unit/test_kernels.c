/* test_kernels.c — the kernel levels against each other and against facts.
 *
 * - handcrafted blocks of every type dequantize to known values;
 * - activation quantization is bit-identical on every level and obeys its
 *   definition (d = max|x|/127, s = d * sum q);
 * - every available SIMD level's matmul matches the scalar level for every
 *   weight type over odd shapes, sub-row ranges and strided outputs;
 * - the scalar quantized dot stays within the activation-quantization error
 *   of a float reference built from kern_dequant_row;
 * - the float helpers match on every level, and the public API dispatches. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/kernels/kern.h"
#include "engine/kernels/kern_int.h"
#include "util/fp16.h"

static const ggml_type_t TYPES[KT_COUNT] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0,
                                            GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0};
static const char *const LEVELS[] = {"avx2", "avx512"};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (uint32_t)(x >> 32);
}

static float rnd_f(float lo, float hi) /* uniform in [lo, hi) */
{
    return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f;
}

static int is_quant(ggml_type_t t)
{
    return t != GGML_F32 && t != GGML_F16 && t != GGML_BF16;
}

static void put_f16(void *p, float f)
{
    uint16_t h = fp16_from_f32(f);
    memcpy(p, &h, 2);
}

/* Random rows: random code bytes, valid fp16 scales (d may be negative). */
static void fill_weights(ggml_type_t t, void *W, int rows, int n)
{
    size_t rb = kern_row_bytes(t, n);
    uint8_t *p = W;
    if (t == GGML_F32) {
        for (size_t i = 0; i < (size_t)rows * n; i++) {
            float f = rnd_f(-1, 1);
            memcpy(p + 4 * i, &f, 4);
        }
        return;
    }
    if (t == GGML_F16 || t == GGML_BF16) {
        for (size_t i = 0; i < (size_t)rows * n; i++) {
            float f = rnd_f(-1, 1);
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t h = t == GGML_F16 ? fp16_from_f32(f) : (uint16_t)(u >> 16);
            memcpy(p + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < (size_t)rows * rb; i++)
        p[i] = (uint8_t)rnd_u32();
    size_t bs = rb / (size_t)(n / QK);
    for (size_t b = 0; b < (size_t)rows * (n / QK); b++) {
        uint8_t *blk = p + b * bs;
        put_f16(blk, rnd_f(-0.05f, 0.05f));
        if (t == GGML_Q4_1 || t == GGML_Q5_1) put_f16(blk + 2, rnd_f(-0.2f, 0.2f));
    }
}

/* Random activations with some all-zero blocks and some outliers. */
static void fill_acts(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = rnd_f(-2, 2);
    for (int k = 0; k < n / QK; k++) {
        uint32_t r = rnd_u32() % 8;
        if (r == 0)
            memset(x + k * QK, 0, QK * sizeof(float));
        else if (r == 1)
            x[k * QK + (int)(rnd_u32() % QK)] *= 40.0f;
    }
}

/* ---- facts on handcrafted blocks ---------------------------------------- */

static void test_row_bytes(void **state)
{
    (void)state;
    assert_int_equal(kern_row_bytes(GGML_Q4_0, 576), 18 * 18);
    assert_int_equal(kern_row_bytes(GGML_Q4_1, 576), 18 * 20);
    assert_int_equal(kern_row_bytes(GGML_Q5_0, 64), 2 * 22);
    assert_int_equal(kern_row_bytes(GGML_Q5_1, 64), 2 * 24);
    assert_int_equal(kern_row_bytes(GGML_Q8_0, 576), 18 * 34);
    assert_int_equal(kern_row_bytes(GGML_F32, 7), 28);
    assert_int_equal(kern_row_bytes(GGML_F16, 7), 14);
    assert_int_equal(kern_row_bytes(GGML_BF16, 7), 14);
    assert_int_equal(kern_row_bytes(GGML_Q4_1, 33), 0);
    assert_int_equal(kern_row_bytes(GGML_Q4_K, 256), 0);
    assert_int_equal(kern_act_bytes(576), 18 * 48);
    for (int i = 0; i < KT_COUNT; i++)
        assert_true(kern_type_supported(TYPES[i]));
    assert_false(kern_type_supported(GGML_Q8_1));
    assert_false(kern_type_supported(GGML_Q6_K));
}

static void test_dequant_facts(void **state)
{
    (void)state;
    float out[32];
    /* Q4_1: d = 0.5, m = -1, qs[j] = j | (15 - j) << 4 */
    block_q4_1 b41;
    put_f16(&b41.d, 0.5f);
    put_f16(&b41.m, -1.0f);
    for (int j = 0; j < 16; j++)
        b41.qs[j] = (uint8_t)(j | (15 - j) << 4);
    kern_dequant_row(GGML_Q4_1, &b41, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_float_equal(out[j], j * 0.5f - 1.0f, 0.0f);
        assert_float_equal(out[j + 16], (15 - j) * 0.5f - 1.0f, 0.0f);
    }
    /* Q4_0: d = 2, element j = (j - 8) * 2, element j + 16 = (7 - j) * 2 */
    block_q4_0 b40;
    put_f16(&b40.d, 2.0f);
    for (int j = 0; j < 16; j++)
        b40.qs[j] = (uint8_t)(j | (15 - j) << 4);
    kern_dequant_row(GGML_Q4_0, &b40, out, 32);
    assert_float_equal(out[0], -16.0f, 0.0f);
    assert_float_equal(out[15], 14.0f, 0.0f);
    assert_float_equal(out[16], 14.0f, 0.0f);
    assert_float_equal(out[31], -16.0f, 0.0f);
    /* Q5_0: d = 1, nibbles 0, qh bit j set for odd j -> element = 16*(j&1) - 16 */
    block_q5_0 b50;
    put_f16(&b50.d, 1.0f);
    memset(b50.qs, 0, sizeof b50.qs);
    uint32_t qh = 0xAAAAAAAAu;
    memcpy(b50.qh, &qh, 4); /* test host is little-endian */
    kern_dequant_row(GGML_Q5_0, &b50, out, 32);
    for (int j = 0; j < 32; j++)
        assert_float_equal(out[j], (j & 1) ? 0.0f : -16.0f, 0.0f);
    /* Q5_1: d = 0.25, m = 1, qs = 0xF0 (lo 0, hi 15), qh = bit 0 and bit 16 */
    block_q5_1 b51;
    put_f16(&b51.d, 0.25f);
    put_f16(&b51.m, 1.0f);
    memset(b51.qs, 0xF0, sizeof b51.qs);
    qh = 1u | 1u << 16;
    memcpy(b51.qh, &qh, 4);
    kern_dequant_row(GGML_Q5_1, &b51, out, 32);
    assert_float_equal(out[0], 16 * 0.25f + 1.0f, 0.0f);
    assert_float_equal(out[1], 1.0f, 0.0f);
    assert_float_equal(out[16], 31 * 0.25f + 1.0f, 0.0f);
    assert_float_equal(out[17], 15 * 0.25f + 1.0f, 0.0f);
    /* Q8_0: d = 0.125, q = j - 16 */
    block_q8_0 b80;
    put_f16(&b80.d, 0.125f);
    for (int j = 0; j < 32; j++)
        b80.qs[j] = (int8_t)(j - 16);
    kern_dequant_row(GGML_Q8_0, &b80, out, 32);
    for (int j = 0; j < 32; j++)
        assert_float_equal(out[j], (j - 16) * 0.125f, 0.0f);
    /* F16 / BF16 */
    uint16_t h[2] = {fp16_from_f32(-2.5f), 0x3F80 /* bf16 1.0 */};
    kern_dequant_row(GGML_F16, h, out, 1);
    assert_float_equal(out[0], -2.5f, 0.0f);
    kern_dequant_row(GGML_BF16, h + 1, out, 1);
    assert_float_equal(out[0], 1.0f, 0.0f);
}

/* The Q4_1 dot of a handcrafted block: d_w d_a sum(nib q) + m_w s_a, exactly. */
static void test_q4_1_dot_fact(void **state)
{
    (void)state;
    block_q4_1 w;
    put_f16(&w.d, 0.5f);
    put_f16(&w.m, -1.0f);
    for (int j = 0; j < 16; j++)
        w.qs[j] = (uint8_t)(j | (15 - j) << 4);
    /* max |x| = 127, so d = 1 and q = x rounded; the .5 cases check ties-to-even */
    static const float xv[5] = {-127.0f, -63.5f, 0.0f, 62.5f, 127.0f};
    static const int qv[5] = {-127, -64, 0, 62, 127};
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = xv[j % 5];
    for (size_t l = 0; l < 3; l++) {
        const kern_vtable_t *vt = l == 0 ? &kern_vtable_scalar : kern_vtable_for(LEVELS[l - 1]);
        if (!vt) continue;
        block_q8a a;
        vt->quantize_act(x, &a, 32);
        assert_float_equal(a.d, 1.0f, 0.0f);
        int sumq = 0;
        for (int j = 0; j < 32; j++) {
            assert_int_equal(a.qs[j], qv[j % 5]);
            sumq += a.qs[j];
        }
        assert_float_equal(a.s, a.d * (float)sumq, 0.0f);
        float y;
        vt->matmul[KT_Q4_1](&w, sizeof w, 32, 0, 1, &a, NULL, 0, 1, &y, 1);
        double ref = 0;
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (w.qs[j] & 15) * a.qs[j] + (w.qs[j] >> 4) * a.qs[j + 16];
        ref = 0.5 * a.d * isum + -1.0 * a.s;
        assert_float_equal(y, ref, 1e-5 * fabs(ref) + 1e-6);
    }
}

/* ---- activation quantization -------------------------------------------- */

static void test_quantize_act(void **state)
{
    (void)state;
    enum { N = 1536 };
    float *x = malloc(N * sizeof(float));
    block_q8a *ref = malloc(kern_act_bytes(N)), *got = malloc(kern_act_bytes(N));
    for (int rep = 0; rep < 20; rep++) {
        fill_acts(x, N);
        x[0] = 0.5f * 3.0f; /* keep some exact ties around */
        if (rep == 1)       /* a block so tiny that 127 / amax overflows: all levels agree */
            for (int i = 64; i < 96; i++)
                x[i] = (i % 3 ? 1e-38f : 0.0f) * (i % 2 ? 1.0f : -1.0f);
        kern_vtable_scalar.quantize_act(x, ref, N);
        for (int k = 0; k < N / QK; k++) {
            float amax = 0;
            int sum = 0;
            for (int i = 0; i < QK; i++)
                amax = fmaxf(amax, fabsf(x[k * QK + i]));
            float D = amax / 127.0f; /* exact scale; the block stores fp16(D) */
            assert_true(ref[k].d == fp16_to_f32(fp16_from_f32(D)));
            for (int i = 0; i < QK; i++) {
                float back = ref[k].qs[i] * D;
                assert_true(fabsf(back - x[k * QK + i]) <= 0.5f * D * 1.0001f + 1e-30f);
                sum += ref[k].qs[i];
            }
            assert_true(ref[k].s == fp16_to_f32(fp16_from_f32(D * (float)sum)));
            assert_true(ref[k].d2 == ref[k].d);
            assert_true((double)ref[k].ds == (double)ref[k].d * sum); /* exact */
        }
        for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
            const kern_vtable_t *vt = kern_vtable_for(LEVELS[l]);
            if (!vt) continue;
            memset(got, 0x55, kern_act_bytes(N));
            vt->quantize_act(x, got, N);
            assert_memory_equal(got, ref, kern_act_bytes(N));
        }
    }
    free(x);
    free(ref);
    free(got);
}

/* ---- matmul: SIMD levels vs scalar -------------------------------------- */

typedef struct {
    double max_rel; /* worst |got - ref| / magnitude seen */
} stats_t;

/* One shape for one type; checks every available level against scalar, and
 * the scalar against a float reference. */
static void check_shape(ggml_type_t t, int n, int rows, int nb, stats_t *st)
{
    int ti = kern_type_index(t);
    size_t rb = kern_row_bytes(t, n);
    int ldx = n + 3, ldy = rows + 2;
    int r0 = rows > 2 ? 1 : 0, r1 = rows;
    uint8_t *W = malloc((size_t)rows * rb);
    float *x = malloc((size_t)nb * ldx * sizeof(float));
    uint8_t *xq = malloc((size_t)nb * kern_act_bytes(n) + 1);
    float *yref = malloc((size_t)nb * ldy * sizeof(float));
    float *y = malloc((size_t)nb * ldy * sizeof(float));
    float *wf = malloc((size_t)rows * n * sizeof(float));
    double *mag = malloc((size_t)nb * rows * sizeof(double));
    fill_weights(t, W, rows, n);
    for (int b = 0; b < nb; b++)
        fill_acts(x + (size_t)b * ldx, n);
    for (int r = 0; r < rows; r++)
        kern_vtable_scalar.dequant_row[ti](W + (size_t)r * rb, wf + (size_t)r * n, n);
    if (is_quant(t))
        for (int b = 0; b < nb; b++)
            kern_vtable_scalar.quantize_act(x + (size_t)b * ldx, xq + (size_t)b * kern_act_bytes(n),
                                            n);
    for (size_t i = 0; i < (size_t)nb * ldy; i++)
        yref[i] = 12345.0f;
    kern_vtable_scalar.matmul[ti](W, rb, n, r0, r1, xq, x, ldx, nb, yref, ldy);

    /* scalar vs float reference, within the activation quantization error:
     * per element |w| * D/2 (D = exact scale, d = fp16(D), |d - D| <= 2^-11 D),
     * plus |w q| |d - D| from using d, plus |m_w| |s - D sum q| for Q4_1/Q5_1. */
    const double fp16_rel = 1.0 / 1024;
    const int asym = t == GGML_Q4_1 || t == GGML_Q5_1;
    const size_t bs = is_quant(t) ? rb / (size_t)(n / QK) : 0;
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)b * ldx;
        const block_q8a *ab = (const block_q8a *)(xq + (size_t)b * kern_act_bytes(n));
        for (int r = r0; r < r1; r++) {
            const float *w = wf + (size_t)r * n;
            double ref = 0, m = 0, qerr = 0;
            for (int i = 0; i < n; i++) {
                ref += (double)w[i] * xb[i];
                m += fabs((double)w[i] * xb[i]);
                if (is_quant(t)) {
                    const block_q8a *a = &ab[i / QK];
                    double wq = fabs((double)w[i] * a->qs[i % QK] * a->d);
                    m += wq;
                    qerr += fabs((double)w[i]) * 0.5 * a->d * (1 + fp16_rel) + wq * fp16_rel;
                    if (asym && i % QK == 0) {
                        uint16_t mh;
                        memcpy(&mh, W + (size_t)r * rb + (size_t)(i / QK) * bs + 2, 2);
                        qerr += fabs((double)fp16_to_f32(mh) * a->s) * fp16_rel;
                    }
                }
            }
            mag[(size_t)b * rows + r] = m;
            double got = yref[(size_t)b * ldy + r];
            assert_true(fabs(got - ref) <= qerr * 1.001 + 1e-5 * m + 1e-6);
        }
        for (int r = 0; r < ldy; r++)
            if (r < r0 || r >= r1) assert_float_equal(yref[(size_t)b * ldy + r], 12345.0f, 0.0f);
    }

    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
        const kern_vtable_t *vt = kern_vtable_for(LEVELS[l]);
        if (!vt) continue;
        for (size_t i = 0; i < (size_t)nb * ldy; i++)
            y[i] = 12345.0f;
        vt->matmul[ti](W, rb, n, r0, r1, xq, x, ldx, nb, y, ldy);
        for (int b = 0; b < nb; b++)
            for (int r = 0; r < ldy; r++) {
                float g = y[(size_t)b * ldy + r], e = yref[(size_t)b * ldy + r];
                if (r < r0 || r >= r1) {
                    assert_float_equal(g, 12345.0f, 0.0f);
                    continue;
                }
                double m = mag[(size_t)b * rows + r] + 1e-12;
                double rel = fabs((double)g - e) / m;
                if (rel > st->max_rel) st->max_rel = rel;
                /* quantized types: every level sums in the same (llama.cpp's)
                 * order, so the bits must be equal; float weights: close */
                if (is_quant(t) ? memcmp(&g, &e, sizeof g) != 0 : rel > 1e-5)
                    fail_msg(
                        "%s type %d n=%d rows=%d nb=%d r=%d b=%d: got %.9g want %.9g (rel %.3g)",
                        vt->name, (int)t, n, rows, nb, r, b, g, e, rel);
            }
    }
    free(W);
    free(x);
    free(xq);
    free(yref);
    free(y);
    free(wf);
    free(mag);
}

static void test_matmul_levels(void **state)
{
    (void)state;
    static const int NS[] = {32, 64, 96, 576, 1536};
    static const int ROWS[] = {1, 3, 7, 64, 129};
    static const int NBS[] = {1, 2, 3, 5, 8, 17, 64};
    for (int ti = 0; ti < KT_COUNT; ti++) {
        stats_t st = {0};
        for (size_t a = 0; a < sizeof NS / sizeof *NS; a++)
            for (size_t b = 0; b < sizeof ROWS / sizeof *ROWS; b++)
                for (size_t c = 0; c < sizeof NBS / sizeof *NBS; c++) {
                    /* keep the scalar reference affordable under ASan; the
                     * largest shapes kept still span several K chunks and
                     * row tiles with a short last one */
                    if ((long)NS[a] * ROWS[b] * NBS[c] > 4000000) continue;
                    check_shape(TYPES[ti], NS[a], ROWS[b], NBS[c], &st);
                }
        print_message("type %d: worst level-vs-scalar relative error %.3g\n", (int)TYPES[ti],
                      st.max_rel);
    }
}

/* Float weights accept any n (masked / scalar tails). */
static void test_matmul_float_odd_n(void **state)
{
    (void)state;
    static const int NS[] = {1, 7, 15, 17, 33, 100};
    for (int ti = 0; ti < 3; ti++)
        for (size_t a = 0; a < sizeof NS / sizeof *NS; a++) {
            stats_t st = {0};
            check_shape(TYPES[ti], NS[a], 5, 6, &st);
        }
}

/* ---- float helpers -------------------------------------------------------- */

/* ---- public API ------------------------------------------------------------ */

/* fp16 . fp16 in both orders and the polynomial expf: every level gives the
 * scalar level's bits; the scalar level is close to the exact values. */
static void test_exact_order_helpers(void **state)
{
    (void)state;
    enum { N = 1100, NR = 5, SS = 64 * NR + 5 }; /* rows in 64-segments, gaps between */
    size_t nseg = (N + 63) / 64;
    uint16_t *a = malloc(nseg * SS * sizeof(uint16_t)), *b = malloc(N * sizeof(uint16_t));
    float *x = malloc(N * sizeof(float)), *y0 = malloc(N * sizeof(float)),
          *y1 = malloc(N * sizeof(float));
    static const int NS[] = {0, 1, 15, 16, 17, 63, 64, 65, 128, 192, 256, 1024, 1100};
    for (int rep = 0; rep < 4; rep++) {
        for (size_t i = 0; i < nseg * SS; i++)
            a[i] = fp16_from_f32((float)(rand() % 20001 - 10000) / 3000.0f);
        for (int i = 0; i < N; i++)
            b[i] = fp16_from_f32((float)(rand() % 20001 - 10000) / 7000.0f);
        for (size_t k = 0; k < sizeof NS / sizeof *NS; k++) {
            int n = NS[k];
            /* rows r < NR: segmented (element i at r * 64 + (i / 64) * SS + i % 64,
             * as the V cache) and contiguous (at r * 64 * nseg + i, as K rows) */
            for (int layout = 0; layout < 2; layout++) {
                size_t rs = layout ? 64 * nseg : 64, ss = layout ? 64 : SS;
                int nr = NR;
                float ref[NR], got[NR];
                for (int order = KERN_ORDER_TILE; order <= KERN_ORDER_VEC; order++) {
                    kern_vtable_scalar.dot_hh(a, rs, ss, nr, b, n, order, ref);
                    for (int r = 0; r < nr; r++) {
                        double exact = 0, m = 0;
                        for (int i = 0; i < n; i++) {
                            double p = (double)fp16_to_f32(a[r * rs + (i / 64) * ss + i % 64]) *
                                       fp16_to_f32(b[i]);
                            exact += p;
                            m += fabs(p);
                        }
                        assert_true(fabs(ref[r] - exact) <= 1e-6 * m + 1e-30);
                    }
                    for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
                        const kern_vtable_t *vt = kern_vtable_for(LEVELS[l]);
                        if (!vt) continue;
                        vt->dot_hh(a, rs, ss, nr, b, n, order, got);
                        if (memcmp(got, ref, (size_t)nr * sizeof(float)))
                            fail_msg("%s dot_hh n=%d order=%d layout=%d: %.9g vs %.9g", vt->name, n,
                                     order, layout, got[0], ref[0]);
                    }
                }
            }
        }
        /* expf over its whole useful range, plus the special cases */
        for (int i = 0; i < N; i++)
            x[i] = (float)(rand() % 2000001 - 1500000) / 10000.0f; /* -150 .. 50 */
        x[0] = -INFINITY;
        x[1] = 0.0f;
        x[2] = -87.5f;
        x[3] = -103.0f;
        x[4] = 88.7f;
        x[5] = 100.0f;
        kern_vtable_scalar.expf_v(x, y0, N);
        assert_true(y0[0] == 0.0f && y0[1] == 1.0f && isinf(y0[5]));
        for (int i = 1; i < N; i++) {
            double e = exp((double)x[i]);
            if (e > 1e-37 && e < 3e38) assert_true(fabs(y0[i] - e) <= 3e-7 * e);
        }
        for (size_t l = 0; l < sizeof LEVELS / sizeof *LEVELS; l++) {
            const kern_vtable_t *vt = kern_vtable_for(LEVELS[l]);
            if (!vt) continue;
            for (int n = N - 37; n <= N; n += 37) {
                memset(y1, 0x7f, N * sizeof(float));
                vt->expf_v(x, y1, n);
                if (memcmp(y1, y0, (size_t)n * sizeof(float)))
                    fail_msg("%s expf differs from scalar (n=%d)", vt->name, n);
            }
        }
    }
    free(a);
    free(b);
    free(x);
    free(y0);
    free(y1);
}

/* int8 dots: every level equals the scalar sums (and a handwritten fact) for
 * lengths around the SIMD steps, extreme values (-128, 127) included. */
static void test_dot_i8_levels(void **state)
{
    (void)state;
    enum { R = 7, NMAX = 1100 };
    static int8_t a[R][NMAX + 1], b[NMAX + 1];
    const int8_t *rows[R];
    int32_t want[R], got[R];
    /* fact: all -128 x all -128 over 384 = 384 * 16384 */
    memset(a[0], 0x80, 384);
    memset(b, 0x80, 384);
    rows[0] = a[0];
    kern_dot_i8(rows, 1, b, 384, got);
    assert_int_equal(got[0], 384 * 16384);
    const int ns[] = {1, 15, 16, 31, 32, 63, 64, 65, 127, 128, 129, 384, 385, 768, 1100};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        for (int r = 0; r < R; r++) {
            /* odd offsets: no alignment assumed */
            rows[r] = a[r] + (r & 1);
            for (int i = 0; i < n; i++)
                a[r][i + (r & 1)] =
                    (int8_t)(r == 2 ? (i & 1 ? 127 : -128) : (int)(rnd_u32() & 0xff) - 128);
        }
        for (int i = 0; i < n; i++)
            b[i] = (int8_t)((int)(rnd_u32() & 0xff) - 128);
        kern_vtable_scalar.dot_i8(rows, R, b, n, want);
        for (int r = 0; r < R; r++) {
            int64_t s = 0;
            for (int i = 0; i < n; i++)
                s += (int64_t)rows[r][i] * b[i];
            assert_int_equal(want[r], s);
        }
        for (size_t l = 0; l < sizeof LEVELS / sizeof LEVELS[0]; l++) {
            const kern_vtable_t *vt = kern_vtable_for(LEVELS[l]);
            if (!vt) continue;
            memset(got, 0, sizeof got);
            vt->dot_i8(rows, R, b, n, got);
            assert_memory_equal(got, want, sizeof want);
        }
        kern_dot_i8(rows, R, b, n, got);
        assert_memory_equal(got, want, sizeof want);
    }
}

static void test_public_api(void **state)
{
    (void)state;
    kern_init();
    kern_init();
    const char *lv = kern_level_name();
    assert_true(!strcmp(lv, "scalar") || !strcmp(lv, "avx2") || !strcmp(lv, "avx512"));
    const char *want = getenv("BARISTA_CPU");
    if (want && kern_vtable_for(want)) assert_string_equal(lv, want);
    assert_non_null(kern_vtable_for("scalar"));
    assert_null(kern_vtable_for("sse9"));
    assert_null(kern_vtable_for(NULL));

    /* kern_matmul / kern_quantize_act agree with the selected table */
    const kern_vtable_t *vt = kern_vtable_for(lv);
    enum { N = 96, R = 10, B = 9 };
    uint8_t W[R * (N / QK) * 20];
    float x[B * N], y0[B * R], y1[B * R];
    uint8_t xq[B * (N / QK) * sizeof(block_q8a)];
    fill_weights(GGML_Q4_1, W, R, N);
    for (int b = 0; b < B; b++) {
        fill_acts(x + b * N, N);
        kern_quantize_act(x + b * N, xq + b * kern_act_bytes(N), N);
    }
    kern_matmul(GGML_Q4_1, W, N, 0, R, xq, NULL, 0, B, y0, R);
    vt->matmul[KT_Q4_1](W, kern_row_bytes(GGML_Q4_1, N), N, 0, R, xq, NULL, 0, B, y1, R);
    assert_memory_equal(y0, y1, sizeof y0);
    /* empty ranges write nothing */
    y0[0] = 7.0f;
    kern_matmul(GGML_Q4_1, W, N, 3, 3, xq, NULL, 0, B, y0, R);
    kern_matmul(GGML_Q4_1, W, N, 0, R, xq, NULL, 0, 0, y0, R);
    assert_float_equal(y0[0], 7.0f, 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_bytes),           cmocka_unit_test(test_dequant_facts),
        cmocka_unit_test(test_q4_1_dot_fact),       cmocka_unit_test(test_quantize_act),
        cmocka_unit_test(test_matmul_levels),       cmocka_unit_test(test_matmul_float_odd_n),
        cmocka_unit_test(test_exact_order_helpers), cmocka_unit_test(test_public_api),
        cmocka_unit_test(test_dot_i8_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
