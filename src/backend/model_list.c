/* model_list.c — the LiteLLM-shaped YAML model list and the --model argument
 * form, checked into a model_list_t (see model_list.h for the rules).
 *
 * libyaml composes the whole document into a node graph first; the walker
 * below then visits a fixed shape (top mapping → model_list sequence → entry
 * mappings → litellm_params / model_info mappings → scalars) and never
 * descends into ignored sections, so anchors, aliases and deep nesting cannot
 * make it loop or recurse. Not for: loading models or talking to upstreams. */
#include "backend/model_list.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ---- names, entries, the table ---------------------------------------------------------- */

/* NULL when p[0..n) is a valid model name, else what is wrong with it. */
static const char *name_problem(const char *p, size_t n)
{
    if (n == 0) return "is empty";
    if (n >= MODEL_NAME_MAX) return "is longer than 127 characters";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
        if (!ok) return "has a character outside [A-Za-z0-9._:/-]";
    }
    if (n == 7 && memcmp(p, "default", 7) == 0)
        return "is reserved (\"default\" names the default model)";
    return NULL;
}

/* Copy p[0..n) into out for a message: at most 48 bytes, anything outside
 * printable ASCII (and '"') as '?', "..." when cut. */
static const char *show(char *out, size_t cap, const char *p, size_t n)
{
    size_t k = 0, lim = cap > 52 ? 48 : cap - 4;
    for (size_t i = 0; i < n && k < lim; i++) {
        unsigned char c = (unsigned char)p[i];
        out[k++] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
    }
    if (n > lim) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
    return out;
}

static int find_name(const model_list_t *l, const char *p, size_t n)
{
    for (int i = 0; i < l->n; i++)
        if (strlen(l->v[i].name) == n && memcmp(l->v[i].name, p, n) == 0) return i;
    return -1;
}

static void entry_init(model_entry_t *e)
{
    memset(e, 0, sizeof *e);
    e->kind = MODEL_KIND_LOCAL;
    e->threads = e->ctx = e->parallel = -1;
}

/* Room for one more entry at l->v[l->n]. */
static int reserve_one(model_list_t *l, const char *src, size_t line, bar_msg_t *msg)
{
    if (l->n >= MODEL_LIST_MAX)
        return bar_fail(msg, BAR_ERR_RANGE, "%s:%zu: more than %d models", src, line,
                        MODEL_LIST_MAX);
    if (l->n < l->cap) return 0;
    int cap = l->cap ? l->cap * 2 : 4;
    if (cap > MODEL_LIST_MAX) cap = MODEL_LIST_MAX;
    model_entry_t *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    l->v = v;
    l->cap = cap;
    return 0;
}

/* dst <- path, or base_dir "/" path when path is relative and base_dir set. */
static int join_path(char *dst, size_t cap, const char *base_dir, const char *path, size_t n)
{
    size_t b = (path[0] != '/' && base_dir) ? strlen(base_dir) : 0;
    int slash = b > 0 && base_dir[b - 1] != '/';
    if (b + (size_t)slash + n >= cap) return -1;
    if (b) memcpy(dst, base_dir, b);
    if (slash) dst[b] = '/';
    memcpy(dst + b + (size_t)slash, path, n);
    dst[b + (size_t)slash + n] = '\0';
    return 0;
}

/* ---- YAML walking ------------------------------------------------------------------------ */

typedef struct {
    yaml_document_t *doc;
    const char *src;      /* file name for messages */
    const char *base_dir; /* for relative model paths; may be NULL */
    bar_msg_t *msg;
    char who[160];       /* the entry being read, for messages */
    model_upstream_t up; /* the entry's upstream part (kind MODEL_KIND_UPSTREAM) */
    unsigned up_seen;    /* upstream keys given in this entry's litellm_params */
    size_t up_line;      /* line of the first upstream key (api_base) */
} walk_t;

static size_t line_of(const yaml_node_t *nd)
{
    return nd->start_mark.line + 1;
}

static yaml_node_t *node(walk_t *w, int id)
{
    return yaml_document_get_node(w->doc, id);
}

static const char *sval(const yaml_node_t *nd)
{
    return (const char *)nd->data.scalar.value;
}

static size_t slen(const yaml_node_t *nd)
{
    return nd->data.scalar.length;
}

static int is_str(const yaml_node_t *nd, const char *s)
{
    size_t n = strlen(s);
    return nd->type == YAML_SCALAR_NODE && slen(nd) == n && memcmp(sval(nd), s, n) == 0;
}

static int is_null(const yaml_node_t *nd)
{
    return nd->type == YAML_SCALAR_NODE && nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (slen(nd) == 0 || is_str(nd, "~") || is_str(nd, "null") || is_str(nd, "Null") ||
            is_str(nd, "NULL"));
}

/* Keys must be scalars without NUL bytes; returns the key node or NULL (msg set). */
static yaml_node_t *key_node(walk_t *w, yaml_node_pair_t *pr, const char *where, int *rc)
{
    yaml_node_t *k = node(w, pr->key);
    if (!k || k->type != YAML_SCALAR_NODE || memchr(sval(k), 0, slen(k))) {
        *rc = bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s%skeys must be plain strings", w->src,
                       k ? line_of(k) : 0, where, *where ? ": " : "");
        return NULL;
    }
    return k;
}

/* Record key index i as seen in *seen; an error when it already was. */
static int once(walk_t *w, unsigned *seen, int i, const yaml_node_t *k, const char *where)
{
    if (*seen & (1u << i)) {
        char b[64];
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: key \"%s\" given twice", w->src,
                        line_of(k), where, show(b, sizeof b, sval(k), slen(k)));
    }
    *seen |= 1u << i;
    return 0;
}

static int want_plain(walk_t *w, const yaml_node_t *v, const char *key, const char *what)
{
    if (v->type != YAML_SCALAR_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be %s", w->src, line_of(v),
                        w->who, key, what);
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: %s: %s must be %s, not a quoted string (write it without quotes)",
                        w->src, line_of(v), w->who, key, what);
    return 0;
}

static int get_bool(walk_t *w, const yaml_node_t *v, const char *key, int *out)
{
    int rc = want_plain(w, v, key, "true or false");
    if (rc) return rc;
    if (is_str(v, "true") || is_str(v, "True") || is_str(v, "TRUE")) {
        *out = 1;
        return 0;
    }
    if (is_str(v, "false") || is_str(v, "False") || is_str(v, "FALSE")) {
        *out = 0;
        return 0;
    }
    char b[64];
    return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be true or false (got \"%s\")",
                    w->src, line_of(v), w->who, key, show(b, sizeof b, sval(v), slen(v)));
}

/* A string value (any scalar style) without NUL bytes. */
static int get_str(walk_t *w, const yaml_node_t *v, const char *key)
{
    if (v->type != YAML_SCALAR_NODE || is_null(v) || memchr(sval(v), 0, slen(v)))
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be a string", w->src,
                        line_of(v), w->who, key);
    return 0;
}

/* The numeric fields of litellm_params. */
typedef struct {
    const char *name;
    int is_int;
    size_t off;
    unsigned has;
    long long ilo, ihi; /* integers: inclusive range */
    double dlo, dhi;    /* reals: inclusive range, except lo when lo_open */
    int lo_open;
    const char *range; /* for messages */
} field_t;

#define FI(n, lo, hi, has, range)                                                                  \
    {                                                                                              \
#n, 1, offsetof(model_entry_t, n), has, lo, hi, 0, 0, 0, range                             \
    }
#define FD(n, lo, hi, open, has, range)                                                            \
    {                                                                                              \
#n, 0, offsetof(model_entry_t, n), has, 0, 0, lo, hi, open, range                          \
    }

static const field_t fields[] = {
    FI(threads, 1, 1024, 0, "1..1024"),
    FI(ctx, 16, 1048576, 0, "16..1048576"),
    FI(parallel, 1, 1024, 0, "1..1024"),
    FD(temperature, 0, 2, 0, MODEL_HAS_TEMPERATURE, "0..2"),
    FD(top_p, 0, 1, 0, MODEL_HAS_TOP_P, "0..1"),
    FI(top_k, 0, INT32_MAX, MODEL_HAS_TOP_K, "0..2147483647"),
    FD(min_p, 0, 1, 0, MODEL_HAS_MIN_P, "0..1"),
    FD(repeat_penalty, 0, 10, 1, MODEL_HAS_REPEAT_PENALTY, "> 0 and <= 10"),
    FD(presence_penalty, -2, 2, 0, MODEL_HAS_PRESENCE_PENALTY, "-2..2"),
    FD(frequency_penalty, -2, 2, 0, MODEL_HAS_FREQUENCY_PENALTY, "-2..2"),
    FI(max_tokens, 1, LLONG_MAX, MODEL_HAS_MAX_TOKENS, ">= 1"),
    FI(seed, 0, LLONG_MAX, MODEL_HAS_SEED, ">= 0"),
    FD(timeout, 0, 86400, 1, 0, "> 0 and <= 86400 (seconds)"),
};
#define N_FIELDS ((int)(sizeof fields / sizeof fields[0]))

/* litellm_params keys that mean an upstream deployment. */
static const char *const upstream_keys[] = {
    "api_base",       "api_key",           "api_version",           "base_url",
    "organization",   "aws_access_key_id", "aws_secret_access_key", "aws_region_name",
    "vertex_project", "vertex_location",   "custom_llm_provider",
};

/* Plain decimal: [+-]digits, and for reals an optional .digits and exponent. */
static int numeric_text(const char *p, size_t n, int is_int)
{
    size_t i = 0, digits = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++, digits++;
    if (is_int) return digits > 0 && i == n;
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++, digits++;
    }
    if (!digits) return 0;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        size_t ed = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++, ed++;
        if (!ed) return 0;
    }
    return i == n;
}

static int get_field(walk_t *w, model_entry_t *e, const field_t *f, const yaml_node_t *v)
{
    int rc = want_plain(w, v, f->name, f->is_int ? "an integer" : "a number");
    if (rc) return rc;
    char txt[64], b[64];
    size_t n = slen(v);
    if (!numeric_text(sval(v), n, f->is_int) || n >= sizeof txt)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be %s (got \"%s\")", w->src,
                        line_of(v), w->who, f->name, f->is_int ? "an integer" : "a number",
                        show(b, sizeof b, sval(v), n));
    memcpy(txt, sval(v), n);
    txt[n] = '\0';
    errno = 0;
    char *end;
    if (f->is_int) {
        long long x = strtoll(txt, &end, 10);
        if (errno == ERANGE || x < f->ilo || x > f->ihi)
            return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: %s: %s must be %s (got %s)", w->src,
                            line_of(v), w->who, f->name, f->range, txt);
        *(long long *)((char *)e + f->off) = x;
    } else {
        double x = strtod(txt, &end);
        if (!isfinite(x) || (f->lo_open ? x <= f->dlo : x < f->dlo) || x > f->dhi)
            return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: %s: %s must be %s (got %s)", w->src,
                            line_of(v), w->who, f->name, f->range, txt);
        *(double *)((char *)e + f->off) = x;
    }
    e->has |= f->has;
    return 0;
}

/* ---- upstream entries (kept apart from the local-model code above) --------------------- */

/* litellm_params.model "openai/NAME" or "hosted_vllm/NAME": 1 (an upstream,
 * w->up.model set), 0 (not an upstream), or an error. */
static int get_upstream_model(walk_t *w, model_entry_t *e, const yaml_node_t *v)
{
    static const char *const prov[] = {"openai/", "hosted_vllm/"};
    const char *p = sval(v);
    size_t n = slen(v);
    for (size_t i = 0; i < sizeof prov / sizeof prov[0]; i++) {
        size_t pn = strlen(prov[i]);
        if (n < pn || memcmp(p, prov[i], pn) != 0) continue;
        if (n == pn || n - pn >= sizeof w->up.model)
            return bar_fail(w->msg, BAR_ERR_INVALID,
                            "%s:%zu: %s: litellm_params.model \"%s\" needs the upstream's model "
                            "name after the '/' (1..127 bytes)",
                            w->src, line_of(v), w->who, prov[i]);
        memcpy(w->up.model, p + pn, n - pn);
        w->up.model[n - pn] = '\0';
        e->kind = MODEL_KIND_UPSTREAM;
        return 1;
    }
    return 0;
}

enum { UP_BASE, UP_KEY, UP_RPM, UP_TPM, UP_WEIGHT, N_UP_KEYS };
static const char *const up_keys[N_UP_KEYS] = {"api_base", "api_key", "rpm", "tpm", "weight"};

/* One upstream key of litellm_params: 1 handled (or *rc an error), 0 not one. */
static int read_up_param(walk_t *w, const yaml_node_t *k, const yaml_node_t *v, int *rc)
{
    int i = 0;
    while (i < N_UP_KEYS && !is_str(k, up_keys[i]))
        i++;
    if (i == N_UP_KEYS) return 0;
    if ((*rc = once(w, &w->up_seen, i, k, w->who))) return 1;
    if (!w->up_line) w->up_line = line_of(k);
    char b[64];
    if (i == UP_BASE || i == UP_KEY) {
        if ((*rc = get_str(w, v, up_keys[i]))) return 1;
        size_t n = slen(v), cap = i == UP_BASE ? sizeof w->up.api_base : sizeof w->up.api_key;
        if (n == 0 || n >= cap) {
            *rc = bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: %s: %s must be 1..%zu bytes", w->src,
                           line_of(v), w->who, up_keys[i], cap - 1);
            return 1;
        }
        if (i == UP_BASE) {
            const char *p = sval(v);
            if (!((n > 7 && !memcmp(p, "http://", 7)) || (n > 8 && !memcmp(p, "https://", 8)))) {
                *rc = bar_fail(w->msg, BAR_ERR_INVALID,
                               "%s:%zu: %s: api_base \"%s\" must start with http:// or https://",
                               w->src, line_of(v), w->who, show(b, sizeof b, p, n));
                return 1;
            }
            for (size_t j = 0; j < n; j++)
                if ((unsigned char)p[j] <= 0x20 || (unsigned char)p[j] >= 0x7f) {
                    *rc = bar_fail(w->msg, BAR_ERR_INVALID,
                                   "%s:%zu: %s: api_base has a space or a non-ASCII byte", w->src,
                                   line_of(v), w->who);
                    return 1;
                }
            memcpy(w->up.api_base, p, n);
            w->up.api_base[n] = '\0';
        } else {
            if (memchr(sval(v), '\n', n) || memchr(sval(v), '\r', n)) {
                *rc = bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: api_key has a line break",
                               w->src, line_of(v), w->who); /* never shows the key */
                return 1;
            }
            memcpy(w->up.api_key, sval(v), n);
            w->up.api_key[n] = '\0';
        }
        return 1;
    }
    if ((*rc = want_plain(w, v, up_keys[i], "a number"))) return 1;
    char txt[64];
    size_t n = slen(v);
    int is_int = i != UP_WEIGHT;
    if (!numeric_text(sval(v), n, is_int) || n >= sizeof txt) {
        *rc = bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be %s (got \"%s\")", w->src,
                       line_of(v), w->who, up_keys[i], is_int ? "an integer" : "a number",
                       show(b, sizeof b, sval(v), n));
        return 1;
    }
    memcpy(txt, sval(v), n);
    txt[n] = '\0';
    errno = 0;
    if (is_int) {
        long long x = strtoll(txt, NULL, 10);
        if (errno == ERANGE || x < 0) {
            *rc = bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: %s: %s must be >= 0 (got %s)", w->src,
                           line_of(v), w->who, up_keys[i], txt);
            return 1;
        }
        *(i == UP_RPM ? &w->up.rpm : &w->up.tpm) = x;
    } else {
        double x = strtod(txt, NULL);
        if (!isfinite(x) || x <= 0 || x > 1e6) {
            *rc = bar_fail(w->msg, BAR_ERR_RANGE,
                           "%s:%zu: %s: weight must be > 0 and <= 1e6 "
                           "(got %s)",
                           w->src, line_of(v), w->who, txt);
            return 1;
        }
        w->up.weight = x;
    }
    return 1;
}

/* After litellm_params: an upstream entry has an api_base and none of the
 * local engine's keys; a local one has no upstream keys. */
static int check_upstream(walk_t *w, const model_entry_t *e, const yaml_node_t *m)
{
    if (e->kind != MODEL_KIND_UPSTREAM) {
        if (w->up_seen)
            return bar_fail(w->msg, BAR_ERR_INVALID,
                            "%s:%zu: %s: api_base, api_key, rpm, tpm and weight belong to an "
                            "upstream (model: openai/NAME or hosted_vllm/NAME)",
                            w->src, w->up_line, w->who);
        return 0;
    }
    if (!(w->up_seen & (1u << UP_BASE)))
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: an upstream model needs litellm_params.api_base "
                        "(http://host:port/v1)",
                        w->src, line_of(m), w->who);
    const char *bad = e->threads >= 0    ? "threads"
                      : e->ctx >= 0      ? "ctx"
                      : e->parallel >= 0 ? "parallel"
                                         : NULL;
    if (bad)
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: litellm_params.%s does not apply to an upstream model", w->src,
                        line_of(m), w->who, bad);
    return 0;
}

/* Record the entry's replica (group `entry`). */
static int add_upstream(walk_t *w, model_list_t *l, int entry, const model_entry_t *e, int line)
{
    if (l->n_ups >= MODEL_LIST_MAX)
        return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%d: more than %d upstream deployments", w->src,
                        line, MODEL_LIST_MAX);
    if (l->n_ups == l->cap_ups) {
        int cap = l->cap_ups ? l->cap_ups * 2 : 4;
        model_upstream_t *v = realloc(l->ups, (size_t)cap * sizeof *v);
        if (!v) return bar_fail(w->msg, BAR_ERR_NOMEM, "%s: out of memory", w->src);
        l->ups = v;
        l->cap_ups = cap;
    }
    model_upstream_t *u = &l->ups[l->n_ups++];
    *u = w->up;
    u->entry = entry;
    u->timeout = e->timeout;
    if (u->weight <= 0) u->weight = 1;
    u->line = line;
    return 0;
}

/* router_settings: LiteLLM's keys barista reads; its other known keys are
 * accepted and ignored; anything else is an error. */
static int read_router(walk_t *w, model_list_t *l, const yaml_node_t *m)
{
    static const char *const ignored[] = {
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "default_fallbacks",
        "redis_host",
        "redis_port",
        "redis_password",
        "redis_url",
        "cache_responses",
        "enable_pre_call_checks",
        "model_group_alias",
        "retry_policy",
        "allowed_fails_policy",
        "retry_after",
        "timeout",
        "stream_timeout",
        "default_litellm_params",
        "provider_budget_config",
        "routing_strategy_args",
        "debug_level",
        "set_verbose",
    };
    model_router_t r = {ROUTE_LATENCY, 2, 3, 5.0, 0, 0};
    if (is_null(m)) {
        l->router = r;
        l->has_router = 1;
        return 0;
    }
    if (m->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: router_settings must be a mapping", w->src,
                        line_of(m));
    snprintf(w->who, sizeof w->who, "router_settings");
    unsigned seen = 0;
    int rc = 0;
    char b[64];
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (is_str(k, "routing_strategy")) {
            if ((rc = once(w, &seen, 0, k, w->who)) || (rc = get_str(w, v, "routing_strategy")))
                return rc;
            if (is_str(v, "latency-based-routing"))
                r.strategy = ROUTE_LATENCY;
            else if (is_str(v, "least-busy"))
                r.strategy = ROUTE_LEAST_BUSY;
            else if (is_str(v, "simple-shuffle"))
                r.strategy = ROUTE_SHUFFLE;
            else
                return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                                "%s:%zu: router_settings: routing_strategy \"%s\" is not "
                                "supported (latency-based-routing, least-busy, simple-shuffle)",
                                w->src, line_of(v), show(b, sizeof b, sval(v), slen(v)));
            continue;
        }
        if (is_str(k, "hedging")) {
            if ((rc = once(w, &seen, 4, k, w->who)) ||
                (rc = get_bool(w, v, "router_settings.hedging", &r.hedge)))
                return rc;
            continue;
        }
        static const char *const nums[] = {"num_retries", "allowed_fails", "cooldown_time",
                                           "health_check_interval"};
        int i = 0;
        while (i < 4 && !is_str(k, nums[i]))
            i++;
        if (i < 4) {
            if ((rc = once(w, &seen, i == 3 ? 5 : i + 1, k, w->who)) ||
                (rc = want_plain(w, v, nums[i], "a number")))
                return rc;
            char txt[64];
            size_t n = slen(v);
            if (!numeric_text(sval(v), n, i < 2) || n >= sizeof txt)
                return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: router_settings: %s must be %s",
                                w->src, line_of(v), nums[i], i < 2 ? "an integer" : "a number");
            memcpy(txt, sval(v), n);
            txt[n] = '\0';
            double x = strtod(txt, NULL);
            double hi = i == 0 ? 16 : i == 1 ? 1000 : 3600;
            if (i == 3) i = 4, hi = 3600; /* seen-bit 5 */
            if (i == 4) {
                if (!(x >= 0) || x > hi || (x > 0 && x < 0.1))
                    return bar_fail(w->msg, BAR_ERR_RANGE,
                                    "%s:%zu: router_settings: health_check_interval must be 0 "
                                    "(off) or 0.1..3600 seconds (got %s)",
                                    w->src, line_of(v), txt);
                r.health_interval = x;
                continue;
            }
            if (!(x >= (i == 1 ? 1 : 0)) || x > hi)
                return bar_fail(w->msg, BAR_ERR_RANGE,
                                "%s:%zu: router_settings: %s must be "
                                "%d..%g (got %s)",
                                w->src, line_of(v), nums[i], i == 1 ? 1 : 0, hi, txt);
            if (i == 0)
                r.num_retries = (int)x;
            else if (i == 1)
                r.allowed_fails = (int)x;
            else
                r.cooldown_time = x;
            continue;
        }
        size_t j = 0;
        while (j < sizeof ignored / sizeof ignored[0] && !is_str(k, ignored[j]))
            j++;
        if (j < sizeof ignored / sizeof ignored[0]) continue;
        return bar_fail(
            w->msg, BAR_ERR_INVALID,
            "%s:%zu: router_settings: unknown key \"%s\" (read: routing_strategy, "
            "num_retries, allowed_fails, cooldown_time, hedging, health_check_interval)",
            w->src, line_of(k), show(b, sizeof b, sval(k), slen(k)));
    }
    l->router = r;
    l->has_router = 1;
    return 0;
}

/* litellm_params.model: "local/" + path. */
static int get_model(walk_t *w, model_entry_t *e, const yaml_node_t *v)
{
    int rc = get_str(w, v, "litellm_params.model");
    if (rc) return rc;
    const char *p = sval(v);
    size_t n = slen(v);
    char b[64];
    int up = get_upstream_model(w, e, v);
    if (up) return up < 0 ? up : 0;
    if (n < 6 || memcmp(p, "local/", 6) != 0)
        return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                        "%s:%zu: %s: litellm_params.model \"%s\" is not \"local/<path to .gguf>\", "
                        "\"openai/NAME\" or \"hosted_vllm/NAME\" (other providers are not "
                        "supported)",
                        w->src, line_of(v), w->who, show(b, sizeof b, p, n));
    if (n == 6)
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: litellm_params.model \"local/\" has no path", w->src,
                        line_of(v), w->who);
    if (join_path(e->path, sizeof e->path, w->base_dir, p + 6, n - 6))
        return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: %s: model path is longer than %d bytes",
                        w->src, line_of(v), w->who, MODEL_PATH_MAX - 1);
    return 0;
}

static int read_params(walk_t *w, model_entry_t *e, const yaml_node_t *m)
{
    if (m->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: litellm_params must be a mapping",
                        w->src, line_of(m), w->who);
    unsigned seen = 0; /* bit i: fields[i]; bit N_FIELDS: model */
    int rc = 0;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (is_str(k, "model")) {
            if ((rc = once(w, &seen, N_FIELDS, k, w->who)) || (rc = get_model(w, e, v))) return rc;
            continue;
        }
        int i = 0;
        while (i < N_FIELDS && !is_str(k, fields[i].name))
            i++;
        if (i < N_FIELDS) {
            if ((rc = once(w, &seen, i, k, w->who)) || (rc = get_field(w, e, &fields[i], v)))
                return rc;
            continue;
        }
        if (read_up_param(w, k, v, &rc)) {
            if (rc) return rc;
            continue;
        }
        char b[64];
        show(b, sizeof b, sval(k), slen(k));
        for (size_t u = 0; u < sizeof upstream_keys / sizeof upstream_keys[0]; u++)
            if (is_str(k, upstream_keys[u]))
                return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                                "%s:%zu: %s: litellm_params.%s is not supported (upstreams "
                                "take api_base, api_key, rpm, tpm, weight, timeout)",
                                w->src, line_of(k), w->who, b);
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: unknown key \"%s\" in litellm_params (known: model, threads, "
                        "ctx, parallel, temperature, top_p, top_k, min_p, repeat_penalty, "
                        "presence_penalty, frequency_penalty, max_tokens, seed, timeout)",
                        w->src, line_of(k), w->who, b);
    }
    if (!(seen & (1u << N_FIELDS)))
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: litellm_params has no model (\"local/<path to .gguf>\")",
                        w->src, line_of(m), w->who);
    return check_upstream(w, e, m);
}

/* model_info.mode: chat/completion (a GGUF) or embedding. */
static int get_mode(walk_t *w, const yaml_node_t *v, model_mode_t *mode)
{
    int rc = get_str(w, v, "model_info.mode");
    if (rc) return rc;
    if (is_str(v, "chat") || is_str(v, "completion")) {
        *mode = MODEL_MODE_CHAT;
        return 0;
    }
    if (is_str(v, "embedding")) {
        *mode = MODEL_MODE_EMBEDDING;
        return 0;
    }
    char b[64];
    return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                    "%s:%zu: %s: model_info.mode \"%s\" is not supported (chat, completion, "
                    "embedding)",
                    w->src, line_of(v), w->who, show(b, sizeof b, sval(v), slen(v)));
}

/* model_info: a mapping (or empty); `default` and `mode` are read. *def: -1 unset. */
static int read_info(walk_t *w, const yaml_node_t *m, int *def, model_mode_t *mode)
{
    if (is_null(m)) return 0;
    if (m->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: model_info must be a mapping", w->src,
                        line_of(m), w->who);
    unsigned seen = 0;
    int rc = 0;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = node(w, pr->key), *v = node(w, pr->value);
        if (!k || !v) continue;
        if (is_str(k, "default")) {
            if ((rc = once(w, &seen, 0, k, w->who)) ||
                (rc = get_bool(w, v, "model_info.default", def)))
                return rc;
        } else if (is_str(k, "mode")) {
            if ((rc = once(w, &seen, 1, k, w->who)) || (rc = get_mode(w, v, mode))) return rc;
        } /* other keys: LiteLLM's, ignored */
    }
    return 0;
}

/* An embedding entry takes only model and threads. */
static int check_embedding(walk_t *w, const model_entry_t *e, const yaml_node_t *m)
{
    const char *bad = e->ctx >= 0 ? "ctx" : e->parallel >= 0 ? "parallel" : NULL;
    for (int i = 0; !bad && i < N_FIELDS; i++)
        if (fields[i].has & e->has) bad = fields[i].name;
    if (!bad) return 0;
    return bar_fail(w->msg, BAR_ERR_INVALID,
                    "%s:%zu: %s: litellm_params.%s does not apply to an embedding model (it takes "
                    "model and threads)",
                    w->src, line_of(m), w->who, bad);
}

/* A further entry with the model_name of an upstream group: one more replica
 * of it (its litellm_params are read; sampling defaults, default and
 * model_info come from the group's first entry). 1 (no new entry) or an error. */
static int read_replica(walk_t *w, model_list_t *l, const yaml_node_t *m, const yaml_node_t *params,
                        int group)
{
    if (!params)
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: no litellm_params", w->src,
                        line_of(m), w->who);
    model_entry_t *e = &l->v[l->n]; /* scratch: reserved, not counted */
    char name[MODEL_NAME_MAX];
    memcpy(name, e->name, sizeof name);
    int line = e->line;
    entry_init(e);
    int rc = read_params(w, e, params);
    if (rc) return rc;
    if (e->kind != MODEL_KIND_UPSTREAM)
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%d: %s: model_name given twice (first at line %d); several entries "
                        "of one name must all be upstreams (a replica group)",
                        w->src, line, w->who, l->v[group].line);
    if ((rc = add_upstream(w, l, group, e, line))) return rc;
    (void)name;
    return 1;
}

enum { K_NAME, K_PARAMS, K_DEFAULT, K_INFO, N_ENTRY_KEYS };
static const char *const entry_keys[N_ENTRY_KEYS] = {"model_name", "litellm_params", "default",
                                                     "model_info"};

/* One model_list item into l->v[l->n] (not yet counted). */
static int read_entry(walk_t *w, model_list_t *l, const yaml_node_t *m, int idx)
{
    snprintf(w->who, sizeof w->who, "model_list[%d]", idx);
    if (m->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: %s: each model_list item must be a mapping "
                        "(model_name, litellm_params)",
                        w->src, line_of(m), w->who);
    int rc = reserve_one(l, w->src, line_of(m), w->msg);
    if (rc) return rc;
    model_entry_t *e = &l->v[l->n];
    entry_init(e);
    e->line = line_of(m) > INT_MAX ? INT_MAX : (int)line_of(m);
    memset(&w->up, 0, sizeof w->up);
    w->up_seen = 0;
    w->up_line = 0;

    /* Messages name the entry by its model_name as soon as it has a usable one. */
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = node(w, pr->key), *v = node(w, pr->value);
        if (k && v && is_str(k, "model_name") && v->type == YAML_SCALAR_NODE &&
            !name_problem(sval(v), slen(v))) {
            snprintf(w->who, sizeof w->who, "model \"%.*s\"", (int)slen(v), sval(v));
            break;
        }
    }

    /* Keys, duplicates, then each value. */
    const yaml_node_t *val[N_ENTRY_KEYS] = {0};
    unsigned seen = 0;
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        int i = 0;
        while (i < N_ENTRY_KEYS && !is_str(k, entry_keys[i]))
            i++;
        if (is_str(k, "params")) i = K_PARAMS; /* the shorter spelling */
        if (i == N_ENTRY_KEYS) {
            char b[64];
            return bar_fail(w->msg, BAR_ERR_INVALID,
                            "%s:%zu: %s: unknown key \"%s\" (known: model_name, litellm_params, "
                            "default, model_info)",
                            w->src, line_of(k), w->who, show(b, sizeof b, sval(k), slen(k)));
        }
        if ((rc = once(w, &seen, i, k, w->who))) return rc;
        val[i] = v;
    }
    if (!val[K_NAME])
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: no model_name", w->src, line_of(m),
                        w->who);
    const yaml_node_t *nv = val[K_NAME];
    if ((rc = get_str(w, nv, "model_name"))) return rc;
    const char *why = name_problem(sval(nv), slen(nv));
    char b[64];
    if (why)
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: model_name \"%s\" %s", w->src,
                        line_of(nv), w->who, show(b, sizeof b, sval(nv), slen(nv)), why);
    memcpy(e->name, sval(nv), slen(nv));
    e->name[slen(nv)] = '\0';
    snprintf(w->who, sizeof w->who, "model \"%s\"", e->name);
    int dup = find_name(l, e->name, slen(nv));
    if (dup >= 0 && l->v[dup].kind == MODEL_KIND_UPSTREAM)
        return read_replica(w, l, m, val[K_PARAMS], dup);
    if (dup >= 0)
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: model_name given twice (first at %s%d); one deployment per "
                        "name for now",
                        w->src, line_of(nv), w->who, l->v[dup].line ? "line " : "--model #",
                        l->v[dup].line ? l->v[dup].line : dup + 1);

    if (!val[K_PARAMS])
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: no litellm_params", w->src,
                        line_of(m), w->who);
    if ((rc = read_params(w, e, val[K_PARAMS]))) return rc;

    int def = -1, info_def = -1;
    if (val[K_DEFAULT] && (rc = get_bool(w, val[K_DEFAULT], "default", &def))) return rc;
    if (val[K_INFO] && (rc = read_info(w, val[K_INFO], &info_def, &e->mode))) return rc;
    if (e->mode == MODEL_MODE_EMBEDDING && (rc = check_embedding(w, e, val[K_PARAMS]))) return rc;
    if (def >= 0 && info_def >= 0 && def != info_def)
        return bar_fail(w->msg, BAR_ERR_INVALID,
                        "%s:%zu: %s: default and model_info.default disagree", w->src, line_of(m),
                        w->who);
    e->is_default = def == 1 || info_def == 1;
    if (e->is_default)
        for (int i = 0; i < l->n; i++)
            if (l->v[i].is_default && l->v[i].mode == e->mode)
                return bar_fail(w->msg, BAR_ERR_INVALID,
                                "%s:%zu: %s: more than one default %smodel (\"%s\" is already "
                                "the default)",
                                w->src, line_of(m), w->who,
                                e->mode == MODEL_MODE_EMBEDDING ? "embedding " : "", l->v[i].name);
    if (e->kind == MODEL_KIND_UPSTREAM) {
        if (e->mode == MODEL_MODE_EMBEDDING)
            return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                            "%s:%zu: %s: upstream embedding models are not supported", w->src,
                            line_of(m), w->who);
        if ((rc = add_upstream(w, l, l->n, e, e->line))) return rc;
        e->timeout = 0; /* an upstream's timeout is per attempt (the replica's), so a
                           retry on another replica still fits */
    }
    return 0;
}

static const char *const ignored_top[] = {"litellm_settings", "general_settings",
                                          "environment_variables"};

static int read_doc(walk_t *w, model_list_t *l)
{
    yaml_node_t *root = yaml_document_get_root_node(w->doc);
    if (!root)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: empty file (expected a model_list:)", w->src);
    if (root->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: the top level must be a mapping with a model_list:", w->src,
                        line_of(root));
    const yaml_node_t *list = NULL;
    int rc = 0;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = key_node(w, pr, "", &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (is_str(k, "model_list")) {
            if (list)
                return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: model_list given twice", w->src,
                                line_of(k));
            list = v;
            continue;
        }
        if (is_str(k, "router_settings")) {
            if ((rc = read_router(w, l, v))) return rc;
            continue;
        }
        size_t i = 0;
        while (i < sizeof ignored_top / sizeof ignored_top[0] && !is_str(k, ignored_top[i]))
            i++;
        if (i < sizeof ignored_top / sizeof ignored_top[0]) continue;
        char b[64];
        return bar_fail(
            w->msg, BAR_ERR_INVALID,
            "%s:%zu: unknown top-level key \"%s\" (known: model_list, router_settings; ignored: "
            "litellm_settings, general_settings, "
            "environment_variables)",
            w->src, line_of(k), show(b, sizeof b, sval(k), slen(k)));
    }
    if (!list)
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: no model_list", w->src, line_of(root));
    if (is_null(list) || (list->type == YAML_SEQUENCE_NODE &&
                          list->data.sequence.items.start == list->data.sequence.items.top))
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: model_list is empty", w->src,
                        line_of(list));
    if (list->type != YAML_SEQUENCE_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: model_list must be a sequence (\"- model_name: ...\" items)",
                        w->src, line_of(list));
    int idx = 0;
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++, idx++) {
        yaml_node_t *m = node(w, *it);
        if (!m) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if ((rc = read_entry(w, l, m, idx)) < 0) return rc;
        if (rc == 0) l->n++; /* 1: a replica of an earlier entry */
    }
    return 0;
}

static int yaml_error(const yaml_parser_t *p, const char *src, bar_msg_t *msg)
{
    if (p->error == YAML_MEMORY_ERROR)
        return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_READER_ERROR) /* bad encoding: libyaml gives a byte offset, no line */
        return bar_fail(msg, BAR_ERR_FORMAT, "%s: bad YAML: %s at byte %zu", src, problem,
                        p->problem_offset);
    if (p->context)
        return bar_fail(msg, BAR_ERR_FORMAT, "%s:%zu: bad YAML: %s (%s at line %zu)", src,
                        p->problem_mark.line + 1, problem, p->context, p->context_mark.line + 1);
    return bar_fail(msg, BAR_ERR_FORMAT, "%s:%zu: bad YAML: %s", src, p->problem_mark.line + 1,
                    problem);
}

static int load(model_list_t *l, const char *yaml, size_t n, const char *base_dir, const char *src,
                bar_msg_t *msg)
{
    if (n > MODEL_LIST_FILE_MAX)
        return bar_fail(msg, BAR_ERR_RANGE, "%s: larger than %u bytes", src, MODEL_LIST_FILE_MAX);
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, n);
    yaml_document_t doc;
    if (!yaml_parser_load(&p, &doc)) {
        int rc = yaml_error(&p, src, msg);
        yaml_parser_delete(&p);
        return rc;
    }
    int n0 = l->n, nu0 = l->n_ups, had_router = l->has_router, rc;
    model_router_t rt0 = l->router;
    walk_t w = {.doc = &doc, .src = src, .base_dir = base_dir, .msg = msg};
    rc = read_doc(&w, l);
    yaml_document_delete(&doc);
    if (rc == 0) {
        /* A second document would be silently ignored; refuse it. */
        yaml_document_t more;
        if (!yaml_parser_load(&p, &more)) {
            rc = yaml_error(&p, src, msg);
        } else {
            yaml_node_t *r = yaml_document_get_root_node(&more);
            if (r)
                rc = bar_fail(msg, BAR_ERR_FORMAT, "%s:%zu: a second YAML document (one per file)",
                              src, more.start_mark.line + 1);
            yaml_document_delete(&more);
        }
    }
    yaml_parser_delete(&p);
    if (rc) {
        l->n = n0;
        l->n_ups = nu0;
        l->router = rt0;
        l->has_router = had_router;
    }
    return rc;
}

/* ---- public ------------------------------------------------------------------------------ */

int model_list_load_mem(model_list_t *l, const char *yaml, size_t n, const char *base_dir,
                        bar_msg_t *msg)
{
    return load(l, yaml, n, base_dir, "<memory>", msg);
}

int model_list_load_file(model_list_t *l, const char *path, bar_msg_t *msg)
{
    char dir[MODEL_PATH_MAX];
    size_t pn = strlen(path);
    if (pn >= sizeof dir)
        return bar_fail(msg, BAR_ERR_RANGE, "model list path is longer than %d bytes",
                        MODEL_PATH_MAX - 1);
    memcpy(dir, path, pn + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        dir[0] = '\0';
    else
        slash[slash == dir ? 1 : 0] = '\0';

    FILE *f = fopen(path, "rb");
    if (!f) return bar_fail(msg, BAR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", path);
    while (rc == 0) {
        if (n == cap) {
            if (cap > MODEL_LIST_FILE_MAX) {
                rc = bar_fail(msg, BAR_ERR_RANGE, "%s: larger than %u bytes", path,
                              MODEL_LIST_FILE_MAX);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = bar_fail(msg, BAR_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (rc == 0) rc = load(l, buf, n, dir, path, msg);
    free(buf);
    return rc;
}

/* One entry from a command-line argument "NAME=PATH" or "PATH". */
static int add_arg(model_list_t *l, const char *arg, model_mode_t mode, bar_msg_t *msg)
{
    const char *src = mode == MODEL_MODE_EMBEDDING ? "--embedding-model" : "--model";
    if (!arg || !*arg)
        return bar_fail(msg, BAR_ERR_INVALID, "%s: empty argument (NAME=PATH or PATH)", src);
    const char *eq = strchr(arg, '=');
    const char *name, *path;
    size_t name_n;
    char b[64];
    if (eq) {
        name = arg;
        name_n = (size_t)(eq - arg);
        path = eq + 1;
    } else {
        path = arg;
        name = arg;
        name_n = strlen(arg);
    }
    size_t pn = strlen(path);
    if (mode == MODEL_MODE_EMBEDDING) {
        /* the folder: "dir/model.safetensors" and "dir/" name "dir" */
        if (pn >= 12 && strcasecmp(path + pn - 12, ".safetensors") == 0) {
            while (pn && path[pn - 1] != '/')
                pn--;
            if (pn == 0) {
                path = ".";
                pn = 1;
            }
        }
        while (pn > 1 && path[pn - 1] == '/')
            pn--;
    }
    if (!eq) {
        const char *base = path + pn;
        while (base > path && base[-1] != '/')
            base--;
        name = base;
        name_n = (size_t)(path + pn - base);
        if (mode == MODEL_MODE_CHAT && name_n >= 5 && strcasecmp(name + name_n - 5, ".gguf") == 0)
            name_n -= 5;
    }
    if (!*path)
        return bar_fail(msg, BAR_ERR_INVALID, "%s \"%s\": no path (NAME=PATH or PATH)", src,
                        show(b, sizeof b, arg, strlen(arg)));
    const char *why = name_problem(name, name_n);
    if (why) {
        char nb[64];
        show(nb, sizeof nb, name, name_n);
        if (eq)
            return bar_fail(msg, BAR_ERR_INVALID, "%s \"%s\": model name \"%s\" %s", src,
                            show(b, sizeof b, arg, strlen(arg)), nb, why);
        return bar_fail(msg, BAR_ERR_INVALID,
                        "%s \"%s\": the name taken from the file name, \"%s\", %s; "
                        "give one as NAME=PATH",
                        src, show(b, sizeof b, arg, strlen(arg)), nb, why);
    }
    if (find_name(l, name, name_n) >= 0) {
        char nb[64];
        return bar_fail(msg, BAR_ERR_INVALID,
                        "%s \"%s\": model name \"%s\" given twice; one deployment per name for now",
                        src, show(b, sizeof b, arg, strlen(arg)),
                        show(nb, sizeof nb, name, name_n));
    }
    if (pn >= MODEL_PATH_MAX)
        return bar_fail(msg, BAR_ERR_RANGE, "%s: path is longer than %d bytes", src,
                        MODEL_PATH_MAX - 1);
    int rc = reserve_one(l, src, 0, msg);
    if (rc) return rc;
    model_entry_t *e = &l->v[l->n];
    entry_init(e);
    memcpy(e->name, name, name_n);
    e->name[name_n] = '\0';
    e->mode = mode;
    memcpy(e->path, path, pn);
    e->path[pn] = '\0';
    l->n++;
    return 0;
}

int model_list_add_arg(model_list_t *l, const char *arg, bar_msg_t *msg)
{
    return add_arg(l, arg, MODEL_MODE_CHAT, msg);
}

int model_list_add_embedding(model_list_t *l, const char *arg, bar_msg_t *msg)
{
    return add_arg(l, arg, MODEL_MODE_EMBEDDING, msg);
}

int model_list_has_embedding(const model_list_t *l)
{
    for (int i = 0; l && i < l->n; i++)
        if (l->v[i].mode == MODEL_MODE_EMBEDDING) return 1;
    return 0;
}

int model_list_finish(model_list_t *l, bar_msg_t *msg)
{
    if (l->n == 0)
        return bar_fail(msg, BAR_ERR_INVALID,
                        "no models configured: give --model NAME=PATH or a model list file");
    int chat = -1, chat_def = -1, emb = -1, emb_def = -1;
    for (int i = 0; i < l->n; i++) {
        int is_emb = l->v[i].mode == MODEL_MODE_EMBEDDING;
        int *first = is_emb ? &emb : &chat, *def = is_emb ? &emb_def : &chat_def;
        if (*first < 0) *first = i;
        if (l->v[i].is_default && *def < 0) *def = i;
    }
    if (chat < 0)
        return bar_fail(msg, BAR_ERR_INVALID,
                        "no chat/completion model configured (only embedding models): give "
                        "--model NAME=PATH or a model_list entry with a GGUF");
    l->default_idx = chat_def >= 0 ? chat_def : chat;
    l->embed_idx = emb_def >= 0 ? emb_def : emb;
    return 0;
}

const model_entry_t *model_list_find(const model_list_t *l, const char *name, size_t n)
{
    if (!l || l->n == 0 || !name) return NULL;
    if (n == 7 && memcmp(name, "default", 7) == 0)
        return l->default_idx >= 0 && l->default_idx < l->n ? &l->v[l->default_idx] : NULL;
    int i = find_name(l, name, n);
    return i >= 0 ? &l->v[i] : NULL;
}

void model_list_free(model_list_t *l)
{
    if (!l) return;
    free(l->v);
    if (l->ups) memset(l->ups, 0, (size_t)l->cap_ups * sizeof *l->ups); /* keys */
    free(l->ups);
    memset(l, 0, sizeof *l);
}
