/* cache_key.c — canonical request form and its XXH3-128 hash (see
 * cache_key.h for the rule). The canonical form is a tagged, length-prefixed
 * byte string, so it never needs escaping and no two different JSON values
 * share one. Not for: storage or the cacheability policy beyond the one
 * helper. */
#include "cache/cache_key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/mfile.h"

/* the key format and the barista version: another version may render or
 * stop differently, so it never shares entries (Redis, snapshots) */
#define KEY_TAG "barista-cache-key/v1 barista/" BARISTA_VERSION
#define MAX_DEPTH 512

static int put_u64(buf_t *o, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return buf_append(o, b, 8);
}

/* tag byte, 64-bit length, bytes */
static int put_bytes(buf_t *o, char tag, const char *p, size_t n)
{
    if (buf_append(o, &tag, 1) || put_u64(o, n)) return BAR_ERR_NOMEM;
    return buf_append(o, p ? p : "", n);
}

static int put_str(buf_t *o, char tag, const char *s)
{
    return put_bytes(o, tag, s, s ? strlen(s) : 0);
}

/* k is one of the caller's NULL-terminated skip names */
static int is_skipped(const char *const *skip, const char *k)
{
    for (; skip && *skip; skip++)
        if (!strcmp(k, *skip)) return 1;
    return 0;
}

typedef struct {
    const cJSON *item;
    const char *key;
    size_t key_len;
} member_t;

/* stable merge sort of object members by key bytes */
static int member_cmp(const member_t *a, const member_t *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    if (c) return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static void msort(member_t *v, member_t *tmp, size_t n)
{
    if (n < 2) return;
    size_t h = n / 2;
    msort(v, tmp, h);
    msort(v + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = member_cmp(&v[j], &v[i]) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int canon(buf_t *o, const cJSON *v, int depth, const char *const *top, bar_msg_t *msg)
{
    if (depth > MAX_DEPTH)
        return bar_fail(msg, BAR_ERR_INVALID, "request nests deeper than %d levels", MAX_DEPTH);
    char c;
    switch (v->type & 0xff) {
    case cJSON_NULL:
        c = 'n';
        return buf_append(o, &c, 1);
    case cJSON_False:
        c = 'f';
        return buf_append(o, &c, 1);
    case cJSON_True:
        c = 't';
        return buf_append(o, &c, 1);
    case cJSON_Number: {
        double d = v->valuedouble;
        if (d == 0) d = 0; /* -0 → 0 */
        char tmp[40];
        int k = snprintf(tmp, sizeof tmp, "%.17g", d);
        return put_bytes(o, 'd', tmp, (size_t)k);
    }
    case cJSON_String:
    case cJSON_Raw:
        return put_str(o, 's', v->valuestring);
    case cJSON_Array: {
        size_t n = 0;
        for (const cJSON *e = v->child; e; e = e->next)
            n++;
        c = 'a';
        if (buf_append(o, &c, 1) || put_u64(o, n)) return BAR_ERR_NOMEM;
        for (const cJSON *e = v->child; e; e = e->next) {
            int rc = canon(o, e, depth + 1, NULL, msg);
            if (rc) return rc;
        }
        return 0;
    }
    case cJSON_Object: {
        size_t n = 0;
        for (const cJSON *e = v->child; e; e = e->next)
            if (!(top && e->string && is_skipped(top, e->string))) n++;
        member_t *m = n ? malloc(2 * n * sizeof *m) : NULL;
        if (n && !m) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        size_t i = 0;
        for (const cJSON *e = v->child; e; e = e->next) {
            if (top && e->string && is_skipped(top, e->string)) continue;
            const char *k = e->string ? e->string : "";
            m[i++] = (member_t){e, k, strlen(k)};
        }
        msort(m, m + n, n);
        c = 'o';
        int rc = buf_append(o, &c, 1) || put_u64(o, n) ? BAR_ERR_NOMEM : 0;
        for (i = 0; i < n && !rc; i++) {
            rc = put_bytes(o, 'k', m[i].key, m[i].key_len);
            if (!rc) rc = canon(o, m[i].item, depth + 1, NULL, msg);
        }
        free(m);
        return rc;
    }
    default:
        return bar_fail(msg, BAR_ERR_INVALID, "unexpected JSON value type %d", v->type & 0xff);
    }
}

int cache_key_canonical(buf_t *out, const cJSON *body, const cache_key_ctx_t *ctx, bar_msg_t *msg)
{
    if (!body || !cJSON_IsObject(body))
        return bar_fail(msg, BAR_ERR_INVALID, "request body is not a JSON object");
    int rc = put_str(out, 'V', KEY_TAG);
    rc = rc ? rc : put_str(out, 'E', ctx->endpoint);
    rc = rc ? rc : put_str(out, 'M', ctx->model_id);
    rc = rc ? rc : put_str(out, 'D', ctx->model_digest);
    rc = rc ? rc : put_bytes(out, 'N', ctx->ns, ctx->ns ? ctx->ns_len : 0);
    if (rc) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    rc = rc ? rc : put_bytes(out, 'X', ctx->extra, ctx->extra ? ctx->extra_len : 0);
    if (rc) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    static const char *const none[] = {NULL};
    rc = canon(out, body, 0, ctx->skip ? ctx->skip : none, msg);
    if (rc == BAR_ERR_NOMEM) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    return rc;
}

int cache_key_make(cache_key_t *out, const cJSON *body, const cache_key_ctx_t *ctx, bar_msg_t *msg)
{
    buf_t b = {0};
    int rc = cache_key_canonical(&b, body, ctx, msg);
    if (rc == 0) {
        XXH128_hash_t h = XXH3_128bits(b.p, b.n);
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, h);
        memcpy(out->b, c.digest, 16);
    }
    buf_free(&b);
    return rc;
}

void cache_key_hex(const cache_key_t *k, char out[CACHE_KEY_HEX_LEN + 1])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[k->b[i] >> 4];
        out[2 * i + 1] = hx[k->b[i] & 15];
    }
    out[CACHE_KEY_HEX_LEN] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cache_key_from_hex(cache_key_t *k, const char *s, size_t n)
{
    if (!s || n != CACHE_KEY_HEX_LEN) return BAR_ERR_INVALID;
    cache_key_t t;
    for (int i = 0; i < 16; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return BAR_ERR_INVALID;
        t.b[i] = (uint8_t)(hi << 4 | lo);
    }
    *k = t;
    return 0;
}

int cache_key_equal(const cache_key_t *a, const cache_key_t *b)
{
    return memcmp(a->b, b->b, 16) == 0;
}

uint64_t cache_ns_hash(const char *ns, size_t n)
{
    return XXH3_64bits_withSeed(ns ? ns : "", ns ? n : 0, 0x6261726973746121ull /* "barista!" */);
}

int cache_key_file_digest(const char *path, char out[CACHE_KEY_HEX_LEN + 1], bar_msg_t *msg)
{
    mfile_t f;
    int rc = mfile_open(&f, path, msg);
    if (rc) return rc;
    XXH128_hash_t h = XXH3_128bits(f.data ? (const void *)f.data : "", f.size);
    mfile_close(&f);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    cache_key_t k;
    memcpy(k.b, c.digest, 16);
    cache_key_hex(&k, out);
    return 0;
}
