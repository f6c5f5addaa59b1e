/* model_list_upstream.c — the gateway's part of the model list reader:
 * upstream entries (litellm_params.model "openai/NAME" / "hosted_vllm/NAME",
 * api_base, api_key, rpm, tpm, weight, max_parallel_requests; several entries of one name form a
 * replica group) and router_settings, the one reader of it (the groups'
 * routing and retries, and the fallback chains' `fallbacks`). The rules are
 * model_list.h's; the walk and its helpers are model_list.c's
 * (model_list_int.h). Not for: talking to upstreams (src/upstream/,
 * backend_upstream.c). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/model_list_int.h"

/* litellm_params.model "openai/NAME" or "hosted_vllm/NAME": 1 (an upstream,
 * w->up.model set), 0 (not an upstream), or an error. */
int ml_upstream_model(walk_t *w, model_entry_t *e, const yaml_node_t *v)
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

enum { UP_BASE, UP_KEY, UP_RPM, UP_TPM, UP_WEIGHT, UP_MAXPAR, N_UP_KEYS };
static const char *const up_keys[N_UP_KEYS] = {"api_base", "api_key", "rpm",
                                               "tpm",      "weight",  "max_parallel_requests"};

/* One upstream key of litellm_params: 1 handled (or *rc an error), 0 not one. */
int ml_read_up_param(walk_t *w, const yaml_node_t *k, const yaml_node_t *v, int *rc)
{
    int i = 0;
    while (i < N_UP_KEYS && !is_str(k, up_keys[i]))
        i++;
    if (i == N_UP_KEYS) return 0;
    if ((*rc = ml_once(w, &w->up_seen, i, k, w->who))) return 1;
    if (!w->up_line) w->up_line = line_of(k);
    char b[64];
    if (i == UP_BASE || i == UP_KEY) {
        if ((*rc = ml_get_str(w, v, up_keys[i]))) return 1;
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
                               w->src, line_of(v), w->who, ml_show(b, sizeof b, p, n));
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
    if ((*rc = ml_want_plain(w, v, up_keys[i], "a number"))) return 1;
    char txt[64];
    size_t n = slen(v);
    int is_int = i != UP_WEIGHT;
    if (!ml_numeric_text(sval(v), n, is_int) || n >= sizeof txt) {
        *rc = bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: %s: %s must be %s (got \"%s\")", w->src,
                       line_of(v), w->who, up_keys[i], is_int ? "an integer" : "a number",
                       ml_show(b, sizeof b, sval(v), n));
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
        *(i == UP_RPM ? &w->up.rpm : i == UP_TPM ? &w->up.tpm : &w->up.max_parallel) = x;
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
int ml_check_upstream(walk_t *w, const model_entry_t *e, const yaml_node_t *m)
{
    if (e->kind != MODEL_KIND_UPSTREAM) {
        if (w->up_seen)
            return bar_fail(
                w->msg, BAR_ERR_INVALID,
                "%s:%zu: %s: api_base, api_key, rpm, tpm, weight and max_parallel_requests "
                "belong to an "
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
int ml_add_upstream(walk_t *w, model_list_t *l, int entry, const model_entry_t *e, int line)
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

/* router_settings, the one reader of it: LiteLLM's keys barista reads (the
 * upstream groups' routing and retries; `fallbacks`, appended to the chains
 * of this file's entries l->v[n0..l->n), so it runs after them); its other
 * known keys are accepted and ignored; anything else is an error. */
int ml_read_router(walk_t *w, model_list_t *l, int n0, const yaml_node_t *m)
{
    static const char *const ignored[] = {
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
        yaml_node_t *k = ml_key_node(w, pr, w->who, &rc), *v = node(w, pr->value);
        if (!k) return rc;
        if (!v) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: bad YAML node", w->src);
        if (is_str(k, "routing_strategy")) {
            if ((rc = ml_once(w, &seen, 0, k, w->who)) ||
                (rc = ml_get_str(w, v, "routing_strategy")))
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
                                w->src, line_of(v), ml_show(b, sizeof b, sval(v), slen(v)));
            continue;
        }
        if (is_str(k, "fallbacks")) {
            if ((rc = ml_once(w, &seen, 6, k, w->who)) || (rc = ml_read_fallbacks_map(w, l, n0, v)))
                return rc;
            continue;
        }
        if (is_str(k, "hedging")) {
            if ((rc = ml_once(w, &seen, 4, k, w->who)) ||
                (rc = ml_get_bool(w, v, "router_settings.hedging", &r.hedge)))
                return rc;
            continue;
        }
        static const char *const nums[] = {"num_retries", "allowed_fails", "cooldown_time",
                                           "health_check_interval"};
        int i = 0;
        while (i < 4 && !is_str(k, nums[i]))
            i++;
        if (i < 4) {
            if ((rc = ml_once(w, &seen, i == 3 ? 5 : i + 1, k, w->who)) ||
                (rc = ml_want_plain(w, v, nums[i], "a number")))
                return rc;
            char txt[64];
            size_t n = slen(v);
            if (!ml_numeric_text(sval(v), n, i < 2) || n >= sizeof txt)
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
            "num_retries, allowed_fails, cooldown_time, hedging, health_check_interval, "
            "fallbacks)",
            w->src, line_of(k), ml_show(b, sizeof b, sval(k), slen(k)));
    }
    l->router = r;
    l->has_router = 1;
    return 0;
}
