/* fuzz_upstream_chunk.c — libFuzzer target for the streamed-chunk reader
 * (src/upstream/upstream_chunk.c): whenever the scanner reads a chunk, the
 * cJSON reader (the definition) must read it too and give the same result —
 * the same flags, counts, finish_reason and text bytes — for chat and for
 * completions. The first byte picks chat (even) or completions (odd). Any
 * difference abort()s. Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "upstream/upstream_chunk.h"

static int same_num(int ha, double a, int hb, double b)
{
    if (ha != hb) return 0;
    return !ha || a == b || (a != a && b != b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int is_chat = !(data[0] & 1);
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    buf_t s1 = {0}, s2 = {0};
    upchunk_t a, b;
    int ra = upchunk_scan(p, n, is_chat, &a, &s1);
    if (ra == 0) {
        int rb = upchunk_read_cjson(p, n, is_chat, &b, &s2);
        if (rb != 0) abort();
        if (a.has_error || b.has_error) abort(); /* the scanner leaves "error" to cJSON */
        if (a.has_usage != b.has_usage || !same_num(a.has_pt, a.pt, b.has_pt, b.pt) ||
            !same_num(a.has_ct, a.ct, b.has_ct, b.ct) ||
            !same_num(a.has_cached, a.cached, b.has_cached, b.cached))
            abort();
        if (a.has_c0 != b.has_c0 || a.has_text != b.has_text || a.has_finish != b.has_finish)
            abort();
        if (a.has_finish && strcmp(a.finish, b.finish)) abort();
        if (a.has_text) {
            if (a.text_len != b.text_len || memcmp(a.text, b.text, a.text_len)) abort();
            if (memchr(a.text, 0, a.text_len) || a.text[a.text_len]) abort();
        }
    } else if (ra != 1) {
        abort();
    }
    /* the combined reader never fails where cJSON reads an object */
    upchunk_t c;
    int rc = upchunk_read(p, n, is_chat, &c, &s1);
    if (rc == 0 && c.has_text) touch(c.text, c.text_len + 1);
    buf_free(&s1);
    buf_free(&s2);
    return 0;
}
