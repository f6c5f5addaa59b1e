/* cache_redis.c — Redis L2 over hiredis async + its libuv adapter (see
 * cache_redis.h for behaviour).
 *
 * This file is the tier: what goes over the connections once they are up
 * (cache_redis_conn.c opens, handshakes, drops and reconnects them). "main"
 * carries GET/SET/SCAN/UNLINK/PUBLISH, the purge log (XADD/XRANGE) and the
 * record stream's XADDs; "sub" (only with on_peer_purge) sits in SUBSCRIBE
 * and applies peers' purges; "tail" (only with on_stream) loops on XREAD
 * BLOCK over the record stream from the last id seen ("0-0" at first, so a
 * (re)connect loads what it missed).
 *
 * GET timeouts: every GET has the same timeout, so deadlines are in send
 * order; outstanding GETs sit on a FIFO and one uv_timer fires at the head's
 * deadline. A timed-out op is completed (callback with TIMEOUT) but stays
 * allocated until hiredis delivers its reply (or NULL when the context is
 * freed) — hiredis guarantees that callback, so nothing leaks.
 *
 * Stalls: GET timeouts alone cannot see a Redis that stopped answering
 * SETs, SCANs or UNLINKs. A watchdog (every stall_ms / 4) drops the main
 * connection when any command has waited stall_ms without a reply, which
 * completes every pending command (GETs as errors, purges as failed, so an
 * admin DELETE answers) and reconnects with backoff.
 * Not for: connecting (cache_redis_conn.c), policy, L1, key building. */
#include "cache/cache_redis.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <xxhash.h>

#include "cache/cache_redis_int.h"
#include "util/buf.h"

#define PURGE_POLL_MS 1000   /* how often a replica reads the purge log */
#define PURGE_LOG_MAX 100000 /* entries the log keeps (approximately) */

struct cache_redis_op {
    cache_redis_t *r;
    cache_redis_get_fn cb;
    void *user;
    cache_key_t key;
    uint64_t ns;
    uint64_t deadline;             /* uv_now ms */
    int done;                      /* completed (reply, timeout) or cancelled: cb never again */
    cache_redis_op_t *prev, *next; /* deadline FIFO, while !done */
};

typedef struct {
    cache_redis_t *r;
    cache_purge_kind_t kind;
    uint64_t ns;
    cache_key_t key;
    char pattern[128];
    int pending; /* commands awaiting replies */
    int scan_done;
    int failed;
    uint64_t deleted;
    cache_redis_done_fn done;
    void *user;
} purge_t;

static void log_poll(cache_redis_t *r);

const char *cache_l2_status_name(cache_l2_status_t s)
{
    switch (s) {
    case CACHE_L2_HIT:
        return "hit";
    case CACHE_L2_MISS:
        return "miss";
    case CACHE_L2_TIMEOUT:
        return "timeout";
    case CACHE_L2_ERROR:
        return "error";
    case CACHE_L2_GARBAGE:
        return "garbage";
    case CACHE_L2_DOWN:
        return "down";
    }
    return "?";
}

void cache_redis_on_main_ready(redisAsyncContext *ac, void *reply_, void *priv)
{
    conn_t *c = priv;
    if (!cache_redis_conn_up(c, ac, reply_)) return;
    c->r->consecutive_timeouts = 0;
    c->r->st.connects++;
    log_poll(c->r); /* catch up on purges missed while away */
}

static int hex_u64(const char *s, size_t n, uint64_t *out)
{
    if (n != 16) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; i++) {
        int d = isdigit((unsigned char)s[i])   ? s[i] - '0'
                : (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10
                                               : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* Remember a purge id (its message's first 33 bytes, hashed); 1 if it was
 * already there (applied once by pub/sub, seen again in the log). */
static int seen_before(cache_redis_t *r, const char *id)
{
    uint64_t h = XXH3_64bits(id, 33) | 1;
    for (int i = 0; i < PURGE_SEEN; i++)
        if (r->seen[i] == h) return 1;
    r->seen[r->seen_next] = h;
    r->seen_next = (r->seen_next + 1) % PURGE_SEEN;
    return 0;
}

/* "<instance>:<seq> all" | "... ns <16 hex>" | "... tenant <16 hex>" (only
 * the first 8 digits count) | "... key <32 hex>", where
 * instance and seq are 16 hex digits each: the purge's unique id. */
static void peer_message(cache_redis_t *r, const char *m, size_t n)
{
    if (n < 35 || m[16] != ':' || m[33] != ' ' || !memcmp(m, r->instance, 16)) return;
    if (seen_before(r, m)) return;
    const char *k = m + 34;
    size_t kn = n - 34;
    cache_key_t key;
    uint64_t ns;
    if (kn == 3 && !memcmp(k, "all", 3)) {
        r->st.peer_purges++;
        r->o.on_peer_purge(r->o.peer_user, CACHE_PURGE_ALL, 0, NULL);
    } else if (kn == 19 && !memcmp(k, "ns ", 3) && !hex_u64(k + 3, 16, &ns)) {
        r->st.peer_purges++;
        r->o.on_peer_purge(r->o.peer_user, CACHE_PURGE_NS, ns, NULL);
    } else if (kn == 23 && !memcmp(k, "tenant ", 7) && !hex_u64(k + 7, 16, &ns)) {
        r->st.peer_purges++;
        r->o.on_peer_purge(r->o.peer_user, CACHE_PURGE_TENANT, ns & CACHE_NS_TENANT_MASK, NULL);
    } else if (kn == 36 && !memcmp(k, "key ", 4) && !cache_key_from_hex(&key, k + 4, 32)) {
        r->st.peer_purges++;
        r->o.on_peer_purge(r->o.peer_user, CACHE_PURGE_KEY, 0, &key);
    }
}

void cache_redis_on_sub(redisAsyncContext *ac, void *reply_, void *priv)
{
    conn_t *c = priv;
    redisReply *reply = reply_;
    if (!reply || c->ac != ac) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        cache_redis_set_error(c->r, "subscribe", reply->str);
        cache_redis_conn_drop(c);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (!strcmp(kind, "subscribe")) {
        c->up = 1;
        uv_timer_stop(&c->retry);
        c->backoff_ms = c->r->o.backoff_min_ms;
    } else if (!strcmp(kind, "message") && reply->element[2]->type == REDIS_REPLY_STRING) {
        peer_message(c->r, reply->element[2]->str, reply->element[2]->len);
    }
}

/* ---- the record stream (tail connection) ---- */

static void tail_read(conn_t *c);

static void on_xread(redisAsyncContext *ac, void *reply_, void *priv)
{
    conn_t *c = priv;
    redisReply *reply = reply_;
    if (!reply || c->ac != ac) return;
    cache_redis_t *r = c->r;
    if (reply->type == REDIS_REPLY_ERROR) {
        cache_redis_set_error(r, "xread", reply->str);
        cache_redis_conn_drop(c);
        return;
    }
    /* [[stream, [[id, [field, value, ...]], ...]]] or nil */
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1) {
        redisReply *st = reply->element[0];
        if (st->type == REDIS_REPLY_ARRAY && st->elements == 2 &&
            st->element[1]->type == REDIS_REPLY_ARRAY) {
            redisReply *ents = st->element[1];
            for (size_t i = 0; i < ents->elements; i++) {
                redisReply *en = ents->element[i];
                if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
                    en->element[0]->type != REDIS_REPLY_STRING)
                    continue;
                if (en->element[0]->len < sizeof r->last_id)
                    snprintf(r->last_id, sizeof r->last_id, "%s", en->element[0]->str);
                redisReply *kv = en->element[1];
                if (kv->type != REDIS_REPLY_ARRAY) continue;
                for (size_t j = 0; j + 1 < kv->elements; j += 2)
                    if (kv->element[j]->type == REDIS_REPLY_STRING &&
                        kv->element[j + 1]->type == REDIS_REPLY_STRING &&
                        !strcmp(kv->element[j]->str, "v")) {
                        r->st.stream_reads++;
                        r->o.on_stream(r->o.stream_user, kv->element[j + 1]->str,
                                       kv->element[j + 1]->len);
                    }
                if (r->closing || c->ac != ac) return; /* the callback destroyed us */
            }
        }
    }
    tail_read(c);
}

static void tail_read(conn_t *c)
{
    cache_redis_t *r = c->r;
    if (!c->ac || r->closing) return;
    redisAsyncCommand(c->ac, on_xread, c, "XREAD COUNT 512 BLOCK 0 STREAMS %s %s", r->stream,
                      r->last_id);
}

void cache_redis_on_tail_ready(redisAsyncContext *ac, void *reply_, void *priv)
{
    conn_t *c = priv;
    if (!cache_redis_conn_up(c, ac, reply_)) return;
    tail_read(c);
}

int cache_redis_stream_add(cache_redis_t *r, const void *rec, size_t n)
{
    if (!r->main.ac || !r->main.up || r->inflight >= r->o.max_inflight) {
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    redisAsyncCommand(r->main.ac, NULL, NULL, "XADD %s MAXLEN ~ %lld * v %b", r->stream,
                      (long long)r->o.stream_maxlen, rec, n);
    r->st.stream_adds++;
    return 0;
}

/* ---- the durable purge log ----
 * Pub/sub is only the fast path: a replica whose subscriber was away (a
 * dropped connection, a Redis restart, a hung subscriber) misses messages.
 * Every purge is also appended to the stream prefix.purges, and each replica
 * reads it every PURGE_POLL_MS from the last id it saw, applying what it
 * has not applied yet, so a missed purge arrives within a poll of Redis
 * being reachable again. */
static void on_log(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    cache_redis_t *r = priv;
    redisReply *reply = reply_;
    r->log_busy = 0;
    inflight_dec(r);
    if (!reply || r->closing || reply->type != REDIS_REPLY_ARRAY) return;
    int first = !r->log_last[0];
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= sizeof r->log_last)
            continue;
        snprintf(r->log_last, sizeof r->log_last, "%s", e->element[0]->str);
        redisReply *f = e->element[1];
        /* the first read only finds where the log ends: a replica that
         * starts now has nothing older to catch up on */
        if (first || f->type != REDIS_REPLY_ARRAY || f->elements != 2 ||
            f->element[1]->type != REDIS_REPLY_STRING)
            continue;
        peer_message(r, f->element[1]->str, f->element[1]->len);
    }
    if (first && !r->log_last[0]) snprintf(r->log_last, sizeof r->log_last, "0-0");
    if (!first && reply->elements == 1000) log_poll(r); /* more waiting */
}

static void log_poll(cache_redis_t *r)
{
    if (r->closing || r->log_busy || !r->main.up || !r->o.on_peer_purge) return;
    int rc = r->log_last[0]
                 ? redisAsyncCommand(r->main.ac, on_log, r, "XRANGE %s (%s + COUNT 1000", r->log,
                                     r->log_last)
                 : redisAsyncCommand(r->main.ac, on_log, r, "XREVRANGE %s + - COUNT 1", r->log);
    if (rc != REDIS_OK) return;
    r->log_busy = 1;
    inflight_inc(r);
}

static void on_log_timer(uv_timer_t *t)
{
    log_poll(t->data);
}

/* ---- create / destroy ---- */

static int prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)p[i]) && p[i] != '_' && p[i] != '.' && p[i] != '-') return 0;
    return 1;
}

static void on_get_timer(uv_timer_t *t);

static void on_watchdog(uv_timer_t *t)
{
    cache_redis_t *r = t->data;
    if (r->closing || !r->main.ac || r->inflight <= 0) return;
    uint64_t since = r->busy_since > r->last_progress ? r->busy_since : r->last_progress;
    if (uv_now(r->loop) - since < r->o.stall_ms) return;
    r->st.trips++;
    r->consecutive_timeouts = 0;
    cache_redis_set_error(r, "stalled", "no reply within the stall bound; connection dropped");
    cache_redis_conn_drop(&r->main); /* pending commands complete now, with NULL replies */
}

cache_redis_t *cache_redis_create(uv_loop_t *loop, const char *url, const cache_redis_opts_t *opts,
                                  bar_msg_t *msg)
{
    cache_redis_url_t u;
    if (cache_redis_parse_url(url, &u, msg)) return NULL;
    cache_redis_opts_t o = opts ? *opts : (cache_redis_opts_t){0};
    if (!o.timeout_ms) o.timeout_ms = 5;
    if (!o.backoff_min_ms) o.backoff_min_ms = 100;
    if (!o.backoff_max_ms) o.backoff_max_ms = 5000;
    if (o.backoff_max_ms < o.backoff_min_ms) o.backoff_max_ms = o.backoff_min_ms;
    if (o.max_inflight <= 0) o.max_inflight = 1024;
    if (o.trip_timeouts <= 0) o.trip_timeouts = 8;
    if (!o.stall_ms) o.stall_ms = 1000;
    if (!o.prefix) o.prefix = "barista";
    if (!prefix_ok(o.prefix)) {
        bar_fail(msg, BAR_ERR_INVALID, "redis key prefix '%s' must be 1-32 of [A-Za-z0-9_.-]",
                 o.prefix);
        return NULL;
    }
    cache_redis_t *r = calloc(1, sizeof *r);
    if (!r) {
        bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->url = u;
    r->o = o;
    snprintf(r->prefix, sizeof r->prefix, "%s", o.prefix);
    r->o.prefix = r->prefix;
    snprintf(r->channel, sizeof r->channel, "%s:purge", r->prefix);
    snprintf(r->stream, sizeof r->stream, "%s:stream", r->prefix);
    snprintf(r->last_id, sizeof r->last_id, "0-0");
    if (r->o.stream_maxlen <= 0) r->o.stream_maxlen = 100000;
    /* outside prefix:* so a purge-all (SCAN prefix:*) never deletes the log */
    snprintf(r->log, sizeof r->log, "%s.purges", r->prefix);
    uint64_t seed = (uint64_t)uv_hrtime() ^ (uint64_t)(uintptr_t)r ^ ((uint64_t)getpid() << 32);
    snprintf(r->instance, sizeof r->instance, "%016llx", (unsigned long long)seed);
    snprintf(r->addr, sizeof r->addr, "%s", r->url.host);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_init(loop, &r->watchdog);
    r->watchdog.data = r;
    uint64_t every = r->o.stall_ms / 4 ? r->o.stall_ms / 4 : 1;
    uv_timer_start(&r->watchdog, on_watchdog, every, every);
    uv_unref((uv_handle_t *)&r->watchdog);
    uv_timer_init(loop, &r->log_timer);
    r->log_timer.data = r;
    if (o.on_peer_purge) {
        uv_timer_start(&r->log_timer, on_log_timer, PURGE_POLL_MS, PURGE_POLL_MS);
        uv_unref((uv_handle_t *)&r->log_timer);
    }
    cache_redis_conn_init(r, &r->main, 0);
    cache_redis_conn_init(r, &r->sub, 1);
    cache_redis_conn_init(r, &r->tailc, 2);
    cache_redis_conn_open(&r->main);
    if (o.on_peer_purge) cache_redis_conn_open(&r->sub);
    if (o.on_stream) cache_redis_conn_open(&r->tailc);
    return r;
}

static void on_handle_closed(uv_handle_t *h)
{
    cache_redis_t *r = h->data;
    if (--r->closes_pending == 0) free(r);
}

void cache_redis_destroy(cache_redis_t *r)
{
    if (!r) return;
    r->closing = 1;
    conn_t *cs[3] = {&r->main, &r->sub, &r->tailc};
    for (int i = 0; i < 3; i++) {
        conn_t *c = cs[i];
        uv_timer_stop(&c->retry);
        if (c->ac) {
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            c->up = 0;
            redisAsyncFree(ac); /* pending callbacks run now with NULL replies */
        }
    }
    /* GETs hiredis never saw cannot exist (every op is sent), so the FIFO
     * is empty now; the timer can go */
    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->watchdog);
    uv_timer_stop(&r->log_timer);
    r->closes_pending = 6; /* + the tail's retry timer */
    /* a name being resolved: its callback runs (cancelled or not) and
     * counts itself out */
    for (int i = 0; i < 3; i++)
        if (cs[i]->resolving) {
            r->closes_pending++;
            uv_cancel((uv_req_t *)&cs[i]->gai);
        }
    r->main.retry.data = r;
    r->sub.retry.data = r;
    r->tailc.retry.data = r;
    uv_close((uv_handle_t *)&r->tailc.retry, on_handle_closed);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->watchdog, on_handle_closed);
    uv_close((uv_handle_t *)&r->log_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->main.retry, on_handle_closed);
    uv_close((uv_handle_t *)&r->sub.retry, on_handle_closed);
}

/* ---- GET ---- */

static void key_name(const cache_redis_t *r, uint64_t ns, const cache_key_t *key, char *out,
                     size_t size)
{
    char hex[CACHE_KEY_HEX_LEN + 1];
    cache_key_hex(key, hex);
    snprintf(out, size, "%s:%016llx:%s", r->prefix, (unsigned long long)ns, hex);
}

void cache_redis_key_name(const cache_redis_t *r, uint64_t ns, const cache_key_t *key, char *out,
                          size_t size)
{
    key_name(r, ns, key, out, size);
}

static void fifo_remove(cache_redis_t *r, cache_redis_op_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        r->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        r->tail = op->prev;
    op->prev = op->next = NULL;
}

static void arm_timer(cache_redis_t *r)
{
    if (!r->head || r->closing) {
        uv_timer_stop(&r->timer);
        return;
    }
    uint64_t now = uv_now(r->loop);
    uint64_t wait = r->head->deadline > now ? r->head->deadline - now : 0;
    uv_timer_start(&r->timer, on_get_timer, wait, 0);
}

static void on_get_timer(uv_timer_t *t)
{
    cache_redis_t *r = t->data;
    uint64_t now = uv_now(r->loop);
    while (r->head && r->head->deadline <= now) {
        cache_redis_op_t *op = r->head;
        fifo_remove(r, op);
        op->done = 1; /* freed when hiredis calls back */
        r->st.timeouts++;
        r->consecutive_timeouts++;
        op->cb(op->user, NULL, CACHE_L2_TIMEOUT);
    }
    if (r->consecutive_timeouts >= r->o.trip_timeouts && r->main.ac) {
        /* the server accepts but does not answer (hung, SIGSTOPped, swapping) */
        r->st.trips++;
        r->consecutive_timeouts = 0;
        cache_redis_set_error(r, "no replies", "connection dropped after consecutive timeouts");
        cache_redis_conn_drop(&r->main);
    }
    arm_timer(r);
}

static void delete_garbage(cache_redis_t *r, const char *name)
{
    if (r->main.ac && r->main.up) redisAsyncCommand(r->main.ac, NULL, NULL, "UNLINK %s", name);
}

static void on_get_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    cache_redis_op_t *op = priv;
    cache_redis_t *r = op->r;
    redisReply *reply = reply_;
    inflight_dec(r);
    if (reply) r->consecutive_timeouts = 0;
    if (op->done) {
        free(op);
        return;
    }
    fifo_remove(r, op);
    op->done = 1;
    cache_entry_t *e = NULL;
    cache_l2_status_t st;
    if (!reply) {
        st = r->closing ? CACHE_L2_DOWN : CACHE_L2_ERROR;
        r->st.errors++;
    } else if (reply->type == REDIS_REPLY_NIL) {
        st = CACHE_L2_MISS;
        r->st.misses++;
    } else if (reply->type == REDIS_REPLY_STRING) {
        bar_msg_t m;
        if (cache_entry_decode(reply->str, reply->len, &e, &m) == 0 &&
            cache_key_equal(&e->key, &op->key)) {
            st = CACHE_L2_HIT;
            r->st.hits++;
        } else {
            cache_entry_release(e);
            e = NULL;
            st = CACHE_L2_GARBAGE;
            r->st.garbage++;
        }
    } else {
        st = CACHE_L2_ERROR;
        r->st.errors++;
    }
    if (st == CACHE_L2_GARBAGE) {
        char name[96];
        key_name(r, op->ns, &op->key, name, sizeof name);
        delete_garbage(r, name);
    }
    op->cb(op->user, e, st);
    free(op);
    arm_timer(r);
}

int cache_redis_get(cache_redis_t *r, const cache_key_t *key, uint64_t ns, cache_redis_get_fn cb,
                    void *user, cache_redis_op_t **opp)
{
    if (opp) *opp = NULL;
    if (r->closing || !r->main.up || r->inflight >= r->o.max_inflight) {
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    cache_redis_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    op->r = r;
    op->cb = cb;
    op->user = user;
    op->key = *key;
    op->ns = ns;
    op->deadline = uv_now(r->loop) + r->o.timeout_ms;
    char name[96];
    key_name(r, ns, key, name, sizeof name);
    if (redisAsyncCommand(r->main.ac, on_get_reply, op, "GET %s", name) != REDIS_OK) {
        free(op);
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    inflight_inc(r);
    r->st.gets++;
    op->prev = r->tail;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    if (r->head == op) arm_timer(r);
    if (opp) *opp = op;
    return 0;
}

void cache_redis_cancel(cache_redis_t *r, cache_redis_op_t *op)
{
    if (!op || op->done) return;
    fifo_remove(r, op);
    op->done = 1;
    arm_timer(r);
}

/* ---- SET ---- */

static void on_set_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    cache_redis_t *r = priv;
    redisReply *reply = reply_;
    inflight_dec(r);
    if (!reply || reply->type == REDIS_REPLY_ERROR) r->st.set_errors++;
}

int cache_redis_set(cache_redis_t *r, const cache_entry_t *e, uint64_t ttl_ms)
{
    if (e->finish != CACHE_FINISH_STOP && e->finish != CACHE_FINISH_LENGTH) return BAR_ERR_INVALID;
    if (r->closing || !r->main.up || r->inflight >= r->o.max_inflight) {
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    buf_t v = {0};
    if (cache_entry_encode(e, &v)) return BAR_ERR_NOMEM;
    char name[96];
    key_name(r, e->ns, &e->key, name, sizeof name);
    int rc;
    if (ttl_ms)
        rc = redisAsyncCommand(r->main.ac, on_set_reply, r, "SET %s %b PX %llu", name, v.p, v.n,
                               (unsigned long long)ttl_ms);
    else
        rc = redisAsyncCommand(r->main.ac, on_set_reply, r, "SET %s %b", name, v.p, v.n);
    buf_free(&v);
    if (rc != REDIS_OK) {
        r->st.skipped++;
        return BAR_ERR_BUSY;
    }
    inflight_inc(r);
    r->st.sets++;
    return 0;
}

/* ---- purge ---- */

static void purge_maybe_done(purge_t *p)
{
    if (p->pending || (!p->scan_done && !p->failed)) return;
    cache_redis_t *r = p->r;
    if (!p->failed && r->main.up) {
        char m[96], id[40];
        char hex[CACHE_KEY_HEX_LEN + 1];
        snprintf(id, sizeof id, "%s:%016llx", r->instance, (unsigned long long)++r->purge_seq);
        if (p->kind == CACHE_PURGE_ALL)
            snprintf(m, sizeof m, "%s all", id);
        else if (p->kind == CACHE_PURGE_NS)
            snprintf(m, sizeof m, "%s ns %016llx", id, (unsigned long long)p->ns);
        else if (p->kind == CACHE_PURGE_TENANT)
            snprintf(m, sizeof m, "%s tenant %016llx", id,
                     (unsigned long long)(p->ns & CACHE_NS_TENANT_MASK));
        else {
            cache_key_hex(&p->key, hex);
            snprintf(m, sizeof m, "%s key %s", id, hex);
        }
        /* durable first (the log every replica polls), then the fast path */
        redisAsyncCommand(r->main.ac, NULL, NULL, "XADD %s MAXLEN ~ %d * m %s", r->log,
                          PURGE_LOG_MAX, m);
        redisAsyncCommand(r->main.ac, NULL, NULL, "PUBLISH %s %s", r->channel, m);
    }
    int err = p->failed ? (r->closing ? BAR_ERR_CANCELLED : BAR_ERR_IO) : 0;
    p->done(p->user, err, p->deleted);
    free(p);
}

static void on_unlink(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    purge_t *p = priv;
    redisReply *reply = reply_;
    p->pending--;
    inflight_dec(p->r);
    if (!reply || reply->type != REDIS_REPLY_INTEGER)
        p->failed = 1;
    else
        p->deleted += (uint64_t)reply->integer;
    purge_maybe_done(p);
}

static void on_scan(redisAsyncContext *ac, void *reply_, void *priv)
{
    purge_t *p = priv;
    cache_redis_t *r = p->r;
    redisReply *reply = reply_;
    p->pending--;
    inflight_dec(r);
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY || p->failed || ac != r->main.ac) {
        p->failed = 1;
        purge_maybe_done(p);
        return;
    }
    redisReply *keys = reply->element[1];
    if (keys->elements) {
        size_t n = keys->elements + 1;
        const char **argv = malloc(n * sizeof *argv);
        size_t *lens = malloc(n * sizeof *lens);
        if (!argv || !lens) {
            free(argv);
            free(lens);
            p->failed = 1;
            purge_maybe_done(p);
            return;
        }
        argv[0] = "UNLINK";
        lens[0] = 6;
        for (size_t i = 0; i < keys->elements; i++) {
            argv[i + 1] = keys->element[i]->str ? keys->element[i]->str : "";
            lens[i + 1] = keys->element[i]->str ? keys->element[i]->len : 0;
        }
        if (redisAsyncCommandArgv(ac, on_unlink, p, (int)n, argv, lens) == REDIS_OK) {
            p->pending++;
            inflight_inc(r);
        } else {
            p->failed = 1;
        }
        free(argv);
        free(lens);
    }
    const char *cur = reply->element[0]->str;
    if (!strcmp(cur, "0") || p->failed) {
        p->scan_done = 1;
    } else {
        char c[32];
        snprintf(c, sizeof c, "%s", cur);
        if (redisAsyncCommand(ac, on_scan, p, "SCAN %s MATCH %s COUNT 1000", c, p->pattern) ==
            REDIS_OK) {
            p->pending++;
            inflight_inc(r);
        } else {
            p->failed = 1;
        }
    }
    purge_maybe_done(p);
}

int cache_redis_purge(cache_redis_t *r, cache_purge_kind_t kind, uint64_t ns,
                      const cache_key_t *key, cache_redis_done_fn done, void *user)
{
    if (r->closing || !r->main.up) return BAR_ERR_BUSY;
    if (kind == CACHE_PURGE_KEY && !key) return BAR_ERR_INVALID;
    purge_t *p = calloc(1, sizeof *p);
    if (!p) return BAR_ERR_NOMEM;
    p->r = r;
    p->kind = kind;
    p->ns = ns;
    if (key) p->key = *key;
    p->done = done;
    p->user = user;
    char hex[CACHE_KEY_HEX_LEN + 1];
    if (kind == CACHE_PURGE_ALL) {
        /* entry names only (the ns is always 16 hex digits): the namespace
         * secret, rate-limit buckets and the record stream under the prefix stay */
        snprintf(p->pattern, sizeof p->pattern, "%s:????????????????:*", r->prefix);
    } else if (kind == CACHE_PURGE_NS) {
        snprintf(p->pattern, sizeof p->pattern, "%s:%016llx:*", r->prefix, (unsigned long long)ns);
    } else if (kind == CACHE_PURGE_TENANT) {
        /* the tenant half is the name's first 8 hex digits: any sub after it */
        snprintf(p->pattern, sizeof p->pattern, "%s:%08llx????????:*", r->prefix,
                 (unsigned long long)(ns >> 32));
    } else {
        cache_key_hex(key, hex);
        snprintf(p->pattern, sizeof p->pattern, "%s:*:%s", r->prefix, hex);
    }
    if (redisAsyncCommand(r->main.ac, on_scan, p, "SCAN 0 MATCH %s COUNT 1000", p->pattern) !=
        REDIS_OK) {
        free(p);
        return BAR_ERR_BUSY;
    }
    p->pending = 1;
    inflight_inc(r);
    r->st.purges++;
    return 0;
}

/* ---- stats ---- */

void cache_redis_stats(const cache_redis_t *r, cache_redis_stats_t *st)
{
    *st = r->st;
    st->connected = r->main.up;
    st->subscribed = r->sub.up;
    st->tailing = r->tailc.up;
    st->inflight = r->inflight;
}

int cache_redis_connected(const cache_redis_t *r)
{
    return r->main.up;
}

const char *cache_redis_last_error(const cache_redis_t *r)
{
    return r->last_error;
}
