/* test_gram_cache.c — the compiled-schema cache: a schema that comes again
 * is not compiled again, the least recently used one goes first, a grammar
 * handed out outlives its eviction, a bad schema is an error and not kept;
 * and the API path: parsing a request with a cache compiles its schema once
 * and hands the compiled grammar on (oai_req_t.grammar); two callers
 * compiling one new schema at once leave one copy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "api/openai.h"
#include "engine/gram_cache.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"

/* The cache under test, with its compile call hooked: race_hook (when set)
 * runs once inside the next compile, while the cache's lock is released,
 * as another thread asking for a schema at that moment would. */
static void (*race_hook)(void);

static int hooked_compile(const char *json, size_t n, gram_t **out, bar_msg_t *msg)
{
    void (*h)(void) = race_hook;
    race_hook = NULL;
    if (h) h();
    return json_schema_compile(json, n, out, msg);
}

#define json_schema_compile hooked_compile
#include "../../src/engine/gram_cache.c"
#undef json_schema_compile

static const char *S1 = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},"
                        "\"required\":[\"a\"],\"additionalProperties\":false}";
static const char *S2 = "{\"type\":\"integer\"}";
static const char *S3 = "{\"type\":\"boolean\"}";

static gram_t *get(gram_cache_t *c, const char *s)
{
    gram_t *g = NULL;
    bar_msg_t m = {{0}};
    assert_int_equal(gram_cache_get(c, s, strlen(s), &g, &m), 0);
    assert_non_null(g);
    return g;
}

static void test_same_schema_compiles_once(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 4), 0);
    gram_t *a = get(c, S1), *b = get(c, S1);
    assert_ptr_equal(a, b);
    gram_cache_stats_t st;
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 1);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.size, 1);
    /* same bytes but a different schema: compiled */
    gram_t *d = get(c, S2);
    assert_ptr_not_equal(d, a);
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 2);
    gram_release(a);
    gram_release(b);
    gram_release(d);
    gram_cache_destroy(c);
}

static void test_lru_and_refcount(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 2), 0);
    gram_t *a = get(c, S1);
    gram_t *b = get(c, S2);
    gram_release(get(c, S1)); /* S1 used last: S2 is the oldest */
    gram_t *d = get(c, S3);   /* evicts S2 */
    gram_cache_stats_t st;
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 3);
    assert_int_equal(st.size, 2);
    gram_release(get(c, S1)); /* still there */
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 3);
    /* b was evicted but is still ours: it still matches */
    gram_state_t *gs;
    assert_int_equal(gram_state_create(&gs, b), 0);
    assert_int_equal(gram_state_feed(gs, "42", 2), 0);
    assert_true(gram_state_accepting(gs));
    gram_state_destroy(gs);
    gram_release(get(c, S2)); /* compiled again */
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 4);
    gram_release(a);
    gram_release(b);
    gram_release(d);
    gram_cache_destroy(c);
}

static void test_bad_schema_not_kept(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 2), 0);
    const char *bad = "{\"type\":\"string\",\"pattern\":\"x\"}";
    for (int i = 0; i < 2; i++) {
        gram_t *g = NULL;
        bar_msg_t m = {{0}};
        assert_int_equal(gram_cache_get(c, bad, strlen(bad), &g, &m), BAR_ERR_INVALID);
        assert_null(g);
        assert_non_null(strstr(m.text, "pattern"));
    }
    gram_cache_stats_t st;
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 2);
    assert_int_equal(st.size, 0);
    gram_cache_destroy(c);
}

/* Two callers compile the same new schema at once (the second starts while
 * the first compiles, outside the lock): the cache keeps one copy of it and
 * both get that one, instead of a second slot that evicts another schema. */
static gram_cache_t *race_cache;
static const char *race_schema;
static gram_t *race_got;

static void race_other(void)
{
    race_got = get(race_cache, race_schema);
}

static void test_same_new_schema_at_once_kept_once(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 2), 0);
    gram_t *a = get(c, S1);
    race_cache = c;
    race_schema = S2;
    race_hook = race_other;
    gram_t *b = get(c, S2); /* the other caller compiles and stores S2 meanwhile */
    assert_null(race_hook);
    assert_non_null(race_got);
    assert_ptr_equal(b, race_got); /* one grammar for one schema */
    gram_cache_stats_t st;
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 3);
    assert_int_equal(st.size, 2);
    gram_release(get(c, S1)); /* S1 was not evicted by a second copy of S2 */
    gram_release(get(c, S2));
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, 3);
    gram_release(a);
    gram_release(b);
    gram_release(race_got);
    gram_cache_destroy(c);
}

/* The cache is bounded in bytes, not only in count: 25 distinct schemas of
 * 100 KB (a grammar is ~4-17x its schema's text) do not all stay in a cache
 * of 64, the newest does; a schema over the whole budget is compiled but not
 * kept. */
static char *enum_schema(size_t len, char fill)
{
    char *s = malloc(len + 32);
    assert_non_null(s);
    size_t k = (size_t)sprintf(s, "{\"enum\":[\"");
    memset(s + k, fill, len);
    k += len;
    strcpy(s + k, "\"]}");
    return s;
}

static void test_bounded_in_bytes(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 64), 0);
    gram_cache_stats_t st;
    char *last = NULL;
    for (int i = 0; i < 25; i++) {
        free(last);
        last = enum_schema(100000, (char)('a' + i));
        gram_release(get(c, last));
    }
    gram_cache_stats(c, &st);
    assert_true(st.size >= 1);
    assert_true(st.size <= 20); /* 2 MiB of schema text */
    gram_release(get(c, last)); /* the newest stayed */
    gram_cache_stats_t st2;
    gram_cache_stats(c, &st2);
    assert_int_equal(st2.compiles, st.compiles);
    free(last);
    gram_cache_destroy(c);
    /* a budget of 200 bytes: S1 and S2 fit, a 300-byte schema is not kept */
    assert_int_equal(gram_cache_create_sized(&c, 8, 200), 0);
    gram_release(get(c, S1));
    gram_release(get(c, S2));
    char *big = enum_schema(300, 'z');
    gram_release(get(c, big));
    gram_cache_stats(c, &st);
    assert_int_equal(st.size, 2);
    gram_release(get(c, big)); /* compiled again */
    gram_release(get(c, S1));  /* still there */
    gram_cache_stats(c, &st2);
    assert_int_equal(st2.compiles, st.compiles + 1);
    free(big);
    gram_cache_destroy(c);
}

static int parse(oai_req_t *r, gram_cache_t *c, const char *body)
{
    cJSON *root = NULL;
    oai_err_t e;
    memset(r, 0, sizeof *r);
    int rc = oai_parse_json(body, strlen(body), &root, &e);
    if (!rc) rc = oai_parse_tree_cached(r, OAI_CHAT, root, c, &e);
    cJSON_Delete(root);
    return rc;
}

static void test_request_compiles_once(void **state)
{
    (void)state;
    gram_cache_t *c;
    assert_int_equal(gram_cache_create(&c, 8), 0);
    const char *body =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":"
        "\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"object\","
        "\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}}}}";
    gram_cache_stats_t st;
    for (int i = 0; i < 2; i++) {
        oai_req_t r;
        assert_int_equal(parse(&r, c, body), 0);
        assert_non_null(r.grammar);
        assert_non_null(r.constraint);
        oai_req_free(&r);
        gram_cache_stats(c, &st);
        assert_int_equal(st.compiles, 1); /* the second request: a hit */
    }
    assert_int_equal(st.hits, 1);
    /* forced tool calls: each tool's parameters and the call schema (the tool
     * set), once each; the same request again compiles nothing */
    const char *tools =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tool_choice\":\"required\","
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}}}}}]}";
    oai_req_t r;
    assert_int_equal(parse(&r, c, tools), 0);
    assert_non_null(r.grammar);
    oai_req_free(&r);
    gram_cache_stats(c, &st);
    uint64_t after_first = st.compiles;
    assert_int_equal(after_first, 3);
    assert_int_equal(parse(&r, c, tools), 0);
    oai_req_free(&r);
    gram_cache_stats(c, &st);
    assert_int_equal(st.compiles, after_first);
    gram_cache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_schema_compiles_once),
        cmocka_unit_test(test_lru_and_refcount),
        cmocka_unit_test(test_bad_schema_not_kept),
        cmocka_unit_test(test_same_new_schema_at_once_kept_once),
        cmocka_unit_test(test_bounded_in_bytes),
        cmocka_unit_test(test_request_compiles_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
