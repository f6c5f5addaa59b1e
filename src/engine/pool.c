/* pool.c — fork-join worker team (see pool.h).
 *
 * Protocol. A run is published by bumping the generation counter `gen` after
 * storing fn/ctx and `pending` = nth - 1; workers wait for gen to change,
 * run their share, and decrement `pending`; the last one to finish wakes the
 * caller if it went to sleep. Waiting is spin-then-sleep on both sides: spin
 * on the atomic for SPIN_NS with a pause instruction, then block on a
 * condition variable. Lost wake-ups are ruled out by the "announce, then
 * re-check" pattern with sequentially consistent atomics: a sleeper increments
 * its sleeper count under the mutex and re-checks the condition before
 * waiting; a waker changes the condition and then reads the sleeper count,
 * taking the mutex to broadcast only when someone may be asleep.
 * Not for: work queues or anything that outlives one pool_run. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "engine/pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() sched_yield()
#endif

/* Waiting: pause-spin for PAUSE_NS, then keep polling but give the CPU away
 * with sched_yield (the thread we wait for may need it: cores are often
 * oversubscribed), and after SPIN_NS in total block on the condition variable. */
enum { PAUSE_NS = 5 * 1000, SPIN_NS = 50 * 1000 };

/* Poll-loop pacing shared by both waiters; returns 0 once SPIN_NS is spent. */
static int spin_step(unsigned i, uint64_t *t0);

typedef struct {
    pool_t *p;
    int ith;
} worker_arg_t;

struct pool {
    int nth;
    pthread_t *threads;
    worker_arg_t *args;

    /* the current run; written by the caller before gen is bumped */
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;

    _Alignas(64) atomic_uint gen; /* run counter */
    atomic_int stop;
    _Alignas(64) atomic_int pending; /* workers still running the current run */

    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* workers sleep here for a new gen */
    pthread_cond_t done_cv; /* the caller sleeps here for pending == 0 */
    atomic_int work_sleepers;
    atomic_int done_sleeper;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int spin_step(unsigned i, uint64_t *t0)
{
    if (i < 64) {
        cpu_relax();
        return 1;
    }
    uint64_t t = now_ns();
    if (!*t0) *t0 = t;
    uint64_t dt = t - *t0;
    if (dt > SPIN_NS) return 0;
    if (dt > PAUSE_NS)
        sched_yield();
    else
        for (int k = 0; k < 8; k++)
            cpu_relax();
    return 1;
}

/* Spin until gen != seen (or stop), up to SPIN_NS; returns 1 when it changed. */
static int spin_for_gen(pool_t *p, unsigned seen)
{
    uint64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen ||
            atomic_load_explicit(&p->stop, memory_order_relaxed))
            return 1;
        if (!spin_step(i, &t0)) return 0;
    }
}

static void *worker_main(void *arg)
{
    worker_arg_t *wa = arg;
    pool_t *p = wa->p;
    unsigned seen = 0; /* gen is 0 until pool_create has returned */
    for (;;) {
        if (!spin_for_gen(p, seen)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->work_sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->work_cv, &p->mu);
            atomic_fetch_sub(&p->work_sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        p->fn(p->ctx, wa->ith, p->nth);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && /* seq_cst, see top */
            atomic_load(&p->done_sleeper)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

pool_t *pool_create(int n_threads)
{
    if (n_threads <= 0) n_threads = online_cpus();
    pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nth = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->work_sleepers, 0);
    atomic_init(&p->done_sleeper, 0);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->args = calloc((size_t)n_threads, sizeof *p->args);
    if (!p->threads || !p->args || pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->threads);
        free(p->args);
        free(p);
        return NULL;
    }
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    for (int i = 1; i < n_threads; i++) {
        p->args[i] = (worker_arg_t){p, i};
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
            p->nth = i; /* destroy joins the i - 1 workers started so far */
            pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void pool_destroy(pool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nth; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->args);
    free(p);
}

int pool_size(const pool_t *p)
{
    return p->nth;
}

void pool_run(pool_t *p, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    if (p->nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->nth - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn/ctx/pending */
    if (atomic_load(&p->work_sleepers)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
    }

    fn(ctx, 0, p->nth);

    uint64_t t0 = 0;
    for (unsigned i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; i++) {
        if (!spin_step(i, &t0)) {
            pthread_mutex_lock(&p->mu);
            atomic_store(&p->done_sleeper, 1);
            while (atomic_load(&p->pending) != 0)
                pthread_cond_wait(&p->done_cv, &p->mu);
            atomic_store(&p->done_sleeper, 0);
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
}
