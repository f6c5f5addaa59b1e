/* upstream_sse.h — an incremental parser for the Server-Sent Events stream
 * an OpenAI-compatible upstream sends (text/event-stream, WHATWG rules).
 *
 * Bytes go in as they arrive, split anywhere (inside a line, inside a CRLF);
 * each complete event's data (its "data:" lines joined with '\n') comes out
 * through a callback. Comment lines (":...") and the fields event, id and
 * retry are skipped; lines end in LF, CR or CRLF; one leading space after the
 * colon is dropped. A line longer than UPSSE_LINE_MAX is an error (a broken or
 * hostile upstream must not grow the gateway without bound).
 *
 * Not for: what the data means (backend_upstream.c parses the JSON chunks). */
#ifndef BARISTA_UPSTREAM_UPSTREAM_SSE_H
#define BARISTA_UPSTREAM_UPSTREAM_SSE_H

#include <stddef.h>

#include "util/buf.h"

#define UPSSE_LINE_MAX (1u << 20) /* bytes of one line, and of one event's data */

/* One event's data, borrowed for the call. Return 0 to go on, non-zero to
 * stop: upsse_feed returns that value at once. */
typedef int (*upsse_event_fn)(void *ud, const char *data, size_t n);

typedef struct {
    buf_t line;   /* the unfinished line */
    buf_t data;   /* the unfinished event's data */
    int has_data; /* a data: line came for the event being built */
    int after_cr; /* the last byte was CR: an LF right after it is part of that line end */
    upsse_event_fn cb;
    void *ud;
} upsse_t;

/* Start (a zeroed upsse_t is fine too, with cb/ud set). */
void upsse_init(upsse_t *s, upsse_event_fn cb, void *ud);

/* Feed p[0..n). 0; a callback's non-zero value; BAR_ERR_RANGE for a line
 * or event over UPSSE_LINE_MAX; BAR_ERR_NOMEM. After an error, feeding again
 * is undefined: free it. */
int upsse_feed(upsse_t *s, const char *p, size_t n);

/* Whether bytes of an unfinished event are buffered (a stream that ends with
 * this true was cut). */
int upsse_pending(const upsse_t *s);

void upsse_free(upsse_t *s);

#endif
