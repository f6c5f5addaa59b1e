/* cache_redis_conn.c — the Redis L2's connection layer: the URL, and each
 * of its connections (conn_t) through resolve, connect, handshake, up,
 * drop and reconnect with backoff.
 *
 * Three connections, each a conn_t with its own reconnect timer: "main" for
 * GET/SET/SCAN/UNLINK/PUBLISH, the purge log (XADD/XRANGE) and the record
 * stream's XADDs; "sub" (only with on_peer_purge) parked in SUBSCRIBE; and
 * "tail" (only with on_stream) looping on XREAD BLOCK over the record
 * stream. A conn is down (ac == NULL, retry timer armed), handshaking (ac
 * set, AUTH/SELECT/PING queued) or up (PING answered). cache_redis_conn_drop()
 * is the one way we close a context ourselves; hiredis's own
 * disconnect/connect-failure callbacks are ignored for a context we already
 * dropped. A host name is resolved on libuv's thread pool on every attempt.
 *
 * Not for: what is sent once a connection is up (cache_redis.c: GET/SET,
 * purges, pub/sub, the purge log, the record stream), policy, L1, keys. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/adapters/libuv.h>

#include "cache/cache_redis_int.h"

#define HANDSHAKE_MS 1000 /* connect + AUTH/SELECT/PING must answer within this */

static void on_retry(uv_timer_t *t);

/* ---- URL ---- */

static int parse_int(const char *s, size_t n, int lo, int hi, int *out)
{
    if (n == 0 || n > 9) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cache_redis_parse_url(const char *url, cache_redis_url_t *u, bar_msg_t *msg)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!url || strncmp(url, "redis://", 8))
        return bar_fail(msg, BAR_ERR_INVALID, "--redis: '%s' is not a redis://host[:port][/db] URL",
                        url ? url : "");
    const char *p = url + 8, *end = p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = NULL;
    for (const char *q = p; q < (slash ? slash : end); q++)
        if (*q == '@') auth_end = q; /* the last '@' before the path */
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!colon)
            return bar_fail(msg, BAR_ERR_INVALID,
                            "--redis: credentials must be user:password@ or :password@");
        size_t ul = (size_t)(colon - p), pl = (size_t)(auth_end - colon - 1);
        if (ul >= sizeof u->user || pl >= sizeof u->password)
            return bar_fail(msg, BAR_ERR_INVALID, "--redis: user or password too long");
        memcpy(u->user, p, ul);
        memcpy(u->password, colon + 1, pl);
        p = auth_end + 1;
    }
    const char *hend = slash ? slash : end;
    const char *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb || rb == p + 1)
            return bar_fail(msg, BAR_ERR_INVALID, "--redis: bad [IPv6] host in '%s'", url);
        if ((size_t)(rb - p - 1) >= sizeof u->host)
            return bar_fail(msg, BAR_ERR_INVALID, "--redis: host too long");
        memcpy(u->host, p + 1, (size_t)(rb - p - 1));
        if (rb + 1 < hend) {
            if (rb[1] != ':')
                return bar_fail(msg, BAR_ERR_INVALID, "--redis: junk after ']' in '%s'", url);
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(hend - p));
        const char *he = colon ? colon : hend;
        if (he == p) return bar_fail(msg, BAR_ERR_INVALID, "--redis: no host in '%s'", url);
        if ((size_t)(he - p) >= sizeof u->host)
            return bar_fail(msg, BAR_ERR_INVALID, "--redis: host too long");
        memcpy(u->host, p, (size_t)(he - p));
        for (const char *q = p; q < he; q++)
            if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' && *q != '_')
                return bar_fail(msg, BAR_ERR_INVALID, "--redis: bad host name in '%s'", url);
        if (colon) port = colon + 1;
    }
    if (port && parse_int(port, (size_t)(hend - port), 1, 65535, &u->port))
        return bar_fail(msg, BAR_ERR_INVALID, "--redis: bad port in '%s' (1-65535)", url);
    if (slash && slash + 1 < end &&
        parse_int(slash + 1, (size_t)(end - slash - 1), 0, 100000, &u->db))
        return bar_fail(msg, BAR_ERR_INVALID, "--redis: bad database number in '%s'", url);
    return 0;
}

/* ---- connections ---- */

void cache_redis_set_error(cache_redis_t *r, const char *what, const char *detail)
{
    snprintf(r->last_error, sizeof r->last_error, "%s%s%s", what, detail ? ": " : "",
             detail ? detail : "");
}

void cache_redis_conn_retry(conn_t *c)
{
    cache_redis_t *r = c->r;
    if (r->closing) return;
    uv_timer_start(&c->retry, on_retry, c->backoff_ms, 0);
    c->backoff_ms =
        c->backoff_ms * 2 > r->o.backoff_max_ms ? r->o.backoff_max_ms : c->backoff_ms * 2;
}

void cache_redis_conn_drop(conn_t *c)
{
    redisAsyncContext *ac = c->ac;
    if (!ac) return;
    c->ac = NULL;
    c->up = 0;
    c->r->st.conn_failures++;
    redisAsyncFree(ac);
    cache_redis_conn_retry(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    if (status == REDIS_OK || c->ac != ac) return;
    /* hiredis frees ac after this returns */
    cache_redis_set_error(c->r, "connect", ac->errstr);
    c->ac = NULL;
    c->up = 0;
    c->r->st.conn_failures++;
    cache_redis_conn_retry(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    (void)status;
    if (c->ac != ac) return; /* one we dropped ourselves */
    cache_redis_set_error(c->r, "disconnected", ac->errstr[0] ? ac->errstr : NULL);
    c->ac = NULL;
    c->up = 0;
    c->r->st.conn_failures++;
    cache_redis_conn_retry(c);
}

/* AUTH / SELECT replies: an error means misconfiguration; keep retrying
 * (with backoff) so a fixed Redis is picked up. */
static void on_handshake(redisAsyncContext *ac, void *reply_, void *priv)
{
    conn_t *c = priv;
    redisReply *reply = reply_;
    if (!reply || c->ac != ac) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        cache_redis_set_error(c->r, "handshake", reply->str);
        cache_redis_conn_drop(c);
    }
}

int cache_redis_conn_up(conn_t *c, redisAsyncContext *ac, const redisReply *reply)
{
    if (!reply || c->ac != ac) return 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        cache_redis_set_error(c->r, "ping", reply->str);
        cache_redis_conn_drop(c);
        return 0;
    }
    c->up = 1;
    uv_timer_stop(&c->retry);
    c->backoff_ms = c->r->o.backoff_min_ms;
    return 1;
}

static void on_retry(uv_timer_t *t)
{
    cache_redis_conn_open(t->data);
}

/* connected at TCP level but no answer to the handshake: a hung server */
static void on_handshake_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->ac && !c->up) {
        cache_redis_set_error(c->r, "handshake", "no reply");
        cache_redis_conn_drop(c);
    }
}

/* Connect to a numeric address (hiredis would resolve a name itself,
 * synchronously, on the loop). */
static void conn_connect(conn_t *c, const char *addr)
{
    cache_redis_t *r = c->r;
    redisAsyncContext *ac = redisAsyncConnect(addr, r->url.port);
    if (!ac) {
        cache_redis_set_error(r, "connect", "out of memory");
        r->st.conn_failures++;
        cache_redis_conn_retry(c);
        return;
    }
    if (ac->err) {
        cache_redis_set_error(r, "connect", ac->errstr);
        redisAsyncFree(ac);
        r->st.conn_failures++;
        cache_redis_conn_retry(c);
        return;
    }
    ac->data = c;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        cache_redis_set_error(r, "connect", "cannot attach to the event loop");
        redisAsyncFree(ac);
        r->st.conn_failures++;
        cache_redis_conn_retry(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    uv_timer_start(&c->retry, on_handshake_timeout, HANDSHAKE_MS, 0);
    /* queued now, written once the socket connects */
    if (r->url.password[0]) {
        if (r->url.user[0])
            redisAsyncCommand(ac, on_handshake, c, "AUTH %s %s", r->url.user, r->url.password);
        else
            redisAsyncCommand(ac, on_handshake, c, "AUTH %s", r->url.password);
    }
    if (c->is_sub == 1) {
        redisAsyncCommand(ac, cache_redis_on_sub, c, "SUBSCRIBE %s", r->channel);
    } else if (c->is_sub == 2) {
        if (r->url.db) redisAsyncCommand(ac, on_handshake, c, "SELECT %d", r->url.db);
        redisAsyncCommand(ac, cache_redis_on_tail_ready, c, "PING");
    } else {
        if (r->url.db) redisAsyncCommand(ac, on_handshake, c, "SELECT %d", r->url.db);
        redisAsyncCommand(ac, cache_redis_on_main_ready, c, "PING");
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    conn_t *c = req->data;
    cache_redis_t *r = c->r;
    c->resolving = 0;
    if (r->closing) {
        if (res) uv_freeaddrinfo(res);
        if (--r->closes_pending == 0) free(r);
        return;
    }
    char addr[INET6_ADDRSTRLEN] = "";
    cache_redis_pick_addr(status, res, addr);
    if (res) uv_freeaddrinfo(res);
    if (!addr[0]) {
        cache_redis_set_error(r, "resolve", status ? uv_strerror(status) : "no address");
        r->st.conn_failures++;
        cache_redis_conn_retry(c);
        return;
    }
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    conn_connect(c, addr);
}

/* Open a connection: a numeric host at once; a name is resolved first on
 * libuv's thread pool (uv_getaddrinfo), on every attempt, so a slow DNS
 * never blocks the loop and a moved Redis is found again. */
void cache_redis_conn_open(conn_t *c)
{
    cache_redis_t *r = c->r;
    if (r->closing || c->ac || c->resolving) return;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, r->url.host, tmp) == 1 || inet_pton(AF_INET6, r->url.host, tmp) == 1) {
        conn_connect(c, r->url.host);
        return;
    }
    struct addrinfo hints = {0};
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    if (uv_getaddrinfo(r->loop, &c->gai, on_resolved, r->url.host, NULL, &hints)) {
        cache_redis_set_error(r, "resolve", "cannot start");
        r->st.conn_failures++;
        cache_redis_conn_retry(c);
        return;
    }
    c->resolving = 1;
}

void cache_redis_conn_init(cache_redis_t *r, conn_t *c, int is_sub)
{
    c->r = r;
    c->is_sub = is_sub;
    c->backoff_ms = r->o.backoff_min_ms;
    uv_timer_init(r->loop, &c->retry);
    c->retry.data = c;
}

void cache_redis_pick_addr(int status, const struct addrinfo *res, char out[46])
{
    out[0] = '\0';
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) { /* prefer IPv4, as hiredis does */
            pick = a;
            break;
        }
    if (status == 0 && pick) {
        const void *a = pick->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr;
        inet_ntop(pick->ai_family, a, out, 46);
    }
}
