/* safetensors.c — the .safetensors reader behind safetensors.h.
 *
 * The 8-byte length is checked against the file and SAFET_MAX_HEADER_BYTES
 * before the JSON is touched; cJSON parses exactly those N bytes (no NUL is
 * needed, trailing padding must be whitespace). Each entry is then checked
 * field by field; integers must be exact (non-negative, below 2^53, no
 * fraction) and every product and sum is overflow-checked. Error messages give
 * the file offset of the offending header entry (where its quoted name is
 * found) and what was expected.
 *
 * Not for: dtype conversion or model interpretation. */
#include "engine/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mfile.h"

struct safet {
    mfile_t mf; /* zeroed when parsing a caller's buffer */
    const uint8_t *base;
    size_t size;
    size_t header_n;
    size_t n_tensors;
    safet_tensor_t *tensors;          /* data order */
    const safet_tensor_t **t_by_name; /* name order */
    size_t n_meta;
    safet_meta_t *meta; /* key order */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[SAFET_DTYPE_COUNT] = {
    [SAFET_BOOL] = {"BOOL", 1},       [SAFET_U8] = {"U8", 1},           [SAFET_I8] = {"I8", 1},
    [SAFET_F8_E5M2] = {"F8_E5M2", 1}, [SAFET_F8_E4M3] = {"F8_E4M3", 1}, [SAFET_U16] = {"U16", 2},
    [SAFET_I16] = {"I16", 2},         [SAFET_F16] = {"F16", 2},         [SAFET_BF16] = {"BF16", 2},
    [SAFET_U32] = {"U32", 4},         [SAFET_I32] = {"I32", 4},         [SAFET_F32] = {"F32", 4},
    [SAFET_U64] = {"U64", 8},         [SAFET_I64] = {"I64", 8},         [SAFET_F64] = {"F64", 8},
};

const char *safet_dtype_name(uint32_t dtype)
{
    return dtype < SAFET_DTYPE_COUNT ? dtypes[dtype].name : NULL;
}

size_t safet_dtype_size(uint32_t dtype)
{
    return dtype < SAFET_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

static int dtype_from_name(const char *s, safet_dtype_t *out)
{
    for (uint32_t i = 0; i < SAFET_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (safet_dtype_t)i;
            return 0;
        }
    return -1;
}

/* Render up to 48 bytes of an untrusted name for a message (see gguf.c). */
static const char *safe_name(char buf[256], const char *p)
{
    size_t o = 0, i = 0;
    for (; p[i] && i < 48; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, 5, "\\x%02x", c);
    }
    if (p[i]) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* Parsing context: the header text and where it sits in the file. */
typedef struct {
    const char *h; /* header bytes (not NUL-terminated) */
    size_t n;
    bar_msg_t *msg;
} hdr_t;

/* File offset of the entry for `key`: the first `"key"` in the header that is
 * followed by a colon, or the header start (8) when escapes hide it. */
static size_t key_offset(const hdr_t *h, const char *key)
{
    size_t kl = strlen(key);
    if (kl + 2 > h->n) return 8;
    for (size_t i = 0; i + kl + 2 <= h->n; i++) {
        if (h->h[i] != '"' || memcmp(h->h + i + 1, key, kl) != 0 || h->h[i + 1 + kl] != '"')
            continue;
        size_t j = i + kl + 2;
        while (j < h->n &&
               (h->h[j] == ' ' || h->h[j] == '\t' || h->h[j] == '\n' || h->h[j] == '\r'))
            j++;
        if (j < h->n && h->h[j] == ':') return 8 + i;
    }
    return 8;
}

/* An exact non-negative integer below 2^53 from a JSON number. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static int parse_meta(safet_t *s, const hdr_t *h, const cJSON *obj)
{
    size_t at = key_offset(h, "__metadata__");
    if (!cJSON_IsObject(obj))
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: __metadata__ is not an object, expected an object of "
                        "string values",
                        at);
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n == 0) return 0;
    s->meta = calloc(n, sizeof *s->meta);
    if (!s->meta)
        return bar_fail(h->msg, BAR_ERR_NOMEM, "out of memory for %zu metadata entries", n);
    for (const cJSON *c = obj->child; c; c = c->next) {
        char nb[256];
        if (!cJSON_IsString(c) || !c->valuestring)
            return bar_fail(h->msg, BAR_ERR_FORMAT,
                            "offset %zu: __metadata__ value of '%s' is not a string, expected "
                            "a string",
                            at, safe_name(nb, c->string));
        safet_meta_t *m = &s->meta[s->n_meta];
        m->key = dup_str(c->string);
        m->value = dup_str(c->valuestring);
        s->n_meta++;
        if (!m->key || !m->value)
            return bar_fail(h->msg, BAR_ERR_NOMEM, "out of memory for metadata");
    }
    return 0;
}

/* a * b into *out, failing on uint64 overflow. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

static int parse_tensor(safet_tensor_t *t, const hdr_t *h, const cJSON *e, size_t data_size)
{
    char nb[256];
    const char *nm = safe_name(nb, e->string);
/* the entry's file offset, searched for only when there is an error */
#define at key_offset(h, e->string)
    if (!cJSON_IsObject(e))
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' is not an object, expected "
                        "{\"dtype\", \"shape\", \"data_offsets\"}",
                        at, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' has no string \"dtype\", expected one", at, nm);
    if (dtype_from_name(dt->valuestring, &t->dtype) != 0) {
        char db[256];
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' dtype '%s', expected one of BOOL U8 I8 F8_E5M2 "
                        "F8_E4M3 U16 I16 F16 BF16 U32 I32 F32 U64 I64 F64",
                        at, nm, safe_name(db, dt->valuestring));
    }
    if (!cJSON_IsArray(sh))
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' has no \"shape\" array, expected one", at, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > SAFET_MAX_DIMS)
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' has %d dimensions, expected at most %d", at, nm,
                        nd, SAFET_MAX_DIMS);
    t->n_dims = (uint32_t)nd;
    t->n_elems = 1;
    uint32_t d = 0;
    for (const cJSON *c = sh->child; c; c = c->next, d++) {
        uint64_t v;
        if (json_uint(c, &v) != 0)
            return bar_fail(h->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' shape[%u] is not an integer in [0, 2^53), "
                            "expected one",
                            at, nm, d);
        t->shape[d] = (int64_t)v;
        if (mul_u64(t->n_elems, v, &t->n_elems) != 0)
            return bar_fail(h->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' element count overflows 64 bits at "
                            "shape[%u], expected a product that fits",
                            at, nm, d);
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        json_uint(off->child, &t->begin) != 0 || json_uint(off->child->next, &t->end) != 0)
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' \"data_offsets\", expected [begin, end] with "
                        "integers in [0, 2^53)",
                        at, nm);
    if (t->begin > t->end || t->end > data_size)
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' data_offsets [%llu, %llu], expected begin <= "
                        "end <= %zu (the data section size)",
                        at, nm, (unsigned long long)t->begin, (unsigned long long)t->end,
                        data_size);
    uint64_t want;
    if (mul_u64(t->n_elems, dtypes[t->dtype].size, &want) != 0 || want != t->end - t->begin)
        return bar_fail(h->msg, BAR_ERR_FORMAT,
                        "offset %zu: tensor '%s' data_offsets [%llu, %llu] hold %llu bytes, "
                        "expected %llu elements x %zu bytes (%s)",
                        at, nm, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)(t->end - t->begin), (unsigned long long)t->n_elems,
                        dtypes[t->dtype].size, dtypes[t->dtype].name);
#undef at
    t->n_bytes = want;
    t->name = dup_str(e->string);
    if (!t->name) return bar_fail(h->msg, BAR_ERR_NOMEM, "out of memory for tensor names");
    return 0;
}

static int tensor_data_cmp(const void *a, const void *b)
{
    const safet_tensor_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int tensor_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const safet_tensor_t *const *)a)->name,
                  (*(const safet_tensor_t *const *)b)->name);
}

static int meta_cmp(const void *a, const void *b)
{
    return strcmp(((const safet_meta_t *)a)->key, ((const safet_meta_t *)b)->key);
}

static int parse_root(safet_t *s, const hdr_t *h, const cJSON *root)
{
    size_t data_size = s->size - 8 - s->header_n;
    size_t n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (meta)
                return bar_fail(h->msg, BAR_ERR_FORMAT,
                                "offset %zu: second __metadata__, expected at most one",
                                key_offset(h, "__metadata__"));
            meta = c;
        } else {
            n++;
        }
    }
    if (meta) {
        int rc = parse_meta(s, h, meta);
        if (rc) return rc;
        qsort(s->meta, s->n_meta, sizeof *s->meta, meta_cmp);
        for (size_t i = 1; i < s->n_meta; i++)
            if (strcmp(s->meta[i - 1].key, s->meta[i].key) == 0) {
                char nb[256];
                return bar_fail(h->msg, BAR_ERR_FORMAT,
                                "offset %zu: duplicate __metadata__ key '%s', expected each once",
                                key_offset(h, "__metadata__"), safe_name(nb, s->meta[i].key));
            }
    }
    if (n == 0) return 0;
    s->tensors = calloc(n, sizeof *s->tensors);
    s->t_by_name = malloc(n * sizeof *s->t_by_name);
    if (!s->tensors || !s->t_by_name)
        return bar_fail(h->msg, BAR_ERR_NOMEM, "out of memory for %zu tensors", n);
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta) continue;
        int rc = parse_tensor(&s->tensors[s->n_tensors], h, c, data_size);
        if (s->tensors[s->n_tensors].name) s->n_tensors++; /* so safet_close frees the name */
        if (rc) return rc;
    }
    /* data order, an index by name, then no duplicates and no shared bytes */
    qsort(s->tensors, n, sizeof *s->tensors, tensor_data_cmp);
    for (size_t i = 0; i < n; i++)
        s->t_by_name[i] = &s->tensors[i];
    qsort(s->t_by_name, n, sizeof *s->t_by_name, tensor_name_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(s->t_by_name[i - 1]->name, s->t_by_name[i]->name) == 0) {
            char nb[256];
            return bar_fail(h->msg, BAR_ERR_FORMAT,
                            "offset %zu: duplicate tensor name '%s', expected each name once",
                            key_offset(h, s->t_by_name[i]->name),
                            safe_name(nb, s->t_by_name[i]->name));
        }
    for (size_t i = 1; i < n; i++) {
        const safet_tensor_t *a = &s->tensors[i - 1], *b = &s->tensors[i];
        if (b->begin < a->end) {
            char na[256], nb[256];
            return bar_fail(h->msg, BAR_ERR_FORMAT,
                            "offset %zu: tensor '%s' data [%llu, %llu) overlaps '%s' [%llu, "
                            "%llu), expected disjoint ranges",
                            key_offset(h, b->name), safe_name(nb, b->name),
                            (unsigned long long)b->begin, (unsigned long long)b->end,
                            safe_name(na, a->name), (unsigned long long)a->begin,
                            (unsigned long long)a->end);
        }
    }
    for (size_t i = 0; i < n; i++)
        s->tensors[i].data = s->base + 8 + s->header_n + s->tensors[i].begin;
    return 0;
}

int safet_parse(safet_t **out, const uint8_t *data, size_t size, bar_msg_t *msg)
{
    *out = NULL;
    if (!data) size = 0;
    if (size < 8)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "offset 0: expected the u64 header length (8 bytes) but the file has %zu",
                        size);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = (hn << 8) | data[i];
    if (hn > SAFET_MAX_HEADER_BYTES)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "offset 0: header length %llu, expected at most %u bytes",
                        (unsigned long long)hn, SAFET_MAX_HEADER_BYTES);
    if (hn > size - 8)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "offset 0: header length %llu exceeds the %zu bytes after it",
                        (unsigned long long)hn, size - 8);
    if (hn < 2 || data[8] != '{')
        return bar_fail(msg, BAR_ERR_FORMAT, "offset 8: expected a JSON object ('{') header");
    hdr_t h = {(const char *)data + 8, (size_t)hn, msg};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h.h, h.n, &end, 0);
    if (!root) {
        size_t pos = end && end >= h.h && end <= h.h + h.n ? (size_t)(end - h.h) : 0;
        return bar_fail(msg, BAR_ERR_FORMAT, "offset %zu: header is not valid JSON here", 8 + pos);
    }
    size_t pos = end && end >= h.h && end <= h.h + h.n ? (size_t)(end - h.h) : h.n;
    for (; pos < h.n; pos++) {
        char c = h.h[pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            cJSON_Delete(root);
            return bar_fail(msg, BAR_ERR_FORMAT,
                            "offset %zu: byte 0x%02x after the JSON header object, expected "
                            "whitespace padding",
                            8 + pos, (unsigned char)c);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bar_fail(msg, BAR_ERR_FORMAT, "offset 8: expected a JSON object header");
    }
    safet_t *s = calloc(1, sizeof *s);
    if (!s) {
        cJSON_Delete(root);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    s->base = data;
    s->size = size;
    s->header_n = (size_t)hn;
    int rc = parse_root(s, &h, root);
    cJSON_Delete(root);
    if (rc) {
        safet_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int safet_open(safet_t **out, const char *path, bar_msg_t *msg)
{
    *out = NULL;
    mfile_t mf;
    int rc = mfile_open(&mf, path, msg);
    if (rc) return rc;
    safet_t *s;
    bar_msg_t inner = {{0}};
    rc = safet_parse(&s, mf.data, mf.size, &inner);
    if (rc) {
        mfile_close(&mf);
        return bar_fail(msg, rc, "%s: %s", path, inner.text);
    }
    s->mf = mf;
    *out = s;
    return 0;
}

void safet_close(safet_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_tensors; i++)
        free((char *)s->tensors[i].name);
    for (size_t i = 0; i < s->n_meta; i++) {
        free((char *)s->meta[i].key);
        free((char *)s->meta[i].value);
    }
    free(s->tensors);
    free(s->t_by_name);
    free(s->meta);
    mfile_close(&s->mf);
    free(s);
}

size_t safet_header_size(const safet_t *s)
{
    return s->header_n;
}

size_t safet_data_offset(const safet_t *s)
{
    return 8 + s->header_n;
}

size_t safet_file_size(const safet_t *s)
{
    return s->size;
}

size_t safet_tensor_count(const safet_t *s)
{
    return s->n_tensors;
}

const safet_tensor_t *safet_tensor_at(const safet_t *s, size_t i)
{
    return i < s->n_tensors ? &s->tensors[i] : NULL;
}

const safet_tensor_t *safet_tensor_find(const safet_t *s, const char *name)
{
    size_t lo = 0, hi = s->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->t_by_name[mid]->name, name);
        if (c == 0) return s->t_by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t safet_meta_count(const safet_t *s)
{
    return s->n_meta;
}

const safet_meta_t *safet_meta_at(const safet_t *s, size_t i)
{
    return i < s->n_meta ? &s->meta[i] : NULL;
}

const char *safet_meta_find(const safet_t *s, const char *key)
{
    size_t lo = 0, hi = s->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->meta[mid].key, key);
        if (c == 0) return s->meta[mid].value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
