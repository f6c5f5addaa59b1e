/* wordpiece.c — BERT basic tokenizer + WordPiece (see wordpiece.h).
 *
 * The steps and their definitions follow Hugging Face `tokenizers`
 * (normalizers/bert.rs, pre_tokenizers/bert.rs, models/wordpiece), which
 * sentence-transformers runs:
 *  1. added (special) tokens are cut out of the raw text first;
 *  2. clean_text drops NUL, U+FFFD and "control" characters (categories Cc,
 *     Cf, Co, Cs except \t \n \r; unassigned code points are kept) and maps
 *     White_Space characters to ' ';
 *  3. handle_chinese_chars puts spaces around CJK ideographs;
 *  4. strip_accents: NFD, then drop nonspacing marks (Mn);
 *  5. lowercase: per code point (U+0130 -> "i" U+0307, the one unconditional
 *     multi-character mapping);
 *  6. split on whitespace (dropped) and punctuation (kept, one per word):
 *     ASCII 33-47, 58-64, 91-96, 123-126 and Unicode P*;
 *  7. WordPiece per word: longer than max_input_chars_per_word characters ->
 *     [UNK]; else greedy longest prefix in the vocabulary, the rest with "##",
 *     and a word with any unmatchable rest is one [UNK].
 * Unicode data (categories, decompositions, case) come from utf8proc.
 *
 * Vocabulary lookup: one open-addressing table of ids keyed by FNV-1a of the
 * token bytes (load <= 0.5). */
#include "engine/wordpiece.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/mfile.h"

#define WP_MAX_SPECIAL 32
#define WP_MAX_TOKEN_BYTES 1024 /* longer vocab lines are refused at load */

typedef struct {
    char *s;
    size_t n;
    int id;
} special_t;

struct wp {
    char *bytes;    /* every token's text, back to back */
    uint32_t *off;  /* [n_vocab] */
    uint32_t *tlen; /* [n_vocab] */
    int n_vocab;
    uint32_t *slots; /* id + 1, 0 = empty; [mask + 1] */
    uint32_t mask;
    int cls, sep, unk;
    int lowercase, strip_accents, chinese, clean;
    int max_chars;
    char prefix[16];
    size_t prefix_len;
    special_t special[WP_MAX_SPECIAL]; /* longest first */
    int n_special;
};

/* ---- vocabulary ---- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

int wp_lookup(const wp_t *wp, const char *text, size_t len)
{
    uint32_t i = (uint32_t)fnv1a(text, len) & wp->mask;
    for (;;) {
        uint32_t v = wp->slots[i];
        if (!v) return -1;
        int id = (int)v - 1;
        if (wp->tlen[id] == len && memcmp(wp->bytes + wp->off[id], text, len) == 0) return id;
        i = (i + 1) & wp->mask;
    }
}

/* Insert id; a repeated token takes the later id (as a HashMap built line by
 * line does in `tokenizers`). */
static void vocab_insert(wp_t *wp, int id)
{
    const char *s = wp->bytes + wp->off[id];
    size_t n = wp->tlen[id];
    uint32_t i = (uint32_t)fnv1a(s, n) & wp->mask;
    for (;;) {
        uint32_t v = wp->slots[i];
        if (!v) {
            wp->slots[i] = (uint32_t)id + 1;
            return;
        }
        int o = (int)v - 1;
        if (wp->tlen[o] == n && memcmp(wp->bytes + wp->off[o], s, n) == 0) {
            wp->slots[i] = (uint32_t)id + 1;
            return;
        }
        i = (i + 1) & wp->mask;
    }
}

static int load_vocab(wp_t *wp, const char *v, size_t n, bar_msg_t *msg)
{
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += v[i] == '\n';
    if (n && v[n - 1] != '\n') lines++;
    if (lines == 0) return bar_fail(msg, BAR_ERR_FORMAT, "vocab.txt: empty");
    if (lines > (1u << 24)) return bar_fail(msg, BAR_ERR_FORMAT, "vocab.txt: too many lines");
    wp->bytes = malloc(n + 1);
    wp->off = calloc(lines, sizeof *wp->off);
    wp->tlen = calloc(lines, sizeof *wp->tlen);
    uint32_t cap = 1;
    while (cap < lines * 2)
        cap <<= 1;
    wp->slots = calloc(cap, sizeof *wp->slots);
    wp->mask = cap - 1;
    if (!wp->bytes || !wp->off || !wp->tlen || !wp->slots)
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    if (n) memcpy(wp->bytes, v, n);
    size_t pos = 0;
    int id = 0;
    while (pos < n) {
        size_t e = pos;
        while (e < n && v[e] != '\n')
            e++;
        size_t end = e;
        /* trim trailing whitespace (\r, spaces), as `tokenizers` trim_end()s */
        while (end > pos && (v[end - 1] == '\r' || v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - pos > WP_MAX_TOKEN_BYTES)
            return bar_fail(msg, BAR_ERR_FORMAT, "vocab.txt: line %d is longer than %d bytes",
                            id + 1, WP_MAX_TOKEN_BYTES);
        wp->off[id] = (uint32_t)pos;
        wp->tlen[id] = (uint32_t)(end - pos);
        id++;
        pos = e + 1;
    }
    wp->n_vocab = id;
    for (int i = 0; i < wp->n_vocab; i++)
        vocab_insert(wp, i);
    return 0;
}

/* ---- settings from tokenizer.json ---- */

static int json_bool(const cJSON *o, const char *k, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static int add_special(wp_t *wp, const char *s, size_t n, int id)
{
    if (n == 0 || id < 0 || id >= wp->n_vocab || wp->n_special >= WP_MAX_SPECIAL) return 0;
    for (int i = 0; i < wp->n_special; i++)
        if (wp->special[i].n == n && memcmp(wp->special[i].s, s, n) == 0) return 0;
    char *c = malloc(n);
    if (!c) return BAR_ERR_NOMEM;
    memcpy(c, s, n);
    /* keep longest first: leftmost-longest match */
    int at = wp->n_special;
    while (at > 0 && wp->special[at - 1].n < n) {
        wp->special[at] = wp->special[at - 1];
        at--;
    }
    wp->special[at] = (special_t){c, n, id};
    wp->n_special++;
    return 0;
}

static int load_settings(wp_t *wp, const char *json, size_t json_len, char *unk, size_t unk_cap,
                         bar_msg_t *msg)
{
    cJSON *root = cJSON_ParseWithLength(json, json_len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bar_fail(msg, BAR_ERR_FORMAT, "tokenizer.json: not a JSON object");
    }
    int rc = 0;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (cJSON_IsObject(norm)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(norm, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "BertNormalizer") != 0) {
            rc = bar_fail(msg, BAR_ERR_UNSUPPORTED,
                          "tokenizer.json: normalizer type %.40s (only BertNormalizer)",
                          cJSON_IsString(type) ? type->valuestring : "?");
            goto out;
        }
        wp->clean = json_bool(norm, "clean_text", 1);
        wp->chinese = json_bool(norm, "handle_chinese_chars", 1);
        wp->lowercase = json_bool(norm, "lowercase", 1);
        wp->strip_accents = json_bool(norm, "strip_accents", wp->lowercase);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsObject(model)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
        if (cJSON_IsString(type) && strcmp(type->valuestring, "WordPiece") != 0) {
            rc = bar_fail(msg, BAR_ERR_UNSUPPORTED,
                          "tokenizer.json: model type %.40s (only WordPiece)", type->valuestring);
            goto out;
        }
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        if (cJSON_IsString(u)) snprintf(unk, unk_cap, "%s", u->valuestring);
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
        if (cJSON_IsString(p)) {
            size_t n = strlen(p->valuestring);
            if (n >= sizeof wp->prefix) {
                rc = bar_fail(msg, BAR_ERR_FORMAT,
                              "tokenizer.json: continuing_subword_prefix too long");
                goto out;
            }
            memcpy(wp->prefix, p->valuestring, n + 1);
            wp->prefix_len = n;
        }
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
        if (cJSON_IsNumber(m) && m->valuedouble >= 1 && m->valuedouble <= 1e6)
            wp->max_chars = (int)m->valuedouble;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!cJSON_IsString(c) || !cJSON_IsNumber(id)) continue;
        if (id->valuedouble < 0 || id->valuedouble >= wp->n_vocab) continue;
        if (add_special(wp, c->valuestring, strlen(c->valuestring), (int)id->valuedouble)) {
            rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    return rc;
}

int wp_load_mem(wp_t **out, const char *vocab, size_t vocab_len, const char *json, size_t json_len,
                bar_msg_t *msg)
{
    *out = NULL;
    wp_t *wp = calloc(1, sizeof *wp);
    if (!wp) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    wp->lowercase = wp->strip_accents = wp->chinese = wp->clean = 1;
    wp->max_chars = 100;
    memcpy(wp->prefix, "##", 3);
    wp->prefix_len = 2;
    char unk[64] = "[UNK]";
    int rc = load_vocab(wp, vocab, vocab_len, msg);
    if (!rc && json) rc = load_settings(wp, json, json_len, unk, sizeof unk, msg);
    if (rc) {
        wp_free(wp);
        return rc;
    }
    wp->cls = wp_lookup(wp, "[CLS]", 5);
    wp->sep = wp_lookup(wp, "[SEP]", 5);
    wp->unk = wp_lookup(wp, unk, strlen(unk));
    if (wp->cls < 0 || wp->sep < 0 || wp->unk < 0) {
        rc = bar_fail(msg, BAR_ERR_FORMAT, "vocab.txt: no %s token",
                      wp->cls < 0   ? "[CLS]"
                      : wp->sep < 0 ? "[SEP]"
                                    : unk);
        wp_free(wp);
        return rc;
    }
    if (!json || wp->n_special == 0) {
        /* no added-token list: the usual BERT specials that the vocab has */
        static const char *const names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            int id = wp_lookup(wp, names[i], strlen(names[i]));
            if (id >= 0 && add_special(wp, names[i], strlen(names[i]), id)) {
                wp_free(wp);
                return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
            }
        }
    }
    *out = wp;
    return 0;
}

static int read_small(const char *path, char **buf, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return BAR_ERR_IO;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    int rc = 0;
    while (b) {
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (len < cap) break;
        if (cap > (64u << 20)) {
            rc = BAR_ERR_FORMAT;
            break;
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    if (!b) rc = BAR_ERR_NOMEM;
    if (!rc && ferror(f)) rc = BAR_ERR_IO;
    fclose(f);
    if (rc) {
        free(b);
        return rc;
    }
    *buf = b;
    *n = len;
    return 0;
}

int wp_load(wp_t **out, const char *model_dir, bar_msg_t *msg)
{
    *out = NULL;
    char path[4096];
    char *vocab = NULL, *json = NULL;
    size_t vn = 0, jn = 0;
    snprintf(path, sizeof path, "%s/vocab.txt", model_dir);
    int rc = read_small(path, &vocab, &vn);
    if (rc) return bar_fail(msg, rc, "%s: cannot read (%s)", path, bar_strerror(rc));
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (read_small(path, &json, &jn) != 0) {
        json = NULL;
        /* no tokenizer.json: defaults, with tokenizer_config.json's do_lower_case */
        char *cfg = NULL;
        size_t cn = 0;
        snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
        int lower = 1;
        if (read_small(path, &cfg, &cn) == 0) {
            cJSON *c = cJSON_ParseWithLength(cfg, cn);
            lower = json_bool(c, "do_lower_case", 1);
            cJSON_Delete(c);
            free(cfg);
        }
        char synth[160];
        int k = snprintf(synth, sizeof synth,
                         "{\"normalizer\":{\"type\":\"BertNormalizer\",\"lowercase\":%s}}",
                         lower ? "true" : "false");
        rc = wp_load_mem(out, vocab, vn, synth, (size_t)k, msg);
        free(vocab);
        return rc;
    }
    rc = wp_load_mem(out, vocab, vn, json, jn, msg);
    free(vocab);
    free(json);
    return rc;
}

void wp_free(wp_t *wp)
{
    if (!wp) return;
    for (int i = 0; i < wp->n_special; i++)
        free(wp->special[i].s);
    free(wp->bytes);
    free(wp->off);
    free(wp->tlen);
    free(wp->slots);
    free(wp);
}

int wp_vocab_size(const wp_t *wp)
{
    return wp->n_vocab;
}
int wp_cls_id(const wp_t *wp)
{
    return wp->cls;
}
int wp_sep_id(const wp_t *wp)
{
    return wp->sep;
}
int wp_unk_id(const wp_t *wp)
{
    return wp->unk;
}

const char *wp_token(const wp_t *wp, int id, size_t *len)
{
    if (id < 0 || id >= wp->n_vocab) return NULL;
    *len = wp->tlen[id];
    return wp->bytes + wp->off[id];
}

/* ---- character classes ---- */

/* Code points that Unicode 14 puts in P*, Cc/Cf/Co or Mn but `tokenizers`'
 * older tables do not (they were assigned in Unicode 9-14): found by asking
 * `tokenizers` about each, see tests/ref/gen_wordpiece_compat.py. */
static const uint32_t LEGACY_NOT_PUNCT[][2] = {
    {0x61D, 0x61D},     {0x9FD, 0x9FD},     {0xA76, 0xA76},     {0xC77, 0xC77},
    {0xC84, 0xC84},     {0x1B7D, 0x1B7E},   {0x2E43, 0x2E4F},   {0x2E52, 0x2E5D},
    {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x1144B, 0x1144F},
    {0x1145A, 0x1145B}, {0x1145D, 0x1145D}, {0x11660, 0x1166C}, {0x116B9, 0x116B9},
    {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46},
    {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11C41, 0x11C45}, {0x11C70, 0x11C71},
    {0x11EF7, 0x11EF8}, {0x11FFF, 0x11FFF}, {0x12FF1, 0x12FF2}, {0x16E97, 0x16E9A},
    {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F},
};
static const uint32_t LEGACY_NOT_CTRL[][2] = {
    {0x890, 0x891},
    {0x8E2, 0x8E2},
    {0x110CD, 0x110CD},
    {0x13430, 0x13438},
};
static const uint32_t LEGACY_NOT_MN[][2] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8E1},     {0x9FE, 0x9FE},
    {0xAFA, 0xAFF},     {0xB55, 0xB55},     {0xC04, 0xC04},     {0xC3C, 0xC3C},
    {0xD00, 0xD00},     {0xD3B, 0xD3C},     {0xD81, 0xD81},     {0xEBA, 0xEBA},
    {0x180F, 0x180F},   {0x1885, 0x1886},   {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFB},
    {0xA82C, 0xA82C},   {0xA8C5, 0xA8C5},   {0xA8FF, 0xA8FF},   {0xA9BD, 0xA9BD},
    {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x11073, 0x11074}, {0x110C2, 0x110C2}, {0x111C9, 0x111C9},
    {0x111CF, 0x111CF}, {0x1123E, 0x1123E}, {0x1133B, 0x1133B}, {0x11438, 0x1143F},
    {0x11442, 0x11444}, {0x11446, 0x11446}, {0x1145E, 0x1145E}, {0x1182F, 0x11837},
    {0x11839, 0x1183A}, {0x1193B, 0x1193C}, {0x1193E, 0x1193E}, {0x11943, 0x11943},
    {0x119D4, 0x119D7}, {0x119DA, 0x119DB}, {0x119E0, 0x119E0}, {0x11A01, 0x11A0A},
    {0x11A33, 0x11A38}, {0x11A3B, 0x11A3E}, {0x11A47, 0x11A47}, {0x11A51, 0x11A56},
    {0x11A59, 0x11A5B}, {0x11A8A, 0x11A96}, {0x11A98, 0x11A99}, {0x11C30, 0x11C36},
    {0x11C38, 0x11C3D}, {0x11C3F, 0x11C3F}, {0x11C92, 0x11CA7}, {0x11CAA, 0x11CB0},
    {0x11CB2, 0x11CB3}, {0x11CB5, 0x11CB6}, {0x11D31, 0x11D36}, {0x11D3A, 0x11D3A},
    {0x11D3C, 0x11D3D}, {0x11D3F, 0x11D45}, {0x11D47, 0x11D47}, {0x11D90, 0x11D91},
    {0x11D95, 0x11D95}, {0x11D97, 0x11D97}, {0x11EF3, 0x11EF4}, {0x16F4F, 0x16F4F},
    {0x16FE4, 0x16FE4}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46}, {0x1E000, 0x1E006},
    {0x1E008, 0x1E018}, {0x1E01B, 0x1E021}, {0x1E023, 0x1E024}, {0x1E026, 0x1E02A},
    {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E944, 0x1E94A},
};

static int in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}
#define IN_TABLE(c, t) in_ranges((c), (t), sizeof(t) / sizeof((t)[0]))

/* Rust's char::is_whitespace (the White_Space property) */
static int is_ws(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

static int is_ctrl(uint32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO ||
            k == UTF8PROC_CATEGORY_CS) &&
           !IN_TABLE(c, LEGACY_NOT_CTRL);
}

static int is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_punct(uint32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return 1;
    if (c < 128) return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO && !IN_TABLE(c, LEGACY_NOT_PUNCT);
}

/* Decode one code point at s[0..n) (n >= 1); invalid or truncated sequences
 * (overlong, surrogate, > U+10FFFF) give U+FFFD for one byte. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned c = s[0];
    *adv = 1;
    if (c < 0x80) return c;
    int k;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
        k = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        k = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        k = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return 0xFFFD;
    }
    if ((size_t)k >= n) return 0xFFFD;
    for (int i = 1; i <= k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0xFFFD;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0xFFFD;
    *adv = (size_t)k + 1;
    return cp;
}

static size_t utf8_put(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- encoding ---- */

typedef struct {
    int32_t *ids;
    size_t n, cap;
    uint32_t *cp, *cp2; /* code point scratch, cp_cap each */
    size_t cp_cap;
    char *word; /* UTF-8 of one word with room for the prefix */
    size_t word_cap;
    int oom;
} enc_t;

static void push_id(enc_t *e, int32_t id)
{
    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 64;
        int32_t *p = realloc(e->ids, nc * sizeof *p);
        if (!p) {
            e->oom = 1;
            return;
        }
        e->ids = p;
        e->cap = nc;
    }
    e->ids[e->n++] = id;
}

/* WordPiece of one word (code points w[0..n), n >= 1). */
static void wordpiece(const wp_t *wp, enc_t *e, const uint32_t *w, size_t n)
{
    if (n > (size_t)wp->max_chars) {
        push_id(e, wp->unk);
        return;
    }
    /* UTF-8 of the word after a prefix-sized gap; bo[i] = byte offset of char i */
    size_t need = wp->prefix_len + n * 4 + 1;
    size_t bo_need = (n + 1) * sizeof(size_t);
    if (e->word_cap < need + bo_need + 8) {
        char *p = realloc(e->word, need + bo_need + 64);
        if (!p) {
            e->oom = 1;
            return;
        }
        e->word = p;
        e->word_cap = need + bo_need + 64;
    }
    char *u = e->word + wp->prefix_len;
    size_t *bo = (size_t *)(void *)(e->word + ((need + 7) & ~(size_t)7));
    if ((char *)(bo + n + 1) > e->word + e->word_cap) { /* alignment slack */
        e->oom = 1;
        return;
    }
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        bo[i] = b;
        b += utf8_put(w[i], u + b);
    }
    bo[n] = b;
    size_t first = e->n;
    size_t start = 0;
    while (start < n) {
        size_t end = n;
        int found = -1;
        while (end > start) {
            const char *s = u + bo[start];
            size_t len = bo[end] - bo[start];
            if (start > 0) {
                /* prefix + piece: write the prefix just before the piece */
                char save[16];
                char *ps = (char *)s - wp->prefix_len;
                memcpy(save, ps, wp->prefix_len);
                memcpy(ps, wp->prefix, wp->prefix_len);
                found = wp_lookup(wp, ps, len + wp->prefix_len);
                memcpy(ps, save, wp->prefix_len);
            } else {
                found = wp_lookup(wp, s, len);
            }
            if (found >= 0) break;
            end--;
        }
        if (found < 0) {
            e->n = first; /* the whole word is unknown */
            push_id(e, wp->unk);
            return;
        }
        push_id(e, found);
        start = end;
    }
}

static int grow_cp(enc_t *e, size_t need)
{
    if (need <= e->cp_cap) return 0;
    size_t nc = need + need / 2 + 16;
    uint32_t *a = realloc(e->cp, nc * sizeof *a);
    if (!a) return -1;
    e->cp = a;
    uint32_t *b = realloc(e->cp2, nc * sizeof *b);
    if (!b) return -1;
    e->cp2 = b;
    e->cp_cap = nc;
    return 0;
}

/* Normalize, pre-tokenize and WordPiece one segment without special tokens. */
static void segment(const wp_t *wp, enc_t *e, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    /* 1-3: clean, whitespace, CJK spacing; at most 3 code points per byte */
    if (grow_cp(e, len * 3 + 8)) {
        e->oom = 1;
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < len;) {
        size_t adv;
        uint32_t c = utf8_next(s + i, len - i, &adv);
        i += adv;
        if (wp->clean) {
            if (c == 0 || c == 0xFFFD || is_ctrl(c)) continue;
            if (is_ws(c)) c = ' ';
        }
        if (wp->chinese && is_cjk(c)) {
            e->cp[m++] = ' ';
            e->cp[m++] = c;
            e->cp[m++] = ' ';
        } else {
            e->cp[m++] = c;
        }
    }
    uint32_t *cp = e->cp;
    if (wp->strip_accents) {
        /* 4: NFD (canonical decomposition + ordering), then drop Mn */
        size_t m2 = 0;
        for (size_t i = 0; i < m; i++) {
            utf8proc_int32_t d[8];
            int last = 0;
            utf8proc_ssize_t k =
                utf8proc_decompose_char((utf8proc_int32_t)cp[i], d, 8, UTF8PROC_DECOMPOSE, &last);
            if (k < 1 || k > 8) {
                d[0] = (utf8proc_int32_t)cp[i];
                k = 1;
            }
            if (m2 + (size_t)k > e->cp_cap) {
                size_t need = m2 + (size_t)k + (m - i) * 4;
                /* grow cp2 only, keep cp */
                uint32_t *b = realloc(e->cp2, need * sizeof *b);
                if (!b) {
                    e->oom = 1;
                    return;
                }
                e->cp2 = b;
                uint32_t *a = realloc(e->cp, need * sizeof *a);
                if (!a) {
                    e->oom = 1;
                    return;
                }
                e->cp = cp = a;
                e->cp_cap = need;
            }
            for (utf8proc_ssize_t j = 0; j < k; j++)
                e->cp2[m2++] = (uint32_t)d[j];
        }
        /* canonical ordering: stable sort of each run of non-starters by ccc */
        for (size_t i = 1; i < m2; i++) {
            size_t j = i;
            int cj = utf8proc_get_property((utf8proc_int32_t)e->cp2[j])->combining_class;
            while (cj && j > 0) {
                int cp_ = utf8proc_get_property((utf8proc_int32_t)e->cp2[j - 1])->combining_class;
                if (cp_ <= cj) break;
                uint32_t t = e->cp2[j];
                e->cp2[j] = e->cp2[j - 1];
                e->cp2[j - 1] = t;
                j--;
            }
        }
        m = 0;
        for (size_t i = 0; i < m2; i++)
            if (utf8proc_category((utf8proc_int32_t)e->cp2[i]) != UTF8PROC_CATEGORY_MN ||
                IN_TABLE(e->cp2[i], LEGACY_NOT_MN))
                cp[m++] = e->cp2[i];
    }
    /* 5-7: lowercase, split, WordPiece */
    size_t ws = 0, wn = 0; /* current word in cp2[ws .. ws + wn) */
    if (e->cp_cap < m * 2 + 2) {
        uint32_t *b = realloc(e->cp2, (m * 2 + 2) * sizeof *b);
        if (!b) {
            e->oom = 1;
            return;
        }
        e->cp2 = b;
        /* cp_cap tracks the smaller of the two; cp is already >= m */
    }
    uint32_t *w = e->cp2;
    for (size_t i = 0; i <= m; i++) {
        uint32_t c = i < m ? cp[i] : ' ';
        if (wp->lowercase && i < m) {
            if (c == 0x130) {
                w[ws + wn++] = 'i';
                c = 0x307;
            } else {
                c = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
            }
        }
        if (is_ws(c)) {
            if (wn) wordpiece(wp, e, w + ws, wn);
            ws += wn;
            wn = 0;
        } else if (is_punct(c)) {
            if (wn) wordpiece(wp, e, w + ws, wn);
            ws += wn;
            w[ws] = c;
            wordpiece(wp, e, w + ws, 1);
            ws += 1;
            wn = 0;
        } else {
            w[ws + wn++] = c;
        }
        if (e->oom) return;
    }
}

int wp_encode(const wp_t *wp, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n,
              size_t *n_full)
{
    *n = 0;
    if (n_full) *n_full = 0;
    if (cap < 2) return BAR_ERR_INVALID;
    enc_t e = {0};
    push_id(&e, wp->cls);
    size_t seg = 0;
    for (size_t i = 0; i < len && !e.oom;) {
        int hit = -1;
        for (int k = 0; k < wp->n_special; k++)
            if (wp->special[k].s[0] == text[i] && wp->special[k].n <= len - i &&
                memcmp(text + i, wp->special[k].s, wp->special[k].n) == 0) {
                hit = k;
                break;
            }
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > seg) segment(wp, &e, text + seg, i - seg);
        push_id(&e, wp->special[hit].id);
        i += wp->special[hit].n;
        seg = i;
    }
    if (!e.oom && len > seg) segment(wp, &e, text + seg, len - seg);
    push_id(&e, wp->sep);
    free(e.cp);
    free(e.cp2);
    free(e.word);
    if (e.oom) {
        free(e.ids);
        return BAR_ERR_NOMEM;
    }
    size_t k = e.n <= cap ? e.n : cap;
    memcpy(ids, e.ids, k * sizeof *ids);
    if (e.n > cap) ids[cap - 1] = wp->sep;
    *n = k;
    if (n_full) *n_full = e.n;
    free(e.ids);
    return 0;
}
