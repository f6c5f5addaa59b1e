/* bench/index.c — the vector index (cache/vindex) on a file of vectors:
 * build time, memory, single-query latency and recall@1 against a given exact
 * answer, for a list of ef_search values. Driven by bench/index (which makes
 * the data, the exact answers and runs hnswlib on the same files); prints one
 * JSON object per line.
 *
 *   bench_index --base F --n N --queries F --nq Q --truth F --dim D
 *               [--M 16] [--efc 200] [--efs 16,32,64] [--flat 4096]
 *
 * Files are raw little-endian float32 rows (base, queries) and int32 rows
 * (truth: the exact best base row per query). --flat N also times exact
 * flat search over the first N base rows (one namespace at flat_max = N). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/vindex.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

static void *load(const char *path, size_t bytes)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench_index: cannot open %s\n", path);
        exit(1);
    }
    void *p = malloc(bytes);
    if (!p || fread(p, 1, bytes, f) != bytes) {
        fprintf(stderr, "bench_index: %s: short read (want %zu bytes)\n", path, bytes);
        exit(1);
    }
    fclose(f);
    return p;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cos_d(const float *a, const float *b, int dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (int j = 0; j < dim; j++) {
        ab += (double)a[j] * b[j];
        aa += (double)a[j] * a[j];
        bb += (double)b[j] * b[j];
    }
    return aa > 0 && bb > 0 ? ab / __builtin_sqrt(aa * bb) : 0;
}

/* Time nq single queries at ef; recall@1 against truth; for a miss, how far
 * (in cosine) the returned vector is from the exact best. */
static void run_queries(const vindex_t *v, uint64_t ns, const float *qs, int nq, int dim,
                        const int32_t *truth, int ef, const char *kind, int n, const float *base)
{
    double max_gap = 0;
    double *lat = malloc((size_t)nq * sizeof *lat), *cpu = malloc((size_t)nq * sizeof *cpu);
    int ok = 0;
    vindex_hit_t h;
    for (int i = 0; i < nq; i++) {
        double t0 = now_s(), c0 = cpu_s();
        int got = vindex_search_ef(v, ns, qs + (size_t)i * dim, 1, ef, &h);
        cpu[i] = cpu_s() - c0;
        lat[i] = now_s() - t0;
        ok += got == 1 && (int64_t)h.id == truth[i];
        if (got == 1 && (int64_t)h.id != truth[i]) {
            const float *q = qs + (size_t)i * dim;
            double gap =
                cos_d(base + (size_t)truth[i] * dim, q, dim) - cos_d(base + h.id * dim, q, dim);
            if (gap > max_gap) max_gap = gap;
        }
    }
    qsort(lat, (size_t)nq, sizeof *lat, cmp_d);
    qsort(cpu, (size_t)nq, sizeof *cpu, cmp_d);
    printf("{\"kind\":\"%s\",\"n\":%d,\"ef\":%d,\"recall1\":%.4f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"cpu_p50_us\":%.1f,\"cpu_p99_us\":%.1f,\"max_miss_gap\":%.6f}\n",
           kind, n, ef, (double)ok / nq, lat[nq / 2] * 1e6, lat[(int)(nq * 0.99)] * 1e6,
           cpu[nq / 2] * 1e6, cpu[(int)(nq * 0.99)] * 1e6, max_gap);
    fflush(stdout);
    free(lat);
    free(cpu);
}

int main(int argc, char **argv)
{
    const char *basef = NULL, *qf = NULL, *tf = NULL, *efs = "16,32,64,128";
    int n = 0, nq = 0, dim = 0, M = 16, efc = 200, flat = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *b = argv[i + 1];
        if (!strcmp(a, "--base"))
            basef = b;
        else if (!strcmp(a, "--queries"))
            qf = b;
        else if (!strcmp(a, "--truth"))
            tf = b;
        else if (!strcmp(a, "--n"))
            n = atoi(b);
        else if (!strcmp(a, "--nq"))
            nq = atoi(b);
        else if (!strcmp(a, "--dim"))
            dim = atoi(b);
        else if (!strcmp(a, "--M"))
            M = atoi(b);
        else if (!strcmp(a, "--efc"))
            efc = atoi(b);
        else if (!strcmp(a, "--efs"))
            efs = b;
        else if (!strcmp(a, "--flat"))
            flat = atoi(b);
        else {
            fprintf(stderr, "bench_index: unknown option %s\n", a);
            return 2;
        }
    }
    if (!basef || !qf || !tf || n <= 0 || nq <= 0 || dim <= 0) {
        fprintf(stderr, "usage: bench_index --base F --n N --queries F --nq Q --truth F --dim D "
                        "[--M 16] [--efc 200] [--efs 16,32] [--flat 4096]\n");
        return 2;
    }
    float *base = load(basef, (size_t)n * dim * sizeof(float));
    float *qs = load(qf, (size_t)nq * dim * sizeof(float));
    int32_t *truth = load(tf, (size_t)nq * sizeof(int32_t));
    bar_msg_t msg;
    vindex_t *v;
    vindex_config_t cfg = {.dim = dim, .M = M, .ef_construction = efc};
    if (vindex_create(&v, &cfg, &msg)) {
        fprintf(stderr, "bench_index: %s\n", msg.text);
        return 1;
    }
    long rss0 = rss_bytes();
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < n; i++)
        if (vindex_add(v, 1, (uint64_t)i, base + (size_t)i * dim)) {
            fprintf(stderr, "bench_index: add %d failed\n", i);
            return 1;
        }
    double build = now_s() - t0, cbuild = cpu_s() - c0;
    long rss1 = rss_bytes();
    vindex_stats_t st;
    vindex_stats(v, &st);
    printf("{\"kind\":\"build\",\"n\":%d,\"build_s\":%.2f,\"build_cpu_s\":%.2f,\"bytes_per_"
           "vector\":%.0f,"
           "\"rss_per_vector\":%.0f,\"graphs\":%llu}\n",
           n, build, cbuild, (double)st.bytes / n, (double)(rss1 - rss0) / n,
           (unsigned long long)st.graphs);
    fflush(stdout);
    for (const char *p = efs; *p;) {
        int ef = atoi(p);
        run_queries(v, 1, qs, nq, dim, truth, ef, "hnsw", n, base);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    if (flat > 0 && flat <= n) {
        /* exact answers within the first `flat` rows, by brute force here */
        vindex_t *fv;
        vindex_config_t fc = {.dim = dim, .flat_max = flat};
        if (vindex_create(&fv, &fc, &msg)) return 1;
        for (int i = 0; i < flat; i++)
            vindex_add(fv, 2, (uint64_t)i, base + (size_t)i * dim);
        int32_t *ft = malloc((size_t)nq * sizeof *ft);
        for (int q = 0; q < nq; q++) {
            const float *x = qs + (size_t)q * dim;
            double best = -1e30;
            for (int i = 0; i < flat; i++) {
                const float *b = base + (size_t)i * dim;
                double d = 0, bb = 0;
                for (int j = 0; j < dim; j++) {
                    d += (double)x[j] * b[j];
                    bb += (double)b[j] * b[j];
                }
                d /= bb > 0 ? __builtin_sqrt(bb) : 1;
                if (d > best) {
                    best = d;
                    ft[q] = i;
                }
            }
        }
        run_queries(fv, 2, qs, nq, dim, ft, 0, "flat", flat, base);
        free(ft);
        vindex_destroy(fv);
    }
    vindex_destroy(v);
    free(base);
    free(qs);
    free(truth);
    return 0;
}
