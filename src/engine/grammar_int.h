/* grammar_int.h — what the two files of the grammar share: the compiled
 * grammar, the frame arenas, the stack sets and the state, and the matcher
 * calls the token masks use. grammar.c builds grammars and matches bytes;
 * grammar_mask.c holds the vocabulary trie and the token masks with their
 * cache. Not a public interface (grammar.h is). */
#ifndef BARISTA_ENGINE_GRAMMAR_INT_H
#define BARISTA_ENGINE_GRAMMAR_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/grammar.h"

#define E_END 0
#define K_SET 1
#define K_REF 2
#define SET_MAX 256       /* stacks kept alive at once (more are dropped) */
#define EXPAND_DEPTH 256  /* rule references expanded without a byte */
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

typedef struct mask_ent mask_ent_t; /* a shared mask cache entry (grammar_mask.c) */

struct gram_state {
    gram_t *g;
    arena_t keep, tmp;
    const frame_t **cur; /* [SET_MAX] */
    int n_cur;
    const frame_t **nxt; /* [SET_MAX] */
    uint64_t cur_key;    /* structure hash of cur */
    /* masks (grammar_mask.c) */
    mask_ent_t *ent; /* the cache entry of the last mask asked for (a reference) */
    uint64_t *mask;  /* a budget-limited mask built here */
    int mask_words;
    int mask_r;      /* s->mask holds the tokens of ent's lowest mask_r levels; -1: other */
    int32_t *tstate; /* [mask_words * 64] walk scratch: the walk state each token reached */
};

/* Grow *p (an array of elsz-byte elements, *cap of them) to hold need. */
int gram_grow(void **p, int *cap, int need, size_t elsz);
void *gram_arena_alloc(arena_t *a, size_t n);
mark_t gram_arena_mark(const arena_t *a);
void gram_arena_rewind(arena_t *a, mark_t m);
/* The stacks of in[0, n_in) that take byte c, advanced and expanded, in out. */
void gram_advance(const gram_t *g, arena_t *a, const frame_t *const *in, int n_in, unsigned c,
                  set_t *out);
/* The structure hash of a stack set (equal sets, equal keys, across states). */
uint64_t gram_set_key(const frame_t *const *v, int n);
/* Fewest bytes that complete one of the stacks. */
int gram_set_dist(const gram_t *g, const frame_t *const *v, int n);
/* Free a state's mask buffers and drop its cache reference (grammar_mask.c). */
void gram_state_masks_free(gram_state_t *s);

#endif
