/* cache_snapshot.h — --cache-file: the L1's live entries written to disk
 * and read back at start, so a single-machine restart keeps its cache.
 *
 * File format (little-endian), version 1:
 *   "BARSNAP\0" | u32 version | u32 0 | u64 count |
 *   count × { i64 expires_unix_ms (0 = never) | u32 len | len bytes: one
 *             cache_entry_encode() record, with its own checksum } |
 *   u64 XXH3-64 of everything before it.
 * Records are in the L1's coldest-first order and are re-inserted in that
 * order as warm entries. Expiry is stored as absolute wall-clock time (the
 * remaining TTL at save time), because monotonic time does not survive a
 * reboot; entries whose expiry passed are dropped on load.
 *
 * Writing is crash-safe: PATH.tmp.XXXXXX is written (mode 0600), fsynced, renamed
 * over PATH, and the directory is fsynced. Loading never trusts the file: a
 * wrong magic, version or checksum, a truncated record or a bad entry means
 * the whole file is refused (BAR_ERR_FORMAT with a message for the warning
 * log) and the cache starts empty.
 *
 * Threads: collect/free/load on the loop thread (they touch the L1 and
 * refcounts); cache_snapshot_write reads only immutable entries and may run
 * on a worker thread (uv_queue_work) so a large snapshot never blocks the
 * loop. Not for: Redis, policy. */
#ifndef BARISTA_CACHE_CACHE_SNAPSHOT_H
#define BARISTA_CACHE_CACHE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_l1.h"
#include "util/err.h"

typedef struct cache_snap cache_snap_t;

/* Loop thread: take a reference to every live entry of l1 with its expiry
 * converted to wall-clock ms (now_wall_ms: the current unix time in ms).
 * NULL on OOM. */
cache_snap_t *cache_snapshot_collect(cache_l1_t *l1, int64_t now_wall_ms);
size_t cache_snapshot_count(const cache_snap_t *s);

/* Any thread: write the collected entries to path via a new temporary file
 * of its own (path.tmp.XXXXXX, created exclusively with mode 0600: never a
 * leftover or a symlink), fsync, rename over path, fsync the directory.
 * Concurrent writers each install a complete file (the last rename wins;
 * callers that care which one order them). 0, BAR_ERR_IO or BAR_ERR_NOMEM
 * with msg set; on failure path is untouched and the temporary removed. */
int cache_snapshot_write(const cache_snap_t *s, const char *path, bar_msg_t *msg);

/* Loop thread: drop the references. NULL is fine. */
void cache_snapshot_free(cache_snap_t *s);

/* collect + write + free in one call (shutdown). *n_written may be NULL. */
int cache_snapshot_save(cache_l1_t *l1, const char *path, int64_t now_wall_ms, size_t *n_written,
                        bar_msg_t *msg);

typedef struct {
    size_t loaded;  /* inserted into the L1 */
    size_t expired; /* dropped: TTL passed */
    size_t refused; /* the L1 refused them (larger than its entry limit) */
} cache_snapshot_load_stats_t;

/* Loop thread: read path into l1. A missing file is not an error (0, nothing
 * loaded). A corrupt or truncated file → BAR_ERR_FORMAT with msg, nothing
 * inserted; unreadable → BAR_ERR_IO. st may be NULL. */
int cache_snapshot_load(cache_l1_t *l1, const char *path, int64_t now_wall_ms,
                        cache_snapshot_load_stats_t *st, bar_msg_t *msg);

#endif
