/* backend_local_int.h — what backend_local.c and backend_local_cost.c
 * share: the job, the event queue's entry and the backend's state. Private
 * to src/backend/backend_local*.c. */
#ifndef BARISTA_BACKEND_LOCAL_INT_H
#define BARISTA_BACKEND_LOCAL_INT_H

#include <pthread.h>
#include <stdint.h>
#include <uv.h>

#include "backend/backend_local.h"
#include "engine/chat.h"
#include "engine/gram_cache.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_cache.h"

#define DONE_MSG_MAX 400
#define PREPARE_INLINE_MAX 8192 /* bodies above this are tokenized off the loop */
#define PIECE_MAX 64            /* logprob token texts are cut at this many bytes */
#define TOP_MAX 20
#define CHOICES_MAX 16 /* sp.n at most (the API's limit) */
#define GRAM_CACHE 16  /* compiled output constraints kept, by the schema's hash */
#define BATCH_MAX 256  /* step times are kept per batch size 1..BATCH_MAX */
#define STEP_MIN 3     /* samples before a batch size's step time is trusted */
#define STEP_TAU 4.0   /* seconds the step time by batch size averages over */

typedef struct local local_t;
typedef struct job job_t;

typedef enum { EV_START = 0, EV_TOKEN, EV_DONE } ev_kind_t;

/* One queued event: engine thread (or loop, for START) → loop. */
typedef struct qev {
    struct qev *next;
    job_t *j;
    ev_kind_t kind;
    int index; /* choice */
    int token;
    float logprob;
    int n_top;
    engine_top_t top[TOP_MAX];
    engine_finish_t finish;
    int err;
    int n_prompt, n_cached, n_gen;
    double t_first_token;
    double t_queue;
    size_t text_len;
    char msg[DONE_MSG_MAX + 1];
    char text[]; /* text_len bytes + NUL */
} qev_t;

struct job {
    local_t *b;
    job_t *prev, *next; /* b->jobs */
    uint64_t id;
    uint64_t req_id; /* the engine's, once submitted */
    bk_event_fn cb;
    void *user;
    int is_chat;
    chat_msg_t *msgs; /* copies (chat) */
    int n_msgs;
    char *prompt; /* copy (completions) */
    size_t prompt_len;
    char *stop[4];
    int n_stop;
    engine_sampling_t sp;
    int max_tokens_req; /* the request's, 0 = default */
    double deadline;
    int priority;
    uint64_t salt; /* prefix-cache namespace: tenant + cache_salt */
    int32_t *toks;
    size_t n_tok;
    int failed; /* preparing failed: err/status/msg say why */
    int err, status;
    char param[16];
    char msg[256];
    int submitted; /* the engine holds it until DONE */
    int cancelled; /* bk_cancel before it reached the engine */
    int lost;      /* a token event was dropped (engine thread writes, under b->mu) */
    int in_work;   /* being prepared on the thread pool */
    uv_work_t work;
    qev_t *done_ev[CHOICES_MAX]; /* preallocated DONE, one per choice */
    int n_choices;               /* sp.n (>= 1) */
    int n_ended;                 /* choices whose DONE was delivered */
    int gen_total;               /* their tokens */
    engine_finish_t cut;         /* the first non-STOP/LENGTH finish of a choice, 0: none */
    int cut_err;
    char cut_msg[DONE_MSG_MAX + 1];
    engine_finish_t first_fin; /* choice 0's finish */
    engine_bias_t *bias;       /* sp.logit_bias (owned) */
    qev_t *start_ev;           /* preallocated START */
    /* latency model (loop thread): */
    double t_submit; /* when bk_submit took it */
    double t_last;   /* when its last per-token sample was taken (or its first token came) */
    int n_since;     /* tokens that came since t_last */
    int n_gen;       /* tokens delivered so far */
    int waited;      /* other jobs were waiting or running when it came */
    int decoding;    /* its first token came: counted in b->n_decoding until it is freed */
};

struct local {
    backend_t base;
    /* Online cost model, loop thread only: EWMAs of the time between a
     * sequence's tokens (under whatever batching ran) and of the prefill
     * cost per prompt token, taken from jobs that started at once. */
    double tpot, prefill_tok;
    /* ... and the step time by batch size: step[k] is the EWMA of the time
     * between a sequence's tokens while k sequences were decoding (step_n[k]
     * samples); batch_avg the EWMA of k over the samples (the concurrency a
     * token sees lately); n_decoding the jobs that got their first token and
     * have not ended (running or parked). */
    double step[BATCH_MAX + 1];
    double step_d[BATCH_MAX + 1], step_t[BATCH_MAX + 1]; /* decayed seconds, tokens */
    int step_n[BATCH_MAX + 1];
    double batch_avg;
    int n_decoding;
    /* output length per choice of requests that could stop early and had no
     * cap below the server's default: EWMA and EWMA of |deviation| */
    double out_mean, out_dev;
    int n_seq_max;
    uv_loop_t *loop;
    engine_t *engine;
    const tok_t *tok;
    int n_ctx;
    int kv_limited; /* n_ctx is what --kv-mem holds, below the context */
    size_t kv_mem;
    int max_tokens_default;
    int n_vocab;
    int chat_ok;
    chat_tmpl_t chat_tmpl;
    char chat_err[256];
    uv_async_t async;
    pthread_mutex_t mu; /* guards head/tail and job->lost */
    qev_t *head, *tail;
    job_t *jobs;
    int n_jobs;
    int n_work;
    uint64_t next_id;
    int closing, closed;
    int destroy_pending; /* destroy waits for prompts still tokenizing on the pool */
    gram_cache_t *grams; /* constraints that came as text only (sp.grammar NULL) */
    tok_cache_t *tcache; /* prompt text -> token ids (NULL: off); its own mutex */
};

/* ---- the cost model (backend_local_cost.c; loop thread) ---- */

/* A token of j reached the loop (q): update the per-token costs. */
void lcost_token(local_t *b, job_t *j, const qev_t *q);
/* j ended (its DONE, q): learn how long answers run. */
void lcost_done(local_t *b, const job_t *j, const qev_t *q);
/* Seconds until a request of priority prio with n_seq sequences gets its
 * places (0 while nothing was measured). */
double lcost_wait(local_t *b, int prio, int n_seq);
/* Admission's estimate for a request (the backend's bk_estimate). */
void lcost_estimate(local_t *b, const bk_est_in_t *in, bk_est_t *out);

#endif
