/* embeddings.h — OpenAI's POST /v1/embeddings schema: the request body
 * validated into a C struct, and the response object (floats or base64).
 *
 * Request (https://platform.openai.com/docs/api-reference/embeddings):
 *   input            a string, an array of strings, an array of token ids
 *                    (one input), or an array of token-id arrays; at most
 *                    EMB_MAX_INPUTS inputs, none empty, no mixed item types
 *   model            a string ("" / absent: the server's default embedding model)
 *   encoding_format  "float" (default) | "base64" (little-endian float32 bytes)
 *   dimensions       an integer >= 1; the model's own size is the only one
 *                    honoured (the caller checks it against the result)
 *   user             a string (accepted, unused)
 *   stream           false or absent: there is no streaming of embeddings
 *   timeout          seconds (LiteLLM's), as on the generation endpoints
 * Every refusal is a 400 in OpenAI's error shape naming the field in param
 * ("input", "encoding_format", ...); unknown members are ignored as on the
 * other endpoints.
 *
 * Pure functions over a cJSON tree and buffers: no sockets, no backend (the
 * handler is embed_job.c). Not for: tokenization or truncation (the
 * embedding backend). */
#ifndef BARISTA_API_EMBEDDINGS_H
#define BARISTA_API_EMBEDDINGS_H

#include <stddef.h>
#include <stdint.h>

#include "api/openai.h"
#include "util/buf.h"

#define EMB_MAX_INPUTS 2048 /* OpenAI's limit on inputs per request */

struct cJSON;

typedef struct {
    char model[256]; /* as requested; "" when absent */
    int n;           /* inputs, 1..EMB_MAX_INPUTS */
    int is_tokens;   /* 1: ids/n_ids; 0: texts/lens */
    /* texts: borrowed from the cJSON tree (valid while it lives) */
    const char **texts;
    size_t *lens;
    /* token ids: one heap block, ids[i] points into it */
    const int32_t **ids;
    size_t *n_ids;
    int base64;        /* encoding_format "base64" */
    int dimensions;    /* 0: not given */
    double timeout_s;  /* 0: none */
    size_t n_bytes;    /* text bytes or token ids over all inputs (metrics, logs) */
    int32_t *id_store; /* owned */
} emb_req_t;

/* Validate the body's tree into r. 0, or a negative status with *e filled
 * (400 naming the field). r borrows strings from root: keep root alive while
 * r's texts are used. Always call emb_req_free afterwards. */
int emb_parse(emb_req_t *r, const struct cJSON *root, oai_err_t *e);
void emb_req_free(emb_req_t *r);

/* The response object appended to out:
 * {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],
 *  "model":model,"usage":{"prompt_tokens":T,"total_tokens":T}}\n
 * vecs holds n rows of dim floats; float format prints each with 9
 * significant digits (a float32 read back from it is the same float), base64
 * the row's dim little-endian float32s. Non-finite values (never produced by
 * a working model) are written as 0 so the JSON stays valid. 0 or
 * BAR_ERR_NOMEM. */
int emb_format_response(buf_t *out, const char *model, const float *vecs, int n, int dim,
                        int base64, long long prompt_tokens);

#endif
