/* reply.h — the bytes of a reply: one OpenAI JSON object, or an SSE stream,
 * for a sequence of text-level events or for a stored cache entry; the
 * pending-logprob list a streaming client accumulates between writes; and
 * answering a request with an OpenAI error.
 *
 * The renderers are pure functions over buffers (no sockets, no clock): the
 * unit tests check the exact bytes for a given event sequence. Not for: when
 * to write (gen.c, back-pressure), the JSON field formatting itself
 * (openai.c). */
#ifndef BARISTA_API_REPLY_H
#define BARISTA_API_REPLY_H

#include "api/openai.h"
#include "backend/backend.h"
#include "cache/cache_entry.h"
#include "server/server.h"
#include "util/buf.h"
#include "util/logprob.h"

/* The finish_reason a client sees for a backend finish: stop, length,
 * tool_calls; timeout for a deadline or a cancellation that cut the reply
 * short (never "length"). ERROR/NONE → OAI_FINISH_NONE. */
oai_finish_t reply_finish(bk_finish_t f);

/* Logprob entries copied out of events until the next write. */
typedef struct lp_list lp_list_t;
lp_list_t *lp_list_create(void); /* NULL on OOM */
void lp_list_destroy(lp_list_t *l);
int lp_list_push(lp_list_t *l, const lp_tok_t *x); /* copies; 0 or BAR_ERR_NOMEM */
void lp_list_clear(lp_list_t *l);
int lp_list_n(const lp_list_t *l);
/* Bytes the list holds for its entries (texts, records, alternatives): what
 * a slow reader's pending logprobs cost. 0 for NULL. */
size_t lp_list_bytes(const lp_list_t *l);
/* The entries (pointers valid until the next push/clear). */
const lp_tok_t *lp_list_items(lp_list_t *l);

/* A whole non-streamed reply. */
int reply_json(buf_t *out, const oai_resp_t *r, const char *text, size_t len, oai_finish_t fin,
               const oai_usage_t *u, const lp_tok_t *lp, int n_lp, int want_lp);

/* SSE: the first event (chat: the role chunk; completions: nothing). */
int reply_sse_open(buf_t *out, const oai_resp_t *r);
/* SSE: one delta (skipped when it carries nothing). */
int reply_sse_delta(buf_t *out, const oai_resp_t *r, const char *text, size_t len,
                    const lp_tok_t *lp, int n_lp, int want_lp);
/* SSE: the finish chunk, the usage chunk when asked, then [DONE]. */
int reply_sse_close(buf_t *out, const oai_resp_t *r, oai_finish_t fin, const oai_usage_t *u,
                    int include_usage);
/* reply_sse_close with the request's timings (a JSON object, obs/trace.h)
 * as an extra member "barista_timings" of the last chunk; timings NULL: as
 * reply_sse_close. */
int reply_sse_close_timed(buf_t *out, const oai_resp_t *r, oai_finish_t fin, const oai_usage_t *u,
                          int include_usage, const char *timings, size_t timings_len);
/* SSE: an error event after the head went out, then [DONE]. */
int reply_sse_error(buf_t *out, const oai_err_t *e);

/* n > 1 choices (index i in each chunk): a whole reply with choices
 * ch[0..n); a choice's role chunk (chat), delta and finish chunk; and the
 * end of the stream (usage chunk when asked, [DONE]) once every choice has
 * had its finish chunk. */
int reply_json_n(buf_t *out, const oai_resp_t *r, const oai_choice_t *ch, int n,
                 const oai_usage_t *u, int want_lp);
int reply_sse_choice_open(buf_t *out, const oai_resp_t *r, int index);
int reply_sse_choice_delta(buf_t *out, const oai_resp_t *r, int index, const char *text, size_t len,
                           const lp_tok_t *lp, int n_lp, int want_lp);
int reply_sse_choice_end(buf_t *out, const oai_resp_t *r, int index, oai_finish_t fin);
int reply_sse_end(buf_t *out, const oai_resp_t *r, const oai_usage_t *u, int include_usage);
/* reply_sse_end with the timings in its last chunk, as reply_sse_close_timed. */
int reply_sse_end_timed(buf_t *out, const oai_resp_t *r, const oai_usage_t *u, int include_usage,
                        const char *timings, size_t timings_len);

/* A stored entry as one JSON reply, or replayed as a whole SSE stream cut at
 * the original token events (n > 1: the choices interleaved as generated). */
int reply_entry_json(buf_t *out, const oai_resp_t *r, const cache_entry_t *e, int want_lp);
int reply_entry_sse(buf_t *out, const oai_resp_t *r, const cache_entry_t *e, int include_usage,
                    int want_lp);

/* The cache's response headers into out (NUL-terminated, cut at size):
 * "X-Cache: <xcache>", for hits "X-Cache-Tier" and "Age", and "X-Cache-Key"
 * when key_hex is given. Nothing when xcache is NULL (no cache). Plain
 * copies: this runs on every hit. */
void reply_cache_headers(const char *xcache, const char *tier, long long age, const char *key_hex,
                         char *out, size_t size);

/* Answer r with an OpenAI error body (503s carry Retry-After: 1). */
void reply_send_error(srv_req_t *r, const oai_err_t *e);
void reply_error(srv_req_t *r, int status, const char *type, const char *code, const char *param,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* A fresh response id: prefix ("chatcmpl-", "cmpl-") + 24 hex digits from
 * the xorshift state *rng (never 0). */
void reply_make_id(uint64_t *rng, char *out, size_t size, const char *prefix);

#endif
