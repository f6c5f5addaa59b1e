/* cache_l1.c — in-process exact cache (see cache_l1.h): a chained hash
 * index of nodes, each on one intrusive FIFO/LRU queue, and the eviction
 * policies (S3-FIFO, LRU) behind a three-function vtable.
 *
 * Invariants: every node is in the index and on exactly one queue; a node
 * with e == NULL is an S3-FIFO ghost (on the ghost queue only); l1->bytes is
 * the sum of node->bytes over all nodes and never exceeds the budget after a
 * put returns; queue heads are the newest, tails the next to go.
 * Not for: I/O, locking (loop thread only). */
#include "cache/cache_l1.h"

#include <stdlib.h>
#include <string.h>

#include "util/timeutil.h"

enum { Q_SMALL, Q_MAIN, Q_GHOST, Q_COUNT };

typedef struct node {
    cache_key_t key;
    struct node *hnext;       /* index chain */
    struct node *prev, *next; /* queue: prev is newer, next is older */
    cache_entry_t *e;         /* NULL: ghost */
    double expires;           /* monotonic seconds; 0 = never */
    size_t bytes;             /* what this node is charged */
    uint8_t q;                /* Q_* */
    uint8_t freq;             /* S3-FIFO access counter, 0..3 */
} node_t;

_Static_assert(sizeof(node_t) + 16 + 2 * sizeof(void *) <= CACHE_L1_NODE_BYTES,
               "CACHE_L1_NODE_BYTES must cover the node, malloc overhead and hash slots");

typedef struct {
    node_t *head, *tail;
    size_t n, bytes;
} queue_t;

typedef struct policy policy_t;

struct cache_l1 {
    cache_l1_opts_t o;
    const policy_t *pol;
    node_t **buckets;
    size_t n_buckets; /* power of two */
    size_t n_nodes;   /* residents + ghosts */
    queue_t q[Q_COUNT];
    size_t bytes;
    size_t small_target; /* S3-FIFO: bytes the small queue may hold */
    cache_l1_stats_t st;
};

/* The eviction policy: where a new node goes, what a hit does, and how to
 * free room (one step; returns 0 when there is nothing left to drop). */
struct policy {
    void (*insert)(cache_l1_t *l1, node_t *n, unsigned flags);
    void (*hit)(cache_l1_t *l1, node_t *n);
    int (*evict)(cache_l1_t *l1);
};

/* ---- clock ---- */

static double default_now(void *ctx)
{
    (void)ctx;
    return time_now_mono();
}

double cache_l1_now(const cache_l1_t *l1)
{
    return l1->o.now(l1->o.now_ctx);
}

static int expired(const node_t *n, double now)
{
    return n->expires > 0 && now >= n->expires;
}

/* ---- queues ---- */

static void q_push_head(cache_l1_t *l1, int qi, node_t *n)
{
    queue_t *q = &l1->q[qi];
    n->q = (uint8_t)qi;
    n->prev = NULL;
    n->next = q->head;
    if (q->head)
        q->head->prev = n;
    else
        q->tail = n;
    q->head = n;
    q->n++;
    q->bytes += n->bytes;
}

static void q_unlink(cache_l1_t *l1, node_t *n)
{
    queue_t *q = &l1->q[n->q];
    if (n->prev)
        n->prev->next = n->next;
    else
        q->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        q->tail = n->prev;
    n->prev = n->next = NULL;
    q->n--;
    q->bytes -= n->bytes;
}

/* ---- index ---- */

static size_t slot(const cache_l1_t *l1, const cache_key_t *k)
{
    uint64_t h;
    memcpy(&h, k->b + 8, 8);
    return (size_t)h & (l1->n_buckets - 1);
}

static node_t *idx_find(const cache_l1_t *l1, const cache_key_t *k)
{
    for (node_t *n = l1->buckets[slot(l1, k)]; n; n = n->hnext)
        if (cache_key_equal(&n->key, k)) return n;
    return NULL;
}

static void idx_grow(cache_l1_t *l1)
{
    size_t nb = l1->n_buckets * 2;
    node_t **b = calloc(nb, sizeof *b);
    if (!b) return; /* longer chains, still correct */
    for (size_t i = 0; i < l1->n_buckets; i++) {
        node_t *n = l1->buckets[i];
        while (n) {
            node_t *next = n->hnext;
            uint64_t h;
            memcpy(&h, n->key.b + 8, 8);
            size_t s = (size_t)h & (nb - 1);
            n->hnext = b[s];
            b[s] = n;
            n = next;
        }
    }
    free(l1->buckets);
    l1->buckets = b;
    l1->n_buckets = nb;
}

static void idx_add(cache_l1_t *l1, node_t *n)
{
    if (l1->n_nodes >= l1->n_buckets) idx_grow(l1);
    size_t s = slot(l1, &n->key);
    n->hnext = l1->buckets[s];
    l1->buckets[s] = n;
    l1->n_nodes++;
}

static void idx_del(cache_l1_t *l1, node_t *n)
{
    node_t **pp = &l1->buckets[slot(l1, &n->key)];
    while (*pp != n)
        pp = &(*pp)->hnext;
    *pp = n->hnext;
    l1->n_nodes--;
}

/* ---- node lifecycle ---- */

/* Remove a node entirely (index, queue, entry reference). */
static void node_drop(cache_l1_t *l1, node_t *n)
{
    q_unlink(l1, n);
    idx_del(l1, n);
    l1->bytes -= n->bytes;
    if (n->e)
        l1->st.entries--;
    else
        l1->st.ghosts--;
    cache_entry_release(n->e);
    free(n);
}

/* Change a resident node's charge (it is on queue n->q). */
static void node_recharge(cache_l1_t *l1, node_t *n, size_t bytes)
{
    l1->q[n->q].bytes = l1->q[n->q].bytes - n->bytes + bytes;
    l1->bytes = l1->bytes - n->bytes + bytes;
    n->bytes = bytes;
}

/* Evict (for room) or expire a resident node. */
static void node_evict(cache_l1_t *l1, node_t *n, double now)
{
    if (expired(n, now))
        l1->st.expirations++;
    else
        l1->st.evictions++;
    node_drop(l1, n);
}

/* ---- S3-FIFO ---- */

/* A node leaves the small queue for the main one when it was hit at least
 * o.s3_promote_hits times while there (default 1; the paper's "freq > 1" is
 * 2 — bench/cache-policy measures both). */
#define S3_MAX_FREQ 3

static size_t ghost_cap(const cache_l1_t *l1)
{
    /* remember about as many keys as are resident (the paper sizes G like M) */
    size_t n = l1->q[Q_MAIN].n + l1->q[Q_SMALL].n;
    return n < 16 ? 16 : n;
}

static void s3_trim_ghosts(cache_l1_t *l1)
{
    size_t cap = ghost_cap(l1);
    while (l1->q[Q_GHOST].n > cap)
        node_drop(l1, l1->q[Q_GHOST].tail);
}

static void s3_insert(cache_l1_t *l1, node_t *n, unsigned flags)
{
    n->freq = 0;
    q_push_head(l1, (flags & CACHE_L1_WARM) ? Q_MAIN : Q_SMALL, n);
}

static void s3_hit(cache_l1_t *l1, node_t *n)
{
    (void)l1;
    if (n->freq < S3_MAX_FREQ) n->freq++;
}

/* Small-queue tail: to main if it was used, else to the ghost queue. Returns
 * 1 once bytes were freed (or the small queue is empty). */
static int s3_evict_small(cache_l1_t *l1, double now)
{
    while (l1->q[Q_SMALL].tail) {
        node_t *t = l1->q[Q_SMALL].tail;
        if (expired(t, now)) {
            node_evict(l1, t, now);
            return 1;
        }
        q_unlink(l1, t);
        if (t->freq >= l1->o.s3_promote_hits) {
            t->freq = 0;
            q_push_head(l1, Q_MAIN, t);
            continue;
        }
        /* becomes a ghost: keep the key, drop the value */
        l1->st.evictions++;
        l1->st.entries--;
        l1->st.ghosts++;
        cache_entry_release(t->e);
        t->e = NULL;
        t->expires = 0;
        l1->bytes -= t->bytes - CACHE_L1_NODE_BYTES;
        t->bytes = CACHE_L1_NODE_BYTES;
        q_push_head(l1, Q_GHOST, t);
        return 1;
    }
    return 0;
}

/* Main-queue tail: reinsert while its counter is positive, else evict. */
static int s3_evict_main(cache_l1_t *l1, double now)
{
    while (l1->q[Q_MAIN].tail) {
        node_t *t = l1->q[Q_MAIN].tail;
        if (t->freq > 0 && !expired(t, now)) {
            t->freq--;
            q_unlink(l1, t);
            q_push_head(l1, Q_MAIN, t);
            continue;
        }
        node_evict(l1, t, now);
        return 1;
    }
    return 0;
}

static int s3_evict(cache_l1_t *l1)
{
    double now = cache_l1_now(l1);
    int done;
    if (l1->q[Q_SMALL].n && (l1->q[Q_SMALL].bytes >= l1->small_target || !l1->q[Q_MAIN].n))
        done = s3_evict_small(l1, now);
    else
        done = s3_evict_main(l1, now);
    if (!done) done = s3_evict_small(l1, now) || s3_evict_main(l1, now);
    s3_trim_ghosts(l1);
    if (!done && l1->q[Q_GHOST].tail) {
        node_drop(l1, l1->q[Q_GHOST].tail);
        done = 1;
    }
    return done;
}

static const policy_t k_s3fifo = {s3_insert, s3_hit, s3_evict};

/* ---- LRU (everything on the main queue) ---- */

static void lru_insert(cache_l1_t *l1, node_t *n, unsigned flags)
{
    (void)flags;
    q_push_head(l1, Q_MAIN, n);
}

static void lru_hit(cache_l1_t *l1, node_t *n)
{
    q_unlink(l1, n);
    q_push_head(l1, Q_MAIN, n);
}

static int lru_evict(cache_l1_t *l1)
{
    node_t *t = l1->q[Q_MAIN].tail;
    if (!t) return 0;
    node_evict(l1, t, cache_l1_now(l1));
    return 1;
}

static const policy_t k_lru = {lru_insert, lru_hit, lru_evict};

/* ---- public ---- */

const char *cache_policy_name(cache_policy_t p)
{
    return p == CACHE_POLICY_LRU ? "lru" : "s3fifo";
}

int cache_policy_parse(const char *s, cache_policy_t *out)
{
    if (s && (!strcmp(s, "s3fifo") || !strcmp(s, "s3-fifo"))) {
        *out = CACHE_POLICY_S3FIFO;
        return 0;
    }
    if (s && !strcmp(s, "lru")) {
        *out = CACHE_POLICY_LRU;
        return 0;
    }
    return BAR_ERR_INVALID;
}

cache_l1_t *cache_l1_create(const cache_l1_opts_t *o)
{
    if (!o || !o->budget_bytes) return NULL;
    cache_l1_t *l1 = calloc(1, sizeof *l1);
    if (!l1) return NULL;
    l1->o = *o;
    if (!l1->o.now) l1->o.now = default_now;
    if (!l1->o.max_entry_bytes) l1->o.max_entry_bytes = o->budget_bytes / 8;
    if (!l1->o.s3_promote_hits) l1->o.s3_promote_hits = 1;
    if (l1->o.s3_promote_hits > S3_MAX_FREQ) l1->o.s3_promote_hits = S3_MAX_FREQ;
    l1->pol = o->policy == CACHE_POLICY_LRU ? &k_lru : &k_s3fifo;
    l1->small_target = o->budget_bytes / 10;
    l1->n_buckets = 1024;
    l1->buckets = calloc(l1->n_buckets, sizeof *l1->buckets);
    if (!l1->buckets) {
        free(l1);
        return NULL;
    }
    l1->st.budget = o->budget_bytes;
    return l1;
}

static void drop_all(cache_l1_t *l1, int ghosts_too, size_t *removed)
{
    for (int qi = 0; qi < Q_COUNT; qi++) {
        if (qi == Q_GHOST && !ghosts_too) continue;
        while (l1->q[qi].head) {
            if (removed && l1->q[qi].head->e) (*removed)++;
            node_drop(l1, l1->q[qi].head);
        }
    }
}

void cache_l1_destroy(cache_l1_t *l1)
{
    if (!l1) return;
    drop_all(l1, 1, NULL);
    free(l1->buckets);
    free(l1);
}

cache_entry_t *cache_l1_get(cache_l1_t *l1, const cache_key_t *k)
{
    node_t *n = idx_find(l1, k);
    if (!n || !n->e) {
        l1->st.misses++;
        return NULL;
    }
    if (expired(n, cache_l1_now(l1))) {
        l1->st.expirations++;
        node_drop(l1, n);
        l1->st.misses++;
        return NULL;
    }
    l1->pol->hit(l1, n);
    l1->st.hits++;
    return cache_entry_ref(n->e);
}

int cache_l1_put(cache_l1_t *l1, cache_entry_t *e, uint64_t ttl_ms, unsigned flags)
{
    if (e->finish != CACHE_FINISH_STOP && e->finish != CACHE_FINISH_LENGTH) return BAR_ERR_INVALID;
    size_t need = e->mem_bytes + CACHE_L1_NODE_BYTES;
    if (e->mem_bytes > l1->o.max_entry_bytes || need > l1->o.budget_bytes) {
        l1->st.rejected++;
        return BAR_ERR_RANGE;
    }
    double now = cache_l1_now(l1);
    double expires = ttl_ms ? now + (double)ttl_ms / 1e3 : 0;
    node_t *n = idx_find(l1, &e->key);
    if (n && n->e) {
        /* replace the value in place: keeps the node's queue position */
        cache_entry_t *old = n->e;
        n->e = cache_entry_ref(e);
        n->expires = expires;
        node_recharge(l1, n, need);
        cache_entry_release(old);
        while (l1->bytes > l1->o.budget_bytes && l1->pol->evict(l1))
            ;
        l1->st.inserts++;
        return 0;
    }
    int was_ghost = n != NULL;
    if (n) {
        /* the key was recently dropped: reuse its node, straight to main */
        q_unlink(l1, n);
        l1->bytes -= n->bytes;
        l1->st.ghosts--;
        n->bytes = 0;
    }
    while (l1->bytes + need > l1->o.budget_bytes && l1->pol->evict(l1))
        ;
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n) return BAR_ERR_NOMEM;
        n->key = e->key;
        idx_add(l1, n);
    }
    n->e = cache_entry_ref(e);
    n->expires = expires;
    n->bytes = need;
    l1->bytes += need;
    l1->st.entries++;
    l1->st.inserts++;
    if (was_ghost) {
        n->freq = 0;
        q_push_head(l1, Q_MAIN, n);
    } else {
        l1->pol->insert(l1, n, flags);
    }
    if (l1->pol == &k_s3fifo) s3_trim_ghosts(l1);
    return 0;
}

void cache_l1_recharge(cache_l1_t *l1, const cache_entry_t *e)
{
    node_t *n = idx_find(l1, &e->key);
    if (!n || n->e != e) return;
    node_recharge(l1, n, e->mem_bytes + CACHE_L1_NODE_BYTES);
    while (l1->bytes > l1->o.budget_bytes && l1->pol->evict(l1))
        ;
}

int cache_l1_del(cache_l1_t *l1, const cache_key_t *k)
{
    node_t *n = idx_find(l1, k);
    if (!n) return 0;
    int had = n->e != NULL;
    node_drop(l1, n);
    return had;
}

/* Drop every entry with (e->ns & mask) == (ns & mask). */
static size_t purge_masked(cache_l1_t *l1, uint64_t ns, uint64_t mask)
{
    size_t removed = 0;
    for (int qi = 0; qi < Q_COUNT; qi++) {
        if (qi == Q_GHOST) continue;
        node_t *n = l1->q[qi].head;
        while (n) {
            node_t *next = n->next;
            if ((n->e->ns & mask) == (ns & mask)) {
                node_drop(l1, n);
                removed++;
            }
            n = next;
        }
    }
    return removed;
}

size_t cache_l1_purge_ns(cache_l1_t *l1, uint64_t ns)
{
    return purge_masked(l1, ns, ~0ull);
}

size_t cache_l1_purge_tenant(cache_l1_t *l1, uint64_t ns)
{
    return purge_masked(l1, ns, 0xffffffff00000000ull);
}

size_t cache_l1_purge_all(cache_l1_t *l1)
{
    size_t removed = 0;
    drop_all(l1, 1, &removed);
    return removed;
}

size_t cache_l1_sweep(cache_l1_t *l1)
{
    double now = cache_l1_now(l1);
    size_t removed = 0;
    for (int qi = 0; qi < Q_COUNT; qi++) {
        if (qi == Q_GHOST) continue;
        node_t *n = l1->q[qi].head;
        while (n) {
            node_t *next = n->next;
            if (expired(n, now)) {
                l1->st.expirations++;
                node_drop(l1, n);
                removed++;
            }
            n = next;
        }
    }
    return removed;
}

void cache_l1_stats(const cache_l1_t *l1, cache_l1_stats_t *st)
{
    *st = l1->st;
    st->bytes = l1->bytes;
}

int cache_l1_foreach(cache_l1_t *l1, cache_l1_visit_fn fn, void *ctx)
{
    double now = cache_l1_now(l1);
    static const int order[] = {Q_SMALL, Q_MAIN};
    for (int i = 0; i < 2; i++)
        for (node_t *n = l1->q[order[i]].tail; n; n = n->prev) {
            if (expired(n, now)) continue;
            int rc = fn(ctx, n->e, n->expires);
            if (rc) return rc;
        }
    return 0;
}
