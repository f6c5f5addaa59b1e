/* semantic_quality.c — precision/recall of the semantic tier's hit rule
 * (cosine similarity >= threshold AND semantic_guard_check) against plain
 * cosine, on labelled pairs, with embeddings computed elsewhere (barista's
 * /v1/embeddings or bench/semantic/embed_ref.py) and given as little-endian
 * float32 rows: row 2i = a of line i, 2i+1 = b of line i.
 *
 *   semantic_quality qqp DATA.jsonl EMB.f32 DIM FROM TO [--guard n,g,w,m,d,o,f[,x]]
 *                    [--at PLAIN,TIER]
 *       QQP: for each pair in lines [FROM, TO), store a, query with b in its
 *       own namespace; a hit is right when same == 1. Prints, per threshold,
 *       precision and recall for plain cosine and for the tier, and how many
 *       false hits each guard check removed; then the best recall at
 *       precision >= 0.95 on these lines for each, and (--at) what the
 *       thresholds PLAIN / TIER chosen on another slice give here.
 *   semantic_quality mock DATA.jsonl EMB.f32 DIM
 *       GPTCache's mock benchmark: store a of the first half, query with b of
 *       every row (nearest stored entry); a hit on the first half is right
 *       when it returns its own a, any hit on the second half is false.
 *
 * Output: markdown rows on stdout (bench/semantic/run puts them in
 * docs/BENCHMARKS.md). Not for: speed (bench/semantic/run measures that). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/semantic_guard.h"

typedef struct {
    char *a, *b;
    int same;
} pair_t;

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)sz + 1);
    if (!p || fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(p);
        return NULL;
    }
    fclose(f);
    p[sz] = 0;
    *n = (size_t)sz;
    return p;
}

static pair_t *load_pairs(const char *path, int *n_out)
{
    size_t n;
    char *s = slurp(path, &n);
    if (!s) return NULL;
    int cap = 8192, n_p = 0;
    pair_t *v = calloc((size_t)cap, sizeof *v);
    char *line = s;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *o = cJSON_Parse(line);
        if (o && n_p < cap) {
            cJSON *a = cJSON_GetObjectItem(o, "a"), *b = cJSON_GetObjectItem(o, "b");
            cJSON *same = cJSON_GetObjectItem(o, "same");
            if (cJSON_IsString(a) && cJSON_IsString(b)) {
                v[n_p].a = strdup(a->valuestring);
                v[n_p].b = strdup(b->valuestring);
                v[n_p].same = same ? (int)same->valuedouble : 1;
                n_p++;
            }
        }
        cJSON_Delete(o);
        line = nl ? nl + 1 : NULL;
    }
    free(s);
    *n_out = n_p;
    return v;
}

static float dot(const float *a, const float *b, int d)
{
    float s = 0;
    for (int i = 0; i < d; i++)
        s += a[i] * b[i];
    return s;
}

static const double THR[] = {0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985};
#define N_THR (int)(sizeof THR / sizeof THR[0])

static int parse_guard(const char *s, semantic_guard_opts_t *o)
{
    int k = sscanf(s, "%d,%d,%d,%d,%d,%lf,%lf,%d", &o->numbers, &o->negation, &o->wh, &o->names,
                   &o->max_diff, &o->min_overlap, &o->diff_frac, &o->opposite);
    return k == 7 || k == 8 ? 0 : -1;
}

static int run_qqp(pair_t *p, int n, const float *emb, int dim, int from, int to,
                   const semantic_guard_opts_t *g, const double *at)
{
    if (to > n) to = n;
    int dups = 0;
    for (int i = from; i < to; i++)
        dups += p[i].same;
    printf("QQP lines [%d, %d): %d pairs, %d duplicates; guard numbers=%d negation=%d "
           "wh=%d names=%d max_diff=%d min_overlap=%.2f diff_frac=%.2f opposite=%d\n\n",
           from, to, to - from, dups, g->numbers, g->negation, g->wh, g->names, g->max_diff,
           g->min_overlap, g->diff_frac, g->opposite);
    printf("| threshold (cosine sim) | plain precision | plain recall | tier precision | tier "
           "recall | false hits removed by guard (number / negation / question word / name / "
           "words / opposite) | right "
           "hits lost |\n|---|---|---|---|---|---|---|\n");
    for (int t = 0; t < N_THR; t++) {
        int tp = 0, fp = 0, gtp = 0, gfp = 0, lost = 0;
        int why[SEMANTIC_GUARD_N_VERDICTS] = {0};
        for (int i = from; i < to; i++) {
            float s = dot(emb + (size_t)(2 * i) * dim, emb + (size_t)(2 * i + 1) * dim, dim);
            if (s < THR[t]) continue;
            if (p[i].same)
                tp++;
            else
                fp++;
            semantic_guard_verdict_t v =
                semantic_guard_check(g, p[i].a, strlen(p[i].a), p[i].b, strlen(p[i].b));
            if (v == SEMANTIC_GUARD_PASS) {
                if (p[i].same)
                    gtp++;
                else
                    gfp++;
            } else if (!p[i].same) {
                why[v]++;
            } else {
                lost++;
            }
        }
        printf("| %.3f | %.3f | %.3f | %.3f | %.3f | %d / %d / %d / %d / %d / %d | %d |\n", THR[t],
               tp + fp ? (double)tp / (tp + fp) : 1.0, (double)tp / dups,
               gtp + gfp ? (double)gtp / (gtp + gfp) : 1.0, (double)gtp / dups,
               why[SEMANTIC_GUARD_NUMBER], why[SEMANTIC_GUARD_NEGATION], why[SEMANTIC_GUARD_WH],
               why[SEMANTIC_GUARD_NAME], why[SEMANTIC_GUARD_WORDS], why[SEMANTIC_GUARD_OPPOSITE],
               lost);
    }
    /* the best recall at precision >= 0.95 (>= 20 hits) over a fine grid,
     * for plain cosine and for the tier; and, when at[] names thresholds
     * chosen on another slice, what they give on this one */
    double best_r[2] = {-1, -1}, best_t[2] = {0, 0}, best_p[2] = {0, 0};
    double at_r[2] = {0, 0}, at_p[2] = {0, 0};
    for (int ti = 0; ti <= 40; ti++) {
        double thr = 0.80 + 0.005 * ti;
        int tp[2] = {0}, fp[2] = {0};
        for (int i = from; i < to; i++) {
            float s = dot(emb + (size_t)(2 * i) * dim, emb + (size_t)(2 * i + 1) * dim, dim);
            int pass = s >= thr - 1e-9 &&
                       semantic_guard_check(g, p[i].a, strlen(p[i].a), p[i].b, strlen(p[i].b)) ==
                           SEMANTIC_GUARD_PASS;
            int hit[2] = {s >= thr - 1e-9, pass};
            for (int k = 0; k < 2; k++) {
                if (!hit[k]) continue;
                if (p[i].same)
                    tp[k]++;
                else
                    fp[k]++;
            }
        }
        for (int k = 0; k < 2; k++) {
            double prec = tp[k] + fp[k] ? (double)tp[k] / (tp[k] + fp[k]) : 0;
            double rec = (double)tp[k] / dups;
            if (tp[k] + fp[k] >= 20 && prec >= 0.95 && rec > best_r[k]) {
                best_r[k] = rec;
                best_t[k] = thr;
                best_p[k] = prec;
            }
            if (at && fabs(thr - at[k]) < 1e-6) {
                at_r[k] = rec;
                at_p[k] = prec;
            }
        }
    }
    printf("\nBest recall at precision >= 0.95 (>= 20 hits, thresholds 0.800..1.000 by 0.005) on "
           "this slice: ");
    const char *nm[2] = {"plain cosine", "tier"};
    for (int k = 0; k < 2; k++) {
        if (best_r[k] < 0)
            printf("%s: never reaches 0.95%s", nm[k], k ? ".\n" : "; ");
        else
            printf("%s: recall %.3f at threshold %.3f (precision %.3f)%s", nm[k], best_r[k],
                   best_t[k], best_p[k], k ? ".\n" : "; ");
    }
    if (at)
        printf("\nAt the thresholds chosen on the tuning slice: plain cosine at %.3f: precision "
               "%.3f, recall %.3f; tier at %.3f: precision %.3f, recall %.3f.\n",
               at[0], at_p[0], at_r[0], at[1], at_p[1], at_r[1]);
    return 0;
}

static int run_mock(pair_t *p, int n, const float *emb, int dim, const semantic_guard_opts_t *g)
{
    int half = n / 2;
    static const double MT[] = {0.70, 0.80, 0.85, 0.90, 0.95};
    printf("paraphrase-mock: %d stored (a of rows 0..%d), %d queries (b of every row)\n\n", half,
           half - 1, n);
    printf("| threshold (cosine sim) | plain: hit %% (first half) | plain precision | plain false "
           "hits (second half) | tier: hit %% | tier precision | tier false hits |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int t = 0; t < 5; t++) {
        int hit[2] = {0}, right[2] = {0}, falseh[2] = {0};
        for (int q = 0; q < n; q++) {
            const float *qv = emb + (size_t)(2 * q + 1) * dim;
            /* candidates >= thr best first; plain takes the best, the tier
             * the best that passes the guard */
            int best = -1, gbest = -1;
            float bs = -2, gbs = -2;
            for (int s = 0; s < half; s++) {
                float sim = dot(qv, emb + (size_t)(2 * s) * dim, dim);
                if (sim < MT[t]) continue;
                if (sim > bs) bs = sim, best = s;
                if (sim > gbs && semantic_guard_check(g, p[s].a, strlen(p[s].a), p[q].b,
                                                      strlen(p[q].b)) == SEMANTIC_GUARD_PASS)
                    gbs = sim, gbest = s;
            }
            int r[2] = {best, gbest};
            for (int k = 0; k < 2; k++) {
                if (r[k] < 0) continue;
                if (q < half) {
                    hit[k]++;
                    if (r[k] == q)
                        right[k]++;
                    else
                        falseh[k]++;
                } else {
                    falseh[k]++;
                }
            }
        }
        printf("| %.2f | %.1f | %.3f | %d | %.1f | %.3f | %d |\n", MT[t], 100.0 * hit[0] / half,
               right[0] + falseh[0] ? (double)right[0] / (right[0] + falseh[0]) : 1.0, falseh[0],
               100.0 * hit[1] / half,
               right[1] + falseh[1] ? (double)right[1] / (right[1] + falseh[1]) : 1.0, falseh[1]);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s qqp|mock DATA.jsonl EMB.f32 DIM [FROM TO] [--guard n,g,m,d,o]\n",
                argv[0]);
        return 2;
    }
    int n;
    pair_t *p = load_pairs(argv[2], &n);
    if (!p) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    size_t bytes;
    float *emb = (float *)slurp(argv[3], &bytes);
    int dim = atoi(argv[4]);
    if (!emb || dim <= 0 || bytes != (size_t)n * 2 * (size_t)dim * sizeof(float)) {
        fprintf(stderr, "%s: expected %d rows of %d float32\n", argv[3], 2 * n, dim);
        return 1;
    }
    semantic_guard_opts_t g = semantic_guard_default();
    double at_buf[2], *at = NULL;
    for (int i = 5; i < argc - 1; i++) {
        if (!strcmp(argv[i], "--guard") && parse_guard(argv[i + 1], &g)) {
            fprintf(stderr, "bad --guard\n");
            return 2;
        }
        if (!strcmp(argv[i], "--at")) {
            if (sscanf(argv[i + 1], "%lf,%lf", &at_buf[0], &at_buf[1]) != 2) {
                fprintf(stderr, "bad --at\n");
                return 2;
            }
            at = at_buf;
        }
    }
    if (!strcmp(argv[1], "qqp")) {
        int from = argc > 5 ? atoi(argv[5]) : 0, to = argc > 6 ? atoi(argv[6]) : n;
        return run_qqp(p, n, emb, dim, from, to, &g, at);
    }
    return run_mock(p, n, emb, dim, &g);
}
