/* test_cache_snapshot.c — --cache-file snapshots (src/cache/cache_snapshot.c):
 * round trip with content and remaining TTL, expired entries dropped, every
 * truncation and every byte flip refused with the cache left empty, missing
 * and unwritable paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "cache/cache_snapshot.h"

static double fake_now = 100.0;
static double clock_fn(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static char dir[64];
static char path[128];

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/barista_snap_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof path, "%s/cache.snap", dir);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    unlink(path);
    char tmp[140];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    rmdir(dir);
    return 0;
}

static cache_l1_t *mk_l1(void)
{
    cache_l1_opts_t o = {0};
    o.budget_bytes = 1 << 22;
    o.now = clock_fn;
    return cache_l1_create(&o);
}

static cache_key_t key_n(int id)
{
    cache_key_t k;
    memset(&k, 0x5a, sizeof k);
    memcpy(k.b + 8, &id, sizeof id);
    return k;
}

static cache_entry_t *mk(int id, int with_lp)
{
    cache_rec_t *r = cache_rec_create(with_lp);
    for (int t = 0; t < 5; t++) {
        char piece[32];
        int n = snprintf(piece, sizeof piece, "tok%d.%d ", id, t);
        lp_alt_t top = {piece, (size_t)n, -1.5};
        lp_tok_t lp = {piece, (size_t)n, -0.25 * t, 1, &top};
        assert_int_equal(cache_rec_add(r, piece, (size_t)n, &lp, 1), 0);
    }
    cache_meta_t m = {0};
    m.key = key_n(id);
    m.ns = (uint64_t)id * 1000;
    m.model = "smollm2";
    m.created = 1700000000 + id;
    m.stored_ms = 1700000000000;
    m.finish = id % 2 ? CACHE_FINISH_STOP : CACHE_FINISH_LENGTH;
    m.prompt_tokens = id;
    m.completion_tokens = 5;
    cache_entry_t *e = cache_rec_build(r, &m);
    cache_rec_destroy(r);
    return e;
}

static void fill(cache_l1_t *l1, int n, uint64_t ttl_ms)
{
    for (int i = 0; i < n; i++) {
        cache_entry_t *e = mk(i, i % 2);
        assert_int_equal(cache_l1_put(l1, e, ttl_ms ? ttl_ms * (uint64_t)(i + 1) : 0, 0), 0);
        cache_entry_release(e);
    }
}

static size_t entries(cache_l1_t *l1)
{
    cache_l1_stats_t s;
    cache_l1_stats(l1, &s);
    return s.entries;
}

static const int64_t WALL = 1700000100000;

static void test_round_trip(void **st)
{
    (void)st;
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 20, 0);
    size_t n = 0;
    bar_msg_t m;
    assert_int_equal(cache_snapshot_save(a, path, WALL, &n, &m), 0);
    assert_int_equal(n, 20);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char tmp[140];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);

    fake_now = 5.0; /* another process: another monotonic origin */
    cache_l1_t *b = mk_l1();
    cache_snapshot_load_stats_t ls;
    assert_int_equal(cache_snapshot_load(b, path, WALL + 1000, &ls, &m), 0);
    assert_int_equal(ls.loaded, 20);
    assert_int_equal(ls.expired, 0);
    assert_int_equal(entries(b), 20);
    for (int i = 0; i < 20; i++) {
        cache_key_t k = key_n(i);
        cache_entry_t *x = cache_l1_get(a, &k), *y = cache_l1_get(b, &k);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(x->text_len, y->text_len);
        assert_memory_equal(x->text, y->text, x->text_len);
        assert_int_equal(x->n_chunks, y->n_chunks);
        assert_int_equal(x->n_lp, y->n_lp);
        assert_int_equal(x->finish, y->finish);
        assert_true(x->ns == y->ns);
        assert_true(x->created == y->created);
        assert_string_equal(x->model, y->model);
        cache_entry_release(x);
        cache_entry_release(y);
    }
    /* saving over an existing file replaces it */
    cache_l1_purge_all(a);
    fill(a, 3, 0);
    assert_int_equal(cache_snapshot_save(a, path, WALL, &n, &m), 0);
    cache_l1_t *c = mk_l1();
    assert_int_equal(cache_snapshot_load(c, path, WALL, &ls, &m), 0);
    assert_int_equal(entries(c), 3);
    cache_l1_destroy(a);
    cache_l1_destroy(b);
    cache_l1_destroy(c);
}

static void test_ttl_and_expired(void **st)
{
    (void)st;
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 10, 1000); /* entry i lives (i+1) s */
    fake_now += 2.5;   /* 0 and 1 are expired already: not saved */
    size_t n = 0;
    bar_msg_t m;
    assert_int_equal(cache_snapshot_save(a, path, WALL, &n, &m), 0);
    assert_int_equal(n, 8);

    /* loaded 3 s of wall time later: entries 2..4 (ending at 3.0..5.0 s
     * after fill, i.e. ≤ WALL + 2.5 s) are dropped */
    fake_now = 7.0;
    cache_l1_t *b = mk_l1();
    cache_snapshot_load_stats_t ls;
    assert_int_equal(cache_snapshot_load(b, path, WALL + 2500, &ls, &m), 0);
    assert_int_equal(ls.expired, 3);
    assert_int_equal(ls.loaded, 5);
    /* entry 5 had 6 - 2.5 = 3.5 s left at save, 1 s left now */
    cache_key_t k = key_n(5);
    fake_now += 0.9;
    cache_entry_t *e = cache_l1_get(b, &k);
    assert_non_null(e);
    cache_entry_release(e);
    fake_now += 0.2;
    assert_null(cache_l1_get(b, &k));
    cache_l1_destroy(a);
    cache_l1_destroy(b);
}

static uint8_t *read_file(size_t *n)
{
    uint8_t *p = (uint8_t *)test_read_file(path, n);
    assert_non_null(p);
    return p;
}

static void write_file(const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void expect_refused(const char *what)
{
    cache_l1_t *b = mk_l1();
    bar_msg_t m = {{0}};
    cache_snapshot_load_stats_t ls;
    int rc = cache_snapshot_load(b, path, WALL, &ls, &m);
    if (rc != BAR_ERR_FORMAT) fail_msg("%s: load returned %d", what, rc);
    assert_true(strlen(m.text) > 0);
    assert_int_equal(entries(b), 0);
    assert_int_equal(ls.loaded, 0);
    cache_l1_destroy(b);
}

static void test_truncated(void **st)
{
    (void)st;
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 4, 0);
    bar_msg_t m;
    assert_int_equal(cache_snapshot_save(a, path, WALL, NULL, &m), 0);
    cache_l1_destroy(a);
    size_t n = 0;
    uint8_t *orig = read_file(&n);
    for (size_t k = 0; k < n; k++) {
        write_file(orig, k);
        char what[64];
        snprintf(what, sizeof what, "prefix %zu/%zu", k, n);
        expect_refused(what);
    }
    /* and with a byte appended */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, orig, n);
    longer[n] = 0;
    write_file(longer, n + 1);
    expect_refused("one extra byte");
    free(longer);
    free(orig);
}

static void test_corrupted(void **st)
{
    (void)st;
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 3, 0);
    bar_msg_t m;
    assert_int_equal(cache_snapshot_save(a, path, WALL, NULL, &m), 0);
    cache_l1_destroy(a);
    size_t n = 0;
    uint8_t *orig = read_file(&n);
    uint8_t *c = malloc(n);
    for (size_t pos = 0; pos < n; pos++) {
        memcpy(c, orig, n);
        c[pos] ^= (uint8_t)(0x01 << (pos % 8));
        write_file(c, n);
        char what[64];
        snprintf(what, sizeof what, "flip at %zu/%zu", pos, n);
        expect_refused(what);
    }
    const char junk[] = "this is not a snapshot, just some text that is long enough";
    write_file(junk, sizeof junk);
    expect_refused("text file");
    free(c);
    free(orig);
}

static void test_missing_and_unwritable(void **st)
{
    (void)st;
    cache_l1_t *a = mk_l1();
    bar_msg_t m;
    cache_snapshot_load_stats_t ls;
    unlink(path);
    assert_int_equal(cache_snapshot_load(a, path, WALL, &ls, &m), 0);
    assert_int_equal(ls.loaded, 0);
    fill(a, 2, 0);
    assert_int_equal(cache_snapshot_save(a, "/nonexistent-dir/x/cache.snap", WALL, NULL, &m),
                     BAR_ERR_IO);
    assert_non_null(strstr(m.text, "nonexistent"));
    /* an empty L1 writes a valid empty snapshot */
    cache_l1_purge_all(a);
    size_t n = 99;
    assert_int_equal(cache_snapshot_save(a, path, WALL, &n, &m), 0);
    assert_int_equal(n, 0);
    assert_int_equal(cache_snapshot_load(a, path, WALL, &ls, &m), 0);
    assert_int_equal(ls.loaded, 0);
    /* a directory is not a snapshot */
    assert_int_not_equal(cache_snapshot_load(a, dir, WALL, &ls, &m), 0);
    cache_l1_destroy(a);
}

static void test_collect_then_write(void **st)
{
    (void)st;
    /* the worker-thread path: collect refs, the L1 changes, write */
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 5, 0);
    cache_snap_t *s = cache_snapshot_collect(a, WALL);
    assert_non_null(s);
    assert_int_equal(cache_snapshot_count(s), 5);
    cache_l1_purge_all(a); /* entries live on through the snapshot's refs */
    bar_msg_t m;
    assert_int_equal(cache_snapshot_write(s, path, &m), 0);
    cache_snapshot_free(s);
    cache_snapshot_load_stats_t ls;
    assert_int_equal(cache_snapshot_load(a, path, WALL, &ls, &m), 0);
    assert_int_equal(ls.loaded, 5);
    cache_l1_destroy(a);
}

/* A PATH.tmp left by someone else — a symlink to another file, or a file
 * with loose permissions — is neither followed nor reused: the victim keeps
 * its bytes and the snapshot is created 0600. */
static void test_tmp_symlink_not_followed(void **st)
{
    (void)st;
    char victim[160], tmp[160];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(victim, "w");
    assert_non_null(f);
    fputs("precious", f);
    fclose(f);
    assert_int_equal(symlink(victim, tmp), 0);
    cache_l1_t *a = mk_l1();
    fill(a, 3, 0);
    bar_msg_t m;
    assert_int_equal(cache_snapshot_save(a, path, WALL, NULL, &m), 0);
    size_t n = 0;
    char *v = test_read_file(victim, &n);
    assert_non_null(v);
    assert_string_equal(v, "precious");
    free(v);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    unlink(tmp);
    /* a loose-permission leftover */
    f = fopen(tmp, "w");
    assert_non_null(f);
    fclose(f);
    chmod(tmp, 0666);
    assert_int_equal(cache_snapshot_save(a, path, WALL, NULL, &m), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    cache_l1_destroy(a);
    unlink(victim);
    unlink(tmp);
}

typedef struct {
    const cache_snap_t *s;
    int rounds, fails;
} writer_arg_t;

static void *writer_thread(void *p)
{
    writer_arg_t *w = p;
    for (int i = 0; i < w->rounds; i++) {
        bar_msg_t m;
        if (cache_snapshot_write(w->s, path, &m)) w->fails++;
    }
    return NULL;
}

/* Two writers at once (the periodic writer and the shutdown save) never
 * interleave their bytes: the file is valid after every round. */
static void test_concurrent_writers(void **st)
{
    (void)st;
    fake_now = 100.0;
    cache_l1_t *a = mk_l1();
    fill(a, 200, 0);
    cache_snap_t *s = cache_snapshot_collect(a, WALL);
    assert_non_null(s);
    writer_arg_t w1 = {s, 30, 0}, w2 = {s, 30, 0};
    pthread_t t1, t2;
    assert_int_equal(pthread_create(&t1, NULL, writer_thread, &w1), 0);
    assert_int_equal(pthread_create(&t2, NULL, writer_thread, &w2), 0);
    cache_l1_t *b = mk_l1();
    int bad = 0;
    for (int i = 0; i < 40; i++) {
        cache_snapshot_load_stats_t ls;
        bar_msg_t m;
        if (access(path, F_OK) == 0 && cache_snapshot_load(b, path, WALL, &ls, &m) != 0) bad++;
        cache_l1_purge_all(b);
    }
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(w1.fails + w2.fails, 0);
    cache_snapshot_load_stats_t ls;
    bar_msg_t m;
    assert_int_equal(cache_snapshot_load(b, path, WALL, &ls, &m), 0);
    assert_int_equal(ls.loaded, 200);
    assert_int_equal(bad, 0);
    cache_snapshot_free(s);
    cache_l1_destroy(a);
    cache_l1_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_and_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_collect_then_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_symlink_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
