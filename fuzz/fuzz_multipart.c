/* fuzz_multipart.c — libFuzzer target for the multipart/form-data parser
 * (src/api/multipart.c) that POST /v1/files uses.
 *
 * Input: a first line is the Content-Type value (the boundary comes from
 * it); the rest is the body. Every part an accepted body yields must lie
 * inside the body, its name/filename/content type too, and parts must not
 * overlap or go backwards. A rejection must say why. Not for: anything but
 * fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/multipart.h"
#include "fuzz_util.h"

static int inside(http_slice_t s, const char *p, size_t n)
{
    if (!s.p) return s.n == 0;
    return s.p >= p && s.n <= n && (size_t)(s.p - p) <= n - s.n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *nl = memchr(d, '\n', size);
    size_t ctn = nl ? (size_t)(nl - d) : size;
    /* own copies, so ASan sees reads past either end */
    char *ct = malloc(ctn + 1);
    size_t bn = nl ? size - ctn - 1 : 0;
    char *body = malloc(bn + 1);
    if (!ct || !body) abort();
    memcpy(ct, d, ctn);
    if (bn) memcpy(body, nl + 1, bn);
    http_slice_t b;
    const char *why = NULL;
    if (mp_boundary((http_slice_t){ct, ctn}, &b, &why) < 0) {
        if (!why) abort();
    } else {
        if (!inside(b, ct, ctn) || b.n == 0 || b.n > 70) abort();
        mp_part_t parts[MP_MAX_PARTS];
        int n = -1;
        if (mp_parse(body, bn, b, parts, MP_MAX_PARTS, &n, &why) < 0) {
            if (!why) abort();
        } else {
            if (n < 0 || n > MP_MAX_PARTS) abort();
            const char *prev = body;
            for (int i = 0; i < n; i++) {
                const mp_part_t *p = &parts[i];
                if (!inside(p->data, body, bn) || !inside(p->name, body, bn) ||
                    !inside(p->filename, body, bn) || !inside(p->content_type, body, bn))
                    abort();
                if (p->data.p < prev) abort();
                prev = p->data.p + p->data.n;
                touch(p->data.p, p->data.n);
                touch(p->name.p, p->name.n);
                touch(p->filename.p, p->filename.n);
            }
            if (n && !mp_find(parts, n, "x") && mp_find(parts, n, "x")) abort();
        }
    }
    free(ct);
    free(body);
    return 0;
}
