/* gram_cache.c — compiled output constraints by schema hash (see
 * gram_cache.h). A small array scanned linearly: the cache holds tens of
 * grammars, and a lookup is one hash plus a compare of the text. */
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
    uint64_t clock;
    uint64_t hits, compiles;
};

int gram_cache_create(gram_cache_t **out, int cap)
{
    *out = NULL;
    if (cap < 1) cap = 1;
    gram_cache_t *c = calloc(1, sizeof *c);
    if (!c) return BAR_ERR_NOMEM;
    c->slot = calloc((size_t)cap, sizeof *c->slot);
    if (!c->slot || pthread_mutex_init(&c->mu, NULL)) {
        free(c->slot);
        free(c);
        return BAR_ERR_NOMEM;
    }
    c->cap = cap;
    *out = c;
    return 0;
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
    int victim = 0;
    for (int i = 0; i < c->cap; i++) {
        slot_t *s = &c->slot[i];
        if (s->g && s->hash == h && s->len == n && !memcmp(s->text, json, n)) {
            s->used = ++c->clock;
            c->hits++;
            *out = gram_ref(s->g);
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
        if (!s->g || (c->slot[victim].g && s->used < c->slot[victim].used)) victim = i;
    }
    c->compiles++;
    pthread_mutex_unlock(&c->mu);
    /* compile outside the lock: a big schema does not stall other lookups */
    int rc = json_schema_compile(json, n, out, msg);
    if (rc) return rc;
    pthread_mutex_lock(&c->mu);
    /* another caller may have stored the same schema meanwhile: take its
     * grammar (one copy per schema; a second slot would evict another
     * schema); and the victim may have changed while unlocked: pick again */
    victim = 0;
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
        if (!s->g || (c->slot[victim].g && s->used < c->slot[victim].used)) victim = i;
    }
    char *text = malloc(n ? n : 1);
    if (!text) {
        pthread_mutex_unlock(&c->mu);
        return 0; /* compiled, just not kept */
    }
    memcpy(text, json, n);
    slot_t *s = &c->slot[victim];
    gram_release(s->g);
    free(s->text);
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
