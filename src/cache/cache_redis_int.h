/* cache_redis_int.h — what the two files of the Redis L2 share: the
 * cache_redis_t and conn_t structs, the in-flight accounting the stall
 * watchdog reads, and the calls between the connection layer
 * (cache_redis_conn.c: URL, resolve, connect, handshake, backoff, drop) and
 * the tier (cache_redis.c: GET/SET/purge, pub/sub and the purge log, the
 * record stream, create/destroy). Not a public interface (cache_redis.h is). */
#ifndef BARISTA_CACHE_CACHE_REDIS_INT_H
#define BARISTA_CACHE_CACHE_REDIS_INT_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <uv.h>

#include "cache/cache_redis.h"

#define PURGE_SEEN 128

typedef struct conn {
    cache_redis_t *r;
    redisAsyncContext *ac;
    int up;
    int is_sub;
    int resolving;        /* gai in flight */
    uv_getaddrinfo_t gai; /* host name → address, on the thread pool */
    uint64_t backoff_ms;
    uv_timer_t retry;
} conn_t;

struct cache_redis {
    uv_loop_t *loop;
    cache_redis_url_t url;
    char addr[256]; /* resolved numeric address, or the host name */
    cache_redis_opts_t o;
    char prefix[33];
    char channel[48];
    char stream[48];   /* "<prefix>:stream" */
    char last_id[48];  /* the tail's position */
    char log[48];      /* prefix:purges, the durable purge log (a stream) */
    char log_last[48]; /* id of the last log entry read; "" before the first poll */
    int log_busy;      /* an XRANGE in flight */
    uv_timer_t log_timer;
    uint64_t purge_seq;
    uint64_t seen[PURGE_SEEN]; /* ids applied lately (pub/sub and log overlap) */
    int seen_next;
    char instance[17]; /* random id: skip our own purge messages */
    conn_t main, sub, tailc;
    uv_timer_t timer; /* GET deadlines */
    /* stall watchdog: any command unanswered for stall_ms drops main */
    uv_timer_t watchdog;
    uint64_t busy_since, last_progress; /* uv_now ms */
    cache_redis_op_t *head, *tail;
    int inflight;
    int consecutive_timeouts;
    int closing;
    int closes_pending;
    cache_redis_stats_t st;
    char last_error[256];
};

/* Every command we wait for (GET, SET, SCAN, UNLINK) goes through these, so
 * the watchdog sees any stall, not just GET timeouts: a hung Redis (the
 * kernel still acknowledges) that stops answering SETs would otherwise fill
 * max_inflight and switch L2 off for good. */
static inline void inflight_inc(cache_redis_t *r)
{
    if (r->inflight++ == 0) r->busy_since = uv_now(r->loop);
}

static inline void inflight_dec(cache_redis_t *r)
{
    r->inflight--;
    r->last_progress = uv_now(r->loop);
}

/* ---- cache_redis_conn.c: the connection layer ---- */

/* Record the last error (GET /v1/cache/stats shows it): "what: detail". */
void cache_redis_set_error(cache_redis_t *r, const char *what, const char *detail);

/* Set up c (not connected; its retry timer initialised) as r's connection
 * of kind is_sub: 0 main, 1 the SUBSCRIBE one, 2 the record-stream tail. */
void cache_redis_conn_init(cache_redis_t *r, conn_t *c, int is_sub);

/* Start connecting c (resolving its host first if it is a name); a no-op
 * while closing, connected or resolving. Failures retry with backoff. */
void cache_redis_conn_open(conn_t *c);

/* Arm c's reconnect timer and double its backoff (up to backoff_max_ms). */
void cache_redis_conn_retry(conn_t *c);

/* Close our context (callbacks of its pending commands run now, with NULL
 * replies) and schedule a reconnect. */
void cache_redis_conn_drop(conn_t *c);

/* The handshake's PING answered: 1 when c is up now (its backoff reset),
 * 0 when the reply is stale or an error (c dropped). */
int cache_redis_conn_up(conn_t *c, redisAsyncContext *ac, const redisReply *reply);

/* ---- cache_redis.c: what each connection does once it is up ---- */

/* hiredis callbacks queued by the handshake, priv = the conn_t: main's
 * PING (then catch up on the purge log), the SUBSCRIBE replies and
 * messages, the tail's PING (then XREAD). */
void cache_redis_on_main_ready(redisAsyncContext *ac, void *reply_, void *priv);
void cache_redis_on_sub(redisAsyncContext *ac, void *reply_, void *priv);
void cache_redis_on_tail_ready(redisAsyncContext *ac, void *reply_, void *priv);

#endif
