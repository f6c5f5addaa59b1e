/* pool.h — a fixed team of worker threads for data-parallel kernels.
 *
 * pool_run(p, fn, ctx) runs fn(ctx, ith, nth) once on each of the nth threads
 * (the caller is ith 0) and returns when all have finished: a fork-join
 * barrier cheap enough to call a few hundred times per token. Between runs,
 * workers spin for a few tens of microseconds (so back-to-back runs start in
 * well under a microsecond) and then sleep on a condition variable, so an idle
 * engine burns no CPU.
 *
 * Not for: queues of independent jobs, nesting (fn must not call pool_run on
 * the same pool), or calls from several threads at once (one caller at a time
 * per pool). Kernels stay independent of it: split work with pool_split. */
#ifndef BARISTA_ENGINE_POOL_H
#define BARISTA_ENGINE_POOL_H

typedef struct pool pool_t;

/* Create a pool of n_threads threads in total, counting the caller of
 * pool_run (so n_threads - 1 workers are started); n_threads <= 0 means the
 * number of online CPUs. Returns NULL when memory or threads run out. The
 * caller owns the pool and frees it with pool_destroy. */
pool_t *pool_create(int n_threads);

/* Stop and join the workers and free the pool. Must not be called while a
 * pool_run is in progress. NULL is a no-op. */
void pool_destroy(pool_t *p);

/* Total number of threads (workers + the caller), >= 1. */
int pool_size(const pool_t *p);

/* Run fn(ctx, ith, nth) on every thread, ith in [0, nth), nth = pool_size(p);
 * the caller runs ith 0. Returns after every call has returned; all their
 * memory writes are then visible to the caller. */
void pool_run(pool_t *p, void (*fn)(void *ctx, int ith, int nth), void *ctx);

/* Rows are handed out in multiples of this (the AVX-512 matmul tiles 16 rows). */
#define POOL_SPLIT_ALIGN 16

/* Contiguous share [*lo, *hi) of n items for thread ith of nth: chunks of
 * POOL_SPLIT_ALIGN items dealt as evenly as possible (the last chunk may be
 * short; some threads get an empty range when n is small). */
static inline void pool_split(int n, int ith, int nth, int *lo, int *hi)
{
    int units = (n + POOL_SPLIT_ALIGN - 1) / POOL_SPLIT_ALIGN;
    int per = units / nth, rem = units % nth;
    int u0 = ith * per + (ith < rem ? ith : rem);
    int u1 = u0 + per + (ith < rem ? 1 : 0);
    int a = u0 * POOL_SPLIT_ALIGN, b = u1 * POOL_SPLIT_ALIGN;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

#endif
