/* cli_embed.c — `barista embed`: sentence embeddings from the command line.
 *
 * Reads one input per line from stdin (raw text, or with --json one JSON
 * string per line so texts may hold newlines; with --hex the hex of the bytes), embeds them in
 * batches with the BERT encoder (engine/bert.h) and prints one JSON array of
 * floats per input, in order. --ids prints the token ids instead (after the
 * model's 256-token truncation). A tool for scripts and the reference tests
 * (tests/e2e/test_embed.py); the server's path is backend_embed.
 * Not for: serving, caching. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "engine/bert.h"
#include "engine/kernels/kern.h"
#include "util/timeutil.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: barista embed [-m DIR] [-t N] [-b N] [--json | --hex] [--ids] [--repeat N]\n\n"
            "Embed each line of stdin with a BERT sentence encoder (all-MiniLM-L6-v2) and\n"
            "print one JSON array of floats per line (L2-normalised, mean pooled).\n\n"
            "  -m, --model DIR   the model folder (config.json, model.safetensors, vocab.txt);\n"
            "                    default: all-MiniLM-L6-v2 in the default model places\n"
            "  -t, --threads N   threads (default 1)\n"
            "  -b, --batch N     inputs per forward pass (default 32)\n"
            "      --json        each line is a JSON string (escapes allowed; no NUL)\n"
            "      --hex         each line is the hex of the input's bytes (any bytes)\n"
            "      --ids         print token ids instead of vectors\n"
            "      --repeat N    embed the input N times, print only timings (benchmarks):\n"
            "                    the median and best time per batch and inputs/s, on stderr\n\n"
            "Inputs longer than the model's window (256 tokens with [CLS] and [SEP]) are\n"
            "truncated as sentence-transformers does.\n");
}

typedef struct {
    char *p;
    size_t n;
} text_t;

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --repeat: embed the n inputs (in batches of `batch`) `repeat` times after
 * one warm-up round; report per-batch times and throughput on stderr. */
static int bench(bert_ctx_t *c, const bert_t *m, text_t *in, int n, int batch, int repeat)
{
    const int W = bert_max_tokens(m), D = bert_dim(m);
    int32_t *ids = malloc((size_t)n * (size_t)W * sizeof *ids);
    const int32_t **ptr = malloc((size_t)n * sizeof *ptr);
    int *lens = malloc((size_t)n * sizeof *lens);
    float *out = malloc((size_t)batch * (size_t)D * sizeof *out);
    int nb = (n + batch - 1) / batch;
    double *t = malloc((size_t)nb * (size_t)repeat * sizeof *t);
    double *cpu = malloc((size_t)nb * (size_t)repeat * sizeof *cpu);
    if (!ids || !ptr || !lens || !out || !t || !cpu) {
        fprintf(stderr, "barista embed: out of memory\n");
        return 1;
    }
    long tokens = 0;
    for (int i = 0; i < n; i++) {
        size_t k = 0;
        bert_tokenize(m, in[i].p, in[i].n, ids + (size_t)i * W, (size_t)W, &k, NULL);
        ptr[i] = ids + (size_t)i * W;
        lens[i] = (int)k;
        tokens += (long)k;
    }
    int k = 0;
    double total = 0;
    for (int r = -1; r < repeat; r++)
        for (int b0 = 0; b0 < n; b0 += batch) {
            int nn = n - b0 < batch ? n - b0 : batch;
            double t0 = time_now_mono(), c0 = cpu_seconds();
            bert_embed(c, ptr + b0, lens + b0, nn, out);
            double dt = time_now_mono() - t0;
            if (r >= 0) {
                cpu[k] = cpu_seconds() - c0;
                t[k++] = dt;
                total += dt;
            }
        }
    qsort(t, (size_t)k, sizeof *t, cmp_double);
    qsort(cpu, (size_t)k, sizeof *cpu, cmp_double);
    /* cpu: the process's CPU time per batch (all threads): on a shared machine
     * it estimates the uncontended time better than the wall clock */
    fprintf(stderr,
            "embed: %d inputs (%ld tokens) x %d, batch %d, %d threads, %s: per batch median "
            "%.3f ms, best %.3f ms, cpu median %.3f ms; %.1f inputs/s, %.0f tokens/s\n",
            n, tokens, repeat, batch, bert_ctx_threads(c), kern_level_name(), t[k / 2] * 1e3,
            t[0] * 1e3, cpu[k / 2] * 1e3, (double)n * repeat / total,
            (double)tokens * repeat / total);
    free(cpu);
    free(ids);
    free(ptr);
    free(lens);
    free(out);
    free(t);
    return 0;
}

static int flush(bert_ctx_t *c, const bert_t *m, text_t *in, int n, int ids_only, int32_t *idbuf,
                 float *vecs)
{
    const int W = bert_max_tokens(m), D = bert_dim(m);
    const int32_t *ptr[256];
    int lens[256];
    for (int i = 0; i < n; i++) {
        size_t k = 0;
        if (bert_tokenize(m, in[i].p, in[i].n, idbuf + (size_t)i * W, (size_t)W, &k, NULL)) {
            fprintf(stderr, "barista embed: out of memory\n");
            return 1;
        }
        ptr[i] = idbuf + (size_t)i * W;
        lens[i] = (int)k;
    }
    if (!ids_only && bert_embed(c, ptr, lens, n, vecs)) {
        fprintf(stderr, "barista embed: forward pass failed\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        putchar('[');
        for (int j = 0; j < (ids_only ? lens[i] : D); j++) {
            if (ids_only)
                printf(j ? ",%d" : "%d", ptr[i][j]);
            else
                printf(j ? ",%.8g" : "%.8g", (double)vecs[(size_t)i * D + j]);
        }
        puts("]");
    }
    return 0;
}

int cli_embed_main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 1, batch = 32, json = 0, hex = 0, ids_only = 0, repeat = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            dir = argv[++i];
        } else if ((!strcmp(a, "-t") || !strcmp(a, "--threads")) && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if ((!strcmp(a, "-b") || !strcmp(a, "--batch")) && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--hex")) {
            hex = 1;
        } else if (!strcmp(a, "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1) {
                fprintf(stderr, "barista embed: --repeat must be >= 1\n");
                return 2;
            }
        } else if (!strcmp(a, "--ids")) {
            ids_only = 1;
        } else {
            fprintf(stderr, "barista embed: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || batch < 1 || batch > 256) {
        fprintf(stderr, "barista embed: --threads and --batch must be in [1, 256]\n");
        return 2;
    }
    char dbuf[4096];
    if (!dir) {
        /* cli_default_embed_model() names .../all-MiniLM-L6-v2/model.safetensors */
        snprintf(dbuf, sizeof dbuf, "%s", cli_default_embed_model());
        char *slash = strrchr(dbuf, '/');
        if (slash) *slash = '\0';
        dir = dbuf;
    }
    bert_t *m = NULL;
    bar_msg_t msg = {{0}};
    if (bert_load(&m, dir, &msg)) {
        fprintf(stderr, "barista embed: %s\n", msg.text);
        return 1;
    }
    const int W = bert_max_tokens(m);
    bert_ctx_t *c = bert_ctx_create(m, batch * W, threads);
    int32_t *idbuf = malloc((size_t)batch * (size_t)W * sizeof *idbuf);
    float *vecs = malloc((size_t)batch * (size_t)bert_dim(m) * sizeof *vecs);
    int cap_in = batch + 1;
    text_t *in = calloc((size_t)cap_in, sizeof *in);
    int rc = 0;
    if (!c || !idbuf || !vecs || !in) {
        fprintf(stderr, "barista embed: out of memory\n");
        rc = 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int n = 0;
    while (!rc && (got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n') len--;
        text_t *t = &in[n];
        if (hex) {
            t->n = len / 2;
            t->p = malloc(t->n + 1);
            for (size_t i = 0; t->p && i < t->n; i++) {
                unsigned v;
                if (sscanf(line + 2 * i, "%2x", &v) != 1) {
                    fprintf(stderr, "barista embed: input %d is not hex\n", n + 1);
                    rc = 1;
                    break;
                }
                t->p[i] = (char)v;
            }
            if (rc) {
                free(t->p);
                break;
            }
        } else if (json) {
            cJSON *v = cJSON_ParseWithLength(line, len);
            if (!cJSON_IsString(v)) {
                fprintf(stderr, "barista embed: input %d is not a JSON string\n", n + 1);
                cJSON_Delete(v);
                rc = 1;
                break;
            }
            t->n = strlen(v->valuestring);
            t->p = malloc(t->n + 1);
            if (t->p) memcpy(t->p, v->valuestring, t->n + 1);
            cJSON_Delete(v);
        } else {
            t->p = malloc(len + 1);
            t->n = len;
            if (t->p) memcpy(t->p, line, len);
        }
        if (!t->p) {
            rc = 1;
            break;
        }
        if (repeat) {
            if (++n == cap_in) {
                text_t *g = realloc(in, (size_t)cap_in * 2 * sizeof *in);
                if (!g) {
                    rc = 1;
                    break;
                }
                in = g;
                cap_in *= 2;
            }
            continue;
        }
        if (++n == batch) {
            rc = flush(c, m, in, n, ids_only, idbuf, vecs);
            for (int i = 0; i < n; i++)
                free(in[i].p);
            n = 0;
        }
    }
    if (!rc && n && repeat)
        rc = bench(c, m, in, n, batch, repeat);
    else if (!rc && n)
        rc = flush(c, m, in, n, ids_only, idbuf, vecs);
    for (int i = 0; in && i < n; i++)
        free(in[i].p);
    fflush(stdout);
    free(line);
    free(in);
    free(idbuf);
    free(vecs);
    bert_ctx_free(c);
    bert_free(m);
    return rc;
}
