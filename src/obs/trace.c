/* trace.c — a request's id and stage timings (see trace.h). On the hit path
 * of every request: no printf, no allocation beyond the caller's buffer. */
#include "obs/trace.h"

#include <string.h>
#include <unistd.h>

#include "util/err.h"
#include "util/timeutil.h"

static const char *const STAGE_NAMES[OBS_N_STAGES] = {
    "auth",    "parse", "cache",  "semantic", "admit", "queue",
    "prefill", "ttft",  "decode", "upstream", "write", "total",
};

const char *obs_stage_name(obs_stage_t st)
{
    return (unsigned)st < OBS_N_STAGES ? STAGE_NAMES[st] : "?";
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* 16 hex digits of v, two per byte from a table. */
static void hex16(char *out, uint64_t v)
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 14; i >= 0; i -= 2) {
        unsigned b = (unsigned)(v & 0xff);
        out[i] = hx[b >> 4];
        out[i + 1] = hx[b & 15];
        v >>= 8;
    }
}

void obs_idgen_init(obs_idgen_t *g)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    s ^= (uint64_t)getpid() << 32;
    s ^= (uint64_t)(uintptr_t)g;
    s ^= (uint64_t)(time_now_mono() * 1e9);
    g->prefix = mix64(s);
    g->seq = mix64(s ^ 0x9e3779b97f4a7c15ull);
    hex16(g->prefix_hex, g->prefix);
}

int obs_id_valid(const char *id, size_t n)
{
    if (!id || n == 0 || n > OBS_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e) return 0;
    return 1;
}

void obs_trace_begin(obs_trace_t *t, double t0, const char *given, size_t n, obs_idgen_t *g)
{
    t->t0 = t0;
    t->last = t0;
    t->t_first = 0;
    t->have = 0;
    t->endpoint = NULL;
    t->cache = NULL;
    t->model[0] = t->tenant[0] = t->fallback[0] = t->replica[0] = '\0';
    t->tokens_in = t->tokens_out = t->tokens_cached = -1;
    t->status = 0;
    t->bytes_out = 0;
    t->finished = 0;
    t->local = 0;
    if (obs_id_valid(given, n)) {
        memcpy(t->id, given, n);
        t->id[n] = '\0';
        t->id_given = 1;
        return;
    }
    t->id_given = 0;
    if (!g) { /* no id maker: no id */
        t->id[0] = '\0';
        return;
    }
    /* a counter scrambled by a bijection: unique within the process, and
     * the random prefix makes clashes between processes unlikely */
    memcpy(t->id, g->prefix_hex, 16);
    hex16(t->id + 16, mix64(++g->seq));
    t->id[32] = '\0';
}

void obs_trace_mark(obs_trace_t *t, obs_stage_t st, double now)
{
    double d = now - t->last;
    if (d < 0) d = 0;
    if (t->have & (1u << st))
        t->dur[st] += d;
    else
        t->dur[st] = d;
    t->have |= 1u << st;
    t->last = now;
}

void obs_trace_set(obs_trace_t *t, obs_stage_t st, double seconds)
{
    t->dur[st] = seconds > 0 ? seconds : 0;
    t->have |= 1u << st;
}

void obs_trace_first_token(obs_trace_t *t, double now)
{
    if (t->t_first > 0) return;
    t->t_first = now;
    obs_trace_set(t, OBS_TTFT, now - t->t0);
}

void obs_trace_generated(obs_trace_t *t, double now, int n_prompt, int n_gen, int n_cached,
                         double t_queue, double t_first_from_submit)
{
    t->tokens_in = n_prompt;
    t->tokens_out = n_gen;
    t->tokens_cached = n_cached;
    if (t_queue > 0) obs_trace_set(t, OBS_QUEUE, t_queue);
    if (t_first_from_submit > 0)
        obs_trace_set(t, OBS_PREFILL, t_first_from_submit - (t_queue > 0 ? t_queue : 0));
    if (t->t_first > 0) obs_trace_set(t, OBS_DECODE, now - t->t_first);
    t->last = now;
}

void obs_trace_tokens(obs_trace_t *t, int n_prompt, int n_gen, int n_cached)
{
    t->tokens_in = n_prompt;
    t->tokens_out = n_gen;
    t->tokens_cached = n_cached;
}

void obs_trace_cache(obs_trace_t *t, const char *tier)
{
    t->cache = tier;
}

void obs_trace_set_str(char *field, size_t size, const char *s)
{
    if (!size) return;
    size_t n = s ? strlen(s) : 0;
    if (n >= size) n = size - 1;
    if (n) memcpy(field, s, n);
    field[n] = '\0';
}

/* Milliseconds with 3 decimals ("15.672"), without printf. Returns the
 * length written into out (at least 24 bytes). The digits are written in
 * place once their count is known: no scratch copy (which the compiler made
 * a memcpy call per stage). */
static size_t fmt_ms(char *out, double seconds)
{
    if (!(seconds > 0)) seconds = 0;
    if (seconds > 1e9) seconds = 1e9;
    unsigned long long us = (unsigned long long)(seconds * 1e6 + 0.5);
    unsigned long long ip = us / 1000; /* <= 1e12: 13 digits */
    unsigned fp = (unsigned)(us - ip * 1000);
    size_t n = 1;
    for (unsigned long long p10 = 10; n < 13 && ip >= p10; p10 *= 10)
        n++;
    char *d = out + n;
    do
        *--d = (char)('0' + ip % 10);
    while (ip /= 10);
    out[n] = '.';
    out[n + 1] = (char)('0' + fp / 100);
    out[n + 2] = (char)('0' + fp / 10 % 10);
    out[n + 3] = (char)('0' + fp % 10);
    return n + 4;
}

/* Each stage's name as it starts a Server-Timing entry / a JSON member,
 * padded to 16 bytes: copied with one fixed-size memcpy (a variable-length
 * one became `rep movs`, the slowest part of a hit's headers). */
typedef struct {
    char s[16];
    unsigned char n;
} prefix_t;

static const prefix_t ST_PREFIX[2][OBS_N_STAGES] = {
#define P(x)                                                                                       \
    {                                                                                              \
        x, sizeof(x) - 1                                                                           \
    }
    {P("auth;dur="), P("parse;dur="), P("cache;dur="), P("semantic;dur="), P("admit;dur="),
     P("queue;dur="), P("prefill;dur="), P("ttft;dur="), P("decode;dur="), P("upstream;dur="),
     P("write;dur="), P("total;dur=")},
    {P("\"auth\":"), P("\"parse\":"), P("\"cache\":"), P("\"semantic\":"), P("\"admit\":"),
     P("\"queue\":"), P("\"prefill\":"), P("\"ttft\":"), P("\"decode\":"), P("\"upstream\":"),
     P("\"write\":"), P("\"total\":")},
#undef P
};

/* The stages of t (and total = t0 → now) in Server-Timing syntax or as a
 * JSON object, written straight into out. */
static int put_stages(const obs_trace_t *t, double now, buf_t *out, int json)
{
    if (buf_reserve(out, OBS_N_STAGES * 40 + 8)) return BAR_ERR_NOMEM;
    char *p = out->p + out->n;
    if (json) *p++ = '{';
    unsigned have = t->have | (1u << OBS_TOTAL);
    for (int i = 0; i < OBS_N_STAGES; i++) {
        if (!(have & (1u << i))) continue;
        double d = i == OBS_TOTAL && !(t->have & (1u << OBS_TOTAL)) ? now - t->t0 : t->dur[i];
        if (p != out->p + out->n + json) {
            *p++ = ',';
            if (!json) *p++ = ' ';
        }
        memcpy(p, ST_PREFIX[json][i].s, 16); /* room: reserved above */
        p += ST_PREFIX[json][i].n;
        p += fmt_ms(p, d);
    }
    if (json) *p++ = '}';
    out->n = (size_t)(p - out->p);
    out->p[out->n] = '\0';
    return 0;
}

int obs_trace_headers(const obs_trace_t *t, double now, buf_t *out)
{
    size_t idn = strnlen(t->id, sizeof t->id);
    if (buf_reserve(out, idn + 40)) return BAR_ERR_NOMEM;
    /* the fixed parts written in place: this is on every response */
    char *p = out->p + out->n;
    memcpy(p, "X-Request-Id: ", 14);
    memcpy(p + 14, t->id, idn);
    memcpy(p + 14 + idn, "\r\nServer-Timing: ", 17);
    out->n += 31 + idn;
    int rc = put_stages(t, now, out, 0);
    return rc ? rc : buf_append(out, "\r\n", 2);
}

int obs_trace_json(const obs_trace_t *t, double now, buf_t *out)
{
    return put_stages(t, now, out, 1);
}

void obs_trace_end(obs_trace_t *t, double now, int status, size_t bytes_out)
{
    if (t->finished) return;
    t->finished = 1;
    t->status = status;
    t->bytes_out = bytes_out;
    obs_trace_mark(t, OBS_WRITE, now);
    obs_trace_set(t, OBS_TOTAL, now - t->t0);
}
