/* token_cache.c — what the generation path's token cache saves: the time to
 * tokenize a prompt (engine/tokenizer.c, the model's own BPE) against a hit
 * in engine/tokenizer_cache.c (hash the prompt, copy the ids out), for
 * prompts of about 70 to 4,400 tokens. Markdown rows on stdout.
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Isrc bench/token_cache.c build/libbarista_core.a \
 *      $(pkg-config --libs libuv libcjson hiredis libcurl libpcre2-8 libutf8proc yaml-0.1 \
 *        libcrypto libxxhash) -lhttp_parser -lpthread -lm -o build/bench_token_cache
 *   build/bench_token_cache models/SmolLM2-135M-Instruct.Q4_1.gguf
 *
 * Not for: the chat template's rendering (a chat hit skips that too). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_cache.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    gguf_t *g;
    tok_t *t;
    bar_msg_t m = {{0}};
    if (argc < 2 || gguf_open(&g, argv[1], &m) || tok_create(&t, g, &m)) {
        fprintf(stderr, "usage: %s MODEL.gguf (%s)\n", argv[0], m.text);
        return 1;
    }
    static const char base[] = "Brewing advice: use fifteen grams of coffee for every two "
                               "hundred and fifty millilitres of water just off the boil, "
                               "grind medium-fine for pour-over. ";
    enum { IDS_MAX = 100000, REPS = 200 };
    int32_t *ids = malloc(sizeof *ids * IDS_MAX);
    if (!ids) return 1;
    printf(
        "| prompt bytes | tokens | tokenize µs | cache hit µs | ratio |\n|---|---|---|---|---|\n");
    for (size_t copies = 2; copies <= 128; copies *= 4) {
        size_t n = copies * (sizeof base - 1);
        char *p = malloc(n + 1);
        if (!p) return 1;
        for (size_t i = 0; i < copies; i++)
            memcpy(p + i * (sizeof base - 1), base, sizeof base - 1);
        p[n] = '\0';
        size_t nt = 0;
        double t0 = now();
        for (int r = 0; r < REPS; r++)
            if (tok_encode(t, p, n, 1, 0, ids, IDS_MAX, &nt)) return 1;
        double te = (now() - t0) / REPS;
        tok_cache_t *c;
        if (tok_cache_create(&c, (size_t)16 << 20)) return 1;
        tok_cache_put(c, tok_cache_key_text(p, n, 1, 0), ids, nt);
        t0 = now();
        for (int r = 0; r < REPS; r++) {
            int32_t *o;
            size_t k;
            if (!tok_cache_get(c, tok_cache_key_text(p, n, 1, 0), &o, &k) || k != nt) return 1;
            free(o);
        }
        double th = (now() - t0) / REPS;
        printf("| %zu | %zu | %.1f | %.2f | %.0fx |\n", n, nt, te * 1e6, th * 1e6, te / th);
        tok_cache_destroy(c);
        free(p);
    }
    free(ids);
    tok_destroy(t);
    gguf_close(g);
    return 0;
}
