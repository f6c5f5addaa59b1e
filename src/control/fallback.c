/* fallback.c — parsing, checking and walking fallback chains (fallback.h).
 * The chain's steps are stored in the model entry as NUL-separated strings
 * (model_entry_t.fallbacks); this file gives them meaning.
 * Not for: running a step (src/api/pipeline.c). */
#include "control/fallback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int has_prefix(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    return n >= k && !memcmp(s, p, k);
}

int fallback_step_parse(const char *s, size_t n, fallback_step_t *out, bar_msg_t *msg)
{
    memset(out, 0, sizeof *out);
    out->arg = "";
    if (n == 0) return bar_fail(msg, BAR_ERR_INVALID, "an empty fallback step");
    if (has_prefix(s, n, "static:")) {
        out->kind = FALLBACK_STATIC;
        out->arg = s + 7;
        out->arg_len = n - 7;
        if (!out->arg_len)
            return bar_fail(msg, BAR_ERR_INVALID, "fallback step \"static:\" has no text");
        return 0;
    }
    if (n == 8 && !memcmp(s, "semantic", 8)) {
        out->kind = FALLBACK_SEMANTIC;
        return 0;
    }
    if (has_prefix(s, n, "semantic:")) {
        char b[32];
        size_t k = n - 9;
        if (k == 0 || k >= sizeof b)
            return bar_fail(msg, BAR_ERR_INVALID,
                            "fallback step \"semantic:SIM\" needs a similarity 0 < SIM <= 1");
        memcpy(b, s + 9, k);
        b[k] = 0;
        char *end = NULL;
        double v = strtod(b, &end);
        if (!end || *end || !(v > 0 && v <= 1))
            return bar_fail(msg, BAR_ERR_INVALID,
                            "fallback step \"semantic:%s\": the similarity must be a number, "
                            "0 < SIM <= 1",
                            b);
        out->kind = FALLBACK_SEMANTIC;
        out->min_sim = v;
        return 0;
    }
    out->kind = FALLBACK_MODEL;
    out->arg = s;
    out->arg_len = n;
    if (has_prefix(s, n, "model:")) {
        out->arg = s + 6;
        out->arg_len = n - 6;
    }
    if (!out->arg_len)
        return bar_fail(msg, BAR_ERR_INVALID, "fallback step \"model:\" has no model name");
    return 0;
}

/* s[0..n) for a one-line message: at most 64 bytes, non-printable bytes as '?'. */
static const char *shown(char out[72], const char *s, size_t n)
{
    size_t k = n < 64 ? n : 64;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' ? s[i] : '?';
    strcpy(out + k, n > 64 ? "..." : "");
    return out;
}

/* The stored string of step i of e, or NULL. */
static const char *raw_step(const model_entry_t *e, int i, size_t *n)
{
    if (i < 0 || i >= e->n_fallbacks) return NULL;
    const char *p = e->fallbacks;
    for (int k = 0; k < i; k++)
        p += strlen(p) + 1;
    *n = strlen(p);
    return p;
}

int fallback_chain_len(const model_entry_t *e)
{
    return e->n_fallbacks;
}

int fallback_chain_step(const model_entry_t *e, int i, fallback_step_t *out)
{
    size_t n;
    const char *p = raw_step(e, i, &n);
    bar_msg_t m;
    return p && fallback_step_parse(p, n, out, &m) == 0;
}

int fallback_check(const model_list_t *l, bar_msg_t *msg)
{
    for (int i = 0; i < l->n; i++) {
        const model_entry_t *e = &l->v[i];
        if (e->n_fallbacks && e->mode != MODEL_MODE_CHAT)
            return bar_fail(msg, BAR_ERR_INVALID,
                            "model \"%s\": an embedding model takes no fallbacks", e->name);
        for (int k = 0; k < e->n_fallbacks; k++) {
            size_t n;
            const char *p = raw_step(e, k, &n);
            fallback_step_t st;
            bar_msg_t m = {{0}};
            char b1[72], b2[72];
            if (fallback_step_parse(p, n, &st, &m)) {
                for (char *q = m.text; *q; q++) /* it may quote the step: one line */
                    if ((unsigned char)*q < 0x20) *q = '?';
                return bar_fail(msg, BAR_ERR_INVALID, "model \"%s\": %s", e->name, m.text);
            }
            if (st.kind != FALLBACK_MODEL) continue;
            const model_entry_t *t = model_list_find(l, st.arg, st.arg_len);
            if (!t || (st.arg_len == 7 && !memcmp(st.arg, "default", 7)))
                return bar_fail(msg, BAR_ERR_INVALID,
                                "model \"%s\": fallback step \"%s\" names an unknown model \"%s\"",
                                e->name, shown(b1, p, n), shown(b2, st.arg, st.arg_len));
            if (t == e)
                return bar_fail(msg, BAR_ERR_INVALID,
                                "model \"%s\": fallback step \"%s\" names the model itself",
                                e->name, shown(b1, p, n));
            if (t->mode != MODEL_MODE_CHAT)
                return bar_fail(msg, BAR_ERR_INVALID,
                                "model \"%s\": fallback step \"%s\" names an embedding model",
                                e->name, shown(b1, p, n));
        }
    }
    return 0;
}

void fallback_step_name(const fallback_step_t *st, char *out, size_t cap)
{
    if (st->kind == FALLBACK_MODEL)
        snprintf(out, cap, "model:%.*s", (int)st->arg_len, st->arg);
    else
        snprintf(out, cap, "%s", fallback_kind_name(st->kind));
}

const char *fallback_kind_name(fallback_kind_t k)
{
    return k == FALLBACK_MODEL ? "model" : k == FALLBACK_SEMANTIC ? "semantic" : "static";
}
