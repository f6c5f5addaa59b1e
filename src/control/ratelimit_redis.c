/* ratelimit_redis.c — shared rpm/tpm limits and concurrency cap: one Lua
 * script per check on our own hiredis connection over libuv (resolved off
 * the loop with uv_getaddrinfo, reconnected on a timer), each check bounded
 * by a timer. The concurrency cap is a sorted set of leases per tenant
 * (member: this replica's id and a counter; score: when it expires, ms of
 * Redis's clock): a check drops the expired ones, counts the rest and adds
 * one; this replica renews its live leases every LEASE_RENEW_MS and removes
 * one when a request ends, so a replica that dies without ending its
 * requests frees their places within LEASE_MS.
 * Not for: the local limiter (ratelimit.c), the response cache's Redis. */
#include "control/ratelimit_redis.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache_redis.h" /* cache_redis_parse_url: one URL syntax for --redis */
#include "util/dlist.h"

#define RETRY_MS 500     /* reconnect period */
#define MAX_INFLIGHT 256 /* more checks than this waiting: decide locally */
#define STALL_TIMEOUTS 3 /* this many checks in a row past their wait: drop the connection */
#define LEASE_MS 10000   /* a concurrency lease lives this long unless renewed */
#define LEASE_RENEW_MS 3000

/* GCRA over two TATs (ms, Redis's clock) and the concurrency leases
 * (KEYS[3], a sorted set). ARGV: rpm, tpm, tokens, max_concurrency, the lease
 * member, the lease's life in ms. Returns {refused 0|1 requests|2 tokens|3
 * concurrency, retry_ms, req_used_ms, tok_used_ms, too_large}. A refused
 * request charges nothing and takes no lease. */
static const char CHECK_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local conc, lease = tonumber(ARGV[4]), tonumber(ARGV[6])\n"
    "local W = 60000\n"
    "local tr = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local tt = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "local nr, nt = tr, tt\n"
    "local refused, retry, big = 0, 0, 0\n"
    "if rpm > 0 then\n"
    "  nr = math.max(tr, now) + W / rpm\n"
    "  if nr - now > W + 0.001 then refused = 1; retry = nr - now - W end\n"
    "end\n"
    "if refused == 0 and tpm > 0 then\n"
    "  if cost > tpm then refused = 2; big = 1; retry = W\n"
    "  else\n"
    "    nt = math.max(tt, now) + cost * W / tpm\n"
    "    if nt - now > W + 0.001 then refused = 2; retry = nt - now - W end\n"
    "  end\n"
    "end\n"
    "if refused == 0 and conc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[3]) >= conc then refused = 3; retry = 1000 end\n"
    "end\n"
    "if refused == 0 then\n"
    "  if conc > 0 then redis.call('ZADD', KEYS[3], now + lease, ARGV[5]); "
    "redis.call('PEXPIRE', KEYS[3], lease + 1000) end\n"
    "  if rpm > 0 then redis.call('SET', KEYS[1], tostring(nr), 'PX', math.ceil(nr - now) + 1000) "
    "end\n"
    "  if tpm > 0 then redis.call('SET', KEYS[2], tostring(nt), 'PX', math.ceil(nt - now) + 1000) "
    "end\n"
    "else nr, nt = tr, tt end\n"
    "return {refused, math.ceil(retry), math.floor(math.max(nr - now, 0)),\n"
    "        math.floor(math.max(nt - now, 0)), big}\n";

/* ARGV: tpm, delta tokens. Moves the tokens TAT; a refund never banks. */
static const char SETTLE_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local tt = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local nt = math.max(tt, now) + tonumber(ARGV[2]) * 60000 / tonumber(ARGV[1])\n"
    "if nt <= now then redis.call('DEL', KEYS[1]) return 0 end\n"
    "redis.call('SET', KEYS[1], tostring(nt), 'PX', math.ceil(nt - now) + 1000)\n"
    "return 0\n";

/* ARGV: the lease's life in ms, then members: (re)set each one's expiry.
 * Re-adds a lease Redis lost (a restart): its request is still running. */
static const char RENEW_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
    "local lease = tonumber(ARGV[1])\n"
    "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) end\n"
    "redis.call('PEXPIRE', KEYS[1], lease + 1000)\n"
    "return 0\n";

/* A concurrency lease this replica holds in Redis for a running request. */
typedef struct lease {
    struct lease *prev, *next;
    char tenant[TENANT_NAME_MAX];
    char member[48];
} lease_t;

struct rlr_op {
    rlr_t *r;
    rlr_op_t *prev, *next; /* in r->ops until finished */
    uv_timer_t timer;
    rlr_done_fn done;
    void *user;
    tenant_limits_t lim;
    char tenant[TENANT_NAME_MAX];
    char member[48]; /* the concurrency lease it asks for (lim.max_concurrency > 0) */
    long long tokens;
    int finished, cancelled, reply_pending, timer_open, retried;
};

struct rlr {
    uv_loop_t *loop;
    cache_redis_url_t url;
    int wait_ms;
    redisAsyncContext *ac;
    int up;
    uv_timer_t retry;
    uv_getaddrinfo_t gai;
    int resolving;
    char sha_check[41], sha_settle[41];
    rlr_op_t *ops;
    lease_t *leases; /* held by this replica's running requests */
    uv_timer_t renew;
    char id[17]; /* this replica's, in lease members */
    unsigned long long n_lease;
    int inflight, consec_timeouts;
    int closing, alive; /* alive: handles and ops not yet closed/freed */
    rlr_stats_t st;
};

static void sha1_hex(const char *s, char out[41])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(s, strlen(s), d, &n, EVP_sha1(), NULL);
    static const char hx[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[40] = '\0';
}

static void r_unref(rlr_t *r)
{
    if (--r->alive == 0 && r->closing) free(r);
}

/* ---- checks ---- */

static void op_timer_closed(uv_handle_t *h)
{
    rlr_op_t *op = h->data;
    rlr_t *r = op->r;
    op->timer_open = 0;
    if (!op->reply_pending) {
        free(op);
        r_unref(r);
    }
}

static void op_finish(rlr_op_t *op, const rl_verdict_t *v)
{
    rlr_t *r = op->r;
    if (op->finished) return;
    op->finished = 1;
    DLIST_UNLINK(r->ops, op);
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, op_timer_closed);
    if (!v) r->st.local++;
    if (!op->cancelled) op->done(op->user, v);
}

int rlr_parse_reply(const long long *x, int n, const tenant_limits_t *lim, rl_verdict_t *v)
{
    if (n != 5 || x[0] < 0 || x[0] > 3) return -1;
    memset(v, 0, sizeof *v);
    static const rl_what_t what[4] = {RL_OK, RL_REQUESTS, RL_TOKENS, RL_CONCURRENCY};
    v->refused = what[x[0]];
    v->retry_s = (double)x[1] / 1e3;
    v->too_large = x[4] != 0;
    v->lim_req = lim->rpm;
    v->lim_tok = lim->tpm;
    double w = RL_WINDOW_S * 1e3;
    if (lim->rpm > 0) {
        double used = x[2] > 0 ? (double)x[2] : 0, t = w / (double)lim->rpm;
        long long rem = (long long)((w - used) / t + 1e-9);
        v->rem_req = rem < 0 ? 0 : rem > lim->rpm ? lim->rpm : rem;
        v->reset_req_s = used / 1e3;
    }
    if (lim->tpm > 0) {
        double used = x[3] > 0 ? (double)x[3] : 0, t = w / (double)lim->tpm;
        long long rem = (long long)((w - used) / t + 1e-9);
        v->rem_tok = rem < 0 ? 0 : rem > lim->tpm ? lim->tpm : rem;
        v->reset_tok_s = used / 1e3;
    }
    return 0;
}

static int send_check(rlr_op_t *op, int eval);

static void lease_key(const char *tenant, char *out, size_t size)
{
    snprintf(out, size, "barista:rl:{%s}:conc", tenant);
}

static void on_fire_and_forget(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)reply;
    rlr_t *r = priv;
    r->inflight--;
    r_unref(r);
}

/* Take lease `member` of tenant out of Redis; fire and forget (not sent:
 * it expires within LEASE_MS). */
static void lease_drop(rlr_t *r, const char *tenant, const char *member)
{
    if (r->closing || !r->up || !r->ac) return;
    char k[TENANT_NAME_MAX + 32];
    lease_key(tenant, k, sizeof k);
    if (redisAsyncCommand(r->ac, on_fire_and_forget, r, "ZREM %s %s", k, member) == REDIS_OK) {
        r->inflight++;
        r->alive++;
    }
}

/* A check admitted op with a lease: keep it (renewed until rlr_release),
 * or, when nobody waits for the answer any more, give it back at once. */
static void lease_taken(rlr_op_t *op)
{
    rlr_t *r = op->r;
    lease_t *l = op->finished ? NULL : calloc(1, sizeof *l);
    if (!l) {
        lease_drop(r, op->tenant, op->member);
        return;
    }
    snprintf(l->tenant, sizeof l->tenant, "%s", op->tenant);
    snprintf(l->member, sizeof l->member, "%s", op->member);
    DLIST_PUSH(r->leases, l);
}

static void on_check(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    rlr_op_t *op = priv;
    rlr_t *r = op->r;
    redisReply *rep = reply_;
    op->reply_pending = 0;
    r->inflight--;
    if (!op->finished) {
        if (rep && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8) &&
            !op->retried && !r->closing && send_check(op, 1) == 0) {
            return; /* the script was not cached: sent whole this time */
        }
        rl_verdict_t v;
        long long x[5];
        int ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 5;
        for (int i = 0; ok && i < 5; i++) {
            ok = rep->element[i]->type == REDIS_REPLY_INTEGER;
            if (ok) x[i] = rep->element[i]->integer;
        }
        if (ok && rlr_parse_reply(x, 5, &op->lim, &v) == 0) {
            r->st.answered++;
            r->consec_timeouts = 0;
            if (v.refused == RL_OK && op->member[0]) lease_taken(op);
            op_finish(op, &v);
        } else {
            op_finish(op, NULL);
        }
    } else if (op->member[0] && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 5 &&
               rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 0) {
        lease_taken(op); /* admitted after its wait ran out (or it was cancelled): give it back */
    }
    if (!op->timer_open) {
        free(op);
        r_unref(r);
    }
}

static int send_check(rlr_op_t *op, int eval)
{
    rlr_t *r = op->r;
    char k1[TENANT_NAME_MAX + 32], k2[TENANT_NAME_MAX + 32], k3[TENANT_NAME_MAX + 32];
    snprintf(k1, sizeof k1, "barista:rl:{%s}:req", op->tenant);
    snprintf(k2, sizeof k2, "barista:rl:{%s}:tok", op->tenant);
    lease_key(op->tenant, k3, sizeof k3);
    const char *member = op->member[0] ? op->member : "-";
    int conc = op->member[0] ? op->lim.max_concurrency : 0;
    int rc = redisAsyncCommand(r->ac, on_check, op, "%s %s 3 %s %s %s %lld %lld %lld %d %s %d",
                               eval ? "EVAL" : "EVALSHA", eval ? CHECK_LUA : r->sha_check, k1, k2,
                               k3, op->lim.rpm, op->lim.tpm, op->tokens, conc, member, LEASE_MS);
    if (rc != REDIS_OK) return -1;
    op->retried |= eval;
    op->reply_pending = 1;
    r->inflight++;
    return 0;
}

static void conn_drop(rlr_t *r);

static void on_op_timeout(uv_timer_t *t)
{
    rlr_op_t *op = t->data;
    rlr_t *r = op->r;
    r->st.timeouts++;
    op_finish(op, NULL);
    if (++r->consec_timeouts >= STALL_TIMEOUTS) conn_drop(r); /* a hung Redis */
}

int rlr_admit(rlr_t *r, const char *tenant, const tenant_limits_t *lim, long long tokens,
              rlr_done_fn done, void *user, rlr_op_t **out)
{
    *out = NULL;
    if (!r || r->closing || !r->up || !r->ac || r->inflight >= MAX_INFLIGHT) {
        if (r) r->st.local++;
        return 0;
    }
    rlr_op_t *op = calloc(1, sizeof *op);
    if (!op) return 0;
    op->r = r;
    op->done = done;
    op->user = user;
    op->lim = *lim;
    op->tokens = tokens < 0 ? 0 : tokens;
    snprintf(op->tenant, sizeof op->tenant, "%s", tenant);
    if (lim->max_concurrency > 0)
        snprintf(op->member, sizeof op->member, "%s:%llu", r->id, ++r->n_lease);
    if (send_check(op, 0)) {
        free(op);
        r->st.local++;
        return 0;
    }
    r->alive++;
    r->st.checks++;
    uv_timer_init(r->loop, &op->timer);
    op->timer.data = op;
    op->timer_open = 1;
    uv_timer_start(&op->timer, on_op_timeout, (uint64_t)r->wait_ms, 0);
    DLIST_PUSH(r->ops, op);
    *out = op;
    return 1;
}

void rlr_cancel(rlr_op_t *op)
{
    if (!op) return;
    op->cancelled = 1;
    op_finish(op, NULL);
}

void rlr_settle(rlr_t *r, const char *tenant, const tenant_limits_t *lim, long long delta)
{
    if (!r || r->closing || !r->up || !r->ac || lim->tpm <= 0 || delta == 0) return;
    char k[TENANT_NAME_MAX + 32];
    snprintf(k, sizeof k, "barista:rl:{%s}:tok", tenant);
    /* EVAL, not EVALSHA: nobody waits for this one, so no NOSCRIPT round */
    if (redisAsyncCommand(r->ac, on_fire_and_forget, r, "EVAL %s 1 %s %lld %lld", SETTLE_LUA, k,
                          lim->tpm, delta) == REDIS_OK) {
        r->inflight++;
        r->alive++;
    }
}

void rlr_release(rlr_t *r, const char *tenant)
{
    if (!r) return;
    for (lease_t *l = r->leases; l; l = l->next)
        if (!strcmp(l->tenant, tenant)) {
            DLIST_UNLINK(r->leases, l);
            lease_drop(r, l->tenant, l->member);
            free(l);
            return;
        }
}

/* Every LEASE_RENEW_MS: push the expiry of this replica's live leases
 * forward (one script per lease; they are few: at most the requests
 * running here). */
static void on_renew(uv_timer_t *t)
{
    rlr_t *r = t->data;
    if (r->closing || !r->up || !r->ac) return;
    for (lease_t *l = r->leases; l; l = l->next) {
        if (r->inflight >= MAX_INFLIGHT) return;
        char k[TENANT_NAME_MAX + 32];
        lease_key(l->tenant, k, sizeof k);
        if (redisAsyncCommand(r->ac, on_fire_and_forget, r, "EVAL %s 1 %s %d %s", RENEW_LUA, k,
                              LEASE_MS, l->member) == REDIS_OK) {
            r->inflight++;
            r->alive++;
        }
    }
}

void rlr_stats(const rlr_t *r, rlr_stats_t *st)
{
    *st = r->st;
    st->up = r->up;
}

/* ---- the connection ---- */

static void conn_start(rlr_t *r);

/* The timer retries a connection, or bounds a handshake in progress. */
static void on_retry(uv_timer_t *t)
{
    rlr_t *r = t->data;
    if (r->ac) {
        if (!r->up) conn_drop(r); /* connected, but PING unanswered: a hung Redis */
        return;
    }
    conn_start(r);
}

static void schedule_retry(rlr_t *r)
{
    if (!r->closing) uv_timer_start(&r->retry, on_retry, RETRY_MS, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rlr_t *r = ac->data;
    if (status != REDIS_OK) {
        r->ac = NULL; /* hiredis frees it */
        r->up = 0;
        schedule_retry(r);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    rlr_t *r = ac->data;
    if (r->ac == ac) r->ac = NULL;
    r->up = 0;
    schedule_retry(r);
}

static void on_ready(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    rlr_t *r = priv;
    redisReply *rep = reply_;
    if (rep && rep->type == REDIS_REPLY_STATUS) {
        r->up = 1;
        r->consec_timeouts = 0;
        uv_timer_stop(&r->retry);
    }
}

static void on_handshake(redisAsyncContext *ac, void *reply_, void *priv)
{
    (void)ac;
    (void)reply_;
    (void)priv;
}

/* Drop the connection now (not redisAsyncDisconnect: that waits for the
 * replies a hung Redis never sends); pending callbacks get NULL. */
static void conn_drop(rlr_t *r)
{
    if (!r->ac) return;
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->up = 0;
    redisAsyncFree(ac);
    schedule_retry(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rlr_t *r = req->data;
    r->resolving = 0;
    char addr[INET6_ADDRSTRLEN] = "";
    cache_redis_pick_addr(status, res, addr);
    if (res) uv_freeaddrinfo(res);
    if (r->closing) {
        r_unref(r);
        return;
    }
    r_unref(r);
    if (!addr[0]) {
        schedule_retry(r);
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(addr, r->url.port);
    if (!ac || ac->err || redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        if (ac) redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    if (r->url.password[0]) {
        if (r->url.user[0])
            redisAsyncCommand(ac, on_handshake, r, "AUTH %s %s", r->url.user, r->url.password);
        else
            redisAsyncCommand(ac, on_handshake, r, "AUTH %s", r->url.password);
    }
    if (r->url.db) redisAsyncCommand(ac, on_handshake, r, "SELECT %d", r->url.db);
    redisAsyncCommand(ac, on_ready, r, "PING");
    uv_timer_start(&r->retry, on_retry, 1000, 0); /* the handshake's deadline */
}

static void conn_start(rlr_t *r)
{
    if (r->closing || r->ac || r->resolving) return;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    if (uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->url.host, NULL, &hints) == 0) {
        r->resolving = 1;
        r->alive++;
    } else {
        schedule_retry(r);
    }
}

rlr_t *rlr_create(uv_loop_t *loop, const char *url, int wait_ms, bar_msg_t *msg)
{
    rlr_t *r = calloc(1, sizeof *r);
    if (!r) {
        bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (cache_redis_parse_url(url, &r->url, msg)) {
        free(r);
        return NULL;
    }
    r->loop = loop;
    r->wait_ms = wait_ms > 0 ? wait_ms : 20;
    sha1_hex(CHECK_LUA, r->sha_check);
    sha1_hex(SETTLE_LUA, r->sha_settle);
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        unsigned long long x = (unsigned long long)uv_hrtime() ^ (unsigned long long)uv_os_getpid();
        memcpy(rnd, &x, sizeof rnd);
    }
    for (int i = 0; i < 8; i++)
        snprintf(r->id + 2 * i, 3, "%02x", rnd[i]);
    uv_timer_init(loop, &r->retry);
    r->retry.data = r;
    uv_timer_init(loop, &r->renew);
    r->renew.data = r;
    uv_timer_start(&r->renew, on_renew, LEASE_RENEW_MS, LEASE_RENEW_MS);
    uv_unref((uv_handle_t *)&r->renew);
    r->alive = 2; /* the retry and renew timers */
    conn_start(r);
    return r;
}

static void on_timer_closed(uv_handle_t *h)
{
    r_unref(h->data);
}

void rlr_destroy(rlr_t *r)
{
    if (!r) return;
    r->closing = 1;
    while (r->ops)
        op_finish(r->ops, NULL); /* everyone decides locally */
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks run now with NULL */
    }
    if (r->resolving) uv_cancel((uv_req_t *)&r->gai);
    while (r->leases) { /* they expire in Redis within LEASE_MS */
        lease_t *l = r->leases;
        DLIST_UNLINK(r->leases, l);
        free(l);
    }
    uv_timer_stop(&r->retry);
    uv_close((uv_handle_t *)&r->retry, on_timer_closed);
    uv_timer_stop(&r->renew);
    uv_close((uv_handle_t *)&r->renew, on_timer_closed);
}
