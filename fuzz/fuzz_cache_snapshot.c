/* fuzz_cache_snapshot.c — libFuzzer target for the --cache-file reader
 * (src/cache/cache_snapshot.c: cache_snapshot_load), the file barista reads
 * at start. The whole file is checked against a trailing XXH3-64, which a
 * mutation almost never keeps right, so when the input's first byte is odd
 * the harness writes the rest followed by its correct checksum: mutations
 * then reach the header, the record framing and every record's decoder.
 *
 * A refused file must give BAR_ERR_FORMAT (or NOMEM) with a message and
 * leave the L1 empty; an accepted one inserts loaded entries and accounts
 * for every record (loaded + expired + refused = the records read). Seeds:
 * fuzz/corpus/cache_snapshot/ (first byte: the checksum switch). Not for:
 * anything but fuzzing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cache_l1.h"
#include "cache/cache_snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz-cache-snapshot-%d", (int)getpid());
    if (size < 1) return 0;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    size_t n = size - 1;
    if (n && fwrite(data + 1, 1, n, f) != n) abort();
    if (data[0] & 1) {
        uint64_t h = XXH3_64bits(data + 1, n);
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(h >> (8 * i));
        if (fwrite(le, 1, 8, f) != 8) abort();
    }
    if (fclose(f)) abort();

    cache_l1_opts_t o = {.budget_bytes = 1u << 20, .max_entry_bytes = 1u << 16};
    cache_l1_t *l1 = cache_l1_create(&o);
    if (!l1) abort();
    cache_snapshot_load_stats_t st = {0};
    bar_msg_t msg;
    msg.text[0] = '\0';
    /* a fixed "now": records expiring before it are dropped */
    int rc = cache_snapshot_load(l1, path, 1700000000000LL, &st, &msg);
    cache_l1_stats_t ls;
    cache_l1_stats(l1, &ls);
    if (rc) {
        if ((rc != BAR_ERR_FORMAT && rc != BAR_ERR_NOMEM) || !msg.text[0]) abort();
        if (ls.entries != 0 || st.loaded != 0) abort();
    } else if (ls.entries > st.loaded) {
        abort();
    }
    cache_l1_destroy(l1);
    return 0;
}
