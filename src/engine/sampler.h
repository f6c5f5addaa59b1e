/* sampler.h — turns one row of logits into the next token.
 *
 * Greedy, temperature, top-k, top-p, min-p, OpenAI presence/frequency
 * penalties (over the generated tokens), llama.cpp's repeat penalty (over the
 * last 64 tokens, prompt included), a seeded xoshiro256** RNG (same seed, same
 * text) and logprobs of the unmodified distribution (computed only when asked).
 * The samplers of one engine step run in parallel on the worker pool
 * (sampler_run); each sequence has its own RNG, so the thread split never
 * changes a result. Not for: stop strings or EOS handling (engine.c). All
 * buffers are sized once in sampler_create; sampling allocates nothing.
 *
 * Method: inverse CDF over the candidates in descending-probability order,
 * with one uniform draw per token (the same draw and order as the sort-based
 * sampler this replaced, so seeded outputs are unchanged), but the order is
 * established by selection, not by sorting the vocabulary: a bounded heap for
 * top-k, a logit threshold for min-p, and a weighted quickselect for top-p and
 * for the draw itself (docs/ARCHITECTURE.md, "Sampling").
 *
 * Ownership: sampler_create returns a sampler freed by sampler_destroy. */
#ifndef BARISTA_ENGINE_SAMPLER_H
#define BARISTA_ENGINE_SAMPLER_H

#include <stdint.h>

#include "engine/engine.h"
#include "engine/pool.h"

typedef struct sampler sampler_t;

/* Most alternatives reported per token (OpenAI's top_logprobs limit). */
#define SAMPLER_TOP_MAX 20

int sampler_create(sampler_t **out, int n_vocab);
void sampler_destroy(sampler_t *s);

/* Start a new sequence: parameters (copied), and the prompt for the repeat
 * penalty window. Seeds the RNG from p->seed, or from the clock. */
void sampler_reset(sampler_t *s, const engine_sampling_t *p, const int32_t *prompt, int n_prompt);

/* Start choice `index` of a forked sequence: dst gets src's state (penalty
 * counts, repeat window: what src has accepted so far) with parameters p
 * (copied; p->logit_bias must outlive dst's use) and an RNG seeded from
 * src's seed + index, so choice i of a request with seed S draws as a
 * single request with seed S + i would. */
void sampler_fork(sampler_t *dst, const sampler_t *src, const engine_sampling_t *p, int index);

/* Pick a token from `logits` (n_vocab floats; modified in place). When
 * logprob is non-NULL it receives the chosen token's log-probability under the
 * unmodified distribution, and top[0..n_top) the n_top most likely tokens
 * (n_top <= SAMPLER_TOP_MAX). With logprob NULL no logprob work is done. */
int sampler_sample(sampler_t *s, float *logits, float *logprob, engine_top_t *top, int n_top);

/* Record that `token` was generated (penalties, repeat window). */
void sampler_accept(sampler_t *s, int token);

/* One sequence's sampling in a batch: the caller fills the inputs, sampler_run
 * fills the outputs. */
typedef struct {
    sampler_t *smp;                    /* in */
    float *logits;                     /* in: n_vocab floats, modified in place */
    int want_lp;                       /* in: report logprob and top */
    int n_top;                         /* in: 0..SAMPLER_TOP_MAX alternatives when want_lp */
    int tag;                           /* in: the caller's, untouched (e.g. a slot index) */
    int token;                         /* out */
    float logprob;                     /* out, when want_lp */
    engine_top_t top[SAMPLER_TOP_MAX]; /* out, when want_lp */
    /* in, optional: called on the logits before sampling, on the thread that
     * samples (a constraint masking tokens out with -INFINITY) */
    void (*constrain)(void *ctx, float *logits);
    void *constrain_ctx;
} sampler_job_t;

/* sampler_sample for each of jobs[0..n) (distinct samplers), on the threads of
 * `pool` when n > 1 (pool may be NULL: all on the caller). Must not be called
 * from inside a pool_run of the same pool. sampler_accept is left to the
 * caller. */
void sampler_run(sampler_job_t *jobs, int n, pool_t *pool);

#endif
