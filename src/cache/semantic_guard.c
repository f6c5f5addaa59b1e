/* semantic_guard.c — the text checks of a semantic hit (semantic_guard.h).
 *
 * Each text is cut once into words (ASCII letters/digits, apostrophes inside
 * a word, every byte >= 0x80 as a letter; U+2019 counts as an apostrophe);
 * a word is kept as a 64-bit hash of its lower-cased, lightly stemmed form
 * plus flags. Numbers are read from the raw bytes ("1,000.5" is one number)
 * and from number words. Sets are small arrays compared by hash: texts are
 * questions, a few dozen words; the word cap bounds the quadratic worst case
 * (256 x 256 hash compares). Not for: anything but English-ish heuristics —
 * a text in another script only meets the number check and the word-overlap
 * check on its byte-level words. */
#include "cache/semantic_guard.h"

#include <stdint.h>
#include <string.h>

#define MAX_NUMS 32

typedef struct {
    uint64_t h;     /* hash of the stemmed lower-case form */
    uint64_t h_pre; /* ... of it without a negating prefix (0: none) */
    int opp;        /* 2 x pair + side + 1 of OPP, 0: none */
    unsigned name : 1, stop : 1, neg : 1;
} word_t;

typedef struct {
    unsigned wh;     /* bit per where / when / who / why, appendices left out */
    unsigned wh_all; /* ... every one */
    word_t w[SEMANTIC_GUARD_MAX_WORDS];
    int n;
    uint64_t num[MAX_NUMS]; /* hashes of normalised numbers */
    int n_num;
    int neg;
} text_t;

semantic_guard_opts_t semantic_guard_default(void)
{
    semantic_guard_opts_t o = {1, 1, 2, 1, 2, 0.0, 0.5, 1};
    return o;
}

const char *semantic_guard_verdict_name(semantic_guard_verdict_t v)
{
    static const char *const names[] = {"pass", "number", "negation", "question",
                                        "name", "words",  "opposite"};
    return (unsigned)v < SEMANTIC_GUARD_N_VERDICTS ? names[v] : "?";
}

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

static int in_list(const char *w, size_t n, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strlen(list[i]) == n && !memcmp(list[i], w, n)) return 1;
    return 0;
}

static const char *const STOP[] = {
    "a",        "an",      "the",       "is",      "are",      "was",    "were",   "be",
    "been",     "being",   "am",        "do",      "does",     "did",    "doing",  "done",
    "have",     "has",     "had",       "having",  "i",        "me",     "my",     "mine",
    "myself",   "you",     "your",      "yours",   "we",       "us",     "our",    "he",
    "him",      "his",     "she",       "her",     "it",       "its",    "they",   "them",
    "their",    "this",    "that",      "these",   "those",    "what",   "which",  "who",
    "whom",     "whose",   "when",      "where",   "why",      "how",    "of",     "in",
    "on",       "at",      "to",        "for",     "from",     "by",     "with",   "about",
    "into",     "onto",    "as",        "and",     "or",       "but",    "if",     "so",
    "than",     "then",    "there",     "here",    "can",      "could",  "would",  "should",
    "will",     "shall",   "may",       "might",   "must",     "some",   "any",    "all",
    "each",     "every",   "very",      "too",     "also",     "just",   "only",   "more",
    "most",     "much",    "many",      "such",    "own",      "same",   "other",  "another",
    "one",      "ones",    "thing",     "things",  "way",      "ways",   "get",    "got",
    "getting",  "make",    "makes",     "good",    "best",     "better", "really", "actually",
    "possible", "someone", "something", "anyone",  "anything", "people", "person", "use",
    "using",    "used",    "like",      "know",    "want",     "need",   "go",     "going",
    "s",        "t",       "ever",      "still",   "even",     "up",     "out",    "over",
    "after",    "before",  "between",   "through", "quora",    "please", "tell",   "explain",
    "mean",     "means",   "meaning",   "example", "examples", NULL,
};

/* Present in one text only, they turn an answer round. */
static const char *const NEG[] = {
    "not",     "no",    "never",  "without", "nothing", "none",    "nobody",
    "neither", "nor",   "cannot", "cant",    "dont",    "doesnt",  "didnt",
    "isnt",    "arent", "wasnt",  "werent",  "couldnt", "wouldnt", "shouldnt",
    "wont",    "hasnt", "havent", "hadnt",   "aint",    "mustnt",  NULL,
};

/* Number words and the digits they stand for. */
static const char *const NUMW[] = {
    "two",      "2",       "three",    "3",          "four",    "4",   "five",      "5",
    "six",      "6",       "seven",    "7",          "eight",   "8",   "nine",      "9",
    "ten",      "10",      "eleven",   "11",         "twelve",  "12",  "thirteen",  "13",
    "fourteen", "14",      "fifteen",  "15",         "sixteen", "16",  "seventeen", "17",
    "eighteen", "18",      "nineteen", "19",         "twenty",  "20",  "thirty",    "30",
    "forty",    "40",      "fifty",    "50",         "sixty",   "60",  "seventy",   "70",
    "eighty",   "80",      "ninety",   "90",         "hundred", "100", "thousand",  "1000",
    "million",  "1000000", "billion",  "1000000000", "second",  "2",   "third",     "3",
    "fourth",   "4",       "fifth",    "5",          "tenth",   "10",  NULL,        NULL,
};

/* Opposites, as pairs of stemmed forms (normalise()'s output). */
static const char *const OPP[] = {
    "increase", "decrease", "buy",   "sell",   "pro",       "con",   "max",   "min",   "maximum",
    "minimum",  "rich",     "poor",  "cheap",  "expensive", "early", "late",  "easy",  "hard",
    "high",     "low",      "fast",  "slow",   "big",       "small", "old",   "new",   "male",
    "female",   "men",      "women", "boy",    "girl",      "right", "wrong", "true",  "false",
    "win",      "lose",     "love",  "hate",   "pass",      "fail",  "worst", "best",  "positive",
    "negative", "strong",   "weak",  "import", "export",    "first", "last",  "least", "most",
    "less",     "more",     "start", "stop",   "open",      "close", "up",    "down",  "before",
    "after",    "above",    "below", "inside", "outside",   "gain",  "loss",  "hot",   "cold",
    NULL,       NULL,
};

/* Prefixes that turn a word into its opposite: "dis"+"advantage". */
static const char *const NEG_PREFIX[] = {"dis", "un", "in", "im", "ir", "il", "non", NULL};

static int is_alnum(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch >= 0x80;
}

static int is_digit(unsigned char ch)
{
    return ch >= '0' && ch <= '9';
}

static void add_num(text_t *t, const char *p, size_t n)
{
    if (t->n_num >= MAX_NUMS) return;
    uint64_t h = fnv(p, n);
    for (int i = 0; i < t->n_num; i++)
        if (t->num[i] == h) return;
    t->num[t->n_num++] = h;
}

/* Numbers from the raw bytes: a digit run, with "," + 3 digits and "." +
 * digits continuing it; leading zeros and grouping commas dropped. */
static void scan_numbers(text_t *t, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (!is_digit((unsigned char)s[i])) {
            i++;
            continue;
        }
        char buf[64];
        size_t k = 0;
        int frac = 0;
        while (i < n) {
            unsigned char ch = (unsigned char)s[i];
            if (is_digit(ch)) {
                if (k || ch != '0' || frac) {
                    if (k < sizeof buf - 1) buf[k++] = (char)ch;
                }
                i++;
            } else if (ch == ',' && !frac && i + 3 < n && is_digit((unsigned char)s[i + 1]) &&
                       is_digit((unsigned char)s[i + 2]) && is_digit((unsigned char)s[i + 3]) &&
                       (i + 4 >= n || !is_digit((unsigned char)s[i + 4]))) {
                i++;
            } else if (ch == '.' && !frac && i + 1 < n && is_digit((unsigned char)s[i + 1])) {
                if (!k) buf[k++] = '0';
                if (k < sizeof buf - 1) buf[k++] = '.';
                frac = 1;
                i++;
            } else {
                break;
            }
        }
        if (frac) /* 1.50 = 1.5, 2.0 = 2 */
            while (k && (buf[k - 1] == '0' || buf[k - 1] == '.')) {
                int dot = buf[k - 1] == '.';
                k--;
                if (dot) break;
            }
        if (!k) buf[k++] = '0';
        add_num(t, buf, k);
    }
}

/* Lower-case w[0..n) into out, drop an apostrophe-s, stem a plural. */
static size_t normalise(const char *w, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < SEMANTIC_GUARD_WORD_MAX; i++) {
        char ch = w[i];
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        out[k++] = ch;
    }
    if (k > 2 && out[k - 2] == '\'' && out[k - 1] == 's') k -= 2;
    /* apostrophes go: "don't" = "dont" */
    size_t j = 0;
    for (size_t i = 0; i < k; i++)
        if (out[i] != '\'') out[j++] = out[i];
    k = j;
    if (k > 5 && !memcmp(out + k - 3, "ing", 3)) {
        k -= 3; /* learning = learn */
        if (k > 3 && out[k - 1] == out[k - 2] && out[k - 1] != 's' && out[k - 1] != 'l') k--;
        return k;
    }
    if (k > 4 && out[k - 2] == 'e' && out[k - 1] == 'd' && out[k - 3] != 'e') {
        k -= 2; /* learned = learn */
        if (k > 3 && out[k - 1] == out[k - 2] && out[k - 1] != 's' && out[k - 1] != 'l') k--;
        return k;
    }
    if (k > 4 && out[k - 2] == 'l' && out[k - 1] == 'y') return k - 2;
    if (k > 4 && !memcmp(out + k - 3, "ies", 3)) {
        out[k - 3] = 'y';
        k -= 2;
    } else if (k > 4 && out[k - 1] == 's' && out[k - 2] == 'e' &&
               (out[k - 3] == 's' || out[k - 3] == 'x' || out[k - 3] == 'h')) {
        k -= 2;
    } else if (k > 3 && out[k - 1] == 's' && out[k - 2] != 's' && out[k - 2] != 'u' &&
               out[k - 2] != 'i') {
        k -= 1;
    }
    return k;
}

static void parse(text_t *t, const char *s, size_t n)
{
    memset(t, 0, sizeof *t);
    scan_numbers(t, s, n);
    int sentence_start = 1, clause_start = 1, prev_and = 0;
    size_t i = 0;
    while (i < n && t->n < SEMANTIC_GUARD_MAX_WORDS) {
        unsigned char ch = (unsigned char)s[i];
        if (!is_alnum(ch)) {
            if (ch == '.' || ch == '?' || ch == '!' || ch == '\n' || ch == ':' || ch == ';' ||
                ch == '"')
                sentence_start = clause_start = 1;
            if (ch == ',') clause_start = 1;
            i++;
            continue;
        }
        /* one word: letters/digits/high bytes, apostrophes between them */
        char raw[128];
        size_t k = 0, start = i;
        int upper_inner = 0, has_digit = 0, has_alpha = 0;
        while (i < n) {
            ch = (unsigned char)s[i];
            if (ch == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                (unsigned char)s[i + 2] == 0x99) {
                /* U+2019 RIGHT SINGLE QUOTATION MARK as an apostrophe */
                if (k < sizeof raw) raw[k++] = '\'';
                i += 3;
                continue;
            }
            if (ch == '\'' && i + 1 < n && is_alnum((unsigned char)s[i + 1]) && i > start) {
                if (k < sizeof raw) raw[k++] = '\'';
                i++;
                continue;
            }
            if (!is_alnum(ch)) break;
            if (ch >= 'A' && ch <= 'Z' && i > start) upper_inner = 1;
            if (is_digit(ch))
                has_digit = 1;
            else
                has_alpha = 1;
            if (k < sizeof raw) raw[k++] = (char)ch;
            i++;
        }
        int upper_first = raw[0] >= 'A' && raw[0] <= 'Z';
        char norm[SEMANTIC_GUARD_WORD_MAX + 1];
        size_t nn = normalise(raw, k, norm);
        if (!nn) continue;
        word_t *w = &t->w[t->n++];
        w->h = fnv(norm, nn);
        /* the pronoun "I" and a one-letter capital are no names */
        w->name = (has_digit && has_alpha) ||
                  (nn > 1 && (upper_inner || (upper_first && !sentence_start)));
        w->stop = in_list(norm, nn, STOP);
        for (int j = 0; NEG_PREFIX[j]; j++) {
            size_t pl = strlen(NEG_PREFIX[j]);
            if (nn >= pl + 4 && !memcmp(norm, NEG_PREFIX[j], pl)) {
                w->h_pre = fnv(norm + pl, nn - pl);
                break;
            }
        }
        for (int j = 0; OPP[j]; j++)
            if (strlen(OPP[j]) == nn && !memcmp(OPP[j], norm, nn)) {
                w->opp = j + 1;
                break;
            }
        static const char *const WH[] = {"where", "when", "who", "why"};
        /* "... and why", "Why?", "If so, why?": an appendix, not the question */
        int appendix = prev_and;
        if (clause_start) {
            size_t q = i;
            while (q < n && (s[q] == ' ' || s[q] == '\t'))
                q++;
            if (q >= n || s[q] == '?') appendix = 1;
        }
        for (unsigned j = 0; j < 4; j++)
            if (strlen(WH[j]) == nn && !memcmp(WH[j], norm, nn)) {
                t->wh_all |= 1u << j;
                if (!appendix) t->wh |= 1u << j;
            }
        prev_and = (nn == 3 && !memcmp(norm, "and", 3)) || (nn == 2 && !memcmp(norm, "or", 2));
        w->neg = in_list(norm, nn, NEG) || (k > 3 && !memcmp(raw + k - 3, "n't", 3));
        if (w->neg) {
            t->neg = 1;
            w->stop = 1;
        }
        if (!has_digit)
            for (int j = 0; NUMW[j]; j += 2)
                if (strlen(NUMW[j]) == nn && !memcmp(NUMW[j], norm, nn)) {
                    add_num(t, NUMW[j + 1], strlen(NUMW[j + 1]));
                    w->stop = 1;
                    break;
                }
        if (has_digit && !has_alpha) w->stop = 1; /* numbers have their own check */
        sentence_start = clause_start = 0;
    }
}

static int has_word(const text_t *t, uint64_t h)
{
    for (int i = 0; i < t->n; i++)
        if (t->w[i].h == h) return 1;
    return 0;
}

static int has_num(const text_t *t, uint64_t h)
{
    for (int i = 0; i < t->n_num; i++)
        if (t->num[i] == h) return 1;
    return 0;
}

/* Content words of a absent from b, distinct; *n_content: a's distinct
 * content words. */
static int content_missing(const text_t *a, const text_t *b, int *n_content)
{
    int miss = 0, nc = 0;
    for (int i = 0; i < a->n; i++) {
        const word_t *w = &a->w[i];
        if (w->stop) continue;
        int dup = 0;
        for (int j = 0; j < i && !dup; j++)
            dup = a->w[j].h == w->h;
        if (dup) continue;
        nc++;
        if (!has_word(b, w->h)) miss++;
    }
    *n_content = nc;
    return miss;
}

/* a's name-like words that b lacks */
static int name_missing(const text_t *a, const text_t *b)
{
    int k = 0;
    for (int i = 0; i < a->n; i++)
        if (a->w[i].name && !has_word(b, a->w[i].h)) k++;
    return k;
}

/* A word of a that b lacks whose opposite b has and a lacks. */
static int opposite_in(const text_t *a, const text_t *b)
{
    for (int i = 0; i < a->n; i++) {
        const word_t *w = &a->w[i];
        if (has_word(b, w->h)) continue;
        /* b has w's prefixed form: "advantage" / "disadvantage" */
        for (int j = 0; j < b->n; j++)
            if (b->w[j].h_pre == w->h && !has_word(a, b->w[j].h)) return 1;
        if (w->opp) {
            int other = (w->opp - 1) ^ 1; /* the pair's other side */
            for (int j = 0; j < b->n; j++)
                if (b->w[j].opp == other + 1 && !has_word(a, b->w[j].h)) return 1;
        }
    }
    return 0;
}

semantic_guard_verdict_t semantic_guard_check(const semantic_guard_opts_t *opts, const char *a,
                                              size_t na, const char *b, size_t nb)
{
    semantic_guard_opts_t def = semantic_guard_default();
    const semantic_guard_opts_t *o = opts ? opts : &def;
    /* two texts of 256 words are ~8 KiB each: on the stack */
    text_t ta, tb;
    parse(&ta, a ? a : "", a ? na : 0);
    parse(&tb, b ? b : "", b ? nb : 0);
    if (o->numbers) {
        if (ta.n_num != tb.n_num) return SEMANTIC_GUARD_NUMBER;
        for (int i = 0; i < ta.n_num; i++)
            if (!has_num(&tb, ta.num[i])) return SEMANTIC_GUARD_NUMBER;
    }
    if (o->negation && ta.neg != tb.neg) return SEMANTIC_GUARD_NEGATION;
    if (o->wh == 1 ? ta.wh_all != tb.wh_all : o->wh && ta.wh != tb.wh) return SEMANTIC_GUARD_WH;
    if (o->opposite && (opposite_in(&ta, &tb) || opposite_in(&tb, &ta)))
        return SEMANTIC_GUARD_OPPOSITE;
    if (o->names) {
        int na_ = name_missing(&ta, &tb), nb_ = name_missing(&tb, &ta);
        /* 1: any name of one missing from the other; 2: only a swap (a name
         * missing on both sides: "Java" / "JavaScript", "France" / "Spain") */
        if (o->names == 1 ? (na_ || nb_) : (na_ && nb_)) return SEMANTIC_GUARD_NAME;
    }
    if (o->max_diff >= 0 || o->min_overlap > 0) {
        int nca, ncb;
        int ma = content_missing(&ta, &tb, &nca);
        int mb = content_missing(&tb, &ta, &ncb);
        /* the allowance grows with the texts: max_diff words, or diff_frac
         * of the distinct content words of both, whichever is more */
        double allow = o->max_diff;
        int uni_ = nca + ncb - (nca - ma);
        if (o->diff_frac * uni_ > allow) allow = o->diff_frac * uni_;
        if (o->max_diff >= 0 && ma + mb > allow) return SEMANTIC_GUARD_WORDS;
        if (o->min_overlap > 0) {
            /* |A ∩ B| / |A ∪ B| over distinct content words */
            int inter = nca - ma;
            int uni = nca + ncb - inter;
            if (uni > 0 && (double)inter / uni < o->min_overlap) return SEMANTIC_GUARD_WORDS;
        }
    }
    return SEMANTIC_GUARD_PASS;
}
