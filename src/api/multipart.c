/* multipart.c — multipart/form-data parsing (see multipart.h). */
#include "api/multipart.h"

#include <string.h>
#include <strings.h>

static int slice_starts_ci(http_slice_t s, const char *pre)
{
    size_t k = strlen(pre);
    return s.n >= k && !strncasecmp(s.p, pre, k);
}

static http_slice_t trim(http_slice_t s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

/* The value of parameter `key` in "a; key=value; ..." (quoted or token). */
static int param(http_slice_t v, const char *key, http_slice_t *out)
{
    size_t kl = strlen(key);
    size_t i = 0;
    while (i < v.n) {
        /* skip to the next ';' outside quotes */
        int q = 0;
        while (i < v.n && (q || v.p[i] != ';')) {
            if (v.p[i] == '"')
                q = !q;
            else if (q && v.p[i] == '\\')
                i++;
            i++;
        }
        if (i >= v.n) return 0;
        i++;
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t'))
            i++;
        if (v.n - i > kl && !strncasecmp(v.p + i, key, kl) && v.p[i + kl] == '=') {
            i += kl + 1;
            if (i < v.n && v.p[i] == '"') {
                size_t s = ++i;
                while (i < v.n && v.p[i] != '"') {
                    if (v.p[i] == '\\') i++;
                    i++;
                }
                if (i >= v.n) return -1; /* unterminated quote */
                *out = (http_slice_t){v.p + s, i - s};
                return 1;
            }
            size_t s = i;
            while (i < v.n && v.p[i] != ';' && v.p[i] != ' ' && v.p[i] != '\t')
                i++;
            *out = (http_slice_t){v.p + s, i - s};
            return 1;
        }
    }
    return 0;
}

int mp_boundary(http_slice_t ct, http_slice_t *boundary, const char **why)
{
    if (!ct.p || !slice_starts_ci(trim(ct), "multipart/form-data")) {
        *why = "Content-Type must be multipart/form-data";
        return -1;
    }
    http_slice_t b = {NULL, 0};
    if (param(ct, "boundary", &b) != 1 || b.n == 0 || b.n > 70) {
        *why = "multipart/form-data needs a boundary parameter of 1 to 70 characters";
        return -1;
    }
    *boundary = b;
    return 0;
}

static const char *find(const char *p, size_t n, const char *needle, size_t k)
{
    return k <= n ? memmem(p, n, needle, k) : NULL;
}

/* One part's header block [p, p+n): Content-Disposition and Content-Type. */
static int part_headers(const char *p, size_t n, mp_part_t *out, const char **why)
{
    int have_disp = 0;
    while (n) {
        const char *eol = find(p, n, "\r\n", 2);
        size_t ln = eol ? (size_t)(eol - p) : n;
        const char *colon = memchr(p, ':', ln);
        if (!colon) {
            *why = "a part header line has no ':'";
            return -1;
        }
        http_slice_t name = trim((http_slice_t){p, (size_t)(colon - p)});
        http_slice_t val = trim((http_slice_t){colon + 1, ln - (size_t)(colon + 1 - p)});
        if (name.n == 19 && !strncasecmp(name.p, "content-disposition", 19)) {
            if (!slice_starts_ci(val, "form-data")) {
                *why = "a part's Content-Disposition is not form-data";
                return -1;
            }
            if (param(val, "name", &out->name) != 1 || param(val, "filename", &out->filename) < 0) {
                *why = "a part's Content-Disposition has no name (or a bad quote)";
                return -1;
            }
            have_disp = 1;
        } else if (name.n == 12 && !strncasecmp(name.p, "content-type", 12)) {
            out->content_type = val;
        }
        if (!eol) break;
        p += ln + 2;
        n -= ln + 2;
    }
    if (!have_disp) {
        *why = "a part has no Content-Disposition header";
        return -1;
    }
    return 0;
}

int mp_parse(const char *body, size_t len, http_slice_t boundary, mp_part_t *parts, int max, int *n,
             const char **why)
{
    *n = 0;
    char delim[80]; /* "\r\n--" + boundary */
    if (!boundary.n || boundary.n > 70) {
        *why = "bad boundary";
        return -1;
    }
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary.p, boundary.n);
    size_t dl = boundary.n + 4;
    /* the first delimiter may open the body (no CRLF before it) */
    const char *p;
    if (len >= dl - 2 && !memcmp(body, delim + 2, dl - 2))
        p = body + dl - 2;
    else {
        p = find(body, len, delim, dl);
        if (!p) {
            *why = "the body does not contain the boundary";
            return -1;
        }
        p += dl;
    }
    const char *end = body + len;
    for (;;) {
        /* after a delimiter: "--" closes, CRLF opens a part (transport padding allowed) */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return 0;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            *why = "a boundary line is not followed by CRLF or '--'";
            return -1;
        }
        p += 2;
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) {
            *why = "a part's headers do not end with an empty line";
            return -1;
        }
        if (*n >= max) {
            *why = "too many parts";
            return -1;
        }
        mp_part_t *pt = &parts[*n];
        memset(pt, 0, sizeof *pt);
        if (part_headers(p, (size_t)(hend - p), pt, why) < 0) return -1;
        const char *data = hend + 4;
        const char *dend = find(data, (size_t)(end - data), delim, dl);
        if (!dend) {
            *why = "the closing boundary is missing";
            return -1;
        }
        pt->data = (http_slice_t){data, (size_t)(dend - data)};
        (*n)++;
        p = dend + dl;
    }
}

const mp_part_t *mp_find(const mp_part_t *parts, int n, const char *name)
{
    size_t k = strlen(name);
    for (int i = 0; i < n; i++)
        if (parts[i].name.n == k && !memcmp(parts[i].name.p, name, k)) return &parts[i];
    return NULL;
}
