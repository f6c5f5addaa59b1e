/* kv_pool.h — the bookkeeping of the paged KV cache: which of n_blocks
 * fixed-size blocks are free, which are held by sequences (reference counts)
 * and which hold a cached prompt prefix, found by content (vLLM's automatic
 * prefix caching).
 *
 * A full block is published under a chained hash: the hash of block j is
 * XXH3-128 over (the hash of block j - 1, or the sequence's salt for j = 0,
 * and the KV_BLOCK token ids of block j), so one hash names the whole prefix up
 * to and including the block, in that tenant's namespace. A block is shared
 * read-only by every sequence that maps it; when its last reference goes it
 * stays cached (least recently released first out) until memory is needed.
 * Lookups also compare the block's own tokens, so a hash collision alone
 * never maps a wrong block.
 *
 * Why hashed blocks and not a radix tree (SGLang): the unit of sharing is the
 * block either way (KV lives in blocks); a hash table of blocks gives O(1)
 * lookups per block, no tree to rebalance or lock, eviction of any
 * unreferenced block in LRU order without walking a tree, and the salt folds
 * isolation into the key for free. What a tree adds — matching inside a
 * block — the engine cannot use anyway: a partial block is recomputed.
 *
 * No KV data lives here (model.c owns the storage); not thread-safe (the
 * engine thread owns it). Not for: deciding which sequence to pre-empt
 * (engine.c). */
#ifndef BARISTA_ENGINE_KV_POOL_H
#define BARISTA_ENGINE_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct kv_pool kv_pool_t;

typedef struct {
    uint64_t lo, hi;
} kv_hash_t;

typedef struct {
    int n_blocks;       /* total */
    int n_used;         /* referenced by at least one sequence */
    int n_cached;       /* unreferenced but holding a published prefix (evictable) */
    int n_free;         /* never used or released unpublished */
    uint64_t evictions; /* cached blocks reused for other data */
} kv_pool_stats_t;

/* n_blocks >= 1 blocks of `block` token positions each. */
int kv_pool_create(kv_pool_t **out, int n_blocks, int block, bar_msg_t *msg);
void kv_pool_destroy(kv_pool_t *p);

/* The hash of a sequence's first block's parent: its salt (tenant namespace
 * and cache_salt already hashed by the caller). */
kv_hash_t kv_pool_root(uint64_t salt);
/* The chained hash of one full block of tokens after `parent`. */
kv_hash_t kv_pool_chain(kv_hash_t parent, const int32_t *tokens, int n);

/* A block for one sequence's exclusive use (reference count 1): a free one,
 * else the least recently released cached one (evicted: its hash is
 * forgotten). -1 when every block is referenced. */
int kv_pool_alloc(kv_pool_t *p);

/* The published block with this hash and these `block` tokens, with one more
 * reference taken (a cached block leaves the eviction order), or -1. */
int kv_pool_lookup(kv_pool_t *p, kv_hash_t h, const int32_t *tokens);

/* Publish referenced block b (full, its KV final) under h with its tokens.
 * When another block already has h, b stays private (returns 0 either way).
 * A block is published at most once. */
int kv_pool_publish(kv_pool_t *p, int b, kv_hash_t h, const int32_t *tokens);

/* Take one more reference to referenced block b (a forked sequence shares
 * its parent's blocks). */
void kv_pool_share(kv_pool_t *p, int b);

/* Drop one reference to b. At zero a published block becomes cached (most
 * recently released: evicted last); with `forget` or when unpublished it
 * becomes free. */
void kv_pool_release(kv_pool_t *p, int b, int forget);

/* Blocks an allocation could get now without pre-empting anyone. */
int kv_pool_available(const kv_pool_t *p);
int kv_pool_refs(const kv_pool_t *p, int b);
void kv_pool_stats(const kv_pool_t *p, kv_pool_stats_t *out);

#endif
