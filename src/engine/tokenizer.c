/* tokenizer.c — byte-level BPE (GPT-2 family) matching llama.cpp id for id.
 *
 * Encoding runs in four steps, each mirroring llama.cpp (llama-vocab.cpp,
 * unicode.cpp) so that the ids agree exactly:
 *   1. special-token partition: each control/user-defined token, longest first,
 *      splits the raw text fragments at every occurrence;
 *   2. codepoints: each raw fragment is decoded with llama.cpp's lenient UTF-8
 *      decoder (invalid byte -> U+FFFD, overlongs and surrogates accepted) and
 *      re-encoded, giving the bytes that BPE will see;
 *   3. pre-tokenizer: one or more regexes split the fragment into words. The
 *      regexes run with PCRE2 (JIT) over a "collapsed" copy of the text with one
 *      byte per codepoint: ASCII as is, other codepoints replaced by a class byte
 *      (0x0B whitespace, 0xD1 number, 0xD2 letter, 0xD3 punctuation, 0xD4 mark,
 *      0xD5 symbol, 0xD0 other), and \p{..} in the patterns replaced by the
 *      matching byte classes. llama.cpp uses the same trick for its generic
 *      regexes; doing it here makes the Unicode tables ours (utf8proc, patched to
 *      Unicode 15.1 like llama.cpp's) instead of PCRE2's, which are Unicode 14 in
 *      the distro library and differ from llama.cpp's in ~5000 codepoints;
 *   4. BPE: each word's bytes start as single-byte tokens and the adjacent pair
 *      with the lowest merge rank (ties: leftmost) is merged until none is left,
 *      with a binary heap and stale-entry checks (llama.cpp's llm_bigram_bpe
 *      queue). Pairs are looked up in an open-addressing table keyed by
 *      (left id, right id) -> (rank, merged id).
 * Decoding precomputes every token's bytes at load. Not for: SentencePiece,
 * WordPiece, or any normalisation (GPT-2 BPE has none). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer.h"

#include <limits.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <xxhash.h>

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

/* Collapsed class bytes for non-ASCII codepoints (see step 3 above). */
#define CL_WS 0x0B
#define CL_OTHER 0xD0
#define CL_NUM 0xD1
#define CL_LETTER 0xD2
#define CL_PUNCT 0xD3
#define CL_MARK 0xD4
#define CL_SYM 0xD5

/* Pattern fragments for the collapsed text: \p{L}, \p{N}, \p{P} as byte sets
 * (ASCII members + the class byte), as llama.cpp's k_ucat_map. */
#define RX_L "A-Za-z\\xD2"
#define RX_N "0-9\\xD1"
#define RX_P "\\x21-\\x23\\x25-\\x2A\\x2C-\\x2F\\x3A\\x3B\\x3F\\x40\\x5B-\\x5D\\x5F\\x7B\\x7D\\xD3"

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
#define RX_GPT2                                                                                    \
    "'s|'t|'re|'ve|'m|'ll|'d| ?[" RX_L "]+| ?[" RX_N "]+| ?[^\\s" RX_L RX_N "]+|\\s+(?!\\S)|\\s+"

/* Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
#define RX_LLAMA3                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n" RX_L RX_N "]?[" RX_L      \
    "]+|[" RX_N "]{1,3}| ?[^\\s" RX_L RX_N "]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* The pre-tokenizers we implement, by tokenizer.ggml.pre value (llama.cpp's
 * llm_tokenizer_bpe regex_exprs for the same names). */
typedef struct {
    const char *names[4];
    const char *pats[TOK_MAX_PATS];
    int ignore_merges; /* whole word in the vocabulary -> one token, no merges */
    int add_bos;       /* default when the file has no add_bos_token */
} pre_def_t;

static const pre_def_t k_pre[] = {
    {{"smollm"}, {"[" RX_N "]", RX_GPT2}, 0, 0},
    {{"gpt-2", "gpt2"}, {RX_GPT2}, 0, 0},
    {{"default"}, {"[" RX_P "\\$\\+<=>\\^~\\|]+", RX_GPT2, "[" RX_N "]+", "[0-9][0-9][0-9]"}, 0, 0},
    {{"llama-bpe", "llama3", "llama-v3"}, {RX_LLAMA3}, 1, 1},
};

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

/* ---- GPT-2 byte <-> codepoint map ------------------------------------------ */

/* Bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF map to the same codepoint; the other
 * 68 bytes, in order, to U+0100, U+0101, ... */
static void byte_map_build(uint32_t byte_to_cpt[256], int16_t cpt_to_byte[324])
{
    int n = 0;
    for (int i = 0; i < 324; i++)
        cpt_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool same = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_to_cpt[b] = same ? (uint32_t)b : (uint32_t)(256 + n++);
        cpt_to_byte[byte_to_cpt[b]] = (int16_t)b;
    }
}

/* ---- UTF-8 helpers ------------------------------------------------------------ */

/* llama.cpp's lenient decoder (unicode_cpt_from_utf8): accepts overlongs and
 * surrogates; on failure returns U+FFFD and consumes one byte. We also reject
 * 4-byte forms above U+10FFFF (llama.cpp accepts them here and then aborts when
 * re-encoding). */
static uint32_t u8_decode_lenient(const uint8_t *s, size_t n, size_t *i)
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
static size_t u8_encode(uint32_t c, uint8_t *o)
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

/* llama.cpp's whitespace set (unicode_set_whitespace); note it lacks U+180E,
 * which PCRE2's \s includes. */
static bool cpt_is_ws(uint32_t c)
{
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || c == 0x20;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Collapsed class byte of codepoint c (ASCII stays itself). Categories come
 * from utf8proc; codepoints that Unicode 15.1 assigned (llama.cpp's table
 * version) and utf8proc 2.8 (Unicode 15.0) does not know are patched in. */
static uint8_t cpt_class(uint32_t c)
{
    if (c < 0x80) return (uint8_t)c;
    if (cpt_is_ws(c)) return CL_WS;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (cat == UTF8PROC_CATEGORY_CN) {
        if (c >= 0x2EBF0 && c <= 0x2EE5D) /* CJK Ext. I (15.1) */
            return CL_LETTER;
        if ((c >= 0x2FFC && c <= 0x2FFF) || c == 0x31EF) /* IDCs (15.1) */
            return CL_SYM;
        return CL_OTHER;
    }
    switch (cat) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CL_LETTER;
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
        return CL_MARK;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CL_NUM;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return CL_PUNCT;
    case UTF8PROC_CATEGORY_SM:
    case UTF8PROC_CATEGORY_SC:
    case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
        return CL_SYM;
    default:
        return CL_OTHER;
    }
}

/* ---- hash tables -------------------------------------------------------------- */

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static const char *tok_text(const tok_t *t, int id, size_t *len)
{
    *len = t->text_off[id + 1] - t->text_off[id];
    return t->text + t->text_off[id];
}

/* Insert id under its text; a later token with the same text replaces the
 * earlier one (llama.cpp's token_to_id[word] = i). */
static void vocab_insert(tok_t *t, int id)
{
    size_t len;
    const char *s = tok_text(t, id, &len);
    size_t h = (size_t)XXH3_64bits(s, len) & t->vmask;
    for (;; h = (h + 1) & t->vmask) {
        int32_t cur = t->vslot[h];
        if (cur < 0) {
            t->vslot[h] = id;
            return;
        }
        size_t clen;
        const char *cs = tok_text(t, cur, &clen);
        if (clen == len && memcmp(cs, s, len) == 0) {
            t->vslot[h] = id;
            return;
        }
    }
}

int tok_lookup(const tok_t *t, const char *s, size_t len)
{
    size_t h = (size_t)XXH3_64bits(s, len) & t->vmask;
    for (;; h = (h + 1) & t->vmask) {
        int32_t cur = t->vslot[h];
        if (cur < 0) return -1;
        size_t clen;
        const char *cs = tok_text(t, cur, &clen);
        if (clen == len && memcmp(cs, s, len) == 0) return cur;
    }
}

static inline size_t merge_hash(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* First insertion wins (llama.cpp's bpe_ranks.emplace). */
static void merge_insert(tok_t *t, int32_t l, int32_t r, int32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (size_t h = merge_hash(key, t->mmask);; h = (h + 1) & t->mmask) {
        merge_slot_t *s = &t->mslot[h];
        if (s->rank < 0) {
            s->key = key;
            s->rank = rank;
            s->id = id;
            return;
        }
        if (s->key == key) return;
    }
}

static inline const merge_slot_t *merge_find(const tok_t *t, int32_t l, int32_t r)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (size_t h = merge_hash(key, t->mmask);; h = (h + 1) & t->mmask) {
        const merge_slot_t *s = &t->mslot[h];
        if (s->rank < 0) return NULL;
        if (s->key == key) return s;
    }
}

/* ---- loading ------------------------------------------------------------------ */

static bool str_eq(gguf_str_t s, const char *z)
{
    size_t n = strlen(z);
    return s.n == n && memcmp(s.p, z, n) == 0;
}

/* Read an optional token-id key: absent -> keep *id; present and in range ->
 * set. Returns 0 or BAR_ERR_FORMAT for a mistyped value. */
static int read_id(const gguf_t *g, const char *key, int n_vocab, int *id, bar_msg_t *msg)
{
    uint32_t v;
    int rc = gguf_get_u32(g, key, &v);
    if (rc == BAR_ERR_NOTFOUND) return 0;
    if (rc < 0) return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: %s has the wrong type", key);
    if (v < (uint32_t)n_vocab) *id = (int)v;
    return 0;
}

static int read_flag(const gguf_t *g, const char *key, int *flag, bar_msg_t *msg)
{
    int v;
    int rc = gguf_get_bool(g, key, &v);
    if (rc == BAR_ERR_NOTFOUND) return 0;
    if (rc < 0) return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: %s has the wrong type", key);
    *flag = v ? 1 : 0;
    return 0;
}

/* A string array kv, with all n elements indexed into *out (caller frees). */
static int read_str_array(const gguf_t *g, const char *key, gguf_str_t **out, size_t *n,
                          bar_msg_t *msg)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: missing %s", key);
    if (kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING)
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: %s is not an array of strings", key);
    if (kv->arr_n == 0 || kv->arr_n > (uint64_t)INT32_MAX / 4)
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: %s has %llu entries", key,
                        (unsigned long long)kv->arr_n);
    *n = (size_t)kv->arr_n;
    *out = malloc(*n * sizeof **out);
    if (!*out) return bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
    int rc = gguf_arr_strings(kv, *out, kv->arr_n);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: cannot read %s: %s", key,
                        bar_strerror(rc));
    }
    return 0;
}

/* Name lists llama.cpp uses to find EOT / EOM / FIM tokens and the EOG set
 * (llama_vocab::impl::load, "auto-detect special tokens by text"). */
/* clang-format off */
static const char *const k_eot_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", /* DeepSeek */
    "<end_of_utterance>", NULL};
static const char *const k_eom_names[] = {"<|eom_id|>", NULL};
/* FIM pad, repo and separator tokens: EOG */
static const char *const k_fim_names[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>", NULL};
/* FIM prefix/suffix/middle: control, not EOG */
static const char *const k_fim_ctl_names[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>",
    "<|code_prefix|>", "<|prefix|>",
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>",
    "<|code_suffix|>", "<|suffix|>",
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\xe2\x96\x81<MID>",
    "<|code_middle|>", "<|middle|>", NULL};
static const char *const k_eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~[", NULL};
/* clang-format on */

static int find_first(const tok_t *t, const char *const *names)
{
    for (; *names; names++) {
        int id = tok_lookup(t, *names, strlen(*names));
        if (id >= 0) return id;
    }
    return -1;
}

/* Mark every token named in names as EOG (and control, as llama.cpp does for
 * control-looking tokens stored as normal). */
static void mark_eog(tok_t *t, const char *const *names)
{
    for (; *names; names++) {
        int id = tok_lookup(t, *names, strlen(*names));
        if (id >= 0) t->attr[id] |= TA_EOG | TA_CONTROL;
    }
}

/* Sort key for the special-token list: longer text first, then lower id. */
static int special_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Decode token id's vocabulary text to bytes into dst (capacity >= text len,
 * since every mapped codepoint is at least as long as its byte); returns the
 * length. Codepoints outside the byte map are copied as UTF-8. */
static size_t decode_text(const int16_t cpt_to_byte[324], const char *s, size_t n, char *dst)
{
    size_t i = 0, o = 0;
    while (i < n) {
        size_t j = i;
        uint32_t c = u8_decode_lenient((const uint8_t *)s, n, &j);
        if (c < 324 && cpt_to_byte[c] >= 0) {
            dst[o++] = (char)cpt_to_byte[c];
        } else {
            memcpy(dst + o, s + i, j - i);
            o += j - i;
        }
        i = j;
    }
    return o;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int build_pieces(tok_t *t, bar_msg_t *msg)
{
    uint32_t byte_to_cpt[256];
    int16_t cpt_to_byte[324];
    byte_map_build(byte_to_cpt, cpt_to_byte);

    size_t total = t->text_off[t->n_vocab];
    t->piece = malloc(total ? total : 1);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->piece_off);
    if (!t->piece || !t->piece_off) return bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
    size_t o = 0;
    t->max_piece = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_text(t, id, &len);
        uint8_t a = t->attr[id];
        size_t n = 0;
        t->piece_off[id] = (uint32_t)o;
        if (a & (TA_CONTROL | TA_UNKNOWN | TA_USER)) {
            memcpy(t->piece + o, s, len);
            n = len;
        } else if (a & TA_NORMAL) {
            n = decode_text(cpt_to_byte, s, len, t->piece + o);
        } else if (a & TA_BYTE) { /* "<0xHH>" */
            if (len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' &&
                hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
                t->piece[o] = (char)(hexval(s[3]) * 16 + hexval(s[4]));
                n = 1;
            }
        }
        o += n;
        if (n > t->max_piece) t->max_piece = n;
    }
    t->piece_off[t->n_vocab] = (uint32_t)o;

    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        t->byte_cpt[b] = (uint16_t)byte_to_cpt[b];
        size_t n = u8_encode(byte_to_cpt[b], u);
        t->byte_tok[b] = tok_lookup(t, (const char *)u, n);
    }
    return 0;
}

static int build_merges(tok_t *t, const gguf_str_t *m, size_t n_merges, bar_msg_t *msg)
{
    t->mmask = pow2_at_least(n_merges * 2) - 1;
    t->mslot = malloc((t->mmask + 1) * sizeof *t->mslot);
    size_t cap = 256;
    char *buf = malloc(cap);
    if (!t->mslot || !buf) {
        free(buf);
        return bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i <= t->mmask; i++)
        t->mslot[i].rank = -1;
    for (size_t i = 0; i < n_merges; i++) {
        const char *s = m[i].p;
        size_t n = m[i].n;
        /* "left right", split at the first space after the first byte */
        const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp) continue;
        size_t ln = (size_t)(sp - s), rn = n - ln - 1;
        int l = tok_lookup(t, s, ln);
        int r = tok_lookup(t, sp + 1, rn);
        if (l < 0 || r < 0) continue;
        if (ln + rn > cap) {
            cap = ln + rn;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
            }
            buf = nb;
        }
        memcpy(buf, s, ln);
        memcpy(buf + ln, sp + 1, rn);
        int id = tok_lookup(t, buf, ln + rn);
        if (id < 0) continue; /* llama.cpp would merge and then fall back to bytes */
        merge_insert(t, l, r, (int32_t)i, id);
    }
    free(buf);
    return 0;
}

static int compile_pre(tok_t *t, bar_msg_t *msg)
{
    t->n_pats = 0;
    for (int i = 0; i < TOK_MAX_PATS && t->pre->pats[i]; i++) {
        int err;
        PCRE2_SIZE off;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)t->pre->pats[i], PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
        if (!re) {
            PCRE2_UCHAR e[128];
            pcre2_get_error_message(err, e, sizeof e);
            return bar_fail(msg, BAR_ERR_INTERNAL, "tokenizer: regex %d at %zu: %s", i, (size_t)off,
                            (const char *)e);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter if no JIT */
        t->pats[t->n_pats++] = re;
    }
    return 0;
}

int tok_create(tok_t **out, const gguf_t *g, bar_msg_t *msg)
{
    *out = NULL;
    gguf_str_t model, pre;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == BAR_ERR_NOTFOUND)
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: missing tokenizer.ggml.model");
    if (rc < 0)
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: tokenizer.ggml.model is not a string");
    if (!str_eq(model, "gpt2"))
        return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                        "tokenizer: model '%.*s' is not supported (only 'gpt2' byte-level BPE)",
                        (int)(model.n > 64 ? 64 : model.n), model.p);
    rc = gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc == BAR_ERR_NOTFOUND) {
        pre.p = "default";
        pre.n = 7;
    } else if (rc < 0) {
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: tokenizer.ggml.pre is not a string");
    }
    const pre_def_t *pd = NULL;
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0] && !pd; i++)
        for (int j = 0; j < 4 && k_pre[i].names[j] && !pd; j++)
            if (str_eq(pre, k_pre[i].names[j])) pd = &k_pre[i];
    if (!pd)
        return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                        "tokenizer: pre-tokenizer '%.*s' is not supported (supported: smollm, "
                        "gpt-2, default, llama-bpe)",
                        (int)(pre.n > 64 ? 64 : pre.n), pre.p);

    gguf_str_t *toks = NULL, *merges = NULL;
    size_t n_tok = 0, n_merges = 0;
    tok_t *t = calloc(1, sizeof *t);
    if (!t) return bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
    t->pre = pd;
    if ((rc = read_str_array(g, "tokenizer.ggml.tokens", &toks, &n_tok, msg)) < 0) goto fail;
    if ((rc = read_str_array(g, "tokenizer.ggml.merges", &merges, &n_merges, msg)) < 0) goto fail;
    t->n_vocab = (int)n_tok;

    /* strings */
    size_t total = 0;
    for (size_t i = 0; i < n_tok; i++) {
        total += toks[i].n;
        if (total > UINT32_MAX / 2) {
            rc = bar_fail(msg, BAR_ERR_FORMAT, "tokenizer: vocabulary strings too large");
            goto fail;
        }
    }
    t->text = malloc(total ? total : 1);
    t->text_off = malloc((n_tok + 1) * sizeof *t->text_off);
    t->attr = malloc(n_tok);
    t->vmask = pow2_at_least(n_tok * 2) - 1;
    t->vslot = malloc((t->vmask + 1) * sizeof *t->vslot);
    if (!t->text || !t->text_off || !t->attr || !t->vslot) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_tok; i++) {
        t->text_off[i] = (uint32_t)o;
        memcpy(t->text + o, toks[i].p, toks[i].n);
        o += toks[i].n;
    }
    t->text_off[n_tok] = (uint32_t)o;
    memset(t->vslot, 0xFF, (t->vmask + 1) * sizeof *t->vslot);
    for (int i = 0; i < t->n_vocab; i++)
        if (toks[i].n > 0) vocab_insert(t, i);

    /* token types (optional; llama.cpp: absent -> all normal) */
    const gguf_kv_t *tt = gguf_kv_find(g, "tokenizer.ggml.token_type");
    if (tt) {
        if (tt->type != GGUF_T_ARRAY || tt->arr_type != GGUF_T_I32 || tt->arr_n < n_tok ||
            tt->arr_bytes < n_tok * 4) {
            rc = bar_fail(msg, BAR_ERR_FORMAT,
                          "tokenizer: tokenizer.ggml.token_type must be %zu int32 values", n_tok);
            goto fail;
        }
    }
    for (size_t i = 0; i < n_tok; i++) {
        int32_t ty = 1;
        if (tt) memcpy(&ty, tt->arr_data + 4 * i, 4); /* little-endian file, LE host */
        /* GGUF token types: 0 undefined, 1 normal, 2 unknown, 3 control,
         * 4 user-defined, 5 unused, 6 byte */
        static const uint8_t k_type_attr[7] = {TA_UNDEF, TA_NORMAL, TA_UNKNOWN, TA_CONTROL,
                                               TA_USER,  TA_UNUSED, TA_BYTE};
        t->attr[i] = ty >= 0 && ty <= 6 ? k_type_attr[ty] : TA_UNDEF;
    }

    /* special ids and flags */
    t->bos = t->n_vocab > 11 ? 11 : -1; /* llama.cpp's GPT-2 BPE defaults */
    t->eos = t->bos;
    t->eot = -1;
    int eom = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
    t->add_bos = pd->add_bos;
    t->add_eos = 0;
    if ((rc = read_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, &eom, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.fim_pad_token_id", t->n_vocab, &fim_pad, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.fim_rep_token_id", t->n_vocab, &fim_rep, msg)) < 0 ||
        (rc = read_id(g, "tokenizer.ggml.fim_sep_token_id", t->n_vocab, &fim_sep, msg)) < 0 ||
        (rc = read_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, msg)) < 0 ||
        (rc = read_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos, msg)) < 0)
        goto fail;

    /* end of generation, as llama.cpp derives it */
    if (t->eot < 0) t->eot = find_first(t, k_eot_names);
    if (eom < 0) eom = find_first(t, k_eom_names);
    mark_eog(t, k_eot_names);
    mark_eog(t, k_eom_names);
    mark_eog(t, k_fim_names);
    mark_eog(t, k_eog_names);
    int extra[] = {t->eos, t->eot, eom, fim_pad, fim_rep, fim_sep};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (extra[i] >= 0) t->attr[extra[i]] |= TA_EOG;
    for (const char *const *nm = k_fim_ctl_names; *nm; nm++) {
        int id = tok_lookup(t, *nm, strlen(*nm));
        if (id >= 0) t->attr[id] |= TA_CONTROL;
    }

    /* special tokens for the partition step, longest first (ties by id) */
    uint64_t *keys = malloc(n_tok * sizeof *keys);
    t->special = malloc(n_tok * sizeof *t->special);
    if (!t->special || !keys) {
        free(keys);
        rc = bar_fail(msg, BAR_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    for (int i = 0; i < t->n_vocab; i++)
        if ((t->attr[i] & (TA_CONTROL | TA_USER | TA_UNKNOWN)) && toks[i].n > 0)
            keys[t->n_special++] = (uint64_t)(UINT32_MAX - toks[i].n) << 32 | (uint32_t)i;
    qsort(keys, t->n_special, sizeof *keys, special_cmp);
    for (size_t i = 0; i < t->n_special; i++)
        t->special[i] = (int32_t)(uint32_t)keys[i];
    free(keys);

    if ((rc = build_pieces(t, msg)) < 0 || (rc = build_merges(t, merges, n_merges, msg)) < 0 ||
        (rc = compile_pre(t, msg)) < 0)
        goto fail;

    free(toks);
    free(merges);
    *out = t;
    return 0;
fail:
    free(toks);
    free(merges);
    tok_destroy(t);
    return rc;
}

void tok_destroy(tok_t *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_pats; i++)
        pcre2_code_free(t->pats[i]);
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->attr);
    free(t->vslot);
    free(t->mslot);
    free(t->special);
    free(t);
}

int tok_n_vocab(const tok_t *t)
{
    return t->n_vocab;
}
int tok_bos(const tok_t *t)
{
    return t->bos;
}
int tok_eos(const tok_t *t)
{
    return t->eos;
}
int tok_eot(const tok_t *t)
{
    return t->eot;
}
int tok_add_bos(const tok_t *t)
{
    return t->add_bos;
}
int tok_add_eos(const tok_t *t)
{
    return t->add_eos;
}

int tok_is_eog(const tok_t *t, int id)
{
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TA_EOG) != 0;
}

int tok_is_special(const tok_t *t, int id)
{
    return id >= 0 && id < t->n_vocab && (t->attr[id] & (TA_CONTROL | TA_USER | TA_UNKNOWN)) != 0;
}

/* ---- encoding ----------------------------------------------------------------- */

typedef struct {
    int32_t id;   /* current token, -1 if the byte has none */
    int32_t prev; /* -1: none */
    int32_t next;
    uint8_t alive;
} sym_t;

typedef struct {
    int32_t rank;
    int32_t left, right;
    int32_t lid, rid; /* ids when queued; a mismatch later means stale */
    int32_t id;       /* the merged token */
} bigram_t;

/* Per-call scratch, grown on demand and freed at the end of tok_encode. */
typedef struct {
    int32_t *out;
    size_t cap, n;
    /* per raw fragment, sized by its byte length */
    uint8_t *norm;    /* re-encoded bytes, <= 3 per input byte */
    uint32_t *cbyte;  /* [ncpt + 1] byte offset of each codepoint in norm */
    uint8_t *col;     /* [ncpt] collapsed class bytes */
    uint32_t *cut[2]; /* chunk boundaries (codepoint indices), ping-pong */
    size_t frag_cap;
    /* per word, sized by its byte length */
    sym_t *sym;
    bigram_t *heap;
    char *mapped; /* ignore_merges lookup key */
    size_t word_cap;
    pcre2_match_data *md;
} enc_t;

static inline void emit(enc_t *e, int32_t id)
{
    if (e->n < e->cap) e->out[e->n] = id;
    e->n++;
}

static bool grow(void **p, size_t n, size_t elem)
{
    void *q = realloc(*p, n * elem);
    if (!q) return false;
    *p = q;
    return true;
}

static bool enc_reserve_frag(enc_t *e, size_t n)
{
    if (n <= e->frag_cap) return true;
    size_t c = n < 256 ? 256 : n;
    if (!grow((void **)&e->norm, c, 3) || !grow((void **)&e->cbyte, c + 1, 4) ||
        !grow((void **)&e->col, c, 1) || !grow((void **)&e->cut[0], c + 1, 4) ||
        !grow((void **)&e->cut[1], c + 1, 4))
        return false;
    e->frag_cap = c;
    return true;
}

static bool enc_reserve_word(enc_t *e, size_t n)
{
    if (n <= e->word_cap) return true;
    size_t c = n < 64 ? 64 : n;
    if (!grow((void **)&e->sym, c, sizeof(sym_t)) ||
        !grow((void **)&e->heap, 3 * c, sizeof(bigram_t)) || !grow((void **)&e->mapped, c, 2))
        return false;
    e->word_cap = c;
    return true;
}

static inline bool bg_less(const bigram_t *a, const bigram_t *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bigram_t *h, size_t *n, bigram_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_less(&v, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static bigram_t heap_pop(bigram_t *h, size_t *n)
{
    bigram_t top = h[0], v = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && bg_less(&h[c + 1], &h[c])) c++;
        if (!bg_less(&h[c], &v)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

static inline void try_pair(const tok_t *t, const sym_t *s, bigram_t *h, size_t *nh, int32_t l,
                            int32_t r)
{
    if (l < 0 || r < 0 || s[l].id < 0 || s[r].id < 0) return;
    const merge_slot_t *m = merge_find(t, s[l].id, s[r].id);
    if (m) heap_push(h, nh, (bigram_t){m->rank, l, r, s[l].id, s[r].id, m->id});
}

/* BPE over one pre-tokenized word w[0..n) (raw bytes). */
static int bpe_word(const tok_t *t, enc_t *e, const uint8_t *w, size_t n)
{
    if (n == 1) {
        if (t->byte_tok[w[0]] >= 0) emit(e, t->byte_tok[w[0]]);
        return 0;
    }
    if (!enc_reserve_word(e, n)) return BAR_ERR_NOMEM;
    if (t->pre->ignore_merges) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            m += u8_encode(t->byte_cpt[w[i]], (uint8_t *)e->mapped + m);
        int id = tok_lookup(t, e->mapped, m);
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
    }
    sym_t *s = e->sym;
    for (size_t i = 0; i < n; i++) {
        s[i].id = t->byte_tok[w[i]];
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s[i].alive = 1;
    }
    size_t nh = 0;
    for (size_t i = 1; i < n; i++)
        try_pair(t, s, e->heap, &nh, (int32_t)i - 1, (int32_t)i);
    while (nh > 0) {
        bigram_t b = heap_pop(e->heap, &nh);
        sym_t *l = &s[b.left], *r = &s[b.right];
        if (!l->alive || !r->alive || l->next != b.right || l->id != b.lid || r->id != b.rid)
            continue; /* stale */
        l->id = b.id;
        r->alive = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        try_pair(t, s, e->heap, &nh, l->prev, b.left);
        try_pair(t, s, e->heap, &nh, b.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (s[i].id >= 0) emit(e, s[i].id);
    return 0;
}

/* Split every chunk of the current boundary list with pattern re; unmatched
 * gaps become chunks too (llama.cpp's unicode_regex_split_stl). */
static size_t split_pass(const pcre2_code *re, pcre2_match_data *md, const uint8_t *col,
                         const uint32_t *in, size_t n_in, uint32_t *out)
{
    size_t n_out = 0;
    out[n_out++] = 0;
    for (size_t c = 0; c + 1 < n_in; c++) {
        uint32_t a = in[c], b = in[c + 1];
        PCRE2_SIZE pos = 0, len = b - a;
        while (pos < len) {
            int rc = pcre2_match(re, col + a, len, pos, 0, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            PCRE2_SIZE ms = ov[0], me = ov[1];
            if (me <= ms) /* patterns never match empty; be safe anyway */
                me = ms + 1;
            if (ms > pos) out[n_out++] = a + (uint32_t)ms;
            out[n_out++] = a + (uint32_t)me;
            pos = me;
        }
        if (out[n_out - 1] != b) out[n_out++] = b;
    }
    return n_out;
}

/* Steps 2-4 for one raw fragment p[0..n). */
static int encode_raw(const tok_t *t, enc_t *e, const uint8_t *p, size_t n)
{
    if (!enc_reserve_frag(e, n)) return BAR_ERR_NOMEM;
    size_t nc = 0, nb = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = u8_decode_lenient(p, n, &i);
        e->cbyte[nc] = (uint32_t)nb;
        e->col[nc] = cpt_class(c);
        nb += u8_encode(c, e->norm + nb);
        nc++;
    }
    e->cbyte[nc] = (uint32_t)nb;

    uint32_t *cur = e->cut[0], *nxt = e->cut[1];
    size_t ncut = 2;
    cur[0] = 0;
    cur[1] = (uint32_t)nc;
    for (int k = 0; k < t->n_pats; k++) {
        ncut = split_pass(t->pats[k], e->md, e->col, cur, ncut, nxt);
        uint32_t *tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    for (size_t w = 0; w + 1 < ncut; w++) {
        uint32_t b0 = e->cbyte[cur[w]], b1 = e->cbyte[cur[w + 1]];
        int rc = bpe_word(t, e, e->norm + b0, b1 - b0);
        if (rc < 0) return rc;
    }
    return 0;
}

typedef struct {
    int32_t id; /* -1: raw text */
    size_t off, len;
} frag_t;

/* Step 1: split raw fragments at every occurrence of each special token,
 * longest token first (llama.cpp's tokenizer_st_partition, without lstrip /
 * rstrip, which GGUF files do not carry). *fr is malloc'd, *nf its count. */
static int partition(const tok_t *t, const char *text, size_t len, int parse_special, frag_t **fr,
                     size_t *nf)
{
    size_t cap = 16, n = 0;
    frag_t *a = malloc(cap * sizeof *a), *b = NULL;
    if (!a) return BAR_ERR_NOMEM;
    if (len > 0) a[n++] = (frag_t){-1, 0, len};
    for (size_t k = 0; k < t->n_special && n > 0; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (TA_CONTROL | TA_UNKNOWN))) continue;
        size_t sl;
        const char *st = tok_text(t, id, &sl);
        if (!memmem(text, len, st, sl)) continue;
        size_t bcap = n * 2 + 8, bn = 0;
        b = malloc(bcap * sizeof *b);
        if (!b) {
            free(a);
            return BAR_ERR_NOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            if (a[i].id >= 0 || a[i].len < sl) {
                if (bn + 1 > bcap) {
                    bcap *= 2;
                    if (!grow((void **)&b, bcap, sizeof *b)) goto nomem;
                }
                b[bn++] = a[i];
                continue;
            }
            size_t off = a[i].off, end = a[i].off + a[i].len;
            for (;;) {
                const char *m = memmem(text + off, end - off, st, sl);
                if (bn + 3 > bcap) {
                    bcap *= 2;
                    if (!grow((void **)&b, bcap, sizeof *b)) goto nomem;
                }
                if (!m) {
                    if (end > off) b[bn++] = (frag_t){-1, off, end - off};
                    break;
                }
                size_t mo = (size_t)(m - text);
                if (mo > off) b[bn++] = (frag_t){-1, off, mo - off};
                b[bn++] = (frag_t){id, mo, sl};
                off = mo + sl;
            }
        }
        free(a);
        a = b;
        b = NULL;
        n = bn;
    }
    *fr = a;
    *nf = n;
    return 0;
nomem:
    free(a);
    free(b);
    return BAR_ERR_NOMEM;
}

int tok_encode(const tok_t *t, const char *text, size_t len, int add_special, int parse_special,
               int32_t *out, size_t cap, size_t *n_out)
{
    enc_t e = {.out = out, .cap = out ? cap : 0};
    frag_t *fr = NULL;
    size_t nf = 0;
    int rc = 0;
    *n_out = 0;
    if (add_special && t->add_bos && t->bos >= 0) emit(&e, t->bos);
    if ((rc = partition(t, text, len, parse_special, &fr, &nf)) < 0) goto done;
    e.md = pcre2_match_data_create(1, NULL);
    if (!e.md) {
        rc = BAR_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < nf; i++) {
        if (fr[i].id >= 0) {
            emit(&e, fr[i].id);
            continue;
        }
        if ((rc = encode_raw(t, &e, (const uint8_t *)text + fr[i].off, fr[i].len)) < 0) goto done;
    }
    if (add_special && t->add_eos && t->eos >= 0) emit(&e, t->eos);
    *n_out = e.n;
    rc = e.n > cap ? BAR_ERR_RANGE : 0;
done:
    pcre2_match_data_free(e.md);
    free(fr);
    free(e.norm);
    free(e.cbyte);
    free(e.col);
    free(e.cut[0]);
    free(e.cut[1]);
    free(e.sym);
    free(e.heap);
    free(e.mapped);
    return rc;
}

/* ---- decoding ----------------------------------------------------------------- */

static size_t piece_of(const tok_t *t, int id, int render_special, const char **p)
{
    if (id < 0 || id >= t->n_vocab) return 0;
    if (!render_special && (t->attr[id] & (TA_CONTROL | TA_UNKNOWN))) return 0;
    *p = t->piece + t->piece_off[id];
    return t->piece_off[id + 1] - t->piece_off[id];
}

size_t tok_piece(const tok_t *t, int id, int render_special, char *buf, size_t cap)
{
    const char *p = NULL;
    size_t n = piece_of(t, id, render_special, &p);
    if (n) memcpy(buf, p, n < cap ? n : cap);
    return n;
}

size_t tok_max_piece_len(const tok_t *t)
{
    return t->max_piece;
}

size_t tok_detokenize(const tok_t *t, const int32_t *ids, size_t n, int render_special, char *buf,
                      size_t cap)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = NULL;
        size_t k = piece_of(t, ids[i], render_special, &p);
        if (total < cap && k) memcpy(buf + total, p, k < cap - total ? k : cap - total);
        total += k;
    }
    return total;
}

void tok_stream_init(tok_stream_t *s)
{
    memset(s, 0, sizeof *s);
}

size_t tok_stream_bound(const tok_t *t)
{
    return 3 * (t->max_piece + 3);
}

/* Expected sequence length for a lead byte, 0 if it cannot start one. */
static int u8_seq_len(uint8_t b)
{
    return b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
}

/* Allowed range of the second byte after lead (Unicode Table 3-7). */
static void u8_second(uint8_t lead, uint8_t *lo, uint8_t *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (lead == 0xE0)
        *lo = 0xA0;
    else if (lead == 0xED)
        *hi = 0x9F;
    else if (lead == 0xF0)
        *lo = 0x90;
    else if (lead == 0xF4)
        *hi = 0x8F;
}

typedef struct {
    char *out;
    size_t cap, n;
    bool full;
} sink_t;

static void sink_put(sink_t *k, const void *p, size_t n)
{
    if (k->full || k->n + n > k->cap) {
        k->full = true;
        return;
    }
    memcpy(k->out + k->n, p, n);
    k->n += n;
}

static const char k_fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

size_t tok_stream_feed(const tok_t *t, tok_stream_t *s, int id, char *out, size_t cap)
{
    const char *p = NULL;
    size_t pl = piece_of(t, id, 0, &p);
    size_t np = s->n_pending < 4 ? s->n_pending : 0, N = np + pl;
    uint8_t pend[4];
    memcpy(pend, s->pending, np);
#define AT(j) ((j) < np ? pend[j] : (uint8_t)p[(j)-np])
    sink_t k = {out, cap, 0, false};
    s->n_pending = 0;
    size_t i = 0;
    while (i < N) {
        uint8_t b = AT(i);
        int L = u8_seq_len(b);
        if (L == 1) {
            sink_put(&k, &b, 1);
            i++;
            continue;
        }
        if (L == 0) {
            sink_put(&k, k_fffd, 3);
            i++;
            continue;
        }
        int j = 1;
        for (; j < L; j++) {
            if (i + (size_t)j >= N) { /* valid so far but incomplete: hold */
                for (size_t q = i; q < N; q++)
                    s->pending[s->n_pending++] = (char)AT(q);
                return k.n;
            }
            uint8_t c = AT(i + (size_t)j), lo = 0x80, hi = 0xBF;
            if (j == 1) u8_second(b, &lo, &hi);
            if (c < lo || c > hi) break;
        }
        if (j == L) {
            uint8_t ch[4];
            for (int q = 0; q < L; q++)
                ch[q] = AT(i + (size_t)q);
            sink_put(&k, ch, (size_t)L);
        } else {
            sink_put(&k, k_fffd, 3); /* maximal subpart [i, i + j) */
        }
        i += (size_t)j;
    }
#undef AT
    return k.n;
}

size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap)
{
    size_t n = 0;
    if (s->n_pending > 0 && cap >= 3) {
        memcpy(out, k_fffd, 3);
        n = 3;
    }
    s->n_pending = 0;
    return n;
}
