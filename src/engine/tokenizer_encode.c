/* tokenizer_encode.c — text to token ids for the byte-level BPE tokenizer
 * (tok_encode), matching llama.cpp id for id.
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
 *      queue). Pairs are looked up in the merge table built at load.
 * Not for: loading the vocabulary and building the tables (tokenizer.c),
 * decoding (tokenizer_decode.c), any normalisation (GPT-2 BPE has none). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/tokenizer_int.h"

/* ---- codepoint classes -------------------------------------------------------- */

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
