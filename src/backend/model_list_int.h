/* model_list_int.h — what the two files of the model list reader share:
 * the YAML walk's state and its helpers (model_list.c) and the upstream /
 * router_settings part of it (model_list_upstream.c). Internal: nothing
 * outside src/backend/model_list*.c includes it; the contract is
 * model_list.h. Every function returns 0 or a negative bar_err_t with
 * w->msg set, unless said otherwise. */
#ifndef BARISTA_BACKEND_MODEL_LIST_INT_H
#define BARISTA_BACKEND_MODEL_LIST_INT_H

#include <stddef.h>
#include <string.h>
#include <yaml.h>

#include "backend/model_list.h"

/* One document being read. */
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

/* ---- node access (libyaml's node graph) ---- */

static inline size_t line_of(const yaml_node_t *nd)
{
    return nd->start_mark.line + 1;
}

static inline yaml_node_t *node(walk_t *w, int id)
{
    return yaml_document_get_node(w->doc, id);
}

static inline const char *sval(const yaml_node_t *nd)
{
    return (const char *)nd->data.scalar.value;
}

static inline size_t slen(const yaml_node_t *nd)
{
    return nd->data.scalar.length;
}

static inline int is_str(const yaml_node_t *nd, const char *s)
{
    size_t n = strlen(s);
    return nd->type == YAML_SCALAR_NODE && slen(nd) == n && memcmp(sval(nd), s, n) == 0;
}

static inline int is_null(const yaml_node_t *nd)
{
    return nd->type == YAML_SCALAR_NODE && nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (slen(nd) == 0 || is_str(nd, "~") || is_str(nd, "null") || is_str(nd, "Null") ||
            is_str(nd, "NULL"));
}

/* ---- walk helpers (model_list.c) ---- */

/* Copy p[0..n) into out for a message: at most 48 bytes, anything outside
 * printable ASCII (and '"') as '?', "..." when cut. Returns out. */
const char *ml_show(char *out, size_t cap, const char *p, size_t n);
/* Keys must be scalars without NUL bytes; returns the key node or NULL
 * (*rc and msg set). where names the mapping for messages. */
yaml_node_t *ml_key_node(walk_t *w, yaml_node_pair_t *pr, const char *where, int *rc);
/* Record key index i as seen in *seen; an error when it already was. */
int ml_once(walk_t *w, unsigned *seen, int i, const yaml_node_t *k, const char *where);
/* v must be a plain (unquoted) scalar; what says what it should be. */
int ml_want_plain(walk_t *w, const yaml_node_t *v, const char *key, const char *what);
/* A plain true/false (True, TRUE, False, FALSE) into *out. */
int ml_get_bool(walk_t *w, const yaml_node_t *v, const char *key, int *out);
/* A string value (any scalar style) without NUL bytes. */
int ml_get_str(walk_t *w, const yaml_node_t *v, const char *key);
/* Whether p[0..n) is plain decimal: [+-]digits, for reals an optional
 * .digits and exponent. 1 or 0. */
int ml_numeric_text(const char *p, size_t n, int is_int);
/* The value v of a LiteLLM `fallbacks:` key: [{NAME: [STEP, ...]}, ...],
 * NAME an entry of this file (l->v[n0..l->n)); appended to its chain. */
int ml_read_fallbacks_map(walk_t *w, model_list_t *l, int n0, const yaml_node_t *v);

/* ---- upstream entries and router_settings (model_list_upstream.c) ---- */

/* litellm_params.model "openai/NAME" or "hosted_vllm/NAME": 1 (an upstream:
 * e->kind and w->up.model set), 0 (not an upstream), or an error. */
int ml_upstream_model(walk_t *w, model_entry_t *e, const yaml_node_t *v);
/* One litellm_params key k: v: 1 when it is an upstream key (read into
 * w->up; *rc 0 or an error), 0 when it is not one. */
int ml_read_up_param(walk_t *w, const yaml_node_t *k, const yaml_node_t *v, int *rc);
/* After litellm_params m: an upstream entry has an api_base and none of the
 * local engine's keys; a local one has no upstream keys. */
int ml_check_upstream(walk_t *w, const model_entry_t *e, const yaml_node_t *m);
/* Record w->up as a replica of group `entry` (e: its litellm_params; line
 * for messages). */
int ml_add_upstream(walk_t *w, model_list_t *l, int entry, const model_entry_t *e, int line);
/* router_settings mapping m (or null) into l->router, its fallbacks into the
 * chains of l->v[n0..l->n): call after the file's entries. */
int ml_read_router(walk_t *w, model_list_t *l, int n0, const yaml_node_t *m);

#endif
