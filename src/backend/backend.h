/* backend.h — what answers a generation: the interface every backend
 * implements (the local engine today, an upstream OpenAI-compatible server
 * next) and the pipeline calls.
 *
 * The pipeline hands a backend a request in text (chat messages or a prompt,
 * sampling values, stop strings, deadline, priority, tenant) and gets
 * TEXT-LEVEL events back: deltas of text with their logprobs, then one DONE
 * with the finish reason and usage. Token ids never cross this border; how a
 * backend tokenizes, batches or forwards is its own business.
 *
 * Threads: every function and every event callback runs on the loop thread
 * that created the backend (a backend with worker threads hops back to the
 * loop itself). A job's callback may be called from inside bk_submit only for
 * nothing: submit never calls back synchronously.
 *
 * Event order for one job: START once (the backend accepted it: the prompt
 * fits and it is queued; the reply's head may go out now), DELTA*, DONE once.
 * A job that fails before START gets DONE with BK_FINISH_ERROR and no START:
 * the caller answers with an HTTP error (status in ev->status). After DONE
 * the job is gone; its id is never reused.
 *
 * n > 1 choices (sp.n): DELTAs carry their choice in `index` and interleave;
 * each choice ends with a CHOICE_END (its finish, its n_gen) before the one
 * DONE, whose n_gen counts every choice's tokens and n_prompt the prompt
 * once; DONE's finish is STOP/LENGTH when every choice completed, else the
 * reason the rest were cut (CANCELLED, TIMEOUT, ERROR). With n = 1 no
 * CHOICE_END is sent.
 *
 * Not for: JSON (src/api/), caching (src/cache/), HTTP. */
#ifndef BARISTA_BACKEND_BACKEND_H
#define BARISTA_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/logprob.h"

typedef struct backend backend_t;

/* One chat message; role is "system" | "user" | "assistant". Borrowed. */
typedef struct {
    const char *role;
    const char *content;
    size_t content_len;
} bk_msg_t;

typedef struct {
    int token; /* backend's token id (only meaningful to that backend) */
    float bias;
} bk_logit_bias_t;

/* Sampling and stopping: the values actually used (request + model defaults,
 * resolved by the caller). */
typedef struct {
    double temperature; /* 0 = greedy */
    double top_p;
    int top_k;
    double min_p;
    double presence_penalty, frequency_penalty, repeat_penalty;
    uint64_t seed;
    int has_seed;
    int n;                             /* choices; 1 unless the backend supports more */
    const bk_logit_bias_t *logit_bias; /* NULL/0: none */
    int n_logit_bias;
    const char *constraint; /* output constraint (JSON schema / grammar), NULL: none */
    size_t constraint_len;
    struct gram *grammar;    /* constraint already compiled (engine/grammar.h; borrowed: the
                                backend takes its own reference), NULL: the backend compiles it */
    int max_tokens;          /* > 0; the backend may stop earlier at its context end */
    const char *const *stop; /* n_stop stop strings, borrowed */
    int n_stop;
    int ignore_eos;
    int logprobs;     /* report each token's logprob */
    int top_logprobs; /* alternatives per token, 0..20 */
} bk_sampling_t;

typedef enum {
    BK_EV_START = 1,  /* accepted: the reply may start */
    BK_EV_DELTA,      /* text and/or logprobs of one step */
    BK_EV_DONE,       /* the last event */
    BK_EV_CHOICE_END, /* n > 1: choice `index` ended (finish, n_gen: its own tokens) */
} bk_ev_type_t;

typedef enum {
    BK_FINISH_NONE = 0,
    BK_FINISH_STOP,       /* end of turn or a stop string */
    BK_FINISH_LENGTH,     /* max_tokens or the context end */
    BK_FINISH_TOOL_CALLS, /* the model called a tool */
    BK_FINISH_TIMEOUT,    /* the deadline passed */
    BK_FINISH_CANCELLED,  /* bk_cancel (disconnect, slow reader, shutdown) */
    BK_FINISH_ERROR,      /* see err, status, msg */
} bk_finish_t;

/* Borrowed for the callback's duration. */
typedef struct {
    bk_ev_type_t type;
    int index; /* choice index */
    /* DELTA */
    const char *text;
    size_t text_len;
    const lp_tok_t *lp; /* n_lp entries (0 or 1 per step today) */
    int n_lp;
    const char *tool_delta; /* a tool-call delta as JSON, NULL: none */
    size_t tool_delta_len;
    /* DONE */
    bk_finish_t finish;
    int err;         /* BK_FINISH_ERROR: a bar_err_t */
    int status;      /* BK_FINISH_ERROR: the HTTP status it maps to (400, 500, 503) */
    const char *msg; /* BK_FINISH_ERROR: what went wrong; may name a field in param */
    const char *param;
    /* START, DONE: counts */
    int n_prompt, n_cached, n_gen;
    double t_first_token;    /* seconds from submit to the first token, 0 if none */
    double t_queue;          /* seconds from submit to a decoding slot, 0 if unknown */
    double t_upstream;       /* DONE, upstream backends: seconds from the answering attempt's
                                start to its first text (its first token; the first chunk when
                                no text came), 0: none (the local engine) */
    double t_upstream_first; /* ... and when that came (time_now_mono seconds) */
    /* DONE: the replica that answered (an upstream's api_base; on an error the
     * last one tried), NULL: not a replica group (the local engine) */
    const char *replica;
} bk_event_t;

typedef void (*bk_event_fn)(void *user, const bk_event_t *ev);

typedef struct {
    int is_chat;          /* 1: msgs; 0: prompt */
    const bk_msg_t *msgs; /* borrowed for the bk_submit call */
    int n_msgs;
    const char *prompt;
    size_t prompt_len;
    bk_sampling_t sp;
    const char *tools; /* tool definitions as JSON, NULL: none */
    size_t tools_len;
    double deadline;    /* absolute time_now_mono() seconds; 0 = none */
    int priority;       /* lower runs sooner (vLLM), 0 normal */
    const char *tenant; /* who asks (API key namespace), "" = anonymous */
    const char *cache_salt;
    size_t body_bytes; /* the request's size, a hint for doing work off the loop */
    int whole;         /* 1: nobody sees text before DONE (a non-streamed reply): a backend
                          may hold the text back until the job succeeds, so a failure half
                          way can still be retried elsewhere (the upstream backend does) */
    bk_event_fn cb;
    void *user; /* valid until DONE */
} bk_req_t;

typedef struct {
    int n_ctx;                 /* context length (0: unknown) */
    int n_active;              /* sequences running */
    int n_queued;              /* waiting for a slot */
    int n_jobs;                /* submitted and not yet DONE */
    double est_wait;           /* seconds a request of priority 0 submitted now would wait
                                  before its prefill starts (0 also while nothing was measured
                                  yet; admission asks bk_estimate, per class) */
    double s_per_prompt_token; /* measured prefill cost per prompt token (0: not yet) */
    double s_per_output_token; /* measured time between a sequence's tokens (0: not yet) */
    double rate_wait;          /* upstream: every replica is at its rpm/tpm this minute;
                                  seconds until the counts start again (0: not limited) */
    double mean_out_tokens;    /* local: output length per choice of the requests that set no
                                  max_tokens and could stop early, EWMA (0: none seen yet) */
    double dev_out_tokens;     /* ... and the EWMA of its absolute deviation */
    int n_waiting;             /* jobs accepted and not yet producing tokens */
    int n_slots;               /* sequences served at once */
    const char *kind;          /* "local" | "upstream" */
    const char *kernel_level;  /* local: "scalar" | "avx2" | "avx512" */
    int n_threads;
    int n_vocab; /* token ids a logit_bias may name are 0..n_vocab-1 (0: unknown) */
    /* local: the paged KV cache (engine_stats_t); 0 elsewhere */
    int kv_blocks_total, kv_blocks_used, kv_blocks_cached, kv_blocks_free;
    unsigned long long kv_evictions, prefix_hit_tokens, preemptions;
    unsigned long long prefill_tokens; /* local: prompt positions computed (n > 1 choices: once) */
    /* local: the prompt text -> token ids feature cache (engine/tokenizer_cache.h) */
    unsigned long long tok_cache_hits, tok_cache_misses, tok_cache_evictions;
    unsigned long long tok_cache_entries, tok_cache_bytes;
} bk_stats_t;

/* What admission asks a backend about a request it may submit now
 * (bk_estimate). */
typedef struct {
    int priority;    /* the request's: lower runs sooner (it pre-empts higher numbers) */
    double n_prompt; /* prompt tokens (an estimate) */
    int n_out;       /* tokens per choice it will generate (an upper bound: max_tokens) */
    int n_seq;       /* choices (sequences), >= 1 */
} bk_est_in_t;

/* The backend's answer, in seconds from now. known 0: nothing measured yet
 * (every figure 0; admission cannot judge and lets the request in). */
typedef struct {
    int known;
    double wait;  /* until it gets a decoding place (work of lower priority that it
                     pre-empts is not counted) */
    double first; /* until its first token: wait + its prefill */
    double done;  /* until its last token: first + n_out steps at `tpot` */
    double tpot;  /* seconds per token it will see: the step time at `batch` */
    int batch;    /* sequences modelled to decode alongside it (itself included) */
} bk_est_t;

/* An embedding job's answer, borrowed for the callback's duration. On
 * success (err == 0) vecs holds n * dim floats, row i for input i,
 * L2-normalised; n_tokens[i] is input i's token count after truncation to the
 * model's window (what usage counts); n_cached inputs came from the feature
 * cache. On failure err is a bar_err_t, status the HTTP status it maps to,
 * msg the reason and param the field ("input") or NULL. */
typedef struct {
    int err, status;
    const char *msg, *param;
    const float *vecs;
    int dim;
    const int *n_tokens;
    int n;
    int n_cached;
} bk_embed_result_t;
typedef void (*bk_embed_fn)(void *user, const bk_embed_result_t *r);

/* What to embed: n inputs, either texts (texts/lens) or token-id arrays
 * (ids/n_ids, used when texts is NULL: OpenAI's token inputs). Everything is
 * borrowed for the embed call only (the backend copies what it keeps). */
typedef struct bk_embed_req {
    int n;
    const char *const *texts;
    const size_t *lens;
    const int32_t *const *ids;
    const size_t *n_ids;
    bk_embed_fn cb;
    void *user; /* valid until the callback or bk_cancel */
} bk_embed_req_t;

/* The vtable. Unused entries may be NULL (e.g. embed on a chat model). */
typedef struct {
    /* Start a job. 0 and *id, or an error (BAR_ERR_INVALID with msg naming
     * a field the backend cannot honour, BAR_ERR_BUSY shutting down, NOMEM);
     * on failure no event is ever delivered. */
    int (*submit)(backend_t *b, const bk_req_t *req, uint64_t *id, bar_msg_t *msg);
    /* Ask a job to end: DONE (CANCELLED) follows unless DONE already came. */
    void (*cancel)(backend_t *b, uint64_t id);
    void (*stats)(backend_t *b, bk_stats_t *out);
    /* Prompt tokens the request would use (admission and rate limits). */
    int (*count_tokens)(backend_t *b, const bk_req_t *req, size_t *n, bar_msg_t *msg);
    /* Embed req->n inputs (an embedding backend; NULL on a chat model).
     * 0 and *id: req->cb is called once, later, on the loop thread (never
     * from inside embed); bk_cancel(b, *id) before that means it is never
     * called. An error (BAR_ERR_INVALID naming the input, BAR_ERR_BUSY,
     * NOMEM): no callback. */
    int (*embed)(backend_t *b, const struct bk_embed_req *req, uint64_t *id, bar_msg_t *msg);
    /* Stop: every job still running gets DONE (CANCELLED) before this
     * returns or on the next loop turns; then free. */
    void (*destroy)(backend_t *b);
    /* Admission's estimate for a request from a cost model of the backend's
     * own (the local engine's: per priority class and batch size). NULL:
     * bk_estimate works it out from the stats (bk_estimate_from_stats). */
    void (*estimate)(backend_t *b, const bk_est_in_t *in, bk_est_t *out);
} bk_ops_t;

/* Every backend starts with this header (the implementation's struct embeds
 * it first). */
struct backend {
    const bk_ops_t *ops;
};

static inline int bk_submit(backend_t *b, const bk_req_t *r, uint64_t *id, bar_msg_t *msg)
{
    return b->ops->submit(b, r, id, msg);
}
static inline void bk_cancel(backend_t *b, uint64_t id)
{
    b->ops->cancel(b, id);
}
static inline void bk_stats(backend_t *b, bk_stats_t *out)
{
    b->ops->stats(b, out);
}
static inline int bk_embed(backend_t *b, const bk_embed_req_t *r, uint64_t *id, bar_msg_t *msg)
{
    return b->ops->embed ? b->ops->embed(b, r, id, msg)
                         : bar_fail(msg, BAR_ERR_UNSUPPORTED, "this model does not embed");
}
/* The estimate from a backend's stats alone (an upstream, which has no
 * cost model of its own): its queue
 * wait, then n_out tokens at the measured time between tokens; the prefill
 * is inside that (the upstream's first byte). */
static inline void bk_estimate_from_stats(const bk_stats_t *st, const bk_est_in_t *in,
                                          bk_est_t *out)
{
    *out = (bk_est_t){0};
    if (st->s_per_output_token <= 0) return;
    out->known = 1;
    out->wait = st->est_wait;
    out->first = st->est_wait + in->n_prompt * st->s_per_prompt_token;
    out->tpot = st->s_per_output_token;
    out->done = out->first + (double)in->n_out * out->tpot;
    out->batch = 1;
}

/* Admission's estimate for in on b; st: b's stats, taken just before. */
static inline void bk_estimate(backend_t *b, const bk_stats_t *st, const bk_est_in_t *in,
                               bk_est_t *out)
{
    if (b->ops->estimate)
        b->ops->estimate(b, in, out);
    else
        bk_estimate_from_stats(st, in, out);
}

static inline void bk_destroy(backend_t *b)
{
    if (b) b->ops->destroy(b);
}

/* "stop", "length", ... for logs and metrics. */
const char *bk_finish_name(bk_finish_t f);

#endif
