/* model.h — a llama-architecture model loaded from GGUF, and its batched
 * forward pass over a paged KV cache.
 *
 * The weights stay in the read-only mapping of the GGUF file; only norms that
 * are not F32 are converted into owned float arrays. model_forward runs one
 * batch of tokens that may belong to several sequences (slots) at different
 * positions — the unit of continuous batching. Not for: sampling, scheduling
 * or tokenizing (sampler.c, engine.c, tokenizer.c).
 *
 * Ownership: model_load returns a model the caller frees with model_free;
 * kv_create/model_ctx_create results are freed with kv_destroy /
 * model_ctx_destroy, and must be destroyed before their model. */
#ifndef BARISTA_ENGINE_MODEL_H
#define BARISTA_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "engine/pool.h"
#include "util/err.h"

typedef struct {
    int n_layer;
    int n_embd;
    int n_ff;
    int n_head;
    int n_head_kv;
    int head_dim; /* n_embd / n_head */
    int n_vocab;
    int n_ctx_train;
    int n_rot; /* rotary dimensions per head (<= head_dim) */
    float rope_base;
    float rms_eps;
} model_hparams_t;

typedef struct model model_t;
typedef struct kv_cache kv_cache_t;
typedef struct model_ctx model_ctx_t;

/* Map `path`, check architecture "llama", every tensor's presence, type and
 * shape. Errors name the tensor, what was found and what was expected. */
int model_load(model_t **out, const char *path, bar_msg_t *msg);
void model_free(model_t *m);

const model_hparams_t *model_hparams(const model_t *m);
const gguf_t *model_gguf(const model_t *m);
/* Type of the attention/FFN matrices of block 0 (for logs). */
const char *model_weight_type(const model_t *m);

/* KV cache storage: blocks of KV_BLOCK positions (all layers, K and V).
 * A sequence reads and writes its positions through a block table (see
 * model_batch_t); which block belongs to whom is the caller's bookkeeping
 * (engine/kv_pool.h). Memory is reserved virtually and touched only as
 * blocks are written. KV_BLOCK is kern_dot_hh's segment of 64 positions: a
 * V block is one segment, so attention reads blocks in place, and the
 * per-block work (one table entry, one K dot call) stays a small fraction of
 * the 64 positions' dots; see docs/ARCHITECTURE.md "Paged KV". */
enum { KV_BLOCK = 64 };
/* Bytes of one block (K and V, all layers). */
size_t kv_block_bytes(const model_t *m);
int kv_create_blocks(kv_cache_t **out, const model_t *m, int n_blocks, bar_msg_t *msg);
/* n_slots sequences of up to n_ctx positions each with fixed block tables
 * (slot s owns blocks s * ceil(n_ctx / KV_BLOCK) ...): batches without
 * block tables address this layout. */
int kv_create(kv_cache_t **out, const model_t *m, int n_slots, int n_ctx, bar_msg_t *msg);
void kv_destroy(kv_cache_t *kv);
int kv_n_blocks(const kv_cache_t *kv);
/* Copy block src's KV into block dst (copy on write of a shared block). */
void kv_copy_block(kv_cache_t *kv, int dst, int src);

/* Scratch for forward passes of up to n_batch tokens, split over `pool`
 * (borrowed; must outlive the ctx). */
int model_ctx_create(model_ctx_t **out, const model_t *m, int n_batch, int n_ctx, pool_t *pool,
                     bar_msg_t *msg);
void model_ctx_destroy(model_ctx_t *c);

/* One batch: token i is `tokens[i]` at position `pos[i]` of sequence `slot[i]`.
 * model_forward addresses the kv_create layout; model_forward_paged takes
 * block tables: sequence s (< n_seq) keeps position p in block
 * blocks[s][p / KV_BLOCK] (every entry up to each token's position valid).
 * Tokens of one slot must appear in increasing position order, and every
 * position below pos[i] of that slot must already be in the cache or earlier in
 * this batch. `logit_row[i]` >= 0 asks for token i's logits in row
 * logit_row[i] of `logits` ([n_rows][n_vocab] floats); -1 skips them. The
 * rows asked for are numbered 0, 1, 2, ... in token order (one matmul fills
 * them all); anything else is BAR_ERR_INVALID. */
typedef struct {
    int n;
    const int32_t *tokens;
    const int *pos;
    const int *slot;
    const int *logit_row;
} model_batch_t;

int model_forward(model_ctx_t *c, kv_cache_t *kv, const model_batch_t *b, float *logits,
                  bar_msg_t *msg);
int model_forward_paged(model_ctx_t *c, kv_cache_t *kv, const model_batch_t *b,
                        const int *const *blocks, int n_seq, float *logits, bar_msg_t *msg);

#endif
