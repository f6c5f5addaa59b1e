/* semantic.h — the semantic cache tier's store: which stored reply (named by
 * its exact cache key) answers a query that means the same thing.
 *
 * An entry is (tenant namespace, partition, exact key, unit vector, query
 * text, expiry). The partition is a hash the API layer makes of everything
 * besides the query text that shapes the answer (model, system prompt,
 * earlier turns, sampling values, tools, response format ...); the store only
 * compares it. Vectors live in a vindex whose namespace is the pair (tenant
 * namespace, partition), so a lookup never sees another tenant's or another
 * conversation's entries.
 *
 * A lookup returns the most similar entry of its (namespace, partition) whose
 * cosine similarity is >= the threshold AND whose text passes
 * semantic_guard_check against the query's text, among the k nearest. The
 * store keeps keys, not replies: the reply itself is read from the exact
 * tiers (L1, Redis) by that key, so purges and expiry there reach semantic
 * hits too (a key whose reply is gone is a miss, and the caller removes it
 * with semantic_del).
 *
 * Bounded: at most max_entries entries; the oldest go first (FIFO). Expired
 * entries are never returned and are dropped by lookups and semantic_sweep.
 *
 * Threads: the loop thread only (no locks). Not for: embedding (the backend),
 * replies (cache_l1 / cache_redis), Redis sharing (semantic_redis.h),
 * OpenAI field names (the API computes text and partition bytes). */
#ifndef BARISTA_CACHE_SEMANTIC_H
#define BARISTA_CACHE_SEMANTIC_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_key.h"
#include "cache/cache_redis.h"
#include "cache/semantic_guard.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct semantic semantic_t;

/* Zero fields take the defaults. */
typedef struct {
    int dim;                     /* vector length (required, 1..4096) */
    size_t max_entries;          /* default 100000 */
    int k;                       /* nearest candidates the guard sees; default 8 */
    semantic_guard_opts_t guard; /* set use_guard to apply it */
    int use_guard;               /* 0: cosine alone (benchmarks) */
} semantic_config_t;

/* Make an empty store. BAR_ERR_INVALID (dim), BAR_ERR_NOMEM. Ownership:
 * semantic_destroy. */
int semantic_create(semantic_t **out, const semantic_config_t *cfg, bar_msg_t *msg);

/* Free the store. NULL is fine. */
void semantic_destroy(semantic_t *s);

/* The partition id of the bytes the API layer made of a request's context. */
uint64_t semantic_partition(const void *bytes, size_t n);

/* One entry to store. Everything is copied. */
typedef struct {
    cache_key_t key;    /* the exact key of the stored reply */
    uint64_t ns;        /* tenant namespace hash (cache_ns_hash) */
    uint64_t part;      /* semantic_partition of the context */
    const float *vec;   /* dim floats, any non-zero norm (normalised inside) */
    const char *text;   /* the embedded query text (for the guard) */
    size_t text_len;    /* cut to SEMANTIC_TEXT_MAX bytes */
    int64_t expires_ms; /* unix ms; 0 = never */
} semantic_put_t;

#define SEMANTIC_TEXT_MAX 4096

/* Store e (an entry with the same key is replaced). 0, BAR_ERR_INVALID (zero
 * or non-finite vector, expired), BAR_ERR_NOMEM. */
int semantic_put(semantic_t *s, const semantic_put_t *e, int64_t now_ms);

/* A lookup's answer. */
typedef struct {
    cache_key_t key;              /* the reply to serve (hit) */
    float sim;                    /* its cosine similarity with the query */
    float best_sim;               /* the best similarity seen, hit or not (-2: no candidate) */
    int refused;                  /* candidates >= threshold the guard refused */
    semantic_guard_verdict_t why; /* the first refusal's reason */
} semantic_hit_t;

/* The best entry of (ns, part) for the query vector vec / text with
 * similarity >= min_sim that passes the guard. 1 (out->key, out->sim), or 0
 * (out->best_sim, out->refused still say what was near). */
int semantic_lookup(semantic_t *s, uint64_t ns, uint64_t part, const float *vec, const char *text,
                    size_t text_len, double min_sim, int64_t now_ms, semantic_hit_t *out);

/* Remove the entry of key: 1 if it was there. */
int semantic_del(semantic_t *s, const cache_key_t *key);
/* Remove every entry of tenant namespace ns; how many. */
size_t semantic_purge_ns(semantic_t *s, uint64_t ns);
/* Remove every entry whose tenant namespace has ns's high 32 bits (all the
 * sub-namespaces of one tenant); how many. */
size_t semantic_purge_tenant(semantic_t *s, uint64_t ns);
/* Remove everything; how many. */
size_t semantic_purge_all(semantic_t *s);
/* Drop expired entries; how many. */
size_t semantic_sweep(semantic_t *s, int64_t now_ms);

typedef struct {
    uint64_t entries, bytes;
    uint64_t lookups, hits, misses;
    uint64_t guard_refusals[SEMANTIC_GUARD_N_VERDICTS]; /* by reason ([0] unused) */
    uint64_t puts, evictions, expirations, deletes;
} semantic_stats_t;

void semantic_stats(const semantic_t *s, semantic_stats_t *out);

/* ---- records: how entries and purges travel between replicas ----
 * Little-endian, version 1:
 *   "BSE" u8 version | u8 type (1 entry, 2 purge) | body | u64 XXH3-64 of
 *   everything before.
 *   entry: key[16] | ns u64 | part u64 | expires_ms i64 | dim u32 |
 *          text_len u32 | dim x f32 | text
 *   purge: kind u8 (cache_purge_kind_t) | ns u64 | key[16]
 * Decoding checks the magic, version, type, every length against what is
 * left, that no byte trails, the checksum, and that the vector is finite
 * and not zero. */

enum { SEMANTIC_REC_ENTRY = 1, SEMANTIC_REC_PURGE = 2 };

/* Append the record of e (dim floats) / of a purge to out. 0 or NOMEM. */
int semantic_rec_entry(buf_t *out, const semantic_put_t *e, int dim);
int semantic_rec_purge(buf_t *out, cache_purge_kind_t kind, uint64_t ns, const cache_key_t *key);

typedef struct {
    int type;         /* SEMANTIC_REC_ENTRY | SEMANTIC_REC_PURGE */
    semantic_put_t e; /* entry: text points into the record, vec into vbuf */
    int dim;
    cache_purge_kind_t kind; /* purge */
    uint64_t ns;
    cache_key_t key;
} semantic_rec_t;

/* Decode p[0..n) into out; an entry's vector is copied into vbuf (vcap
 * floats: a larger dim is refused). 0, or BAR_ERR_INVALID with msg. */
int semantic_rec_decode(const void *p, size_t n, semantic_rec_t *out, float *vbuf, int vcap,
                        bar_msg_t *msg);

#endif
