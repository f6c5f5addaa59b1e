/* sse.h — a Server-Sent Events writer over a streaming srv_req_t.
 *
 * Sends the event-stream head, frames events, and keeps the stream alive:
 * a `: ping` comment goes out whenever nothing was written for ping_ms (so
 * proxies do not drop a stream during a long prefill). It never blocks and
 * never queues without bound by itself: sse_writable() tells the producer
 * whether the socket can take more, and the producer holds (and coalesces)
 * its data until the connection's on_drain hook fires.
 *
 * Not for: what goes in an event (src/api/ formats OpenAI chunks), or
 * parsing SSE from upstreams (src/upstream/). */
#ifndef BARISTA_SERVER_SSE_H
#define BARISTA_SERVER_SSE_H

#include <stdint.h>
#include <uv.h>

#include "server/server.h"

typedef struct sse sse_t;

/* Start the stream on r: 200, text/event-stream, no caching, plus the
 * header lines in extra (each ending in \r\n; NULL = none). ping_ms 0 = no
 * pings. Ownership: the caller frees with sse_close. NULL on failure (the
 * request is then still unanswered). */
sse_t *sse_open(srv_req_t *r, uint64_t ping_ms, const char *extra);

/* Write bytes that are already SSE-framed ("data: ...\n\n"). */
int sse_write(sse_t *s, const char *data, size_t n);

/* Whether the socket can take more without exceeding the back-pressure bound. */
int sse_writable(sse_t *s);

/* The request went away (on_abort): stop writing to it. */
void sse_detach(sse_t *s);

/* End the HTTP response (if still attached): this finishes the request. */
int sse_end(sse_t *s);

/* Stop the ping timer and free s once libuv has closed it. Call after
 * sse_end or sse_detach. */
void sse_close(sse_t *s);

#endif
