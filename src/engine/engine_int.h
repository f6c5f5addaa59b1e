/* engine_int.h — what the two files of the engine share: the request, slot
 * and engine structs, and the calls between the loop (engine.c: the thread,
 * batch planning, sampling, text release, the public API) and the slot
 * lifecycle (engine_slot.c: admission, reservations for n-choice forks,
 * start and resume with the prefix lookup, pre-emption and parking, the
 * fork, release). Not a public interface (engine.h is). */
#ifndef BARISTA_ENGINE_ENGINE_INT_H
#define BARISTA_ENGINE_ENGINE_INT_H

#include <pthread.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/grammar.h"
#include "engine/kv_pool.h"
#include "engine/model.h"
#include "engine/pool.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#define N_BATCH 512
#define HOLD_MAX 4096

typedef struct req {
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    engine_sampling_t sp;
    int index;                 /* choice index (0: the request itself) */
    engine_bias_t *bias_store; /* sp.logit_bias, copied */
    char *stop_store;          /* the stop strings, copied */
    size_t stop_len[4];
    double deadline;
    int priority;
    uint64_t salt;
    engine_cb cb;
    void *user;
    double t_submit;
    gram_state_t *gst; /* the output constraint's state, NULL: none */
    struct req *next;
} req_t;

typedef struct engine engine_t;

typedef struct {
    engine_t *owner;
    req_t *req;      /* NULL when free */
    int32_t *tokens; /* [n_ctx] prompt + generated */
    int n_tokens;    /* valid entries in tokens */
    int n_past;      /* positions already in the KV cache */
    int n_prefill;   /* positions to fill before sampling: the prompt, or all tokens on resume */
    int n_cached;    /* prompt tokens mapped from the prefix cache at admission */
    int n_gen;
    int want_logits;  /* set while building a batch */
    int plan;         /* tokens of this sequence in the batch being planned */
    int parked;       /* pre-empted: holds no blocks, waits to resume */
    int fork_pending; /* n > 1: fork into the reserved slots at the first sample */
    int reserved;     /* 1 + the slot whose choices will fork into this one; 0: none */
    uint64_t admit;   /* admission order (larger = younger) */
    int *blocks;      /* [max_blocks] block table */
    int n_blk;        /* entries of blocks in use */
    kv_hash_t *hash;  /* [max_blocks] chained hash of each published block */
    int n_pub;        /* blocks [0, n_pub) are full and were offered to the cache */
    double t_first;
    double t_admit; /* when the request got this slot (its queue wait ends) */
    sampler_t *smp;
    tok_stream_t ts;
    char hold[HOLD_MAX]; /* text not yet released (a stop string may start here) */
    size_t n_hold;
} slot_t;

struct engine {
    model_t *model;
    tok_t *tok;
    kv_cache_t *kv;
    kv_pool_t *kvp;
    model_ctx_t *ctx;
    pool_t *pool;
    int n_ctx, n_threads;
    int n_slots;        /* slot structs: n_run running places + as many parking places */
    int n_run;          /* sequences decoded together at most (n_seq_max) */
    int n_ctx_eff;      /* min(n_ctx, what the KV pool can hold): a sequence's limit */
    int max_blocks;     /* block table entries per sequence */
    size_t kv_mem;      /* bytes of the pool */
    const int **tables; /* [n_slots] the slots' block tables, for the forward pass */
    char model_id[256];
    slot_t *slots;
    float *logits; /* [n_slots][n_vocab] */
    char *piece;   /* one token's text */
    size_t piece_cap;
    gram_vocab_t *gvocab; /* the vocabulary as bytes, for grammar masks */
    int *eog;             /* end-of-generation ids */
    int n_eog;

    /* batch scratch */
    int32_t *b_tok;
    int *b_pos, *b_slot, *b_row;
    sampler_job_t *jobs; /* [n_slots] one step's sampling, run on the pool */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
    req_t *queue; /* priority-ordered */
    int n_queued;
    uint64_t next_id;
    uint64_t *cancels; /* pending cancellations (grows; swapped with `taken`) */
    int n_cancels, cap_cancels;
    uint64_t *taken; /* the engine thread's copy for one iteration */
    int cap_taken;
    uint64_t admit_clock;

    /* stats (under mu) */
    int n_active;
    uint64_t n_requests, n_tok_prompt, n_tok_gen;
    uint64_t n_hit_tokens, n_preempt;
    kv_pool_stats_t kvs; /* copied after every step */
};

/* ---- engine.c ---- */

/* An event of `type` for r with the counts every event carries (s may be
 * NULL for a request that never reached a slot). */
engine_event_t event_for(engine_ev_type_t type, const req_t *r, const slot_t *s);

/* ---- engine_slot.c ---- */

void req_free(req_t *r);
/* Give s's blocks back, end its reservations and free its request. */
void slot_release(engine_t *e, slot_t *s);
/* Map the longest cached prefix and check the pool holds the rest: the
 * positions reused, or -1 (not now). */
int seq_start(engine_t *e, slot_t *s, int resume);
/* A slot struct holding no sequence and kept for no fork, or NULL. */
slot_t *slot_free(engine_t *e);
/* Admit r into a free slot (mu held): 0, or -1 (not now). */
int slot_admit(engine_t *e, req_t *r);
/* Park s (mu held). */
void seq_preempt_locked(engine_t *e, slot_t *s);
/* The sequence to pre-empt: lowest priority, then the youngest; or NULL. */
slot_t *pick_victim(engine_t *e);
/* Blocks for s's positions up to `last`: 0, or -1 when s itself was
 * pre-empted. */
int seq_reserve(engine_t *e, slot_t *s, int last, int *n_planned);
/* Fork s into its reserved slots (n > 1) after its prefill. */
void seq_fork(engine_t *e, slot_t *s, int *n_rows, int n_vocab);
/* Offer s's blocks that filled to the prefix cache. */
void seq_publish(engine_t *e, slot_t *s);

#endif
