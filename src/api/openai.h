/* openai.h — the OpenAI request/response schema: parsing + validation of
 * /v1/chat/completions and /v1/completions bodies into a C struct, the
 * OpenAI error body, and the response objects (chat.completion,
 * chat.completion.chunk, text_completion).
 *
 * Validation follows OpenAI: a wrong type or out-of-range value is a 400 with
 * {"error":{"message","type":"invalid_request_error","param","code"}} naming
 * the field; unknown top-level fields are ignored; features barista cannot
 * honour (tools, non-text content parts, echo, best_of, ...) are rejected, never
 * silently dropped. Not for: tokens, sampling structs or the engine (gen.c
 * maps this struct onto engine_sampling_t), sockets (src/server/). */
#ifndef BARISTA_API_OPENAI_H
#define BARISTA_API_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/model_list.h"
#include "engine/gram_cache.h"
#include "util/buf.h"
#include "util/logprob.h"

typedef enum {
    OAI_CHAT = 1,   /* /v1/chat/completions */
    OAI_COMPLETION, /* /v1/completions */
} oai_kind_t;

typedef struct {
    char role[16]; /* "system" | "user" | "assistant" ("developer" maps to "system") */
    char *content; /* heap, text parts concatenated; NUL-terminated */
    size_t content_len;
} oai_msg_t;

#define OAI_MAX_STOP 4
#define OAI_N_MAX 16            /* choices per request ("n") */
#define OAI_LOGIT_BIAS_MAX 1024 /* logit_bias entries */

/* One logit_bias entry: a token id (the body's key) and its bias
 * (-100..100), as the backend takes it. */
typedef bk_logit_bias_t oai_bias_t;

typedef struct {
    oai_kind_t kind;
    char model[256]; /* as requested; "" when absent */
    oai_msg_t *msgs; /* OAI_CHAT */
    int n_msgs;
    char *prompt; /* OAI_COMPLETION, heap */
    size_t prompt_len;
    int max_tokens;     /* -1 = not given */
    double temperature; /* defaults: OpenAI's (1, 1, 0, 0, 0, 0) */
    double top_p;
    int top_k;
    double min_p;
    double presence_penalty;
    double frequency_penalty;
    double repeat_penalty; /* llama.cpp extension, 1 = off */
    int has_seed;
    uint64_t seed;
    char *stop[OAI_MAX_STOP]; /* heap */
    int n_stop;
    int stream;
    int include_usage;
    int logprobs;         /* chat: logprobs true; completions: logprobs >= 0 given */
    int top_logprobs;     /* alternatives per token: chat top_logprobs, completions logprobs N */
    int ignore_eos;       /* extension */
    int priority;         /* vLLM's convention: lower runs sooner, default 0 */
    double timeout_s;     /* "timeout" (LiteLLM's): seconds for this request, 0 = none */
    char cache_salt[257]; /* vLLM's "cache_salt": isolates prefix-KV reuse, "" = none; <= 256 bytes
                           */
    unsigned given; /* MODEL_HAS_* bits (backend/model_list.h): the sampling fields the body set */
    /* choices and logit_bias */
    int n;                  /* 1..OAI_N_MAX */
    oai_bias_t *logit_bias; /* heap, n_logit_bias entries, ids unchecked against a vocabulary */
    int n_logit_bias;
    /* structured outputs and tools (api/tools.c) */
    char *constraint; /* heap: the JSON Schema the output must match, NULL: none */
    size_t constraint_len;
    gram_t *grammar;         /* constraint compiled (one reference), NULL: none */
    gram_cache_t *grams;     /* borrowed: the cache schemas are compiled through, NULL: none */
    int tool_mode;           /* TOOLS_NONE / TOOLS_AUTO / TOOLS_FORCED (tools.h) */
    int parallel_tool_calls; /* default 1 */
} oai_req_t;

typedef struct {
    int status;       /* HTTP status: 400, 404, ... */
    const char *type; /* "invalid_request_error", "server_error", ... */
    const char *code; /* "invalid_type", "invalid_value", ... or NULL */
    char param[64];   /* "" = null */
    char message[512];
    int retry_after_s; /* 429/503: the Retry-After value (0 → 1) */
} oai_err_t;

/* Fill an error; returns e->status as a negative number so parse functions
 * can `return oai_err(...)`. */
int oai_err(oai_err_t *e, int status, const char *type, const char *code, const char *param,
            const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* JSON helpers the request parsers share (openai.c, embeddings.c): a
 * present, non-null member of o (NULL when absent or null: "not given"),
 * and the 400 for a member of the wrong type ("expected WANT, but got
 * a string instead"); returns oai_err's value. */
struct cJSON;
const struct cJSON *oai_member(const struct cJSON *o, const char *name);
int oai_bad_type(oai_err_t *e, const char *param, const char *want, const struct cJSON *v);
/* "null", "a boolean", "a number", "a string", "an array", "an object". */
const char *oai_json_type_name(const struct cJSON *v);
/* The optional "model" member into out (size bytes; "" when absent): 0, or a
 * 400 for a non-string and a 404 model_not_found for a name too long to be
 * one we serve. */
int oai_parse_model_name(const struct cJSON *root, char *out, size_t size, oai_err_t *e);

/* Parse and validate a request body. 0, or a negative value with *err filled.
 * On success r owns heap memory released by oai_req_free (also call it after
 * a failure: it is always safe). */
int oai_parse_request(oai_req_t *r, oai_kind_t kind, const char *body, size_t n, oai_err_t *err);

/* The three steps of oai_parse_request, for a caller that needs the tree too
 * (the response cache keys on it, so a body is parsed once).
 * oai_parse_json: the body as a JSON object (empty, NUL bytes, bad syntax,
 * trailing data, not an object → 400). *root is the caller's (cJSON_Delete).
 * oai_parse_tree: validate and extract every member, as oai_parse_request.
 * oai_parse_delivery: only the members the cache key leaves out and the reply
 * needs — model, user, stream, stream_options — plus logprobs (read, not
 * checked: it is in the key). For a cache hit: the rest of the body equals,
 * member for member, a request that passed oai_parse_tree when its reply was
 * stored (docs/CACHE.md). r: as oai_parse_request (oai_req_free). */
struct cJSON;
int oai_parse_json(const char *body, size_t n, struct cJSON **root, oai_err_t *err);
int oai_parse_tree(oai_req_t *r, oai_kind_t kind, const struct cJSON *root, oai_err_t *err);
int oai_parse_delivery(oai_req_t *r, oai_kind_t kind, const struct cJSON *root, oai_err_t *err);
/* oai_parse_tree compiling response_format / tool schemas through grams (a
 * schema seen before costs a lookup); r->grammar is the compiled constraint,
 * which the backend decodes with, so a request compiles its schema once. */
int oai_parse_tree_cached(oai_req_t *r, oai_kind_t kind, const struct cJSON *root,
                          gram_cache_t *grams, oai_err_t *err);
void oai_req_free(oai_req_t *r);

/* The JSON error body (with a trailing newline) appended to out. */
int oai_error_body(buf_t *out, const oai_err_t *e);

/* ---- responses ---- */

typedef enum {
    OAI_FINISH_NONE = 0,
    OAI_FINISH_STOP,
    OAI_FINISH_LENGTH,
    OAI_FINISH_TOOL_CALLS,
    OAI_FINISH_TIMEOUT, /* barista: ended by a deadline or shutdown after bytes were sent */
} oai_finish_t;

typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} oai_usage_t;

/* Common identity of one response. */
typedef struct {
    oai_kind_t kind;
    const char *id; /* "chatcmpl-..." / "cmpl-..." */
    long created;
    const char *model;
    const char *fallback; /* barista: the fallback step that answered ("static", "semantic",
                             "model:NAME"), shown as "barista_fallback"; NULL: none */
    int index;            /* the choice a chunk belongs to (n > 1), 0 otherwise */
    int tool_mode;        /* tools.h: the reply may be tool calls (chat) */
} oai_resp_t;

/* One choice of a whole reply (n > 1). */
typedef struct {
    const char *text;
    size_t len;
    oai_finish_t finish;
    const lp_tok_t *lp;
    int n_lp;
} oai_choice_t;

/* A whole non-streamed reply: chat.completion or text_completion. */
int oai_format_response(buf_t *out, const oai_resp_t *r, const char *text, size_t len,
                        oai_finish_t finish, const oai_usage_t *u, const lp_tok_t *lp, int n_lp,
                        int want_logprobs);

/* The same with choices ch[0..n) (index i for ch[i]). */
int oai_format_response_n(buf_t *out, const oai_resp_t *r, const oai_choice_t *ch, int n,
                          const oai_usage_t *u, int want_logprobs);

/* One SSE event ("data: {...}\n\n") of a stream:
 * role: the first chat chunk (delta.role = "assistant", content "").
 * text: a delta (text may be empty only with finish).
 * finish: the final chunk's finish_reason (OAI_FINISH_NONE for deltas).
 * usage: non-NULL → the usage-only chunk (choices: []). */
int oai_format_chunk(buf_t *out, const oai_resp_t *r, int role, const char *text, size_t len,
                     oai_finish_t finish, const oai_usage_t *usage, const lp_tok_t *lp, int n_lp,
                     int want_logprobs);

/* Append "data: [DONE]\n\n". */
/* A chunk with no choice ("choices": []), for members that follow every
 * choice's end (barista_timings when no usage chunk is asked for). */
int oai_format_empty_chunk(buf_t *out, const oai_resp_t *r);
int oai_format_done(buf_t *out);

/* Append a JSON string literal (quoted, escaped; invalid UTF-8 bytes become
 * U+FFFD so the output is always valid JSON). */
int oai_json_string(buf_t *out, const char *s, size_t n);

#endif
