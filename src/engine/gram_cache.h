/* gram_cache.h — compiled output constraints (JSON Schema → gram_t) kept by
 * the hash of their canonical text, so a schema that comes again is not
 * compiled again.
 *
 * The key is the schema text exactly as the API layer prints it (cJSON,
 * unformatted: the canonical bytes; a forced tool call's schema spells the
 * whole tool set, so the tool set is in the key), hashed with XXH3-64 and
 * compared byte for byte on a hit. At most `cap` grammars and a budget of
 * schema-text bytes are kept (memory: a hostile client sending many big
 * distinct schemas cannot pin more); the least recently used one is dropped
 * first. A grammar handed out is a
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

/* At most this many bytes of schema text kept (a grammar weighs ~4-17x its
 * schema text: 2 MiB of text is at most ~35 MB of grammars). */
#define GRAM_CACHE_TEXT_BYTES ((size_t)2 << 20)

/* cap: grammars kept (>= 1), and at most GRAM_CACHE_TEXT_BYTES of their
 * schema texts. 0 or NOMEM. */
int gram_cache_create(gram_cache_t **out, int cap);

/* The same with max_text_bytes of schema text kept (>= 1): the least
 * recently used schemas go first until a new one fits; a schema longer than
 * the whole budget is compiled and handed out but not kept. */
int gram_cache_create_sized(gram_cache_t **out, int cap, size_t max_text_bytes);
void gram_cache_destroy(gram_cache_t *c); /* NULL is fine */

/* The schema text json[0..n) compiled: 0 and *out (a new reference, the
 * caller's), or json_schema_compile's error and msg. c == NULL: compile
 * without a cache. A schema that failed is not kept. */
int gram_cache_get(gram_cache_t *c, const char *json, size_t n, gram_t **out, bar_msg_t *msg);

void gram_cache_stats(gram_cache_t *c, gram_cache_stats_t *st);

#endif
