/* cache_key.h — the exact-cache key: a canonical byte string of everything
 * that can change a generation's output, hashed with XXH3-128.
 *
 * What goes in (in this order, each length-prefixed so no two inputs share a
 * byte string): a format tag, the endpoint tag, the resolved model id, the
 * model file's digest, the tenant namespace, the caller's extra canonical
 * bytes (e.g. the sampling values actually used), then the WHOLE request body
 * canonicalised recursively, minus the top-level members the caller names in
 * `skip`:
 *   - objects: members sorted by key bytes (stable, so duplicate keys keep
 *     their relative order), each as (key, value);
 *   - numbers: the double, -0 folded to 0, printed with %.17g (0 == 0.0 ==
 *     0e5, 1 == 1.0 == 1e0);
 *   - strings: their decoded bytes, length-prefixed, never whitespace-folded;
 *   - arrays in order; true/false/null as tags.
 * Which members are skipped, and what the extra bytes hold, is the API
 * layer's rule (docs/CACHE.md): this module knows no request schema.
 * Anything not skipped is part of the key by default: an unknown field costs
 * a miss, never a wrong answer.
 *
 * Not for: deciding whether to store (the API layer applies its rule and
 * Cache-Control), storage (cache_l1, cache_redis, cache_tier).
 * Pure functions; any thread. */
#ifndef BARISTA_CACHE_CACHE_KEY_H
#define BARISTA_CACHE_CACHE_KEY_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/err.h"

/* A 128-bit key (XXH3-128, big-endian bytes of high then low half, so the
 * hex form reads like XXH3's canonical form). */
typedef struct {
    uint8_t b[16];
} cache_key_t;

#define CACHE_KEY_HEX_LEN 32

/* Who is asking and what answers. All strings are borrowed for the call. */
typedef struct {
    const char *endpoint;     /* "chat" | "completions" (any short tag) */
    const char *model_id;     /* the resolved model id (not the request's alias) */
    const char *model_digest; /* cache_key_file_digest() of the weights, or "" */
    const char *ns;           /* tenant namespace bytes: API key or X-Cache-Namespace */
    size_t ns_len;
    const char *const *skip; /* top-level body members left out, NULL-terminated; NULL: none */
    const char *extra;       /* extra canonical bytes, or NULL */
    size_t extra_len;
} cache_key_ctx_t;

/* The key of `body` (a validated request object) under `ctx`. 0, or
 * BAR_ERR_INVALID (body not an object, nesting deeper than 512) /
 * BAR_ERR_NOMEM with msg set. */
int cache_key_make(cache_key_t *out, const cJSON *body, const cache_key_ctx_t *ctx, bar_msg_t *msg);

/* The canonical byte string that cache_key_make hashes, appended to out (for
 * tests and debugging). Same errors. */
int cache_key_canonical(buf_t *out, const cJSON *body, const cache_key_ctx_t *ctx, bar_msg_t *msg);

/* 32 lowercase hex digits + NUL. */
void cache_key_hex(const cache_key_t *k, char out[CACHE_KEY_HEX_LEN + 1]);

/* Parse exactly 32 hex digits (either case). 0 or BAR_ERR_INVALID. */
int cache_key_from_hex(cache_key_t *k, const char *s, size_t n);

int cache_key_equal(const cache_key_t *a, const cache_key_t *b);

/* 64-bit hash of a namespace (stored with entries and in Redis key names so
 * a namespace can be purged; the namespace itself, often an API key, is never
 * stored). Not a cryptographic hash. */
uint64_t cache_ns_hash(const char *ns, size_t n);

/* XXH3-128 of a whole file as 32 hex digits (the model digest). Reads the
 * file once (mmap); ~10 GB/s. 0 or BAR_ERR_IO with msg. */
int cache_key_file_digest(const char *path, char out[CACHE_KEY_HEX_LEN + 1], bar_msg_t *msg);

#endif
