/* tokenizer.h — GPT-2 style byte-level BPE tokenizer read from a GGUF file.
 *
 * Encodes UTF-8 text to token ids and decodes ids back to bytes with the same
 * results as llama.cpp (checked id for id against llama-cpp-python, see
 * tests/ref/README.md). Supported: tokenizer.ggml.model = "gpt2" with
 * tokenizer.ggml.pre = "smollm", "gpt-2" (alias "gpt2"), "default" (also used
 * when the key is absent) and "llama-bpe" ("llama3", "llama-v3"). Anything
 * else fails at load with BAR_ERR_UNSUPPORTED naming the value. Not for:
 * SentencePiece / WordPiece vocabularies, chat templates (engine/chat.h).
 *
 * A tok_t copies everything it needs out of the GGUF (it does not keep the
 * gguf_t), is immutable after tok_create and may be used from any number of
 * threads at once. tok_encode allocates scratch memory per call; tok_piece and
 * the stream decoder never allocate.
 *
 * Token ids are ints in [0, tok_n_vocab). Functions taking an id treat an out
 * of range id as an empty, non-special token. */
#ifndef BARISTA_ENGINE_TOKENIZER_H
#define BARISTA_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h" /* typedef struct tok tok_t */
#include "engine/gguf.h"
#include "util/err.h"

/* Build a tokenizer from the tokenizer.ggml.* keys of g: tokens, token_type,
 * merges, model, pre, bos/eos/eot/unknown ids, add_bos_token, add_eos_token.
 * On success *out is a heap object the caller frees with tok_destroy; g may be
 * closed afterwards. Errors: BAR_ERR_UNSUPPORTED (model other than "gpt2", an
 * unknown pre-tokenizer — msg names it), BAR_ERR_FORMAT (missing or mistyped
 * keys, arrays of the wrong length), BAR_ERR_NOMEM. */
int tok_create(tok_t **out, const gguf_t *g, bar_msg_t *msg);

/* Free t (NULL is fine). */
void tok_destroy(tok_t *t);

/* Number of tokens in the vocabulary. */
int tok_n_vocab(const tok_t *t);

/* Special ids, -1 when the model has none. BOS/EOS come from the file (GPT-2
 * BPE default 11 when absent, as llama.cpp). EOT is tokenizer.ggml.eot_token_id
 * if present, else the first of "<|eot_id|>", "<|im_end|>", "<|end|>",
 * "<end_of_turn>", "<|endoftext|>", ... found in the vocabulary (llama.cpp
 * picks among these in hash-table order, so for SmolLM2 it reports 0 where we
 * report 2; both are end-of-generation either way). */
int tok_bos(const tok_t *t);
int tok_eos(const tok_t *t);
int tok_eot(const tok_t *t);

/* Whether tok_encode(add_special=1) prepends BOS / appends EOS: the file's
 * tokenizer.ggml.add_bos_token / add_eos_token, defaulting as llama.cpp does
 * (false, except true BOS for llama-bpe). */
int tok_add_bos(const tok_t *t);
int tok_add_eos(const tok_t *t);

/* End of generation: EOS, EOT, and the tokens llama.cpp marks EOG by their
 * text ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", ... and the FIM
 * repo/separator/pad tokens such as "<reponame>"). SmolLM2: ids 0, 2, 4. */
int tok_is_eog(const tok_t *t, int id);

/* Control, user-defined or unknown-type token (rendered only on request). */
int tok_is_special(const tok_t *t, int id);

/* The id whose vocabulary string is exactly text[0..len) (the stored, byte-
 * mapped form: "Ġthe", "<|im_end|>"), or -1. */
int tok_lookup(const tok_t *t, const char *text, size_t len);

/* Encode text[0..len) (UTF-8; invalid bytes are accepted and handled as
 * llama.cpp does: each byte that does not start a sequence llama.cpp's lenient
 * decoder accepts becomes U+FFFD before tokenizing; overlong forms and
 * surrogates are decoded as llama.cpp decodes them; a 4-byte form above
 * U+10FFFF — which aborts llama.cpp — is treated like any other invalid byte).
 *
 * parse_special: control/user-defined tokens written verbatim in the text
 * ("<|im_start|>") become their ids, longest token first, and the text between
 * them is BPE-encoded; when 0, only user-defined tokens are matched (as
 * llama.cpp). add_special: prepend BOS / append EOS per tok_add_bos/_eos.
 *
 * Writes up to cap ids to out and sets *n_out to the total count; returns 0,
 * or BAR_ERR_RANGE when the total exceeds cap (out then holds the first cap
 * ids), or BAR_ERR_NOMEM. out may be NULL when cap is 0 (a sizing call). */
int tok_encode(const tok_t *t, const char *text, size_t len, int add_special, int parse_special,
               int32_t *out, size_t cap, size_t *n_out);

/* The bytes token id stands for: byte-level mapping undone for normal tokens,
 * the verbatim text for user-defined tokens, the text of control/unknown tokens
 * only if render_special (else nothing). Copies min(len, cap) bytes to buf and
 * returns len, the full length (so a return > cap means truncated). Pieces may
 * be partial UTF-8 sequences. */
size_t tok_piece(const tok_t *t, int id, int render_special, char *buf, size_t cap);

/* Longest piece in bytes (for sizing buffers). */
size_t tok_max_piece_len(const tok_t *t);

/* Concatenated pieces of ids[0..n) (tok_piece for each, no UTF-8 repair and
 * no space clean-up). Copies min(total, cap) bytes; returns the total. */
size_t tok_detokenize(const tok_t *t, const int32_t *ids, size_t n, int render_special, char *buf,
                      size_t cap);

/* Streaming decoder: feed sampled ids one at a time and get only complete,
 * valid UTF-8 back. Zero-initialise (or tok_stream_init) before the first feed.
 *
 * Rules: bytes of a character split across tokens are held (at most 3) until
 * the token that completes it; ill-formed bytes become U+FFFD, one per maximal
 * ill-formed subpart (Unicode's "substitution of maximal subparts", as Python's
 * errors="replace" does); overlong forms, surrogates and values above U+10FFFF
 * are ill-formed. A held prefix that the next token does not continue becomes
 * one U+FFFD. tok_stream_flush emits a held prefix at the end of the stream as
 * one U+FFFD. Control tokens (EOS, <|im_end|>, ...) produce no text; user-
 * defined tokens produce their text.
 *
 * Output: up to cap bytes, always whole characters; returns the bytes written.
 * cap >= tok_stream_bound(t) never truncates; with less, text that does not fit
 * is dropped (whole characters). */
typedef struct {
    char pending[8];
    size_t n_pending;
} tok_stream_t;

void tok_stream_init(tok_stream_t *s);
size_t tok_stream_bound(const tok_t *t);
size_t tok_stream_feed(const tok_t *t, tok_stream_t *s, int id, char *out, size_t cap);
size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap);

#endif
