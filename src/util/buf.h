/* buf.h — a growable byte buffer (h2o_buffer / sds in spirit).
 *
 * Used for anything assembled piece by piece: HTTP heads, JSON bodies, SSE
 * frames, pending bytes waiting for a socket. Not for: fixed-size decode-loop
 * scratch (sized once at load) or shared immutable data (no refcount here).
 *
 * Invariants: p is NULL or heap memory of cap bytes; n <= cap; p[n] == '\0'
 * whenever cap > n, so a text buffer can be printed directly. A zeroed buf_t
 * is valid and empty. */
#ifndef BARISTA_UTIL_BUF_H
#define BARISTA_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *p;
    size_t n;   /* bytes used */
    size_t cap; /* bytes allocated */
} buf_t;

/* Make room for at least `extra` more bytes (plus a NUL). 0 or BAR_ERR_NOMEM. */
int buf_reserve(buf_t *b, size_t extra);

/* Append bytes / a C string / printf output. 0 or BAR_ERR_NOMEM. */
int buf_append(buf_t *b, const void *data, size_t len);
int buf_puts(buf_t *b, const char *s);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf_t *b, const char *fmt, va_list ap);

/* Append s[0, n) as a JSON string with its quotes: '"' and '\\' escaped,
 * control characters and DEL as \u00XX, other bytes (UTF-8 included) as
 * they are. 0 or BAR_ERR_NOMEM. */
int buf_json_str(buf_t *b, const char *s, size_t n);

/* Drop the first `len` bytes (len <= n), moving the rest to the front. */
void buf_consume(buf_t *b, size_t len);

/* Empty without freeing. */
void buf_clear(buf_t *b);

/* Free the memory; the buffer is empty and reusable afterwards. */
void buf_free(buf_t *b);

/* Hand the memory to the caller (free() it); the buffer becomes empty. May
 * return NULL when nothing was ever appended. */
char *buf_release(buf_t *b);

#endif
