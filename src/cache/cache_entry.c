/* cache_entry.c — cached replies: one-allocation layout, refcounts, the
 * recorder and the versioned binary encoding (see cache_entry.h).
 *
 * Layout of the single allocation, every array 8-byte aligned:
 *   [cache_entry_t][cache_chunk_t × n_chunks][lp_tok_t × n_lp]
 *   [lp_alt_t × n_tops][model \0][text \0][logprob strings, each \0]
 * Not for: eviction, lookup, I/O. */
#include "cache/cache_entry.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define MALLOC_OVERHEAD 16 /* glibc chunk header + rounding, counted per allocation */
#define ENTRY_VERSION 2
#define MAX_MODEL_LEN 4096

/* ---- allocation ---- */

typedef struct {
    cache_entry_t *e;
    cache_chunk_t *chunks;
    lp_tok_t *lp;
    lp_alt_t *tops;
    char *model, *text, *str; /* str: logprob strings */
} layout_t;

static int entry_alloc(layout_t *L, size_t n_chunks, size_t n_lp, size_t n_tops, size_t model_len,
                       size_t text_len, size_t str_len)
{
    /* counts are bounded by the callers (≤ CACHE_ENTRY_MAX_BYTES each) */
    size_t sz = sizeof(cache_entry_t) + n_chunks * sizeof(cache_chunk_t) + n_lp * sizeof(lp_tok_t) +
                n_tops * sizeof(lp_alt_t) + model_len + 1 + text_len + 1 + str_len;
    char *p = calloc(1, sz);
    if (!p) return BAR_ERR_NOMEM;
    L->e = (cache_entry_t *)p;
    p += sizeof(cache_entry_t);
    L->chunks = (cache_chunk_t *)p;
    p += n_chunks * sizeof(cache_chunk_t);
    L->lp = (lp_tok_t *)p;
    p += n_lp * sizeof(lp_tok_t);
    L->tops = (lp_alt_t *)p;
    p += n_tops * sizeof(lp_alt_t);
    L->model = p;
    p += model_len + 1;
    L->text = p;
    p += text_len + 1;
    L->str = p;
    cache_entry_t *e = L->e;
    e->refs = 1;
    e->mem_bytes = sz + MALLOC_OVERHEAD;
    e->model = L->model;
    e->model_len = model_len;
    e->text = L->text;
    e->text_len = text_len;
    e->chunks = L->chunks;
    e->n_chunks = (int)n_chunks;
    e->lp = L->lp;
    e->n_lp = (int)n_lp;
    return 0;
}

cache_entry_t *cache_entry_ref(cache_entry_t *e)
{
    if (e) e->refs++;
    return e;
}

void cache_entry_release(cache_entry_t *e)
{
    if (e && --e->refs == 0) {
        free(e->memo);
        free(e);
    }
}

int cache_entry_set_memo(cache_entry_t *e, char *p, size_t n, unsigned tag)
{
    if (e->memo) return BAR_ERR_INVALID;
    e->memo = p;
    e->memo_len = n;
    e->memo_tag = tag;
    e->mem_bytes += n + MALLOC_OVERHEAD;
    return 0;
}

int64_t cache_entry_expires_ms(const cache_entry_t *e)
{
    return e->ttl_ms ? e->stored_ms + (int64_t)e->ttl_ms : 0;
}

/* ---- recorder ---- */

typedef struct {
    size_t off, len; /* into str */
    double logprob;
    int top0, n_top;
} rec_lp_t;

typedef struct {
    size_t off, len;
    double logprob;
} rec_top_t;

struct cache_rec {
    int want_lp;
    int failed;
    buf_t text;
    buf_t str; /* logprob token strings, each followed by \0 */
    cache_chunk_t *chunks;
    size_t n_chunks, cap_chunks;
    rec_lp_t *lp;
    size_t n_lp, cap_lp;
    rec_top_t *tops;
    size_t n_tops, cap_tops;
    int n_choices;                                  /* highest index seen + 1 */
    unsigned char choice_finish[CACHE_CHOICES_MAX]; /* 0 while a choice runs */
    int bad_end;                                    /* a choice ended cut short */
};

cache_rec_t *cache_rec_create(int want_logprobs)
{
    cache_rec_t *r = calloc(1, sizeof *r);
    if (r) r->want_lp = want_logprobs != 0;
    return r;
}

void cache_rec_destroy(cache_rec_t *r)
{
    if (!r) return;
    buf_free(&r->text);
    buf_free(&r->str);
    free(r->chunks);
    free(r->lp);
    free(r->tops);
    free(r);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return BAR_ERR_NOMEM;
    *p = q;
    *cap = c;
    return 0;
}

/* bytes an entry built now would take (upper bound, for the size limit) */
static size_t rec_size(const cache_rec_t *r)
{
    return sizeof(cache_entry_t) + r->n_chunks * sizeof(cache_chunk_t) +
           r->n_lp * sizeof(lp_tok_t) + r->n_tops * sizeof(lp_alt_t) + r->text.n + r->str.n +
           MAX_MODEL_LEN;
}

static int str_add(cache_rec_t *r, const char *s, size_t n, size_t *off)
{
    *off = r->str.n;
    if (buf_append(&r->str, s ? s : "", n) || buf_append(&r->str, "", 1)) return BAR_ERR_NOMEM;
    return 0;
}

int cache_rec_add(cache_rec_t *r, const char *text, size_t len, const lp_tok_t *lp, int n_lp)
{
    return cache_rec_add_choice(r, 0, text, len, lp, n_lp);
}

int cache_rec_end_choice(cache_rec_t *r, int index, cache_finish_t finish)
{
    if (index < 0 || index >= CACHE_CHOICES_MAX) return r->failed = BAR_ERR_RANGE;
    if (index >= r->n_choices) r->n_choices = index + 1;
    if (finish != CACHE_FINISH_STOP && finish != CACHE_FINISH_LENGTH) r->bad_end = 1;
    r->choice_finish[index] = (unsigned char)finish;
    return 0;
}

int cache_rec_add_choice(cache_rec_t *r, int index, const char *text, size_t len,
                         const lp_tok_t *lp, int n_lp)
{
    if (r->failed) return r->failed;
    if (index < 0 || index >= CACHE_CHOICES_MAX) return r->failed = BAR_ERR_RANGE;
    if (index >= r->n_choices) r->n_choices = index + 1;
    if (!r->want_lp || n_lp < 0) n_lp = 0;
    if (len == 0 && n_lp == 0) return 0;
    size_t add = len + sizeof(cache_chunk_t);
    for (int i = 0; i < n_lp; i++) {
        if (lp[i].n_top < 0 || lp[i].n_top > CACHE_LP_MAX_TOP) return r->failed = BAR_ERR_RANGE;
        add += sizeof(lp_tok_t) + lp[i].token_len + 1;
        for (int k = 0; k < lp[i].n_top; k++)
            add += sizeof(lp_alt_t) + lp[i].top[k].len + 1;
    }
    if (add > CACHE_ENTRY_MAX_BYTES || rec_size(r) + add > CACHE_ENTRY_MAX_BYTES)
        return r->failed = BAR_ERR_RANGE;
    int rc = grow((void **)&r->chunks, &r->cap_chunks, r->n_chunks + 1, sizeof *r->chunks);
    if (!rc && n_lp) rc = grow((void **)&r->lp, &r->cap_lp, r->n_lp + (size_t)n_lp, sizeof *r->lp);
    if (rc) return r->failed = rc;
    cache_chunk_t *c = &r->chunks[r->n_chunks];
    c->off = r->text.n;
    c->len = len;
    c->lp0 = (int)r->n_lp;
    c->n_lp = n_lp;
    c->index = index;
    if (buf_append(&r->text, text, len)) return r->failed = BAR_ERR_NOMEM;
    for (int i = 0; i < n_lp; i++) {
        rec_lp_t *it = &r->lp[r->n_lp + (size_t)i];
        if (str_add(r, lp[i].token, lp[i].token_len, &it->off)) return r->failed = BAR_ERR_NOMEM;
        it->len = lp[i].token_len;
        it->logprob = lp[i].logprob;
        it->top0 = (int)r->n_tops;
        it->n_top = lp[i].n_top;
        if (grow((void **)&r->tops, &r->cap_tops, r->n_tops + (size_t)lp[i].n_top, sizeof *r->tops))
            return r->failed = BAR_ERR_NOMEM;
        for (int k = 0; k < lp[i].n_top; k++) {
            rec_top_t *t = &r->tops[r->n_tops++];
            if (str_add(r, lp[i].top[k].token, lp[i].top[k].len, &t->off))
                return r->failed = BAR_ERR_NOMEM;
            t->len = lp[i].top[k].len;
            t->logprob = lp[i].top[k].logprob;
        }
    }
    r->n_lp += (size_t)n_lp;
    r->n_chunks++;
    return 0;
}

const char *cache_rec_text(const cache_rec_t *r, size_t *len)
{
    *len = r->text.n;
    return r->text.p ? r->text.p : "";
}

int cache_rec_n_chunks(const cache_rec_t *r)
{
    return (int)r->n_chunks;
}

static void set_meta(cache_entry_t *e, const cache_meta_t *m)
{
    e->key = m->key;
    e->ns = m->ns;
    e->created = m->created;
    e->stored_ms = m->stored_ms;
    e->ttl_ms = m->ttl_ms;
    e->finish = m->finish;
    e->prompt_tokens = m->prompt_tokens;
    e->completion_tokens = m->completion_tokens;
    e->cached_tokens = m->cached_tokens;
}

cache_entry_t *cache_rec_build(const cache_rec_t *r, const cache_meta_t *meta)
{
    if (r->failed) return NULL;
    size_t model_len = meta->model ? strnlen(meta->model, MAX_MODEL_LEN) : 0;
    layout_t L;
    if (entry_alloc(&L, r->n_chunks, r->n_lp, r->n_tops, model_len, r->text.n, r->str.n))
        return NULL;
    cache_entry_t *e = L.e;
    set_meta(e, meta);
    e->has_logprobs = r->want_lp;
    e->n_choices = r->n_choices > 1 ? r->n_choices : 1;
    memcpy(e->choice_finish, r->choice_finish, sizeof e->choice_finish);
    if (r->n_choices <= 1) e->choice_finish[0] = (unsigned char)meta->finish;
    /* a complete reply needs every choice complete */
    if (meta->finish != CACHE_FINISH_NONE && r->n_choices > 1) {
        int ok = !r->bad_end;
        for (int i = 0; i < r->n_choices; i++)
            ok &= r->choice_finish[i] == CACHE_FINISH_STOP ||
                  r->choice_finish[i] == CACHE_FINISH_LENGTH;
        if (!ok) e->finish = CACHE_FINISH_NONE; /* not storable (encode refuses it too) */
    }
    if (model_len) memcpy(L.model, meta->model, model_len);
    if (r->text.n) memcpy(L.text, r->text.p, r->text.n);
    if (r->str.n) memcpy(L.str, r->str.p, r->str.n);
    if (r->n_chunks) memcpy(L.chunks, r->chunks, r->n_chunks * sizeof *L.chunks);
    for (size_t k = 0; k < r->n_tops; k++)
        L.tops[k] = (lp_alt_t){L.str + r->tops[k].off, r->tops[k].len, r->tops[k].logprob};
    for (size_t i = 0; i < r->n_lp; i++) {
        const rec_lp_t *it = &r->lp[i];
        L.lp[i] = (lp_tok_t){L.str + it->off, it->len, it->logprob, it->n_top, L.tops + it->top0};
    }
    return e;
}

/* ---- encoding ---- */

static int put_u32(buf_t *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return buf_append(o, b, 4);
}

static int put_u64(buf_t *o, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return buf_append(o, b, 8);
}

static int put_f64(buf_t *o, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    return put_u64(o, v);
}

static int put_blob(buf_t *o, const char *p, size_t n)
{
    if (n > UINT32_MAX) return BAR_ERR_RANGE;
    return put_u32(o, (uint32_t)n) || buf_append(o, p, n) ? BAR_ERR_NOMEM : 0;
}

int cache_entry_encode(const cache_entry_t *e, buf_t *out)
{
    if (e->finish != CACHE_FINISH_STOP && e->finish != CACHE_FINISH_LENGTH) return BAR_ERR_INVALID;
    if (e->n_choices < 1 || e->n_choices > CACHE_CHOICES_MAX) return BAR_ERR_INVALID;
    size_t start = out->n;
    uint8_t head[8] = {
        'B', 'C', 'E', ENTRY_VERSION, (uint8_t)(e->has_logprobs ? 1 : 0), (uint8_t)e->finish, 0, 0};
    int rc = buf_append(out, head, 8) || buf_append(out, e->key.b, 16) || put_u64(out, e->ns) ||
             put_u64(out, (uint64_t)e->created) || put_u64(out, (uint64_t)e->stored_ms) ||
             put_u64(out, e->ttl_ms) || put_u32(out, (uint32_t)e->prompt_tokens) ||
             put_u32(out, (uint32_t)e->completion_tokens) ||
             put_u32(out, (uint32_t)e->cached_tokens) || put_blob(out, e->model, e->model_len) ||
             put_blob(out, e->text, e->text_len) || put_u32(out, (uint32_t)e->n_choices);
    for (int i = 0; i < e->n_choices && !rc; i++)
        rc = buf_append(out, &e->choice_finish[i], 1);
    rc = rc || put_u32(out, (uint32_t)e->n_chunks);
    for (int i = 0; i < e->n_chunks && !rc; i++)
        rc = put_u32(out, (uint32_t)e->chunks[i].len) ||
             put_u32(out, (uint32_t)e->chunks[i].n_lp) ||
             put_u32(out, (uint32_t)e->chunks[i].index);
    rc = rc || put_u32(out, (uint32_t)e->n_lp);
    for (int i = 0; i < e->n_lp && !rc; i++) {
        const lp_tok_t *l = &e->lp[i];
        rc = put_blob(out, l->token, l->token_len) || put_f64(out, l->logprob) ||
             put_u32(out, (uint32_t)l->n_top);
        for (int k = 0; k < l->n_top && !rc; k++)
            rc = put_blob(out, l->top[k].token, l->top[k].len) || put_f64(out, l->top[k].logprob);
    }
    if (!rc) rc = put_u64(out, XXH3_64bits(out->p + start, out->n - start));
    if (rc) {
        out->n = start;
        if (out->p) out->p[start] = '\0';
        return BAR_ERR_NOMEM;
    }
    return 0;
}

/* bounds-checked reader */
typedef struct {
    const uint8_t *p;
    size_t n, off;
    int bad;
} rd_t;

static int rd_need(rd_t *r, size_t k)
{
    if (r->bad || k > r->n - r->off) {
        r->bad = 1;
        return 0;
    }
    return 1;
}

static uint32_t rd_u32(rd_t *r)
{
    if (!rd_need(r, 4)) return 0;
    const uint8_t *b = r->p + r->off;
    r->off += 4;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t rd_u64(rd_t *r)
{
    if (!rd_need(r, 8)) return 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | r->p[r->off + (size_t)i];
    r->off += 8;
    return v;
}

static double rd_f64(rd_t *r)
{
    uint64_t v = rd_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* a u32 length then that many bytes; returns the bytes (NULL when bad) */
static const char *rd_blob(rd_t *r, size_t *len)
{
    uint32_t n = rd_u32(r);
    if (!rd_need(r, n)) return NULL;
    const char *s = (const char *)r->p + r->off;
    r->off += n;
    *len = n;
    return s;
}

#define FAIL(...) return bar_fail(msg, BAR_ERR_FORMAT, __VA_ARGS__)

int cache_entry_decode(const void *data, size_t n, cache_entry_t **out, bar_msg_t *msg)
{
    *out = NULL;
    const uint8_t *p = data;
    if (!p || n < 8 + 16 + 8 * 4 + 12 + 5 * 4 + 1 + 8)
        FAIL("cache entry: %zu bytes is too short", n);
    if (memcmp(p, "BCE", 3)) FAIL("cache entry: bad magic");
    if (p[3] != ENTRY_VERSION) FAIL("cache entry: unsupported version %u", p[3]);
    uint64_t sum = 0;
    for (int i = 7; i >= 0; i--)
        sum = sum << 8 | p[n - 8 + (size_t)i];
    if (XXH3_64bits(p, n - 8) != sum) FAIL("cache entry: checksum mismatch");
    uint8_t flags = p[4], finish = p[5];
    if (flags & ~1u || p[6] || p[7]) FAIL("cache entry: bad flags");
    if (finish != CACHE_FINISH_STOP && finish != CACHE_FINISH_LENGTH)
        FAIL("cache entry: bad finish reason %u", finish);

    /* pass 1: validate every length and count what to allocate */
    rd_t r = {p, n - 8, 8, 0};
    cache_key_t key = {{0}};
    if (rd_need(&r, 16)) {
        memcpy(key.b, p + r.off, 16);
        r.off += 16;
    }
    uint64_t ns = rd_u64(&r);
    int64_t created = (int64_t)rd_u64(&r), stored = (int64_t)rd_u64(&r);
    uint64_t ttl = rd_u64(&r);
    uint32_t toks[3] = {rd_u32(&r), rd_u32(&r), rd_u32(&r)};
    size_t model_len = 0, text_len = 0;
    const char *model = rd_blob(&r, &model_len);
    const char *text = rd_blob(&r, &text_len);
    uint32_t n_choices = rd_u32(&r);
    unsigned char cfin[CACHE_CHOICES_MAX] = {0};
    if (n_choices < 1 || n_choices > CACHE_CHOICES_MAX)
        FAIL("cache entry: %u choices (1..%d)", n_choices, CACHE_CHOICES_MAX);
    for (uint32_t i = 0; i < n_choices; i++) {
        if (!rd_need(&r, 1)) break;
        cfin[i] = p[r.off++];
        if (cfin[i] != CACHE_FINISH_STOP && cfin[i] != CACHE_FINISH_LENGTH)
            FAIL("cache entry: bad finish reason %u of choice %u", cfin[i], i);
    }
    uint32_t n_chunks = rd_u32(&r);
    if (r.bad) FAIL("cache entry: truncated header");
    if (model_len > MAX_MODEL_LEN) FAIL("cache entry: model name of %zu bytes", model_len);
    for (int i = 0; i < 3; i++)
        if (toks[i] > INT_MAX) FAIL("cache entry: token count out of range");
    if (n_chunks > (r.n - r.off) / 12) FAIL("cache entry: %u chunks do not fit", n_chunks);
    size_t chunks_off = r.off, sum_len = 0;
    uint64_t sum_lp = 0;
    for (uint32_t i = 0; i < n_chunks; i++) {
        sum_len += rd_u32(&r);
        sum_lp += rd_u32(&r);
        if (rd_u32(&r) >= n_choices) FAIL("cache entry: chunk %u names a choice out of range", i);
        if (sum_len > text_len) FAIL("cache entry: chunk lengths exceed the text");
    }
    if (sum_len != text_len)
        FAIL("cache entry: chunk lengths sum to %zu, text is %zu", sum_len, text_len);
    uint32_t n_lp = rd_u32(&r);
    if (r.bad) FAIL("cache entry: truncated chunk table");
    if (sum_lp != n_lp)
        FAIL("cache entry: chunks claim %llu logprob items, %u present", (unsigned long long)sum_lp,
             n_lp);
    if (n_lp && !(flags & 1)) FAIL("cache entry: logprob items without the logprobs flag");
    if (n_lp > (r.n - r.off) / 16) FAIL("cache entry: %u logprob items do not fit", n_lp);
    size_t lp_off = r.off, n_tops = 0, str_len = 0;
    for (uint32_t i = 0; i < n_lp; i++) {
        size_t tl;
        rd_blob(&r, &tl);
        rd_f64(&r);
        uint32_t nt = rd_u32(&r);
        if (r.bad) FAIL("cache entry: truncated logprob item %u", i);
        if (nt > CACHE_LP_MAX_TOP) FAIL("cache entry: %u alternatives in logprob item %u", nt, i);
        str_len += tl + 1;
        for (uint32_t k = 0; k < nt; k++) {
            rd_blob(&r, &tl);
            rd_f64(&r);
            str_len += tl + 1;
        }
        if (r.bad) FAIL("cache entry: truncated logprob item %u", i);
        n_tops += nt;
    }
    if (r.off != r.n) FAIL("cache entry: %zu trailing bytes", r.n - r.off);

    /* pass 2: fill */
    layout_t L;
    if (entry_alloc(&L, n_chunks, n_lp, n_tops, model_len, text_len, str_len))
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    cache_entry_t *e = L.e;
    e->key = key;
    e->ns = ns;
    e->created = created;
    e->stored_ms = stored;
    e->ttl_ms = ttl;
    e->finish = (cache_finish_t)finish;
    e->prompt_tokens = (int)toks[0];
    e->completion_tokens = (int)toks[1];
    e->cached_tokens = (int)toks[2];
    e->has_logprobs = flags & 1;
    e->n_choices = (int)n_choices;
    memcpy(e->choice_finish, cfin, sizeof cfin);
    memcpy(L.model, model, model_len);
    memcpy(L.text, text, text_len);
    r.off = chunks_off;
    size_t off = 0;
    int lp0 = 0;
    for (uint32_t i = 0; i < n_chunks; i++) {
        size_t len = rd_u32(&r);
        int nl = (int)rd_u32(&r);
        int index = (int)rd_u32(&r);
        L.chunks[i] = (cache_chunk_t){off, len, lp0, nl, index};
        off += len;
        lp0 += nl;
    }
    r.off = lp_off;
    char *s = L.str;
    size_t ti = 0;
    for (uint32_t i = 0; i < n_lp; i++) {
        size_t tl;
        const char *t = rd_blob(&r, &tl);
        memcpy(s, t, tl);
        L.lp[i].token = s;
        L.lp[i].token_len = tl;
        s += tl + 1;
        L.lp[i].logprob = rd_f64(&r);
        L.lp[i].n_top = (int)rd_u32(&r);
        L.lp[i].top = L.tops + ti;
        for (int k = 0; k < L.lp[i].n_top; k++, ti++) {
            t = rd_blob(&r, &tl);
            memcpy(s, t, tl);
            L.tops[ti] = (lp_alt_t){s, tl, rd_f64(&r)};
            s += tl + 1;
        }
    }
    *out = e;
    return 0;
}
