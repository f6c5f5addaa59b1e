/* singleflight.c — in-flight request coalescing records (see
 * singleflight.h). A chained hash of attached records by key, plus a list of
 * every record (attached or detached) so sf_destroy frees all. Not for:
 * anything about what the subscribers are. */
#include "cache/singleflight.h"

#include <stdlib.h>
#include <string.h>

struct sf_entry {
    sf_t *sf;
    cache_key_t key;
    void *data;
    void **subs;
    size_t n, cap;
    int attached;
    int walking;             /* inside sf_foreach */
    int empty_pending;       /* emptied during the walk: on_empty after it */
    sf_entry_t *hnext;       /* hash chain (attached only) */
    sf_entry_t *prev, *next; /* all records */
};

struct sf {
    sf_empty_fn on_empty;
    void *ctx;
    sf_entry_t **buckets;
    size_t n_buckets; /* power of two */
    size_t n_attached;
    sf_entry_t *all;
};

static size_t slot(const sf_t *sf, const cache_key_t *k)
{
    size_t h;
    memcpy(&h, k->b + 8, sizeof h);
    return h & (sf->n_buckets - 1);
}

sf_t *sf_create(sf_empty_fn on_empty, void *ctx)
{
    sf_t *sf = calloc(1, sizeof *sf);
    if (!sf) return NULL;
    sf->n_buckets = 64;
    sf->buckets = calloc(sf->n_buckets, sizeof *sf->buckets);
    if (!sf->buckets) {
        free(sf);
        return NULL;
    }
    sf->on_empty = on_empty;
    sf->ctx = ctx;
    return sf;
}

static void entry_free(sf_t *sf, sf_entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        sf->all = e->next;
    if (e->next) e->next->prev = e->prev;
    free(e->subs);
    free(e);
}

void sf_destroy(sf_t *sf)
{
    if (!sf) return;
    while (sf->all)
        entry_free(sf, sf->all);
    free(sf->buckets);
    free(sf);
}

sf_entry_t *sf_find(sf_t *sf, const cache_key_t *key)
{
    for (sf_entry_t *e = sf->buckets[slot(sf, key)]; e; e = e->hnext)
        if (cache_key_equal(&e->key, key)) return e;
    return NULL;
}

static void grow(sf_t *sf)
{
    size_t nb = sf->n_buckets * 2;
    sf_entry_t **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < sf->n_buckets; i++) {
        sf_entry_t *e = sf->buckets[i];
        while (e) {
            sf_entry_t *next = e->hnext;
            size_t h;
            memcpy(&h, e->key.b + 8, sizeof h);
            size_t s = h & (nb - 1);
            e->hnext = b[s];
            b[s] = e;
            e = next;
        }
    }
    free(sf->buckets);
    sf->buckets = b;
    sf->n_buckets = nb;
}

sf_entry_t *sf_begin(sf_t *sf, const cache_key_t *key, void *data)
{
    if (sf_find(sf, key)) return NULL;
    sf_entry_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    if (sf->n_attached >= sf->n_buckets) grow(sf);
    e->sf = sf;
    e->key = *key;
    e->data = data;
    e->attached = 1;
    size_t s = slot(sf, key);
    e->hnext = sf->buckets[s];
    sf->buckets[s] = e;
    sf->n_attached++;
    e->next = sf->all;
    if (sf->all) sf->all->prev = e;
    sf->all = e;
    return e;
}

static void detach(sf_entry_t *e)
{
    if (!e->attached) return;
    sf_t *sf = e->sf;
    sf_entry_t **pp = &sf->buckets[slot(sf, &e->key)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    e->attached = 0;
    sf->n_attached--;
}

int sf_join(sf_entry_t *e, void *sub)
{
    if (!sub || !e->attached) return BAR_ERR_INVALID;
    for (size_t i = 0; i < e->n; i++)
        if (e->subs[i] == sub) return BAR_ERR_INVALID;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        void **p = realloc(e->subs, cap * sizeof *p);
        if (!p) return BAR_ERR_NOMEM;
        e->subs = p;
        e->cap = cap;
    }
    e->subs[e->n++] = sub;
    return 0;
}

int sf_leave(sf_entry_t *e, void *sub)
{
    size_t i = 0;
    while (i < e->n && e->subs[i] != sub)
        i++;
    if (i == e->n) return BAR_ERR_NOTFOUND;
    memmove(e->subs + i, e->subs + i + 1, (e->n - i - 1) * sizeof *e->subs);
    e->n--;
    if (e->n) return (int)(e->n > 0x7fffffff ? 0x7fffffff : e->n);
    detach(e);
    if (e->walking) {
        e->empty_pending = 1;
        return 0;
    }
    if (e->sf->on_empty) e->sf->on_empty(e->sf->ctx, e); /* may free e */
    return 0;
}

void sf_finish(sf_t *sf, sf_entry_t *e)
{
    if (!e) return;
    detach(e);
    entry_free(sf, e);
}

size_t sf_count(const sf_entry_t *e)
{
    return e->n;
}

void *sf_subscriber(const sf_entry_t *e, size_t i)
{
    return i < e->n ? e->subs[i] : NULL;
}

void *sf_data(const sf_entry_t *e)
{
    return e->data;
}

const cache_key_t *sf_key(const sf_entry_t *e)
{
    return &e->key;
}

int sf_attached(const sf_entry_t *e)
{
    return e->attached;
}

void sf_foreach(sf_entry_t *e, sf_visit_fn fn, void *ctx)
{
    int outer = e->walking;
    e->walking = 1;
    size_t i = 0;
    while (i < e->n) {
        void *sub = e->subs[i];
        fn(ctx, e, sub);
        /* fn may have left: then the next subscriber moved into slot i */
        if (i < e->n && e->subs[i] == sub) i++;
    }
    if (outer) return;
    e->walking = 0;
    if (e->empty_pending) {
        e->empty_pending = 0;
        if (e->sf->on_empty) e->sf->on_empty(e->sf->ctx, e); /* may free e */
    }
}

size_t sf_size(const sf_t *sf)
{
    return sf->n_attached;
}
