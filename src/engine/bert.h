/* bert.h — a BERT sentence encoder (all-MiniLM-L6-v2 and its family): the
 * model folder (config.json, model.safetensors, vocab.txt/tokenizer.json,
 * sentence_bert_config.json) loaded to F32, a batched forward pass over
 * sequences of different lengths, mean pooling over each sequence's tokens
 * and L2 normalisation — what sentence-transformers' Transformer + Pooling
 * (mean) + Normalize modules compute.
 *
 * Batching: the sequences of one call are laid end to end (no padding, so
 * nothing but real tokens enters attention or the mean); every token-wise
 * step (embeddings, matmuls, LayerNorm, GELU) runs over all of them at once,
 * attention runs per sequence and head. Matmuls go through the kernel
 * dispatch (engine/kernels/kern.h, F32 weights) split over a worker pool.
 *
 * Not for: tokenizing policy beyond wordpiece.h (bert_tokenize is a thin
 * wrapper that applies the model's window), batching requests (that is
 * engine/embedder.h), caching.
 *
 * Threads: a bert_t is immutable after bert_load and may be shared; a
 * bert_ctx_t (work buffers + pool) is used by one thread at a time. */
#ifndef BARISTA_ENGINE_BERT_H
#define BARISTA_ENGINE_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/wordpiece.h"
#include "util/err.h"

typedef struct bert bert_t;
typedef struct bert_ctx bert_ctx_t;

/* Load the model in model_dir. Needs config.json (model_type "bert", hidden
 * size, layers, heads, intermediate size, hidden_act "gelu", layer_norm_eps,
 * max positions, vocab size), model.safetensors (F32, F16 or BF16 tensors,
 * names with or without a "bert." prefix; every shape is checked) and the
 * tokenizer files. The window is sentence_bert_config.json's max_seq_length
 * (256 for all-MiniLM-L6-v2), else the max positions, at most the max positions.
 * 0 and *out (free with bert_free), or BAR_ERR_IO / FORMAT / UNSUPPORTED /
 * NOMEM with msg naming the file and the problem. */
int bert_load(bert_t **out, const char *model_dir, bar_msg_t *msg);
void bert_free(bert_t *m);

int bert_dim(const bert_t *m);        /* hidden size: 384 */
int bert_max_tokens(const bert_t *m); /* the window, [CLS] and [SEP] included: 256 */
int bert_vocab_size(const bert_t *m);
const wp_t *bert_wp(const bert_t *m);

/* Tokenize text into ids[0 .. *n) (cap >= bert_max_tokens(m)), truncated to
 * the window as sentence-transformers does (first max-2 pieces, [SEP] last);
 * *n_full (may be NULL) is the untruncated count. 0 or BAR_ERR_NOMEM. */
int bert_tokenize(const bert_t *m, const char *text, size_t len, int32_t *ids, size_t cap,
                  size_t *n, size_t *n_full);

/* Work buffers for batches of up to max_batch_tokens tokens in total (at
 * least bert_max_tokens(m)), and a pool of n_threads threads (<= 0: one per
 * online CPU). NULL when memory or threads run out. The model must outlive it. */
bert_ctx_t *bert_ctx_create(const bert_t *m, int max_batch_tokens, int n_threads);
void bert_ctx_free(bert_ctx_t *c);
int bert_ctx_max_tokens(const bert_ctx_t *c);
int bert_ctx_threads(const bert_ctx_t *c);

/* Embed n_seq sequences of token ids (seq i: ids[i][0 .. lens[i]), 1 <=
 * lens[i] <= bert_max_tokens, every id < bert_vocab_size, the sum <= the
 * context's max_batch_tokens) into out[i * dim .. (i + 1) * dim), L2-normalised
 * (an all-zero mean stays zero). Ids are used as given (no [CLS]/[SEP] added).
 * 0, or BAR_ERR_INVALID (a length or id out of range; nothing written). */
int bert_embed(bert_ctx_t *c, const int32_t *const *ids, const int *lens, int n_seq, float *out);

#endif
