/* test_cache_key.c — the exact-cache key (src/cache/cache_key.c): every
 * output-changing field changes the key, formatting/order/excluded fields do
 * not, identity (namespace, model, digest, endpoint) is part of it; the
 * cacheability rule; hex and file digest helpers. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/cache_key.h"

static const char *BASE =
    "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
    "{\"role\":\"user\",\"content\":\"Hi there\"}],\"temperature\":0,\"top_p\":1,"
    "\"max_tokens\":16,\"stop\":[\"\\n\"],\"seed\":7}";

/* the API layer's skip list as it was when these cases were written */
static const char *const SKIP[] = {"stream", "stream_options", "user", "metadata",
                                   "store",  "model",          NULL};

static const cache_key_ctx_t CTX = {"chat", "smollm2-135m", "0123abcd", "tenant-a",
                                    8,      SKIP,           NULL,       0};

static cache_key_t key_of(const char *json, const cache_key_ctx_t *ctx)
{
    cJSON *j = cJSON_Parse(json);
    if (!j) fail_msg("bad test JSON: %s", json);
    cache_key_t k;
    bar_msg_t m;
    assert_int_equal(cache_key_make(&k, j, ctx, &m), 0);
    cJSON_Delete(j);
    return k;
}

/* BASE with one top-level member set to a JSON value (NULL value: removed) */
static char *with(const char *field, const char *value)
{
    cJSON *j = cJSON_Parse(BASE);
    cJSON_DeleteItemFromObjectCaseSensitive(j, field);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        cJSON_AddItemToObject(j, field, v);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

typedef struct {
    const char *field, *value;
} patch_t;

/* each must give a different key than BASE */
static const patch_t k_changes[] = {
    {"temperature", "0.5"},
    {"temperature", "1e-9"},
    {"top_p", "0.9"},
    {"top_k", "40"},
    {"min_p", "0.05"},
    {"seed", "8"},
    {"seed", NULL},
    {"stop", "[\"\\n\\n\"]"},
    {"stop", "\"\\n\""},
    {"stop", "[\"\\n\",\"x\"]"},
    {"presence_penalty", "0.1"},
    {"frequency_penalty", "0.1"},
    {"repeat_penalty", "1.1"},
    {"max_tokens", "17"},
    {"max_tokens", NULL},
    {"max_completion_tokens", "16"},
    {"logprobs", "true"},
    {"top_logprobs", "2"},
    {"n", "2"},
    {"response_format", "{\"type\":\"json_object\"}"},
    {"tools", "[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"},
    {"tool_choice", "\"none\""},
    {"ignore_eos", "true"},
    {"some_future_field", "1"},
    {"messages", "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                 "{\"role\":\"user\",\"content\":\"Hi there \"}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                 "{\"role\":\"user\",\"content\":\"hi there\"}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                 "{\"role\":\"assistant\",\"content\":\"Hi there\"}]"},
    {"messages", "[{\"role\":\"user\",\"content\":\"Hi there\"}]"},
    {"messages", "[{\"role\":\"user\",\"content\":\"Hi there\"},"
                 "{\"role\":\"system\",\"content\":\"You are terse.\"}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi there\"}]}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                 "{\"role\":\"user\",\"content\":\"Hi\\u00a0there\"}]"},
    {"prompt", "\"Hi there\""},
};

/* each must give the SAME key as BASE */
static const patch_t k_same[] = {
    {"temperature", "0.0"},
    {"temperature", "-0"},
    {"temperature", "0e5"},
    {"top_p", "1.0"},
    {"top_p", "1e0"},
    {"max_tokens", "16.0"},
    {"max_tokens", "1.6e1"},
    {"seed", "7.0"},
    {"stream", "true"},
    {"stream", "false"},
    {"stream_options", "{\"include_usage\":true}"},
    {"user", "\"bob\""},
    {"metadata", "{\"a\":\"b\"}"},
    {"store", "true"},
    {"model", "\"default\""},
    {"model", NULL},
};

static void test_each_field_changes_key(void **st)
{
    (void)st;
    cache_key_t base = key_of(BASE, &CTX);
    for (size_t i = 0; i < sizeof k_changes / sizeof k_changes[0]; i++) {
        char *s = with(k_changes[i].field, k_changes[i].value);
        cache_key_t k = key_of(s, &CTX);
        if (cache_key_equal(&k, &base))
            fail_msg("changing %s to %s kept the key", k_changes[i].field,
                     k_changes[i].value ? k_changes[i].value : "(absent)");
        /* and every change is distinct from every other */
        for (size_t j = 0; j < i; j++) {
            char *t = with(k_changes[j].field, k_changes[j].value);
            cache_key_t k2 = key_of(t, &CTX);
            if (cache_key_equal(&k, &k2)) fail_msg("changes %zu and %zu collide", i, j);
            free(t);
        }
        free(s);
    }
}

static void test_same_key(void **st)
{
    (void)st;
    cache_key_t base = key_of(BASE, &CTX);
    for (size_t i = 0; i < sizeof k_same / sizeof k_same[0]; i++) {
        char *s = with(k_same[i].field, k_same[i].value);
        cache_key_t k = key_of(s, &CTX);
        if (!cache_key_equal(&k, &base))
            fail_msg("setting %s to %s changed the key", k_same[i].field,
                     k_same[i].value ? k_same[i].value : "(absent)");
        free(s);
    }
}

static void test_order_and_format(void **st)
{
    (void)st;
    cache_key_t base = key_of(BASE, &CTX);
    const char *reordered =
        "{ \"seed\" : 7, \"stop\" : [ \"\\n\" ], \"max_tokens\" : 16 ,\n"
        "  \"top_p\":1.0,\"temperature\":0.0,\n"
        "  \"messages\":[{\"content\":\"You are terse.\",\"role\":\"system\"},\n"
        "                {\"content\":\"Hi "
        "there\",\"role\":\"user\"}],\"model\":\"x\",\"stream\":true}";
    cache_key_t k = key_of(reordered, &CTX);
    assert_true(cache_key_equal(&k, &base));
    /* escapes decode to the same bytes */
    const char *escaped =
        "{\"model\":\"smollm2\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
        "{\"role\":\"us\\u0065r\",\"content\":\"Hi\\u0020there\"}],\"temperature\":0,\"top_p\":1,"
        "\"max_tokens\":16,\"stop\":[\"\\u000a\"],\"seed\":7}";
    k = key_of(escaped, &CTX);
    assert_true(cache_key_equal(&k, &base));
    /* nested objects are sorted too */
    cache_key_t a = key_of(
        "{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"b\":1,\"a\":2}}}", &CTX);
    cache_key_t b = key_of(
        "{\"response_format\":{\"json_schema\":{\"a\":2.0,\"b\":1},\"type\":\"json_schema\"}}",
        &CTX);
    assert_true(cache_key_equal(&a, &b));
    /* but stream is only excluded at the top level */
    a = key_of("{\"x\":{\"stream\":true}}", &CTX);
    b = key_of("{\"x\":{\"stream\":false}}", &CTX);
    assert_false(cache_key_equal(&a, &b));
    /* type matters: "1" vs 1, null vs absent, [] vs {} */
    a = key_of("{\"seed\":1}", &CTX);
    b = key_of("{\"seed\":\"1\"}", &CTX);
    assert_false(cache_key_equal(&a, &b));
    a = key_of("{\"x\":null}", &CTX);
    b = key_of("{}", &CTX);
    assert_false(cache_key_equal(&a, &b));
    a = key_of("{\"x\":[]}", &CTX);
    b = key_of("{\"x\":{}}", &CTX);
    assert_false(cache_key_equal(&a, &b));
    /* no ambiguity from concatenation: ["ab","c"] vs ["a","bc"] */
    a = key_of("{\"stop\":[\"ab\",\"c\"]}", &CTX);
    b = key_of("{\"stop\":[\"a\",\"bc\"]}", &CTX);
    assert_false(cache_key_equal(&a, &b));
    /* key/value boundary: {"ab":"c"} vs {"a":"bc"} */
    a = key_of("{\"ab\":\"c\"}", &CTX);
    b = key_of("{\"a\":\"bc\"}", &CTX);
    assert_false(cache_key_equal(&a, &b));
}

static void test_identity_changes_key(void **st)
{
    (void)st;
    cache_key_t base = key_of(BASE, &CTX);
    cache_key_ctx_t v[] = {
        {"completions", CTX.model_id, CTX.model_digest, CTX.ns, CTX.ns_len, SKIP, NULL, 0},
        {CTX.endpoint, "other-model", CTX.model_digest, CTX.ns, CTX.ns_len, SKIP, NULL, 0},
        {CTX.endpoint, CTX.model_id, "0123abce", CTX.ns, CTX.ns_len, SKIP, NULL, 0},
        {CTX.endpoint, CTX.model_id, CTX.model_digest, "tenant-b", 8, SKIP, NULL, 0},
        {CTX.endpoint, CTX.model_id, CTX.model_digest, "tenant-a2", 9, SKIP, NULL, 0},
        {CTX.endpoint, CTX.model_id, CTX.model_digest, "", 0, SKIP, NULL, 0},
        {CTX.endpoint, CTX.model_id, CTX.model_digest, NULL, 0, SKIP, NULL, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        cache_key_t k = key_of(BASE, &v[i]);
        if (cache_key_equal(&k, &base)) fail_msg("identity variant %zu kept the key", i);
    }
    /* the namespace is bytes: an embedded NUL counts */
    cache_key_ctx_t n1 = CTX, n2 = CTX;
    n1.ns = "ab\0c";
    n1.ns_len = 4;
    n2.ns = "ab\0d";
    n2.ns_len = 4;
    cache_key_t a = key_of(BASE, &n1), b = key_of(BASE, &n2);
    assert_false(cache_key_equal(&a, &b));
    /* deterministic */
    cache_key_t c = key_of(BASE, &CTX);
    assert_true(cache_key_equal(&c, &base));
}

static void test_canonical_and_errors(void **st)
{
    (void)st;
    bar_msg_t m;
    buf_t b = {0};
    cJSON *j = cJSON_Parse("{\"b\":1,\"a\":-0.0}");
    assert_int_equal(cache_key_canonical(&b, j, &CTX, &m), 0);
    /* "a" sorted before "b"; -0 printed as 0 */
    const char *pa = memmem(b.p, b.n, "\x01\0\0\0\0\0\0\0a", 9);
    const char *pb = memmem(b.p, b.n, "\x01\0\0\0\0\0\0\0b", 9);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_true(pa < pb);
    assert_non_null(memmem(b.p, b.n,
                           "d\x01\0\0\0\0\0\0\0"
                           "0",
                           10));
    buf_free(&b);
    cJSON_Delete(j);

    cache_key_t k;
    j = cJSON_Parse("[1,2]");
    assert_int_equal(cache_key_make(&k, j, &CTX, &m), BAR_ERR_INVALID);
    cJSON_Delete(j);
    assert_int_equal(cache_key_make(&k, NULL, &CTX, &m), BAR_ERR_INVALID);

    /* deep nesting is refused, not a stack overflow */
    cJSON *root = cJSON_CreateObject(), *cur = root;
    for (int i = 0; i < 600; i++) {
        cJSON *n = cJSON_CreateObject();
        cJSON_AddItemToObject(cur, "x", n);
        cur = n;
    }
    assert_int_equal(cache_key_make(&k, root, &CTX, &m), BAR_ERR_INVALID);
    assert_non_null(strstr(m.text, "deeper"));
    cJSON_Delete(root);
}

static void test_hex(void **st)
{
    (void)st;
    cache_key_t k = key_of(BASE, &CTX), k2;
    char hex[CACHE_KEY_HEX_LEN + 1];
    cache_key_hex(&k, hex);
    assert_int_equal(strlen(hex), 32);
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", hex[i]));
    assert_int_equal(cache_key_from_hex(&k2, hex, 32), 0);
    assert_true(cache_key_equal(&k, &k2));
    for (int i = 0; i < 32; i++)
        if (hex[i] >= 'a') hex[i] = (char)(hex[i] - 32);
    assert_int_equal(cache_key_from_hex(&k2, hex, 32), 0);
    assert_true(cache_key_equal(&k, &k2));
    assert_int_equal(cache_key_from_hex(&k2, hex, 31), BAR_ERR_INVALID);
    hex[5] = 'g';
    assert_int_equal(cache_key_from_hex(&k2, hex, 32), BAR_ERR_INVALID);
    assert_int_equal(cache_key_from_hex(&k2, NULL, 32), BAR_ERR_INVALID);
}

static void test_ns_hash(void **st)
{
    (void)st;
    assert_int_equal(cache_ns_hash("a", 1), cache_ns_hash("a", 1));
    assert_int_not_equal(cache_ns_hash("a", 1), cache_ns_hash("b", 1));
    assert_int_not_equal(cache_ns_hash("", 0), cache_ns_hash("a", 1));
    assert_int_equal(cache_ns_hash(NULL, 0), cache_ns_hash("", 0));
}

static void test_skip_and_extra(void **st)
{
    (void)st;
    /* a skipped member never changes the key; with no skip list it does */
    cache_key_t a = key_of("{\"x\":1,\"stream\":true}", &CTX);
    cache_key_t b = key_of("{\"x\":1}", &CTX);
    assert_true(cache_key_equal(&a, &b));
    cache_key_ctx_t none = CTX;
    none.skip = NULL;
    cache_key_t c = key_of("{\"x\":1,\"stream\":true}", &none);
    cache_key_t d = key_of("{\"x\":1}", &none);
    assert_false(cache_key_equal(&c, &d));
    /* only top-level members are skipped */
    cache_key_t e = key_of("{\"x\":{\"stream\":true}}", &CTX);
    cache_key_t f = key_of("{\"x\":{}}", &CTX);
    assert_false(cache_key_equal(&e, &f));
    /* the extra bytes are part of the key */
    cache_key_ctx_t x1 = CTX, x2 = CTX;
    x1.extra = "t=0";
    x1.extra_len = 3;
    x2.extra = "t=1";
    x2.extra_len = 3;
    cache_key_t g = key_of("{\"x\":1}", &x1);
    cache_key_t h = key_of("{\"x\":1}", &x2);
    cache_key_t i = key_of("{\"x\":1}", &CTX);
    assert_false(cache_key_equal(&g, &h));
    assert_false(cache_key_equal(&g, &i));
}

static void test_file_digest(void **st)
{
    (void)st;
    char path[] = "/tmp/barista_digest_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "weights v1", 10), 10);
    close(fd);
    char d1[33], d2[33];
    bar_msg_t m;
    assert_int_equal(cache_key_file_digest(path, d1, &m), 0);
    assert_int_equal(strlen(d1), 32);
    FILE *f = fopen(path, "r+");
    fputs("weights v2", f);
    fclose(f);
    assert_int_equal(cache_key_file_digest(path, d2, &m), 0);
    assert_string_not_equal(d1, d2);
    unlink(path);
    assert_int_equal(cache_key_file_digest(path, d2, &m), BAR_ERR_IO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_field_changes_key),
        cmocka_unit_test(test_same_key),
        cmocka_unit_test(test_order_and_format),
        cmocka_unit_test(test_identity_changes_key),
        cmocka_unit_test(test_canonical_and_errors),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_ns_hash),
        cmocka_unit_test(test_skip_and_extra),
        cmocka_unit_test(test_file_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
