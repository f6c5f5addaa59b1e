/* grammar_mask.c — the vocabulary as a byte trie and the token masks of a
 * grammar state (see grammar.h): the walk of the trie from a state, pruned
 * at the first rejected byte, its budget-limited form (gram_state_mask_within)
 * and the per-state mask cache keyed by the state's structure. The matcher
 * it walks with is grammar.c's. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grammar.h"
#include "engine/grammar_int.h"

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
} wstate_t;

typedef struct {
    gram_state_t *s;
    wstate_t *st;
    int n_st, cap_st;
    int oom;
    int limit; /* mark a token only when its state's dist <= limit */
    int maxd;  /* the largest dist of a marked token's state */
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
            for (int t = v->tok[c]; t >= 0; t = v->tok_next[t])
                mask[t >> 6] |= 1ull << (t & 63);
        }
        if (v->count[c]) walk(w, v, c, j, mask);
    }
}

/* The walk; returns the largest shortest completion among marked tokens. */
static int walk_all(gram_state_t *s, const gram_vocab_t *v, uint64_t *mask, int limit)
{
    walk_t w = {0};
    w.s = s;
    w.limit = limit;
    mark_t m = gram_arena_mark(&s->tmp);
    int root = walk_intern(&w, s->cur, s->n_cur, s->cur_key);
    if (root >= 0) walk(&w, v, 0, root, mask);
    gram_arena_rewind(&s->tmp, m);
    free(w.st);
    return w.maxd;
}

static const uint64_t *mask_limited(gram_state_t *s, const gram_vocab_t *v, int limit, int *maxd)
{
    int words = (v->n_vocab + 63) / 64;
    if (s->mask_words != words) {
        free(s->mask);
        for (int i = 0; i < MASK_CACHE; i++) {
            free(s->cache[i].bits);
            s->cache[i].bits = NULL;
        }
        s->mask = calloc((size_t)words, sizeof *s->mask);
        s->mask_words = s->mask ? words : 0;
        if (!s->mask) return NULL;
    }
    s->clock++;
    mask_ent_t *victim = &s->cache[0];
    for (int i = 0; i < MASK_CACHE; i++) {
        mask_ent_t *c = &s->cache[i];
        if (c->bits && c->key == s->cur_key && c->limit == limit) {
            c->lru = s->clock;
            *maxd = c->maxd;
            return c->bits;
        }
        if (!c->bits || c->lru < victim->lru) victim = c;
        if (!victim->bits) break;
    }
    memset(s->mask, 0, (size_t)words * sizeof *s->mask);
    *maxd = walk_all(s, v, s->mask, limit);
    /* a budget-limited mask is not kept: its limit shrinks every step, and
     * keeping it would push out the masks of states that recur */
    if (limit != INT_MAX) return s->mask;
    if (!victim->bits) victim->bits = malloc((size_t)words * sizeof *victim->bits);
    if (!victim->bits) return s->mask;
    memcpy(victim->bits, s->mask, (size_t)words * sizeof *s->mask);
    victim->key = s->cur_key;
    victim->limit = limit;
    victim->maxd = *maxd;
    victim->lru = s->clock;
    return victim->bits;
}

const uint64_t *gram_state_mask(gram_state_t *s, const gram_vocab_t *v)
{
    int maxd;
    return mask_limited(s, v, INT_MAX, &maxd);
}

const uint64_t *gram_state_mask_within(gram_state_t *s, const gram_vocab_t *v, int limit)
{
    int maxd = 0;
    const uint64_t *m = mask_limited(s, v, INT_MAX, &maxd);
    if (!m || limit >= maxd) return m; /* the budget binds no token: the cached mask */
    if (limit < 0) limit = 0;
    int words = (v->n_vocab + 63) / 64;
    m = mask_limited(s, v, limit, &maxd);
    for (int w = 0; m && w < words; w++)
        if (m[w]) return m;
    /* nothing finishes in time: at least make progress toward the end */
    int d = gram_state_min_left(s);
    return mask_limited(s, v, d > 0 ? d - 1 : 0, &maxd);
}

void gram_state_masks_free(gram_state_t *s)
{
    free(s->mask);
    for (int i = 0; i < MASK_CACHE; i++)
        free(s->cache[i].bits);
}
