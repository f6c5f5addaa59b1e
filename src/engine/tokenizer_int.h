/* tokenizer_int.h — what the files of the BPE tokenizer share: the tok_t
 * struct, token attributes, the merge table's slot and lookup, and the UTF-8
 * helpers that both loading and encoding use. Not a public interface
 * (tokenizer.h is).
 *
 * Files: tokenizer.c (loading from GGUF, accessors, destroy),
 * tokenizer_encode.c (text -> ids), tokenizer_decode.c (ids -> bytes,
 * streaming). */
#ifndef BARISTA_ENGINE_TOKENIZER_INT_H
#define BARISTA_ENGINE_TOKENIZER_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

/* Token attributes (llama.cpp's token types, plus our EOG mark). */
enum {
    TA_NORMAL = 1 << 0,
    TA_UNKNOWN = 1 << 1,
    TA_CONTROL = 1 << 2,
    TA_USER = 1 << 3,
    TA_BYTE = 1 << 4,
    TA_UNUSED = 1 << 5,
    TA_UNDEF = 1 << 6,
    TA_EOG = 1 << 7,
};

#define TOK_MAX_PATS 4

/* Collapsed class bytes for non-ASCII codepoints (tokenizer_encode.c, step 3);
 * the RX_* byte sets of tokenizer.c's patterns name the same bytes. */
#define CL_WS 0x0B
#define CL_OTHER 0xD0
#define CL_NUM 0xD1
#define CL_LETTER 0xD2
#define CL_PUNCT 0xD3
#define CL_MARK 0xD4
#define CL_SYM 0xD5

/* One pre-tokenizer: the tokenizer.ggml.pre names it answers to and its
 * regexes (k_pre in tokenizer.c). */
typedef struct {
    const char *names[4];
    const char *pats[TOK_MAX_PATS];
    int ignore_merges; /* whole word in the vocabulary -> one token, no merges */
    int add_bos;       /* default when the file has no add_bos_token */
} pre_def_t;
typedef struct {
    uint64_t key; /* (uint64_t)left << 32 | right */
    int32_t rank; /* -1: empty slot */
    int32_t id;   /* merged token */
} merge_slot_t;

struct tok {
    int n_vocab;
    char *text;          /* vocabulary strings (byte-mapped form), concatenated */
    uint32_t *text_off;  /* [n_vocab + 1] */
    char *piece;         /* bytes each token decodes to (raw text for specials) */
    uint32_t *piece_off; /* [n_vocab + 1] */
    uint8_t *attr;       /* [n_vocab] TA_* */
    size_t max_piece;
    int32_t *vslot; /* vocabulary hash: token id or -1; size vmask + 1 */
    size_t vmask;
    merge_slot_t *mslot; /* merge hash; size mmask + 1 */
    size_t mmask;
    int32_t byte_tok[256];  /* token of each single byte, -1 if missing */
    uint16_t byte_cpt[256]; /* GPT-2 byte map: byte -> codepoint */
    int32_t *special;       /* control/user/unknown ids, longest text first */
    size_t n_special;
    int bos, eos, eot;
    int add_bos, add_eos;
    const pre_def_t *pre;
    int n_pats;
    pcre2_code *pats[TOK_MAX_PATS];
};
/* ---- UTF-8 helpers ------------------------------------------------------------ */

/* llama.cpp's lenient decoder (unicode_cpt_from_utf8): accepts overlongs and
 * surrogates; on failure returns U+FFFD and consumes one byte. We also reject
 * 4-byte forms above U+10FFFF (llama.cpp accepts them here and then aborts when
 * re-encoding). */
static inline uint32_t u8_decode_lenient(const uint8_t *s, size_t n, size_t *i)
{
    size_t p = *i;
    uint8_t b = s[p];
    if (!(b & 0x80)) {
        *i = p + 1;
        return b;
    }
    if (b & 0x40) {
        if (!(b & 0x20)) {
            if (p + 1 < n && (s[p + 1] & 0xC0) == 0x80) {
                *i = p + 2;
                return ((uint32_t)(b & 0x1F) << 6) | (s[p + 1] & 0x3F);
            }
        } else if (!(b & 0x10)) {
            if (p + 2 < n && (s[p + 1] & 0xC0) == 0x80 && (s[p + 2] & 0xC0) == 0x80) {
                *i = p + 3;
                return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[p + 1] & 0x3F) << 6) |
                       (s[p + 2] & 0x3F);
            }
        } else if (!(b & 0x08)) {
            if (p + 3 < n && (s[p + 1] & 0xC0) == 0x80 && (s[p + 2] & 0xC0) == 0x80 &&
                (s[p + 3] & 0xC0) == 0x80) {
                uint32_t c = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[p + 1] & 0x3F) << 12) |
                             ((uint32_t)(s[p + 2] & 0x3F) << 6) | (s[p + 3] & 0x3F);
                if (c <= 0x10FFFF) {
                    *i = p + 4;
                    return c;
                }
            }
        }
    }
    *i = p + 1;
    return 0xFFFD;
}

/* Encode c (<= 0x10FFFF; surrogates allowed, as llama.cpp) into o; returns the
 * byte count. */
static inline size_t u8_encode(uint32_t c, uint8_t *o)
{
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (uint8_t)(0xC0 | (c >> 6));
        o[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (c >> 12));
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (c >> 18));
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}
/* Vocabulary text of token id (byte-mapped form) and its length. */
static inline const char *tok_text(const tok_t *t, int id, size_t *len)
{
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}
static inline size_t merge_hash(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}
/* The merge of (l, r), or NULL if the pair never merges. */
static inline const merge_slot_t *merge_find(const tok_t *t, int32_t l, int32_t r)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (size_t h = merge_hash(key, t->mmask);; h = (h + 1) & t->mmask) {
        const merge_slot_t *s = &t->mslot[h];
        if (s->rank < 0) return NULL;
        if (s->key == key) return s;
    }
}
#endif
