/* test_cache_redis.c — the Redis L2 (src/cache/cache_redis*.c) against a REAL
 * redis-server that this test starts on a free port (--save '' --appendonly
 * no) and kills at the end. Hits, misses, PX TTL, garbage values, two
 * instances sharing hits, purges (and the peer-purge message), GET timeouts
 * and the trip on a SIGSTOPped server, redis killed (errors, no crash) and
 * restarted (reconnect), cancel, destroy with GETs outstanding.
 *
 * ctest runs this binary twice at once (the _scalar entry), so the server
 * must provably be ours: INFO's process_id is our child's pid, else another
 * port. Waits are bounded and generous (ASan on a loaded 2-core machine);
 * after each test, passed or not, its clients are destroyed and the loop
 * emptied, so a failed assertion fails the test instead of hanging teardown.
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
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "cache/cache_redis.h"

/* Waits are generous: ctest runs this binary twice at once (and beside model
 * tests) on a 2-core CI machine, under ASan. WAIT_MS bounds every wait for
 * something that must happen; GET_TIMEOUT_MS is the L2 GET timeout of every
 * test that is not about timeouts (one that is sets its own and asserts the
 * outcome, not how fast it came). */
#define WAIT_MS 15000
#define GET_TIMEOUT_MS 5000
#define MAX_CLIENTS 4

static pid_t redis_pid = -1;
static int redis_port;
static char redis_url[64];
static char redis_why[256]; /* why redis_start failed */
static uv_loop_t loop;
static int loop_ready;
/* what a failed test left behind, destroyed by test_teardown */
static cache_redis_t *clients[MAX_CLIENTS];
/* set while test_teardown completes a failed test's leftovers: the callbacks'
 * user pointers point into that test's (gone) stack frame */
static int abandoned;

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

/* a port the kernel just had free (another process may take it before our
 * redis-server binds it: redis_start_on finds out); 0 on error */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Who answers on port: the pid INFO server reports, 0 when nothing answers
 * (yet). Connect and command time out, so a stopped server cannot hang us. */
static long redis_answering_pid(int port)
{
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    long pid = 0;
    if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK) {
        redisReply *r = redisCommand(c, "INFO server");
        const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "process_id:") : NULL;
        if (p) pid = strtol(p + strlen("process_id:"), NULL, 10);
        freeReplyObject(r);
    }
    if (c) redisFree(c);
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Start redis-server on port and wait until it answers as itself (INFO's
 * process_id is our child's pid). 0, or -1 with redis_why set: it exited
 * (the port is taken), or another process answers there. */
static int redis_start_on(int port)
{
    char arg[16];
    snprintf(arg, sizeof arg, "%d", port);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(redis_why, sizeof redis_why, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* never outlive the test (ctest's TIMEOUT kills only the test) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execlp("redis-server", "redis-server", "--port", arg, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    uint64_t end = now_ms() + WAIT_MS;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            snprintf(redis_why, sizeof redis_why, "redis-server on port %d exited (status %d)",
                     port, st);
            return -1;
        }
        long who = redis_answering_pid(port);
        if (who == pid) {
            redis_pid = pid;
            redis_port = port;
            snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", port);
            return 0;
        }
        if (who != 0 || now_ms() > end) {
            if (who)
                snprintf(redis_why, sizeof redis_why,
                         "port %d is served by pid %ld, not by our redis-server %d", port, who,
                         (int)pid);
            else
                snprintf(redis_why, sizeof redis_why, "redis-server %d did not answer on port %d",
                         (int)pid, port);
            reap(pid);
            return -1;
        }
        sleep_ms(10);
    }
}

/* A redis-server of our own on a fresh port (another test binary running at
 * the same time may race us for a port: then another one). */
static int redis_start(void)
{
    if (!on_path("redis-server")) {
        snprintf(redis_why, sizeof redis_why,
                 "redis-server is not on PATH: install it (Debian: apt-get install "
                 "redis-server); this test needs a real Redis and does not skip");
        return -1;
    }
    for (int attempt = 0; attempt < 20; attempt++) {
        int port = free_port();
        if (port && redis_start_on(port) == 0) return 0;
        fprintf(stderr, "redis_start: %s; trying another port\n", redis_why);
    }
    return -1;
}

static void redis_kill(void)
{
    if (redis_pid > 0) {
        reap(redis_pid);
        redis_pid = -1;
    }
}

/* SIGSTOP / SIGCONT our redis-server and wait until it has happened */
static void redis_stop(void)
{
    int st = 0;
    assert_int_equal(kill(redis_pid, SIGSTOP), 0);
    assert_int_equal(waitpid(redis_pid, &st, WUNTRACED), redis_pid);
    assert_true(WIFSTOPPED(st));
}

static void redis_cont(void)
{
    int st = 0;
    assert_int_equal(kill(redis_pid, SIGCONT), 0);
    assert_int_equal(waitpid(redis_pid, &st, WCONTINUED), redis_pid);
    assert_true(WIFCONTINUED(st));
}

/* ---- the event loop ---- */

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* run the loop (at least one iteration) until *flag becomes non-zero or ms
 * pass; returns *flag */
static int run_until(const int *flag, int ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, tick, 1, 1);
    uint64_t end = now_ms() + (uint64_t)ms;
    do
        uv_run(&loop, UV_RUN_ONCE);
    while (!(flag && *flag) && now_ms() < end);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT); /* closing handles go in every iteration */
    return flag ? *flag : 0;
}

static void run_for(int ms)
{
    run_until(NULL, ms);
}

static void close_leftover(uv_handle_t *h, void *arg)
{
    int *n = arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
        (*n)++;
    }
}

/* Let the loop finish closing what was destroyed, then close whatever is
 * still open (a failed test's handles). Bounded: never waits for a handle
 * that would keep the loop alive forever. 0 when the loop is empty. */
static int loop_drain(void)
{
    for (int i = 0; i < 100 && uv_loop_alive(&loop); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    int n = 0;
    uv_walk(&loop, close_leftover, &n);
    if (n) fprintf(stderr, "loop_drain: closed %d leftover handle(s)\n", n);
    for (int i = 0; i < 100 && uv_loop_alive(&loop); i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return uv_loop_alive(&loop) ? -1 : 0;
}

/* ---- fixtures ---- */

static int group_setup(void **st)
{
    (void)st;
    if (redis_start()) {
        fprintf(stderr, "FAIL: test_cache_redis: %s\n", redis_why);
        return -1;
    }
    uv_loop_init(&loop);
    loop_ready = 1;
    return 0;
}

/* after every test, passed or failed: destroy the clients it left, resume or
 * restart our redis-server, and empty the loop */
static int test_teardown(void **st)
{
    (void)st;
    abandoned = 1;
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i]) {
            cache_redis_destroy(clients[i]);
            clients[i] = NULL;
        }
    int rc = loop_drain();
    abandoned = 0;
    if (redis_pid > 0 && waitpid(redis_pid, NULL, WNOHANG) == redis_pid) redis_pid = -1;
    if (redis_pid > 0) kill(redis_pid, SIGCONT);
    if (redis_pid <= 0 && redis_start()) {
        fprintf(stderr, "cannot restart redis-server: %s\n", redis_why);
        rc = -1;
    }
    return rc;
}

static int group_teardown(void **st)
{
    (void)st;
    redis_kill();
    if (!loop_ready) return 0;
    int rc = loop_drain();
    return uv_loop_close(&loop) || rc ? -1 : 0;
}

/* synchronous side-channel client for inspecting Redis */
static redisReply *cmd(const char *fmt, ...)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
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

static long long exists(const char *name)
{
    redisReply *rp = cmd("EXISTS %s", name);
    assert_int_equal(rp->type, REDIS_REPLY_INTEGER);
    long long n = rp->integer;
    freeReplyObject(rp);
    return n;
}

/* the client deletes garbage with a fire-and-forget UNLINK: wait for it */
static void wait_gone(const char *name)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (exists(name)) {
        if (now_ms() > end) fail_msg("%s was not deleted within %d ms", name, WAIT_MS);
        run_for(5);
    }
}

/* ---- the client under test ---- */

typedef struct {
    int n;
    cache_l2_status_t st;
    cache_entry_t *e;
} got_t;

static void on_got(void *user, cache_entry_t *e, cache_l2_status_t st)
{
    if (abandoned) {
        cache_entry_release(e);
        return;
    }
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

/* run the loop until *n reaches want (bounded) */
static void wait_count(const int *n, int want)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (*n < want && now_ms() < end)
        run_for(5);
    if (*n < want) fail_msg("count %d, want %d within %d ms", *n, want, WAIT_MS);
}

static void wait_connected(cache_redis_t *r, int want)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (cache_redis_connected(r) != want && now_ms() < end)
        run_for(10);
    assert_int_equal(cache_redis_connected(r), want);
}

static void wait_subscribed(cache_redis_t *r)
{
    cache_redis_stats_t s;
    uint64_t end = now_ms() + WAIT_MS;
    for (cache_redis_stats(r, &s); !s.subscribed && now_ms() < end; cache_redis_stats(r, &s))
        run_for(10);
    assert_int_equal(s.subscribed, 1);
}

/* until every command sent has its reply (SETs are fire and forget) */
static void settle(cache_redis_t *r)
{
    cache_redis_stats_t s;
    uint64_t end = now_ms() + WAIT_MS;
    for (cache_redis_stats(r, &s); s.inflight && now_ms() < end; cache_redis_stats(r, &s))
        run_for(5);
    assert_int_equal(s.inflight, 0);
}

static cache_redis_t *connect_opts(cache_redis_opts_t *o)
{
    bar_msg_t m;
    cache_redis_t *r = cache_redis_create(&loop, redis_url, o, &m);
    if (!r) fail_msg("create: %s", m.text);
    int i = 0;
    while (i < MAX_CLIENTS && clients[i])
        i++;
    assert_true(i < MAX_CLIENTS);
    clients[i] = r;
    wait_connected(r, 1);
    return r;
}

static cache_redis_t *connect_default(void)
{
    cache_redis_opts_t o = {0};
    o.timeout_ms = GET_TIMEOUT_MS;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 200;
    return connect_opts(&o);
}

/* cache_redis_destroy, and the loop iteration that frees it */
static void destroy_now(cache_redis_t *r)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] == r) clients[i] = NULL;
    cache_redis_destroy(r);
}

static void destroy(cache_redis_t *r)
{
    destroy_now(r);
    run_for(1);
}

/* get and wait for the callback */
static cache_l2_status_t get_sync(cache_redis_t *r, int id, uint64_t ns, cache_entry_t **out)
{
    got_t g = {0};
    cache_key_t k = key_n(id);
    int rc = cache_redis_get(r, &k, ns, on_got, &g, NULL);
    if (rc) fail_msg("get not sent: %d", rc);
    assert_int_equal(g.n, 0); /* never from inside the call */
    assert_true(run_until(&g.n, WAIT_MS));
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
    settle(r);
    /* the key name and TTL as Redis sees them */
    char name[96];
    cache_redis_key_name(r, 7, &e->key, name, sizeof name);
    assert_int_equal(strncmp(name, "barista:0000000000000007:", 25), 0);
    redisReply *rp = cmd("PTTL %s", name);
    assert_int_equal(rp->type, REDIS_REPLY_INTEGER);
    assert_true(rp->integer > 0 && rp->integer <= 60000);
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
    settle(r);
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

/* PX reaches Redis and Redis expires the key (not how fast: the TTL leaves
 * the HIT 2 s, then the MISS may take as long as it takes) */
static void test_ttl_px(void **st)
{
    (void)st;
    flushall();
    cache_redis_t *r = connect_default();
    cache_entry_t *e = mk(5, 1);
    assert_int_equal(cache_redis_set(r, e, 2000), 0);
    settle(r);
    char name[96];
    cache_redis_key_name(r, 1, &e->key, name, sizeof name);
    redisReply *rp = cmd("PTTL %s", name);
    assert_true(rp->integer > 0 && rp->integer <= 2000);
    freeReplyObject(rp);
    assert_int_equal(get_sync(r, 5, 1, NULL), CACHE_L2_HIT);
    uint64_t end = now_ms() + 2000 + WAIT_MS;
    cache_l2_status_t got;
    while ((got = get_sync(r, 5, 1, NULL)) == CACHE_L2_HIT && now_ms() < end)
        run_for(50);
    assert_int_equal(got, CACHE_L2_MISS);
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
    wait_gone(name); /* garbage is deleted */
    /* a valid entry stored under another key's name is garbage too */
    cache_entry_t *e = mk(10, 1);
    buf_t b = {0};
    assert_int_equal(cache_entry_encode(e, &b), 0);
    freeReplyObject(cmd("SET %s %b", name, b.p, b.n));
    assert_int_equal(get_sync(r, 9, 1, NULL), CACHE_L2_GARBAGE);
    wait_gone(name);
    /* a value with one flipped byte */
    b.p[b.n / 2] ^= 0x10;
    cache_redis_key_name(r, 1, &e->key, name, sizeof name);
    freeReplyObject(cmd("SET %s %b", name, b.p, b.n));
    assert_int_equal(get_sync(r, 10, 1, NULL), CACHE_L2_GARBAGE);
    wait_gone(name); /* before the LPUSH below, which it would delete */
    /* wrong type: an error, not garbage, and left alone */
    freeReplyObject(cmd("LPUSH %s x", name));
    assert_int_equal(get_sync(r, 10, 1, NULL), CACHE_L2_ERROR);
    settle(r);
    assert_int_equal(exists(name), 1);
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
    if (abandoned) return;
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
    if (abandoned) return;
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
    o.timeout_ms = GET_TIMEOUT_MS;
    o.on_peer_purge = on_peer;
    o.peer_user = &p1;
    cache_redis_t *a = connect_opts(&o);
    o.peer_user = &p2;
    cache_redis_t *b = connect_opts(&o);
    wait_subscribed(a);
    wait_subscribed(b);
    /* a writes, b reads: shared hits */
    for (int i = 0; i < 30; i++) {
        cache_entry_t *e = mk(100 + i, (uint64_t)(i % 3));
        assert_int_equal(cache_redis_set(a, e, 60000), 0);
        cache_entry_release(e);
    }
    settle(a);
    assert_int_equal(get_sync(b, 100, 0, NULL), CACHE_L2_HIT);
    assert_int_equal(get_sync(b, 101, 1, NULL), CACHE_L2_HIT);

    /* purge one namespace */
    done_t d = {0};
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_NS, 1, NULL, on_done, &d), 0);
    assert_true(run_until(&d.n, WAIT_MS));
    assert_int_equal(d.err, 0);
    assert_int_equal(d.deleted, 10);
    assert_true(run_until(&p2.n, WAIT_MS)); /* b hears about it */
    assert_int_equal(p2.kind, CACHE_PURGE_NS);
    assert_true(p2.ns == 1);
    assert_int_equal(get_sync(b, 101, 1, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(b, 100, 0, NULL), CACHE_L2_HIT);

    /* purge one key (any namespace) */
    cache_key_t k = key_n(100);
    d = (done_t){0};
    assert_int_equal(cache_redis_purge(b, CACHE_PURGE_KEY, 0, &k, on_done, &d), 0);
    assert_true(run_until(&d.n, WAIT_MS));
    assert_int_equal(d.deleted, 1);
    assert_true(run_until(&p1.n, WAIT_MS));
    /* one channel delivers in order: had a taken its own namespace purge,
     * it would have come first */
    assert_int_equal(p1.n, 1);
    assert_int_equal(p1.kind, CACHE_PURGE_KEY);
    assert_true(cache_key_equal(&p1.key, &k));
    assert_int_equal(get_sync(a, 100, 0, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(a, 103, 0, NULL), CACHE_L2_HIT);

    /* purge a tenant: every namespace with its high 32 bits, no other */
    const uint64_t T = 0xabcdef01ull << 32, U = 0xabcdef02ull << 32;
    const uint64_t tns[3] = {T | 1, T | 0x80000000ull, U | 1};
    for (int i = 0; i < 3; i++) {
        cache_entry_t *e = mk(200 + i, tns[i]);
        assert_int_equal(cache_redis_set(a, e, 60000), 0);
        cache_entry_release(e);
    }
    settle(a);
    d = (done_t){0};
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_TENANT, T | 7, NULL, on_done, &d), 0);
    assert_true(run_until(&d.n, WAIT_MS));
    assert_int_equal(d.err, 0);
    assert_int_equal(d.deleted, 2);
    wait_count(&p2.n, 2);
    assert_int_equal(p2.kind, CACHE_PURGE_TENANT);
    assert_true(p2.ns == T); /* the tenant half only */
    assert_int_equal(get_sync(b, 200, T | 1, NULL), CACHE_L2_MISS);
    assert_int_equal(get_sync(b, 202, U | 1, NULL), CACHE_L2_HIT);

    /* purge all: only our prefix's entries (the namespace secret stays) */
    freeReplyObject(cmd("SET unrelated:key v"));
    freeReplyObject(cmd("SET barista:tenant:ns-secret s"));
    d = (done_t){0};
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_ALL, 0, NULL, on_done, &d), 0);
    assert_true(run_until(&d.n, WAIT_MS));
    assert_int_equal(d.deleted, 20);
    wait_count(&p2.n, 3);
    /* b did not take its own key purge (published before this one) */
    assert_int_equal(p2.n, 3);
    assert_int_equal(p2.kind, CACHE_PURGE_ALL);
    redisReply *rp = cmd("DBSIZE");
    assert_int_equal(rp->integer, 3); /* unrelated:key, the secret and the purge log */
    freeReplyObject(rp);
    /* every purge is in the durable log (barista.purges), which purge-all
     * (SCAN barista:<16 hex>:*) leaves alone */
    rp = cmd("XLEN barista.purges");
    assert_int_equal(rp->type, REDIS_REPLY_INTEGER);
    assert_int_equal(rp->integer, 4);
    freeReplyObject(rp);
    assert_int_equal(cache_redis_purge(a, CACHE_PURGE_KEY, 0, NULL, on_done, &d), BAR_ERR_INVALID);
    destroy(a);
    destroy(b);
}

/* A stopped server answers nothing, so every GET times out whatever the
 * load; the test asserts that, the trip and the recovery, not durations. */
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
    settle(r);
    redis_stop(); /* slow: accepts bytes, answers nothing */
    for (int i = 0; i < 3; i++)
        assert_int_equal(get_sync(r, 20, 0, NULL), CACHE_L2_TIMEOUT);
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
    redis_cont();
    wait_connected(r, 1);
    assert_int_equal(g.n, 0);
    cache_redis_stats(r, &s);
    assert_true(s.skipped >= 2);
    destroy(r);
    /* generous timeout again for the check under ASan */
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
    int port = redis_port;
    redis_kill();
    for (int i = 0; i < 4; i++) {
        run_until(&g[i].n, WAIT_MS);
        assert_int_equal(g[i].n, 1);
        assert_null(g[i].e);
    }
    wait_connected(r, 0);
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
    if (redis_start_on(port)) fail_msg("restart on port %d: %s", port, redis_why);
    wait_connected(r, 1);
    assert_int_equal(cache_redis_set(r, e, 60000), 0);
    settle(r);
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
    settle(r); /* its reply came, and was dropped */
    assert_int_equal(g.n, 0);
    /* outstanding GETs complete with DOWN on destroy */
    got_t g2[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(cache_redis_get(r, &k, 0, on_got, &g2[i], NULL), 0);
    destroy_now(r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g2[i].n, 1);
        assert_int_equal(g2[i].st, CACHE_L2_DOWN);
    }
    run_for(1);
    /* max_inflight: a stopped server holds GETs; the cap refuses more */
    cache_redis_opts_t o = {0};
    o.timeout_ms = GET_TIMEOUT_MS;
    o.max_inflight = 2;
    r = connect_opts(&o);
    redis_stop();
    got_t h[3] = {{0}};
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[0], NULL), 0);
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[1], NULL), 0);
    assert_int_equal(cache_redis_get(r, &k, 0, on_got, &h[2], NULL), BAR_ERR_BUSY);
    destroy_now(r);
    redis_cont();
    assert_int_equal(h[0].n, 1);
    assert_int_equal(h[1].n, 1);
    assert_int_equal(h[2].n, 0);
    run_for(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_url, test_teardown),
        cmocka_unit_test_teardown(test_hit_miss, test_teardown),
        cmocka_unit_test_teardown(test_ttl_px, test_teardown),
        cmocka_unit_test_teardown(test_garbage, test_teardown),
        cmocka_unit_test_teardown(test_shared_and_purge, test_teardown),
        cmocka_unit_test_teardown(test_timeout_and_trip, test_teardown),
        cmocka_unit_test_teardown(test_killed_and_restarted, test_teardown),
        cmocka_unit_test_teardown(test_cancel_and_destroy, test_teardown),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    redis_kill();
    return rc;
}
