/* tokenizer.c — builds a byte-level BPE tokenizer (GPT-2 family) from a GGUF
 * file's tokenizer.ggml.* keys, matching llama.cpp (llama-vocab.cpp) id for
 * id: the vocabulary and its hash table, the merge-rank table keyed by
 * (left id, right id) -> (rank, merged id), token attributes and
 * end-of-generation marks, the special-token list (longest first) for the
 * partition step, every token's decoded bytes (precomputed here so decoding
 * never allocates), and the pre-tokenizer regexes chosen by
 * tokenizer.ggml.pre; plus the id accessors and tok_destroy.
 *
 * Not for: encoding text (tokenizer_encode.c), decoding ids
 * (tokenizer_decode.c), SentencePiece or WordPiece (wordpiece.c). What the
 * three files share is in tokenizer_int.h. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/tokenizer_int.h"

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
static const pre_def_t k_pre[] = {
    {{"smollm"}, {"[" RX_N "]", RX_GPT2}, 0, 0},
    {{"gpt-2", "gpt2"}, {RX_GPT2}, 0, 0},
    {{"default"}, {"[" RX_P "\\$\\+<=>\\^~\\|]+", RX_GPT2, "[" RX_N "]+", "[0-9][0-9][0-9]"}, 0, 0},
    {{"llama-bpe", "llama3", "llama-v3"}, {RX_LLAMA3}, 1, 1},
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
/* ---- hash tables -------------------------------------------------------------- */

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
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
