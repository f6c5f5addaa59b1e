/* cache_snapshot.c — L1 snapshot files (format and rules in
 * cache_snapshot.h). Not for: deciding when to snapshot (the server's timer
 * and shutdown hook do that). */
#include "cache/cache_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/buf.h"
#include "util/mfile.h"

#define SNAP_MAGIC "BARSNAP" /* + NUL = 8 bytes */
#define SNAP_VERSION 1
#define SNAP_HEAD 24
#define REC_HEAD 12
#define MIN_ENTRY 92 /* smallest cache_entry_encode() record */

typedef struct {
    cache_entry_t *e;
    int64_t expires_ms; /* 0 = never */
} snap_item_t;

struct cache_snap {
    snap_item_t *items;
    size_t n, cap;
    int64_t now_wall_ms;
    double now_mono;
};

static int collect_one(void *ctx, cache_entry_t *e, double expires)
{
    cache_snap_t *s = ctx;
    int64_t exp_ms = 0;
    if (expires > 0) {
        double left_ms = (expires - s->now_mono) * 1e3;
        if (left_ms < 1) return 0;
        exp_ms = s->now_wall_ms + (int64_t)left_ms;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        snap_item_t *p = realloc(s->items, cap * sizeof *p);
        if (!p) return BAR_ERR_NOMEM;
        s->items = p;
        s->cap = cap;
    }
    s->items[s->n++] = (snap_item_t){cache_entry_ref(e), exp_ms};
    return 0;
}

cache_snap_t *cache_snapshot_collect(cache_l1_t *l1, int64_t now_wall_ms)
{
    cache_snap_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->now_wall_ms = now_wall_ms;
    s->now_mono = cache_l1_now(l1);
    if (cache_l1_foreach(l1, collect_one, s)) {
        cache_snapshot_free(s);
        return NULL;
    }
    return s;
}

size_t cache_snapshot_count(const cache_snap_t *s)
{
    return s ? s->n : 0;
}

void cache_snapshot_free(cache_snap_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++)
        cache_entry_release(s->items[i].e);
    free(s->items);
    free(s);
}

static void le64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void le32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rd64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static uint32_t rd32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* write, feeding the checksum */
static int put(int fd, XXH3_state_t *h, const void *p, size_t n)
{
    XXH3_64bits_update(h, p, n);
    return write_all(fd, p, n);
}

static void fsync_dir(const char *path)
{
    char *dup = strdup(path);
    if (!dup) return;
    int fd = open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dup);
}

int cache_snapshot_write(const cache_snap_t *s, const char *path, bar_msg_t *msg)
{
    /* A temp name of our own (mkostemp: O_CREAT|O_EXCL, mode 0600), so two
     * writers never share a file, a leftover PATH.tmp — a symlink planted
     * there, or a file with loose permissions — is never opened, and the
     * rename installs one complete file. */
    static const char suffix[] = ".tmp.XXXXXX";
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof suffix);
    XXH3_state_t *h = XXH3_createState();
    if (!tmp || !h) {
        free(tmp);
        XXH3_freeState(h);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, suffix, sizeof suffix);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int rc =
            bar_fail(msg, BAR_ERR_IO, "cache snapshot: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        XXH3_freeState(h);
        return rc;
    }
    XXH3_64bits_reset(h);
    int rc = 0;
    const char *what = "write";
    uint8_t head[SNAP_HEAD] = {0};
    memcpy(head, SNAP_MAGIC, 8);
    le32(head + 8, SNAP_VERSION);
    le64(head + 16, s->n);
    if (put(fd, h, head, sizeof head)) rc = BAR_ERR_IO;
    buf_t b = {0};
    for (size_t i = 0; i < s->n && !rc; i++) {
        buf_clear(&b);
        uint8_t rh[REC_HEAD] = {0};
        if (buf_append(&b, rh, sizeof rh) || cache_entry_encode(s->items[i].e, &b)) {
            rc = BAR_ERR_NOMEM;
            what = "encode";
            break;
        }
        le64((uint8_t *)b.p, (uint64_t)s->items[i].expires_ms);
        le32((uint8_t *)b.p + 8, (uint32_t)(b.n - REC_HEAD));
        if (put(fd, h, b.p, b.n)) rc = BAR_ERR_IO;
    }
    buf_free(&b);
    if (!rc) {
        uint8_t tail[8];
        le64(tail, XXH3_64bits_digest(h));
        if (write_all(fd, tail, 8)) rc = BAR_ERR_IO;
    }
    if (!rc && fsync(fd)) {
        rc = BAR_ERR_IO;
        what = "fsync";
    }
    int err = errno;
    if (close(fd) && !rc) {
        rc = BAR_ERR_IO;
        what = "close";
        err = errno;
    }
    if (!rc && rename(tmp, path)) {
        rc = BAR_ERR_IO;
        what = "rename";
        err = errno;
    }
    if (rc) {
        bar_fail(msg, rc, "cache snapshot: %s of %s failed: %s", what, tmp,
                 rc == BAR_ERR_NOMEM ? "out of memory" : strerror(err));
        unlink(tmp);
    } else {
        fsync_dir(path);
    }
    free(tmp);
    XXH3_freeState(h);
    return rc;
}

int cache_snapshot_save(cache_l1_t *l1, const char *path, int64_t now_wall_ms, size_t *n_written,
                        bar_msg_t *msg)
{
    cache_snap_t *s = cache_snapshot_collect(l1, now_wall_ms);
    if (!s) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    int rc = cache_snapshot_write(s, path, msg);
    if (n_written) *n_written = rc ? 0 : s->n;
    cache_snapshot_free(s);
    return rc;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        rc = bar_fail(msg, BAR_ERR_FORMAT, __VA_ARGS__);                                           \
        goto out;                                                                                  \
    } while (0)

int cache_snapshot_load(cache_l1_t *l1, const char *path, int64_t now_wall_ms,
                        cache_snapshot_load_stats_t *st, bar_msg_t *msg)
{
    cache_snapshot_load_stats_t dummy;
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    struct stat sb;
    if (stat(path, &sb)) {
        if (errno == ENOENT) return 0;
        return bar_fail(msg, BAR_ERR_IO, "cache snapshot %s: %s", path, strerror(errno));
    }
    mfile_t f;
    int rc = mfile_open(&f, path, msg);
    if (rc) return rc;
    snap_item_t *items = NULL;
    size_t n_items = 0;
    const uint8_t *p = f.data;
    size_t n = f.size;
    if (n < SNAP_HEAD + 8) BAD("cache snapshot %s: truncated (%zu bytes)", path, n);
    if (memcmp(p, SNAP_MAGIC, 8)) BAD("cache snapshot %s: not a barista cache snapshot", path);
    if (rd32(p + 8) != SNAP_VERSION)
        BAD("cache snapshot %s: unsupported version %u", path, rd32(p + 8));
    if (rd64(p + n - 8) != XXH3_64bits(p, n - 8))
        BAD("cache snapshot %s: checksum mismatch (truncated or corrupt)", path);
    uint64_t count = rd64(p + 16);
    if (count > (n - SNAP_HEAD - 8) / (REC_HEAD + MIN_ENTRY))
        BAD("cache snapshot %s: %llu records cannot fit in %zu bytes", path,
            (unsigned long long)count, n);
    items = calloc(count ? count : 1, sizeof *items);
    if (!items) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t off = SNAP_HEAD, end = n - 8;
    for (uint64_t i = 0; i < count; i++) {
        if (end - off < REC_HEAD)
            BAD("cache snapshot %s: record %llu truncated", path, (unsigned long long)i);
        int64_t exp = (int64_t)rd64(p + off);
        uint32_t len = rd32(p + off + 8);
        off += REC_HEAD;
        if (len > end - off)
            BAD("cache snapshot %s: record %llu truncated", path, (unsigned long long)i);
        bar_msg_t em;
        cache_entry_t *e;
        if (cache_entry_decode(p + off, len, &e, &em)) {
            rc = bar_fail(msg, BAR_ERR_FORMAT, "cache snapshot %s: record %llu: %s", path,
                          (unsigned long long)i, em.text);
            goto out;
        }
        items[n_items++] = (snap_item_t){e, exp};
        off += len;
    }
    if (off != end) BAD("cache snapshot %s: %zu bytes after the last record", path, end - off);

    for (size_t i = 0; i < n_items; i++) {
        int64_t exp = items[i].expires_ms;
        if (exp && exp <= now_wall_ms) {
            st->expired++;
            continue;
        }
        uint64_t ttl = exp ? (uint64_t)(exp - now_wall_ms) : 0;
        int prc = cache_l1_put(l1, items[i].e, ttl, CACHE_L1_WARM);
        if (prc == BAR_ERR_NOMEM) {
            rc = bar_fail(msg, prc, "out of memory");
            goto out;
        }
        if (prc)
            st->refused++;
        else
            st->loaded++;
    }
out:
    for (size_t i = 0; i < n_items; i++)
        cache_entry_release(items[i].e);
    free(items);
    mfile_close(&f);
    return rc;
}
