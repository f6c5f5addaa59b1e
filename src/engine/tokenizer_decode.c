/* tokenizer_decode.c — token ids back to bytes for the byte-level BPE
 * tokenizer: one piece (tok_piece), a whole sequence (tok_detokenize), and the
 * streaming decoder (tok_stream_*) that holds back an incomplete UTF-8
 * sequence until the next token completes it or shows it invalid (then
 * U+FFFD). Every token's bytes were precomputed at load (tokenizer.c), so
 * nothing here allocates. Not for: encoding (tokenizer_encode.c), loading. */
#include <stdbool.h>
#include <string.h>

#include "engine/tokenizer_int.h"

/* ---- decoding ----------------------------------------------------------------- */

static size_t piece_of(const tok_t *t, int id, int render_special, const char **p)
{
    if (id < 0 || id >= t->n_vocab) return 0;
    if (!render_special && (t->attr[id] & (TA_CONTROL | TA_UNKNOWN))) return 0;
    *p = t->piece + t->piece_off[id];
    return t->piece_off[id + 1] - t->piece_off[id];
}

size_t tok_piece(const tok_t *t, int id, int render_special, char *buf, size_t cap)
{
    const char *p = NULL;
    size_t n = piece_of(t, id, render_special, &p);
    if (n) memcpy(buf, p, n < cap ? n : cap);
    return n;
}

size_t tok_max_piece_len(const tok_t *t)
{
    return t->max_piece;
}

size_t tok_detokenize(const tok_t *t, const int32_t *ids, size_t n, int render_special, char *buf,
                      size_t cap)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t k = piece_of(t, ids[i], render_special, &p);
        if (total < cap && k) memcpy(buf + total, p, k < cap - total ? k : cap - total);
        total += k;
    }
    return total;
}

void tok_stream_init(tok_stream_t *s)
{
    memset(s, 0, sizeof *s);
}

size_t tok_stream_bound(const tok_t *t)
{
    return 3 * (t->max_piece + 3);
}

/* Expected sequence length for a lead byte, 0 if it cannot start one. */
static int u8_seq_len(uint8_t b)
{
    return b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
}

/* Allowed range of the second byte after lead (Unicode Table 3-7). */
static void u8_second(uint8_t lead, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    else if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
}

typedef struct {
    char *out;
    size_t cap, n;
    bool full;
} sink_t;

static void sink_put(sink_t *k, const void *p, size_t n)
{
    if (k->full || k->n + n > k->cap) {
        k->full = true;
        return;
    }
    memcpy(k->out + k->n, p, n);
    k->n += n;
}

static const char k_fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

size_t tok_stream_feed(const tok_t *t, tok_stream_t *s, int id, char *out, size_t cap)
{
    const char *p = NULL;
    size_t pl = piece_of(t, id, 0, &p);
    size_t np = s->n_pending < 4 ? s->n_pending : 0, N = np + pl;
    uint8_t pend[4];
    memcpy(pend, s->pending, np);
#define AT(j) ((j) < np ? pend[j] : (uint8_t)p[(j)-np])
    sink_t k = {out, cap, 0, false};
    s->n_pending = 0;
    size_t i = 0;
    while (i < N) {
        uint8_t b = AT(i);
        int L = u8_seq_len(b);
        if (L == 1) {
            sink_put(&k, &b, 1);
            i++;
            continue;
        }
        if (L == 0) {
            sink_put(&k, k_fffd, 3);
            i++;
            continue;
        }
        int j = 1;
        for (; j < L; j++) {
            if (i + (size_t)j >= N) { /* valid so far but incomplete: hold */
                for (size_t q = i; q < N; q++)
                    s->pending[s->n_pending++] = (char)AT(q);
                return k.n;
            }
            uint8_t c = AT(i + (size_t)j), lo = 0x80, hi = 0xBF;
            if (j == 1) u8_second(b, &lo, &hi);
            if (c < lo || c > hi) break;
        }
        if (j == L) {
            uint8_t ch[4];
            for (int q = 0; q < L; q++)
                ch[q] = AT(i + (size_t)q);
            sink_put(&k, ch, (size_t)L);
        } else {
            sink_put(&k, k_fffd, 3); /* maximal subpart [i, i + j) */
        }
        i += (size_t)j;
    }
#undef AT
    return k.n;
}

size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap)
{
    size_t n = 0;
    if (s->n_pending > 0 && cap >= 3) {
        memcpy(out, k_fffd, 3);
        n = 3;
    }
    s->n_pending = 0;
    return n;
}
