/* vindex.c — the semantic cache's vector index: namespaces of unit vectors,
 * exact flat scans for small namespaces, HNSW graphs for large ones.
 *
 * Layout of one namespace (sub_t), slot-indexed arrays (slot = node id):
 *   ids[cap]            u64  caller's id
 *   scale[cap]          f32  int8 scale: unit[i] ~= q8[i] * scale
 *   q8[cap][dim]        i8   symmetric int8 of the unit vector (scan / walk)
 *   h16[cap][dim]       f16  the unit vector (re-scoring the best candidates)
 *   map[map_cap]        u32  open-addressing id -> slot (linear probing,
 *                            backward-shift deletion, so no tombstones)
 * and, only while it is a graph (links0 != NULL):
 *   dead[cap], level[cap]           u8
 *   links0[cap][1 + 2M]             u32  layer-0 neighbour list: count, slots
 *   up[cap] -> [level][1 + M]       u32  upper layers, NULL for level 0 nodes
 * Flat namespaces have no dead slots: a delete moves the last slot into the
 * hole. Graph namespaces tombstone (dead[slot] = 1, id unmapped); a rebuild
 * from the live slots happens when tombstones reach half of the nodes, and
 * a graph turns flat again when its live vectors drop to flat_max / 2.
 *
 * Similarity: int8 dot * scale_a * scale_b (the walk and the flat pre-ranking,
 * within ~1e-3 of the fp32 cosine), then the candidates that survive are
 * re-scored with the fp16 copies (fp16 x fp16 with fp32 sums, ~1e-4).
 *
 * HNSW as in Malkov & Yashunin (2016): levels drawn with mL = 1 / ln M,
 * greedy descent on upper layers, a beam of ef on layer 0, neighbours chosen
 * with the diversity heuristic (keep e if it is closer to the new node than
 * to every neighbour already kept), M per upper layer and 2M on layer 0.
 * Not for: thresholds, embedding, persistence. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/vindex.h"
#include "engine/kernels/kern.h"
#include "util/fp16.h"

#define DEF_FLAT_MAX 4096
#define DEF_M 16
#define DEF_EFC 200
#define DEF_EFS 64
#define MAX_LEVEL 24
#define EMPTY UINT32_MAX
#define NO_NODE UINT32_MAX
#define RESCORE_MIN 32 /* flat: candidates re-scored in fp16 at least */

typedef struct {
    float sim;
    uint32_t slot;
} cand_t;

typedef struct sub {
    uint64_t ns;
    uint32_t n, cap, live, ndead;
    uint64_t *ids;
    float *scale;
    int8_t *q8;
    uint16_t *h16;
    uint32_t *map;
    uint32_t map_cap; /* power of two; live * 2 <= map_cap */
    /* graph */
    uint8_t *dead, *level;
    uint32_t *links0;
    uint32_t **up;
    size_t up_bytes;
    uint32_t entry;
    int max_level;
    uint64_t rng;
} sub_t;

struct vindex {
    vindex_config_t cfg;
    int dim;
    double ml;   /* 1 / ln M */
    sub_t **tab; /* namespace map: open addressing by ns, NULL = empty */
    uint32_t tab_cap, tab_n;
};

/* A query or a stored vector, prepared: int8 codes and scale, fp16 copy. */
typedef struct {
    const int8_t *q8;
    float scale;
    const uint16_t *h16;
} qv_t;

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- preparing vectors --------------------------------------------------- */

/* unit = x / |x|; q8/scale its symmetric int8; h16 its fp16. -1 for a zero or
 * non-finite x. */
static int prep(const float *x, int dim, int8_t *q8, float *scale, uint16_t *h16)
{
    double ss = 0;
    for (int i = 0; i < dim; i++) {
        if (!isfinite(x[i])) return -1;
        ss += (double)x[i] * x[i];
    }
    if (!(ss > 0) || !isfinite(ss)) return -1;
    double inv = 1.0 / sqrt(ss);
    float amax = 0;
    for (int i = 0; i < dim; i++) {
        float u = (float)(x[i] * inv);
        h16[i] = fp16_from_f32(u);
        if (fabsf(u) > amax) amax = fabsf(u);
    }
    if (!(amax > 0)) return -1; /* underflow to all zeros */
    float s = amax / 127.0f, is = 127.0f / amax;
    for (int i = 0; i < dim; i++) {
        long q = lrintf((float)(x[i] * inv) * is);
        q8[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    *scale = s;
    return 0;
}

/* ---- heaps of candidates (max-heap on sim; negate sims for a min-heap) --- */

typedef struct {
    cand_t *a;
    int n, cap;
} heap_t;

static int heap_push(heap_t *h, float sim, uint32_t slot)
{
    if (h->n == h->cap) {
        int nc = h->cap ? h->cap * 2 : 64;
        cand_t *na = realloc(h->a, (size_t)nc * sizeof *na);
        if (!na) return -1;
        h->a = na;
        h->cap = nc;
    }
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (h->a[p].sim >= sim) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = (cand_t){sim, slot};
    return 0;
}

static cand_t heap_pop(heap_t *h)
{
    cand_t top = h->a[0], last = h->a[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->a[c + 1].sim > h->a[c].sim) c++;
        if (h->a[c].sim <= last.sim) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static int cand_desc(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->sim != y->sim) return x->sim < y->sim ? 1 : -1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* ---- visited set (per search; open addressing of slots) ------------------ */

typedef struct {
    uint32_t *t;
    uint32_t mask, n;
} vis_t;

static int vis_init(vis_t *v, uint32_t cap)
{
    v->t = malloc((size_t)cap * sizeof *v->t);
    if (!v->t) return -1;
    memset(v->t, 0xff, (size_t)cap * sizeof *v->t);
    v->mask = cap - 1;
    v->n = 0;
    return 0;
}

/* 1 when slot was new (now added), 0 when already there, -1 on NOMEM. */
static int vis_add(vis_t *v, uint32_t slot)
{
    if ((v->n + 1) * 2 > v->mask + 1) {
        vis_t nv;
        if (vis_init(&nv, (v->mask + 1) * 2) < 0) return -1;
        for (uint32_t i = 0; i <= v->mask; i++) {
            uint32_t s = v->t[i];
            if (s == EMPTY) continue;
            uint32_t j = (uint32_t)mix64(s) & nv.mask;
            while (nv.t[j] != EMPTY)
                j = (j + 1) & nv.mask;
            nv.t[j] = s;
        }
        nv.n = v->n;
        free(v->t);
        *v = nv;
    }
    uint32_t j = (uint32_t)mix64(slot) & v->mask;
    while (v->t[j] != EMPTY) {
        if (v->t[j] == slot) return 0;
        j = (j + 1) & v->mask;
    }
    v->t[j] = slot;
    v->n++;
    return 1;
}

/* ---- id -> slot map ------------------------------------------------------ */

static uint32_t map_find(const sub_t *s, uint64_t id)
{
    uint32_t mask = s->map_cap - 1, j = (uint32_t)mix64(id) & mask;
    while (s->map[j] != EMPTY) {
        if (s->ids[s->map[j]] == id) return j;
        j = (j + 1) & mask;
    }
    return EMPTY;
}

static void map_put_raw(uint32_t *map, uint32_t cap, const uint64_t *ids, uint32_t slot)
{
    uint32_t mask = cap - 1, j = (uint32_t)mix64(ids[slot]) & mask;
    while (map[j] != EMPTY)
        j = (j + 1) & mask;
    map[j] = slot;
}

/* Rebuild the map for slots [0, n) that are live, at capacity >= 2 * live. */
static int map_rebuild(sub_t *s, uint32_t want_live)
{
    uint32_t cap = 8;
    while (cap < 2 * (want_live + 1))
        cap *= 2;
    uint32_t *m = malloc((size_t)cap * sizeof *m);
    if (!m) return -1;
    memset(m, 0xff, (size_t)cap * sizeof *m);
    for (uint32_t i = 0; i < s->n; i++)
        if (!s->dead || !s->dead[i]) map_put_raw(m, cap, s->ids, i);
    free(s->map);
    s->map = m;
    s->map_cap = cap;
    return 0;
}

/* Backward-shift deletion of map position j. */
static void map_del_at(sub_t *s, uint32_t j)
{
    uint32_t mask = s->map_cap - 1, i = j;
    for (;;) {
        j = (j + 1) & mask;
        if (s->map[j] == EMPTY) break;
        uint32_t k = (uint32_t)mix64(s->ids[s->map[j]]) & mask;
        /* the entry at j may move to i unless its home k lies in (i, j] */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->map[i] = s->map[j];
            i = j;
        }
    }
    s->map[i] = EMPTY;
}

/* ---- namespace map ------------------------------------------------------- */

static uint32_t tab_find(const vindex_t *v, uint64_t ns)
{
    if (!v->tab_cap) return EMPTY;
    uint32_t mask = v->tab_cap - 1, j = (uint32_t)mix64(ns) & mask;
    while (v->tab[j]) {
        if (v->tab[j]->ns == ns) return j;
        j = (j + 1) & mask;
    }
    return EMPTY;
}

static int tab_insert(vindex_t *v, sub_t *s)
{
    if ((v->tab_n + 1) * 2 > v->tab_cap) {
        uint32_t nc = v->tab_cap ? v->tab_cap * 2 : 16;
        sub_t **nt = calloc(nc, sizeof *nt);
        if (!nt) return -1;
        for (uint32_t i = 0; i < v->tab_cap; i++) {
            if (!v->tab[i]) continue;
            uint32_t j = (uint32_t)mix64(v->tab[i]->ns) & (nc - 1);
            while (nt[j])
                j = (j + 1) & (nc - 1);
            nt[j] = v->tab[i];
        }
        free(v->tab);
        v->tab = nt;
        v->tab_cap = nc;
    }
    uint32_t mask = v->tab_cap - 1, j = (uint32_t)mix64(s->ns) & mask;
    while (v->tab[j])
        j = (j + 1) & mask;
    v->tab[j] = s;
    v->tab_n++;
    return 0;
}

static void tab_del_at(vindex_t *v, uint32_t j)
{
    uint32_t mask = v->tab_cap - 1, i = j;
    for (;;) {
        j = (j + 1) & mask;
        if (!v->tab[j]) break;
        uint32_t k = (uint32_t)mix64(v->tab[j]->ns) & mask;
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            v->tab[i] = v->tab[j];
            i = j;
        }
    }
    v->tab[i] = NULL;
    v->tab_n--;
}

/* ---- namespace storage --------------------------------------------------- */

static size_t links0_len(const vindex_t *v)
{
    return 1 + 2 * (size_t)v->cfg.M;
}

static void graph_free(sub_t *s)
{
    if (s->up)
        for (uint32_t i = 0; i < s->n; i++)
            free(s->up[i]);
    free(s->up);
    free(s->links0);
    free(s->dead);
    free(s->level);
    s->up = NULL;
    s->links0 = NULL;
    s->dead = s->level = NULL;
    s->up_bytes = 0;
    s->ndead = 0;
    s->entry = NO_NODE;
    s->max_level = -1;
}

static void sub_free(sub_t *s)
{
    if (!s) return;
    graph_free(s);
    free(s->ids);
    free(s->scale);
    free(s->q8);
    free(s->h16);
    free(s->map);
    free(s);
}

static int grow_arr(void **p, size_t elem, uint32_t oldcap, uint32_t cap, int zero)
{
    void *np = realloc(*p, (size_t)cap * elem);
    if (!np) return -1;
    if (zero) memset((char *)np + (size_t)oldcap * elem, 0, (size_t)(cap - oldcap) * elem);
    *p = np;
    return 0;
}

/* Capacity for at least want slots (graph arrays too when it is a graph).
 * On failure some arrays may be larger; cap stays valid for all. */
static int sub_reserve(const vindex_t *v, sub_t *s, uint32_t want)
{
    if (want <= s->cap) return 0;
    uint32_t cap = s->cap ? s->cap : 1; /* a namespace of one vector is common */
    while (cap < want)
        cap = cap < (1u << 30) ? cap * 2 : want;
    size_t d = (size_t)v->dim;
    if (grow_arr((void **)&s->ids, 8, s->cap, cap, 0) ||
        grow_arr((void **)&s->scale, 4, s->cap, cap, 0) ||
        grow_arr((void **)&s->q8, d, s->cap, cap, 0) ||
        grow_arr((void **)&s->h16, 2 * d, s->cap, cap, 0))
        return -1;
    if (s->links0 && (grow_arr((void **)&s->dead, 1, s->cap, cap, 1) ||
                      grow_arr((void **)&s->level, 1, s->cap, cap, 1) ||
                      grow_arr((void **)&s->links0, 4 * links0_len(v), s->cap, cap, 1) ||
                      grow_arr((void **)&s->up, sizeof(uint32_t *), s->cap, cap, 1)))
        return -1;
    s->cap = cap;
    return 0;
}

static inline const int8_t *row8(const vindex_t *v, const sub_t *s, uint32_t slot)
{
    return s->q8 + (size_t)slot * (size_t)v->dim;
}

static inline uint32_t *links(const vindex_t *v, const sub_t *s, uint32_t slot, int lv)
{
    if (lv == 0) return s->links0 + (size_t)slot * links0_len(v);
    return s->up[slot] + (size_t)(lv - 1) * (size_t)(v->cfg.M + 1);
}

/* fp16 cosine of slot against the query's fp16 copy. */
static float exact_sim(const vindex_t *v, const sub_t *s, uint32_t slot, const uint16_t *qh)
{
    float r;
    kern_dot_hh(s->h16 + (size_t)slot * (size_t)v->dim, 0, KERN_SEG, 1, qh, v->dim, KERN_ORDER_VEC,
                &r);
    return r > 1.0f ? 1.0f : r < -1.0f ? -1.0f : r;
}

/* int8 similarities of q against nslots slots. */
static void sims8(const vindex_t *v, const sub_t *s, const qv_t *q, const uint32_t *slots,
                  int nslots, float *out)
{
    enum { CH = 64 };
    const int8_t *rows[CH];
    int32_t dots[CH];
    for (int b = 0; b < nslots; b += CH) {
        int m = nslots - b < CH ? nslots - b : CH;
        for (int j = 0; j < m; j++)
            rows[j] = row8(v, s, slots[b + j]);
        kern_dot_i8(rows, m, q->q8, v->dim, dots);
        for (int j = 0; j < m; j++)
            out[b + j] = (float)dots[j] * s->scale[slots[b + j]] * q->scale;
    }
}

static float sim8_one(const vindex_t *v, const sub_t *s, const qv_t *q, uint32_t slot)
{
    float r;
    sims8(v, s, q, &slot, 1, &r);
    return r;
}

static qv_t slot_qv(const vindex_t *v, const sub_t *s, uint32_t slot)
{
    return (qv_t){row8(v, s, slot), s->scale[slot], s->h16 + (size_t)slot * (size_t)v->dim};
}

/* ---- flat search --------------------------------------------------------- */

static int flat_search(const vindex_t *v, const sub_t *s, const qv_t *q, int k, vindex_hit_t *out)
{
    int R = 4 * k > RESCORE_MIN ? 4 * k : RESCORE_MIN;
    if ((uint32_t)R > s->n) R = (int)s->n;
    heap_t h = {0}; /* min-heap of the best R by int8 sim (sims negated) */
    enum { CH = 256 };
    uint32_t slots[CH];
    float sims[CH];
    int rc = 0;
    for (uint32_t b = 0; b < s->n && rc == 0; b += CH) {
        int m = s->n - b < CH ? (int)(s->n - b) : CH;
        for (int j = 0; j < m; j++)
            slots[j] = b + (uint32_t)j;
        sims8(v, s, q, slots, m, sims);
        for (int j = 0; j < m && rc == 0; j++) {
            if (h.n < R) {
                rc = heap_push(&h, -sims[j], slots[j]);
            } else if (-sims[j] < h.a[0].sim) {
                heap_pop(&h);
                rc = heap_push(&h, -sims[j], slots[j]);
            }
        }
    }
    int got = 0;
    if (rc == 0) {
        for (int i = 0; i < h.n; i++)
            h.a[i].sim = exact_sim(v, s, h.a[i].slot, q->h16);
        qsort(h.a, (size_t)h.n, sizeof *h.a, cand_desc);
        for (; got < k && got < h.n; got++)
            out[got] = (vindex_hit_t){s->ids[h.a[got].slot], h.a[got].sim};
    }
    free(h.a);
    return got;
}

/* ---- HNSW ---------------------------------------------------------------- */

/* Greedy walk on layer lv from *ep (similarity *esim) to a local best. */
static void greedy(const vindex_t *v, const sub_t *s, const qv_t *q, int lv, uint32_t *ep,
                   float *esim)
{
    float sims[2 * DEF_M + 64];
    for (int changed = 1; changed;) {
        changed = 0;
        const uint32_t *l = links(v, s, *ep, lv);
        uint32_t cnt = l[0];
        for (uint32_t b = 0; b < cnt; b += 64) {
            int m = cnt - b < 64 ? (int)(cnt - b) : 64;
            sims8(v, s, q, l + 1 + b, m, sims);
            for (int j = 0; j < m; j++)
                if (sims[j] > *esim) {
                    *esim = sims[j];
                    *ep = l[1 + b + (uint32_t)j];
                    changed = 1;
                }
        }
    }
}

/* Beam search of width ef on layer lv from ep. Results (the ef best, dead
 * ones only when with_dead) are left in *res as a min-heap with negated
 * sims. 0 or -1 (NOMEM). */
static int search_layer(const vindex_t *v, const sub_t *s, const qv_t *q, uint32_t ep, float esim,
                        int ef, int lv, int with_dead, heap_t *res)
{
    heap_t cand = {0};
    vis_t vis;
    /* about ef * links are visited: size the set for that up front */
    uint32_t vcap = 1024;
    while (vcap < 64u * 1024 && vcap < (uint32_t)ef * (uint32_t)v->cfg.M * 4)
        vcap *= 2;
    int rc = vis_init(&vis, vcap);
    if (rc < 0) return -1;
    uint32_t batch[2 * DEF_M + 256];
    float sims[2 * DEF_M + 256];
    res->n = 0;
    rc = vis_add(&vis, ep) < 0 || heap_push(&cand, esim, ep) < 0 ? -1 : 0;
    if (rc == 0 && (with_dead || !s->dead[ep])) rc = heap_push(res, -esim, ep);
    while (rc == 0 && cand.n) {
        cand_t c = heap_pop(&cand);
        if (res->n >= ef && c.sim < -res->a[0].sim) break;
        const uint32_t *l = links(v, s, c.slot, lv);
        uint32_t cnt = l[0];
        int m = 0;
        for (uint32_t j = 0; j < cnt; j++) {
            int a = vis_add(&vis, l[1 + j]);
            if (a < 0) {
                rc = -1;
                break;
            }
            if (a) {
                batch[m++] = l[1 + j];
                const char *p = (const char *)row8(v, s, l[1 + j]);
                for (int off = 0; off < v->dim; off += 64)
                    __builtin_prefetch(p + off);
            }
        }
        if (rc) break;
        sims8(v, s, q, batch, m, sims);
        for (int j = 0; j < m && rc == 0; j++) {
            if (res->n < ef || sims[j] > -res->a[0].sim) {
                rc = heap_push(&cand, sims[j], batch[j]);
                if (rc == 0 && (with_dead || !s->dead[batch[j]])) {
                    rc = heap_push(res, -sims[j], batch[j]);
                    if (res->n > ef) heap_pop(res);
                }
            }
        }
    }
    free(cand.a);
    free(vis.t);
    return rc;
}

/* Choose up to mmax of the candidates c[0..n) (sims to the base node,
 * sorted best first) with the diversity heuristic; writes the chosen slots
 * to out[0..] and returns how many. */
static int select_neighbours(const vindex_t *v, const sub_t *s, const cand_t *c, int n, int mmax,
                             uint32_t *out)
{
    int kept = 0;
    for (int i = 0; i < n && kept < mmax; i++) {
        qv_t e = slot_qv(v, s, c[i].slot);
        int good = 1;
        for (int r = 0; r < kept && good; r++)
            if (sim8_one(v, s, &e, out[r]) > c[i].sim) good = 0;
        if (good) out[kept++] = c[i].slot;
    }
    return kept;
}

/* Add the link node -> x on layer lv, re-pruning node's list when full. */
static void add_link(const vindex_t *v, sub_t *s, uint32_t node, uint32_t x, int lv)
{
    int mmax = lv == 0 ? 2 * v->cfg.M : v->cfg.M;
    uint32_t *l = links(v, s, node, lv);
    if ((int)l[0] < mmax) {
        l[1 + l[0]++] = x;
        return;
    }
    cand_t c[2 * DEF_M * 4 + 1];
    qv_t nq = slot_qv(v, s, node);
    int n = 0;
    uint32_t all[2 * DEF_M * 4 + 1];
    for (uint32_t j = 0; j < l[0]; j++)
        all[n++] = l[1 + j];
    all[n++] = x;
    float sims[2 * DEF_M * 4 + 1];
    sims8(v, s, &nq, all, n, sims);
    for (int j = 0; j < n; j++)
        c[j] = (cand_t){sims[j], all[j]};
    qsort(c, (size_t)n, sizeof *c, cand_desc);
    uint32_t sel[2 * DEF_M * 4];
    int k = select_neighbours(v, s, c, n, mmax, sel);
    l[0] = (uint32_t)k;
    memcpy(l + 1, sel, (size_t)k * sizeof *sel);
}

static int random_level(const vindex_t *v, sub_t *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    double u = (double)(s->rng >> 11) * (1.0 / 9007199254740992.0);
    if (u <= 0) u = 1e-300;
    int lv = (int)(-log(u) * v->ml);
    return lv > MAX_LEVEL ? MAX_LEVEL : lv;
}

/* Link slot x (vector stored, dead = 0) into the graph. */
static int hnsw_insert(const vindex_t *v, sub_t *s, uint32_t x)
{
    int lvl = random_level(v, s);
    s->level[x] = 0;
    links(v, s, x, 0)[0] = 0;
    s->up[x] = NULL;
    if (lvl > 0) {
        size_t nb = (size_t)lvl * (size_t)(v->cfg.M + 1) * sizeof(uint32_t);
        s->up[x] = calloc(1, nb);
        if (!s->up[x]) return -1;
        s->up_bytes += nb;
    }
    s->level[x] = (uint8_t)lvl;
    if (s->entry == NO_NODE) {
        s->entry = x;
        s->max_level = lvl;
        return 0;
    }
    qv_t q = slot_qv(v, s, x);
    uint32_t ep = s->entry;
    float esim = sim8_one(v, s, &q, ep);
    for (int lv = s->max_level; lv > lvl; lv--)
        greedy(v, s, &q, lv, &ep, &esim);
    heap_t res = {0};
    int rc = 0;
    uint32_t sel[2 * DEF_M * 4];
    for (int lv = lvl < s->max_level ? lvl : s->max_level; lv >= 0 && rc == 0; lv--) {
        rc = search_layer(v, s, &q, ep, esim, v->cfg.ef_construction, lv, 1, &res);
        if (rc) break;
        for (int i = 0; i < res.n; i++)
            res.a[i].sim = -res.a[i].sim;
        qsort(res.a, (size_t)res.n, sizeof *res.a, cand_desc);
        int k = select_neighbours(v, s, res.a, res.n, v->cfg.M, sel);
        uint32_t *l = links(v, s, x, lv);
        l[0] = (uint32_t)k;
        memcpy(l + 1, sel, (size_t)k * sizeof *sel);
        for (int i = 0; i < k; i++)
            add_link(v, s, sel[i], x, lv);
        ep = res.a[0].slot;
        esim = res.a[0].sim;
    }
    free(res.a);
    if (rc == 0 && lvl > s->max_level) {
        s->entry = x;
        s->max_level = lvl;
    }
    return rc;
}

static int graph_alloc(const vindex_t *v, sub_t *s)
{
    s->dead = calloc(s->cap, 1);
    s->level = calloc(s->cap, 1);
    s->links0 = calloc(s->cap, 4 * links0_len(v));
    s->up = calloc(s->cap, sizeof *s->up);
    s->entry = NO_NODE;
    s->max_level = -1;
    s->ndead = 0;
    s->up_bytes = 0;
    if (!s->dead || !s->level || !s->links0 || !s->up) {
        free(s->dead);
        free(s->level);
        free(s->links0);
        free(s->up);
        s->dead = s->level = NULL;
        s->links0 = NULL;
        s->up = NULL;
        return -1;
    }
    return 0;
}

/* Turn a flat namespace (no dead slots) into a graph over all its slots; on
 * NOMEM it stays flat (correct at any size, just slower). */
static void graph_build(const vindex_t *v, sub_t *s)
{
    if (graph_alloc(v, s) < 0) return;
    for (uint32_t i = 0; i < s->n; i++) {
        if (hnsw_insert(v, s, i) < 0) {
            uint32_t n = s->n;
            s->n = i + 1; /* up[] beyond i is NULL */
            graph_free(s);
            s->n = n;
            return;
        }
    }
}

/* Compact a graph namespace to its live slots, then rebuild it as a graph
 * (or leave it flat when at most flat_max / 2 remain). */
static void sub_rebuild(const vindex_t *v, sub_t *s)
{
    size_t d = (size_t)v->dim;
    uint32_t w = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->dead[i]) continue;
        if (w != i) {
            s->ids[w] = s->ids[i];
            s->scale[w] = s->scale[i];
            memcpy(s->q8 + w * d, s->q8 + i * d, d);
            memcpy(s->h16 + w * d, s->h16 + i * d, 2 * d);
        }
        w++;
    }
    graph_free(s);
    s->n = w;
    s->live = w;
    if (map_rebuild(s, w) < 0) {
        /* keep the old map's memory? it is stale: rebuild in place at the
         * old capacity, which is large enough for w live entries. */
        memset(s->map, 0xff, (size_t)s->map_cap * sizeof *s->map);
        for (uint32_t i = 0; i < w; i++)
            map_put_raw(s->map, s->map_cap, s->ids, i);
    }
    if (w > (uint32_t)v->cfg.flat_max / 2) graph_build(v, s);
}

static int graph_search(const vindex_t *v, const sub_t *s, const qv_t *q, int k, int ef,
                        vindex_hit_t *out)
{
    if (s->entry == NO_NODE) return 0;
    if (ef < k) ef = k;
    uint32_t ep = s->entry;
    float esim = sim8_one(v, s, q, ep);
    for (int lv = s->max_level; lv > 0; lv--)
        greedy(v, s, q, lv, &ep, &esim);
    heap_t res = {0};
    int got = 0;
    if (search_layer(v, s, q, ep, esim, ef, 0, 0, &res) == 0) {
        for (int i = 0; i < res.n; i++)
            res.a[i].sim = exact_sim(v, s, res.a[i].slot, q->h16);
        qsort(res.a, (size_t)res.n, sizeof *res.a, cand_desc);
        for (; got < k && got < res.n; got++)
            out[got] = (vindex_hit_t){s->ids[res.a[got].slot], res.a[got].sim};
    }
    free(res.a);
    return got;
}

/* ---- public API ---------------------------------------------------------- */

int vindex_create(vindex_t **out, const vindex_config_t *cfg, bar_msg_t *msg)
{
    *out = NULL;
    vindex_config_t c = cfg ? *cfg : (vindex_config_t){0};
    if (c.dim < 1 || c.dim > VINDEX_MAX_DIM)
        return bar_fail(msg, BAR_ERR_INVALID, "vindex: dim %d outside 1..%d", c.dim,
                        VINDEX_MAX_DIM);
    if (c.flat_max < 0 || c.M < 0 || c.ef_construction < 0 || c.ef_search < 0)
        return bar_fail(msg, BAR_ERR_INVALID, "vindex: negative setting");
    if (c.M == 1 || c.M > DEF_M * 4)
        return bar_fail(msg, BAR_ERR_INVALID, "vindex: M %d outside 2..%d", c.M, DEF_M * 4);
    if (!c.flat_max) c.flat_max = DEF_FLAT_MAX;
    if (!c.M) c.M = DEF_M;
    if (!c.ef_construction) c.ef_construction = DEF_EFC;
    if (!c.ef_search) c.ef_search = DEF_EFS;
    if (c.ef_construction < c.M) c.ef_construction = c.M;
    vindex_t *v = calloc(1, sizeof *v);
    if (!v) return bar_fail(msg, BAR_ERR_NOMEM, "vindex: out of memory");
    v->cfg = c;
    v->dim = c.dim;
    v->ml = 1.0 / log((double)c.M);
    *out = v;
    return 0;
}

void vindex_clear(vindex_t *v)
{
    if (!v) return;
    for (uint32_t i = 0; i < v->tab_cap; i++)
        sub_free(v->tab[i]);
    free(v->tab);
    v->tab = NULL;
    v->tab_cap = v->tab_n = 0;
}

void vindex_destroy(vindex_t *v)
{
    if (!v) return;
    vindex_clear(v);
    free(v);
}

vindex_config_t vindex_config(const vindex_t *v)
{
    return v->cfg;
}

static void sub_drop(vindex_t *v, uint32_t tpos)
{
    sub_t *s = v->tab[tpos];
    tab_del_at(v, tpos);
    sub_free(s);
}

int vindex_add(vindex_t *v, uint64_t ns, uint64_t id, const float *vec)
{
    int8_t q8[VINDEX_MAX_DIM];
    uint16_t h16[VINDEX_MAX_DIM];
    float scale;
    if (prep(vec, v->dim, q8, &scale, h16) < 0) return BAR_ERR_INVALID;
    uint32_t tp = tab_find(v, ns);
    sub_t *s;
    if (tp == EMPTY) {
        s = calloc(1, sizeof *s);
        if (!s) return BAR_ERR_NOMEM;
        s->ns = ns;
        s->entry = NO_NODE;
        s->max_level = -1;
        s->rng = mix64(ns ^ 0x5851f42d4c957f2dull) | 1;
        if (map_rebuild(s, 1) < 0 || tab_insert(v, s) < 0) {
            sub_free(s);
            return BAR_ERR_NOMEM;
        }
        tp = tab_find(v, ns);
    } else {
        s = v->tab[tp];
    }
    size_t d = (size_t)v->dim;
    uint32_t mp = map_find(s, id);
    if (mp != EMPTY) {
        uint32_t slot = s->map[mp];
        if (!s->links0) { /* flat: overwrite in place */
            s->scale[slot] = scale;
            memcpy(s->q8 + slot * d, q8, d);
            memcpy(s->h16 + slot * d, h16, 2 * d);
            return 0;
        }
        map_del_at(s, mp); /* graph: tombstone the old node */
        s->dead[slot] = 1;
        s->ndead++;
        s->live--;
    }
    int rc = 0;
    if ((s->live + 1) * 2 > s->map_cap && map_rebuild(s, s->live + 1) < 0) rc = BAR_ERR_NOMEM;
    if (rc == 0 && s->n == UINT32_MAX - 1) rc = BAR_ERR_RANGE;
    if (rc == 0 && sub_reserve(v, s, s->n + 1) < 0) rc = BAR_ERR_NOMEM;
    if (rc) {
        if (s->live == 0) sub_drop(v, tp);
        return rc;
    }
    uint32_t slot = s->n++;
    s->ids[slot] = id;
    s->scale[slot] = scale;
    memcpy(s->q8 + slot * d, q8, d);
    memcpy(s->h16 + slot * d, h16, 2 * d);
    map_put_raw(s->map, s->map_cap, s->ids, slot);
    s->live++;
    if (s->links0) {
        s->dead[slot] = 0;
        if (hnsw_insert(v, s, slot) < 0) { /* unreachable node: drop it */
            map_del_at(s, map_find(s, id));
            s->dead[slot] = 1;
            s->ndead++;
            s->live--;
            if (s->live == 0) sub_drop(v, tp);
            return BAR_ERR_NOMEM;
        }
        if (s->ndead * 2 >= s->n) sub_rebuild(v, s);
    } else if (s->live > (uint32_t)v->cfg.flat_max) {
        graph_build(v, s);
    }
    return 0;
}

int vindex_remove(vindex_t *v, uint64_t ns, uint64_t id)
{
    uint32_t tp = tab_find(v, ns);
    if (tp == EMPTY) return 0;
    sub_t *s = v->tab[tp];
    uint32_t mp = map_find(s, id);
    if (mp == EMPTY) return 0;
    uint32_t slot = s->map[mp];
    map_del_at(s, mp);
    s->live--;
    if (s->live == 0) {
        sub_drop(v, tp);
        return 1;
    }
    if (s->links0) {
        s->dead[slot] = 1;
        s->ndead++;
        if (s->ndead * 2 >= s->n || s->live <= (uint32_t)v->cfg.flat_max / 2) sub_rebuild(v, s);
        return 1;
    }
    uint32_t last = s->n - 1;
    if (slot != last) { /* flat: move the last slot into the hole */
        size_t d = (size_t)v->dim;
        uint32_t lp = map_find(s, s->ids[last]);
        s->ids[slot] = s->ids[last];
        s->scale[slot] = s->scale[last];
        memcpy(s->q8 + slot * d, s->q8 + last * d, d);
        memcpy(s->h16 + slot * d, s->h16 + last * d, 2 * d);
        s->map[lp] = slot;
    }
    s->n--;
    return 1;
}

uint64_t vindex_remove_ns(vindex_t *v, uint64_t ns)
{
    uint32_t tp = tab_find(v, ns);
    if (tp == EMPTY) return 0;
    uint64_t n = v->tab[tp]->live;
    sub_drop(v, tp);
    return n;
}

int vindex_contains(const vindex_t *v, uint64_t ns, uint64_t id)
{
    uint32_t tp = tab_find(v, ns);
    return tp != EMPTY && map_find(v->tab[tp], id) != EMPTY;
}

int vindex_search_ef(const vindex_t *v, uint64_t ns, const float *q, int k, int ef,
                     vindex_hit_t *out)
{
    if (k < 1 || k > VINDEX_MAX_K) return 0;
    uint32_t tp = tab_find(v, ns);
    if (tp == EMPTY) return 0;
    const sub_t *s = v->tab[tp];
    int8_t q8[VINDEX_MAX_DIM];
    uint16_t h16[VINDEX_MAX_DIM];
    qv_t qv = {q8, 0, h16};
    if (prep(q, v->dim, q8, &qv.scale, h16) < 0) return 0;
    if (s->links0) return graph_search(v, s, &qv, k, ef > 0 ? ef : v->cfg.ef_search, out);
    return flat_search(v, s, &qv, k, out);
}

int vindex_search(const vindex_t *v, uint64_t ns, const float *q, int k, vindex_hit_t *out)
{
    return vindex_search_ef(v, ns, q, k, 0, out);
}

void vindex_stats(const vindex_t *v, vindex_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->bytes = sizeof *v + (uint64_t)v->tab_cap * sizeof(sub_t *);
    size_t d = (size_t)v->dim;
    for (uint32_t i = 0; i < v->tab_cap; i++) {
        const sub_t *s = v->tab[i];
        if (!s) continue;
        out->namespaces++;
        out->vectors += s->live;
        out->bytes += sizeof *s + (uint64_t)s->cap * (8 + 4 + 3 * d) + (uint64_t)s->map_cap * 4;
        if (s->links0) {
            out->graphs++;
            out->tombstones += s->ndead;
            out->bytes +=
                (uint64_t)s->cap * (2 + 4 * links0_len(v) + sizeof(uint32_t *)) + s->up_bytes;
        }
    }
}
