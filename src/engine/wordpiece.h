/* wordpiece.h — BERT's tokenizer: the basic tokenizer (clean text, CJK
 * splitting, NFD + accent stripping, lower-casing, whitespace and punctuation
 * splitting) followed by greedy longest-match-first WordPiece with "##"
 * continuation pieces, as Hugging Face `tokenizers` runs it for a
 * BertNormalizer + BertPreTokenizer + WordPiece + [CLS]/[SEP] template
 * (all-MiniLM-L6-v2, bert-base-uncased). Ids are checked equal to
 * `tokenizers`' on the corpus in tests/ref/wordpiece_vectors.json.
 *
 * Input is UTF-8; invalid bytes decode to U+FFFD, which the normalizer drops
 * (as it drops NUL and control/format characters). Special tokens written
 * verbatim in the text ("[MASK]", "[SEP]") become their ids, as `tokenizers`
 * does with its added tokens; the text between them is normalized separately.
 *
 * Not for: BPE vocabularies (engine/tokenizer.h), padding (never produced:
 * callers batch sequences of different lengths), pair inputs.
 *
 * A wp_t is immutable after loading and may be shared by any number of
 * threads; wp_encode allocates scratch memory per call. */
#ifndef BARISTA_ENGINE_WORDPIECE_H
#define BARISTA_ENGINE_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct wp wp_t;

/* Load MODEL_DIR/vocab.txt (one token per line, id = line number) and the
 * normalizer settings of MODEL_DIR/tokenizer.json when present (lowercase,
 * strip_accents (null: follows lowercase), handle_chinese_chars, clean_text,
 * the WordPiece unk_token, continuing_subword_prefix, max_input_chars_per_word,
 * the added special tokens); without tokenizer.json: bert-base-uncased's
 * defaults and MODEL_DIR/tokenizer_config.json's do_lower_case.
 * 0 and *out (free with wp_free), or BAR_ERR_IO / BAR_ERR_FORMAT /
 * BAR_ERR_NOMEM with msg naming the file and what was wrong. */
int wp_load(wp_t **out, const char *model_dir, bar_msg_t *msg);

/* The same from memory (fuzzing, tests): vocab.txt bytes and tokenizer.json
 * bytes (json may be NULL). Both are copied/parsed; the buffers may be freed
 * afterwards. Needs [CLS], [SEP] and the unk token in the vocabulary. */
int wp_load_mem(wp_t **out, const char *vocab, size_t vocab_len, const char *json, size_t json_len,
                bar_msg_t *msg);

void wp_free(wp_t *wp);

int wp_vocab_size(const wp_t *wp);
int wp_cls_id(const wp_t *wp);
int wp_sep_id(const wp_t *wp);
int wp_unk_id(const wp_t *wp);

/* The token's text (not NUL-terminated) and its length; NULL for a bad id. */
const char *wp_token(const wp_t *wp, int id, size_t *len);

/* The id of exactly text[0..len), or -1. */
int wp_lookup(const wp_t *wp, const char *text, size_t len);

/* Tokenize text[0..len) into ids: [CLS] pieces... [SEP]. At most cap ids are
 * written (cap >= 2): a longer sequence keeps its first cap - 2 pieces and
 * ends with [SEP] (sentence-transformers' truncation: max_seq_length = cap).
 * *n is the number written, *n_full (may be NULL) the untruncated count.
 * 0, or BAR_ERR_INVALID (cap < 2) / BAR_ERR_NOMEM. Never fails on content. */
int wp_encode(const wp_t *wp, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n,
              size_t *n_full);

#endif
