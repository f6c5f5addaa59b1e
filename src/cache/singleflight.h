/* singleflight.h — coalescing of identical in-flight requests: a map from
 * cache key to the one generation currently producing that answer, with the
 * list of subscribers (client streams) that receive its tokens.
 *
 * Life of a record:
 *   sf_begin(key, data)      the first request starts a generation; the server
 *                            puts its generation in `data`, then sf_join()s
 *                            its own stream as the first subscriber
 *   sf_find(key)             a twin arrives: find the record, sf_join() it
 *                            (catch up from a cache_rec_build() partial entry,
 *                            then receive the live tokens)
 *   sf_leave(sub)            a client disconnects; when the LAST subscriber
 *                            leaves, the record is detached (sf_find no longer
 *                            returns it, so nobody joins a generation that is
 *                            being cancelled) and on_empty fires — the server
 *                            cancels the generation there
 *   sf_finish(record)        the generation's DONE event: detach (if still
 *                            attached) and free. The server calls it exactly
 *                            once per sf_begin, whether or not anyone is left.
 *
 * Generic on purpose: subscribers and data are void *; the module never
 * calls into them except via on_empty and sf_foreach. Subscribers keep join
 * order. Threads: loop thread only. Not for: tokens, sockets, the cache. */
#ifndef BARISTA_CACHE_SINGLEFLIGHT_H
#define BARISTA_CACHE_SINGLEFLIGHT_H

#include <stddef.h>

#include "cache/cache_key.h"

typedef struct sf sf_t;
typedef struct sf_entry sf_entry_t;

/* Called when a record's last subscriber leaves (the record is already
 * detached). It may call sf_finish(e): nothing touches e after it returns. */
typedef void (*sf_empty_fn)(void *ctx, sf_entry_t *e);

/* NULL on OOM. on_empty may be NULL. */
sf_t *sf_create(sf_empty_fn on_empty, void *ctx);

/* Frees every record, attached or detached (their subscribers and data are
 * the caller's). */
void sf_destroy(sf_t *sf);

/* The attached record for key, or NULL. */
sf_entry_t *sf_find(sf_t *sf, const cache_key_t *key);

/* Start a record for key with the caller's data (its generation). NULL when
 * one is already attached for key (join that one instead) or on OOM. */
sf_entry_t *sf_begin(sf_t *sf, const cache_key_t *key, void *data);

/* Add a subscriber (any non-NULL pointer, at most once). 0, BAR_ERR_INVALID
 * (NULL, already subscribed, or the record is detached), BAR_ERR_NOMEM. */
int sf_join(sf_entry_t *e, void *sub);

/* Remove a subscriber. Returns how many remain, or BAR_ERR_NOTFOUND. When
 * none remain the record is detached and on_empty(ctx, e) is called. */
int sf_leave(sf_entry_t *e, void *sub);

/* Detach (if attached) and free. Subscribers still listed are dropped
 * silently — tell them first (sf_foreach). */
void sf_finish(sf_t *sf, sf_entry_t *e);

size_t sf_count(const sf_entry_t *e);
void *sf_subscriber(const sf_entry_t *e, size_t i); /* join order */
void *sf_data(const sf_entry_t *e);
const cache_key_t *sf_key(const sf_entry_t *e);
int sf_attached(const sf_entry_t *e);

/* Call fn for every subscriber in join order. fn may sf_leave() the
 * subscriber it was called for (and only that one); if that empties the
 * record, on_empty runs after the walk. */
typedef void (*sf_visit_fn)(void *ctx, sf_entry_t *e, void *sub);
void sf_foreach(sf_entry_t *e, sf_visit_fn fn, void *ctx);

/* Attached records (twins being generated right now). */
size_t sf_size(const sf_t *sf);

#endif
