/* buf.c — growable byte buffer (see buf.h). */
#include "util/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

int buf_reserve(buf_t *b, size_t extra)
{
    if (extra > ((size_t)-1) / 2 - b->n) return BAR_ERR_NOMEM;
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return BAR_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf_t *b, const void *data, size_t len)
{
    if (buf_reserve(b, len)) return BAR_ERR_NOMEM;
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}

int buf_puts(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap2);
    va_end(ap2);
    if (k < 0) return BAR_ERR_INVALID;
    if ((size_t)k < sizeof tmp) return buf_append(b, tmp, (size_t)k);
    if (buf_reserve(b, (size_t)k)) return BAR_ERR_NOMEM;
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    b->n += (size_t)k;
    return 0;
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(buf_t *b, size_t len)
{
    if (len >= b->n) {
        buf_clear(b);
        return;
    }
    memmove(b->p, b->p + len, b->n - len);
    b->n -= len;
    b->p[b->n] = '\0';
}

void buf_clear(buf_t *b)
{
    b->n = 0;
    if (b->p) b->p[0] = '\0';
}

void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

char *buf_release(buf_t *b)
{
    char *p = b->p;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

int buf_json_str(buf_t *b, const char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    int bad = buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f) continue;
        bad |= buf_append(b, s + run, i - run);
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            bad |= buf_append(b, e, 2);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hx[ch >> 4], hx[ch & 15]};
            bad |= buf_append(b, e, 6);
        }
    }
    bad |= buf_append(b, s + run, n - run);
    bad |= buf_append(b, "\"", 1);
    return bad ? BAR_ERR_NOMEM : 0;
}
