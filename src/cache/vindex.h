/* vindex.h — the vector index of the semantic cache: (namespace, id) → unit
 * vector, and "the k stored vectors most similar to this query" within one
 * namespace, similarity in cosine units (1 = same direction, 0 = orthogonal,
 * -1 = opposite; never a distance).
 *
 * Structure: a hash map namespace → sub-index. A sub-index is searched
 * exactly (flat scan) while it holds at most flat_max vectors and becomes an
 * HNSW graph above that (back to flat when deletes shrink it below
 * flat_max / 2 at a rebuild). A search only ever walks the sub-index of its
 * own namespace, so one namespace's vectors are never returned to another.
 *
 * Vectors: normalised to unit length on insert (the caller may pass any
 * non-zero norm) and kept twice: int8 with one symmetric scale per vector
 * (what the scans and the graph walk compare, through the kernel dispatch in
 * engine/kernels/kern.h) and fp16 (what the best candidates are re-scored
 * with, so a reported similarity is within ~1e-3 of the fp32 cosine).
 * docs/CACHE.md states the memory per vector and the complexity.
 *
 * Deletes: flat sub-indexes delete in place; graph nodes become tombstones
 * (walked through, never returned) and the graph is rebuilt from its live
 * vectors once tombstones reach half of its nodes (amortised: one rebuild per
 * n/2 deletes; the rebuild itself runs on the caller's thread and costs a
 * build of the live set), or flattened once the live vectors drop to
 * flat_max / 2.
 *
 * Threads: none. The index belongs to one thread (the libuv loop); every call
 * comes from it. vindex_search is const and uses only stack and the
 * sub-index's own read-only data, so concurrent searches without writers
 * would be safe, but no locking is done. Not for: persistence (the semantic
 * tier reloads from Redis), embedding (engine), thresholds (the tier). */
#ifndef BARISTA_CACHE_VINDEX_H
#define BARISTA_CACHE_VINDEX_H

#include <stdint.h>

#include "util/err.h"

typedef struct vindex vindex_t;

/* Zero in any field means its default. */
typedef struct {
    int dim;             /* vector length; required (1..4096) */
    int flat_max;        /* a namespace above this many vectors uses HNSW; default 4096 */
    int M;               /* HNSW links per node on upper layers (2*M on layer 0); default 16 */
    int ef_construction; /* HNSW candidate list when inserting; default 200 */
    int ef_search;       /* HNSW candidate list when searching (>= k is used); default 64 */
} vindex_config_t;

typedef struct {
    uint64_t id;
    float sim; /* cosine similarity in [-1, 1] */
} vindex_hit_t;

#define VINDEX_MAX_DIM 4096
#define VINDEX_MAX_K 1024

/* Make an empty index. *out is owned by the caller (vindex_destroy).
 * BAR_ERR_INVALID (detail in msg) for a dim outside 1..VINDEX_MAX_DIM or a
 * negative field; BAR_ERR_NOMEM. */
int vindex_create(vindex_t **out, const vindex_config_t *cfg, bar_msg_t *msg);

/* Free the index and every vector in it. NULL is a no-op. */
void vindex_destroy(vindex_t *v);

/* The config in use, defaults filled in. */
vindex_config_t vindex_config(const vindex_t *v);

/* Store vec (dim floats, copied; normalised inside) as (ns, id); an existing
 * (ns, id) is replaced. 0, BAR_ERR_INVALID for a zero, NaN or infinite vector
 * (the index is unchanged), BAR_ERR_NOMEM (the index is unchanged, or the old
 * (ns, id) is gone when it was a replacement). */
int vindex_add(vindex_t *v, uint64_t ns, uint64_t id, const float *vec);

/* Remove (ns, id): 1 when it was there, 0 when absent. */
int vindex_remove(vindex_t *v, uint64_t ns, uint64_t id);

/* Remove every vector of namespace ns; returns how many there were. */
uint64_t vindex_remove_ns(vindex_t *v, uint64_t ns);

/* Remove everything (the index stays usable). */
void vindex_clear(vindex_t *v);

/* 1 when (ns, id) is stored. */
int vindex_contains(const vindex_t *v, uint64_t ns, uint64_t id);

/* The up to k (1..VINDEX_MAX_K) stored vectors of namespace ns most similar
 * to q (dim floats, any non-zero norm), best first, into out[k]; returns
 * how many were written (0 for an empty or unknown namespace, a bad k, or a
 * zero / non-finite q). Exact (up to int8 ranking among the re-scored
 * candidates) on flat sub-indexes, approximate (HNSW, recall@1 >= 0.98 at
 * the default ef_search on clustered data) on large ones. */
int vindex_search(const vindex_t *v, uint64_t ns, const float *q, int k, vindex_hit_t *out);

/* Same with an explicit HNSW candidate list size (ef <= 0: the config's);
 * for benchmarks tuning recall against latency. */
int vindex_search_ef(const vindex_t *v, uint64_t ns, const float *q, int k, int ef,
                     vindex_hit_t *out);

typedef struct {
    uint64_t vectors;    /* live vectors, all namespaces */
    uint64_t namespaces; /* namespaces holding at least one vector */
    uint64_t graphs;     /* namespaces currently using HNSW */
    uint64_t tombstones; /* deleted graph nodes not yet rebuilt away */
    uint64_t bytes;      /* heap bytes held (vectors, graphs, maps), approximate */
} vindex_stats_t;

void vindex_stats(const vindex_t *v, vindex_stats_t *out);

#endif
