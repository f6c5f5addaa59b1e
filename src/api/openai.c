/* openai.c — OpenAI request validation and response objects (see openai.h).
 * Requests are parsed with cJSON; responses are written directly into a
 * buffer (one per token chunk, so no DOM is built on the hot path). */
#include "api/openai.h"

#include "api/tools.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD_REQ "invalid_request_error"

int oai_err(oai_err_t *e, int status, const char *type, const char *code, const char *param,
            const char *fmt, ...)
{
    e->status = status;
    e->type = type ? type : BAD_REQ;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -status;
}

const char *oai_json_type_name(const cJSON *v)
{
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

int oai_bad_type(oai_err_t *e, const char *param, const char *want, const cJSON *v)
{
    return oai_err(e, 400, BAD_REQ, "invalid_type", param,
                   "Invalid type for '%s': expected %s, but got %s instead.", param, want,
                   oai_json_type_name(v));
}

const cJSON *oai_member(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static int get_number(const cJSON *o, const char *name, double lo, double hi, double *out,
                      oai_err_t *e)
{
    const cJSON *v = oai_member(o, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return oai_bad_type(e, name, "a number", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || d > hi)
        return oai_err(e, 400, BAD_REQ, "invalid_value", name,
                       "Invalid '%s': expected a value between %g and %g, but got %g instead.",
                       name, lo, hi, d);
    *out = d;
    return 0;
}

static int get_int(const cJSON *o, const char *name, long long lo, long long hi, long long *out,
                   int *given, oai_err_t *e)
{
    const cJSON *v = oai_member(o, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !isfinite(v->valuedouble))
        return oai_bad_type(e, name, "an integer", v);
    double d = v->valuedouble;
    if (d < (double)lo || d > (double)hi)
        return oai_err(e, 400, BAD_REQ, "invalid_value", name,
                       "Invalid '%s': expected an integer between %lld and %lld, but got %.0f "
                       "instead.",
                       name, lo, hi, d);
    *out = (long long)d;
    if (given) *given = 1;
    return 0;
}

static int get_bool(const cJSON *o, const char *name, int *out, oai_err_t *e)
{
    const cJSON *v = oai_member(o, name);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return oai_bad_type(e, name, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int nomem(oai_err_t *e)
{
    return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* content: a string, or an array of {"type":"text","text":"..."} parts. */
static int parse_content(oai_msg_t *m, const cJSON *c, int i, int allow_null, oai_err_t *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (!c || cJSON_IsNull(c)) {
        if (!allow_null)
            return oai_err(e, 400, BAD_REQ, "missing_required_parameter", param,
                           "Missing required parameter: '%s'.", param);
        m->content = dup_n("", 0);
        return m->content ? 0 : nomem(e);
    }
    if (cJSON_IsString(c)) {
        m->content_len = strlen(c->valuestring);
        m->content = dup_n(c->valuestring, m->content_len);
        return m->content ? 0 : nomem(e);
    }
    if (!cJSON_IsArray(c))
        return oai_bad_type(e, param, "a string or an array of content parts", c);
    buf_t b = {0};
    int j = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c)
    {
        char pp[96];
        snprintf(pp, sizeof pp, "%s[%d]", param, j);
        if (!cJSON_IsObject(part)) {
            buf_free(&b);
            return oai_bad_type(e, pp, "an object", part);
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        if (!cJSON_IsString(type)) {
            buf_free(&b);
            snprintf(pp, sizeof pp, "%s[%d].type", param, j);
            return type ? oai_bad_type(e, pp, "a string", type)
                        : oai_err(e, 400, BAD_REQ, "missing_required_parameter", pp,
                                  "Missing required parameter: '%s'.", pp);
        }
        if (strcmp(type->valuestring, "text")) {
            buf_free(&b);
            snprintf(pp, sizeof pp, "%s[%d].type", param, j);
            return oai_err(e, 400, BAD_REQ, "unsupported_value", pp,
                           "Content part type '%.64s' is not supported; only 'text' parts are.",
                           type->valuestring);
        }
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(text)) {
            buf_free(&b);
            snprintf(pp, sizeof pp, "%s[%d].text", param, j);
            return text ? oai_bad_type(e, pp, "a string", text)
                        : oai_err(e, 400, BAD_REQ, "missing_required_parameter", pp,
                                  "Missing required parameter: '%s'.", pp);
        }
        if (buf_puts(&b, text->valuestring)) {
            buf_free(&b);
            return nomem(e);
        }
        j++;
    }
    m->content_len = b.n;
    m->content = b.p ? buf_release(&b) : dup_n("", 0);
    return m->content ? 0 : nomem(e);
}

static int parse_messages(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!ms || cJSON_IsNull(ms))
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter", "messages",
                       "Missing required parameter: 'messages'.");
    if (!cJSON_IsArray(ms)) return oai_bad_type(e, "messages", "an array", ms);
    int n = cJSON_GetArraySize(ms);
    if (n == 0)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "messages",
                       "Invalid 'messages': empty array. Expected an array with minimum length 1.");
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return nomem(e);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms)
    {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) return oai_bad_type(e, param, "an object", m);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!role || cJSON_IsNull(role))
            return oai_err(e, 400, BAD_REQ, "missing_required_parameter", param,
                           "Missing required parameter: '%s'.", param);
        if (!cJSON_IsString(role)) return oai_bad_type(e, param, "a string", role);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
            strcmp(rs, "tool"))
            return oai_err(e, 400, BAD_REQ, "invalid_value", param,
                           "Invalid value for '%s': '%.32s'. Supported values are: 'system', "
                           "'developer', 'user', 'assistant' and 'tool'.",
                           param, role->valuestring);
        snprintf(r->msgs[i].role, sizeof r->msgs[i].role, "%s", rs);
        r->n_msgs = i + 1;
        int rc = parse_content(&r->msgs[i], cJSON_GetObjectItemCaseSensitive(m, "content"), i,
                               !strcmp(rs, "assistant"), e);
        if (rc) return rc;
        /* tool calls in the history (tools.c renders them as text) */
        const cJSON *calls = oai_member(m, "tool_calls");
        if (calls && !strcmp(rs, "assistant") &&
            (rc = tools_render_calls(&r->msgs[i], calls, i, e)))
            return rc;
        if (!strcmp(rs, "tool") && (rc = tools_render_result(&r->msgs[i], i, e))) return rc;
        i++;
    }
    return 0;
}

static int parse_prompt(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p))
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter", "prompt",
                       "Missing required parameter: 'prompt'.");
    if (cJSON_IsArray(p)) {
        if (cJSON_GetArraySize(p) != 1)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "prompt",
                           "Invalid 'prompt': only a string or an array of exactly one string "
                           "is supported (got an array of %d).",
                           cJSON_GetArraySize(p));
        const cJSON *s = cJSON_GetArrayItem(p, 0);
        if (!cJSON_IsString(s)) return oai_bad_type(e, "prompt[0]", "a string", s);
        p = s;
    } else if (!cJSON_IsString(p)) {
        return oai_bad_type(e, "prompt", "a string or an array of one string", p);
    }
    r->prompt_len = strlen(p->valuestring);
    r->prompt = dup_n(p->valuestring, r->prompt_len);
    return r->prompt ? 0 : nomem(e);
}

static int parse_stop(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *s = oai_member(root, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return 0;
        r->stop[0] = dup_n(s->valuestring, strlen(s->valuestring));
        r->n_stop = 1;
        return r->stop[0] ? 0 : nomem(e);
    }
    if (!cJSON_IsArray(s)) return oai_bad_type(e, "stop", "a string or an array of strings", s);
    if (cJSON_GetArraySize(s) > OAI_MAX_STOP)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "stop",
                       "Invalid 'stop': array too long. Expected at most %d strings, got %d.",
                       OAI_MAX_STOP, cJSON_GetArraySize(s));
    int j = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, s)
    {
        char pp[32];
        snprintf(pp, sizeof pp, "stop[%d]", j++);
        if (!cJSON_IsString(it)) return oai_bad_type(e, pp, "a string", it);
        if (!it->valuestring[0])
            return oai_err(e, 400, BAD_REQ, "invalid_value", pp,
                           "Invalid '%s': stop strings must not be empty.", pp);
        r->stop[r->n_stop] = dup_n(it->valuestring, strlen(it->valuestring));
        if (!r->stop[r->n_stop]) return nomem(e);
        r->n_stop++;
    }
    return 0;
}

/* logit_bias: {"<token id>": bias, ...}, ids as decimal strings (OpenAI's
 * shape), biases in [-100, 100]. Whether an id is in the vocabulary is the
 * model's business (api_model_check). */
static int parse_logit_bias(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *v = oai_member(root, "logit_bias");
    if (!v) return 0;
    if (!cJSON_IsObject(v)) return oai_bad_type(e, "logit_bias", "an object", v);
    int n = cJSON_GetArraySize(v);
    if (n == 0) return 0;
    if (n > OAI_LOGIT_BIAS_MAX)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "logit_bias",
                       "Invalid 'logit_bias': at most %d entries, got %d.", OAI_LOGIT_BIAS_MAX, n);
    r->logit_bias = calloc((size_t)n, sizeof *r->logit_bias);
    if (!r->logit_bias) return nomem(e);
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        const char *k = it->string ? it->string : "";
        size_t kl = strlen(k);
        int ok = kl > 0 && kl <= 9;
        for (size_t i = 0; ok && i < kl; i++)
            ok = k[i] >= '0' && k[i] <= '9';
        if (!ok)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "logit_bias",
                           "Invalid 'logit_bias': key '%.32s' is not a token id (a non-negative "
                           "integer written as a string).",
                           k);
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
            return oai_err(e, 400, BAD_REQ, "invalid_type", "logit_bias",
                           "Invalid 'logit_bias': the bias of token %s must be a number, got %s.",
                           k, oai_json_type_name(it));
        if (it->valuedouble < -100 || it->valuedouble > 100)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "logit_bias",
                           "Invalid 'logit_bias': the bias of token %s must be between -100 and "
                           "100, got %g.",
                           k, it->valuedouble);
        r->logit_bias[r->n_logit_bias++] = (oai_bias_t){atoi(k), (float)it->valuedouble};
    }
    return 0;
}

/* Known OpenAI features barista does not implement: reject when used. */
static int reject_unsupported(const cJSON *root, oai_kind_t kind, oai_err_t *e)
{
    const cJSON *v;
    if ((v = oai_member(root, "functions")) && (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 0))
        return oai_err(e, 400, BAD_REQ, "unsupported_parameter", "functions",
                       "'functions' is not supported by this server.");
    if (kind == OAI_COMPLETION) {
        int echo = 0;
        if (get_bool(root, "echo", &echo, e)) return -e->status;
        if (echo)
            return oai_err(e, 400, BAD_REQ, "unsupported_value", "echo",
                           "'echo' is not supported by this server.");
        long long best_of = 1;
        if (get_int(root, "best_of", 1, 1 << 20, &best_of, NULL, e)) return -e->status;
        if (best_of != 1)
            return oai_err(e, 400, BAD_REQ, "unsupported_value", "best_of",
                           "'best_of' > 1 is not supported by this server; use 'n' (its choices "
                           "share one prefill) and pick among them.");
        if ((v = oai_member(root, "suffix")) && (!cJSON_IsString(v) || v->valuestring[0]))
            return oai_err(e, 400, BAD_REQ, "unsupported_parameter", "suffix",
                           "'suffix' is not supported by this server.");
    }
    return 0;
}

void oai_req_free(oai_req_t *r)
{
    for (int i = 0; i < r->n_msgs; i++)
        free(r->msgs[i].content);
    free(r->msgs);
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->logit_bias);
    free(r->constraint);
    gram_release(r->grammar);
    memset(r, 0, sizeof *r);
}

int oai_parse_model_name(const cJSON *root, char *out, size_t size, oai_err_t *e)
{
    const cJSON *v = oai_member(root, "model");
    if (v) {
        if (!cJSON_IsString(v)) return oai_bad_type(e, "model", "a string", v);
        if (strlen(v->valuestring) >= size)
            return oai_err(e, 404, BAD_REQ, "model_not_found", "model",
                           "The model '%.64s...' does not exist.", v->valuestring);
        snprintf(out, size, "%s", v->valuestring);
    }
    return 0;
}

static int parse_model(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    return oai_parse_model_name(root, r->model, sizeof r->model, e);
}

/* stream_options (after r->stream is known) */
static int parse_stream_options(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *v = oai_member(root, "stream_options");
    if (v) {
        if (!cJSON_IsObject(v)) return oai_bad_type(e, "stream_options", "an object", v);
        if (!r->stream)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "stream_options",
                           "The 'stream_options' parameter is only allowed when 'stream' is "
                           "enabled.");
        const cJSON *iu = oai_member(v, "include_usage");
        if (iu && !cJSON_IsBool(iu))
            return oai_bad_type(e, "stream_options.include_usage", "a boolean", iu);
        r->include_usage = iu && cJSON_IsTrue(iu);
    }
    return 0;
}

static int parse_root(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    int rc;
    const cJSON *v;
    if ((rc = parse_model(r, root, e))) return rc;
    if ((rc = reject_unsupported(root, r->kind, e))) return rc;
    if (r->kind == OAI_CHAT)
        rc = parse_messages(r, root, e);
    else
        rc = parse_prompt(r, root, e);
    if (rc) return rc;
    if ((rc = tools_parse_response_format(r, root, e)) || (rc = tools_parse_request(r, root, e)))
        return rc;

    long long ll = 0;
    int given = 0;
    const char *mt_name = "max_tokens";
    if (oai_member(root, "max_completion_tokens")) mt_name = "max_completion_tokens";
    if ((rc = get_int(root, mt_name, 1, 1 << 30, &ll, &given, e))) return rc;
    if (given && !strcmp(mt_name, "max_completion_tokens") && oai_member(root, "max_tokens")) {
        long long ll2 = 0;
        if ((rc = get_int(root, "max_tokens", 1, 1 << 30, &ll2, NULL, e))) return rc;
    }
    r->max_tokens = given ? (int)ll : -1;

    if ((rc = get_number(root, "temperature", 0, 2, &r->temperature, e)) ||
        (rc = get_number(root, "top_p", 0, 1, &r->top_p, e)) ||
        (rc = get_number(root, "min_p", 0, 1, &r->min_p, e)) ||
        (rc = get_number(root, "presence_penalty", -2, 2, &r->presence_penalty, e)) ||
        (rc = get_number(root, "frequency_penalty", -2, 2, &r->frequency_penalty, e)) ||
        (rc = get_number(root, "repeat_penalty", 0, 10, &r->repeat_penalty, e)))
        return rc;
    ll = 0;
    if ((rc = get_int(root, "top_k", -1, 1 << 20, &ll, NULL, e))) return rc;
    r->top_k = ll < 0 ? 0 : (int)ll;

    v = oai_member(root, "seed");
    if (v) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            fabs(v->valuedouble) > 9.2e18)
            return oai_bad_type(e, "seed", "an integer", v);
        r->has_seed = 1;
        r->seed = (uint64_t)(int64_t)v->valuedouble;
    }
    ll = 1;
    if ((rc = get_int(root, "n", 1, OAI_N_MAX, &ll, NULL, e))) return rc;
    r->n = (int)ll;
    if (r->n > 1 && r->tool_mode != TOOLS_NONE)
        return oai_err(e, 400, BAD_REQ, "unsupported_value", "n",
                       "'n' > 1 together with 'tools' is not supported by this server: send one "
                       "request per choice (n > 1 works with response_format, each choice "
                       "constrained).");
    if ((rc = parse_logit_bias(r, root, e))) return rc;
    if ((v = oai_member(root, "user")) && !cJSON_IsString(v))
        return oai_bad_type(e, "user", "a string", v);
    ll = 0;
    /* vLLM's range: lower runs sooner */
    if ((rc = get_int(root, "priority", -100, 100, &ll, NULL, e))) return rc;
    r->priority = (int)ll;
    if ((rc = get_number(root, "timeout", 0, 86400, &r->timeout_s, e))) return rc;
    if ((v = oai_member(root, "cache_salt"))) {
        if (!cJSON_IsString(v)) return oai_bad_type(e, "cache_salt", "a string", v);
        if (strlen(v->valuestring) >= sizeof r->cache_salt)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "cache_salt",
                           "Invalid 'cache_salt': at most %zu bytes.", sizeof r->cache_salt - 1);
        snprintf(r->cache_salt, sizeof r->cache_salt, "%s", v->valuestring);
    }
    static const struct {
        const char *name;
        unsigned bit;
    } sampling[] = {
        {"temperature", MODEL_HAS_TEMPERATURE},
        {"top_p", MODEL_HAS_TOP_P},
        {"top_k", MODEL_HAS_TOP_K},
        {"min_p", MODEL_HAS_MIN_P},
        {"repeat_penalty", MODEL_HAS_REPEAT_PENALTY},
        {"presence_penalty", MODEL_HAS_PRESENCE_PENALTY},
        {"frequency_penalty", MODEL_HAS_FREQUENCY_PENALTY},
        {"seed", MODEL_HAS_SEED},
    };
    for (size_t i = 0; i < sizeof sampling / sizeof sampling[0]; i++)
        if (oai_member(root, sampling[i].name)) r->given |= sampling[i].bit;
    if (r->max_tokens > 0) r->given |= MODEL_HAS_MAX_TOKENS;
    if ((rc = parse_stop(r, root, e))) return rc;
    if ((rc = get_bool(root, "stream", &r->stream, e)) ||
        (rc = get_bool(root, "ignore_eos", &r->ignore_eos, e)) ||
        (rc = parse_stream_options(r, root, e)))
        return rc;
    if (r->kind == OAI_CHAT) {
        if ((rc = get_bool(root, "logprobs", &r->logprobs, e))) return rc;
        ll = 0;
        given = 0;
        if ((rc = get_int(root, "top_logprobs", 0, 20, &ll, &given, e))) return rc;
        if (given && !r->logprobs)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "top_logprobs",
                           "'top_logprobs' requires 'logprobs' to be true.");
        r->top_logprobs = (int)ll;
    } else {
        ll = 0;
        given = 0;
        if ((rc = get_int(root, "logprobs", 0, 5, &ll, &given, e))) return rc;
        r->logprobs = given;
        r->top_logprobs = (int)ll;
    }
    return 0;
}

static void req_init(oai_req_t *r, oai_kind_t kind)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->n = 1;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->repeat_penalty = 1.0;
}

int oai_parse_json(const char *body, size_t n, cJSON **out, oai_err_t *e)
{
    *out = NULL;
    if (n == 0)
        return oai_err(e, 400, BAD_REQ, "invalid_json", NULL,
                       "The request body is empty; expected a JSON object.");
    if (memchr(body, '\0', n))
        return oai_err(e, 400, BAD_REQ, "invalid_json", NULL,
                       "The request body contains a NUL byte at %zu; JSON text cannot.",
                       (size_t)((const char *)memchr(body, '\0', n) - body));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, n, &end, 0);
    if (!root) {
        size_t off = end && end >= body && end <= body + n ? (size_t)(end - body) : 0;
        return oai_err(e, 400, BAD_REQ, "invalid_json", NULL,
                       "We could not parse the JSON body of your request (error near byte %zu). "
                       "Expected a JSON object.",
                       off);
    }
    /* only whitespace may follow the value */
    for (const char *p = end; p && p < body + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return oai_err(e, 400, BAD_REQ, "invalid_json", NULL,
                           "Unexpected data after the JSON value at byte %zu.", (size_t)(p - body));
        }
    if (!cJSON_IsObject(root)) {
        int rc =
            oai_err(e, 400, BAD_REQ, "invalid_json", NULL,
                    "The request body must be a JSON object, got %s.", oai_json_type_name(root));
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return 0;
}

int oai_parse_tree(oai_req_t *r, oai_kind_t kind, const cJSON *root, oai_err_t *e)
{
    return oai_parse_tree_cached(r, kind, root, NULL, e);
}

int oai_parse_tree_cached(oai_req_t *r, oai_kind_t kind, const cJSON *root, gram_cache_t *grams,
                          oai_err_t *e)
{
    req_init(r, kind);
    r->grams = grams;
    return parse_root(r, root, e);
}

int oai_parse_delivery(oai_req_t *r, oai_kind_t kind, const cJSON *root, oai_err_t *e)
{
    req_init(r, kind);
    int rc;
    const cJSON *v;
    if ((rc = parse_model(r, root, e))) return rc;
    if ((v = oai_member(root, "user")) && !cJSON_IsString(v))
        return oai_bad_type(e, "user", "a string", v);
    if ((rc = get_bool(root, "stream", &r->stream, e)) || (rc = parse_stream_options(r, root, e)))
        return rc;
    r->tool_mode = kind == OAI_CHAT ? tools_mode_of(root) : 0; /* in the key: valid when stored */
    /* logprobs is part of the key (valid when stored); read it for the output */
    if (kind == OAI_CHAT) {
        v = oai_member(root, "logprobs");
        r->logprobs = v && cJSON_IsTrue(v);
    } else {
        r->logprobs = oai_member(root, "logprobs") != NULL;
    }
    return 0;
}

int oai_parse_request(oai_req_t *r, oai_kind_t kind, const char *body, size_t n, oai_err_t *e)
{
    req_init(r, kind);
    cJSON *root;
    int rc = oai_parse_json(body, n, &root, e);
    if (rc) return rc;
    rc = parse_root(r, root, e);
    cJSON_Delete(root);
    return rc;
}

/* ---- output ---- */

int oai_json_string(buf_t *out, const char *s, size_t n)
{
    if (buf_reserve(out, n + 2)) return -1;
    buf_append(out, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            switch (c) {
            case '"':
                buf_append(out, "\\\"", 2);
                break;
            case '\\':
                buf_append(out, "\\\\", 2);
                break;
            case '\n':
                buf_append(out, "\\n", 2);
                break;
            case '\r':
                buf_append(out, "\\r", 2);
                break;
            case '\t':
                buf_append(out, "\\t", 2);
                break;
            default:
                if (c < 0x20)
                    buf_printf(out, "\\u%04x", c);
                else
                    buf_append(out, &s[i], 1);
            }
            i++;
            continue;
        }
        /* validate one UTF-8 sequence */
        size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        int ok = len && c <= 0xF4 && i + len <= n && !(c == 0xC0 || c == 0xC1);
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) ok = 0;
        }
        if (ok && len == 4) {
            unsigned char c1 = (unsigned char)s[i + 1];
            if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90)) ok = 0;
        }
        if (ok) {
            buf_append(out, &s[i], len);
            i += len;
        } else {
            buf_append(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    return buf_append(out, "\"", 1);
}

int oai_error_body(buf_t *out, const oai_err_t *e)
{
    buf_puts(out, "{\"error\":{\"message\":");
    oai_json_string(out, e->message, strlen(e->message));
    buf_puts(out, ",\"type\":");
    oai_json_string(out, e->type ? e->type : BAD_REQ, strlen(e->type ? e->type : BAD_REQ));
    buf_puts(out, ",\"param\":");
    if (e->param[0])
        oai_json_string(out, e->param, strlen(e->param));
    else
        buf_puts(out, "null");
    buf_puts(out, ",\"code\":");
    if (e->code)
        oai_json_string(out, e->code, strlen(e->code));
    else
        buf_puts(out, "null");
    return buf_puts(out, "}}\n");
}

static const char *finish_name(oai_finish_t f)
{
    switch (f) {
    case OAI_FINISH_STOP:
        return "\"stop\"";
    case OAI_FINISH_LENGTH:
        return "\"length\"";
    case OAI_FINISH_TOOL_CALLS:
        return "\"tool_calls\"";
    case OAI_FINISH_TIMEOUT:
        return "\"timeout\"";
    default:
        return "null";
    }
}

static void put_lp(buf_t *o, double lp)
{
    if (!isfinite(lp) || lp < -9999.0) lp = -9999.0;
    buf_printf(o, "%.6g", lp);
}

static void put_bytes(buf_t *o, const char *s, size_t n)
{
    buf_puts(o, "[");
    for (size_t i = 0; i < n; i++)
        buf_printf(o, "%s%u", i ? "," : "", (unsigned char)s[i]);
    buf_puts(o, "]");
}

static void put_usage(buf_t *o, const oai_usage_t *u)
{
    buf_printf(o,
               "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
               "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
               u->prompt_tokens, u->completion_tokens, u->prompt_tokens + u->completion_tokens,
               u->cached_tokens);
}

/* chat: {"content":[{token,logprob,bytes,top_logprobs}]}
 * completions: {"tokens":[],"token_logprobs":[],"top_logprobs":[{..}],"text_offset":[]} */
static void put_logprobs(buf_t *o, oai_kind_t kind, const lp_tok_t *lp, int n, int want)
{
    if (!want) {
        buf_puts(o, "null");
        return;
    }
    if (kind == OAI_CHAT) {
        buf_puts(o, "{\"content\":[");
        for (int i = 0; i < n; i++) {
            buf_puts(o, i ? ",{\"token\":" : "{\"token\":");
            oai_json_string(o, lp[i].token, lp[i].token_len);
            buf_puts(o, ",\"logprob\":");
            put_lp(o, lp[i].logprob);
            buf_puts(o, ",\"bytes\":");
            put_bytes(o, lp[i].token, lp[i].token_len);
            buf_puts(o, ",\"top_logprobs\":[");
            for (int k = 0; k < lp[i].n_top; k++) {
                buf_puts(o, k ? ",{\"token\":" : "{\"token\":");
                oai_json_string(o, lp[i].top[k].token, lp[i].top[k].len);
                buf_puts(o, ",\"logprob\":");
                put_lp(o, lp[i].top[k].logprob);
                buf_puts(o, ",\"bytes\":");
                put_bytes(o, lp[i].top[k].token, lp[i].top[k].len);
                buf_puts(o, "}");
            }
            buf_puts(o, "]}");
        }
        buf_puts(o, "]}");
        return;
    }
    buf_puts(o, "{\"tokens\":[");
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(o, ",");
        oai_json_string(o, lp[i].token, lp[i].token_len);
    }
    buf_puts(o, "],\"token_logprobs\":[");
    for (int i = 0; i < n; i++) {
        if (i) buf_puts(o, ",");
        put_lp(o, lp[i].logprob);
    }
    buf_puts(o, "],\"top_logprobs\":[");
    for (int i = 0; i < n; i++) {
        buf_puts(o, i ? ",{" : "{");
        for (int k = 0; k < lp[i].n_top; k++) {
            if (k) buf_puts(o, ",");
            oai_json_string(o, lp[i].top[k].token, lp[i].top[k].len);
            buf_puts(o, ":");
            put_lp(o, lp[i].top[k].logprob);
        }
        buf_puts(o, "}");
    }
    buf_puts(o, "],\"text_offset\":[");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        buf_printf(o, "%s%zu", i ? "," : "", off);
        off += lp[i].token_len;
    }
    buf_puts(o, "]}");
}

static void put_head(buf_t *o, const oai_resp_t *r, const char *object)
{
    buf_puts(o, "{\"id\":");
    oai_json_string(o, r->id, strlen(r->id));
    buf_printf(o, ",\"object\":\"%s\",\"created\":%ld,\"model\":", object, r->created);
    oai_json_string(o, r->model, strlen(r->model));
    buf_puts(o, ",\"system_fingerprint\":\"barista\"");
    if (r->fallback) {
        buf_puts(o, ",\"barista_fallback\":");
        oai_json_string(o, r->fallback, strlen(r->fallback));
    }
}

int oai_format_response(buf_t *out, const oai_resp_t *r, const char *text, size_t len,
                        oai_finish_t finish, const oai_usage_t *u, const lp_tok_t *lp, int n_lp,
                        int want_logprobs)
{
    oai_choice_t ch = {text, len, finish, lp, n_lp};
    return oai_format_response_n(out, r, &ch, 1, u, want_logprobs);
}

int oai_format_response_n(buf_t *out, const oai_resp_t *r, const oai_choice_t *ch, int n,
                          const oai_usage_t *u, int want_logprobs)
{
    put_head(out, r, r->kind == OAI_CHAT ? "chat.completion" : "text_completion");
    buf_puts(out, ",\"choices\":[");
    for (int i = 0; i < n; i++) {
        const char *text = ch[i].text ? ch[i].text : "";
        oai_finish_t fin = ch[i].finish;
        buf_printf(out, "%s{\"index\":%d,", i ? "," : "", i);
        if (r->kind == OAI_CHAT) {
            buf_puts(out, "\"message\":{\"role\":\"assistant\",");
            fin = tools_finish(r, text, ch[i].len, fin);
            if (fin != OAI_FINISH_TOOL_CALLS || tools_put_message(out, r, text, ch[i].len)) {
                buf_puts(out, "\"content\":");
                oai_json_string(out, text, ch[i].len);
            }
            buf_puts(out, ",\"refusal\":null},\"logprobs\":");
        } else {
            buf_puts(out, "\"text\":");
            oai_json_string(out, text, ch[i].len);
            buf_puts(out, ",\"logprobs\":");
        }
        put_logprobs(out, r->kind, ch[i].lp, ch[i].n_lp, want_logprobs);
        buf_printf(out, ",\"finish_reason\":%s}", finish_name(fin));
    }
    buf_puts(out, "],\"usage\":");
    put_usage(out, u);
    return buf_puts(out, "}\n");
}

int oai_format_chunk(buf_t *out, const oai_resp_t *r, int role, const char *text, size_t len,
                     oai_finish_t finish, const oai_usage_t *usage, const lp_tok_t *lp, int n_lp,
                     int want_logprobs)
{
    /* a tool call's text: its chunks replace this one (tools.c) */
    if (r->kind == OAI_CHAT && r->tool_mode && !role && !usage && len &&
        finish == OAI_FINISH_NONE && tools_put_chunks(out, r, text, len) == 0)
        return 0;
    buf_puts(out, "data: ");
    put_head(out, r, r->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    if (usage) {
        buf_puts(out, ",\"choices\":[],\"usage\":");
        put_usage(out, usage);
        return buf_puts(out, "}\n\n");
    }
    if (r->kind == OAI_CHAT) {
        buf_printf(out, ",\"choices\":[{\"index\":%d,\"delta\":{", r->index);
        if (role) {
            buf_puts(out, "\"role\":\"assistant\",\"content\":\"\"");
        } else if (len || finish == OAI_FINISH_NONE) {
            buf_puts(out, "\"content\":");
            oai_json_string(out, text, len);
        }
        buf_puts(out, "},\"logprobs\":");
    } else {
        buf_printf(out, ",\"choices\":[{\"index\":%d,\"text\":", r->index);
        oai_json_string(out, text, len);
        buf_puts(out, ",\"logprobs\":");
    }
    put_logprobs(out, r->kind, lp, n_lp, want_logprobs && !role && n_lp > 0);
    buf_printf(out, ",\"finish_reason\":%s}]}\n\n", finish_name(finish));
    return out->p ? 0 : -1;
}

int oai_format_empty_chunk(buf_t *out, const oai_resp_t *r)
{
    buf_puts(out, "data: ");
    put_head(out, r, r->kind == OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    return buf_puts(out, ",\"choices\":[]}\n\n");
}

int oai_format_done(buf_t *out)
{
    return buf_puts(out, "data: [DONE]\n\n");
}
