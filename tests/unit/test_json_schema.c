/* test_json_schema.c — the schema compiler: which keywords it accepts and
 * which it refuses (by name and path), and that the grammar it builds
 * accepts valid JSON texts of the schema and rejects invalid ones, byte by
 * byte (a rejected byte must be refused at the first byte that cannot lead
 * to a valid text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_schema.h"

static gram_t *compile(const char *schema)
{
    gram_t *g = NULL;
    bar_msg_t m = {{0}};
    int rc = json_schema_compile(schema, strlen(schema), &g, &m);
    if (rc) fprintf(stderr, "compile failed: %s\n", m.text);
    assert_int_equal(rc, 0);
    return g;
}

/* 1: text is a complete sentence; 0: a valid prefix only; -1: rejected */
static int match(gram_t *g, const char *text)
{
    gram_state_t *s;
    assert_int_equal(gram_state_create(&s, g), 0);
    int rc = gram_state_feed(s, text, strlen(text));
    int r = rc ? -1 : gram_state_accepting(s);
    gram_state_destroy(s);
    return r;
}

static void refuse(const char *schema, const char *needle)
{
    gram_t *g = NULL;
    bar_msg_t m = {{0}};
    int rc = json_schema_compile(schema, strlen(schema), &g, &m);
    assert_int_equal(rc, BAR_ERR_INVALID);
    assert_null(g);
    if (!strstr(m.text, needle)) fail_msg("'%s' not in '%s'", needle, m.text);
}

static void test_scalars(void **state)
{
    (void)state;
    gram_t *g = compile("{\"type\":\"integer\"}");
    assert_int_equal(match(g, "0"), 1);
    assert_int_equal(match(g, "-12"), 1);
    assert_int_equal(match(g, "-"), 0);
    assert_int_equal(match(g, "01"), -1);
    assert_int_equal(match(g, "1.5"), -1);
    assert_int_equal(match(g, "12345678901234567"), -1); /* 17 digits: bounded */
    gram_release(g);
    g = compile("{\"type\":\"number\"}");
    assert_int_equal(match(g, "1.5e+10"), 1);
    assert_int_equal(match(g, "1."), 0);
    assert_int_equal(match(g, "1.e"), -1);
    assert_int_equal(match(g, "-0.25"), 1);
    gram_release(g);
    g = compile("{\"type\":\"string\"}");
    assert_int_equal(match(g, "\"h\\u00e9llo \\\" \xc3\xa9\""), 1);
    assert_int_equal(match(g, "\"abc"), 0);
    assert_int_equal(match(g, "\"a\nb\""), -1);     /* raw control char */
    assert_int_equal(match(g, "\"\xc3\x28\""), -1); /* bad UTF-8 */
    assert_int_equal(match(g, "\"\\x\""), -1);
    assert_int_equal(match(g, "\"ab\"x"), -1);
    gram_release(g);
    g = compile("{\"type\":[\"boolean\",\"null\"]}");
    assert_int_equal(match(g, "true"), 1);
    assert_int_equal(match(g, "null"), 1);
    assert_int_equal(match(g, "nul"), 0);
    assert_int_equal(match(g, "1"), -1);
    gram_release(g);
}

static const char *PERSON =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\",3]},\"maxItems\":2},"
    "\"nick\":{\"type\":\"string\"}},"
    "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}";

static void test_object(void **state)
{
    (void)state;
    gram_t *g = compile(PERSON);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3}"), 1);
    assert_int_equal(match(g, "{ \"name\": \"x\", \"age\": 3, \"tags\": [\"a\", 3] }"), 1);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3,\"nick\":\"y\"}"), 1);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3,\"tags\":[]}"), 1);
    /* order, required, extra keys, item values and counts */
    assert_int_equal(match(g, "{\"age\":3"), -1);
    assert_int_equal(match(g, "{\"name\":\"x\"}"), -1);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3,\"zz\""), -1);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3,\"tags\":[\"c\""), -1);
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3,\"tags\":[3,3,3"), -1);
    assert_int_equal(match(g, "{  \"name\""), -1); /* at most one space */
    assert_int_equal(match(g, "{\"name\":\"x\",\"age\":3}}"), -1);
    /* done: nothing may follow the closing brace */
    gram_state_t *s;
    assert_int_equal(gram_state_create(&s, g), 0);
    assert_int_equal(gram_state_done(s), 0);
    const char *t = "{\"name\":\"x\",\"age\":3}";
    assert_int_equal(gram_state_feed(s, t, strlen(t)), 0);
    assert_int_equal(gram_state_done(s), 1);
    assert_int_equal(gram_state_feed(s, " ", 1), -1);
    assert_int_equal(gram_state_done(s), 1); /* a refused feed changes nothing */
    gram_state_destroy(s);
    gram_release(g);
}

static void test_refs_anyof_const(void **state)
{
    (void)state;
    const char *tree = "{\"$ref\":\"#/$defs/node\",\"$defs\":{\"node\":{\"type\":\"object\","
                       "\"properties\":{\"v\":{\"const\":\"k\"},\"kids\":{\"type\":\"array\","
                       "\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\",\"kids\"],"
                       "\"additionalProperties\":false}}}";
    gram_t *g = compile(tree);
    assert_int_equal(match(g, "{\"v\":\"k\",\"kids\":[{\"v\":\"k\",\"kids\":[]}]}"), 1);
    assert_int_equal(match(g, "{\"v\":\"j\""), -1);
    gram_release(g);
    g = compile("{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                "\"required\":[\"a\"]},{\"type\":\"object\",\"properties\":{\"b\":{\"type\":"
                "\"boolean\"}},\"required\":[\"b\"]}]}");
    assert_int_equal(match(g, "{\"a\":1}"), 1);
    assert_int_equal(match(g, "{\"b\":false}"), 1);
    assert_int_equal(match(g, "{\"a\":true"), -1);
    gram_release(g);
    /* json_object mode: any object */
    g = compile("{\"type\":\"object\"}");
    assert_int_equal(match(g, "{\"x\": [1, {\"y\": null}], \"z\": \"w\"}"), 1);
    assert_int_equal(match(g, "{}"), 1);
    assert_int_equal(match(g, "[1]"), -1);
    assert_int_equal(match(g, "{\"x\":}"), -1);
    gram_release(g);
    g = compile("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2}");
    assert_int_equal(match(g, "[1]"), -1);
    assert_int_equal(match(g, "[1,2,3,4]"), 1);
    gram_release(g);
}

static void test_refused(void **state)
{
    (void)state;
    refuse("{\"type\":\"string\",\"pattern\":\"^a\"}", "'pattern' at #");
    refuse("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"format\":\"date\"}}}",
           "'format' at #/properties/a");
    refuse("{\"oneOf\":[{}]}", "'oneOf'");
    refuse("{\"type\":\"strin\"}", "unsupported type 'strin'");
    refuse("{\"$ref\":\"#/$defs/nope\"}", "names no definition");
    refuse("{\"$ref\":\"http://x/y\"}", "unsupported $ref");
    refuse("{\"type\":\"object\",\"properties\":{},\"required\":[\"a\"]}", "'a'");
    refuse("{\"type\":\"array\",\"maxItems\":1000}", "maxItems");
    refuse("{\"enum\":[]}", "enum");
    refuse("[1,2]", "must be an object");
    refuse("{not json", "not valid JSON");
    /* a definition that is only itself: fails closed, never loops */
    gram_t *g = compile("{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}}}");
    assert_int_equal(match(g, "1"), -1);
    gram_release(g);
}

/* 50 properties, the bench's size: compiles, and a full object matches */
static void test_wide(void **state)
{
    (void)state;
    char schema[8192], text[4096];
    size_t n = (size_t)snprintf(schema, sizeof schema, "{\"type\":\"object\",\"properties\":{");
    size_t m = (size_t)snprintf(text, sizeof text, "{");
    for (int i = 0; i < 50; i++) {
        n += (size_t)snprintf(schema + n, sizeof schema - n, "%s\"p%d\":{\"type\":\"%s\"}",
                              i ? "," : "", i, i % 2 ? "string" : "integer");
        m += (size_t)snprintf(text + m, sizeof text - m, "%s\"p%d\":%s", i ? "," : "", i,
                              i % 2 ? "\"s\"" : "7");
    }
    snprintf(schema + n, sizeof schema - n, "}}");
    snprintf(text + m, sizeof text - m, "}");
    gram_t *g = compile(schema);
    assert_int_equal(match(g, text), 1);
    gram_release(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_object),
        cmocka_unit_test(test_refs_anyof_const),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_wide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
