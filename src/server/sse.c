/* sse.c — SSE framing, pings and back-pressure checks (see sse.h). */
#include "server/sse.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/timeutil.h"

struct sse {
    srv_req_t *r;
    uv_timer_t ping;
    uint64_t ping_ms;
    double last_write;
};

static void on_ping(uv_timer_t *t)
{
    sse_t *s = t->data;
    if (!s->r) return;
    double now = time_now_mono();
    if ((now - s->last_write) * 1e3 + 1 < (double)s->ping_ms) return;
    if (!srv_req_writable(s->r)) return; /* the client is not even reading: no point */
    static const char ping[] = ": ping\n\n";
    srv_stream_write(s->r, ping, sizeof ping - 1);
    s->last_write = now;
}

sse_t *sse_open(srv_req_t *r, uint64_t ping_ms, const char *extra)
{
    sse_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    char head[512];
    snprintf(head, sizeof head, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n%s",
             extra ? extra : "");
    if (srv_stream_begin(r, 200, "text/event-stream", head)) {
        free(s);
        return NULL;
    }
    s->r = r;
    s->ping_ms = ping_ms;
    s->last_write = time_now_mono();
    uv_timer_init(srv_req_loop(r), &s->ping);
    s->ping.data = s;
    if (ping_ms) {
        /* check a few times per period so a ping lands close to ping_ms of silence */
        uint64_t every = ping_ms / 4 ? ping_ms / 4 : 1;
        uv_timer_start(&s->ping, on_ping, every, every);
    }
    return s;
}

int sse_write(sse_t *s, const char *data, size_t n)
{
    if (!s->r) return -1;
    s->last_write = time_now_mono();
    return srv_stream_write(s->r, data, n);
}

int sse_writable(sse_t *s)
{
    return s->r && srv_req_writable(s->r);
}

void sse_detach(sse_t *s)
{
    s->r = NULL;
    uv_timer_stop(&s->ping);
}

int sse_end(sse_t *s)
{
    if (!s->r) return -1;
    srv_req_t *r = s->r;
    sse_detach(s);
    return srv_stream_end(r);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void sse_close(sse_t *s)
{
    if (!s) return;
    s->r = NULL;
    uv_close((uv_handle_t *)&s->ping, on_closed);
}
