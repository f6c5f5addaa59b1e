/* grammar_mask.c — the vocabulary as a byte trie and the token masks of a
 * grammar state (see grammar.h): the walk of the trie from a state, pruned
 * at the first rejected byte, its budget-limited form (gram_state_mask_within)
 * and the per-state mask cache keyed by the state's structure. The matcher
 * it walks with is grammar.c's. */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grammar.h"
#include "engine/grammar_int.h"

#define MC_BUCKETS 1024      /* hash chains of the shared mask cache */
#define MC_BYTES (48u << 20) /* the shared mask cache's budget per vocabulary */
#define RANK_NONE 255        /* a token's rank: not allowed */
#define LEVELS_MAX 254       /* ranks kept for at most this many distinct completions */

/* One state's masks: the tokens that keep it a valid prefix, and for the
 * budget (gram_state_mask_within) each allowed token's rank among the
 * distinct shortest completions after it (lv, ascending), so the tokens
 * after which the output finishes in `limit` bytes are those whose rank's
 * level is <= limit, found without a walk. Immutable once built; freed when
 * out of the table and unreferenced. */
struct mask_ent {
    struct mask_ent *hnext; /* bucket chain */
    gram_t *g;              /* a reference: the key's grammar (its address stays unique) */
    uint64_t key;           /* the state's structure (gram_set_key) */
    uint64_t lru;
    int refs; /* the table's (while in it) and the states' (under the cache's mu) */
    int in_table;
    int maxd;      /* the longest shortest completion after an allowed token */
    int n_lv;      /* distinct shortest completions after allowed tokens; > LEVELS_MAX: no ranks */
    int *lv;       /* [n_lv] ascending */
    uint8_t *rank; /* [n_vocab] index into lv, RANK_NONE: not allowed; NULL when n_lv <= 1 */
    size_t bytes;
    struct mcache *owner;
    uint64_t bits[]; /* the plain mask */
};

/* The shared mask cache: (grammar, state structure) -> entry, the least
 * recently used out first when over MC_BYTES. Sequences decoding with the
 * same schema reach the same states (inside a string, after a key), so one
 * walk serves all of them, and the next request with the schema too. */
typedef struct mcache {
    pthread_mutex_t mu;
    mask_ent_t *tab[MC_BUCKETS];
    size_t bytes, budget;
    int n;
    uint64_t clock, hits, misses;
} mcache_t;

static void ent_free(mask_ent_t *e)
{
    gram_release(e->g);
    free(e->lv);
    free(e->rank);
    free(e);
}

/* ---- vocabulary trie ---- */

typedef struct {
    int child, sib; /* first child, next sibling: -1 none */
    int tok;        /* first token ending here, -1 none (more via tok_next) */
    uint8_t byte;
} tnode_t;

/* The walk's layout (after the build): node k's children are the
 * contiguous nodes first[k] .. first[k] + count[k] - 1, numbered breadth
 * first, so a walk reads memory in order. */
struct gram_vocab {
    int n_vocab;
    int *first, *count, *tok; /* [n_nodes] */
    uint8_t *byte;            /* [n_nodes] */
    tnode_t *nodes;
    int n_nodes, cap_nodes;
    int *tok_next;  /* [n_vocab] */
    uint32_t *off;  /* [n_vocab + 1] into bytes */
    uint8_t *bytes; /* every token's bytes */
    mcache_t *mc;   /* the masks of the states seen, shared by every state (locked) */
};

/* Build-time index of the linked trie: (node, byte) -> child, open
 * addressing (a node under "Ġ" has hundreds of children). */
typedef struct {
    uint64_t *key; /* (node << 8 | byte) + 1; 0 empty */
    int *val;
    size_t mask;
    int shift; /* 64 - log2(slots): the product's high bits */
} tindex_t;

static int trie_child(gram_vocab_t *v, tindex_t *ix, int node, uint8_t c)
{
    uint64_t key = ((uint64_t)node << 8 | c) + 1;
    size_t h = (size_t)(key * 0x9e3779b97f4a7c15ull >> ix->shift) & ix->mask;
    while (ix->key[h]) {
        if (ix->key[h] == key) return ix->val[h];
        h = (h + 1) & ix->mask;
    }
    if (gram_grow((void **)&v->nodes, &v->cap_nodes, v->n_nodes + 1, sizeof *v->nodes)) return -1;
    int k = v->n_nodes++;
    v->nodes[k] = (tnode_t){-1, v->nodes[node].child, -1, c};
    v->nodes[node].child = k;
    ix->key[h] = key;
    ix->val[h] = k;
    return k;
}

/* Breadth-first renumbering of the linked trie into the arrays the walk reads. */
static int relayout(gram_vocab_t *v)
{
    int n = v->n_nodes;
    int *order = malloc((size_t)n * sizeof *order); /* new index -> old */
    v->first = malloc((size_t)n * sizeof *v->first);
    v->count = malloc((size_t)n * sizeof *v->count);
    v->tok = malloc((size_t)n * sizeof *v->tok);
    v->byte = malloc((size_t)n);
    if (!order || !v->first || !v->count || !v->tok || !v->byte) {
        free(order);
        return BAR_ERR_NOMEM;
    }
    int tail = 1;
    order[0] = 0;
    for (int k = 0; k < n; k++) {
        const tnode_t *o = &v->nodes[order[k]];
        v->first[k] = tail;
        v->count[k] = 0;
        v->tok[k] = o->tok;
        v->byte[k] = o->byte;
        for (int c = o->child; c >= 0; c = v->nodes[c].sib) {
            order[tail++] = c;
            v->count[k]++;
        }
    }
    free(order);
    free(v->nodes);
    v->nodes = NULL;
    return 0;
}

int gram_vocab_create(gram_vocab_t **out, int n_vocab, gram_piece_fn piece, void *ctx)
{
    gram_vocab_t *v = calloc(1, sizeof *v);
    if (!v) return BAR_ERR_NOMEM;
    v->n_vocab = n_vocab;
    if (!(v->mc = calloc(1, sizeof *v->mc))) {
        free(v);
        return BAR_ERR_NOMEM;
    }
    pthread_mutex_init(&v->mc->mu, NULL);
    v->mc->budget = MC_BYTES;
    v->tok_next = malloc((size_t)(n_vocab > 0 ? n_vocab : 1) * sizeof *v->tok_next);
    v->off = calloc((size_t)n_vocab + 1, sizeof *v->off);
    size_t cap = 0, used = 0;
    char buf[256];
    int rc = 0;
    tindex_t ix = {0};
    if (!v->tok_next || !v->off ||
        gram_grow((void **)&v->nodes, &v->cap_nodes, 1024, sizeof *v->nodes)) {
        rc = BAR_ERR_NOMEM;
        goto out;
    }
    v->nodes[0] = (tnode_t){-1, -1, -1, 0};
    v->n_nodes = 1;
    /* at most one node per byte of the vocabulary: size the index for that */
    size_t total = 0;
    for (int id = 0; id < n_vocab; id++) {
        size_t n = piece(ctx, id, buf, sizeof buf);
        total += n > sizeof buf ? 0 : n;
    }
    size_t slots = 1024;
    while (slots < 2 * total + 2)
        slots *= 2;
    ix.key = calloc(slots, sizeof *ix.key);
    ix.val = malloc(slots * sizeof *ix.val);
    ix.mask = slots - 1;
    ix.shift = 64;
    for (size_t k = slots; k > 1; k >>= 1)
        ix.shift--;
    if (!ix.key || !ix.val) {
        rc = BAR_ERR_NOMEM;
        goto out;
    }
    for (int id = 0; id < n_vocab; id++) {
        v->tok_next[id] = -1;
        size_t n = piece(ctx, id, buf, sizeof buf);
        if (n > sizeof buf) n = 0; /* a piece this long is never allowed */
        if (used + n > cap) {
            size_t nc = cap ? cap * 2 : 1 << 16;
            while (nc < used + n)
                nc *= 2;
            uint8_t *nb = realloc(v->bytes, nc);
            if (!nb) {
                rc = BAR_ERR_NOMEM;
                goto out;
            }
            v->bytes = nb;
            cap = nc;
        }
        if (n) memcpy(v->bytes + used, buf, n);
        v->off[id] = (uint32_t)used;
        used += n;
        v->off[id + 1] = (uint32_t)used;
        if (n == 0) continue;
        int node = 0;
        for (size_t i = 0; i < n && node >= 0; i++)
            node = trie_child(v, &ix, node, (uint8_t)buf[i]);
        if (node < 0) {
            rc = BAR_ERR_NOMEM;
            goto out;
        }
        v->tok_next[id] = v->nodes[node].tok;
        v->nodes[node].tok = id;
    }
    rc = relayout(v);
out:
    free(ix.key);
    free(ix.val);
    if (rc) {
        gram_vocab_destroy(v);
        return rc;
    }
    *out = v;
    return 0;
}

void gram_vocab_destroy(gram_vocab_t *v)
{
    if (!v) return;
    if (v->mc) {
        for (int b = 0; b < MC_BUCKETS; b++)
            while (v->mc->tab[b]) {
                mask_ent_t *e = v->mc->tab[b];
                v->mc->tab[b] = e->hnext;
                ent_free(e);
            }
        pthread_mutex_destroy(&v->mc->mu);
        free(v->mc);
    }
    free(v->nodes);
    free(v->first);
    free(v->count);
    free(v->tok);
    free(v->byte);
    free(v->tok_next);
    free(v->off);
    free(v->bytes);
    free(v);
}

int gram_vocab_n(const gram_vocab_t *v)
{
    return v->n_vocab;
}

const uint8_t *gram_vocab_bytes(const gram_vocab_t *v, int id, size_t *n)
{
    if (id < 0 || id >= v->n_vocab) {
        *n = 0;
        return NULL;
    }
    *n = v->off[id + 1] - v->off[id];
    return v->bytes ? v->bytes + v->off[id] : NULL;
}

/* The mask walk runs a small DFA built on the fly: every stack set reached
 * is interned by its structure (gram_set_key) and every (set, byte) transition is
 * remembered, so a trie node costs one table lookup once its parent's state
 * and byte were seen (inside a string almost every byte leads back to the
 * same state, and the trie has ~10^5 nodes). The sets and the per-state
 * transition tables live in s->tmp for the walk. */
typedef struct {
    uint64_t key;
    const frame_t **v;
    int n;
    uint8_t uni[32]; /* bytes some stack's top admits */
    int *next;       /* [256] state after a byte: -1 dead, -2 not computed yet */
    int dist;        /* shortest completion from here, bytes */
    int marked;      /* some token ends here */
} wstate_t;

typedef struct {
    gram_state_t *s;
    wstate_t *st;
    int n_st, cap_st;
    int oom;
    int limit;       /* mark a token only when its state's dist <= limit */
    int maxd;        /* the largest dist of a marked token's state */
    int32_t *tstate; /* [n_vocab] the state each marked token reached, or NULL */
} walk_t;

static int walk_intern(walk_t *w, const frame_t **v, int n, uint64_t key)
{
    for (int i = w->n_st - 1; i >= 0; i--) /* few states per walk */
        if (w->st[i].key == key && w->st[i].n == n) return i;
    if (gram_grow((void **)&w->st, &w->cap_st, w->n_st + 1, sizeof *w->st)) {
        w->oom = 1;
        return -1;
    }
    wstate_t *x = &w->st[w->n_st];
    x->key = key;
    x->v = v;
    x->n = n;
    x->next = gram_arena_alloc(&w->s->tmp, 256 * sizeof *x->next);
    if (!x->next) {
        w->oom = 1;
        return -1;
    }
    for (int b = 0; b < 256; b++)
        x->next[b] = -2;
    memset(x->uni, 0, sizeof x->uni);
    x->dist = gram_set_dist(w->s->g, v, n);
    x->marked = 0;
    for (int i = 0; i < n; i++)
        if (v[i]) {
            const uint8_t *set = w->s->g->sets[w->s->g->el[v[i]->pos] >> 2];
            for (int k = 0; k < 32; k++)
                x->uni[k] |= set[k];
        }
    return w->n_st++;
}

/* The state after byte b from state i, -1 when no stack takes it. */
static int walk_step(walk_t *w, int i, uint8_t b)
{
    if (w->st[i].next[b] != -2) return w->st[i].next[b];
    const frame_t **o = gram_arena_alloc(&w->s->tmp, SET_MAX * sizeof *o);
    if (!o) {
        w->oom = 1;
        return -1;
    }
    set_t st = {o, 0, 0};
    gram_advance(w->s->g, &w->s->tmp, w->st[i].v, w->st[i].n, b, &st);
    int to = -1;
    if (st.oom)
        w->oom = 1;
    else if (st.n > 0)
        to = walk_intern(w, o, st.n, gram_set_key(o, st.n));
    w->st[i].next[b] = to; /* (w->st may have moved: index again) */
    return to;
}

/* Mark every token under trie node `node` reachable from walk state i. */
static void walk(walk_t *w, const gram_vocab_t *v, int node, int i, uint64_t *mask)
{
    int end = v->first[node] + v->count[node];
    for (int c = v->first[node]; c < end && !w->oom; c++) {
        uint8_t b = v->byte[c];
        if (!(w->st[i].uni[b >> 3] >> (b & 7) & 1)) continue;
        int j = walk_step(w, i, b);
        if (j < 0) continue;
        int d = w->st[j].dist;
        if (v->tok[c] >= 0 && d <= w->limit) {
            if (d > w->maxd) w->maxd = d;
            w->st[j].marked = 1;
            for (int t = v->tok[c]; t >= 0; t = v->tok_next[t]) {
                mask[t >> 6] |= 1ull << (t & 63);
                if (w->tstate) w->tstate[t] = j;
            }
        }
        if (v->count[c]) walk(w, v, c, j, mask);
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* e's levels (the distinct shortest completions after its allowed tokens)
 * and each allowed token's rank among them, from the walk that built e. */
static void ent_levels(mask_ent_t *e, const walk_t *w, const gram_vocab_t *v, int words)
{
    int n = 0;
    for (int j = 0; j < w->n_st; j++)
        n += w->st[j].marked;
    if (n == 0) return;
    int *lv = malloc((size_t)n * sizeof *lv);
    if (!lv) {
        e->n_lv = LEVELS_MAX + 1; /* budget masks by walk */
        return;
    }
    int k = 0;
    for (int j = 0; j < w->n_st; j++)
        if (w->st[j].marked) lv[k++] = w->st[j].dist;
    qsort(lv, (size_t)n, sizeof *lv, cmp_int);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || lv[i] != lv[u - 1]) lv[u++] = lv[i];
    e->lv = lv;
    e->n_lv = u;
    if (u < 2 || u > LEVELS_MAX) return;
    uint8_t *srank = malloc((size_t)w->n_st);
    e->rank = malloc((size_t)v->n_vocab);
    if (!srank || !e->rank) {
        free(srank);
        free(e->rank);
        e->rank = NULL;
        e->n_lv = LEVELS_MAX + 1;
        return;
    }
    for (int j = 0; j < w->n_st; j++)
        if (w->st[j].marked) {
            int lo = 0, hi = u - 1; /* lv[r] == dist */
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (lv[mid] < w->st[j].dist)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            srank[j] = (uint8_t)lo;
        }
    memset(e->rank, RANK_NONE, (size_t)v->n_vocab);
    for (int i = 0; i < words; i++)
        for (uint64_t b = e->bits[i]; b; b &= b - 1) {
            int t = i * 64 + __builtin_ctzll(b);
            e->rank[t] = srank[w->tstate[t]];
        }
    free(srank);
}

/* The walk from s: every token whose shortest completion after it is <=
 * limit is set in mask; returns the largest such completion. With e (and
 * tstate, [n_vocab] scratch), e's levels and ranks are filled too. */
static int walk_all(gram_state_t *s, const gram_vocab_t *v, uint64_t *mask, int limit,
                    mask_ent_t *e, int32_t *tstate, int *oom)
{
    walk_t w = {0};
    w.s = s;
    w.limit = limit;
    w.tstate = tstate;
    mark_t m = gram_arena_mark(&s->tmp);
    int root = walk_intern(&w, s->cur, s->n_cur, s->cur_key);
    if (root >= 0) walk(&w, v, 0, root, mask);
    if (e && tstate && !w.oom) ent_levels(e, &w, v, (v->n_vocab + 63) / 64);
    if (e && (!tstate || w.oom)) e->n_lv = LEVELS_MAX + 1; /* no ranks: budget masks by walk */
    gram_arena_rewind(&s->tmp, m);
    free(w.st);
    *oom = w.oom;
    return w.maxd;
}

/* s's mask buffer and walk scratch for `words` words of tokens: 0, or -1 (OOM). */
static int mask_buffers(gram_state_t *s, int words)
{
    if (s->mask_words == words) return 0;
    free(s->mask);
    free(s->tstate);
    s->mask = malloc((size_t)words * sizeof *s->mask);
    s->tstate = malloc((size_t)words * 64 * sizeof *s->tstate);
    s->mask_words = s->mask && s->tstate ? words : 0;
    s->mask_r = -1;
    return s->mask_words ? 0 : -1;
}

/* A new entry for s's state (one reference: the caller's), or NULL. */
static mask_ent_t *ent_build(gram_state_t *s, const gram_vocab_t *v, int *cacheable)
{
    int words = (v->n_vocab + 63) / 64;
    mask_ent_t *e = calloc(1, sizeof *e + (size_t)words * sizeof(uint64_t));
    if (!e) return NULL;
    e->g = gram_ref(s->g);
    e->key = s->cur_key;
    e->refs = 1;
    e->owner = v->mc;
    if (mask_buffers(s, words)) {
        ent_free(e);
        return NULL;
    }
    int oom;
    e->maxd = walk_all(s, v, e->bits, INT_MAX, e, s->tstate, &oom);
    *cacheable = !oom; /* a walk cut short by OOM is not kept */
    e->bytes = sizeof *e + (size_t)words * sizeof(uint64_t) + (e->rank ? (size_t)v->n_vocab : 0) +
               (e->lv ? (size_t)e->n_lv * sizeof(int) : 0);
    return e;
}

static void ent_drop(mask_ent_t *e)
{
    if (!e) return;
    mcache_t *mc = e->owner;
    pthread_mutex_lock(&mc->mu);
    int last = --e->refs == 0;
    pthread_mutex_unlock(&mc->mu);
    if (last) ent_free(e);
}

static mask_ent_t **mc_slot(mcache_t *mc, const gram_t *g, uint64_t key)
{
    uint64_t h = (key ^ (uint64_t)(uintptr_t)g) * 0x9e3779b97f4a7c15ull;
    mask_ent_t **pp = &mc->tab[h >> 54 & (MC_BUCKETS - 1)];
    while (*pp && !((*pp)->key == key && (*pp)->g == g))
        pp = &(*pp)->hnext;
    return pp;
}

/* Take the least recently used entries but `keep` out of the table (mu
 * held) while over budget; those no state holds are chained on *dead. */
static void mc_evict(mcache_t *mc, const mask_ent_t *keep, mask_ent_t **dead)
{
    while (mc->bytes > mc->budget && mc->n > (keep ? 1 : 0)) {
        mask_ent_t *old = NULL;
        for (int b = 0; b < MC_BUCKETS; b++)
            for (mask_ent_t *x = mc->tab[b]; x; x = x->hnext)
                if (x != keep && (!old || x->lru < old->lru)) old = x;
        if (!old) break;
        mask_ent_t **op = mc_slot(mc, old->g, old->key);
        *op = old->hnext;
        old->in_table = 0;
        mc->bytes -= old->bytes;
        mc->n--;
        if (--old->refs == 0) {
            old->hnext = *dead;
            *dead = old;
        }
    }
}

static void free_chain(mask_ent_t *dead)
{
    while (dead) {
        mask_ent_t *x = dead;
        dead = x->hnext;
        ent_free(x);
    }
}

/* Put e in the table (mu held), the least recently used out while over
 * budget (chained on *dead when no state holds them). */
static void mc_insert(mcache_t *mc, mask_ent_t *e, mask_ent_t **dead)
{
    mask_ent_t **pp = mc_slot(mc, e->g, e->key);
    e->hnext = NULL;
    *pp = e;
    e->in_table = 1;
    e->refs++;
    e->lru = ++mc->clock;
    mc->bytes += e->bytes;
    mc->n++;
    mc_evict(mc, e, dead);
}

/* The entry of s's current state: the one it holds, one from the shared
 * cache, or a walk's (kept in the cache for every state). NULL: OOM. */
static mask_ent_t *state_entry(gram_state_t *s, const gram_vocab_t *v)
{
    mask_ent_t *e = s->ent;
    if (e && e->key == s->cur_key && e->g == s->g && e->owner == v->mc) return e;
    mcache_t *mc = v->mc;
    pthread_mutex_lock(&mc->mu);
    e = *mc_slot(mc, s->g, s->cur_key);
    if (e) {
        e->refs++;
        e->lru = ++mc->clock;
        mc->hits++;
    }
    pthread_mutex_unlock(&mc->mu);
    if (!e) {
        int cacheable;
        mask_ent_t *fresh = ent_build(s, v, &cacheable), *dead = NULL;
        if (!fresh) return NULL;
        pthread_mutex_lock(&mc->mu);
        mc->misses++;
        e = *mc_slot(mc, s->g, s->cur_key); /* another thread's walk may have won */
        if (e) {
            e->refs++;
            e->lru = ++mc->clock;
        } else {
            e = fresh;
            fresh = NULL;
            if (cacheable) mc_insert(mc, e, &dead);
        }
        pthread_mutex_unlock(&mc->mu);
        if (fresh) ent_free(fresh);
        free_chain(dead);
    }
    ent_drop(s->ent);
    s->ent = e;
    s->mask_r = -1;
    return e;
}

/* The tokens of e after which the output can be finished in `limit` bytes,
 * in s->mask (or e's own bits when that is all of them); *any: some are.
 * With none, and `last` 0, nothing is built (NULL): the caller asks again. */
static const uint64_t *ent_within(gram_state_t *s, const gram_vocab_t *v, mask_ent_t *e, int limit,
                                  int last, int *any)
{
    int r = 0;
    while (r < e->n_lv && e->n_lv <= LEVELS_MAX && e->lv[r] <= limit)
        r++;
    int words = (v->n_vocab + 63) / 64;
    if (e->n_lv > LEVELS_MAX) { /* no ranks kept: walk with the limit */
        int oom;
        memset(s->mask, 0, (size_t)words * sizeof *s->mask);
        walk_all(s, v, s->mask, limit, NULL, NULL, &oom);
        s->mask_r = -1;
        *any = 0;
        for (int w = 0; w < words && !*any; w++)
            *any = s->mask[w] != 0;
        return s->mask;
    }
    *any = r > 0; /* every level has a token */
    if (r == 0 && !last) return NULL;
    if (r == e->n_lv) return e->bits;
    if (s->mask_r == r) return s->mask;
    if (r == 0) {
        memset(s->mask, 0, (size_t)words * sizeof *s->mask);
    } else {
        const uint8_t *rank = e->rank;
        for (int w = 0; w < words; w++) {
            uint64_t b = 0;
            int base = w * 64, n = v->n_vocab - base < 64 ? v->n_vocab - base : 64;
            for (int k = 0; k < n; k++)
                b |= (uint64_t)(rank[base + k] < r) << k;
            s->mask[w] = b;
        }
    }
    s->mask_r = r;
    return s->mask;
}

const uint64_t *gram_state_mask(gram_state_t *s, const gram_vocab_t *v)
{
    mask_ent_t *e = state_entry(s, v);
    return e ? e->bits : NULL;
}

const uint64_t *gram_state_mask_within(gram_state_t *s, const gram_vocab_t *v, int limit)
{
    mask_ent_t *e = state_entry(s, v);
    if (!e || limit >= e->maxd) return e ? e->bits : NULL; /* the budget binds no token */
    if (limit < 0) limit = 0;
    if (mask_buffers(s, (v->n_vocab + 63) / 64)) return NULL;
    int any;
    const uint64_t *m = ent_within(s, v, e, limit, 0, &any);
    if (any) return m;
    /* nothing finishes in time: at least make progress toward the end */
    int d = gram_state_min_left(s);
    return ent_within(s, v, e, d > 0 ? d - 1 : 0, 1, &any);
}

void gram_vocab_mask_stats(const gram_vocab_t *v, gram_mask_stats_t *out)
{
    pthread_mutex_lock(&v->mc->mu);
    out->hits = v->mc->hits;
    out->misses = v->mc->misses;
    out->entries = v->mc->n;
    out->bytes = v->mc->bytes;
    pthread_mutex_unlock(&v->mc->mu);
}

void gram_vocab_set_mask_budget(gram_vocab_t *v, size_t bytes)
{
    mask_ent_t *dead = NULL;
    pthread_mutex_lock(&v->mc->mu);
    v->mc->budget = bytes;
    mc_evict(v->mc, NULL, &dead);
    pthread_mutex_unlock(&v->mc->mu);
    free_chain(dead);
}

void gram_state_masks_free(gram_state_t *s)
{
    ent_drop(s->ent);
    s->ent = NULL;
    free(s->mask);
    free(s->tstate);
}
