/* fuzz_json_schema.c — libFuzzer target for the JSON Schema compiler
 * (src/engine/json_schema.c) and the grammar matcher and masks it feeds
 * (src/engine/grammar.c).
 *
 * Input: a schema, then a 0xFF byte, then a text. A refused schema must come
 * with a message and no grammar; an accepted one is run on the text byte by
 * byte: a byte the matcher takes must have been allowed (gram_state_allows),
 * a refused one leaves the state unchanged, and at every step the token mask
 * over a small built-in vocabulary equals a brute-force check of each token;
 * the shortest completion (gram_state_min_left) is 0 exactly when the text
 * is complete and shrinks by at most one per byte, and a budget-limited mask
 * (gram_state_mask_within) equals a brute force of each token's shortest
 * completion. The vocabulary's mask cache (shared by every input) gets a
 * budget of a few entries, so its eviction runs too.
 * Any violation abort()s. Seeds in fuzz/corpus/json_schema/. Not for:
 * anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grammar.h"
#include "engine/json_schema.h"

static const char *const VOCAB[] = {
    "{",        "}",    "[",    "]",   "\"",  ":",    ",",     " ",    "\"a", "a\"",
    "1",        "0",    "-",    ".5",  "e+",  "true", "false", "null", "\\",  "\\u00",
    "\xc3\xa9", "\xc3", "\xa9", "\":", "{\"", "\"}",  "x",     "\n",
};
#define NV ((int)(sizeof VOCAB / sizeof VOCAB[0]))

static size_t piece(void *ctx, int id, char *buf, size_t cap)
{
    (void)ctx;
    size_t n = strlen(VOCAB[id]);
    memcpy(buf, VOCAB[id], n < cap ? n : cap);
    return n;
}

/* The shortest completion after prefix + token t, or -1 when the grammar
 * refuses it (a fresh state: states cannot be copied). */
static int dist_after(gram_t *g, const uint8_t *prefix, size_t n, int t)
{
    gram_state_t *a;
    if (gram_state_create(&a, g)) return -2;
    int d = -1;
    if (!gram_state_feed(a, prefix, n) && !gram_state_feed(a, VOCAB[t], strlen(VOCAB[t])))
        d = gram_state_min_left(a);
    gram_state_destroy(a);
    return d;
}

static void check_mask(gram_state_t *s, const gram_vocab_t *v, gram_t *g, const uint8_t *prefix,
                       size_t n)
{
    const uint64_t *m = gram_state_mask(s, v);
    if (!m) return; /* out of memory */
    for (int t = 0; t < NV; t++) {
        int want = gram_state_allows(s, VOCAB[t], strlen(VOCAB[t]));
        if (want != (int)(m[0] >> t & 1)) abort();
    }
    /* a budget keeps exactly the tokens after which the text can be finished
     * in `limit` bytes; with none, those that shorten the shortest completion */
    uint64_t all = m[0];
    int d = gram_state_min_left(s);
    int dist[NV];
    for (int t = 0; t < NV; t++)
        if ((dist[t] = all >> t & 1 ? dist_after(g, prefix, n, t) : -1) == -2) return;
    int limits[3] = {0, d, d + 3};
    for (int k = 0; k < 3; k++) {
        const uint64_t *w = gram_state_mask_within(s, v, limits[k]);
        if (!w) continue; /* out of memory */
        int fits = 0;
        for (int t = 0; t < NV; t++)
            fits |= dist[t] >= 0 && dist[t] <= limits[k];
        for (int t = 0; t < NV; t++) {
            int want =
                dist[t] >= 0 && (fits ? dist[t] <= limits[k] : dist[t] <= (d > 0 ? d - 1 : 0));
            if (want != (int)(w[0] >> t & 1)) abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gram_vocab_t *vocab;
    if (!vocab) {
        if (gram_vocab_create(&vocab, NV, piece, NULL)) abort();
        gram_vocab_set_mask_budget(vocab, 1 << 14); /* a few entries: eviction runs */
    }
    const uint8_t *sep = memchr(data, 0xFF, size);
    size_t n_schema = sep ? (size_t)(sep - data) : size;
    const uint8_t *text = sep ? sep + 1 : data + size;
    size_t n_text = sep ? size - n_schema - 1 : 0;
    gram_t *g = NULL;
    bar_msg_t msg = {{0}};
    int rc = json_schema_compile((const char *)data, n_schema, &g, &msg);
    if (rc) {
        if (g || !msg.text[0]) abort();
        return 0;
    }
    if (!g) abort();
    gram_state_t *s;
    if (gram_state_create(&s, g)) {
        gram_release(g);
        return 0;
    }
    uint8_t fed_bytes[256]; /* the bytes the state took */
    size_t n_fed = 0;
    for (size_t i = 0; i < n_text && i < 256; i++) {
        if (i < 24) check_mask(s, vocab, g, fed_bytes, n_fed);
        int done = gram_state_done(s), acc = gram_state_accepting(s);
        if (done && !acc) abort();
        int d = gram_state_min_left(s);
        if ((d == 0) != acc) abort(); /* complete: nothing left to add */
        int allowed = gram_state_allows(s, &text[i], 1);
        int fed = gram_state_feed(s, &text[i], 1) == 0;
        if (fed && !allowed) abort();
        if (!fed && (gram_state_done(s) != done || gram_state_accepting(s) != acc)) abort();
        if (done && fed) abort();                           /* nothing may follow a finished text */
        if (fed && gram_state_min_left(s) < d - 1) abort(); /* a byte finishes one byte */
        if (fed) fed_bytes[n_fed++] = text[i];
    }
    gram_state_destroy(s);
    gram_release(g);
    return 0;
}
