/* err.h — barista's one error contract.
 *
 * Functions that can fail return 0 on success or a negative bar_err_t. Human
 * detail (which byte, which tensor, which field) goes into a caller-given
 * message buffer (bar_msg_t), never to stderr. Not for: programmer mistakes,
 * which are assert()s. */
#ifndef BARISTA_UTIL_ERR_H
#define BARISTA_UTIL_ERR_H

#include <stddef.h>

typedef enum {
    BAR_OK = 0,
    BAR_ERR_NOMEM = -1,       /* allocation failed */
    BAR_ERR_IO = -2,          /* open/read/mmap/write failed */
    BAR_ERR_FORMAT = -3,      /* malformed input file or data */
    BAR_ERR_UNSUPPORTED = -4, /* well-formed but not something we implement */
    BAR_ERR_INVALID = -5,     /* bad argument or request value */
    BAR_ERR_RANGE = -6,       /* value out of the allowed range / too large */
    BAR_ERR_NOTFOUND = -7,    /* a named thing does not exist */
    BAR_ERR_BUSY = -8,        /* try again later (queue full, shutting down) */
    BAR_ERR_TIMEOUT = -9,     /* a deadline passed */
    BAR_ERR_CANCELLED = -10,  /* the caller cancelled */
    BAR_ERR_INTERNAL = -11,   /* should not happen; a bug */
} bar_err_t;

/* Static string naming the code; never NULL. */
const char *bar_strerror(int err);

/* A caller-owned buffer for an error's detail. */
typedef struct {
    char text[512];
} bar_msg_t;

/* printf into msg (if non-NULL) and return err, so call sites read
 * `return bar_fail(msg, BAR_ERR_FORMAT, "offset %zu: ...", off);` */
int bar_fail(bar_msg_t *msg, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
