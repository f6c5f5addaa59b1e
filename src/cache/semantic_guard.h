/* semantic_guard.h — the cheap text checks a semantic cache hit must pass on
 * top of cosine similarity.
 *
 * Cosine similarity of sentence embeddings is blind to the few tokens that
 * change an answer: "in 4 days" / "in 10 days", "is X safe" / "is X not
 * safe", "Java" / "JavaScript". The guard compares the stored query's text
 * with the new query's text and refuses a candidate when
 *   - the numbers differ (digit runs, normalised: "1,000" = "1000", "04" = "4";
 *     and the number words two..twenty, thirty..ninety, hundred, thousand,
 *     million, billion),
 *   - a negation is present in one only (not, no, never, n't, without,
 *     nothing, none, nobody, neither, nor, cannot),
 *   - one asks where / when / who / why and the other does not ask the same
 *     (an appended "and why" / "Why?" / "If so, why?" is not a question of
 *     its own: QQP's askers use it as a flourish),
 *   - a word of one only has its opposite in the other only: a negating
 *     prefix (dis-, un-, in-, im-, ir-, il-, non-) or a pair of a short list
 *     (increase / decrease, buy / sell, pros / cons ...),
 *   - a name-like word of one is missing from the other: a word written with
 *     a capital letter anywhere but at the start of a sentence, or mixing
 *     letters and digits ("iPhone", "Python3", "GPT-4"), compared
 *     case-insensitively and after a light plural stem,
 *   - the content words (not stop words, stemmed) overlap too little: the
 *     count of content words of one text absent from the other exceeds
 *     max(max_diff, diff_frac x their distinct content words), or
 *     their Jaccard overlap is under min_overlap.
 * The measured effect of each check on QQP is in docs/CACHE.md
 * (bench/semantic).
 *
 * Pure functions over byte strings (UTF-8; non-ASCII bytes count as letters
 * and are compared byte for byte): no allocation, no state, any thread.
 * Texts longer than SEMANTIC_GUARD_MAX_WORDS words are compared on their
 * first SEMANTIC_GUARD_MAX_WORDS words. Not for: embeddings, thresholds (the
 * store, semantic.h), OpenAI fields. */
#ifndef BARISTA_CACHE_SEMANTIC_GUARD_H
#define BARISTA_CACHE_SEMANTIC_GUARD_H

#include <stddef.h>

#define SEMANTIC_GUARD_MAX_WORDS 256
#define SEMANTIC_GUARD_WORD_MAX 31 /* longer words are compared on this prefix */

/* Which checks run. semantic_guard_default() is what the server uses. */
typedef struct {
    int numbers;  /* numbers must be equal (as sets) */
    int negation; /* negation present in both or in neither */
    int wh;       /* the same of where / when / who / why (a place, a time, a person, a
                     reason); 1: every one counts, 2: an appended "and why" / "Why?" does not */
    int names;    /* 1: name-like words of each must occur in the other; 2: only a swap refused */
    int max_diff; /* at most this many content words in one text only; < 0: off */
    double min_overlap; /* content-word Jaccard at least this; 0: off */
    double diff_frac;   /* ... or this share of both texts' distinct content words, if more */
    int opposite;       /* refuse opposites: a word of one only whose opposite is in the other
                           only ("advantages" / "disadvantages", "legal" / "illegal",
                           "increase" / "decrease", "buy" / "sell" ...) */
} semantic_guard_opts_t;

/* Why a candidate was refused (SEMANTIC_GUARD_PASS: it was not). */
typedef enum {
    SEMANTIC_GUARD_PASS = 0,
    SEMANTIC_GUARD_NUMBER,
    SEMANTIC_GUARD_NEGATION,
    SEMANTIC_GUARD_WH,
    SEMANTIC_GUARD_NAME,
    SEMANTIC_GUARD_WORDS,
    SEMANTIC_GUARD_OPPOSITE,
    SEMANTIC_GUARD_N_VERDICTS,
} semantic_guard_verdict_t;

/* The defaults (tuned on one QQP slice, checked on another: docs/CACHE.md). */
semantic_guard_opts_t semantic_guard_default(void);

/* "pass", "number", "negation", "question", "name", "words", "opposite". */
const char *semantic_guard_verdict_name(semantic_guard_verdict_t v);

/* Compare texts a (na bytes) and b (nb bytes) under opts (NULL: the
 * defaults). Symmetric: check(a, b) == check(b, a). */
semantic_guard_verdict_t semantic_guard_check(const semantic_guard_opts_t *opts, const char *a,
                                              size_t na, const char *b, size_t nb);

#endif
