/* access_log.c — JSON lines, one per request (see access_log.h). */
#include "obs/access_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "util/buf.h"

struct obs_alog {
    FILE *f;
    int own; /* fclose on close (not stdout) */
    buf_t line;
};

int obs_alog_open(obs_alog_t **out, const char *path, bar_msg_t *msg)
{
    obs_alog_t *l = calloc(1, sizeof *l);
    if (!l) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    if (!strcmp(path, "-")) {
        l->f = stdout;
    } else {
        l->f = fopen(path, "a");
        if (!l->f) {
            int e = errno;
            free(l);
            return bar_fail(msg, BAR_ERR_IO, "--access-log %s: %s", path, strerror(e));
        }
        l->own = 1;
    }
    *out = l;
    return 0;
}

void obs_alog_close(obs_alog_t *l)
{
    if (!l) return;
    if (l->own)
        fclose(l->f);
    else
        fflush(l->f);
    buf_free(&l->line);
    free(l);
}

static void jfield(buf_t *b, const char *name, const char *v)
{
    buf_printf(b, ",\"%s\":", name);
    if (v && *v)
        buf_json_str(b, v, strlen(v));
    else
        buf_puts(b, "null");
}

void obs_alog_write(obs_alog_t *l, const obs_trace_t *t, const char *peer, const char *method,
                    const char *path, size_t path_n)
{
    if (!l) return;
    buf_t *b = &l->line;
    buf_clear(b);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(b, "{\"time\":\"%s.%03dZ\",\"id\":", ts, (int)(tv.tv_usec / 1000));
    buf_json_str(b, t->id, strlen(t->id));
    jfield(b, "peer", peer);
    jfield(b, "method", method);
    buf_puts(b, ",\"path\":");
    if (path)
        buf_json_str(b, path, path_n);
    else
        buf_puts(b, "null");
    jfield(b, "endpoint", t->endpoint);
    buf_printf(b, ",\"status\":%d", t->status);
    jfield(b, "model", t->model);
    jfield(b, "tenant", t->tenant);
    jfield(b, "cache", t->cache);
    if (t->tokens_in >= 0)
        buf_printf(b, ",\"tokens_in\":%d,\"tokens_out\":%d,\"tokens_cached\":%d", t->tokens_in,
                   t->tokens_out, t->tokens_cached);
    else
        buf_puts(b, ",\"tokens_in\":null,\"tokens_out\":null,\"tokens_cached\":null");
    buf_printf(b, ",\"bytes\":%zu,\"timings_ms\":", t->bytes_out);
    obs_trace_json(t, t->t0 + (t->have & (1u << OBS_TOTAL) ? t->dur[OBS_TOTAL] : 0), b);
    jfield(b, "fallback", t->fallback);
    jfield(b, "replica", t->replica);
    buf_puts(b, t->local ? ",\"local\":true" : ",\"local\":false");
    if (buf_puts(b, "}\n")) return; /* out of memory: no half line */
    fwrite(b->p, 1, b->n, l->f);
    fflush(l->f);
}
