/* grammar.c — byte-level context-free grammars: the builder, the frame
 * arenas and the pushdown matcher (see grammar.h). The vocabulary trie and
 * the token masks are grammar_mask.c's.
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

#include "engine/grammar_int.h"

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

int gram_grow(void **p, int *cap, int need, size_t elsz)
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
    if (gram_grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules)) {
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
    if (gram_grow((void **)&s->el, &s->cap, s->n + 1, sizeof *s->el)) {
        s->oom = 1;
        return;
    }
    s->el[s->n++] = e;
}

static int add_set(gram_builder_t *b, const uint8_t set[32])
{
    if (gram_grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, sizeof *b->sets)) {
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
    if (gram_grow((void **)&b->el, &b->cap_el, b->n_el + s->n + 1, sizeof *b->el) ||
        gram_grow((void **)&r->starts, &r->cap, r->n + 1, sizeof *r->starts)) {
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

void *gram_arena_alloc(arena_t *a, size_t n)
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

mark_t gram_arena_mark(const arena_t *a)
{
    return (mark_t){a->cur, a->cur ? a->cur->used : 0};
}

void gram_arena_rewind(arena_t *a, mark_t m)
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
        frame_t *f = gram_arena_alloc(a, sizeof *f);
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
        frame_t *f = gram_arena_alloc(a, sizeof *f);
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

void gram_advance(const gram_t *g, arena_t *a, const frame_t *const *in, int n_in, unsigned c,
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

uint64_t gram_set_key(const frame_t *const *v, int n)
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
    frame_t *n = gram_arena_alloc(a, sizeof *n);
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
    s->cur_key = gram_set_key(s->cur, s->n_cur);
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
    gram_state_masks_free(s);
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
        gram_advance(s->g, &s->keep, s->cur, s->n_cur, p[i], &st);
        if (st.n == 0 || st.oom) return -1; /* (only on OOM: allows() said yes) */
        const frame_t **t = s->cur;
        s->cur = s->nxt;
        s->nxt = t;
        s->n_cur = st.n;
    }
    if (s->keep.total > KEEP_COMPACT) compact(s);
    s->cur_key = gram_set_key(s->cur, s->n_cur);
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

int gram_set_dist(const gram_t *g, const frame_t *const *v, int n)
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
    return gram_set_dist(s->g, s->cur, s->n_cur);
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
    mark_t m = gram_arena_mark(&s->tmp);
    const frame_t **a = gram_arena_alloc(&s->tmp, SET_MAX * sizeof *a);
    const frame_t **b = gram_arena_alloc(&s->tmp, SET_MAX * sizeof *b);
    int ok = a && b;
    const frame_t *const *in = s->cur;
    int n_in = s->n_cur;
    for (size_t i = 0; ok && i < n; i++) {
        set_t st = {a, 0, 0};
        gram_advance(s->g, &s->tmp, in, n_in, p[i], &st);
        ok = st.n > 0 && !st.oom;
        in = a;
        n_in = st.n;
        const frame_t **t = a;
        a = b;
        b = t;
    }
    gram_arena_rewind(&s->tmp, m);
    return ok;
}
