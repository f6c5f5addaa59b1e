/* grammar.c — byte-level context-free grammars, their pushdown matcher and
 * token masks (see grammar.h).
 *
 * Layout: every alternative of every rule is a run of int32 elements in one
 * array, ended by 0 (END). An element is (index << 2) | kind: kind 1 a byte
 * class (index into sets, 32 bytes each), kind 2 a rule reference. A stack
 * frame is (pos, parent): pos is the element to match next, parent the frame
 * to continue with when pos's alternative ends. A continuation that would
 * start at an END is skipped (the parent is used directly): a tail call, so
 * right recursion (chars ::= char chars | "") keeps the stack flat and a
 * state inside a string is the same state after every character.
 *
 * Memory: frames live in arenas of 64 KiB chunks. A state keeps its frames
 * in `keep` (compacted when it grows past KEEP_COMPACT); the mask walk uses
 * `tmp`, rewound after each trie node. */
#include "engine/grammar.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define E_END 0
#define K_SET 1
#define K_REF 2
#define SET_MAX 256       /* stacks kept alive at once (more are dropped) */
#define EXPAND_DEPTH 256  /* rule references expanded without a byte */
#define MASK_CACHE 32     /* masks remembered per state */
#define CHUNK (64 * 1024) /* arena chunk bytes */
#define KEEP_COMPACT (4u << 20)
#define DIST_INF (1 << 29) /* "no completion" in shortest-completion lengths */

struct gram {
    atomic_int refs;
    int32_t *el;
    int n_el;
    uint8_t (*sets)[32];
    int n_sets;
    int n_rules;
    int *alt_off;  /* [n_rules + 1] into alts */
    int *alts;     /* element index where each alternative starts */
    int32_t *rest; /* [n_el] fewest bytes that finish an alternative from element i */
};

/* ---- builder ---- */

typedef struct {
    int *starts; /* alternative starts in el */
    int n, cap;
} brule_t;

struct gram_builder {
    int32_t *el;
    int n_el, cap_el;
    uint8_t (*sets)[32];
    int n_sets, cap_sets;
    int byte_set[256]; /* set index of the single-byte class, or -1 */
    brule_t *rules;
    int n_rules, cap_rules;
    int oom;
};

static int grow(void **p, int *cap, int need, size_t elsz)
{
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, (size_t)nc * elsz);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

int gram_builder_create(gram_builder_t **out)
{
    gram_builder_t *b = calloc(1, sizeof *b);
    if (!b) return BAR_ERR_NOMEM;
    for (int i = 0; i < 256; i++)
        b->byte_set[i] = -1;
    *out = b;
    return 0;
}

void gram_builder_destroy(gram_builder_t *b)
{
    if (!b) return;
    for (int i = 0; i < b->n_rules; i++)
        free(b->rules[i].starts);
    free(b->rules);
    free(b->el);
    free(b->sets);
    free(b);
}

int gram_rule_new(gram_builder_t *b)
{
    if (grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules)) {
        b->oom = 1;
        return -1;
    }
    memset(&b->rules[b->n_rules], 0, sizeof b->rules[0]);
    return b->n_rules++;
}

int gram_n_rules_building(const gram_builder_t *b)
{
    return b->n_rules;
}

static void seq_push(gram_seq_t *s, int32_t e)
{
    if (s->oom) return;
    if (grow((void **)&s->el, &s->cap, s->n + 1, sizeof *s->el)) {
        s->oom = 1;
        return;
    }
    s->el[s->n++] = e;
}

static int add_set(gram_builder_t *b, const uint8_t set[32])
{
    if (grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, sizeof *b->sets)) {
        b->oom = 1;
        return -1;
    }
    memcpy(b->sets[b->n_sets], set, 32);
    return b->n_sets++;
}

void gram_seq_set(gram_builder_t *b, gram_seq_t *s, const uint8_t set[32])
{
    int i = add_set(b, set);
    if (i < 0) {
        s->oom = 1;
        return;
    }
    seq_push(s, (int32_t)i << 2 | K_SET);
}

void gram_seq_range(gram_builder_t *b, gram_seq_t *s, int lo, int hi)
{
    if (lo == hi && b->byte_set[lo & 255] >= 0) {
        seq_push(s, (int32_t)b->byte_set[lo & 255] << 2 | K_SET);
        return;
    }
    uint8_t set[32] = {0};
    for (int c = lo; c <= hi && c < 256; c++)
        set[c >> 3] |= (uint8_t)(1u << (c & 7));
    int i = add_set(b, set);
    if (i < 0) {
        s->oom = 1;
        return;
    }
    if (lo == hi) b->byte_set[lo & 255] = i;
    seq_push(s, (int32_t)i << 2 | K_SET);
}

void gram_seq_lit(gram_builder_t *b, gram_seq_t *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gram_seq_range(b, s, (unsigned char)lit[i], (unsigned char)lit[i]);
}

void gram_seq_ref(gram_seq_t *s, int rule)
{
    seq_push(s, (int32_t)rule << 2 | K_REF);
}

void gram_seq_free(gram_seq_t *s)
{
    free(s->el);
    memset(s, 0, sizeof *s);
}

int gram_rule_add(gram_builder_t *b, int rule, const gram_seq_t *s)
{
    if (s->oom || b->oom || rule < 0 || rule >= b->n_rules) {
        b->oom = 1;
        return BAR_ERR_NOMEM;
    }
    brule_t *r = &b->rules[rule];
    if (grow((void **)&b->el, &b->cap_el, b->n_el + s->n + 1, sizeof *b->el) ||
        grow((void **)&r->starts, &r->cap, r->n + 1, sizeof *r->starts)) {
        b->oom = 1;
        return BAR_ERR_NOMEM;
    }
    r->starts[r->n++] = b->n_el;
    if (s->n) memcpy(b->el + b->n_el, s->el, (size_t)s->n * sizeof *s->el);
    b->n_el += s->n;
    b->el[b->n_el++] = E_END;
    return 0;
}

static void gram_free(gram_t *g)
{
    if (!g) return;
    free(g->el);
    free(g->sets);
    free(g->alt_off);
    free(g->alts);
    free(g->rest);
    free(g);
}

/* A min-heap of (cost, rule) for min_lengths. */
typedef struct {
    int64_t c;
    int r;
} mlh_t;

static void mlh_push(mlh_t *h, int *n, int64_t c, int r)
{
    int i = (*n)++;
    for (; i > 0 && h[(i - 1) / 2].c > c; i = (i - 1) / 2)
        h[i] = h[(i - 1) / 2];
    h[i] = (mlh_t){c, r};
}

static mlh_t mlh_pop(mlh_t *h, int *n)
{
    mlh_t top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int k = 2 * i + 1;
        if (k >= *n) break;
        if (k + 1 < *n && h[k + 1].c < h[k].c) k++;
        if (h[k].c >= last.c) break;
        h[i] = h[k];
        i = k;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Shortest completions: minlen of a rule is the fewest bytes of any sentence
 * it derives (a rule that never ends stays at DIST_INF); rest[i] is the sum
 * of its elements' costs from i to the alternative's END. A stack then needs
 * the sum of rest over its frames.
 * minlen is the least fixed point of sums of non-negative costs, found with
 * Knuth's generalisation of Dijkstra: an alternative is ready once every rule
 * it references is final; the cheapest ready alternative makes its rule
 * final. O(E log A) for E elements and A alternatives; the plain fixed-point
 * iteration took one pass per rule of a reference chain (quadratic: an
 * object with 8,000 optional properties took 10 s on the event loop). */
static int min_lengths(gram_t *g)
{
    int nr = g->n_rules, na = g->alt_off[nr];
    int32_t *minlen = malloc((size_t)nr * sizeof *minlen);
    int *pend = calloc((size_t)na, sizeof *pend), *rule_of = malloc((size_t)na * sizeof *rule_of);
    int *use_off = calloc((size_t)nr + 1, sizeof *use_off);
    int64_t *sum = calloc((size_t)na, sizeof *sum);
    uint8_t *final = calloc((size_t)nr, 1);
    mlh_t *heap = malloc((size_t)(na > 0 ? na : 1) * sizeof *heap);
    int *use = NULL, rc = -1;
    g->rest = malloc((size_t)g->n_el * sizeof *g->rest);
    if (!minlen || !pend || !rule_of || !use_off || !sum || !final || !heap || !g->rest) goto out;
    /* each alternative's known bytes and unresolved references; the
     * alternatives that reference each rule (once per occurrence) */
    for (int r = 0; r < nr; r++)
        for (int k = g->alt_off[r]; k < g->alt_off[r + 1]; k++) {
            rule_of[k] = r;
            for (int i = g->alts[k]; g->el[i] != E_END; i++)
                if ((g->el[i] & 3) == K_SET)
                    sum[k]++;
                else {
                    pend[k]++;
                    use_off[(g->el[i] >> 2) + 1]++;
                }
        }
    for (int r = 0; r < nr; r++)
        use_off[r + 1] += use_off[r];
    use = malloc((size_t)(use_off[nr] > 0 ? use_off[nr] : 1) * sizeof *use);
    if (!use) goto out;
    {
        int *at = malloc((size_t)(nr > 0 ? nr : 1) * sizeof *at);
        if (!at) goto out;
        memcpy(at, use_off, (size_t)nr * sizeof *at);
        for (int k = 0; k < na; k++)
            for (int i = g->alts[k]; g->el[i] != E_END; i++)
                if ((g->el[i] & 3) == K_REF) use[at[g->el[i] >> 2]++] = k;
        free(at);
    }
    int nh = 0;
    for (int k = 0; k < na; k++)
        if (pend[k] == 0 && sum[k] < DIST_INF) mlh_push(heap, &nh, sum[k], rule_of[k]);
    for (int r = 0; r < nr; r++)
        minlen[r] = DIST_INF;
    while (nh > 0) {
        mlh_t t = mlh_pop(heap, &nh);
        if (final[t.r]) continue;
        final[t.r] = 1;
        minlen[t.r] = (int32_t)t.c;
        for (int u = use_off[t.r]; u < use_off[t.r + 1]; u++) {
            int k = use[u];
            sum[k] += t.c;
            if (--pend[k] == 0 && sum[k] < DIST_INF && !final[rule_of[k]])
                mlh_push(heap, &nh, sum[k], rule_of[k]);
        }
    }
    for (int i = g->n_el - 1; i >= 0; i--) {
        int32_t e = g->el[i];
        if (e == E_END) {
            g->rest[i] = 0;
            continue;
        }
        int64_t s = (int64_t)((e & 3) == K_SET ? 1 : minlen[e >> 2]) + g->rest[i + 1];
        g->rest[i] = s < DIST_INF ? (int32_t)s : DIST_INF;
    }
    rc = 0;
out:
    free(minlen);
    free(pend);
    free(rule_of);
    free(use_off);
    free(sum);
    free(final);
    free(heap);
    free(use);
    return rc;
}

int gram_build(gram_builder_t *b, gram_t **out, bar_msg_t *msg)
{
    *out = NULL;
    int rc = 0;
    gram_t *g = NULL;
    if (b->oom) {
        rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory building a grammar");
        goto done;
    }
    if (b->n_rules == 0) {
        rc = bar_fail(msg, BAR_ERR_INVALID, "empty grammar");
        goto done;
    }
    for (int i = 0; i < b->n_el; i++)
        if ((b->el[i] & 3) == K_REF && (b->el[i] >> 2) >= b->n_rules) {
            rc = bar_fail(msg, BAR_ERR_INVALID, "reference to an unknown rule");
            goto done;
        }
    for (int r = 0; r < b->n_rules; r++)
        if (b->rules[r].n == 0) {
            rc = bar_fail(msg, BAR_ERR_INVALID, "rule %d has no alternative", r);
            goto done;
        }
    g = calloc(1, sizeof *g);
    if (!g) goto nomem;
    atomic_init(&g->refs, 1);
    int n_alts = 0;
    for (int r = 0; r < b->n_rules; r++)
        n_alts += b->rules[r].n;
    g->alt_off = malloc(((size_t)b->n_rules + 1) * sizeof *g->alt_off);
    g->alts = malloc((size_t)n_alts * sizeof *g->alts);
    if (!g->alt_off || !g->alts) goto nomem;
    int k = 0;
    for (int r = 0; r < b->n_rules; r++) {
        g->alt_off[r] = k;
        for (int a = 0; a < b->rules[r].n; a++)
            g->alts[k++] = b->rules[r].starts[a];
    }
    g->alt_off[b->n_rules] = k;
    g->n_rules = b->n_rules;
    g->el = b->el;
    g->n_el = b->n_el;
    g->sets = b->sets;
    g->n_sets = b->n_sets;
    b->el = NULL;
    b->sets = NULL;
    if (min_lengths(g)) goto nomem;
    *out = g;
    goto done;
nomem:
    gram_free(g);
    rc = bar_fail(msg, BAR_ERR_NOMEM, "out of memory building a grammar");
done:
    gram_builder_destroy(b);
    return rc;
}

int gram_n_rules(const gram_t *g)
{
    return g->n_rules;
}

gram_t *gram_ref(gram_t *g)
{
    if (g) atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void gram_release(gram_t *g)
{
    if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) gram_free(g);
}

/* ---- arenas ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used;
    char mem[];
} chunk_t;

typedef struct {
    chunk_t *head; /* first chunk */
    chunk_t *cur;  /* chunk being filled */
    size_t total;  /* bytes in all chunks */
} arena_t;

typedef struct {
    chunk_t *cur;
    size_t used;
} mark_t;

static void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n > CHUNK) return NULL;
    if (!a->cur || a->cur->used + n > CHUNK) {
        chunk_t *c = a->cur ? a->cur->next : a->head;
        if (!c) {
            c = malloc(sizeof *c + CHUNK);
            if (!c) return NULL;
            c->next = NULL;
            if (a->cur)
                a->cur->next = c;
            else
                a->head = c;
            a->total += CHUNK;
        }
        c->used = 0;
        a->cur = c;
    }
    void *p = a->cur->mem + a->cur->used;
    a->cur->used += n;
    return p;
}

static mark_t arena_mark(const arena_t *a)
{
    return (mark_t){a->cur, a->cur ? a->cur->used : 0};
}

static void arena_rewind(arena_t *a, mark_t m)
{
    a->cur = m.cur;
    if (m.cur) m.cur->used = m.used;
}

static void arena_free(arena_t *a)
{
    chunk_t *c = a->head;
    while (c) {
        chunk_t *n = c->next;
        free(c);
        c = n;
    }
    memset(a, 0, sizeof *a);
}

/* ---- matching ---- */

typedef struct frame {
    int32_t pos;
    const struct frame *parent;
} frame_t;

typedef struct {
    const frame_t **v; /* NULL entry: the empty (complete) stack */
    int n;
    int oom;
} set_t;

typedef struct {
    uint64_t key;
    uint64_t lru;
    uint64_t *bits;
    int limit; /* tokens after which the shortest completion is <= limit bytes */
    int maxd;  /* the longest shortest completion after a token it allows */
} mask_ent_t;

struct gram_state {
    gram_t *g;
    arena_t keep, tmp;
    const frame_t **cur; /* [SET_MAX] */
    int n_cur;
    const frame_t **nxt; /* [SET_MAX] */
    uint64_t *mask;
    int mask_words;
    mask_ent_t cache[MASK_CACHE];
    uint64_t clock;
    uint64_t cur_key; /* structure hash of cur */
};

static int set_has(const set_t *s, int32_t pos, const frame_t *parent, int empty)
{
    for (int i = 0; i < s->n; i++) {
        const frame_t *f = s->v[i];
        if (empty ? f == NULL : (f && f->pos == pos && f->parent == parent)) return 1;
    }
    return 0;
}

static void expand(const gram_t *g, arena_t *a, set_t *out, int32_t pos, const frame_t *parent,
                   int depth)
{
    if (depth > EXPAND_DEPTH || out->n >= SET_MAX) return;
    int32_t e = g->el[pos];
    if (e == E_END) {
        if (!parent) {
            if (!set_has(out, 0, NULL, 1)) out->v[out->n++] = NULL;
            return;
        }
        expand(g, a, out, parent->pos, parent->parent, depth + 1);
        return;
    }
    if ((e & 3) == K_SET) {
        if (set_has(out, pos, parent, 0)) return;
        frame_t *f = arena_alloc(a, sizeof *f);
        if (!f) {
            out->oom = 1;
            return;
        }
        f->pos = pos;
        f->parent = parent;
        out->v[out->n++] = f;
        return;
    }
    int r = e >> 2;
    const frame_t *cont = parent;
    if (g->el[pos + 1] != E_END) {
        frame_t *f = arena_alloc(a, sizeof *f);
        if (!f) {
            out->oom = 1;
            return;
        }
        f->pos = pos + 1;
        f->parent = parent;
        cont = f;
    }
    for (int k = g->alt_off[r]; k < g->alt_off[r + 1]; k++)
        expand(g, a, out, g->alts[k], cont, depth + 1);
}

static int admits(const gram_t *g, const frame_t *f, unsigned c)
{
    const uint8_t *set = g->sets[g->el[f->pos] >> 2];
    return set[c >> 3] >> (c & 7) & 1;
}

static void advance(const gram_t *g, arena_t *a, const frame_t *const *in, int n_in, unsigned c,
                    set_t *out)
{
    out->n = 0;
    for (int i = 0; i < n_in; i++) {
        const frame_t *f = in[i];
        if (f && admits(g, f, c)) expand(g, a, out, f->pos + 1, f->parent, 0);
    }
}

static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

static uint64_t set_key(const frame_t *const *v, int n)
{
    uint64_t h = (uint64_t)n;
    for (int i = 0; i < n; i++) {
        if (!v[i]) {
            h = mix(h, 0xfffffffeull);
            continue;
        }
        for (const frame_t *f = v[i]; f; f = f->parent)
            h = mix(h, (uint64_t)f->pos + 1);
        h = mix(h, 0xffffffffull);
    }
    return h;
}

/* Copy cur's chains into a fresh keep arena (frames of dead stacks go). */
static const frame_t *copy_chain(arena_t *a, const frame_t *f)
{
    if (!f) return NULL;
    const frame_t *p = copy_chain(a, f->parent);
    frame_t *n = arena_alloc(a, sizeof *n);
    if (!n) return f; /* keep the old one: the old arena is then kept too */
    n->pos = f->pos;
    n->parent = p;
    return n;
}

static void compact(gram_state_t *s)
{
    arena_t fresh = {0};
    for (int i = 0; i < s->n_cur; i++) {
        const frame_t *c = copy_chain(&fresh, s->cur[i]);
        if (s->cur[i] && c == s->cur[i]) {
            arena_free(&fresh); /* out of memory: keep what we have */
            return;
        }
        s->nxt[i] = c;
    }
    memcpy(s->cur, s->nxt, (size_t)s->n_cur * sizeof *s->cur);
    arena_free(&s->keep);
    s->keep = fresh;
}

int gram_state_create(gram_state_t **out, gram_t *g)
{
    gram_state_t *s = calloc(1, sizeof *s);
    if (!s) return BAR_ERR_NOMEM;
    s->cur = malloc(SET_MAX * sizeof *s->cur);
    s->nxt = malloc(SET_MAX * sizeof *s->nxt);
    if (!s->cur || !s->nxt) {
        free(s->cur);
        free(s->nxt);
        free(s);
        return BAR_ERR_NOMEM;
    }
    s->g = gram_ref(g);
    set_t st = {s->cur, 0, 0};
    for (int k = g->alt_off[0]; k < g->alt_off[1]; k++)
        expand(g, &s->keep, &st, g->alts[k], NULL, 0);
    s->n_cur = st.n;
    if (st.oom) {
        gram_state_destroy(s);
        return BAR_ERR_NOMEM;
    }
    s->cur_key = set_key(s->cur, s->n_cur);
    *out = s;
    return 0;
}

void gram_state_destroy(gram_state_t *s)
{
    if (!s) return;
    arena_free(&s->keep);
    arena_free(&s->tmp);
    free(s->cur);
    free(s->nxt);
    free(s->mask);
    for (int i = 0; i < MASK_CACHE; i++)
        free(s->cache[i].bits);
    gram_release(s->g);
    free(s);
}

int gram_state_feed(gram_state_t *s, const void *bytes, size_t n)
{
    const uint8_t *p = bytes;
    if (n == 0) return 0;
    /* dry run first, so a rejected input leaves the state as it was */
    if (!gram_state_allows(s, bytes, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        set_t st = {s->nxt, 0, 0};
        advance(s->g, &s->keep, s->cur, s->n_cur, p[i], &st);
        if (st.n == 0 || st.oom) return -1; /* (only on OOM: allows() said yes) */
        const frame_t **t = s->cur;
        s->cur = s->nxt;
        s->nxt = t;
        s->n_cur = st.n;
    }
    if (s->keep.total > KEEP_COMPACT) compact(s);
    s->cur_key = set_key(s->cur, s->n_cur);
    return 0;
}

int gram_state_accepting(const gram_state_t *s)
{
    for (int i = 0; i < s->n_cur; i++)
        if (!s->cur[i]) return 1;
    return 0;
}

/* Fewest bytes that complete one stack. */
static int chain_dist(const gram_t *g, const frame_t *f)
{
    int64_t d = 0;
    for (; f && d < DIST_INF; f = f->parent)
        d += g->rest[f->pos];
    return d < DIST_INF ? (int)d : DIST_INF;
}

static int set_dist(const gram_t *g, const frame_t *const *v, int n)
{
    int best = DIST_INF;
    for (int i = 0; i < n && best > 0; i++) {
        int d = chain_dist(g, v[i]);
        if (d < best) best = d;
    }
    return best;
}

int gram_state_min_left(const gram_state_t *s)
{
    return set_dist(s->g, s->cur, s->n_cur);
}

int gram_state_done(const gram_state_t *s)
{
    for (int i = 0; i < s->n_cur; i++)
        if (s->cur[i]) return 0;
    return s->n_cur > 0;
}

int gram_state_allows(gram_state_t *s, const void *bytes, size_t n)
{
    const uint8_t *p = bytes;
    mark_t m = arena_mark(&s->tmp);
    const frame_t **a = arena_alloc(&s->tmp, SET_MAX * sizeof *a);
    const frame_t **b = arena_alloc(&s->tmp, SET_MAX * sizeof *b);
    int ok = a && b;
    const frame_t *const *in = s->cur;
    int n_in = s->n_cur;
    for (size_t i = 0; ok && i < n; i++) {
        set_t st = {a, 0, 0};
        advance(s->g, &s->tmp, in, n_in, p[i], &st);
        ok = st.n > 0 && !st.oom;
        in = a;
        n_in = st.n;
        const frame_t **t = a;
        a = b;
        b = t;
    }
    arena_rewind(&s->tmp, m);
    return ok;
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
    if (grow((void **)&v->nodes, &v->cap_nodes, v->n_nodes + 1, sizeof *v->nodes)) return -1;
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
        grow((void **)&v->nodes, &v->cap_nodes, 1024, sizeof *v->nodes)) {
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
 * is interned by its structure (set_key) and every (set, byte) transition is
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
    if (grow((void **)&w->st, &w->cap_st, w->n_st + 1, sizeof *w->st)) {
        w->oom = 1;
        return -1;
    }
    wstate_t *x = &w->st[w->n_st];
    x->key = key;
    x->v = v;
    x->n = n;
    x->next = arena_alloc(&w->s->tmp, 256 * sizeof *x->next);
    if (!x->next) {
        w->oom = 1;
        return -1;
    }
    for (int b = 0; b < 256; b++)
        x->next[b] = -2;
    memset(x->uni, 0, sizeof x->uni);
    x->dist = set_dist(w->s->g, v, n);
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
    const frame_t **o = arena_alloc(&w->s->tmp, SET_MAX * sizeof *o);
    if (!o) {
        w->oom = 1;
        return -1;
    }
    set_t st = {o, 0, 0};
    advance(w->s->g, &w->s->tmp, w->st[i].v, w->st[i].n, b, &st);
    int to = -1;
    if (st.oom)
        w->oom = 1;
    else if (st.n > 0)
        to = walk_intern(w, o, st.n, set_key(o, st.n));
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
    mark_t m = arena_mark(&s->tmp);
    int root = walk_intern(&w, s->cur, s->n_cur, s->cur_key);
    if (root >= 0) walk(&w, v, 0, root, mask);
    arena_rewind(&s->tmp, m);
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
