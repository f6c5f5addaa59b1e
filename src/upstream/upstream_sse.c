/* upstream_sse.c — incremental text/event-stream parsing (see
 * upstream_sse.h). Works a line at a time: bytes up to a line end are
 * appended to s->line only when the line is split across feeds; a line that
 * arrives whole in one feed is handled in place. Not for: JSON. */
#include "upstream/upstream_sse.h"

#include <string.h>

#include "util/err.h"

void upsse_init(upsse_t *s, upsse_event_fn cb, void *ud)
{
    memset(s, 0, sizeof *s);
    s->cb = cb;
    s->ud = ud;
}

/* One complete line (without its end). */
static int on_line(upsse_t *s, const char *p, size_t n)
{
    if (n == 0) { /* blank line: dispatch */
        if (!s->has_data) return 0;
        s->has_data = 0;
        int rc = s->cb(s->ud, s->data.p ? s->data.p : "", s->data.n);
        buf_clear(&s->data);
        return rc;
    }
    if (p[0] == ':') return 0; /* comment */
    const char *colon = memchr(p, ':', n);
    size_t fn = colon ? (size_t)(colon - p) : n;
    if (fn != 4 || memcmp(p, "data", 4) != 0) return 0; /* event, id, retry, unknown */
    const char *v = colon ? colon + 1 : p + n;
    size_t vn = (size_t)(p + n - v);
    if (vn && v[0] == ' ') v++, vn--;
    if (s->data.n + vn + 1 > UPSSE_LINE_MAX) return BAR_ERR_RANGE;
    if (s->has_data && buf_append(&s->data, "\n", 1)) return BAR_ERR_NOMEM;
    if (buf_append(&s->data, v, vn)) return BAR_ERR_NOMEM;
    s->has_data = 1;
    return 0;
}

int upsse_feed(upsse_t *s, const char *p, size_t n)
{
    size_t i = 0;
    if (s->after_cr && n && p[0] == '\n') i = 1; /* the LF of a CRLF split across feeds */
    s->after_cr = 0;
    while (i < n) {
        /* the line ends at the first LF or CR: memchr for both (LF is the usual end;
         * a CR before it is looked for only up to it) */
        const char *lf = memchr(p + i, '\n', n - i);
        size_t j = lf ? (size_t)(lf - p) : n;
        const char *cr = memchr(p + i, '\r', j - i);
        if (cr) j = (size_t)(cr - p);
        if (j == n) { /* no line end: keep the piece */
            if (s->line.n + (n - i) > UPSSE_LINE_MAX) return BAR_ERR_RANGE;
            if (buf_append(&s->line, p + i, n - i)) return BAR_ERR_NOMEM;
            return 0;
        }
        int rc;
        if (s->line.n) {
            if (s->line.n + (j - i) > UPSSE_LINE_MAX) return BAR_ERR_RANGE;
            if (buf_append(&s->line, p + i, j - i)) return BAR_ERR_NOMEM;
            rc = on_line(s, s->line.p, s->line.n);
            buf_clear(&s->line);
        } else {
            if (j - i > UPSSE_LINE_MAX) return BAR_ERR_RANGE;
            rc = on_line(s, p + i, j - i);
        }
        if (rc) return rc;
        if (p[j] == '\r') {
            if (j + 1 == n) {
                s->after_cr = 1;
                return 0;
            }
            if (p[j + 1] == '\n') j++;
        }
        i = j + 1;
    }
    return 0;
}

int upsse_pending(const upsse_t *s)
{
    return s->has_data || s->line.n > 0;
}

void upsse_free(upsse_t *s)
{
    buf_free(&s->line);
    buf_free(&s->data);
    s->has_data = 0;
    s->after_cr = 0;
}
