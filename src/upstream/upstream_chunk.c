/* upstream_chunk.c — one streamed chunk's text, finish_reason, usage and
 * error (see upstream_chunk.h): a scanner for the common shape, cJSON for
 * the rest. Not for: SSE framing, what the values mean. */
#include "upstream/upstream_chunk.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_DEPTH 32 /* deeper nesting is left to cJSON */
#define NUM_MAX 63    /* longer number tokens are left to cJSON */

/* ---- the reference: cJSON ---------------------------------------------------------------- */

static void keep_finish(upchunk_t *out, const char *s, size_t n)
{
    if (n >= UPCHUNK_FINISH_MAX) n = UPCHUNK_FINISH_MAX - 1;
    memcpy(out->finish, s, n);
    out->finish[n] = '\0';
    out->has_finish = 1;
}

int upchunk_read_cjson(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch)
{
    memset(out, 0, sizeof *out);
    buf_clear(scratch);
    cJSON *root = cJSON_ParseWithLength(p, n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err) {
        const cJSON *m =
            cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "message") : err;
        out->has_error = 1;
        snprintf(out->error, sizeof out->error, "%.200s",
                 cJSON_IsString(m) ? m->valuestring : "(no message)");
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (cJSON_IsObject(usage)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
        const cJSON *det = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
        const cJSON *cached =
            cJSON_IsObject(det) ? cJSON_GetObjectItemCaseSensitive(det, "cached_tokens") : NULL;
        out->has_usage = 1;
        if ((out->has_pt = cJSON_IsNumber(pt))) out->pt = pt->valuedouble;
        if ((out->has_ct = cJSON_IsNumber(ct))) out->ct = ct->valuedouble;
        if ((out->has_cached = cJSON_IsNumber(cached))) out->cached = cached->valuedouble;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    int rc = 0;
    if (cJSON_IsObject(c0)) {
        out->has_c0 = 1;
        const cJSON *text;
        if (is_chat) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(c0, "delta");
            text = cJSON_IsObject(d) ? cJSON_GetObjectItemCaseSensitive(d, "content") : NULL;
        } else {
            text = cJSON_GetObjectItemCaseSensitive(c0, "text");
        }
        const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
        if (cJSON_IsString(fr)) keep_finish(out, fr->valuestring, strlen(fr->valuestring));
        if (cJSON_IsString(text)) {
            size_t tn = strlen(text->valuestring);
            if (buf_append(scratch, text->valuestring, tn) || buf_reserve(scratch, 1)) {
                rc = -1;
            } else {
                out->has_text = 1;
                out->text = scratch->p;
                out->text_len = tn;
            }
        }
    }
    cJSON_Delete(root);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

/* ---- the scanner ------------------------------------------------------------------------- */

typedef struct {
    const char *p, *end;
    int depth;
} scan_t;

/* What a member's value is wanted for. */
typedef enum {
    W_SKIP,
    W_USAGE,   /* top-level "usage" */
    W_DETAILS, /* usage.prompt_tokens_details */
    W_CHOICES, /* top-level "choices" */
    W_C0,      /* choices[0] */
    W_DELTA,   /* choices[0].delta */
} want_t;

#define LEAVE 1 /* a shape left to cJSON */

static void ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* After a member or an element: a ',' (MORE follows), the closer (0:
 * the object or array ends here) or anything else (LEAVE). */
#define MORE 2
static int list_next(scan_t *s, char close)
{
    ws(s);
    if (s->p >= s->end) return LEAVE;
    if (*s->p == ',') {
        s->p++;
        return MORE;
    }
    if (*s->p != close) return LEAVE;
    s->p++;
    s->depth--;
    return 0;
}

/* A string at s->p ('"'): its raw bytes [*a, *b) between the quotes. dec:
 * NULL (only find the end), or a buffer for the decoded bytes. Escapes other
 * than \uXXXX are decoded; \u, raw control bytes: LEAVE. */
/* The bytes that end a string's plain run: '"', '\\' and control bytes. */
static const unsigned char STR_STOP[256] = {
    1,         1,          1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00-0x0f */
    1,         1,          1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10-0x1f */
    ['"'] = 1, ['\\'] = 1,
};

static int str(scan_t *s, const char **a, const char **b, buf_t *dec)
{
    const char *q = ++s->p;
    for (;;) {
        const char *r = q;
        while (r < s->end && !STR_STOP[(unsigned char)*r])
            r++;
        if (r >= s->end || (unsigned char)*r < 0x20) return LEAVE;
        if (dec && r > q && buf_append(dec, q, (size_t)(r - q))) return LEAVE;
        if (*r == '"') {
            if (a) *a = s->p;
            if (b) *b = r;
            s->p = r + 1;
            return 0;
        }
        if (r + 1 >= s->end) return LEAVE;
        char c;
        switch (r[1]) {
        case '"':
            c = '"';
            break;
        case '\\':
            c = '\\';
            break;
        case '/':
            c = '/';
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        default:
            return LEAVE; /* \u (maybe a NUL or a surrogate pair) or invalid */
        }
        if (!dec && !a) {
            q = r + 2;
            continue;
        }
        if (!dec) return LEAVE; /* a key or a finish_reason with an escape */
        if (buf_append(dec, &c, 1)) return LEAVE;
        q = r + 2;
    }
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A number in JSON's grammar; *v its value (strtod, as cJSON). */
static int num(scan_t *s, double *v)
{
    const char *q = s->p;
    if (q < s->end && *q == '-') q++;
    if (q >= s->end || !is_digit(*q)) return LEAVE;
    if (*q == '0')
        q++;
    else
        while (q < s->end && is_digit(*q))
            q++;
    if (q < s->end && *q == '.') {
        q++;
        if (q >= s->end || !is_digit(*q)) return LEAVE;
        while (q < s->end && is_digit(*q))
            q++;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < s->end && (*q == '+' || *q == '-')) q++;
        if (q >= s->end || !is_digit(*q)) return LEAVE;
        while (q < s->end && is_digit(*q))
            q++;
    }
    /* cJSON reads on while it sees number characters: "1.2.3" is not ours */
    if (q < s->end && (*q == '.' || *q == '+' || *q == '-' || *q == 'e' || *q == 'E')) return LEAVE;
    size_t n = (size_t)(q - s->p);
    if (n > NUM_MAX) return LEAVE;
    if (v) {
        char t[NUM_MAX + 1];
        memcpy(t, s->p, n);
        t[n] = '\0';
        *v = strtod(t, NULL);
    }
    s->p = q;
    return 0;
}

static int lit(scan_t *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n)) return LEAVE;
    s->p += n;
    return 0;
}

static int value(scan_t *s, want_t w, upchunk_t *out, int is_chat, buf_t *scratch);

/* The key [a, b) is the literal k (its length first: most keys differ there). */
#define KEY_IS(a, b, k) ((size_t)((b) - (a)) == sizeof(k) - 1 && !memcmp((a), (k), sizeof(k) - 1))

/* The members of an object at s->p ('{') read for w. The first member of a
 * name counts (cJSON_GetObjectItemCaseSensitive's answer). */
static int object(scan_t *s, want_t w, upchunk_t *out, int is_chat, buf_t *scratch)
{
    if (++s->depth > SCAN_DEPTH) return LEAVE;
    unsigned seen = 0;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (;;) {
        ws(s);
        if (s->p >= s->end || *s->p != '"') return LEAVE;
        const char *ka, *kb;
        if (str(s, &ka, &kb, NULL)) return LEAVE;
        ws(s);
        if (s->p >= s->end || *s->p != ':') return LEAVE;
        s->p++;
        ws(s);
        if (s->p >= s->end) return LEAVE;
        /* which member, and is it the first of its name */
        int id = -1;
        want_t sub = W_SKIP;
        switch (w) {
        case W_SKIP:
            break;
        case W_USAGE:
            if (KEY_IS(ka, kb, "prompt_tokens"))
                id = 0;
            else if (KEY_IS(ka, kb, "completion_tokens"))
                id = 1;
            else if (KEY_IS(ka, kb, "prompt_tokens_details"))
                id = 2, sub = W_DETAILS;
            break;
        case W_DETAILS:
            if (KEY_IS(ka, kb, "cached_tokens")) id = 0;
            break;
        case W_C0:
            if (is_chat && KEY_IS(ka, kb, "delta"))
                id = 0, sub = W_DELTA;
            else if (!is_chat && KEY_IS(ka, kb, "text"))
                id = 1;
            else if (KEY_IS(ka, kb, "finish_reason"))
                id = 2;
            break;
        case W_DELTA:
            if (KEY_IS(ka, kb, "content")) id = 0;
            break;
        default:                                       /* the top level */
            if (KEY_IS(ka, kb, "error")) return LEAVE; /* rare: cJSON reads it */
            if (KEY_IS(ka, kb, "usage"))
                id = 0, sub = W_USAGE;
            else if (KEY_IS(ka, kb, "choices"))
                id = 1, sub = W_CHOICES;
            break;
        }
        if (id >= 0 && (seen & (1u << id))) id = -1, sub = W_SKIP; /* not the first */
        if (id >= 0) seen |= 1u << id;
        char c = *s->p;
        double v;
        if (id < 0) {
            if (value(s, W_SKIP, out, is_chat, scratch)) return LEAVE;
        } else if (sub != W_SKIP) {
            if (c == '{' && sub != W_CHOICES) {
                if (sub == W_USAGE) out->has_usage = 1;
                if (object(s, sub, out, is_chat, scratch)) return LEAVE;
            } else if (c == '[' && sub == W_CHOICES) {
                if (value(s, W_CHOICES, out, is_chat, scratch)) return LEAVE;
            } else if (value(s, W_SKIP, out, is_chat, scratch)) {
                return LEAVE;
            }
        } else if (w == W_USAGE || w == W_DETAILS) { /* a count */
            if (c == '-' || is_digit(c)) {
                if (num(s, &v)) return LEAVE;
                if (w == W_DETAILS)
                    out->has_cached = 1, out->cached = v;
                else if (id == 0)
                    out->has_pt = 1, out->pt = v;
                else
                    out->has_ct = 1, out->ct = v;
            } else if (value(s, W_SKIP, out, is_chat, scratch)) {
                return LEAVE;
            }
        } else if (c == '"' && (w == W_DELTA || id == 1)) { /* the text */
            buf_clear(scratch);
            if (str(s, NULL, NULL, scratch) || buf_reserve(scratch, 1)) return LEAVE;
            out->has_text = 1;
            out->text = scratch->p ? scratch->p : "";
            out->text_len = scratch->n;
        } else if (c == '"' && w == W_C0 && id == 2) { /* finish_reason (escaped: LEAVE) */
            const char *a, *b;
            if (str(s, &a, &b, NULL)) return LEAVE;
            keep_finish(out, a, (size_t)(b - a));
        } else if (value(s, W_SKIP, out, is_chat, scratch)) {
            return LEAVE;
        }
        int k = list_next(s, '}');
        if (k != MORE) return k;
    }
}

/* An array at s->p ('['); for W_CHOICES its first element is choices[0]. */
static int array(scan_t *s, want_t w, upchunk_t *out, int is_chat, buf_t *scratch)
{
    if (++s->depth > SCAN_DEPTH) return LEAVE;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        s->depth--;
        return 0;
    }
    for (int i = 0;; i++) {
        ws(s);
        if (s->p >= s->end) return LEAVE;
        if (i == 0 && w == W_CHOICES && *s->p == '{') {
            out->has_c0 = 1;
            if (object(s, W_C0, out, is_chat, scratch)) return LEAVE;
        } else if (value(s, W_SKIP, out, is_chat, scratch)) {
            return LEAVE;
        }
        int k = list_next(s, ']');
        if (k != MORE) return k;
    }
}

static int value(scan_t *s, want_t w, upchunk_t *out, int is_chat, buf_t *scratch)
{
    if (s->p >= s->end) return LEAVE;
    switch (*s->p) {
    case '{':
        return object(s, W_SKIP, out, is_chat, scratch);
    case '[':
        return array(s, w, out, is_chat, scratch);
    case '"':
        return str(s, NULL, NULL, NULL);
    case 't':
        return lit(s, "true", 4);
    case 'f':
        return lit(s, "false", 5);
    case 'n':
        return lit(s, "null", 4);
    default:
        return num(s, NULL);
    }
}

#define W_TOP ((want_t)100)

int upchunk_scan(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch)
{
    memset(out, 0, sizeof *out);
    buf_clear(scratch);
    scan_t s = {p, p + n, 0};
    ws(&s);
    if (s.p >= s.end || *s.p != '{' || object(&s, W_TOP, out, is_chat, scratch)) {
        memset(out, 0, sizeof *out);
        return LEAVE;
    }
    ws(&s);
    if (s.p != s.end) { /* trailing bytes: cJSON's call */
        memset(out, 0, sizeof *out);
        return LEAVE;
    }
    return 0;
}

int upchunk_read(const char *p, size_t n, int is_chat, upchunk_t *out, buf_t *scratch)
{
    if (upchunk_scan(p, n, is_chat, out, scratch) == 0) return 0;
    return upchunk_read_cjson(p, n, is_chat, out, scratch);
}
