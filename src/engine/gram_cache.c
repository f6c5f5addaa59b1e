/* gram_cache.c — compiled output constraints by schema hash (see
 * gram_cache.h). A small array scanned linearly: the cache holds tens of
 * grammars, and a lookup is one hash plus a compare of the text. Bounded in
 * count (cap) and in the bytes of the schema texts kept (text_bytes). */
#include "engine/gram_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/json_schema.h"

typedef struct {
    uint64_t hash;
    char *text; /* heap copy of the key, len bytes */
    size_t len;
    gram_t *g; /* one reference, NULL: empty slot */
    uint64_t used;
} slot_t;

struct gram_cache {
    pthread_mutex_t mu;
    slot_t *slot;
    int cap;
    size_t text_bytes, max_text_bytes; /* kept / allowed, of slot texts */
    uint64_t clock;
    uint64_t hits, compiles;
};

int gram_cache_create(gram_cache_t **out, int cap)
{
    return gram_cache_create_sized(out, cap, GRAM_CACHE_TEXT_BYTES);
}

int gram_cache_create_sized(gram_cache_t **out, int cap, size_t max_text_bytes)
{
    *out = NULL;
    if (cap < 1) cap = 1;
    if (max_text_bytes < 1) max_text_bytes = 1;
    gram_cache_t *c = calloc(1, sizeof *c);
    if (!c) return BAR_ERR_NOMEM;
    c->slot = calloc((size_t)cap, sizeof *c->slot);
    if (!c->slot || pthread_mutex_init(&c->mu, NULL)) {
        free(c->slot);
        free(c);
        return BAR_ERR_NOMEM;
    }
    c->cap = cap;
    c->max_text_bytes = max_text_bytes;
    *out = c;
    return 0;
}

/* Empty slot s (the lock held). */
static void slot_drop(gram_cache_t *c, slot_t *s)
{
    gram_release(s->g);
    free(s->text);
    c->text_bytes -= s->len;
    memset(s, 0, sizeof *s);
}

/* The least recently used slot, an empty one first (the lock held). */
static int slot_victim(const gram_cache_t *c)
{
    int victim = 0;
    for (int i = 0; i < c->cap; i++) {
        const slot_t *s = &c->slot[i];
        if (!s->g || (c->slot[victim].g && s->used < c->slot[victim].used)) victim = i;
    }
    return victim;
}

/* The least recently used filled slot (the lock held; text_bytes > 0, so
 * one is filled). */
static int slot_victim_used(const gram_cache_t *c)
{
    int victim = -1;
    for (int i = 0; i < c->cap; i++)
        if (c->slot[i].g && (victim < 0 || c->slot[i].used < c->slot[victim].used)) victim = i;
    return victim;
}

void gram_cache_destroy(gram_cache_t *c)
{
    if (!c) return;
    for (int i = 0; i < c->cap; i++) {
        gram_release(c->slot[i].g);
        free(c->slot[i].text);
    }
    free(c->slot);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int gram_cache_get(gram_cache_t *c, const char *json, size_t n, gram_t **out, bar_msg_t *msg)
{
    *out = NULL;
    if (!c) return json_schema_compile(json, n, out, msg);
    uint64_t h = XXH3_64bits(json, n);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->cap; i++) {
        slot_t *s = &c->slot[i];
        if (s->g && s->hash == h && s->len == n && !memcmp(s->text, json, n)) {
            s->used = ++c->clock;
            c->hits++;
            *out = gram_ref(s->g);
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
    }
    c->compiles++;
    pthread_mutex_unlock(&c->mu);
    /* compile outside the lock: a big schema does not stall other lookups */
    int rc = json_schema_compile(json, n, out, msg);
    if (rc) return rc;
    if (n > c->max_text_bytes) return 0; /* over the whole budget: not kept */
    pthread_mutex_lock(&c->mu);
    /* another caller may have stored the same schema meanwhile: take its
     * grammar (one copy per schema; a second slot would evict another
     * schema) */
    for (int i = 0; i < c->cap; i++) {
        slot_t *s = &c->slot[i];
        if (s->g && s->hash == h && s->len == n && !memcmp(s->text, json, n)) {
            s->used = ++c->clock;
            gram_t *mine = *out;
            *out = gram_ref(s->g);
            pthread_mutex_unlock(&c->mu);
            gram_release(mine);
            return 0;
        }
    }
    char *text = malloc(n ? n : 1);
    if (!text) {
        pthread_mutex_unlock(&c->mu);
        return 0; /* compiled, just not kept */
    }
    memcpy(text, json, n);
    /* room in bytes: the least recently used go first */
    for (int v; c->text_bytes + n > c->max_text_bytes && (v = slot_victim_used(c)) >= 0;)
        slot_drop(c, &c->slot[v]);
    slot_t *s = &c->slot[slot_victim(c)];
    if (s->g) slot_drop(c, s);
    c->text_bytes += n;
    s->hash = h;
    s->text = text;
    s->len = n;
    s->g = gram_ref(*out);
    s->used = ++c->clock;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void gram_cache_stats(gram_cache_t *c, gram_cache_stats_t *st)
{
    memset(st, 0, sizeof *st);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    st->hits = c->hits;
    st->compiles = c->compiles;
    for (int i = 0; i < c->cap; i++)
        st->size += c->slot[i].g != NULL;
    pthread_mutex_unlock(&c->mu);
}
