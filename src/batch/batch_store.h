/* batch_store.h — the durable side of the Files and Batch API: blocking
 * file-system steps (atomic whole-file writes, fsynced appends, reads) and
 * the pure parsing of a batch input line.
 *
 * Layout under --data-dir:
 *   files/<file-id>.json    a file's metadata (owner, name, purpose, bytes, lines)
 *   files/<file-id>.jsonl   its bytes
 *   batches/<batch-id>.json a batch's state (rewritten atomically on each state change)
 *   batches/<batch-id>.out  result lines of answered requests, appended and fsynced
 *   batches/<batch-id>.err  result lines of failed or malformed requests, likewise
 * A request is done exactly when its line is in .out or .err: the result is
 * written before it counts, and a resumed batch skips every custom_id found
 * there (a torn last line is cut off first).
 *
 * Every function here blocks: call them from a libuv worker (uv_queue_work)
 * or at start-up, never on the loop for bulk data. Not for: HTTP, the batch
 * state machine (src/api/batches_run.c, batches_state.c). */
#ifndef BARISTA_BATCH_BATCH_STORE_H
#define BARISTA_BATCH_BATCH_STORE_H

#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

/* Create dir, dir/files and dir/batches if missing. */
int batch_store_open(const char *dir, bar_msg_t *msg);

/* Write path atomically: path.tmp, fsync, rename, fsync the directory. */
int batch_store_write(const char *path, const void *p, size_t n, bar_msg_t *msg);

/* Read a whole file into out (appended). BAR_ERR_IO when missing. */
int batch_store_read(const char *path, buf_t *out, bar_msg_t *msg);

/* Append n bytes to the open fd (O_APPEND) in one write and fdatasync. */
int batch_store_append(int fd, const void *p, size_t n, bar_msg_t *msg);

/* Cut a file's torn last line (bytes after its last '\n'); returns the
 * file's kept contents in out when out is not NULL. 0 also when missing. */
int batch_store_trim(const char *path, buf_t *out, bar_msg_t *msg);

/* Call take(ud, o) for every "*.json" record in dir (start-up: files/ and
 * batches/), with o its parsed JSON, NULL when it cannot be read or parsed.
 * take returns 0 when it kept the record; otherwise the record is reported
 * on stderr as "skipping unreadable <what> record PATH" and left on disk.
 * 0, or BAR_ERR_IO when dir cannot be read. */
struct cJSON;
int batch_store_each_record(const char *dir, const char *what,
                            int (*take)(void *ud, const struct cJSON *o), void *ud, bar_msg_t *msg);

/* Hard-link (or copy, when links fail) src to dst atomically. */
int batch_store_link(const char *src, const char *dst, bar_msg_t *msg);

/* ---- one line of a batch input file ---- */

typedef struct {
    char custom_id[128];
    char *body; /* the request body as JSON text without "stream", "stream_options" and
                   "priority" (a line runs at the batch priority); malloc'd */
    size_t body_len;
} batch_line_t;

/* Parse one JSONL line {custom_id, method, url, body}: custom_id a non-empty
 * string up to 127 bytes, method "POST", url equal to endpoint, body an
 * object. 0 (out->body is the caller's to free), or -1 with code (an
 * OpenAI-style code) and why; out->custom_id is set whenever the line had
 * one, so the error line can name it. */
int batch_line_parse(const char *line, size_t n, const char *endpoint, batch_line_t *out,
                     const char **code, char *why, size_t why_size);

/* The custom_id of a result line (.out/.err), or "" — for resuming.
 * Returns 1 when the line is a request's result (its "response" is an
 * object), 0 for a validation error (response null) or an unreadable line. */
int batch_result_custom_id(const char *line, size_t n, char out[128]);

#endif
