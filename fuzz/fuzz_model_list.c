/* fuzz_model_list.c — libFuzzer target for the YAML model list and the
 * --model argument form (src/backend/model_list.c).
 *
 * The input up to its first NUL byte (at most 300 bytes) is also tried as a
 * --model argument, and from its second byte as an --embedding-model
 * argument; the whole input is loaded as a YAML model list on top of
 * it, then finished. A rejected input must give a negative code, a non-empty
 * message and the list as it was; an accepted one is checked against the
 * rules the header promises (names valid and unique, paths non-empty and
 * NUL-terminated, every value in range, at most one default per mode, the
 * default chat and embedding entries of their mode, embedding entries
 * without chat-only fields, lookups find each entry, fallback chains
 * well-formed and their check a one-line answer). Any violation abort()s. Not for: anything but
 * fuzzing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/model_list.h"
#include "control/fallback.h"
#include "fuzz_util.h"

static int in(double x, double lo, double hi)
{
    return isfinite(x) && x >= lo && x <= hi;
}

static void check_entry(const model_list_t *l, int i)
{
    const model_entry_t *e = &l->v[i];
    size_t n = strnlen(e->name, sizeof e->name);
    if (n == 0 || n >= sizeof e->name || strcmp(e->name, "default") == 0) abort();
    for (size_t k = 0; k < n; k++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-",
                    e->name[k]))
            abort();
    if (e->kind == MODEL_KIND_UPSTREAM) {
        /* a replica group: its replicas carry the addresses, no path */
        int reps = 0;
        for (int u = 0; u < l->n_ups; u++) {
            const model_upstream_t *up = &l->ups[u];
            if (up->entry < 0 || up->entry >= l->n) abort();
            if (up->entry != i) continue;
            reps++;
            size_t bn = strnlen(up->api_base, sizeof up->api_base);
            if (bn == 0 || bn >= sizeof up->api_base || strncmp(up->api_base, "http", 4)) abort();
            touch(up->api_base, bn);
            if (up->rpm < 0 || up->tpm < 0 || up->max_parallel < 0) abort();
            if (!(up->weight > 0 && up->weight <= 1e6) || !(up->timeout >= 0)) abort();
        }
        if (reps == 0) abort();
    } else {
        size_t pn = strnlen(e->path, sizeof e->path);
        if (pn == 0 || pn >= sizeof e->path) abort();
        touch(e->path, pn);
        if (e->kind != MODEL_KIND_LOCAL) abort();
    }
    if (e->threads != -1 && (e->threads < 1 || e->threads > 1024)) abort();
    if (e->ctx != -1 && (e->ctx < 16 || e->ctx > 1048576)) abort();
    if (e->parallel != -1 && (e->parallel < 1 || e->parallel > 1024)) abort();
    unsigned h = e->has;
    if (h & ~0x1ffu) abort();
    if ((h & MODEL_HAS_TEMPERATURE) && !in(e->temperature, 0, 2)) abort();
    if ((h & MODEL_HAS_TOP_P) && !in(e->top_p, 0, 1)) abort();
    if ((h & MODEL_HAS_TOP_K) && (e->top_k < 0 || e->top_k > INT32_MAX)) abort();
    if ((h & MODEL_HAS_MIN_P) && !in(e->min_p, 0, 1)) abort();
    if ((h & MODEL_HAS_REPEAT_PENALTY) && !(in(e->repeat_penalty, 0, 10) && e->repeat_penalty > 0))
        abort();
    if ((h & MODEL_HAS_PRESENCE_PENALTY) && !in(e->presence_penalty, -2, 2)) abort();
    if ((h & MODEL_HAS_FREQUENCY_PENALTY) && !in(e->frequency_penalty, -2, 2)) abort();
    if ((h & MODEL_HAS_MAX_TOKENS) && e->max_tokens < 1) abort();
    if ((h & MODEL_HAS_SEED) && e->seed < 0) abort();
    if (model_list_find(l, e->name, n) != e) abort();
    /* the fallback chain: n_fallbacks NUL-terminated steps inside the buffer */
    if (e->n_fallbacks < 0 || e->n_fallbacks > MODEL_FALLBACK_STEPS) abort();
    size_t used = 0;
    for (int k = 0; k < e->n_fallbacks; k++) {
        size_t sn = strnlen(e->fallbacks + used, sizeof e->fallbacks - used);
        if (sn == 0 || used + sn >= sizeof e->fallbacks) abort();
        used += sn + 1;
        fallback_step_t st;
        if (fallback_chain_step(e, k, &st)) touch(st.arg, st.arg_len);
    }
}

static void check_rc(int rc, const bar_msg_t *m, int n_before, int n_after)
{
    if (rc > 0) abort();
    if (rc < 0 && (m->text[0] == '\0' || n_after != n_before)) abort();
    if (strnlen(m->text, sizeof m->text) == sizeof m->text) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    model_list_t l = {0};
    bar_msg_t m;
    char arg[301];
    size_t an = strnlen((const char *)data, size < 300 ? size : 300);
    memcpy(arg, data, an);
    arg[an] = '\0';
    m.text[0] = '\0';
    int rc = model_list_add_arg(&l, arg, &m);
    check_rc(rc, &m, 0, l.n);
    int n_arg = l.n;
    m.text[0] = '\0';
    rc = model_list_add_embedding(&l, arg + (an > 1 ? 1 : 0), &m); /* a second name */
    check_rc(rc, &m, n_arg, l.n);

    int n0 = l.n;
    m.text[0] = '\0';
    rc = model_list_load_mem(&l, (const char *)data, size, (size && (data[0] & 1)) ? "/base" : NULL,
                             &m);
    check_rc(rc, &m, n0, l.n);

    m.text[0] = '\0';
    rc = model_list_finish(&l, &m);
    check_rc(rc, &m, l.n, l.n);
    int chats = 0;
    for (int i = 0; i < l.n; i++)
        chats += l.v[i].mode == MODEL_MODE_CHAT;
    if (rc == 0) {
        if (l.n < 1 || l.n > MODEL_LIST_MAX || l.default_idx < 0 || l.default_idx >= l.n) abort();
        if (l.v[l.default_idx].mode != MODEL_MODE_CHAT) abort();
        int defaults[2] = {0, 0}, embeds = 0;
        for (int i = 0; i < l.n; i++) {
            const model_entry_t *e = &l.v[i];
            check_entry(&l, i);
            if (e->mode != MODEL_MODE_CHAT && e->mode != MODEL_MODE_EMBEDDING) abort();
            defaults[e->mode] += e->is_default != 0;
            embeds += e->mode == MODEL_MODE_EMBEDDING;
            /* an embedding entry takes model and threads only */
            if (e->mode == MODEL_MODE_EMBEDDING && (e->has || e->ctx != -1 || e->parallel != -1))
                abort();
        }
        if (defaults[0] > 1 || defaults[1] > 1) abort();
        /* the start-up check of the chains: 0 or a one-line message */
        m.text[0] = '\0';
        rc = fallback_check(&l, &m);
        if (rc > 0 || (rc < 0 && (!m.text[0] || strchr(m.text, '\n')))) abort();
        if (defaults[0] && !l.v[l.default_idx].is_default) abort();
        if (model_list_find(&l, "default", 7) != &l.v[l.default_idx]) abort();
        if (embeds ? (l.embed_idx < 0 || l.embed_idx >= l.n ||
                      l.v[l.embed_idx].mode != MODEL_MODE_EMBEDDING ||
                      (defaults[1] && !l.v[l.embed_idx].is_default))
                   : l.embed_idx != -1)
            abort();
    } else if (chats != 0) {
        abort(); /* finish fails only on a list without a chat model */
    }
    model_list_free(&l);
    return 0;
}
