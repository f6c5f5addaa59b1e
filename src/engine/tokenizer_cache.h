/* tokenizer_cache.h — the feature cache of the generation path: prompt text
 * → token ids, so a prompt that comes again (a retry, a cache-bypassing
 * repeat, a popular system prompt + question, n requests that miss the
 * exact tier for their sampling values) is not tokenized again.
 *
 * The key is a 128-bit XXH3 of what the caller tokenizes (the completion
 * prompt's bytes, or the chat messages' roles and contents length-prefixed:
 * tok_cache_key_*); a hit copies the ids out. Bounded by bytes: each entry
 * weighs its ids plus a fixed overhead (TOK_CACHE_ENTRY_OVERHEAD); the least
 * recently used entries go first until a new one fits, and an entry larger
 * than a quarter of the budget is not kept.
 *
 * Threads: every call takes the cache's mutex (prompts are tokenized on the
 * loop thread and on the libuv thread pool). Not for: tokenizing
 * (tokenizer.h), the embedding model's text → vector LRU (backend_embed.c). */
#ifndef BARISTA_ENGINE_TOKENIZER_CACHE_H
#define BARISTA_ENGINE_TOKENIZER_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok_cache tok_cache_t;

/* The bytes an entry costs besides its ids (the node, hash slot, key). */
#define TOK_CACHE_ENTRY_OVERHEAD 64

typedef struct {
    uint64_t lo, hi;
} tok_cache_key_t;

typedef struct {
    uint64_t hits, misses, inserts, evictions;
    uint64_t entries, bytes; /* held now (bytes as counted against the budget) */
    size_t max_bytes;
} tok_cache_stats_t;

/* A cache of at most max_bytes (>= 1). 0, or BAR_ERR_INVALID / NOMEM.
 * Ownership: tok_cache_destroy. */
int tok_cache_create(tok_cache_t **out, size_t max_bytes);
void tok_cache_destroy(tok_cache_t *c); /* NULL is fine */

/* The key of a completion prompt p[0..n) tokenized with (add_bos, special). */
tok_cache_key_t tok_cache_key_text(const char *p, size_t n, int add_bos, int special);

/* Chat: start from tok_cache_key_chat_init(template id, add_generation_prompt)
 * and fold in each message's role, then its content, in order (each part's
 * length is part of the hash, so "ab"+"c" and "a"+"bc" differ). */
tok_cache_key_t tok_cache_key_chat_init(int tmpl, int add_gen);
void tok_cache_key_add(tok_cache_key_t *k, const char *p, size_t n);

/* The ids of key: 1 and *ids (malloc'd, the caller frees) / *n, or 0 (a
 * miss, or no memory for the copy). c == NULL: always 0, nothing counted. */
int tok_cache_get(tok_cache_t *c, tok_cache_key_t key, int32_t **ids, size_t *n);

/* Keep ids[0..n) under key (copied; replaces an entry of the same key).
 * c == NULL or n == 0: nothing. Out of memory: nothing kept. */
void tok_cache_put(tok_cache_t *c, tok_cache_key_t key, const int32_t *ids, size_t n);

void tok_cache_stats(tok_cache_t *c, tok_cache_stats_t *out); /* c == NULL: zeros */

#endif
