/* models.c — the models one server serves: finding one by the request's
 * "model", and the sampling values a request gets from its model's defaults
 * (docs/SERVE.md, "Several models"). Not for: loading them (cli_serve.c,
 * backend_local.c) or the YAML list (backend/model_list.c). */
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"

api_model_t *api_model_find(api_t *a, const char *name)
{
    if (!name[0] || !strcmp(name, "default")) return &a->models[a->default_idx];
    for (int i = 0; i < a->n_models; i++)
        if (!strcmp(name, a->models[i].cfg.name)) return &a->models[i];
    return NULL;
}

api_model_t *api_model_find_embedding(api_t *a, const char *name)
{
    if (!name[0] || !strcmp(name, "default"))
        return a->embed_idx >= 0 ? &a->models[a->embed_idx] : NULL;
    return api_model_find(a, name);
}

void api_model_sampling(const api_model_t *m, const oai_req_t *q, bk_sampling_t *sp)
{
    const model_entry_t *d = &m->cfg;
    memset(sp, 0, sizeof *sp);
    /* request > model list entry > the model's own (GGUF, else barista's) > OpenAI's */
    const model_sampling_t *o = m->has_dflt ? &m->dflt : NULL;
#define PICK(field, bit, dflt) (q->given & (bit) ? q->field : (d->has & (bit)) ? d->field : (dflt))
    sp->temperature = PICK(temperature, MODEL_HAS_TEMPERATURE, o ? o->temperature : 1.0);
    sp->top_p = PICK(top_p, MODEL_HAS_TOP_P, o ? o->top_p : 1.0);
    sp->top_k = (int)PICK(top_k, MODEL_HAS_TOP_K, o ? o->top_k : 0);
    sp->min_p = PICK(min_p, MODEL_HAS_MIN_P, o ? o->min_p : 0.0);
    sp->repeat_penalty =
        PICK(repeat_penalty, MODEL_HAS_REPEAT_PENALTY, o ? o->repeat_penalty : 1.0);
    sp->presence_penalty = PICK(presence_penalty, MODEL_HAS_PRESENCE_PENALTY, 0.0);
    sp->frequency_penalty = PICK(frequency_penalty, MODEL_HAS_FREQUENCY_PENALTY, 0.0);
#undef PICK
    if (q->given & MODEL_HAS_SEED) {
        sp->seed = q->seed;
        sp->has_seed = 1;
    } else if (d->has & MODEL_HAS_SEED) {
        sp->seed = (uint64_t)d->seed;
        sp->has_seed = 1;
    }
    sp->max_tokens = q->max_tokens > 0                 ? q->max_tokens
                     : (d->has & MODEL_HAS_MAX_TOKENS) ? (int)d->max_tokens
                                                       : 0; /* 0: the server's default */
    sp->n = q->n > 1 ? q->n : 1;
    sp->logit_bias = q->logit_bias;
    sp->n_logit_bias = q->n_logit_bias;
    sp->constraint = q->constraint; /* structured outputs, forced tool calls */
    sp->constraint_len = q->constraint_len;
    sp->grammar = q->grammar;
    sp->stop = (const char *const *)q->stop;
    sp->n_stop = q->n_stop;
    sp->ignore_eos = q->ignore_eos;
    sp->logprobs = q->logprobs;
    sp->top_logprobs = q->top_logprobs;
}

int api_model_check(const api_model_t *m, const oai_req_t *q, oai_err_t *e)
{
    if (m->cfg.kind == MODEL_KIND_UPSTREAM) {
        /* not passed through yet (backend_upstream.c refuses them too) */
        const char *f = q->n > 1              ? "n"
                        : q->n_logit_bias > 0 ? "logit_bias"
                        : q->tool_mode        ? "tools"
                        : q->constraint       ? "response_format"
                                              : NULL;
        if (f)
            return oai_err(e, 400, "invalid_request_error", "unsupported_parameter", f,
                           "'%s' is not passed through to the upstream model '%s' yet.", f,
                           m->cfg.name);
    }
    if (!m->bk || (q->n <= 1 && q->n_logit_bias == 0)) return 0;
    bk_stats_t st;
    bk_stats(m->bk, &st);
    if (q->n > 1 && st.n_slots > 0 && q->n > st.n_slots)
        return oai_err(e, 400, "invalid_request_error", "invalid_value", "n",
                       "Invalid 'n': the model '%s' decodes at most %d sequences at once "
                       "(--parallel), so at most n = %d; got %d.",
                       m->cfg.name, st.n_slots, st.n_slots, q->n);
    for (int i = 0; st.n_vocab > 0 && i < q->n_logit_bias; i++)
        if (q->logit_bias[i].token >= st.n_vocab)
            return oai_err(e, 400, "invalid_request_error", "invalid_value", "logit_bias",
                           "Invalid 'logit_bias': token id %d is outside the vocabulary of the "
                           "model '%s' (ids 0..%d).",
                           q->logit_bias[i].token, m->cfg.name, st.n_vocab - 1);
    return 0;
}

int api_model_backend_req(const api_model_t *m, const oai_req_t *q, size_t body_bytes,
                          const char *tenant, bk_req_t *br, bk_msg_t **msgs)
{
    memset(br, 0, sizeof *br);
    *msgs = NULL;
    br->is_chat = q->kind == OAI_CHAT;
    if (br->is_chat) {
        *msgs = calloc((size_t)q->n_msgs + 1, sizeof **msgs);
        if (!*msgs) return BAR_ERR_NOMEM;
        for (int i = 0; i < q->n_msgs; i++)
            (*msgs)[i] = (bk_msg_t){q->msgs[i].role, q->msgs[i].content, q->msgs[i].content_len};
        br->msgs = *msgs;
        br->n_msgs = q->n_msgs;
    } else {
        br->prompt = q->prompt;
        br->prompt_len = q->prompt_len;
    }
    api_model_sampling(m, q, &br->sp);
    br->priority = q->priority;
    br->tenant = tenant ? tenant : "";
    br->cache_salt = q->cache_salt;
    br->body_bytes = body_bytes;
    br->whole = !q->stream; /* followers that stream get the text at the end */
    /* deadlines are the clients' own timers (gen.c): a coalescing generation
     * outlives any one of them */
    br->deadline = 0;
    return 0;
}
