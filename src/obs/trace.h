/* trace.h — one request's trace: its id, where its time went stage by
 * stage, and what the access log and the metrics say about it.
 *
 * The server embeds one obs_trace_t in every request (srv_req_obs): it starts
 * it when the request is complete (obs_trace_begin, which takes or makes the
 * X-Request-Id), puts X-Request-Id and Server-Timing on the head
 * (obs_trace_headers) and closes it when the last byte is written. The API
 * layer marks its stage boundaries (obs_trace_mark: one call each) and fills
 * the fields it knows (model, tenant, cache tier, tokens, backend timings,
 * the replica a gateway's backend reports, the fallback step). Everything
 * is plain data:
 * no allocation, no locking (one loop owns a request).
 *
 * Stage names (Server-Timing metric names, docs/METRICS.md): auth, parse,
 * cache, semantic, admit, queue, prefill, ttft, decode, upstream, write,
 * total. Durations are seconds; a stage never measured is left out.
 * Not for: aggregation (metrics.h), writing the log (access_log.h). */
#ifndef BARISTA_OBS_TRACE_H
#define BARISTA_OBS_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

typedef enum {
    OBS_AUTH = 0, /* routing and authentication (request read → handler) */
    OBS_PARSE,    /* JSON + schema, model, tenant, limits */
    OBS_CACHE,    /* the exact tiers' lookup (L1, then L2) and single-flight */
    OBS_SEMANTIC, /* embedding the query and the semantic lookup */
    OBS_ADMIT,    /* admission control */
    OBS_QUEUE,    /* waiting for an engine slot (backend) */
    OBS_PREFILL,  /* slot → first token (backend) */
    OBS_TTFT,     /* request read → first token reached this client */
    OBS_DECODE,   /* first token → last token */
    OBS_UPSTREAM, /* an upstream server's part */
    OBS_WRITE,    /* last token (or head) → last byte handed to the socket */
    OBS_TOTAL,    /* request read → head (header) / last byte (log, metrics) */
    OBS_N_STAGES
} obs_stage_t;

#define OBS_ID_MAX 128

typedef struct {
    char id[OBS_ID_MAX + 1]; /* X-Request-Id: the client's, or made here */
    int id_given;            /* the client sent a valid one */
    double t0;               /* monotonic seconds: the request was read */
    double last;             /* the last stage boundary */
    double t_first;          /* the first token reached this client (0: none) */
    double dur[OBS_N_STAGES];
    unsigned have; /* bit i: dur[i] was measured */
    /* what the request was: filled by whoever knows it (may stay empty) */
    const char *endpoint; /* static label, e.g. "chat" */
    const char *cache;    /* "L1", "L2", "semantic", "MISS", "BYPASS", "COALESCED"; NULL: none */
    char model[64];
    char tenant[64];   /* the tenant's name (tenants module) */
    char fallback[64]; /* the fallback step that answered (X-Fallback), or "exhausted" */
    char replica[128]; /* the replica that answered (gateway: its api_base) */
    int tokens_in, tokens_out, tokens_cached; /* -1: not a generation */
    int status;
    size_t bytes_out;
    int finished; /* obs_trace_end ran */
    int local;    /* no socket: a batch line or a Prefer: respond-async request */
} obs_trace_t;

/* An id maker: a random per-process prefix and a counter. */
typedef struct {
    uint64_t prefix, seq;
    char prefix_hex[16]; /* the prefix's digits, made once */
} obs_idgen_t;

/* Seed g (from the clock, the pid and the address of g). */
void obs_idgen_init(obs_idgen_t *g);

/* Whether id (n bytes) may be echoed: 1..128 bytes of printable ASCII
 * (0x21..0x7e; no spaces, no control characters). */
int obs_id_valid(const char *id, size_t n);

/* Start t at t0: take the client's X-Request-Id (given, n bytes; NULL when
 * absent) when obs_id_valid, else make one with g (32 hex digits; g NULL:
 * the id stays empty, for requests never logged such as local ones). */
void obs_trace_begin(obs_trace_t *t, double t0, const char *given, size_t n, obs_idgen_t *g);

/* A stage ended now: add the time since the previous boundary to it. */
void obs_trace_mark(obs_trace_t *t, obs_stage_t st, double now);

/* Set a stage's duration measured elsewhere (the backend's), seconds >= 0. */
void obs_trace_set(obs_trace_t *t, obs_stage_t st, double seconds);

/* The first token reached this client now (ttft; later calls do nothing). */
void obs_trace_first_token(obs_trace_t *t, double now);

/* A generation for this client finished now: tokens, and the backend's queue
 * time and time to first token from submit (seconds, 0: unknown) → queue,
 * prefill; decode = now - first token. */
void obs_trace_generated(obs_trace_t *t, double now, int n_prompt, int n_gen, int n_cached,
                         double t_queue, double t_first_from_submit);

/* Token counts of the reply (a cache hit's stored usage, say). */
void obs_trace_tokens(obs_trace_t *t, int n_prompt, int n_gen, int n_cached);

/* Which cache tier answered, or MISS/BYPASS/COALESCED (a static string). */
void obs_trace_cache(obs_trace_t *t, const char *tier);

/* Bounded copy of a NUL-terminated string into one of t's fields. */
void obs_trace_set_str(char *field, size_t size, const char *s);
#define OBS_TRACE_SET(t, member, s) obs_trace_set_str((t)->member, sizeof((t)->member), (s))

/* Append "X-Request-Id: ...\r\nServer-Timing: ...\r\n" with what is known
 * now (total = t0 → now). 0 or BAR_ERR_NOMEM. */
int obs_trace_headers(const obs_trace_t *t, double now, buf_t *out);

/* Append the timings as a JSON object of milliseconds:
 * {"parse":0.012,...,"total":15.7}; total = t0 → now. */
int obs_trace_json(const obs_trace_t *t, double now, buf_t *out);

/* Close t: status, bytes written, write and total stages. Idempotent. */
void obs_trace_end(obs_trace_t *t, double now, int status, size_t bytes_out);

/* The Server-Timing name of a stage. */
const char *obs_stage_name(obs_stage_t st);

#endif
