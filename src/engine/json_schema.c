/* json_schema.c — JSON Schema (OpenAI's strict subset) to a byte grammar
 * (see json_schema.h).
 *
 * One rule per schema node (memoised by node, so a $ref'd definition is
 * compiled once and may refer to itself), shared rules for the terminals
 * (strings, numbers, any value). Objects with properties become a chain of
 * rules R[i][prev] — "the rest of the object from property i, given whether
 * a property was already written" — so optional properties cost two rules
 * each, not 2^n alternatives. Arrays with minItems/maxItems unroll up to 64
 * items. */
#include "engine/json_schema.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64     /* schema nesting */
#define MAX_ITEMS 64     /* minItems / maxItems bound */
#define MAX_RULES 200000 /* a schema bigger than this is refused */
#define INT_DIGITS 16    /* digits of an integer part */
#define FRAC_DIGITS 16   /* digits after the point */
#define EXP_DIGITS 3

typedef struct {
    const cJSON *node;
    int rule;
} memo_t;

typedef struct {
    gram_builder_t *b;
    const cJSON *root;
    bar_msg_t *msg;
    int err;
    char path[512];
    size_t plen;
    memo_t *memo; /* open addressing by node address; cap_memo a power of two */
    int n_memo, cap_memo;
    int r_ws, r_str, r_int, r_num, r_bool, r_null, r_any, r_digits[INT_DIGITS + 1];
} cc_t;

static int fail(cc_t *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(cc_t *c, int err, const char *fmt, ...)
{
    if (c->err) return -1;
    c->err = err;
    if (c->msg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg->text, sizeof c->msg->text, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int nomem(cc_t *c)
{
    return fail(c, BAR_ERR_NOMEM, "out of memory compiling the schema");
}

/* ---- helpers over the builder ---- */

static int rule_new(cc_t *c)
{
    if (c->err) return -1;
    if (gram_n_rules_building(c->b) >= MAX_RULES)
        return fail(c, BAR_ERR_RANGE, "the schema is too large (over %d grammar rules)", MAX_RULES);
    int r = gram_rule_new(c->b);
    return r < 0 ? nomem(c) : r;
}

static void add(cc_t *c, int rule, gram_seq_t *s)
{
    if (!c->err && gram_rule_add(c->b, rule, s)) nomem(c);
    gram_seq_free(s);
}

/* rule ::= lit */
static void add_lit(cc_t *c, int rule, const char *lit)
{
    gram_seq_t s = {0};
    gram_seq_lit(c->b, &s, lit, strlen(lit));
    add(c, rule, &s);
}

static void add_refs(cc_t *c, int rule, int a, int b)
{
    gram_seq_t s = {0};
    if (a >= 0) gram_seq_ref(&s, a);
    if (b >= 0) gram_seq_ref(&s, b);
    add(c, rule, &s);
}

/* ---- terminals ---- */

static int ws(cc_t *c)
{
    if (c->r_ws >= 0) return c->r_ws;
    int r = c->r_ws = rule_new(c);
    if (r < 0) return -1;
    add_lit(c, r, "");
    add_lit(c, r, " ");
    return r;
}

static int string_rule(cc_t *c)
{
    if (c->r_str >= 0) return c->r_str;
    int str = c->r_str = rule_new(c), chars = rule_new(c), ch = rule_new(c), esc = rule_new(c),
        hex = rule_new(c);
    if (c->err) return -1;
    gram_seq_t s = {0};
    /* str ::= '"' chars '"' */
    gram_seq_lit(c->b, &s, "\"", 1);
    gram_seq_ref(&s, chars);
    gram_seq_lit(c->b, &s, "\"", 1);
    add(c, str, &s);
    /* chars ::= ch chars | "" */
    add_refs(c, chars, ch, chars);
    add_lit(c, chars, "");
    /* ch ::= unescaped ASCII | '\' esc | UTF-8 multi-byte (well-formed) */
    uint8_t set[32] = {0};
    for (int b = 0x20; b < 0x80; b++)
        if (b != '"' && b != '\\') set[b >> 3] |= (uint8_t)(1u << (b & 7));
    gram_seq_set(c->b, &s, set);
    add(c, ch, &s);
    gram_seq_lit(c->b, &s, "\\", 1);
    gram_seq_ref(&s, esc);
    add(c, ch, &s);
    static const struct {
        int n;
        unsigned char lo[4], hi[4];
    } utf8[] = {
        {2, {0xC2, 0x80}, {0xDF, 0xBF}},
        {3, {0xE0, 0xA0, 0x80}, {0xE0, 0xBF, 0xBF}},
        {3, {0xE1, 0x80, 0x80}, {0xEC, 0xBF, 0xBF}},
        {3, {0xED, 0x80, 0x80}, {0xED, 0x9F, 0xBF}},
        {3, {0xEE, 0x80, 0x80}, {0xEF, 0xBF, 0xBF}},
        {4, {0xF0, 0x90, 0x80, 0x80}, {0xF0, 0xBF, 0xBF, 0xBF}},
        {4, {0xF1, 0x80, 0x80, 0x80}, {0xF3, 0xBF, 0xBF, 0xBF}},
        {4, {0xF4, 0x80, 0x80, 0x80}, {0xF4, 0x8F, 0xBF, 0xBF}},
    };
    for (size_t k = 0; k < sizeof utf8 / sizeof utf8[0]; k++) {
        for (int i = 0; i < utf8[k].n; i++)
            gram_seq_range(c->b, &s, utf8[k].lo[i], utf8[k].hi[i]);
        add(c, ch, &s);
    }
    /* esc ::= ["\/bfnrt] | 'u' hex hex hex hex */
    memset(set, 0, sizeof set);
    for (const char *p = "\"\\/bfnrt"; *p; p++)
        set[(unsigned char)*p >> 3] |= (uint8_t)(1u << (*p & 7));
    gram_seq_set(c->b, &s, set);
    add(c, esc, &s);
    gram_seq_lit(c->b, &s, "u", 1);
    for (int i = 0; i < 4; i++)
        gram_seq_ref(&s, hex);
    add(c, esc, &s);
    memset(set, 0, sizeof set);
    for (const char *p = "0123456789abcdefABCDEF"; *p; p++)
        set[(unsigned char)*p >> 3] |= (uint8_t)(1u << (*p & 7));
    gram_seq_set(c->b, &s, set);
    add(c, hex, &s);
    return c->err ? -1 : str;
}

/* d[k] ::= [0-9] d[k-1] | "" : up to k more digits */
static int digits(cc_t *c, int k)
{
    if (k <= 0) return -1;
    if (c->r_digits[k] >= 0) return c->r_digits[k];
    int prev = digits(c, k - 1);
    int r = c->r_digits[k] = rule_new(c);
    if (r < 0) return -1;
    gram_seq_t s = {0};
    gram_seq_range(c->b, &s, '0', '9');
    if (prev >= 0) gram_seq_ref(&s, prev);
    add(c, r, &s);
    add_lit(c, r, "");
    return r;
}

static int int_rule(cc_t *c)
{
    if (c->r_int >= 0) return c->r_int;
    int r = c->r_int = rule_new(c), abs = rule_new(c), more = digits(c, INT_DIGITS - 1);
    if (c->err) return -1;
    gram_seq_t s = {0};
    gram_seq_lit(c->b, &s, "-", 1);
    gram_seq_ref(&s, abs);
    add(c, r, &s);
    add_refs(c, r, abs, -1);
    add_lit(c, abs, "0");
    gram_seq_range(c->b, &s, '1', '9');
    gram_seq_ref(&s, more);
    add(c, abs, &s);
    return c->err ? -1 : r;
}

static int num_rule(cc_t *c)
{
    if (c->r_num >= 0) return c->r_num;
    int r = c->r_num = rule_new(c), in = int_rule(c), frac = rule_new(c), exp = rule_new(c),
        sign = rule_new(c);
    if (c->err) return -1;
    gram_seq_t s = {0};
    gram_seq_ref(&s, in);
    gram_seq_ref(&s, frac);
    gram_seq_ref(&s, exp);
    add(c, r, &s);
    add_lit(c, frac, "");
    gram_seq_lit(c->b, &s, ".", 1);
    gram_seq_range(c->b, &s, '0', '9');
    gram_seq_ref(&s, digits(c, FRAC_DIGITS - 1));
    add(c, frac, &s);
    add_lit(c, exp, "");
    uint8_t set[32] = {0};
    set['e' >> 3] |= (uint8_t)(1u << ('e' & 7));
    set['E' >> 3] |= (uint8_t)(1u << ('E' & 7));
    gram_seq_set(c->b, &s, set);
    gram_seq_ref(&s, sign);
    gram_seq_range(c->b, &s, '0', '9');
    gram_seq_ref(&s, digits(c, EXP_DIGITS - 1));
    add(c, exp, &s);
    add_lit(c, sign, "");
    add_lit(c, sign, "+");
    add_lit(c, sign, "-");
    return c->err ? -1 : r;
}

static int lit_rule(cc_t *c, int *slot, const char *a, const char *b)
{
    if (*slot >= 0) return *slot;
    int r = *slot = rule_new(c);
    if (r < 0) return -1;
    add_lit(c, r, a);
    if (b) add_lit(c, r, b);
    return r;
}

/* '{' ws '}' | '{' ws item rest ws '}' with rest ::= ',' ws item rest | ""
 * (open/close: the brackets; item: a rule) */
static int list_rule(cc_t *c, const char *open, const char *close, int item)
{
    int r = rule_new(c), rest = rule_new(c), w = ws(c);
    if (c->err) return -1;
    gram_seq_t s = {0};
    gram_seq_lit(c->b, &s, open, 1);
    gram_seq_ref(&s, w);
    gram_seq_lit(c->b, &s, close, 1);
    add(c, r, &s);
    gram_seq_lit(c->b, &s, open, 1);
    gram_seq_ref(&s, w);
    gram_seq_ref(&s, item);
    gram_seq_ref(&s, rest);
    gram_seq_ref(&s, w);
    gram_seq_lit(c->b, &s, close, 1);
    add(c, r, &s);
    gram_seq_lit(c->b, &s, ",", 1);
    gram_seq_ref(&s, w);
    gram_seq_ref(&s, item);
    gram_seq_ref(&s, rest);
    add(c, rest, &s);
    add_lit(c, rest, "");
    return c->err ? -1 : r;
}

static int any_rule(cc_t *c);

static int any_object(cc_t *c)
{
    int any = any_rule(c), kv = rule_new(c), w = ws(c), str = string_rule(c);
    if (c->err) return -1;
    gram_seq_t s = {0};
    gram_seq_ref(&s, str);
    gram_seq_ref(&s, w);
    gram_seq_lit(c->b, &s, ":", 1);
    gram_seq_ref(&s, w);
    gram_seq_ref(&s, any);
    add(c, kv, &s);
    return list_rule(c, "{", "}", kv);
}

/* any JSON value */
static int any_rule(cc_t *c)
{
    if (c->r_any >= 0) return c->r_any;
    int r = c->r_any = rule_new(c);
    if (r < 0) return -1;
    int obj = any_object(c), arr = list_rule(c, "[", "]", r), str = string_rule(c),
        num = num_rule(c), bl = lit_rule(c, &c->r_bool, "true", "false"),
        nl = lit_rule(c, &c->r_null, "null", NULL);
    if (c->err) return -1;
    add_refs(c, r, obj, -1);
    add_refs(c, r, arr, -1);
    add_refs(c, r, str, -1);
    add_refs(c, r, num, -1);
    add_refs(c, r, bl, -1);
    add_refs(c, r, nl, -1);
    return c->err ? -1 : r;
}

/* ---- schema nodes ---- */

static int node_rule(cc_t *c, const cJSON *s, int depth);

static size_t path_push(cc_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(cc_t *c, const char *fmt, ...)
{
    size_t old = c->plen;
    if (c->plen < sizeof c->path - 1) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(c->path + c->plen, sizeof c->path - c->plen, fmt, ap);
        va_end(ap);
        if (n > 0) c->plen += (size_t)n;
        if (c->plen >= sizeof c->path) c->plen = sizeof c->path - 1;
    }
    return old;
}

static void path_pop(cc_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

/* The JSON text of v, compact, as a literal alternative of rule. */
static void add_value_lit(cc_t *c, int rule, const cJSON *v)
{
    char *t = cJSON_PrintUnformatted(v);
    if (!t) {
        nomem(c);
        return;
    }
    add_lit(c, rule, t);
    free(t);
}

static const char *const KNOWN[] = {
    "type",     "properties", "required",    "additionalProperties",
    "items",    "enum",       "const",       "anyOf",
    "$ref",     "$defs",      "definitions", "minItems",
    "maxItems", "title",      "description", "$schema",
    "$id",      "default",    "examples",    "strict",
    "$comment",
};

static int check_keywords(cc_t *c, const cJSON *s)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, s)
    {
        int ok = 0;
        for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0] && !ok; i++)
            ok = m->string && !strcmp(m->string, KNOWN[i]);
        if (!ok)
            return fail(c, BAR_ERR_INVALID,
                        "unsupported JSON Schema keyword '%.64s' at %s (supported: type, "
                        "properties, required, additionalProperties, items, minItems, maxItems, "
                        "enum, const, anyOf, $ref, $defs)",
                        m->string ? m->string : "?", c->path);
    }
    return 0;
}

/* "#", "#/$defs/NAME", "#/definitions/NAME" (NAME may use ~0 ~1 escapes) */
static const cJSON *resolve(cc_t *c, const char *ref)
{
    if (!strcmp(ref, "#")) return c->root;
    const char *name = NULL;
    const cJSON *defs = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) {
        name = ref + 8;
        defs = cJSON_GetObjectItemCaseSensitive(c->root, "$defs");
    } else if (!strncmp(ref, "#/definitions/", 14)) {
        name = ref + 14;
        defs = cJSON_GetObjectItemCaseSensitive(c->root, "definitions");
    }
    if (!name) {
        fail(c, BAR_ERR_INVALID,
             "unsupported $ref '%.128s' at %s: only \"#\", \"#/$defs/NAME\" and "
             "\"#/definitions/NAME\" are supported",
             ref, c->path);
        return NULL;
    }
    char key[256];
    size_t k = 0;
    for (const char *p = name; *p && k < sizeof key - 1; p++) {
        if (p[0] == '~' && p[1] == '0') {
            key[k++] = '~';
            p++;
        } else if (p[0] == '~' && p[1] == '1') {
            key[k++] = '/';
            p++;
        } else {
            key[k++] = *p;
        }
    }
    key[k] = '\0';
    const cJSON *t = cJSON_IsObject(defs) ? cJSON_GetObjectItemCaseSensitive(defs, key) : NULL;
    if (!t) fail(c, BAR_ERR_INVALID, "$ref '%.128s' at %s names no definition", ref, c->path);
    return t;
}

static int object_rule(cc_t *c, const cJSON *s, int depth)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl))
        return fail(c, BAR_ERR_INVALID,
                    "'additionalProperties' at %s must be a boolean or a schema", c->path);
    if (req && !cJSON_IsArray(req))
        return fail(c, BAR_ERR_INVALID, "'required' at %s must be an array of strings", c->path);
    if (props && !cJSON_IsObject(props))
        return fail(c, BAR_ERR_INVALID, "'properties' at %s must be an object", c->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, req)
    {
        if (!cJSON_IsString(it))
            return fail(c, BAR_ERR_INVALID, "'required' at %s must be an array of strings",
                        c->path);
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, it->valuestring))
            return fail(c, BAR_ERR_INVALID,
                        "required property '%.64s' at %s is not in 'properties'", it->valuestring,
                        c->path);
    }
    if (!props || cJSON_GetArraySize(props) == 0) {
        /* no properties: any object unless additionalProperties is false */
        if (cJSON_IsFalse(addl)) {
            int r = rule_new(c);
            if (r >= 0) {
                add_lit(c, r, "{}");
                add_lit(c, r, "{ }");
            }
            return r;
        }
        if (cJSON_IsObject(addl))
            return fail(c, BAR_ERR_INVALID,
                        "'additionalProperties' as a schema at %s is not supported without "
                        "'properties'",
                        c->path);
        return any_object(c);
    }
    int n = cJSON_GetArraySize(props);
    int *val = malloc((size_t)n * sizeof *val);
    int *rr = malloc(((size_t)n + 1) * 2 * sizeof *rr); /* rr[2i + prev] */
    if (!val || !rr) {
        free(val);
        free(rr);
        return nomem(c);
    }
    int i = 0;
    cJSON_ArrayForEach(it, props)
    {
        size_t old = path_push(c, "/properties/%s", it->string ? it->string : "?");
        val[i++] = node_rule(c, it, depth + 1);
        path_pop(c, old);
        if (c->err) break;
    }
    for (int k = 0; k < 2 * (n + 1) && !c->err; k++)
        rr[k] = rule_new(c);
    int w = ws(c);
    if (!c->err) {
        add_lit(c, rr[2 * n], "");
        add_lit(c, rr[2 * n + 1], "");
    }
    i = n - 1;
    /* walk the properties back to front (cJSON lists are forward only) */
    const cJSON **pv = malloc((size_t)n * sizeof *pv);
    if (!pv && !c->err) nomem(c);
    int j = 0;
    cJSON_ArrayForEach(it, props) if (pv) pv[j++] = it;
    for (i = n - 1; i >= 0 && !c->err; i--) {
        const cJSON *p = pv[i];
        int required = 0;
        const cJSON *q;
        cJSON_ArrayForEach(q, req) if (cJSON_IsString(q) && !strcmp(q->valuestring, p->string))
            required = 1;
        cJSON *key = cJSON_CreateString(p->string);
        char *kt = key ? cJSON_PrintUnformatted(key) : NULL;
        cJSON_Delete(key);
        if (!kt) {
            nomem(c);
            break;
        }
        for (int prev = 0; prev < 2; prev++) {
            gram_seq_t s = {0};
            if (prev) {
                gram_seq_lit(c->b, &s, ",", 1);
                gram_seq_ref(&s, w);
            }
            gram_seq_lit(c->b, &s, kt, strlen(kt));
            gram_seq_ref(&s, w);
            gram_seq_lit(c->b, &s, ":", 1);
            gram_seq_ref(&s, w);
            gram_seq_ref(&s, val[i]);
            gram_seq_ref(&s, rr[2 * (i + 1) + 1]);
            add(c, rr[2 * i + prev], &s);
            if (!required) add_refs(c, rr[2 * i + prev], rr[2 * (i + 1) + prev], -1);
        }
        free(kt);
    }
    int r = -1;
    if (!c->err) {
        r = rule_new(c);
        gram_seq_t s = {0};
        gram_seq_lit(c->b, &s, "{", 1);
        gram_seq_ref(&s, w);
        gram_seq_ref(&s, rr[0]);
        gram_seq_ref(&s, w);
        gram_seq_lit(c->b, &s, "}", 1);
        if (r >= 0) add(c, r, &s);
        gram_seq_free(&s);
    }
    free(pv);
    free(val);
    free(rr);
    return c->err ? -1 : r;
}

static int get_count(cc_t *c, const cJSON *s, const char *name, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, name);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != (double)(int)v->valuedouble)
        return fail(c, BAR_ERR_INVALID, "'%s' at %s must be a non-negative integer", name, c->path);
    if (v->valuedouble > MAX_ITEMS)
        return fail(c, BAR_ERR_INVALID, "'%s' at %s: at most %d is supported", name, c->path,
                    MAX_ITEMS);
    *out = (int)v->valuedouble;
    return 0;
}

static int array_rule(cc_t *c, const cJSON *s, int depth)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    int mn = 0, mx = -1;
    if (get_count(c, s, "minItems", &mn) || get_count(c, s, "maxItems", &mx)) return -1;
    if (mx >= 0 && mx < mn)
        return fail(c, BAR_ERR_INVALID, "'maxItems' < 'minItems' at %s", c->path);
    size_t old = path_push(c, "/items");
    int item = items ? node_rule(c, items, depth + 1) : any_rule(c);
    path_pop(c, old);
    if (c->err) return -1;
    if (mn == 0 && mx < 0) return list_rule(c, "[", "]", item);
    if (mx == 0) {
        int r0 = rule_new(c);
        if (r0 >= 0) {
            add_lit(c, r0, "[]");
            add_lit(c, r0, "[ ]");
        }
        return r0;
    }
    /* rest[k]: k items written */
    int w = ws(c);
    int top = mx >= 0 ? mx : mn;
    int rest[MAX_ITEMS + 2];
    for (int k = 1; k <= top + 1 && !c->err; k++)
        rest[k] = rule_new(c);
    int tail = mx < 0 ? rule_new(c) : -1;
    int r = rule_new(c);
    if (c->err) return -1;
    for (int k = 1; k <= top; k++) {
        gram_seq_t s2 = {0};
        if (k >= mn) add_lit(c, rest[k], "");
        if (mx >= 0 && k >= mx) continue;
        gram_seq_lit(c->b, &s2, ",", 1);
        gram_seq_ref(&s2, w);
        gram_seq_ref(&s2, item);
        gram_seq_ref(&s2, k + 1 <= top ? rest[k + 1] : tail);
        add(c, rest[k], &s2);
    }
    if (top + 1 <= MAX_ITEMS + 1) add_lit(c, rest[top + 1], ""); /* unused unless unbounded */
    if (tail >= 0) {
        gram_seq_t s2 = {0};
        gram_seq_lit(c->b, &s2, ",", 1);
        gram_seq_ref(&s2, w);
        gram_seq_ref(&s2, item);
        gram_seq_ref(&s2, tail);
        add(c, tail, &s2);
        add_lit(c, tail, "");
    }
    gram_seq_t s2 = {0};
    gram_seq_lit(c->b, &s2, "[", 1);
    gram_seq_ref(&s2, w);
    gram_seq_ref(&s2, item);
    gram_seq_ref(&s2, top >= 1 ? rest[1] : tail);
    gram_seq_ref(&s2, w);
    gram_seq_lit(c->b, &s2, "]", 1);
    add(c, r, &s2);
    if (mn == 0) {
        gram_seq_lit(c->b, &s2, "[", 1);
        gram_seq_ref(&s2, w);
        gram_seq_lit(c->b, &s2, "]", 1);
        add(c, r, &s2);
    }
    return c->err ? -1 : r;
}

static int type_rule(cc_t *c, const cJSON *s, const char *t, int depth)
{
    if (!strcmp(t, "object")) return object_rule(c, s, depth);
    if (!strcmp(t, "array")) return array_rule(c, s, depth);
    if (!strcmp(t, "string")) return string_rule(c);
    if (!strcmp(t, "number")) return num_rule(c);
    if (!strcmp(t, "integer")) return int_rule(c);
    if (!strcmp(t, "boolean")) return lit_rule(c, &c->r_bool, "true", "false");
    if (!strcmp(t, "null")) return lit_rule(c, &c->r_null, "null", NULL);
    return fail(c, BAR_ERR_INVALID,
                "unsupported type '%.32s' at %s (object, array, string, number, integer, "
                "boolean, null)",
                t, c->path);
}

static int node_body(cc_t *c, int r, const cJSON *s, int depth)
{
    if (cJSON_IsTrue(s)) {
        add_refs(c, r, any_rule(c), -1);
        return 0;
    }
    if (!cJSON_IsObject(s))
        return fail(c, BAR_ERR_INVALID, "the schema at %s must be an object", c->path);
    if (check_keywords(c, s)) return -1;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        if (!cJSON_IsString(v))
            return fail(c, BAR_ERR_INVALID, "'$ref' at %s must be a string", c->path);
        const cJSON *t = resolve(c, v->valuestring);
        if (!t) return -1;
        size_t old = path_push(c, "->%s", v->valuestring);
        int tr = node_rule(c, t, depth + 1);
        path_pop(c, old);
        add_refs(c, r, tr, -1);
        return c->err ? -1 : 0;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "anyOf"))) {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
            return fail(c, BAR_ERR_INVALID, "'anyOf' at %s must be a non-empty array", c->path);
        int i = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, v)
        {
            size_t old = path_push(c, "/anyOf/%d", i++);
            int ar = node_rule(c, a, depth + 1);
            path_pop(c, old);
            add_refs(c, r, ar, -1);
            if (c->err) return -1;
        }
        return 0;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "const"))) {
        add_value_lit(c, r, v);
        return c->err ? -1 : 0;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
            return fail(c, BAR_ERR_INVALID, "'enum' at %s must be a non-empty array", c->path);
        const cJSON *a;
        cJSON_ArrayForEach(a, v) add_value_lit(c, r, a);
        return c->err ? -1 : 0;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!type) {
        const char *t = cJSON_GetObjectItemCaseSensitive(s, "properties") ? "object"
                        : cJSON_GetObjectItemCaseSensitive(s, "items")    ? "array"
                                                                          : NULL;
        add_refs(c, r, t ? type_rule(c, s, t, depth) : any_rule(c), -1);
        return c->err ? -1 : 0;
    }
    if (cJSON_IsString(type)) {
        add_refs(c, r, type_rule(c, s, type->valuestring, depth), -1);
        return c->err ? -1 : 0;
    }
    if (!cJSON_IsArray(type) || cJSON_GetArraySize(type) == 0)
        return fail(c, BAR_ERR_INVALID, "'type' at %s must be a string or a non-empty array",
                    c->path);
    const cJSON *t;
    cJSON_ArrayForEach(t, type)
    {
        if (!cJSON_IsString(t))
            return fail(c, BAR_ERR_INVALID, "'type' at %s must list strings", c->path);
        add_refs(c, r, type_rule(c, s, t->valuestring, depth), -1);
        if (c->err) return -1;
    }
    return 0;
}

/* The memo: schema node -> its rule, hashed by the node's address (a
 * linear scan made a schema with thousands of properties quadratic). */
static size_t memo_slot(const cJSON *node, int cap)
{
    uint64_t h = (uint64_t)(uintptr_t)node * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (size_t)(cap - 1);
}

static int memo_find(const cc_t *c, const cJSON *node)
{
    if (!c->cap_memo) return -1;
    for (size_t i = memo_slot(node, c->cap_memo);; i = (i + 1) & (size_t)(c->cap_memo - 1)) {
        if (!c->memo[i].node) return -1;
        if (c->memo[i].node == node) return c->memo[i].rule;
    }
}

static int memo_put(cc_t *c, const cJSON *node, int rule)
{
    if (2 * (c->n_memo + 1) > c->cap_memo) { /* at most half full */
        int nc = c->cap_memo ? c->cap_memo * 2 : 64;
        memo_t *m = calloc((size_t)nc, sizeof *m);
        if (!m) return nomem(c);
        for (int k = 0; k < c->cap_memo; k++) {
            if (!c->memo[k].node) continue;
            size_t i = memo_slot(c->memo[k].node, nc);
            while (m[i].node)
                i = (i + 1) & (size_t)(nc - 1);
            m[i] = c->memo[k];
        }
        free(c->memo);
        c->memo = m;
        c->cap_memo = nc;
    }
    size_t i = memo_slot(node, c->cap_memo);
    while (c->memo[i].node)
        i = (i + 1) & (size_t)(c->cap_memo - 1);
    c->memo[i] = (memo_t){node, rule};
    c->n_memo++;
    return 0;
}

static int node_rule(cc_t *c, const cJSON *s, int depth)
{
    if (c->err) return -1;
    if (depth > MAX_DEPTH)
        return fail(c, BAR_ERR_INVALID, "the schema nests deeper than %d levels at %s", MAX_DEPTH,
                    c->path);
    int r = memo_find(c, s);
    if (r >= 0) return r;
    r = rule_new(c);
    if (r < 0) return -1;
    if (memo_put(c, s, r)) return -1;
    if (node_body(c, r, s, depth)) return -1;
    return r;
}

int json_schema_compile(const char *json, size_t n, gram_t **out, bar_msg_t *msg)
{
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!root) return bar_fail(msg, BAR_ERR_INVALID, "the schema is not valid JSON");
    cc_t c = {0};
    c.root = root;
    c.msg = msg;
    c.r_ws = c.r_str = c.r_int = c.r_num = c.r_bool = c.r_null = c.r_any = -1;
    for (int i = 0; i <= INT_DIGITS; i++)
        c.r_digits[i] = -1;
    snprintf(c.path, sizeof c.path, "#");
    c.plen = 1;
    int rc = gram_builder_create(&c.b);
    if (rc) {
        cJSON_Delete(root);
        return bar_fail(msg, rc, "out of memory");
    }
    /* rule 0 is the root: it refers to the root node's rule */
    int top = rule_new(&c);
    int r = node_rule(&c, root, 0);
    if (!c.err) add_refs(&c, top, r, -1);
    free(c.memo);
    cJSON_Delete(root);
    if (c.err) {
        gram_builder_destroy(c.b);
        return c.err;
    }
    return gram_build(c.b, out, msg);
}
