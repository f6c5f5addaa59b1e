/* fuzz_cache_entry.c — libFuzzer target for the cache entry decoder
 * (src/cache/cache_entry.c, version 2: n choices): the bytes a Redis tier or
 * a snapshot file hands barista, written by any replica.
 *
 * A rejected input must give BAR_ERR_FORMAT (or NOMEM) and no entry; an
 * accepted one is walked completely (chunks tile the text, logprob ranges
 * and choice indexes are in range, strings are NUL-terminated) and encodes
 * back to the very same bytes. Seeds: fuzz/corpus/cache_entry/. Not for:
 * anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cache_entry_t *e = NULL;
    bar_msg_t msg;
    int rc = cache_entry_decode(data, size, &e, &msg);
    if (rc) {
        if (e || (rc != BAR_ERR_FORMAT && rc != BAR_ERR_NOMEM) || !msg.text[0]) abort();
        return 0;
    }
    if (e->n_choices < 1 || e->n_choices > CACHE_CHOICES_MAX) abort();
    size_t off = 0;
    int lp = 0;
    for (int i = 0; i < e->n_chunks; i++) {
        const cache_chunk_t *c = &e->chunks[i];
        if (c->off != off || c->lp0 != lp || c->index < 0 || c->index >= e->n_choices) abort();
        off += c->len;
        lp += c->n_lp;
    }
    if (off != e->text_len || lp != e->n_lp || e->text[e->text_len]) abort();
    for (int i = 0; i < e->n_lp; i++) {
        if (e->lp[i].token[e->lp[i].token_len]) abort();
        for (int k = 0; k < e->lp[i].n_top; k++)
            if (e->lp[i].top[k].token[e->lp[i].top[k].len]) abort();
    }
    buf_t b = {0};
    if (cache_entry_encode(e, &b) == 0 && (b.n != size || memcmp(b.p, data, size))) abort();
    buf_free(&b);
    cache_entry_release(e);
    return 0;
}
