/* mfile.h — a whole file mapped read-only (model weights, snapshots).
 *
 * The mapping is never written; every reader bounds-checks against `size`. */
#ifndef BARISTA_UTIL_MFILE_H
#define BARISTA_UTIL_MFILE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} mfile_t;

/* Map `path` read-only into *out. Returns 0 or BAR_ERR_IO with msg set. */
int mfile_open(mfile_t *out, const char *path, bar_msg_t *msg);

/* Unmap; safe on a zeroed mfile_t. */
void mfile_close(mfile_t *f);

#endif
