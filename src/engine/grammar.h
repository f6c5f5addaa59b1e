/* grammar.h — context-free grammars over bytes, and the constraint they put
 * on decoding: which tokens keep the output a valid prefix of the grammar's
 * language.
 *
 * A grammar is a set of rules; each rule is a list of alternatives; each
 * alternative a sequence of elements: a byte class (a 256-bit set) or a
 * reference to a rule. Rule 0 is the root. Grammars are built with the
 * builder below (json_schema.c builds one from a JSON Schema) and are
 * immutable and reference-counted once built, so one compiled grammar is
 * shared by every sequence that uses it.
 *
 * Matching is a pushdown automaton run as a set of stacks (the alternatives
 * still alive), llama.cpp's GBNF method: a stack is a linked chain of frames
 * (element position, parent frame), its top always a byte class; a byte
 * advances every stack whose top admits it and expands the rule references
 * that follow. An empty stack means the root is complete. Left-recursive
 * grammars are not supported (the builder never needs them); expansion is
 * depth-bounded, so a pathological grammar fails closed, never loops.
 *
 * The token mask (gram_state_mask, grammar_mask.c) walks a trie of the
 * vocabulary's byte strings from the current state, pruning a subtree at its
 * first rejected byte, and keeps each result in the vocabulary's mask cache,
 * keyed by (grammar, the state's structure): states recur (every character
 * inside a string leaves the same stack) and every sequence decoding with
 * the same grammar reaches the same states, so a steady state costs a
 * pointer compare and a state another sequence reached one hash lookup.
 * Not for: JSON (json_schema.c), logits or sampling (engine.c applies the
 * mask), tokenization (the caller supplies bytes).
 *
 * Threads: a gram_t is immutable (refcount atomic); a gram_vocab_t's trie is
 * immutable after create and its mask cache is locked, so states on
 * different threads may ask masks of one vocabulary at once; a gram_state_t
 * belongs to one thread at a time. A state that asked for masks holds a
 * reference into the vocabulary's cache: destroy it before the vocabulary. */
#ifndef BARISTA_ENGINE_GRAMMAR_H
#define BARISTA_ENGINE_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct gram gram_t;
typedef struct gram_builder gram_builder_t;
typedef struct gram_state gram_state_t;
typedef struct gram_vocab gram_vocab_t;

/* ---- building ---- */

/* One alternative under construction (a growable element list). */
typedef struct {
    int32_t *el; /* encoded elements */
    int n, cap;
    int oom;
} gram_seq_t;

int gram_builder_create(gram_builder_t **out);
void gram_builder_destroy(gram_builder_t *b);
/* A new rule with no alternatives yet; returns its id (>= 0) or -1 (NOMEM).
 * The first rule created is the root. */
int gram_rule_new(gram_builder_t *b);
/* Rules created so far. */
int gram_n_rules_building(const gram_builder_t *b);
/* Append to a sequence: a byte class (set: 32 bytes, bit i = byte i), one
 * byte range lo..hi, a literal (each byte in turn), a rule reference. */
void gram_seq_set(gram_builder_t *b, gram_seq_t *s, const uint8_t set[32]);
void gram_seq_range(gram_builder_t *b, gram_seq_t *s, int lo, int hi);
void gram_seq_lit(gram_builder_t *b, gram_seq_t *s, const char *lit, size_t n);
void gram_seq_ref(gram_seq_t *s, int rule);
void gram_seq_free(gram_seq_t *s);
/* Add s as an alternative of rule (s is copied; reset it to reuse). */
int gram_rule_add(gram_builder_t *b, int rule, const gram_seq_t *s);
/* Finish: checks every referenced rule has an alternative. The builder is
 * consumed (destroyed) either way. */
int gram_build(gram_builder_t *b, gram_t **out, bar_msg_t *msg);

/* Number of rules and elements (bench/tests). */
int gram_n_rules(const gram_t *g);

gram_t *gram_ref(gram_t *g);
void gram_release(gram_t *g); /* frees at the last reference; NULL is fine */

/* ---- matching ---- */

int gram_state_create(gram_state_t **out, gram_t *g); /* takes a reference on g */
void gram_state_destroy(gram_state_t *s);
/* Feed bytes; 0, or -1 if they leave the language (the state is unchanged). */
int gram_state_feed(gram_state_t *s, const void *bytes, size_t n);
/* The input so far is a complete sentence. */
int gram_state_accepting(const gram_state_t *s);
/* Complete and no byte may follow. */
int gram_state_done(const gram_state_t *s);
/* 1 if bytes could follow the input (or complete it) without leaving the
 * language, without changing the state. */
int gram_state_allows(gram_state_t *s, const void *bytes, size_t n);

/* ---- token masks ---- */

/* The vocabulary as byte strings: piece(ctx, id, buf, cap) returns token id's
 * bytes (0: never allowed by a grammar, e.g. control tokens). */
typedef size_t (*gram_piece_fn)(void *ctx, int id, char *buf, size_t cap);
int gram_vocab_create(gram_vocab_t **out, int n_vocab, gram_piece_fn piece, void *ctx);
void gram_vocab_destroy(gram_vocab_t *v);
int gram_vocab_n(const gram_vocab_t *v);
/* Token id's bytes (borrowed) and length. */
const uint8_t *gram_vocab_bytes(const gram_vocab_t *v, int id, size_t *n);

/* The tokens whose bytes keep the state a valid prefix: a bitset of
 * (n_vocab + 63) / 64 words, held by the state (it may be shared with other
 * states: read only) and valid until its next mask call or destroy. Tokens
 * with no bytes are never set (the caller decides about end of generation
 * with gram_state_accepting). */
const uint64_t *gram_state_mask(gram_state_t *s, const gram_vocab_t *v);

/* ---- finishing within a budget ---- */

/* The fewest bytes that complete the input so far into a sentence (0 when it
 * is one already); every grammar has per element the shortest completion of
 * its alternative precomputed at build, so this is a sum per stack. */
int gram_state_min_left(const gram_state_t *s);
/* As gram_state_mask, but only the tokens after which the output can still
 * be completed in at most `limit` bytes. When no token can (limit is below
 * what is left), the tokens that shorten the shortest completion. The
 * unlimited mask remembers the longest completion it allows, so while the
 * budget binds no token this costs what gram_state_mask does; when it binds,
 * the mask is built from each allowed token's rank kept with the cached
 * mask (no walk). */
const uint64_t *gram_state_mask_within(gram_state_t *s, const gram_vocab_t *v, int limit);

/* The vocabulary's shared mask cache: masks served from it (hits) and walks
 * (misses), entries and bytes held (tests, bench). */
typedef struct {
    uint64_t hits, misses;
    int entries;
    size_t bytes;
} gram_mask_stats_t;
void gram_vocab_mask_stats(const gram_vocab_t *v, gram_mask_stats_t *out);
/* The cache's budget in bytes (default 48 MiB), applied at once (tests set
 * a tiny one to exercise eviction). */
void gram_vocab_set_mask_budget(gram_vocab_t *v, size_t bytes);

#endif
