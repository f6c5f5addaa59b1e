/* gram_cache.h — compiled output constraints (JSON Schema → gram_t) kept by
 * the hash of their canonical text, so a schema that comes again is not
 * compiled again.
 *
 * The key is the schema text exactly as the API layer prints it (cJSON,
 * unformatted: the canonical bytes; a forced tool call's schema spells the
 * whole tool set, so the tool set is in the key), hashed with XXH3-64 and
 * compared byte for byte on a hit. At most `cap` grammars are kept; the
 * least recently used one is dropped first. A grammar handed out is a
 * reference of its own (gram_ref), so dropping it from the cache never frees
 * it under a sequence that is decoding with it.
 *
 * Threads: every call takes the cache's mutex (the API's event loop and the
 * backends' loops may share one cache). Not for: compiling (json_schema.c),
 * matching (grammar.c). */
#ifndef BARISTA_ENGINE_GRAM_CACHE_H
#define BARISTA_ENGINE_GRAM_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/grammar.h"
#include "util/err.h"

typedef struct gram_cache gram_cache_t;

typedef struct {
    uint64_t hits;     /* answered from the cache */
    uint64_t compiles; /* json_schema_compile calls (successful or not) */
    int size;          /* grammars held now */
} gram_cache_stats_t;

/* cap: grammars kept (>= 1). 0 or NOMEM. */
int gram_cache_create(gram_cache_t **out, int cap);
void gram_cache_destroy(gram_cache_t *c); /* NULL is fine */

/* The schema text json[0..n) compiled: 0 and *out (a new reference, the
 * caller's), or json_schema_compile's error and msg. c == NULL: compile
 * without a cache. A schema that failed is not kept. */
int gram_cache_get(gram_cache_t *c, const char *json, size_t n, gram_t **out, bar_msg_t *msg);

void gram_cache_stats(gram_cache_t *c, gram_cache_stats_t *st);

#endif
