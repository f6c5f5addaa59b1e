/* cache_entry.h — one cached reply: immutable, refcounted, and stored in a
 * form that replays both ways — as one JSON object (model, created,
 * finish_reason, usage, the full text, logprobs) or as an SSE stream (the
 * same text cut at the original token events, each chunk with its logprob
 * items). Also the recorder that builds an entry while a generation runs, and
 * the versioned binary encoding used for Redis values and snapshots.
 *
 * Memory: an entry is ONE allocation (header, arrays, strings); mem_bytes is
 * its honest size (allocation + malloc overhead), which the L1 budget counts.
 *
 * Threads: refcounts are plain ints — take and drop references on the loop
 * thread only. The contents never change after build, so another thread may
 * READ an entry while the loop thread holds a reference for it (snapshot
 * writer). Not for: eviction or lookup (cache_l1), Redis I/O (cache_redis). */
#ifndef BARISTA_CACHE_CACHE_ENTRY_H
#define BARISTA_CACHE_CACHE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_key.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/logprob.h"

typedef enum {
    CACHE_FINISH_NONE = 0, /* unfinished (a partial entry for single-flight joiners) */
    CACHE_FINISH_STOP = 1,
    CACHE_FINISH_LENGTH = 2,
} cache_finish_t;

/* Logprob items are util/logprob.h's lp_tok_t / lp_alt_t. */

/* One recorded token event of choice `index`: text[off, off+len) and
 * lp[lp0, lp0+n_lp). */
typedef struct {
    size_t off, len;
    int lp0, n_lp;
    int index;
} cache_chunk_t;

#define CACHE_CHOICES_MAX 16 /* choices of one reply (n) */

#define CACHE_LP_MAX_TOP 64
#define CACHE_ENTRY_MAX_BYTES ((size_t)64 << 20) /* bigger replies are not cached */

/* Read-only after build. Pointers point into the entry's own allocation. */
typedef struct cache_entry {
    cache_key_t key;
    uint64_t ns;       /* cache_ns_hash of the tenant namespace */
    const char *model; /* response "model", NUL-terminated */
    size_t model_len;
    int64_t created;   /* the original response's "created" (unix s) */
    int64_t stored_ms; /* unix ms when recorded (Age = now - stored_ms) */
    uint64_t ttl_ms;   /* TTL it was stored with; 0 = none */
    cache_finish_t finish;
    int prompt_tokens, completion_tokens, cached_tokens;
    /* n choices: the chunks of every choice in the order they were
     * generated (interleaved), each naming its choice; text and lp are in
     * that same order. With one choice, text is the reply's text. */
    const char *text; /* every chunk's text, NUL-terminated */
    size_t text_len;
    const cache_chunk_t *chunks; /* concatenated they are exactly text */
    int n_chunks;
    int n_choices;                                  /* >= 1 */
    unsigned char choice_finish[CACHE_CHOICES_MAX]; /* cache_finish_t of each choice */
    int has_logprobs;                               /* the request asked for logprobs */
    const lp_tok_t *lp;
    int n_lp;
    size_t mem_bytes; /* honest size of this entry in memory (memo included) */
    int refs;         /* private: use cache_entry_ref/release */
    /* The one mutable part: a rendering derived from the entry by its user
     * (the API keeps the preformatted JSON reply of a non-streaming hit here),
     * set at most once with cache_entry_set_memo on the loop thread, freed
     * with the entry, never encoded. memo_tag says which rendering it is. */
    char *memo;
    size_t memo_len;
    unsigned memo_tag;
} cache_entry_t;

/* Take another reference; returns e. */
cache_entry_t *cache_entry_ref(cache_entry_t *e);

/* Drop a reference; the last one frees. NULL is fine. */
void cache_entry_release(cache_entry_t *e);

/* Attach a derived rendering p[0, n) (malloc'd; e takes it) with the caller's
 * tag, and add its size to e->mem_bytes (then cache_l1_recharge, when e is
 * resident). Loop thread only. 0, or BAR_ERR_INVALID when e already has a
 * memo (p stays the caller's). */
int cache_entry_set_memo(cache_entry_t *e, char *p, size_t n, unsigned tag);

/* Absolute unix-ms expiry (stored_ms + ttl_ms), or 0 when it never expires. */
int64_t cache_entry_expires_ms(const cache_entry_t *e);

/* ---- recording ---- */

/* What cache_rec_build needs besides the recorded text. */
typedef struct {
    cache_key_t key;
    uint64_t ns;
    const char *model;
    int64_t created;
    int64_t stored_ms;
    uint64_t ttl_ms;
    cache_finish_t finish;
    int prompt_tokens, completion_tokens, cached_tokens;
} cache_meta_t;

typedef struct cache_rec cache_rec_t;

/* A recorder for one generation. want_logprobs: the request asked for them
 * (then every cache_rec_add may carry lp items). NULL on OOM. */
cache_rec_t *cache_rec_create(int want_logprobs);
void cache_rec_destroy(cache_rec_t *r);

/* Record one token event: its text (may be empty, e.g. held-back partial
 * UTF-8) and its logprob items (copied). An event with no text and no items
 * is ignored. 0, BAR_ERR_NOMEM, or BAR_ERR_RANGE past CACHE_ENTRY_MAX_BYTES or
 * with more than CACHE_LP_MAX_TOP alternatives (stop recording: the reply
 * will not be cached). */
int cache_rec_add(cache_rec_t *r, const char *text, size_t len, const lp_tok_t *lp, int n_lp);

/* The same for choice `index` (0..CACHE_CHOICES_MAX-1) of an n > 1 reply. */
int cache_rec_add_choice(cache_rec_t *r, int index, const char *text, size_t len,
                         const lp_tok_t *lp, int n_lp);
/* Choice `index` ended with finish (STOP/LENGTH; anything else makes the
 * reply uncacheable: build returns an entry only for a partial catch-up). */
int cache_rec_end_choice(cache_rec_t *r, int index, cache_finish_t finish);

/* Text recorded so far (borrowed; valid until the next add). */
const char *cache_rec_text(const cache_rec_t *r, size_t *len);
int cache_rec_n_chunks(const cache_rec_t *r);

/* Build an entry (refs = 1, owned by the caller) from what is recorded so far.
 * Call it at the end with meta->finish STOP/LENGTH to cache the reply, or
 * mid-way with CACHE_FINISH_NONE to give a single-flight joiner a catch-up
 * copy. The recorder is unchanged. NULL on OOM or when an add failed. */
cache_entry_t *cache_rec_build(const cache_rec_t *r, const cache_meta_t *meta);

/* ---- binary encoding (Redis values, snapshot records) ----
 *
 * Little-endian, version 2 (version 1 entries, one choice and no chunk
 * index, are refused as BAR_ERR_FORMAT: a reader treats them as misses):
 *   "BCE" u8 version | u8 flags(bit0 logprobs) u8 finish u16 0 | key[16] |
 *   u64 ns | i64 created | i64 stored_ms | u64 ttl_ms |
 *   u32 prompt u32 completion u32 cached |
 *   u32 model_len, bytes | u32 text_len, bytes |
 *   u32 n_choices (1..CACHE_CHOICES_MAX), n_choices × u8 finish |
 *   u32 n_chunks, n × (u32 len, u32 n_lp, u32 index) |
 *   u32 n_lp, n × (u32 len, bytes, f64 logprob, u32 n_top, n_top × (u32 len, bytes, f64)) |
 *   u64 XXH3-64 of everything before it.
 * Only complete entries (finish STOP or LENGTH) are encoded or accepted. */

/* Append e's encoding to out. 0, BAR_ERR_NOMEM, BAR_ERR_INVALID (unfinished). */
int cache_entry_encode(const cache_entry_t *e, buf_t *out);

/* Decode n bytes into a new entry (refs = 1, owned by the caller). Every
 * length is checked against what is left; wrong magic/version, a bad checksum,
 * inconsistent counts or trailing bytes → BAR_ERR_FORMAT with msg set. */
int cache_entry_decode(const void *p, size_t n, cache_entry_t **out, bar_msg_t *msg);

#endif
