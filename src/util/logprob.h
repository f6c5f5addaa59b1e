/* logprob.h — the one shape of a token's log-probabilities, from the backend
 * through the cache to the reply renderer: the sampled token's text and
 * logprob plus its top alternatives. Nothing converts it on the way.
 *
 * Texts are bytes (a token may end inside a UTF-8 sequence); who owns them is
 * said by whoever hands the struct over (a backend event: valid during the
 * callback; a cache entry: the entry's own allocation). Not for: token ids
 * (the engine's engine_top_t). */
#ifndef BARISTA_UTIL_LOGPROB_H
#define BARISTA_UTIL_LOGPROB_H

#include <stddef.h>

/* One alternative of a token. */
typedef struct {
    const char *token;
    size_t len;
    double logprob;
} lp_alt_t;

/* One generated token's entry. */
typedef struct {
    const char *token;
    size_t token_len;
    double logprob;
    int n_top;
    const lp_alt_t *top; /* n_top alternatives, most likely first */
} lp_tok_t;

#endif
