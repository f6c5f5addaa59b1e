/* tokenizer_cache.c — prompt text → token ids LRU (tokenizer_cache.h): a
 * chained hash over the 128-bit keys plus a doubly linked recency list, one
 * malloc per entry (node + ids), everything under one mutex. Not for: the
 * tokenizer itself. */
#include "engine/tokenizer_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/err.h"

typedef struct ent {
    tok_cache_key_t key;
    struct ent *hnext;       /* hash chain */
    struct ent *prev, *next; /* recency: head is the most recent */
    size_t n;
    int32_t ids[]; /* n */
} ent_t;

struct tok_cache {
    pthread_mutex_t mu;
    ent_t **tab;
    size_t n_tab; /* power of two */
    ent_t *head, *tail;
    size_t bytes, max_bytes;
    tok_cache_stats_t st;
};

static size_t cost_of(size_t n)
{
    return TOK_CACHE_ENTRY_OVERHEAD + n * sizeof(int32_t);
}

int tok_cache_create(tok_cache_t **out, size_t max_bytes)
{
    *out = NULL;
    if (!max_bytes) return BAR_ERR_INVALID;
    tok_cache_t *c = calloc(1, sizeof *c);
    if (!c) return BAR_ERR_NOMEM;
    c->n_tab = 256;
    c->tab = calloc(c->n_tab, sizeof *c->tab);
    if (!c->tab) {
        free(c);
        return BAR_ERR_NOMEM;
    }
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

void tok_cache_destroy(tok_cache_t *c)
{
    if (!c) return;
    for (ent_t *e = c->head; e;) {
        ent_t *nx = e->next;
        free(e);
        e = nx;
    }
    free(c->tab);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

tok_cache_key_t tok_cache_key_text(const char *p, size_t n, int add_bos, int special)
{
    XXH128_hash_t h =
        XXH3_128bits_withSeed(p, n,
                              0x746f6b0000000000ull | (uint64_t)(add_bos ? 1 : 0) << 1 |
                                  (uint64_t)(special ? 1 : 0)); /* "tok" */
    tok_cache_key_t k = {h.low64, h.high64};
    return k;
}

tok_cache_key_t tok_cache_key_chat_init(int tmpl, int add_gen)
{
    /* a different seed space from tok_cache_key_text: a prompt never
     * collides with a conversation by construction of the seeds */
    tok_cache_key_t k = {0x6368617400000000ull | (uint64_t)(unsigned)tmpl << 1 |
                             (uint64_t)(add_gen ? 1 : 0),
                         0x9e3779b97f4a7c15ull};
    return k;
}

void tok_cache_key_add(tok_cache_key_t *k, const char *p, size_t n)
{
    /* chain: the running key and the part's length seed the part's hash */
    uint64_t seed = k->lo ^ (k->hi << 17 | k->hi >> 47) ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    XXH128_hash_t h = XXH3_128bits_withSeed(p ? p : "", p ? n : 0, seed);
    k->lo = h.low64 ^ k->hi;
    k->hi = h.high64;
}

static ent_t **slot_of(tok_cache_t *c, tok_cache_key_t k)
{
    ent_t **pp = &c->tab[k.lo & (c->n_tab - 1)];
    while (*pp && ((*pp)->key.lo != k.lo || (*pp)->key.hi != k.hi))
        pp = &(*pp)->hnext;
    return pp;
}

static void unlink_lru(tok_cache_t *c, ent_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(tok_cache_t *c, ent_t *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* Unchain and free e. */
static void drop(tok_cache_t *c, ent_t *e)
{
    ent_t **pp = slot_of(c, e->key);
    if (*pp == e) *pp = e->hnext;
    unlink_lru(c, e);
    c->bytes -= cost_of(e->n);
    c->st.entries--;
    free(e);
}

static void grow(tok_cache_t *c)
{
    size_t nn = c->n_tab * 2;
    ent_t **t = calloc(nn, sizeof *t);
    if (!t) return; /* chains just get longer */
    for (ent_t *e = c->head; e; e = e->next) {
        e->hnext = t[e->key.lo & (nn - 1)];
        t[e->key.lo & (nn - 1)] = e;
    }
    free(c->tab);
    c->tab = t;
    c->n_tab = nn;
}

int tok_cache_get(tok_cache_t *c, tok_cache_key_t key, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!c) return 0;
    pthread_mutex_lock(&c->mu);
    ent_t *e = *slot_of(c, key);
    int hit = 0;
    if (e) {
        int32_t *v = malloc(e->n * sizeof *v);
        if (v) {
            memcpy(v, e->ids, e->n * sizeof *v);
            *ids = v;
            *n = e->n;
            unlink_lru(c, e);
            push_front(c, e);
            hit = 1;
        }
    }
    if (hit)
        c->st.hits++;
    else
        c->st.misses++;
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void tok_cache_put(tok_cache_t *c, tok_cache_key_t key, const int32_t *ids, size_t n)
{
    if (!c || !n) return;
    size_t cost = cost_of(n);
    if (cost > c->max_bytes / 4) return; /* one huge prompt must not flush the rest */
    ent_t *e = malloc(sizeof *e + n * sizeof *ids);
    if (!e) return;
    memset(e, 0, sizeof *e);
    e->key = key;
    e->n = n;
    memcpy(e->ids, ids, n * sizeof *ids);
    pthread_mutex_lock(&c->mu);
    ent_t *old = *slot_of(c, key);
    if (old) drop(c, old);
    while (c->tail && c->bytes + cost > c->max_bytes) {
        drop(c, c->tail);
        c->st.evictions++;
    }
    ent_t **pp = slot_of(c, key);
    e->hnext = *pp;
    *pp = e;
    push_front(c, e);
    c->bytes += cost;
    c->st.entries++;
    c->st.inserts++;
    if (c->st.entries > c->n_tab * 2) grow(c);
    pthread_mutex_unlock(&c->mu);
}

void tok_cache_stats(tok_cache_t *c, tok_cache_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->bytes = c->bytes;
    out->max_bytes = c->max_bytes;
    pthread_mutex_unlock(&c->mu);
}
