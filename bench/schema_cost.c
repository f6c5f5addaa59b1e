/* schema_cost.c — the CPU cost of structured outputs outside the model
 * (bench/structured compiles and runs it against the core library):
 *   compile_us   json_schema_compile of a 50-property object schema
 *   vocab_ms     building the vocabulary trie of the model (once per engine)
 *   mask_cold_us   one token mask computed from scratch (a grammar state no
 *                  sequence has reached: a walk of the vocabulary trie)
 *   mask_warm_us   the same state's mask again (the entry it holds)
 *   mask_shared_us another sequence's state reaching the same place (the
 *                  vocabulary's shared mask cache: no walk)
 *   mask_budget_us a budget-limited mask there, below what any token can
 *                  finish in (gram_state_mask_within: from the entry's ranks)
 * Each the median of 15 runs; lines "name value". Usage: schema_cost MODEL.gguf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/tokenizer.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

static size_t piece(void *ctx, int id, char *buf, size_t cap)
{
    const tok_t *t = ctx;
    return tok_is_special(t, id) ? 0 : tok_piece(t, id, 0, buf, cap);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: schema_cost MODEL.gguf\n");
        return 2;
    }
    static char schema[16384];
    size_t n = (size_t)snprintf(schema, sizeof schema, "{\"type\":\"object\",\"properties\":{");
    static const char *types[] = {"string", "integer", "number", "boolean"};
    for (int i = 0; i < 50; i++)
        n += (size_t)snprintf(schema + n, sizeof schema - n, "%s\"field_%d\":{\"type\":\"%s\"}",
                              i ? "," : "", i, types[i % 4]);
    n += (size_t)snprintf(schema + n, sizeof schema - n, "},\"required\":[");
    for (int i = 0; i < 50; i++)
        n += (size_t)snprintf(schema + n, sizeof schema - n, "%s\"field_%d\"", i ? "," : "", i);
    snprintf(schema + n, sizeof schema - n, "],\"additionalProperties\":false}");
    double t[15];
    bar_msg_t m;
    gram_t *g = NULL;
    for (int r = 0; r < 15; r++) {
        gram_release(g);
        double t0 = now_us();
        if (json_schema_compile(schema, strlen(schema), &g, &m)) {
            fprintf(stderr, "compile: %s\n", m.text);
            return 1;
        }
        t[r] = now_us() - t0;
    }
    printf("compile_us %.1f\n", median(t, 15));

    gguf_t *gg;
    tok_t *tok;
    if (gguf_open(&gg, argv[1], &m) || tok_create(&tok, gg, &m)) {
        fprintf(stderr, "model: %s\n", m.text);
        return 1;
    }
    gram_vocab_t *v = NULL;
    for (int r = 0; r < 5; r++) {
        gram_vocab_destroy(v);
        double t0 = now_us();
        gram_vocab_create(&v, tok_n_vocab(tok), piece, tok);
        t[r] = (now_us() - t0) / 1e3;
    }
    printf("vocab_ms %.2f\n", median(t, 5));
    /* cold: a state inside a string value (the widest mask) of a grammar
     * compiled for the round, so no sequence has reached it; warm: again;
     * shared: a second state there; budget: the second state's mask when the
     * budget binds (half its shortest completion: the progress fallback) */
    const char *prefix = "{\"field_0\":\"ab";
    double tw[15], tsh[15], tb[15];
    for (int r = 0; r < 15; r++) {
        gram_t *gr;
        if (json_schema_compile(schema, strlen(schema), &gr, &m)) return 1;
        gram_state_t *s, *s2;
        gram_state_create(&s, gr);
        gram_state_create(&s2, gr);
        gram_release(gr);
        gram_state_feed(s, prefix, strlen(prefix));
        gram_state_feed(s2, prefix, strlen(prefix));
        double t0 = now_us();
        gram_state_mask(s, v);
        t[r] = now_us() - t0;
        t0 = now_us();
        gram_state_mask(s, v);
        tw[r] = now_us() - t0;
        t0 = now_us();
        gram_state_mask(s2, v);
        tsh[r] = now_us() - t0;
        int limit = gram_state_min_left(s2) / 2;
        t0 = now_us();
        gram_state_mask_within(s2, v, limit);
        tb[r] = now_us() - t0;
        gram_state_destroy(s);
        gram_state_destroy(s2);
    }
    printf("mask_cold_us %.1f\n", median(t, 15));
    printf("mask_warm_us %.2f\n", median(tw, 15));
    printf("mask_shared_us %.2f\n", median(tsh, 15));
    printf("mask_budget_us %.2f\n", median(tb, 15));
    gram_release(g);
    gram_vocab_destroy(v);
    tok_destroy(tok);
    gguf_close(gg);
    return 0;
}
