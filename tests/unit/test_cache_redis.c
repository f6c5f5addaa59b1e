/* test_cache_redis.c — the Redis L2 (src/cache/cache_redis.c) against a REAL
 * redis-server that this test starts on a free port (--save '' --appendonly
 * no) and kills at the end. Hits, misses, PX TTL, garbage values, two
 * instances sharing hits, purges (and the peer-purge message), GET timeouts
 * and the trip on a SIGSTOPped server, redis killed (errors, no crash) and
 * restarted (reconnect), cancel, destroy with GETs outstanding.
 *
 * redis-server must be on PATH: without it this test FAILS (CI installs
 * the Debian package redis-server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "cache/cache_redis.h"

static pid_t redis_pid = -1;
static int redis_port;
static char redis_url[64];
static uv_loop_t loop;
static int loop_ready;

/* ---- the redis-server child ---- */

static int on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    char buf[1024];
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0) return 1;
        path += n + (colon ? 1 : 0);
    }
    return 0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int redis_answers(void)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
}

static void redis_start(void)
{
    if (!on_path("redis-server"))
        fail_msg("redis-server is not on PATH: install it (Debian: apt-get install "
                 "redis-server); this test needs a real Redis and does not skip");
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        dup2(devnull, 1);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    redis_pid = pid;
    for (int i = 0; i < 500; i++) {
        if (redis_answers()) return;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            redis_pid = -1;
            fail_msg("redis-server exited at start (status %d)", st);
        }
        sleep_ms(10);
    }
    fail_msg("redis-server did not answer on port %d within 5 s", redis_port);
}

static void redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGCONT);
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

static int group_setup(void **st)
{
    (void)st;
    redis_port = free_port();
    snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", redis_port);
    if (!on_path("redis-server")) {
        fprintf(stderr, "FAIL: redis-server is not on PATH: install it (Debian: apt-get install "
                        "redis-server); test_cache_redis needs a real Redis and does not skip\n");
        return -1;
    }
    redis_start();
    uv_loop_init(&loop);
    loop_ready = 1;
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    redis_kill();
    if (!loop_ready) return 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) ? -1 : 0;
}

/* synchronous side-channel client for inspecting Redis */
static redisReply *cmd(const char *fmt, ...)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(r);
    return r;
}

static void flushall(void)
{
    freeReplyObject(cmd("FLUSHALL"));
}

/* ---- loop helpers ---- */

static void tick(uv_timer_t *t)
{
    (void)t;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* run the loop until *flag becomes non-zero or ms pass; returns *flag */
static int run_until(const int *flag, int ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick, 1, 1);
    uint64_t end = now_ms() + (uint64_t)ms;
    while (!(flag && *flag) && now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return flag ? *flag : 0;
}

static void run_for(int ms)
{
    run_until(NULL, ms);
}

typedef struct {
    int n;
    cache_l2_status_t st;
    cache_entry_t *e;
} got_t;

static void on_got(void *user, cache_entry_t *e, cache_l2_status_t st)
{
    got_t *g = user;
    g->n++;
    g->st = st;
    cache_entry_release(g->e);
    g->e = e;
}

static cache_key_t key_n(int id)
{
    cache_key_t k;
    memset(&k, 0x33, sizeof k);
    memcpy(k.b + 4, &id, sizeof id);
    return k;
}

static cache_entry_t *mk(int id, uint64_t ns)
{
    cache_rec_t *r = cache_rec_create(1);
    const char *words[] = {"The ", "answer ", "is ", "42."};
    for (int i = 0; i < 4; i++) {
        lp_tok_t lp = {words[i], strlen(words[i]), -0.5, 0, NULL};
        assert_int_equal(cache_rec_add(r, words[i], strlen(words[i]), &lp, 1), 0);
    }
    cache_meta_t m = {0};
    m.key = key_n(id);
    m.ns = ns;
    m.model = "smollm2";
    m.created = 1700000000;
    m.stored_ms = 1700000000000;
    m.finish = CACHE_FINISH_STOP;
    m.prompt_tokens = 9;
    m.completion_tokens = 4;
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    return e;
}

static cache_redis_t *connect_opts(cache_redis_opts_t *o)
{
    bar_msg_t m;
    cache_redis_t *r = cache_redis_create(&loop, redis_url, o, &m);
    if (!r) fail_msg("create: %s", m.text);
    for (int i = 0; i < 300 && !cache_redis_connected(r); i++)
        run_for(10);
    assert_true(cache_redis_connected(r));
    return r;
}

static cache_redis_t *connect_default(void)
{
    cache_redis_opts_t o = {0};
    o.timeout_ms = 200; /* generous: ASan and a shared CI machine */
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 200;
    return connect_opts(&o);
}

static void destroy(cache_redis_t *r)
{
    cache_redis_destroy(r);
    run_for(20);
}

/* get and wait for the callback */
static cache_l2_status_t get_sync(cache_redis_t *r, int id, uint64_t ns, cache_entry_t **out)
{
    got_t g = {0};
    cache_key_t k = key_n(id);
    int rc = cache_redis_get(r, &k, ns, on_got, &g, NULL);
    if (rc) fail_msg("get not sent: %d", rc);
    assert_int_equal(g.n, 0); /* never from inside the call */
    assert_true(run_until(&g.n, 3000));
    assert_int_equal(g.n, 1);
    if (out)
        *out = g.e;
    else
        cache_entry_release(g.e);
    return g.st;
}

/* ---- tests ---- */

static void test_url(void **st)
{
    (void)st;
    cache_redis_url_t u;
    bar_msg_t m;
    assert_int_equal(cache_redis_parse_url("redis://localhost", &u, &m), 0);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_int_equal(cache_redis_parse_url("redis://10.0.0.5:7000/3", &u, &m), 0);
    assert_string_equal(u.host, "10.0.0.5");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);
    assert_int_equal(cache_redis_parse_url("redis://:s3cret@h:1/", &u, &m), 0);
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.user, "");
    assert_string_equal(u.host, "h");
    assert_int_equal(cache_redis_parse_url("redis://bob:p@ss@h", &u, &m), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "p@ss");
    assert_int_equal(cache_redis_parse_url("redis://[::1]:6380/2", &u, &m), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    static const char *bad[] = {
        "",
        "localhost:6379",
        "http://h:1",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:12x",
        "redis://h:",
        "redis://h/abc",
        "redis://h/-1",
        "redis://bob@h",
        "redis://[::1",
        "redis://[::1]x",
        "redis://h h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m.text[0] = 0;
        if (cache_redis_parse_url(bad[i], &u, &m) != BAR_ERR_INVALID)
            fail_msg("accepted '%s'", bad[i]);
        assert_true(strlen(m.text) > 0);
    }
    assert_int_equal(cache_redis_parse_url(NULL, &u, &m), BAR_ERR_INVALID);
    /* create refuses a bad URL or prefix at startup */
    assert_null(cache_redis_create(&loop, "redis://h:99999", NULL, &m));
    assert_non_null(strstr(m.text, "port"));
    cache_redis_opts_t o = {0};
    o.prefix = "bad prefix";
    assert_null(cache_redis_create(&loop, redis_url, &o, &m));
    assert_non_null(strstr(m.text, "prefix"));
}

static void test_hit_miss(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    assert_int_equal(get_sync(r, 1, 7, NULL), CACHE_L2_MISS);
    cache_entry_t *e = mk(1, 7);
    assert_int_equal(cache_redis_set(r, e, 60000), 0);
    run_for(30);
    /* the key name and TTL as Redis sees them */
    char name[96];
    cache_redis_key_name(r, 7, &e->key, name, sizeof name);
    assert_int_equal(strncmp(name, "barista:0000000000000007:", 25), 0);
    redisReply *rp = cmd("PTTL %s", name);
    assert_int_equal(rp->type, REDIS_REPLY_INTEGER);
    assert_true(rp->integer > 50000 && rp->integer <= 60000);
    freeReplyObject(rp);

    cache_entry_t *h = NULL;
    assert_int_equal(get_sync(r, 1, 7, &h), CACHE_L2_HIT);
    assert_non_null(h);
    assert_string_equal(h->text, "The answer is 42.");
    assert_int_equal(h->n_chunks, 4);
    assert_int_equal(h->n_lp, 4);
    assert_true(cache_key_equal(&h->key, &e->key));
    cache_entry_release(h);
    /* other namespace, other key: misses */
    assert_int_equal(get_sync(r, 1, 8, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(r, 2, 7, NULL), CACHE_L2_MISS);
    /* no TTL */
    cache_entry_t *e3 = mk(3, 7);
    assert_int_equal(cache_redis_set(r, e3, 0), 0);
    run_for(30);
    cache_redis_key_name(r, 7, &e3->key, name, sizeof name);
    rp = cmd("PTTL %s", name);
    assert_int_equal(rp->integer, -1);
    freeReplyObject(rp);
    cache_entry_release(e3);
    /* unfinished entries are not written */
    cache_rec_t *rec = cache_rec_create(0);
    cache_meta_t mt = {0};
    cache_entry_t *part = cache_rec_build(rec, &mt);
    assert_int_equal(cache_redis_set(r, part, 1000), BAR_ERR_INVALID);
    cache_entry_release(part);
    cache_rec_destroy(rec);

    cache_redis_stats_t s;
    cache_redis_stats(r, &s);
    assert_int_equal(s.connected, 1);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.sets, 2);
    assert_int_equal(s.set_errors, 0);
    assert_int_equal(s.errors, 0);
    assert_int_equal(s.inflight, 0);
    cache_entry_release(e);
    destroy(r);
}

static void test_ttl_px(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    cache_entry_t *e = mk(5, 1);
    assert_int_equal(cache_redis_set(r, e, 500), 0);
    run_for(20);
    assert_int_equal(get_sync(r, 5, 1, NULL), CACHE_L2_HIT);
    run_for(800);
    assert_int_equal(get_sync(r, 5, 1, NULL), CACHE_L2_MISS);
    cache_entry_release(e);
    destroy(r);
}

static void test_garbage(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    char name[96];
    cache_key_t k = key_n(9);
    cache_redis_key_name(r, 1, &k, name, sizeof name);
    freeReplyObject(cmd("SET %s %s", name, "definitely not an entry"));
    assert_int_equal(get_sync(r, 9, 1, NULL), CACHE_L2_GARBAGE);
    run_for(30);
    redisReply *rp = cmd("EXISTS %s", name);
    assert_int_equal(rp->integer, 0); /* garbage is deleted */
    freeReplyObject(rp);
    /* a valid entry stored under another key's name is garbage too */
    cache_entry_t *e = mk(10, 1);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(e, &b), 0);
    freeReplyObject(cmd("SET %s %b", name, b.p, b.n));
    assert_int_equal(get_sync(r, 9, 1, NULL), CACHE_L2_GARBAGE);
    /* a value with one flipped byte */
    b.p[b.n / 2] ^= 0x10;
    cache_redis_key_name(r, 1, &e->key, name, sizeof name);
    freeReplyObject(cmd("SET %s %b", name, b.p, b.n));
    assert_int_equal(get_sync(r, 10, 1, NULL), CACHE_L2_GARBAGE);
    /* wrong type */
    freeReplyObject(cmd("DEL %s", name));
    freeReplyObject(cmd("LPUSH %s x", name));
    assert_int_equal(get_sync(r, 10, 1, NULL), CACHE_L2_ERROR);
    cache_redis_stats_t s;
    cache_redis_stats(r, &s);
    assert_int_equal(s.garbage, 3);
    assert_int_equal(s.errors, 1);
    buf_free(&b);
    cache_entry_release(e);
    destroy(r);
}

typedef struct {
    int n;
    cache_purge_kind_t kind;
    uint64_t ns;
    cache_key_t key;
} peer_t;

static void on_peer(void *user, cache_purge_kind_t kind, uint64_t ns, const cache_key_t *key)
{
    peer_t *p = user;
    p->n++;
    p->kind = kind;
    p->ns = ns;
    if (key) p->key = *key;
}

typedef struct {
    int n, err;
    uint64_t deleted;
} done_t;

static void on_done(void *user, int err, uint64_t n)
{
    done_t *d = user;
    d->n++;
    d->err = err;
    d->deleted = n;
}

static void test_shared_and_purge(void **st)
{
    (void)st;
    flushall();
    peer_t p1 = {0}, p2 = {0};
    cache_redis_opts_t o = {0};
    o.timeout_ms = 200;
    o.on_peer_purge = on_peer;
    o.peer_user = &p1;
    cache_redis_t *a = connect_opts(&o);
    o.peer_user = &p2;
    cache_redis_t *b = connect_opts(&o);
    cache_redis_stats_t s;
    for (int i = 0; i < 100; i++) {
        cache_redis_stats(b, &s);
        if (s.subscribed) break;
        run_for(10);
    }
    assert_int_equal(s.subscribed, 1);
    /* a writes, b reads: shared hits */
    for (int i = 0; i < 30; i++) {
        cache_entry_t *e = mk(100 + i, (uint64_t)(i % 3));
        assert_int_equal(cache_redis_set(a, e, 60000), 0);
        cache_entry_release(e);
    }
    run_for(50);
    assert_int_equal(get_sync(b, 100, 0, NULL), CACHE_L2_HIT);
    assert_int_equal(get_sync(b, 101, 1, NULL), CACHE_L2_HIT);

    /* purge one namespace */
    done_t d = {0};
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_NS, 1, NULL, on_done, &d), 0);
    assert_true(run_until(&d.n, 3000));
    assert_int_equal(d.err, 0);
    assert_int_equal(d.deleted, 10);
    assert_true(run_until(&p2.n, 2000)); /* b hears about it */
    assert_int_equal(p2.kind, CACHE_PURGE_NS);
    assert_true(p2.ns == 1);
    assert_int_equal(p1.n, 0); /* not its own message */
    assert_int_equal(get_sync(b, 101, 1, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(b, 100, 0, NULL), CACHE_L2_HIT);

    /* purge one key (any namespace) */
    cache_key_t k = key_n(100);
    d = (done_t){0};
    assert_int_equal(cache_redis_purge(b, CACHE_PURGE_KEY, 0, &k, on_done, &d), 0);
    assert_true(run_until(&d.n, 3000));
    assert_int_equal(d.deleted, 1);
    assert_true(run_until(&p1.n, 2000));
    assert_int_equal(p1.kind, CACHE_PURGE_KEY);
    assert_true(cache_key_equal(&p1.key, &k));
    assert_int_equal(get_sync(a, 100, 0, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(a, 103, 0, NULL), CACHE_L2_HIT);

    /* purge all: only our prefix */
    freeReplyObject(cmd("SET unrelated:key v"));
    d = (done_t){0};
    p2.n = 0;
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_ALL, 0, NULL, on_done, &d), 0);
    assert_true(run_until(&d.n, 3000));
    assert_int_equal(d.deleted, 19);
    assert_true(run_until(&p2.n, 2000));
    assert_int_equal(p2.kind, CACHE_PURGE_ALL);
    redisReply *rp = cmd("DBSIZE");
    assert_int_equal(rp->integer, 1);
    freeReplyObject(rp);
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_KEY, 0, NULL, on_done, &d), BAR_ERR_INVALID);
    destroy(a);
    destroy(b);
}

static void test_timeout_and_trip(void **st)
{
    (void)st;
    flushall();
    cache_redis_opts_t o = {0};
    o.timeout_ms = 5;
    o.trip_timeouts = 3;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 100;
    cache_redis_t *r = connect_opts(&o);
    cache_entry_t *e = mk(20, 0);
    assert_int_equal(cache_redis_set(r, e, 60000), 0);
    run_for(30);
    kill(redis_pid, SIGSTOP); /* slow: accepts bytes, answers nothing */
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = now_ms();
        assert_int_equal(get_sync(r, 20, 0, NULL), CACHE_L2_TIMEOUT);
        assert_true(now_ms() - t0 < 1000);
    }
    /* tripped: the connection is dropped, calls fail fast (a miss) */
    cache_redis_stats_t s;
    cache_redis_stats(r, &s);
    assert_int_equal(s.timeouts, 3);
    assert_int_equal(s.trips, 1);
    assert_int_equal(cache_redis_connected(r), 0);
    got_t g = {0};
    cache_key_t k = key_n(20);
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &g, NULL), BAR_ERR_BUSY);
    assert_int_equal(cache_redis_set(r, e, 1000), BAR_ERR_BUSY);
    run_for(300); /* reconnect attempts hang in the handshake: still down */
    assert_int_equal(cache_redis_connected(r), 0);
    kill(redis_pid, SIGCONT);
    for (int i = 0; i < 300 && !cache_redis_connected(r); i++)
        run_for(10);
    assert_int_equal(cache_redis_connected(r), 1);
    /* generous timeout again for the check under ASan */
    assert_int_equal(g.n, 0);
    cache_redis_stats(r, &s);
    assert_true(s.skipped >= 2);
    destroy(r);
    cache_redis_t *r2 = connect_default();
    assert_int_equal(get_sync(r2, 20, 0, NULL), CACHE_L2_HIT);
    destroy(r2);
    cache_entry_release(e);
}

static void test_killed_and_restarted(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    cache_entry_t *e = mk(30, 0);
    /* GETs in flight when the server dies complete (error), never hang */
    got_t g[4] = {{0}};
    cache_key_t k = key_n(30);
    for (int i = 0; i < 4; i++)
        assert_int_equal(cache_redis_get(r, &k, 0, on_got, &g[i], NULL), 0);
    redis_kill();
    for (int i = 0; i < 4; i++) {
        run_until(&g[i].n, 3000);
        assert_int_equal(g[i].n, 1);
        assert_null(g[i].e);
    }
    for (int i = 0; i < 100 && cache_redis_connected(r); i++)
        run_for(10);
    assert_int_equal(cache_redis_connected(r), 0);
    /* while down: misses at once, counted; nothing crashes */
    for (int i = 0; i < 50; i++) {
        got_t x = {0};
        assert_int_equal(cache_redis_get(r, &k, 0, on_got, &x, NULL), BAR_ERR_BUSY);
        assert_int_equal(cache_redis_set(r, e, 1000), BAR_ERR_BUSY);
        done_t d = {0};
        assert_int_equal(cache_redis_purge(r, CACHE_PURGE_ALL, 0, NULL, on_done, &d), BAR_ERR_BUSY);
        run_for(5);
        assert_int_equal(x.n, 0);
    }
    cache_redis_stats_t s;
    cache_redis_stats(r, &s);
    assert_true(s.skipped >= 100);
    assert_true(s.conn_failures >= 1);
    assert_true(strlen(cache_redis_last_error(r)) > 0);
    /* restart on the same port: reconnects by itself (backoff ≤ 200 ms) */
    redis_start();
    for (int i = 0; i < 300 && !cache_redis_connected(r); i++)
        run_for(10);
    assert_int_equal(cache_redis_connected(r), 1);
    assert_int_equal(cache_redis_set(r, e, 60000), 0);
    run_for(30);
    assert_int_equal(get_sync(r, 30, 0, NULL), CACHE_L2_HIT);
    cache_redis_stats(r, &s);
    assert_true(s.connects >= 2);
    cache_entry_release(e);
    destroy(r);
}

static void test_cancel_and_destroy(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    cache_key_t k = key_n(40);
    got_t g = {0};
    cache_redis_op_t *op = NULL;
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &g, &op), 0);
    assert_non_null(op);
    cache_redis_cancel(r, op);
    run_for(100);
    assert_int_equal(g.n, 0);
    /* outstanding GETs complete with DOWN on destroy */
    got_t g2[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(cache_redis_get(r, &k, 0, on_got, &g2[i], NULL), 0);
    cache_redis_destroy(r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g2[i].n, 1);
        assert_int_equal(g2[i].st, CACHE_L2_DOWN);
    }
    run_for(20);
    /* max_inflight: a stopped server holds GETs; the cap refuses more */
    cache_redis_opts_t o = {0};
    o.timeout_ms = 2000;
    o.max_inflight = 2;
    r = connect_opts(&o);
    kill(redis_pid, SIGSTOP);
    got_t h[3] = {{0}};
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[0], NULL), 0);
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[1], NULL), 0);
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[2], NULL), BAR_ERR_BUSY);
    cache_redis_destroy(r);
    kill(redis_pid, SIGCONT);
    assert_int_equal(h[0].n, 1);
    assert_int_equal(h[1].n, 1);
    assert_int_equal(h[2].n, 0);
    run_for(20);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_hit_miss),
        cmocka_unit_test(test_ttl_px),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_shared_and_purge),
        cmocka_unit_test(test_timeout_and_trip),
        cmocka_unit_test(test_killed_and_restarted),
        cmocka_unit_test(test_cancel_and_destroy),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    redis_kill();
    return rc;
}
