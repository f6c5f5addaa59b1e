/* backend_embed.h — a BERT sentence encoder (all-MiniLM-L6-v2) as a backend
 * (backend.h): the `embed` op only; `submit` (generation) answers
 * BAR_ERR_UNSUPPORTED.
 *
 * Jobs are embedded on the backend's own thread (engine/bert.h with a worker
 * pool): a small batcher takes every input queued at the time (several
 * requests, and all inputs of a multi-input request) and runs them through
 * shared forward passes of at most BACKEND_EMBED_BATCH_TOKENS tokens, new
 * arrivals joining the next pass. Results come back to the loop thread through
 * a mutex-protected queue and uv_async_t, so the callback always runs on the
 * loop thread and never from inside bk_embed.
 *
 * Inputs: texts are tokenized with the model's WordPiece tokenizer and
 * truncated to the model's window (256 tokens with [CLS] and [SEP]) as
 * sentence-transformers does. Token-id arrays are used as given (no [CLS] or
 * [SEP] added, as OpenAI and vLLM use token inputs) and truncated to the
 * window; an id outside the vocabulary or an empty array is BAR_ERR_INVALID
 * naming "input".
 *
 * Feature cache: an LRU of input → embedding on the loop thread (key: the
 * XXH3-128 of the text bytes, or of the id array in its own key space), so
 * repeated inputs — an /v1/embeddings repeat, the semantic tier's lookup of a
 * prompt already embedded — skip the encoder. Hits are still answered
 * asynchronously. Counters via backend_embed_cache_stats.
 *
 * Not for: JSON, HTTP, the semantic cache itself (src/cache/). */
#ifndef BARISTA_BACKEND_BACKEND_EMBED_H
#define BARISTA_BACKEND_BACKEND_EMBED_H

#include <stdint.h>
#include <uv.h>

#include "backend/backend.h"

/* Tokens per shared forward pass (the batcher's cap). */
#define BACKEND_EMBED_BATCH_TOKENS 2048

/* Load the model in model_dir (engine/bert.h) and start its thread with a
 * pool of n_threads (<= 0: one per online CPU). feature_cache_entries: the
 * LRU's capacity (0 disables it; each entry holds dim floats). 0 and *out, or
 * the loader's error (BAR_ERR_IO / FORMAT / UNSUPPORTED / NOMEM, msg naming
 * the file). The loop must run until the backend's handles close after
 * bk_destroy; jobs still pending then are answered with BAR_ERR_CANCELLED
 * (status 503) before bk_destroy returns. */
int backend_embed_create(backend_t **out, uv_loop_t *loop, const char *model_dir, int n_threads,
                         int feature_cache_entries, bar_msg_t *msg);

typedef struct {
    uint64_t hits, misses; /* inputs answered from / not found in the cache */
    uint64_t inserts, evictions;
    int entries, capacity;
    uint64_t inputs;       /* inputs embedded by the encoder */
    uint64_t tokens;       /* their tokens */
    uint64_t batches;      /* forward passes */
    double encode_seconds; /* time in forward passes */
} backend_embed_stats_t;

/* Counters since creation (loop thread). */
void backend_embed_cache_stats(backend_t *b, backend_embed_stats_t *out);

/* The embedding size (384) and the window in tokens (256). */
int backend_embed_dim(backend_t *b);
int backend_embed_max_tokens(backend_t *b);

/* 1 when b was made by backend_embed_create. */
int backend_is_embed(const backend_t *b);

#endif
