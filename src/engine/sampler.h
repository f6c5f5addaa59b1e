/* sampler.h — turns one row of logits into the next token.
 *
 * Greedy, temperature, top-k, top-p, min-p, OpenAI presence/frequency
 * penalties (over the generated tokens), llama.cpp's repeat penalty (over the
 * last 64 tokens, prompt included), a seeded xoshiro256** RNG (same seed, same
 * text) and logprobs of the unmodified distribution. Not for: stop strings or
 * EOS handling (engine.c). All buffers are sized once in sampler_create.
 *
 * Ownership: sampler_create returns a sampler freed by sampler_destroy. */
#ifndef BARISTA_ENGINE_SAMPLER_H
#define BARISTA_ENGINE_SAMPLER_H

#include <stdint.h>

#include "engine/engine.h"

typedef struct sampler sampler_t;

int sampler_create(sampler_t **out, int n_vocab);
void sampler_destroy(sampler_t *s);

/* Start a new sequence: parameters (copied), and the prompt for the repeat
 * penalty window. Seeds the RNG from p->seed, or from the clock. */
void sampler_reset(sampler_t *s, const engine_sampling_t *p, const int32_t *prompt, int n_prompt);

/* Pick a token from `logits` (n_vocab floats; modified in place). When
 * logprob is non-NULL it receives the chosen token's log-probability under the
 * unmodified distribution, and top[0..n_top) the n_top most likely tokens. */
int sampler_sample(sampler_t *s, float *logits, float *logprob, engine_top_t *top, int n_top);

/* Record that `token` was generated (penalties, repeat window). */
void sampler_accept(sampler_t *s, int token);

#endif
