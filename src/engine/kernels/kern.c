/* kern.c — picks the kernel level once and forwards the public kern.h calls
 * to its function table.
 *
 * The level is the best one CPUID (and the OS's saved-register support, which
 * __builtin_cpu_supports checks) allows: avx512 needs AVX-512 F/BW/VL/DQ/VNNI
 * plus AVX2/FMA/F16C; avx2 needs AVX2/FMA/F16C. BARISTA_CPU=scalar|avx2|avx512
 * forces a level; an unknown name or a level this CPU lacks is reported on
 * stderr and the best available level is used instead.
 * Not for: any arithmetic (kern_<level>.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "engine/kernels/kern.h"
#include "engine/kernels/kern_int.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic(const kern_vtable_t *) g_vt;

static int cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    /* F16C is read from CPUID leaf 1 (ECX bit 29): clang's
     * __builtin_cpu_supports does not know "f16c". */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int cpu_has_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

const kern_vtable_t *kern_vtable_for(const char *level)
{
    if (!level) return NULL;
    if (strcmp(level, "scalar") == 0) return &kern_vtable_scalar;
    if (strcmp(level, "avx2") == 0) return cpu_has_avx2() ? &kern_vtable_avx2 : NULL;
    if (strcmp(level, "avx512") == 0) return cpu_has_avx512() ? &kern_vtable_avx512 : NULL;
    return NULL;
}

static const kern_vtable_t *best_level(void)
{
    if (cpu_has_avx512()) return &kern_vtable_avx512;
    if (cpu_has_avx2()) return &kern_vtable_avx2;
    return &kern_vtable_scalar;
}

static void init_once(void)
{
    const kern_vtable_t *vt = NULL;
    const char *want = getenv("BARISTA_CPU");
    if (want && *want) {
        vt = kern_vtable_for(want);
        if (!vt) {
            int known = !strcmp(want, "scalar") || !strcmp(want, "avx2") || !strcmp(want, "avx512");
            fprintf(stderr, "barista: BARISTA_CPU=%s %s; using %s\n", want,
                    known ? "is not supported by this CPU" : "is not a known level",
                    best_level()->name);
        }
    }
    if (!vt) vt = best_level();
    atomic_store_explicit(&g_vt, vt, memory_order_release);
}

void kern_init(void)
{
    pthread_once(&g_once, init_once);
}

static inline const kern_vtable_t *vt_get(void)
{
    const kern_vtable_t *vt = atomic_load_explicit(&g_vt, memory_order_acquire);
    if (__builtin_expect(vt == NULL, 0)) {
        kern_init();
        vt = atomic_load_explicit(&g_vt, memory_order_acquire);
    }
    return vt;
}

const char *kern_level_name(void)
{
    return vt_get()->name;
}

int kern_type_index(ggml_type_t t)
{
    switch (t) {
    case GGML_F32:
        return KT_F32;
    case GGML_F16:
        return KT_F16;
    case GGML_BF16:
        return KT_BF16;
    case GGML_Q4_0:
        return KT_Q4_0;
    case GGML_Q4_1:
        return KT_Q4_1;
    case GGML_Q5_0:
        return KT_Q5_0;
    case GGML_Q5_1:
        return KT_Q5_1;
    case GGML_Q8_0:
        return KT_Q8_0;
    default:
        return -1;
    }
}

int kern_type_supported(ggml_type_t t)
{
    return kern_type_index(t) >= 0;
}

size_t kern_row_bytes(ggml_type_t t, int n)
{
    if (n < 0) return 0;
    size_t blk;
    switch (t) {
    case GGML_F32:
        return (size_t)n * 4;
    case GGML_F16:
    case GGML_BF16:
        return (size_t)n * 2;
    case GGML_Q4_0:
        blk = sizeof(block_q4_0);
        break;
    case GGML_Q4_1:
        blk = sizeof(block_q4_1);
        break;
    case GGML_Q5_0:
        blk = sizeof(block_q5_0);
        break;
    case GGML_Q5_1:
        blk = sizeof(block_q5_1);
        break;
    case GGML_Q8_0:
        blk = sizeof(block_q8_0);
        break;
    default:
        return 0;
    }
    if (n % QK) return 0;
    return (size_t)(n / QK) * blk;
}

size_t kern_act_bytes(int n)
{
    return n > 0 ? (size_t)(n / QK) * sizeof(block_q8a) : 0;
}

void kern_quantize_act(const float *x, void *xq, int n)
{
    vt_get()->quantize_act(x, xq, n);
}

void kern_matmul(ggml_type_t wt, const void *W, int n, int r0, int r1, const void *xq,
                 const float *x, int ldx, int nb, float *Y, int ldy)
{
    int ti = kern_type_index(wt);
    if (ti < 0 || r0 >= r1 || nb <= 0 || n <= 0) return;
    vt_get()->matmul[ti](W, kern_row_bytes(wt, n), n, r0, r1, xq, x, ldx, nb, Y, ldy);
}

void kern_dequant_row(ggml_type_t t, const void *row, float *out, int n)
{
    int ti = kern_type_index(t);
    if (ti < 0 || n <= 0) return;
    vt_get()->dequant_row[ti](row, out, n);
}

void kern_dot_hh(const uint16_t *a, size_t row_stride, size_t seg_stride, int nrows,
                 const uint16_t *b, int n, int order, float *out)
{
    vt_get()->dot_hh(a, row_stride, seg_stride, nrows, b, n, order, out);
}

void kern_expf(const float *x, float *y, int n)
{
    vt_get()->expf_v(x, y, n);
}

void kern_dot_i8(const int8_t *const *rows, int nrows, const int8_t *b, int n, int32_t *out)
{
    if (nrows <= 0) return;
    vt_get()->dot_i8(rows, nrows, b, n, out);
}
