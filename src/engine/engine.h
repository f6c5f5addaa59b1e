/* engine.h — the generation engine as the rest of barista sees it.
 *
 * One engine owns one loaded llama-architecture model, its tokenizer, a paged
 * KV cache with a prefix cache shared by requests of one salt, and an engine thread that runs the
 * scheduler: every iteration is one batched forward pass over all active sequences (continuous
 * batching). The engine sees token ids, sampling parameters and deadlines — never JSON, never
 * sockets. Not for: HTTP, caching of responses, or libuv (callers bridge
 * engine events to their loop themselves, e.g. with uv_async_t).
 *
 * Threading: engine_submit / engine_cancel / engine_stats may be called from
 * any thread. Event callbacks run ON THE ENGINE THREAD: they must be quick
 * (copy the event, queue it, wake your loop) and must not call back into the
 * engine except engine_cancel. */
#ifndef BARISTA_ENGINE_ENGINE_H
#define BARISTA_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct engine engine_t;
typedef struct tok tok_t; /* engine/tokenizer.h */

typedef struct {
    const char *model_path; /* GGUF file */
    int n_threads;          /* matmul workers; <= 0 means number of cores */
    int n_ctx;              /* per-sequence context; <= 0 means the model's, capped at 8192 */
    int n_seq_max;          /* max sequences decoded together; <= 0 means 8 */
    size_t kv_mem; /* bytes of the paged KV cache; 0 means n_seq_max full contexts of n_ctx */
} engine_config_t;

typedef struct gram gram_t; /* engine/grammar.h */

/* One logit_bias entry: added to token's logit before sampling; -100 or
 * below bans the token (its logit becomes -inf), +100 all but forces it. */
typedef struct {
    int token;
    float bias;
} engine_bias_t;

/* Sampling and stopping. Zero-initialise then set what you need:
 * engine_sampling_default() gives OpenAI's defaults. */

typedef struct {
    float temperature;       /* 0 = greedy */
    float top_p;             /* 1 = off */
    int top_k;               /* 0 = off */
    float min_p;             /* 0 = off */
    float presence_penalty;  /* OpenAI semantics, 0 = off */
    float frequency_penalty; /* OpenAI semantics, 0 = off */
    float repeat_penalty;    /* llama.cpp semantics, 1 = off */
    uint64_t seed;
    int has_seed;        /* 0: seed from the clock */
    int max_tokens;      /* >= 1; the engine also stops at the context end */
    const char *stop[4]; /* stop strings (copied by engine_submit), NULL-terminated or n_stop */
    int n_stop;
    int ignore_eos;
    int logprobs;     /* report the chosen token's logprob */
    int top_logprobs; /* 0..20 alternatives per token */
    /* logit_bias: n_logit_bias entries, token ids in the vocabulary (copied
     * by engine_submit; out-of-range ids are BAR_ERR_INVALID) */
    const engine_bias_t *logit_bias;
    int n_logit_bias;
    /* Choices (n > 1): the prompt is prefilled once, then the sequence is
     * forked into n that share its KV blocks (the partial last block is
     * copied on first write); choice i samples with seed + i (or a stream
     * derived from the clock seed). 0 or 1: one. At most the engine's
     * n_seq_max (BAR_ERR_RANGE). */
    int n;
    /* Constrained decoding: only tokens that keep the output a valid prefix
     * of this grammar's language are sampled; the request ends (STOP) when the
     * output is a complete sentence that nothing can extend. NULL: none.
     * engine_submit takes its own reference. */
    gram_t *grammar;
} engine_sampling_t;

engine_sampling_t engine_sampling_default(void);

typedef enum {
    ENGINE_EV_TOKEN =
        1, /* text (possibly empty while UTF-8 is incomplete or a stop string may start) */
    ENGINE_EV_DONE = 2, /* the last event of a choice: a request with n choices gets n DONE
                           events, one per index; nothing follows the last */
} engine_ev_type_t;

typedef enum {
    ENGINE_FINISH_NONE = 0,
    ENGINE_FINISH_STOP,      /* EOS/EOT token or a stop string */
    ENGINE_FINISH_LENGTH,    /* max_tokens or context end */
    ENGINE_FINISH_CANCELLED, /* engine_cancel or shutdown */
    ENGINE_FINISH_TIMEOUT,   /* deadline passed */
    ENGINE_FINISH_ERROR,     /* see err/msg */
} engine_finish_t;

typedef struct {
    int token;
    float logprob;
} engine_top_t;

typedef struct {
    engine_ev_type_t type;
    uint64_t req_id;
    int index; /* the choice (0 unless sampling.n > 1); each choice ends with its own DONE */
    /* ENGINE_EV_TOKEN: UTF-8-complete text released by this step (stop strings
     * already removed), the sampled token and optional logprobs. */
    const char *text;
    size_t text_len;
    int token;
    float logprob;
    int n_top;
    const engine_top_t *top;
    /* ENGINE_EV_DONE */
    engine_finish_t finish;
    int err;         /* 0 or bar_err_t when finish == ENGINE_FINISH_ERROR */
    const char *msg; /* detail for errors, may be NULL */
    /* both: counts so far */
    int n_prompt;
    int n_cached; /* prompt tokens reused from the prefix cache */
    int n_gen;
    double t_first_token; /* seconds from submit to first token, 0 if none */
    double t_queue;       /* seconds from submit to getting a slot, 0 if none */
} engine_event_t;

typedef void (*engine_cb)(void *user, const engine_event_t *ev);

typedef struct {
    const int32_t *prompt; /* token ids (copied by engine_submit) */
    size_t n_prompt;
    engine_sampling_t sampling;
    double deadline; /* absolute time_now_mono() seconds; 0 = none */
    int priority;    /* higher runs sooner (engine convention; backend_local passes
                        -priority: vLLM's and the API's "lower first"); 0 normal. A
                        higher one pre-empts lower running sequences when the
                        running places or the KV pool run out */
    uint64_t salt;   /* prefix-cache namespace: only requests with equal salts share KV */
    engine_cb cb;    /* events, on the engine thread */
    void *user;      /* passed to cb; must stay valid until ENGINE_EV_DONE */
} engine_req_t;

/* Load the model and start the engine thread. */
int engine_create(engine_t **out, const engine_config_t *cfg, bar_msg_t *msg);

/* Stop the engine thread (pending requests get DONE/CANCELLED), free all. */
void engine_destroy(engine_t *e);

/* The engine's tokenizer (owned by the engine; valid until engine_destroy). */
const tok_t *engine_tok(const engine_t *e);

/* The loaded model and its GGUF (metadata such as tokenizer.chat_template);
 * owned by the engine, valid until engine_destroy. */
typedef struct model model_t;
typedef struct gguf gguf_t;
const model_t *engine_model(const engine_t *e);
const gguf_t *engine_gguf(const engine_t *e);

/* Queue a request. On success *req_id identifies it; events follow on cb.
 * Fails with BAR_ERR_INVALID (empty prompt), BAR_ERR_RANGE (prompt longer
 * than the context or than the KV pool can hold — msg gives the counts and
 * names kv-mem for the latter) or BAR_ERR_BUSY (shutting down);
 * on failure no event is ever delivered. */
int engine_submit(engine_t *e, const engine_req_t *req, uint64_t *req_id, bar_msg_t *msg);

/* Ask a request to stop; it ends within one engine step with a DONE event
 * (finish CANCELLED) unless it already finished. Unknown ids are ignored. */
void engine_cancel(engine_t *e, uint64_t req_id);

typedef struct {
    int n_ctx; /* per-sequence limit: the context, or less when the KV pool holds less */
    int n_vocab;
    int n_active;        /* sequences started and not finished (running or pre-empted) */
    int n_seq_max;       /* sequences decoded together at most */
    int n_queued;        /* waiting for a slot */
    uint64_t n_requests; /* submitted since start */
    uint64_t n_tokens_prompt;
    uint64_t n_tokens_gen;
    const char *model_id;     /* e.g. "SmolLM2-135M-Instruct.Q4_1" (file basename w/o .gguf) */
    const char *kernel_level; /* "scalar" | "avx2" | "avx512" */
    int n_threads;
    int n_ctx_max; /* the configured context (n_ctx is min(this, the pool)) */
    size_t kv_mem; /* bytes of the KV pool */
    int kv_block;  /* positions per block */
    int kv_blocks_total;
    int kv_blocks_used;   /* referenced by running sequences */
    int kv_blocks_cached; /* unreferenced, holding a cached prefix (evictable) */
    int kv_blocks_free;
    uint64_t kv_evictions;      /* cached blocks reused for new data */
    uint64_t prefix_hit_tokens; /* prompt tokens mapped from the prefix cache */
    uint64_t preemptions;       /* sequences pre-empted for lack of blocks, or for a
                                   higher-priority waiter when every running place is taken */
} engine_stats_t;

void engine_stats(engine_t *e, engine_stats_t *out);

/* How many of a sequence's `todo` remaining prompt tokens go into a step that
 * has `room` batch positions left (0 = wait for the next step). Never leaves a
 * chunk of one token behind or starts one while more remain: llama.cpp sums
 * attention in another order for a one-token batch, and a prompt's logits
 * should not depend on how the engine happened to split it (exposed for the
 * unit test). */
int engine_prefill_take(int todo, int room);

#endif
