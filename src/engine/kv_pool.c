/* kv_pool.c — block allocator, prefix hash table and LRU of the paged KV
 * cache (see kv_pool.h for the contract and the design choice).
 *
 * Per block: a reference count, whether it is published (then its hash and
 * tokens are kept and it sits in the hash table), and links in one of two
 * lists: the free stack (unpublished, unreferenced; lowest ids on top so the
 * memory the cache touches stays compact) or the cached LRU (published,
 * unreferenced; head = least recently released = evicted first). The hash
 * table is open addressing with linear probing over block ids and
 * backward-shift deletion, sized at twice the blocks: nothing allocates after
 * kv_pool_create. Not for: KV data, scheduling. */
#include "engine/kv_pool.h"

#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack: no allocation */
#include <xxhash.h>

struct kv_pool {
    int n, block;
    int *ref;
    uint8_t *pub;
    kv_hash_t *hash;
    int32_t *tok;          /* [n][block] tokens of published blocks */
    int *free_stack, n_fs; /* free blocks, top at n_fs - 1 */
    int *prev, *next;      /* cached LRU links (-1 ends) */
    int lru_head, lru_tail, n_cached;
    int *table; /* [cap] block id or -1 */
    size_t cap;
    uint64_t evictions;
};

int kv_pool_create(kv_pool_t **out, int n_blocks, int block, bar_msg_t *msg)
{
    *out = NULL;
    if (n_blocks < 1 || block < 1)
        return bar_fail(msg, BAR_ERR_INVALID, "kv pool: %d blocks of %d", n_blocks, block);
    kv_pool_t *p = calloc(1, sizeof *p);
    if (!p) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    p->n = n_blocks;
    p->block = block;
    p->cap = 16;
    while (p->cap < (size_t)n_blocks * 2)
        p->cap *= 2;
    size_t n = (size_t)n_blocks;
    p->ref = calloc(n, sizeof *p->ref);
    p->pub = calloc(n, 1);
    p->hash = calloc(n, sizeof *p->hash);
    p->tok = malloc(n * (size_t)block * sizeof *p->tok);
    p->free_stack = malloc(n * sizeof *p->free_stack);
    p->prev = malloc(n * sizeof *p->prev);
    p->next = malloc(n * sizeof *p->next);
    p->table = malloc(p->cap * sizeof *p->table);
    if (!p->ref || !p->pub || !p->hash || !p->tok || !p->free_stack || !p->prev || !p->next ||
        !p->table) {
        kv_pool_destroy(p);
        return bar_fail(msg, BAR_ERR_NOMEM, "kv pool: out of memory for %d blocks", n_blocks);
    }
    for (int i = 0; i < n_blocks; i++)
        p->free_stack[i] = n_blocks - 1 - i; /* block 0 on top */
    p->n_fs = n_blocks;
    for (size_t i = 0; i < p->cap; i++)
        p->table[i] = -1;
    p->lru_head = p->lru_tail = -1;
    *out = p;
    return 0;
}

void kv_pool_destroy(kv_pool_t *p)
{
    if (!p) return;
    free(p->ref);
    free(p->pub);
    free(p->hash);
    free(p->tok);
    free(p->free_stack);
    free(p->prev);
    free(p->next);
    free(p->table);
    free(p);
}

kv_hash_t kv_pool_root(uint64_t salt)
{
    XXH128_hash_t h = XXH3_128bits_withSeed("barista-kv", 10, salt);
    return (kv_hash_t){h.low64, h.high64};
}

kv_hash_t kv_pool_chain(kv_hash_t parent, const int32_t *tokens, int n)
{
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    uint64_t par[2] = {parent.lo, parent.hi};
    XXH3_128bits_update(&st, par, sizeof par);
    XXH3_128bits_update(&st, tokens, (size_t)n * sizeof *tokens);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    return (kv_hash_t){h.low64, h.high64};
}

/* ---------------------------------------------------------- hash table */

static size_t slot_of(const kv_pool_t *p, kv_hash_t h)
{
    return (size_t)(h.lo ^ (h.hi >> 7)) & (p->cap - 1);
}

static int same(kv_hash_t a, kv_hash_t b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

static int table_find(const kv_pool_t *p, kv_hash_t h)
{
    for (size_t i = slot_of(p, h);; i = (i + 1) & (p->cap - 1)) {
        int b = p->table[i];
        if (b < 0) return -1;
        if (same(p->hash[b], h)) return b;
    }
}

static void table_insert(kv_pool_t *p, int b)
{
    size_t i = slot_of(p, p->hash[b]);
    while (p->table[i] >= 0)
        i = (i + 1) & (p->cap - 1);
    p->table[i] = b;
}

/* remove block b: backward-shift the probe run after it */
static void table_remove(kv_pool_t *p, int b)
{
    size_t mask = p->cap - 1, i = slot_of(p, p->hash[b]);
    while (p->table[i] != b)
        i = (i + 1) & mask;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        int c = p->table[j];
        if (c < 0) break;
        size_t home = slot_of(p, p->hash[c]);
        /* c may move to i if its home is not in (i, j] cyclically */
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            p->table[i] = c;
            i = j;
        }
    }
    p->table[i] = -1;
}

/* ------------------------------------------------------------------ LRU */

static void lru_unlink(kv_pool_t *p, int b)
{
    if (p->prev[b] >= 0)
        p->next[p->prev[b]] = p->next[b];
    else
        p->lru_head = p->next[b];
    if (p->next[b] >= 0)
        p->prev[p->next[b]] = p->prev[b];
    else
        p->lru_tail = p->prev[b];
    p->n_cached--;
}

static void lru_push_tail(kv_pool_t *p, int b)
{
    p->prev[b] = p->lru_tail;
    p->next[b] = -1;
    if (p->lru_tail >= 0)
        p->next[p->lru_tail] = b;
    else
        p->lru_head = b;
    p->lru_tail = b;
    p->n_cached++;
}

/* ------------------------------------------------------------- public */

int kv_pool_alloc(kv_pool_t *p)
{
    int b;
    if (p->n_fs > 0) {
        b = p->free_stack[--p->n_fs];
    } else if (p->lru_head >= 0) {
        b = p->lru_head;
        lru_unlink(p, b);
        table_remove(p, b);
        p->pub[b] = 0;
        p->evictions++;
    } else {
        return -1;
    }
    p->ref[b] = 1;
    return b;
}

int kv_pool_lookup(kv_pool_t *p, kv_hash_t h, const int32_t *tokens)
{
    int b = table_find(p, h);
    if (b < 0) return -1;
    if (memcmp(p->tok + (size_t)b * p->block, tokens, (size_t)p->block * sizeof *tokens)) return -1;
    if (p->ref[b]++ == 0) lru_unlink(p, b);
    return b;
}

int kv_pool_publish(kv_pool_t *p, int b, kv_hash_t h, const int32_t *tokens)
{
    if (b < 0 || b >= p->n || p->ref[b] <= 0 || p->pub[b]) return 0;
    if (table_find(p, h) >= 0) return 0; /* an equal prefix is already shared */
    p->hash[b] = h;
    memcpy(p->tok + (size_t)b * p->block, tokens, (size_t)p->block * sizeof *tokens);
    p->pub[b] = 1;
    table_insert(p, b);
    return 0;
}

void kv_pool_share(kv_pool_t *p, int b)
{
    if (b >= 0 && b < p->n && p->ref[b] > 0) p->ref[b]++;
}

void kv_pool_release(kv_pool_t *p, int b, int forget)
{
    if (b < 0 || b >= p->n || p->ref[b] <= 0) return;
    if (--p->ref[b] > 0) return;
    if (p->pub[b] && !forget) {
        lru_push_tail(p, b);
        return;
    }
    if (p->pub[b]) {
        table_remove(p, b);
        p->pub[b] = 0;
    }
    p->free_stack[p->n_fs++] = b;
}

int kv_pool_available(const kv_pool_t *p)
{
    return p->n_fs + p->n_cached;
}

int kv_pool_refs(const kv_pool_t *p, int b)
{
    return b >= 0 && b < p->n ? p->ref[b] : 0;
}

void kv_pool_stats(const kv_pool_t *p, kv_pool_stats_t *out)
{
    out->n_blocks = p->n;
    out->n_free = p->n_fs;
    out->n_cached = p->n_cached;
    out->n_used = p->n - p->n_fs - p->n_cached;
    out->evictions = p->evictions;
}
