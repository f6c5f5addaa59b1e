/* access_log.h — the structured access log: one JSON line per request.
 *
 * `--access-log FILE` appends to FILE, `--access-log -` writes to stdout.
 * Each line (docs/METRICS.md): time (UTC, ms), id, peer, method, path,
 * endpoint, status, model, tenant, cache tier, tokens in/out/cached, bytes,
 * timings in ms (the Server-Timing stages), fallback step, replica, local
 * (a request without a socket: batch line, Prefer: respond-async). Lines
 * are written whole with one fwrite on the loop thread and flushed at once,
 * so a crash loses at most the request in flight and `tail -f` works.
 * Not for: debug logging (stderr), metrics. */
#ifndef BARISTA_OBS_ACCESS_LOG_H
#define BARISTA_OBS_ACCESS_LOG_H

#include <stddef.h>

#include "obs/trace.h"
#include "util/err.h"

typedef struct obs_alog obs_alog_t;

/* Open path for appending ("-": stdout). Ownership: *out is freed by
 * obs_alog_close. 0 or an error with msg. */
int obs_alog_open(obs_alog_t **out, const char *path, bar_msg_t *msg);
void obs_alog_close(obs_alog_t *l);

/* One line for a finished request (t closed by obs_trace_end). peer,
 * method, path: NUL-terminated / path_n bytes; any may be NULL. */
void obs_alog_write(obs_alog_t *l, const obs_trace_t *t, const char *peer, const char *method,
                    const char *path, size_t path_n);

#endif
