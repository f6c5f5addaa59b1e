/* semantic.c — the semantic store (semantic.h): records by id in a chained
 * hash, a FIFO for the entry bound, vectors in a vindex keyed by
 * (tenant namespace, partition). Not for: the reply bytes, Redis. */
#include "cache/semantic.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cache/vindex.h"

#define DEFAULT_MAX 100000
#define DEFAULT_K 8

typedef struct rec {
    uint64_t id; /* XXH3-64 of the key: the vindex id */
    cache_key_t key;
    uint64_t ns, part, space;
    int64_t expires_ms;
    struct rec *hnext;       /* hash chain */
    struct rec *prev, *next; /* FIFO, oldest first */
    size_t text_len;
    char text[];
} rec_t;

struct semantic {
    semantic_config_t cfg;
    vindex_t *vx;
    rec_t **tab;
    size_t n_tab; /* power of two */
    size_t n;
    rec_t *head, *tail;
    uint64_t bytes;
    semantic_stats_t st;
};

uint64_t semantic_partition(const void *bytes, size_t n)
{
    return XXH3_64bits(bytes, n);
}

static uint64_t space_of(uint64_t ns, uint64_t part)
{
    uint64_t b[2] = {ns, part};
    return XXH3_64bits(b, sizeof b);
}

static uint64_t id_of(const cache_key_t *k)
{
    return XXH3_64bits(k->b, sizeof k->b);
}

int semantic_create(semantic_t **out, const semantic_config_t *cfg, bar_msg_t *msg)
{
    *out = NULL;
    if (!cfg || cfg->dim < 1 || cfg->dim > VINDEX_MAX_DIM)
        return bar_fail(msg, BAR_ERR_INVALID, "semantic cache: bad vector size");
    semantic_t *s = calloc(1, sizeof *s);
    if (!s) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    if (!s->cfg.max_entries) s->cfg.max_entries = DEFAULT_MAX;
    if (s->cfg.k <= 0) s->cfg.k = DEFAULT_K;
    if (s->cfg.k > 64) s->cfg.k = 64;
    vindex_config_t vc = {0};
    vc.dim = cfg->dim;
    int rc = vindex_create(&s->vx, &vc, msg);
    s->n_tab = 1024;
    s->tab = calloc(s->n_tab, sizeof *s->tab);
    if (rc || !s->tab) {
        vindex_destroy(s->vx);
        free(s->tab);
        free(s);
        return rc ? rc : bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return 0;
}

static void rec_free_all(semantic_t *s)
{
    rec_t *r = s->head;
    while (r) {
        rec_t *nx = r->next;
        free(r);
        r = nx;
    }
    s->head = s->tail = NULL;
}

void semantic_destroy(semantic_t *s)
{
    if (!s) return;
    rec_free_all(s);
    vindex_destroy(s->vx);
    free(s->tab);
    free(s);
}

static rec_t *find(const semantic_t *s, uint64_t id)
{
    for (rec_t *r = s->tab[id & (s->n_tab - 1)]; r; r = r->hnext)
        if (r->id == id) return r;
    return NULL;
}

static void grow(semantic_t *s)
{
    size_t nn = s->n_tab * 2;
    rec_t **t = calloc(nn, sizeof *t);
    if (!t) return; /* chains just get longer */
    for (rec_t *r = s->head; r; r = r->next) {
        r->hnext = t[r->id & (nn - 1)];
        t[r->id & (nn - 1)] = r;
    }
    free(s->tab);
    s->tab = t;
    s->n_tab = nn;
}

static void rec_remove(semantic_t *s, rec_t *r)
{
    for (rec_t **pp = &s->tab[r->id & (s->n_tab - 1)]; *pp; pp = &(*pp)->hnext)
        if (*pp == r) {
            *pp = r->hnext;
            break;
        }
    if (r->prev)
        r->prev->next = r->next;
    else
        s->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->tail = r->prev;
    vindex_remove(s->vx, r->space, r->id);
    s->bytes -= sizeof *r + r->text_len;
    s->n--;
    free(r);
}

int semantic_put(semantic_t *s, const semantic_put_t *e, int64_t now_ms)
{
    if (e->expires_ms && e->expires_ms <= now_ms) return BAR_ERR_INVALID;
    double nrm = 0;
    for (int i = 0; i < s->cfg.dim; i++)
        nrm += (double)e->vec[i] * e->vec[i];
    if (!(nrm > 0) || !isfinite(nrm)) return BAR_ERR_INVALID;
    uint64_t id = id_of(&e->key);
    rec_t *old = find(s, id);
    if (old) rec_remove(s, old);
    size_t tl = e->text_len > SEMANTIC_TEXT_MAX ? SEMANTIC_TEXT_MAX : e->text_len;
    rec_t *r = malloc(sizeof *r + tl + 1);
    if (!r) return BAR_ERR_NOMEM;
    memset(r, 0, sizeof *r);
    r->id = id;
    r->key = e->key;
    r->ns = e->ns;
    r->part = e->part;
    r->space = space_of(e->ns, e->part);
    r->expires_ms = e->expires_ms;
    r->text_len = tl;
    if (tl) memcpy(r->text, e->text, tl);
    r->text[tl] = '\0';
    int rc = vindex_add(s->vx, r->space, id, e->vec);
    if (rc) {
        free(r);
        return rc;
    }
    r->hnext = s->tab[id & (s->n_tab - 1)];
    s->tab[id & (s->n_tab - 1)] = r;
    r->prev = s->tail;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->n++;
    s->bytes += sizeof *r + tl;
    s->st.puts++;
    while (s->n > s->cfg.max_entries && s->head) {
        rec_remove(s, s->head);
        s->st.evictions++;
    }
    if (s->n > s->n_tab * 2) grow(s);
    return 0;
}

int semantic_lookup(semantic_t *s, uint64_t ns, uint64_t part, const float *vec, const char *text,
                    size_t text_len, double min_sim, int64_t now_ms, semantic_hit_t *out)
{
    memset(out, 0, sizeof *out);
    out->best_sim = -2;
    s->st.lookups++;
    vindex_hit_t hits[64];
    uint64_t space = space_of(ns, part);
    int n = vindex_search(s->vx, space, vec, s->cfg.k, hits);
    for (int i = 0; i < n; i++) {
        rec_t *r = find(s, hits[i].id);
        if (!r || r->ns != ns || r->part != part) continue; /* never another space's */
        if (r->expires_ms && r->expires_ms <= now_ms) {
            rec_remove(s, r);
            s->st.expirations++;
            continue;
        }
        if (out->best_sim < hits[i].sim) out->best_sim = hits[i].sim;
        if (hits[i].sim < min_sim) break; /* best first: the rest are lower */
        if (s->cfg.use_guard) {
            semantic_guard_verdict_t v =
                semantic_guard_check(&s->cfg.guard, r->text, r->text_len, text, text_len);
            if (v != SEMANTIC_GUARD_PASS) {
                if (!out->refused) out->why = v;
                out->refused++;
                s->st.guard_refusals[v]++;
                continue;
            }
        }
        out->key = r->key;
        out->sim = hits[i].sim;
        s->st.hits++;
        return 1;
    }
    s->st.misses++;
    return 0;
}

int semantic_del(semantic_t *s, const cache_key_t *key)
{
    rec_t *r = find(s, id_of(key));
    if (!r || memcmp(r->key.b, key->b, sizeof key->b)) return 0;
    rec_remove(s, r);
    s->st.deletes++;
    return 1;
}

static size_t purge_masked(semantic_t *s, uint64_t ns, uint64_t mask)
{
    size_t k = 0;
    rec_t *r = s->head;
    while (r) {
        rec_t *nx = r->next;
        if ((r->ns & mask) == (ns & mask)) {
            rec_remove(s, r);
            k++;
        }
        r = nx;
    }
    s->st.deletes += k;
    return k;
}

size_t semantic_purge_ns(semantic_t *s, uint64_t ns)
{
    return purge_masked(s, ns, ~0ull);
}

size_t semantic_purge_tenant(semantic_t *s, uint64_t ns)
{
    return purge_masked(s, ns, 0xffffffff00000000ull);
}

size_t semantic_purge_all(semantic_t *s)
{
    size_t k = s->n;
    rec_free_all(s);
    memset(s->tab, 0, s->n_tab * sizeof *s->tab);
    vindex_clear(s->vx);
    s->n = 0;
    s->bytes = 0;
    s->st.deletes += k;
    return k;
}

size_t semantic_sweep(semantic_t *s, int64_t now_ms)
{
    size_t k = 0;
    rec_t *r = s->head;
    while (r) {
        rec_t *nx = r->next;
        if (r->expires_ms && r->expires_ms <= now_ms) {
            rec_remove(s, r);
            k++;
        }
        r = nx;
    }
    s->st.expirations += k;
    return k;
}

void semantic_stats(const semantic_t *s, semantic_stats_t *out)
{
    *out = s->st;
    out->entries = s->n;
    vindex_stats_t vs;
    vindex_stats(s->vx, &vs);
    out->bytes = s->bytes + vs.bytes + s->n_tab * sizeof *s->tab;
}

/* ---- records ---- */

#define REC_MAGIC "BSE"
#define REC_VERSION 1

static int put_bytes(buf_t *b, const void *p, size_t n)
{
    return buf_append(b, p, n) ? BAR_ERR_NOMEM : 0;
}

static int put_u64(buf_t *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return put_bytes(b, x, 8);
}

static int put_u32(buf_t *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    return put_bytes(b, x, 4);
}

static int rec_head(buf_t *b, int type)
{
    unsigned char h[5] = {'B', 'S', 'E', REC_VERSION, (unsigned char)type};
    return put_bytes(b, h, sizeof h);
}

static int rec_sum(buf_t *b, size_t start)
{
    return put_u64(b, XXH3_64bits(b->p + start, b->n - start));
}

int semantic_rec_entry(buf_t *out, const semantic_put_t *e, int dim)
{
    size_t start = out->n;
    size_t tl = e->text_len > SEMANTIC_TEXT_MAX ? SEMANTIC_TEXT_MAX : e->text_len;
    int rc = rec_head(out, SEMANTIC_REC_ENTRY) || put_bytes(out, e->key.b, 16) ||
             put_u64(out, e->ns) || put_u64(out, e->part) ||
             put_u64(out, (uint64_t)e->expires_ms) || put_u32(out, (uint32_t)dim) ||
             put_u32(out, (uint32_t)tl);
    for (int i = 0; !rc && i < dim; i++) {
        uint32_t u;
        memcpy(&u, &e->vec[i], 4);
        rc = put_u32(out, u);
    }
    if (!rc && tl) rc = put_bytes(out, e->text, tl);
    if (!rc) rc = rec_sum(out, start);
    return rc ? BAR_ERR_NOMEM : 0;
}

int semantic_rec_purge(buf_t *out, cache_purge_kind_t kind, uint64_t ns, const cache_key_t *key)
{
    size_t start = out->n;
    unsigned char k = (unsigned char)kind;
    cache_key_t z;
    memset(&z, 0, sizeof z);
    int rc = rec_head(out, SEMANTIC_REC_PURGE) || put_bytes(out, &k, 1) || put_u64(out, ns) ||
             put_bytes(out, key ? key->b : z.b, 16) || rec_sum(out, start);
    return rc ? BAR_ERR_NOMEM : 0;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int semantic_rec_decode(const void *p_, size_t n, semantic_rec_t *out, float *vbuf, int vcap,
                        bar_msg_t *msg)
{
    const unsigned char *p = p_;
    memset(out, 0, sizeof *out);
    if (n < 5 + 8 || memcmp(p, REC_MAGIC, 3))
        return bar_fail(msg, BAR_ERR_INVALID, "not a semantic record");
    if (p[3] != REC_VERSION)
        return bar_fail(msg, BAR_ERR_INVALID, "semantic record version %d", p[3]);
    if (get_u64(p + n - 8) != XXH3_64bits(p, n - 8))
        return bar_fail(msg, BAR_ERR_INVALID, "semantic record checksum mismatch");
    size_t body = n - 8 - 5;
    const unsigned char *q = p + 5;
    out->type = p[4];
    if (out->type == SEMANTIC_REC_PURGE) {
        if (body != 1 + 8 + 16) return bar_fail(msg, BAR_ERR_INVALID, "purge record length");
        if (q[0] > CACHE_PURGE_TENANT) return bar_fail(msg, BAR_ERR_INVALID, "purge kind %d", q[0]);
        out->kind = (cache_purge_kind_t)q[0];
        out->ns = get_u64(q + 1);
        memcpy(out->key.b, q + 9, 16);
        return 0;
    }
    if (out->type != SEMANTIC_REC_ENTRY)
        return bar_fail(msg, BAR_ERR_INVALID, "semantic record type %d", out->type);
    const size_t fixed = 16 + 8 + 8 + 8 + 4 + 4;
    if (body < fixed) return bar_fail(msg, BAR_ERR_INVALID, "entry record truncated");
    uint32_t dim = get_u32(q + 40), tl = get_u32(q + 44);
    if (dim == 0 || (int64_t)dim > vcap)
        return bar_fail(msg, BAR_ERR_INVALID, "entry vector of %u floats (expected <= %d)", dim,
                        vcap);
    if (tl > SEMANTIC_TEXT_MAX || (uint64_t)body != fixed + (uint64_t)dim * 4 + tl)
        return bar_fail(msg, BAR_ERR_INVALID, "entry record length");
    memcpy(out->e.key.b, q, 16);
    out->e.ns = get_u64(q + 16);
    out->e.part = get_u64(q + 24);
    out->e.expires_ms = (int64_t)get_u64(q + 32);
    double nrm = 0;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t u = get_u32(q + fixed + 4 * (size_t)i);
        memcpy(&vbuf[i], &u, 4);
        nrm += (double)vbuf[i] * vbuf[i];
    }
    if (!(nrm > 0) || !isfinite(nrm))
        return bar_fail(msg, BAR_ERR_INVALID, "entry vector is zero or not finite");
    out->dim = (int)dim;
    out->e.vec = vbuf;
    out->e.text = (const char *)q + fixed + 4 * (size_t)dim;
    out->e.text_len = tl;
    return 0;
}
