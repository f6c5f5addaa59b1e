/* upstream_chunk.h — what the gateway reads from one streamed chunk of an
 * OpenAI-compatible upstream (the data of one SSE event): choices[0]'s text
 * (delta.content for chat, text for completions) and finish_reason, the
 * usage counts, an "error" member.
 *
 * Every chunk of every gateway request goes through here, so the common
 * shape is read by a one-pass scanner that builds nothing (cJSON built a tree
 * of ~25 nodes per chunk: most of a hop's parse cost). Anything the scanner
 * does not handle exactly as cJSON would — not a plain object, an "error"
 * member, a string with \u escapes, a NUL, deep nesting, trailing bytes — is
 * read by the cJSON reader instead, which stays the definition of the result
 * (fuzz/fuzz_upstream_chunk.c checks that both agree whenever the scanner
 * answers). Not for: SSE framing (upstream_sse.c), what the values mean
 * (backend_upstream.c). */
#ifndef BARISTA_UPSTREAM_UPSTREAM_CHUNK_H
#define BARISTA_UPSTREAM_UPSTREAM_CHUNK_H

#include <stddef.h>

#include "util/buf.h"

#define UPCHUNK_FINISH_MAX 32 /* bytes of finish_reason kept, with the NUL */

typedef struct {
    int has_error;                  /* an "error" member */
    char error[256];                /* its message (error.message, or error itself when a string) */
    int has_usage;                  /* "usage" is an object */
    int has_pt, has_ct, has_cached; /* these usage members are numbers */
    double pt, ct, cached;          /* prompt_tokens, completion_tokens,
                                       prompt_tokens_details.cached_tokens */
    int has_c0;                     /* choices[0] is an object */
    int has_text;                   /* its text is a string */
    const char *text;               /* NUL-terminated, up to its first NUL (as cJSON's valuestring);
                                       valid until the next call with the same scratch */
    size_t text_len;                /* strlen(text) */
    int has_finish;                 /* its finish_reason is a string */
    char finish[UPCHUNK_FINISH_MAX]; /* truncated to fit */
} upchunk_t;

/* Read chunk p[0, n). 0 and *out, or -1: not a JSON object. scratch holds the
 * text when it cannot point into p; reuse it across calls (no allocation
 * once it has grown). */
int upchunk_read(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch);

/* The same through cJSON only (the reference; upchunk_read's fallback). */
int upchunk_read_cjson(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch);

/* The scanner alone: 0 read, -1 not JSON as far as it can tell, 1 a shape it
 * leaves to cJSON (for the fuzz target). */
int upchunk_scan(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch);

#endif
