/* reply.c — reply bytes for events and entries (see reply.h). */
#include "api/reply.h"

#include "api/tools.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

oai_finish_t reply_finish(bk_finish_t f)
{
    switch (f) {
    case BK_FINISH_STOP:
        return OAI_FINISH_STOP;
    case BK_FINISH_LENGTH:
        return OAI_FINISH_LENGTH;
    case BK_FINISH_TOOL_CALLS:
        return OAI_FINISH_TOOL_CALLS;
    case BK_FINISH_TIMEOUT:
    case BK_FINISH_CANCELLED:
        return OAI_FINISH_TIMEOUT;
    default:
        return OAI_FINISH_NONE;
    }
}

/* ---- pending logprobs ---- */

/* Texts live in one growing buffer, so entries keep offsets and get their
 * pointers when read (lp_list_items). */
struct lp_list {
    buf_t text;
    lp_tok_t *items;
    size_t *off; /* per item: token offset in text */
    int *top0;   /* per item: first alternative in tops */
    int n, cap;
    lp_alt_t *tops;
    size_t *top_off;
    int n_tops, cap_tops;
};

lp_list_t *lp_list_create(void)
{
    return calloc(1, sizeof(lp_list_t));
}

void lp_list_destroy(lp_list_t *l)
{
    if (!l) return;
    buf_free(&l->text);
    free(l->items);
    free(l->off);
    free(l->top0);
    free(l->tops);
    free(l->top_off);
    free(l);
}

void lp_list_clear(lp_list_t *l)
{
    buf_clear(&l->text);
    l->n = 0;
    l->n_tops = 0;
}

int lp_list_n(const lp_list_t *l)
{
    return l ? l->n : 0;
}

size_t lp_list_bytes(const lp_list_t *l)
{
    if (!l) return 0;
    return l->text.n + (size_t)l->n * (sizeof *l->items + sizeof *l->off + sizeof *l->top0) +
           (size_t)l->n_tops * (sizeof *l->tops + sizeof *l->top_off);
}

int lp_list_push(lp_list_t *l, const lp_tok_t *x)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        lp_tok_t *a = realloc(l->items, (size_t)cap * sizeof *a);
        if (a) l->items = a;
        size_t *b = realloc(l->off, (size_t)cap * sizeof *b);
        if (b) l->off = b;
        int *c = realloc(l->top0, (size_t)cap * sizeof *c);
        if (c) l->top0 = c;
        if (!a || !b || !c) return BAR_ERR_NOMEM;
        l->cap = cap;
    }
    if (l->n_tops + x->n_top > l->cap_tops) {
        int cap = l->cap_tops ? l->cap_tops : 16;
        while (cap < l->n_tops + x->n_top)
            cap *= 2;
        lp_alt_t *a = realloc(l->tops, (size_t)cap * sizeof *a);
        if (a) l->tops = a;
        size_t *b = realloc(l->top_off, (size_t)cap * sizeof *b);
        if (b) l->top_off = b;
        if (!a || !b) return BAR_ERR_NOMEM;
        l->cap_tops = cap;
    }
    int i = l->n++;
    l->items[i] = (lp_tok_t){NULL, x->token_len, x->logprob, x->n_top, NULL};
    l->off[i] = l->text.n;
    l->top0[i] = l->n_tops;
    if (buf_append(&l->text, x->token, x->token_len)) return BAR_ERR_NOMEM;
    for (int k = 0; k < x->n_top; k++) {
        int t = l->n_tops++;
        l->tops[t] = (lp_alt_t){NULL, x->top[k].len, x->top[k].logprob};
        l->top_off[t] = l->text.n;
        if (buf_append(&l->text, x->top[k].token, x->top[k].len)) return BAR_ERR_NOMEM;
    }
    return 0;
}

const lp_tok_t *lp_list_items(lp_list_t *l)
{
    if (!l || !l->n) return NULL;
    const char *base = l->text.p ? l->text.p : "";
    for (int t = 0; t < l->n_tops; t++)
        l->tops[t].token = base + l->top_off[t];
    for (int i = 0; i < l->n; i++) {
        l->items[i].token = base + l->off[i];
        l->items[i].top = l->tops + l->top0[i];
    }
    return l->items;
}

/* ---- bytes ---- */

int reply_json(buf_t *out, const oai_resp_t *r, const char *text, size_t len, oai_finish_t fin,
               const oai_usage_t *u, const lp_tok_t *lp, int n_lp, int want_lp)
{
    return oai_format_response(out, r, text ? text : "", len, fin, u, lp, n_lp, want_lp);
}

int reply_sse_open(buf_t *out, const oai_resp_t *r)
{
    if (r->kind != OAI_CHAT) return 0;
    return oai_format_chunk(out, r, 1, NULL, 0, OAI_FINISH_NONE, NULL, NULL, 0, 0);
}

int reply_sse_delta(buf_t *out, const oai_resp_t *r, const char *text, size_t len,
                    const lp_tok_t *lp, int n_lp, int want_lp)
{
    if (!len && !(want_lp && n_lp)) return 0;
    return oai_format_chunk(out, r, 0, text, len, OAI_FINISH_NONE, NULL, lp, n_lp, want_lp);
}

int reply_sse_close(buf_t *out, const oai_resp_t *r, oai_finish_t fin, const oai_usage_t *u,
                    int include_usage)
{
    oai_format_chunk(out, r, 0, NULL, 0, fin, NULL, NULL, 0, 0);
    if (include_usage && u) oai_format_chunk(out, r, 0, NULL, 0, OAI_FINISH_NONE, u, NULL, 0, 0);
    return oai_format_done(out);
}

/* The timings as a member "barista_timings" of the last chunk in out. */
static void add_timings(buf_t *out, const char *timings, size_t timings_len)
{
    /* the last chunk is "data: {...}\n\n": reopen its object for one member */
    if (timings && timings_len && out->n >= 3 && !memcmp(out->p + out->n - 3, "}\n\n", 3)) {
        out->n -= 3;
        out->p[out->n] = '\0';
        buf_puts(out, ",\"barista_timings\":");
        buf_append(out, timings, timings_len);
        buf_puts(out, "}\n\n");
    }
}

int reply_sse_close_timed(buf_t *out, const oai_resp_t *r, oai_finish_t fin, const oai_usage_t *u,
                          int include_usage, const char *timings, size_t timings_len)
{
    oai_format_chunk(out, r, 0, NULL, 0, fin, NULL, NULL, 0, 0);
    if (include_usage && u) oai_format_chunk(out, r, 0, NULL, 0, OAI_FINISH_NONE, u, NULL, 0, 0);
    add_timings(out, timings, timings_len);
    return oai_format_done(out);
}

int reply_sse_error(buf_t *out, const oai_err_t *e)
{
    buf_puts(out, "data: ");
    oai_error_body(out, e);
    buf_puts(out, "\n");
    return oai_format_done(out);
}

static oai_finish_t entry_finish(const cache_entry_t *e)
{
    return e->finish == CACHE_FINISH_STOP ? OAI_FINISH_STOP : OAI_FINISH_LENGTH;
}

static oai_finish_t cache_fin(int f)
{
    return f == CACHE_FINISH_STOP ? OAI_FINISH_STOP : OAI_FINISH_LENGTH;
}

int reply_json_n(buf_t *out, const oai_resp_t *r, const oai_choice_t *ch, int n,
                 const oai_usage_t *u, int want_lp)
{
    return oai_format_response_n(out, r, ch, n, u, want_lp);
}

int reply_sse_choice_open(buf_t *out, const oai_resp_t *r, int index)
{
    oai_resp_t ri = *r;
    ri.index = index;
    return reply_sse_open(out, &ri);
}

int reply_sse_choice_delta(buf_t *out, const oai_resp_t *r, int index, const char *text, size_t len,
                           const lp_tok_t *lp, int n_lp, int want_lp)
{
    oai_resp_t ri = *r;
    ri.index = index;
    return reply_sse_delta(out, &ri, text, len, lp, n_lp, want_lp);
}

int reply_sse_choice_end(buf_t *out, const oai_resp_t *r, int index, oai_finish_t fin)
{
    oai_resp_t ri = *r;
    ri.index = index;
    return oai_format_chunk(out, &ri, 0, NULL, 0, fin, NULL, NULL, 0, 0);
}

int reply_sse_end(buf_t *out, const oai_resp_t *r, const oai_usage_t *u, int include_usage)
{
    return reply_sse_end_timed(out, r, u, include_usage, NULL, 0);
}

int reply_sse_end_timed(buf_t *out, const oai_resp_t *r, const oai_usage_t *u, int include_usage,
                        const char *timings, size_t timings_len)
{
    if (include_usage && u)
        oai_format_chunk(out, r, 0, NULL, 0, OAI_FINISH_NONE, u, NULL, 0, 0);
    else if (timings && timings_len && !out->n)
        oai_format_empty_chunk(out, r); /* every choice's end went out already */
    add_timings(out, timings, timings_len);
    return oai_format_done(out);
}

/* An n > 1 entry as one reply: each choice's chunks gathered in order. */
static int entry_json_choices(buf_t *out, const oai_resp_t *r, const cache_entry_t *e,
                              const oai_usage_t *u, int want_lp)
{
    buf_t text[CACHE_CHOICES_MAX];
    oai_choice_t ch[CACHE_CHOICES_MAX];
    int n = e->n_choices, lp_at[CACHE_CHOICES_MAX] = {0}, rc = 0;
    lp_tok_t *lp = e->n_lp ? malloc((size_t)e->n_lp * sizeof *lp) : NULL;
    if (e->n_lp && !lp) return -1;
    memset(text, 0, sizeof text);
    memset(ch, 0, sizeof ch);
    for (int i = 0; i < e->n_chunks; i++) /* lp items per choice: where each starts */
        if (e->chunks[i].index + 1 < n) lp_at[e->chunks[i].index + 1] += e->chunks[i].n_lp;
    for (int i = 1; i < n; i++)
        lp_at[i] += lp_at[i - 1];
    for (int i = 0; i < n; i++) {
        ch[i].lp = lp ? lp + lp_at[i] : NULL;
        ch[i].finish = cache_fin(e->choice_finish[i]);
    }
    for (int i = 0; i < e->n_chunks; i++) {
        const cache_chunk_t *c = &e->chunks[i];
        rc |= buf_append(&text[c->index], e->text + c->off, c->len);
        for (int k = 0; k < c->n_lp; k++)
            lp[lp_at[c->index] + ch[c->index].n_lp++] = e->lp[c->lp0 + k];
    }
    for (int i = 0; i < n; i++) {
        ch[i].text = text[i].p ? text[i].p : "";
        ch[i].len = text[i].n;
    }
    if (!rc) rc = oai_format_response_n(out, r, ch, n, u, want_lp);
    for (int i = 0; i < n; i++)
        buf_free(&text[i]);
    free(lp);
    return rc;
}

int reply_entry_json(buf_t *out, const oai_resp_t *r, const cache_entry_t *e, int want_lp)
{
    oai_usage_t u = {e->prompt_tokens, e->completion_tokens, e->cached_tokens};
    if (e->n_choices > 1) return entry_json_choices(out, r, e, &u, want_lp);
    return oai_format_response(out, r, e->text, e->text_len, entry_finish(e), &u, e->lp, e->n_lp,
                               want_lp);
}

int reply_entry_sse(buf_t *out, const oai_resp_t *r, const cache_entry_t *e, int include_usage,
                    int want_lp)
{
    oai_usage_t u = {e->prompt_tokens, e->completion_tokens, e->cached_tokens};
    if (e->n_choices > 1) { /* the choices interleaved as they were generated */
        for (int i = 0; i < e->n_choices; i++)
            reply_sse_choice_open(out, r, i);
        for (int i = 0; i < e->n_chunks; i++) {
            const cache_chunk_t *ch = &e->chunks[i];
            reply_sse_choice_delta(out, r, ch->index, e->text + ch->off, ch->len, e->lp + ch->lp0,
                                   ch->n_lp, want_lp);
        }
        for (int i = 0; i < e->n_choices; i++)
            reply_sse_choice_end(out, r, i, cache_fin(e->choice_finish[i]));
        return reply_sse_end(out, r, &u, include_usage);
    }
    reply_sse_open(out, r);
    oai_finish_t fin = tools_finish(r, e->text, e->text_len, entry_finish(e));
    if (fin == OAI_FINISH_TOOL_CALLS) {
        /* tool calls are streamed whole, as they were (gen.c holds them) */
        reply_sse_delta(out, r, e->text, e->text_len, NULL, 0, 0);
        return reply_sse_close(out, r, fin, &u, include_usage);
    }
    for (int i = 0; i < e->n_chunks; i++) {
        const cache_chunk_t *ch = &e->chunks[i];
        reply_sse_delta(out, r, e->text + ch->off, ch->len, e->lp + ch->lp0, ch->n_lp, want_lp);
    }
    return reply_sse_close(out, r, entry_finish(e), &u, include_usage);
}

/* ---- headers ---- */

/* Append NUL-terminated s at *p, not past end. */
static void hdr_put(char **p, const char *end, const char *s)
{
    size_t n = strlen(s);
    if (n > (size_t)(end - *p)) n = (size_t)(end - *p);
    memcpy(*p, s, n);
    *p += n;
}

void reply_cache_headers(const char *xcache, const char *tier, long long age, const char *key_hex,
                         char *out, size_t size)
{
    if (!size) return;
    out[0] = '\0';
    if (!xcache || size < 2) return;
    char *p = out, *end = out + size - 1;
    hdr_put(&p, end, "X-Cache: ");
    hdr_put(&p, end, xcache);
    hdr_put(&p, end, "\r\n");
    if (tier) {
        char num[24], *d = num + sizeof num;
        unsigned long long v = age < 0 ? 0 : (unsigned long long)age;
        *--d = '\0';
        do
            *--d = (char)('0' + v % 10);
        while (v /= 10);
        hdr_put(&p, end, "X-Cache-Tier: ");
        hdr_put(&p, end, tier);
        hdr_put(&p, end, "\r\nAge: ");
        hdr_put(&p, end, d);
        hdr_put(&p, end, "\r\n");
    }
    if (key_hex) {
        hdr_put(&p, end, "X-Cache-Key: ");
        hdr_put(&p, end, key_hex);
        hdr_put(&p, end, "\r\n");
    }
    *p = '\0';
}

/* ---- sending ---- */

void reply_send_error(srv_req_t *r, const oai_err_t *e)
{
    buf_t b = {0};
    oai_error_body(&b, e);
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %d\r\n",
             e->retry_after_s > 0 ? e->retry_after_s : 1);
    srv_respond(r, e->status, "application/json", b.p ? b.p : "", b.n,
                e->status == 503 || e->status == 429 ? extra : NULL);
    buf_free(&b);
}

void reply_error(srv_req_t *r, int status, const char *type, const char *code, const char *param,
                 const char *fmt, ...)
{
    oai_err_t e;
    oai_err(&e, status, type, code, param, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    reply_send_error(r, &e);
}

void reply_make_id(uint64_t *rng, char *out, size_t size, const char *prefix)
{
    uint64_t x = *rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    uint64_t y = x * 0x9E3779B97F4A7C15ull;
    snprintf(out, size, "%s%016llx%08llx", prefix, (unsigned long long)y,
             (unsigned long long)(x >> 32));
}
