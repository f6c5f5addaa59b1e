/* test_fallback.c — fallback chains (src/control/fallback.c) and their
 * configuration in the model list (src/backend/model_list.c's fallbacks
 * block): step parsing, the entry key and LiteLLM's router_settings /
 * litellm_settings shape, the start-up check and its one-line messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "backend/model_list.h"
#include "control/fallback.h"

static int parse(const char *s, fallback_step_t *st, bar_msg_t *m)
{
    return fallback_step_parse(s, strlen(s), st, m);
}

static void test_step_parse(void **state)
{
    (void)state;
    fallback_step_t st;
    bar_msg_t m = {{0}};
    char name[64];
    assert_int_equal(parse("model:smol-q4_0", &st, &m), 0);
    assert_int_equal(st.kind, FALLBACK_MODEL);
    assert_int_equal(st.arg_len, 9);
    assert_memory_equal(st.arg, "smol-q4_0", 9);
    fallback_step_name(&st, name, sizeof name);
    assert_string_equal(name, "model:smol-q4_0");
    assert_int_equal(parse("smol", &st, &m), 0); /* LiteLLM: a bare model name */
    assert_int_equal(st.kind, FALLBACK_MODEL);
    assert_int_equal(st.arg_len, 4);
    assert_int_equal(parse("semantic", &st, &m), 0);
    assert_int_equal(st.kind, FALLBACK_SEMANTIC);
    assert_true(st.min_sim == 0);
    fallback_step_name(&st, name, sizeof name);
    assert_string_equal(name, "semantic");
    assert_int_equal(parse("semantic:0.8", &st, &m), 0);
    assert_true(st.min_sim > 0.79 && st.min_sim < 0.81);
    assert_int_equal(parse("static:Busy: retry.", &st, &m), 0);
    assert_int_equal(st.kind, FALLBACK_STATIC);
    assert_int_equal(st.arg_len, 12); /* the text keeps its own colons */
    assert_memory_equal(st.arg, "Busy: retry.", 12);
    fallback_step_name(&st, name, sizeof name);
    assert_string_equal(name, "static");
    assert_string_equal(fallback_kind_name(FALLBACK_MODEL), "model");

    const char *bad[] = {"",           "static:",      "model:",     "semantic:",
                         "semantic:0", "semantic:1.5", "semantic:x", "semantic:0.5x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m.text[0] = 0;
        assert_int_equal(parse(bad[i], &st, &m), BAR_ERR_INVALID);
        assert_true(m.text[0] != 0);
    }
}

static const char *LIST =
    "model_list:\n"
    "  - model_name: big\n"
    "    litellm_params: {model: local/a.gguf}\n"
    "    fallbacks: [\"model:small\", \"semantic:0.9\"]\n"
    "  - model_name: small\n"
    "    litellm_params: {model: local/a.gguf}\n"
    "router_settings:\n"
    "  num_retries: 2\n"
    "  fallbacks: [{\"big\": [\"static:Busy.\"]}, {\"small\": [\"static:Small is busy.\"]}]\n"
    "litellm_settings:\n"
    "  fallbacks: [{\"small\": [\"big\"]}]\n";

static void test_model_list_chains(void **state)
{
    (void)state;
    model_list_t l = {0};
    bar_msg_t m = {{0}};
    assert_int_equal(model_list_load_mem(&l, LIST, strlen(LIST), NULL, &m), 0);
    assert_int_equal(model_list_finish(&l, &m), 0);
    assert_int_equal(fallback_check(&l, &m), 0);
    const model_entry_t *big = model_list_find(&l, "big", 3);
    const model_entry_t *small = model_list_find(&l, "small", 5);
    /* the entry key's steps first, then router_settings' */
    assert_int_equal(fallback_chain_len(big), 3);
    fallback_step_t st;
    assert_true(fallback_chain_step(big, 0, &st));
    assert_int_equal(st.kind, FALLBACK_MODEL);
    assert_true(fallback_chain_step(big, 1, &st));
    assert_int_equal(st.kind, FALLBACK_SEMANTIC);
    assert_true(fallback_chain_step(big, 2, &st));
    assert_int_equal(st.kind, FALLBACK_STATIC);
    assert_memory_equal(st.arg, "Busy.", 5);
    assert_false(fallback_chain_step(big, 3, &st));
    assert_false(fallback_chain_step(big, -1, &st));
    /* litellm_settings' step, then router_settings' */
    assert_int_equal(fallback_chain_len(small), 2);
    int kinds = 0;
    for (int i = 0; i < 2; i++) {
        assert_true(fallback_chain_step(small, i, &st));
        kinds |= 1 << st.kind;
    }
    assert_int_equal(kinds, (1 << FALLBACK_MODEL) | (1 << FALLBACK_STATIC));
    model_list_free(&l);
}

/* A step naming an upstream replica group (the gateway's), in both shapes,
 * next to the group's router_settings, read by one reader. */
static void test_upstream_group_step(void **state)
{
    (void)state;
    static const char *yaml = "model_list:\n"
                              "  - model_name: local\n"
                              "    litellm_params: {model: local/a.gguf}\n"
                              "    fallbacks: [\"model:grp\", \"static:Busy.\"]\n"
                              "  - model_name: grp\n"
                              "    litellm_params: {model: openai/x, api_base: http://h1/v1}\n"
                              "    fallbacks: [\"static:Group busy.\"]\n"
                              "  - model_name: grp\n"
                              "    litellm_params: {model: openai/x, api_base: http://h2/v1}\n"
                              "router_settings:\n"
                              "  routing_strategy: least-busy\n"
                              "  fallbacks: [{grp: [local]}]\n"
                              "  num_retries: 1\n";
    model_list_t l = {0};
    bar_msg_t m = {{0}};
    assert_int_equal(model_list_load_mem(&l, yaml, strlen(yaml), NULL, &m), 0);
    assert_int_equal(model_list_finish(&l, &m), 0);
    assert_int_equal(fallback_check(&l, &m), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.n_ups, 2);
    assert_int_equal(l.router.strategy, ROUTE_LEAST_BUSY);
    assert_int_equal(l.router.num_retries, 1);
    const model_entry_t *loc = model_list_find(&l, "local", 5);
    const model_entry_t *grp = model_list_find(&l, "grp", 3);
    fallback_step_t st;
    assert_int_equal(fallback_chain_len(loc), 2);
    assert_true(fallback_chain_step(loc, 0, &st));
    assert_int_equal(st.kind, FALLBACK_MODEL);
    assert_ptr_equal(model_list_find(&l, st.arg, st.arg_len), grp);
    /* the group's entry key first, then router_settings' */
    assert_int_equal(fallback_chain_len(grp), 2);
    assert_true(fallback_chain_step(grp, 0, &st));
    assert_int_equal(st.kind, FALLBACK_STATIC);
    assert_true(fallback_chain_step(grp, 1, &st));
    assert_int_equal(st.kind, FALLBACK_MODEL);
    assert_ptr_equal(model_list_find(&l, st.arg, st.arg_len), loc);
    model_list_free(&l);
}

/* yaml loads and finishes, and fallback_check refuses it with want. */
static void check_refused(const char *yaml, const char *want)
{
    model_list_t l = {0};
    bar_msg_t m = {{0}};
    assert_int_equal(model_list_load_mem(&l, yaml, strlen(yaml), NULL, &m), 0);
    assert_int_equal(model_list_finish(&l, &m), 0);
    assert_int_equal(fallback_check(&l, &m), BAR_ERR_INVALID);
    if (!strstr(m.text, want)) fail_msg("message \"%s\" lacks \"%s\"", m.text, want);
    assert_null(strchr(m.text, '\n')); /* one line */
    model_list_free(&l);
}

/* yaml is refused while loading with rc and a message containing want. */
static void load_refused(const char *yaml, int rc, const char *want)
{
    model_list_t l = {0};
    bar_msg_t m = {{0}};
    assert_int_equal(model_list_load_mem(&l, yaml, strlen(yaml), NULL, &m), rc);
    if (!strstr(m.text, want)) fail_msg("message \"%s\" lacks \"%s\"", m.text, want);
    assert_int_equal(l.n, 0);
    model_list_free(&l);
}

static void test_bad_chains(void **state)
{
    (void)state;
    check_refused("model_list:\n"
                  "  - model_name: big\n"
                  "    litellm_params: {model: local/a.gguf}\n"
                  "    fallbacks: [\"model:nope\"]\n",
                  "model \"big\": fallback step \"model:nope\" names an unknown model \"nope\"");
    check_refused("model_list:\n"
                  "  - model_name: big\n"
                  "    litellm_params: {model: local/a.gguf}\n"
                  "    fallbacks: [\"big\"]\n",
                  "names the model itself");
    check_refused("model_list:\n"
                  "  - model_name: big\n"
                  "    litellm_params: {model: local/a.gguf}\n"
                  "    fallbacks: [\"model:default\"]\n",
                  "unknown model \"default\"");
    check_refused("model_list:\n"
                  "  - model_name: big\n"
                  "    litellm_params: {model: local/a.gguf}\n"
                  "    fallbacks: [\"static:\"]\n",
                  "model \"big\": fallback step \"static:\" has no text");
    check_refused("model_list:\n"
                  "  - model_name: big\n"
                  "    litellm_params: {model: local/a.gguf}\n"
                  "    fallbacks: [\"model:emb\"]\n"
                  "  - model_name: emb\n"
                  "    litellm_params: {model: local/emb}\n"
                  "    model_info: {mode: embedding}\n",
                  "names an embedding model");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "router_settings:\n"
                 "  fallbacks: [{\"ghost\": [\"big\"]}]\n",
                 BAR_ERR_INVALID, "fallbacks: unknown model \"ghost\"");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "    fallbacks: \"static:x\"\n",
                 BAR_ERR_FORMAT, "must be a sequence");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "    fallbacks: [[\"x\"]]\n",
                 BAR_ERR_FORMAT, "non-empty string");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "litellm_settings:\n"
                 "  fallbacks: [\"big\"]\n",
                 BAR_ERR_FORMAT, "{MODEL: [STEP, ...]}");
    /* a replica group's chain is on its first entry, not on each replica */
    load_refused("model_list:\n"
                 "  - model_name: grp\n"
                 "    litellm_params: {model: openai/x, api_base: http://h1/v1}\n"
                 "  - model_name: grp\n"
                 "    litellm_params: {model: openai/x, api_base: http://h2/v1}\n"
                 "    fallbacks: [\"static:x\"]\n",
                 BAR_ERR_INVALID, "fallbacks of a replica group go on its first entry (line 2)");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "router_settings: {num_retries: 1}\n"
                 "router_settings: {fallbacks: [{big: [\"static:x\"]}]}\n",
                 BAR_ERR_INVALID, "router_settings given twice");
    load_refused("model_list:\n"
                 "  - model_name: big\n"
                 "    litellm_params: {model: local/a.gguf}\n"
                 "router_settings:\n"
                 "  fallbacks: [{big: [\"static:x\"]}]\n"
                 "  fallbacks: [{big: [\"static:y\"]}]\n",
                 BAR_ERR_INVALID, "given twice");
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "model_list:\n"
                     "  - model_name: big\n"
                     "    litellm_params: {model: local/a.gguf}\n"
                     "    fallbacks: [");
    for (int i = 0; i <= MODEL_FALLBACK_STEPS; i++)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n, "%s\"static:%d\"", i ? ", " : "", i);
    snprintf(yaml + n, sizeof yaml - (size_t)n, "]\n");
    load_refused(yaml, BAR_ERR_RANGE, "too many fallback steps");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_parse),
        cmocka_unit_test(test_model_list_chains),
        cmocka_unit_test(test_upstream_group_step),
        cmocka_unit_test(test_bad_chains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
