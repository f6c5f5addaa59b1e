/* model_list.c — the LiteLLM-shaped YAML model list and the --model argument
 * form, checked into a model_list_t (see model_list.h for the rules).
 *
 * libyaml composes the whole document into a node graph first; the walker
 * below then visits a fixed shape (top mapping → model_list sequence → entry
 * mappings → litellm_params / model_info mappings → scalars) and never
 * descends into ignored sections, so anchors, aliases and deep nesting cannot
 * make it loop or recurse. Upstream entries and router_settings are read by
 * model_list_upstream.c (model_list_int.h: the walk state and helpers the
 * two share). Not for: loading models or talking to upstreams. */
#include "backend/model_list.h"
#include "backend/model_list_int.h"

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
const char *ml_show(char *out, size_t cap, const char *p, size_t n)
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

/* ---- YAML walking (walk_t: model_list_int.h) --------------------------------------------- */

/* Keys must be scalars without NUL bytes; returns the key node or NULL (msg set). */
yaml_node_t *ml_key_node(walk_t *w, yaml_node_pair_t *pr, const char *where, int *rc)
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
int ml_once(walk_t *w, unsigned *seen, int i, const yaml_node_t *k, const char *where)
{
    if (*seen & (1u << i)) {
        char b[64];
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: key \"%s\" given twice", w->src,
                        line_of(k), where, ml_show(b, sizeof b, sval(k), slen(k)));
    }
    *seen |= 1u << i;
    return 0;
}

int ml_want_plain(walk_t *w, const yaml_node_t *v, const char *key, const char *what)
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

int ml_get_bool(walk_t *w, const yaml_node_t *v, const char *key, int *out)
{
    int rc = ml_want_plain(w, v, key, "true or false");
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
                    w->src, line_of(v), w->who, key, ml_show(b, sizeof b, sval(v), slen(v)));
}

/* A string value (any scalar style) without NUL bytes. */
int ml_get_str(walk_t *w, const yaml_node_t *v, const char *key)
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
int ml_numeric_text(const char *p, size_t n, int is_int)
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
    int rc = ml_want_plain(w, v, f->name, f->is_int ? "an integer" : "a number");
    if (rc) return rc;
    char txt[64], b[64];
    size_t n = slen(v);
    if (!ml_numeric_text(sval(v), n, f->is_int) || n >= sizeof txt)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be %s (got \"%s\")", w->src,
                        line_of(v), w->who, f->name, f->is_int ? "an integer" : "a number",
                        ml_show(b, sizeof b, sval(v), n));
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

/* litellm_params.model: "local/" + path. */
static int get_model(walk_t *w, model_entry_t *e, const yaml_node_t *v)
{
    int rc = ml_get_str(w, v, "litellm_params.model");
    if (rc) return rc;
    const char *p = sval(v);
    size_t n = slen(v);
    char b[64];
    int up = ml_upstream_model(w, e, v);
    if (up) return up < 0 ? up : 0;
    if (n < 6 || memcmp(p, "local/", 6) != 0)
        return bar_fail(w->msg, BAR_ERR_UNSUPPORTED,
                        "%s:%zu: %s: litellm_params.model \"%s\" is not \"local/<path to .gguf>\", "
                        "\"openai/NAME\" or \"hosted_vllm/NAME\" (other providers are not "
                        "supported)",
                        w->src, line_of(v), w->who, ml_show(b, sizeof b, p, n));
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
        yaml_node_t *k = ml_key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (is_str(k, "model")) {
            if ((rc = ml_once(w, &seen, N_FIELDS, k, w->who)) || (rc = get_model(w, e, v)))
                return rc;
            continue;
        }
        int i = 0;
        while (i < N_FIELDS && !is_str(k, fields[i].name))
            i++;
        if (i < N_FIELDS) {
            if ((rc = ml_once(w, &seen, i, k, w->who)) || (rc = get_field(w, e, &fields[i], v)))
                return rc;
            continue;
        }
        if (ml_read_up_param(w, k, v, &rc)) {
            if (rc) return rc;
            continue;
        }
        char b[64];
        ml_show(b, sizeof b, sval(k), slen(k));
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
    return ml_check_upstream(w, e, m);
}

/* model_info.mode: chat/completion (a GGUF) or embedding. */
static int get_mode(walk_t *w, const yaml_node_t *v, model_mode_t *mode)
{
    int rc = ml_get_str(w, v, "model_info.mode");
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
                    w->src, line_of(v), w->who, ml_show(b, sizeof b, sval(v), slen(v)));
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
            if ((rc = ml_once(w, &seen, 0, k, w->who)) ||
                (rc = ml_get_bool(w, v, "model_info.default", def)))
                return rc;
        } else if (is_str(k, "mode")) {
            if ((rc = ml_once(w, &seen, 1, k, w->who)) || (rc = get_mode(w, v, mode))) return rc;
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
    if ((rc = ml_add_upstream(w, l, group, e, line))) return rc;
    (void)name;
    return 1;
}

enum { K_NAME, K_PARAMS, K_DEFAULT, K_INFO, K_FALLBACKS, N_ENTRY_KEYS };
static const char *const entry_keys[N_ENTRY_KEYS] = {"model_name", "litellm_params", "default",
                                                     "model_info", "fallbacks"};
static int read_fallback_steps(walk_t *w, model_entry_t *e, const yaml_node_t *v, const char *key);

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
        yaml_node_t *k = ml_key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
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
                            "default, model_info, fallbacks)",
                            w->src, line_of(k), w->who, ml_show(b, sizeof b, sval(k), slen(k)));
        }
        if ((rc = ml_once(w, &seen, i, k, w->who))) return rc;
        val[i] = v;
    }
    if (!val[K_NAME])
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: no model_name", w->src, line_of(m),
                        w->who);
    const yaml_node_t *nv = val[K_NAME];
    if ((rc = ml_get_str(w, nv, "model_name"))) return rc;
    const char *why = name_problem(sval(nv), slen(nv));
    char b[64];
    if (why)
        return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: %s: model_name \"%s\" %s", w->src,
                        line_of(nv), w->who, ml_show(b, sizeof b, sval(nv), slen(nv)), why);
    memcpy(e->name, sval(nv), slen(nv));
    e->name[slen(nv)] = '\0';
    snprintf(w->who, sizeof w->who, "model \"%s\"", e->name);
    int dup = find_name(l, e->name, slen(nv));
    if (dup >= 0 && l->v[dup].kind == MODEL_KIND_UPSTREAM) {
        if (val[K_FALLBACKS] && !is_null(val[K_FALLBACKS]))
            return bar_fail(w->msg, BAR_ERR_INVALID,
                            "%s:%zu: %s: fallbacks of a replica group go on its first entry "
                            "(line %d) or in router_settings.fallbacks",
                            w->src, line_of(val[K_FALLBACKS]), w->who, l->v[dup].line);
        return read_replica(w, l, m, val[K_PARAMS], dup);
    }
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
    if (val[K_DEFAULT] && (rc = ml_get_bool(w, val[K_DEFAULT], "default", &def))) return rc;
    if (val[K_INFO] && (rc = read_info(w, val[K_INFO], &info_def, &e->mode))) return rc;
    if (e->mode == MODEL_MODE_EMBEDDING && (rc = check_embedding(w, e, val[K_PARAMS]))) return rc;
    if (val[K_FALLBACKS] && (rc = read_fallback_steps(w, e, val[K_FALLBACKS], "fallbacks")))
        return rc;
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
        if ((rc = ml_add_upstream(w, l, l->n, e, e->line))) return rc;
        e->timeout = 0; /* an upstream's timeout is per attempt (the replica's), so a
                           retry on another replica still fits */
    }
    return 0;
}

/* ---- fallback chains (latency control) ------------------------------------------------- */

/* Append the steps of sequence v to e's chain. */
static int read_fallback_steps(walk_t *w, model_entry_t *e, const yaml_node_t *v, const char *key)
{
    if (is_null(v)) return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: model \"%s\": %s must be a sequence of steps "
                        "(\"model:NAME\", \"semantic\", \"static:TEXT\")",
                        w->src, line_of(v), e->name, key);
    size_t used = 0;
    for (int i = 0; i < e->n_fallbacks; i++)
        used += strlen(e->fallbacks + used) + 1;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *s = node(w, *it);
        if (!s) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (s->type != YAML_SCALAR_NODE || slen(s) == 0 || slen(s) > 1024 ||
            memchr(sval(s), 0, slen(s)))
            return bar_fail(w->msg, BAR_ERR_FORMAT,
                            "%s:%zu: model \"%s\": each fallback step is a non-empty string of at "
                            "most 1024 bytes",
                            w->src, line_of(s), e->name);
        if (e->n_fallbacks >= MODEL_FALLBACK_STEPS || used + slen(s) + 1 > sizeof e->fallbacks)
            return bar_fail(w->msg, BAR_ERR_RANGE,
                            "%s:%zu: model \"%s\": too many fallback steps (at most %d, %zu "
                            "bytes)",
                            w->src, line_of(s), e->name, MODEL_FALLBACK_STEPS, sizeof e->fallbacks);
        memcpy(e->fallbacks + used, sval(s), slen(s));
        used += slen(s);
        e->fallbacks[used++] = 0;
        e->n_fallbacks++;
    }
    return 0;
}

/* The value v of LiteLLM's `fallbacks:` key (router_settings or
 * litellm_settings): [{NAME: [STEP, ...]}, ...], NAME an entry of this file
 * (l->v[n0..l->n)); each NAME's steps are appended to its chain. */
int ml_read_fallbacks_map(walk_t *w, model_list_t *l, int n0, const yaml_node_t *v)
{
    if (is_null(v)) return 0;
    if (v->type != YAML_SEQUENCE_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: fallbacks must be a sequence of {MODEL: [STEP, ...]}", w->src,
                        line_of(v));
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *m = node(w, *it);
        if (!m || m->type != YAML_MAPPING_NODE)
            return bar_fail(w->msg, BAR_ERR_FORMAT,
                            "%s:%zu: each fallbacks item is a mapping {MODEL: [STEP, ...]}", w->src,
                            m ? line_of(m) : line_of(v));
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top;
             q++) {
            yaml_node_t *mk = node(w, q->key), *mv = node(w, q->value);
            if (!mk || !mv || mk->type != YAML_SCALAR_NODE)
                return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: fallbacks: a model name key",
                                w->src, line_of(m));
            int idx = find_name(l, sval(mk), slen(mk));
            char b[64];
            if (idx < n0)
                return bar_fail(w->msg, BAR_ERR_INVALID,
                                "%s:%zu: fallbacks: unknown model \"%s\" (not in this "
                                "file's model_list)",
                                w->src, line_of(mk), ml_show(b, sizeof b, sval(mk), slen(mk)));
            int rc = read_fallback_steps(w, &l->v[idx], mv, "fallbacks");
            if (rc) return rc;
        }
    }
    return 0;
}

/* litellm_settings: only its `fallbacks` is read (the rest is LiteLLM's). */
static int read_litellm_settings(walk_t *w, model_list_t *l, int n0, const yaml_node_t *sec)
{
    if (sec->type != YAML_MAPPING_NODE) return 0; /* ignored, as before */
    for (yaml_node_pair_t *pr = sec->data.mapping.pairs.start; pr < sec->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = node(w, pr->key), *v = node(w, pr->value);
        if (!k || !v || !is_str(k, "fallbacks")) continue;
        int rc = ml_read_fallbacks_map(w, l, n0, v);
        if (rc) return rc;
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
    /* router_settings and litellm_settings are read after the entries: their
     * fallbacks name them */
    const yaml_node_t *list = NULL, *router = NULL, *litellm = NULL;
    int rc = 0, n0 = l->n;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = ml_key_node(w, pr, "", &rc), *v = node(w, pr->value);
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
            if (router)
                return bar_fail(w->msg, BAR_ERR_INVALID, "%s:%zu: router_settings given twice",
                                w->src, line_of(k));
            router = v;
            continue;
        }
        size_t i = 0;
        while (i < sizeof ignored_top / sizeof ignored_top[0] && !is_str(k, ignored_top[i]))
            i++;
        if (i < sizeof ignored_top / sizeof ignored_top[0]) {
            if (i == 0) litellm = v;
            continue;
        }
        char b[64];
        return bar_fail(
            w->msg, BAR_ERR_INVALID,
            "%s:%zu: unknown top-level key \"%s\" (known: model_list, router_settings; ignored: "
            "litellm_settings, general_settings, "
            "environment_variables)",
            w->src, line_of(k), ml_show(b, sizeof b, sval(k), slen(k)));
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
    if (litellm && (rc = read_litellm_settings(w, l, n0, litellm))) return rc;
    if (router && (rc = ml_read_router(w, l, n0, router))) return rc;
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
                        ml_show(b, sizeof b, arg, strlen(arg)));
    const char *why = name_problem(name, name_n);
    if (why) {
        char nb[64];
        ml_show(nb, sizeof nb, name, name_n);
        if (eq)
            return bar_fail(msg, BAR_ERR_INVALID, "%s \"%s\": model name \"%s\" %s", src,
                            ml_show(b, sizeof b, arg, strlen(arg)), nb, why);
        return bar_fail(msg, BAR_ERR_INVALID,
                        "%s \"%s\": the name taken from the file name, \"%s\", %s; "
                        "give one as NAME=PATH",
                        src, ml_show(b, sizeof b, arg, strlen(arg)), nb, why);
    }
    if (find_name(l, name, name_n) >= 0) {
        char nb[64];
        return bar_fail(msg, BAR_ERR_INVALID,
                        "%s \"%s\": model name \"%s\" given twice; one deployment per name for now",
                        src, ml_show(b, sizeof b, arg, strlen(arg)),
                        ml_show(nb, sizeof nb, name, name_n));
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
