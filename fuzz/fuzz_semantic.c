/* fuzz_semantic.c — libFuzzer target for the semantic tier's two parsers:
 * the record decoder (semantic_rec_decode: what other replicas write to the
 * Redis stream) and the guard's text parser (semantic_guard_check).
 *
 * The whole input is decoded as a record; an accepted one is checked against
 * the header's promises (lengths in bounds, a finite non-zero vector, a known
 * type and kind) and re-encoded, which must give the same bytes back. The
 * input is also split at its first NUL into two texts for the guard, whose
 * verdict must be a known one and symmetric. Any violation abort()s. Not
 * for: anything but fuzzing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/semantic.h"
#include "fuzz_util.h"

static float vbuf[1024];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semantic_rec_t r;
    bar_msg_t m = {{0}};
    if (semantic_rec_decode(data, size, &r, vbuf, 1024, &m) == 0) {
        buf_t b = {0};
        if (r.type == SEMANTIC_REC_ENTRY) {
            if (r.dim < 1 || r.dim > 1024 || r.e.text_len > SEMANTIC_TEXT_MAX) abort();
            double n = 0;
            for (int i = 0; i < r.dim; i++)
                n += (double)r.e.vec[i] * r.e.vec[i];
            if (!(n > 0) || !isfinite(n)) abort();
            touch(r.e.text, r.e.text_len);
            if (semantic_rec_entry(&b, &r.e, r.dim)) abort();
        } else if (r.type == SEMANTIC_REC_PURGE) {
            if ((unsigned)r.kind > CACHE_PURGE_TENANT) abort();
            if (semantic_rec_purge(&b, r.kind, r.ns, &r.key)) abort();
        } else {
            abort();
        }
        if (b.n != size || memcmp(b.p, data, size)) abort();
        buf_free(&b);
    } else if (!m.text[0]) {
        abort();
    }
    const char *a = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t na = nul ? (size_t)(nul - data) : size;
    const char *t = nul ? (const char *)nul + 1 : "";
    size_t nt = nul ? size - na - 1 : 0;
    semantic_guard_verdict_t v1 = semantic_guard_check(NULL, a, na, t, nt);
    semantic_guard_verdict_t v2 = semantic_guard_check(NULL, t, nt, a, na);
    if ((unsigned)v1 >= SEMANTIC_GUARD_N_VERDICTS || v1 != v2) abort();
    return 0;
}
