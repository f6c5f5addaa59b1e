/* test_model_list.c — the YAML model list and --model arguments
 * (src/backend/model_list.c): the LiteLLM shape, flow style, defaults and
 * default selection, every refusal rule (code and message), path resolution,
 * files, truncated and garbage input, lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/model_list.h"

static model_list_t L;
static bar_msg_t M;

static int setup(void **st)
{
    (void)st;
    memset(&L, 0, sizeof L);
    memset(&M, 0, sizeof M);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    model_list_free(&L);
    return 0;
}

static int load(const char *yaml)
{
    return model_list_load_mem(&L, yaml, strlen(yaml), NULL, &M);
}

/* yaml must fail with rc, a message containing sub, and leave L as it was. */
static void expect_err_at(const char *yaml, int rc, const char *sub, int line)
{
    int n0 = L.n;
    M.text[0] = '\0';
    int got = load(yaml);
    if (got != rc || !strstr(M.text, sub))
        print_error("line %d: yaml:\n%s\nrc %d (want %d), message: %s\n(want \"%s\")\n", line, yaml,
                    got, rc, M.text, sub);
    assert_int_equal(got, rc);
    assert_non_null(strstr(M.text, sub));
    assert_int_equal(L.n, n0);
}
#define expect_err(yaml, rc, sub) expect_err_at(yaml, rc, sub, __LINE__)

/* A one-entry list named "m" whose litellm_params are "model: local/m.gguf"
 * plus `extra` (one "key: value" line). */
static const char *one(const char *extra)
{
    static char buf[1024];
    snprintf(buf, sizeof buf,
             "model_list:\n"
             "  - model_name: m\n"
             "    litellm_params:\n"
             "      model: local/m.gguf\n"
             "      %s\n",
             extra);
    return buf;
}

static const char full_yaml[] =
    "# LiteLLM-style config\n"
    "model_list:\n"
    "  - model_name: smol\n"
    "    litellm_params:\n"
    "      model: local/models/SmolLM2-135M-Instruct.Q4_1.gguf   # \"local/\" + path\n"
    "      threads: 2\n"
    "      ctx: 2048\n"
    "      parallel: 4\n"
    "      temperature: 0.7\n"
    "      top_p: 0.9\n"
    "      top_k: 40\n"
    "      min_p: 0.05\n"
    "      repeat_penalty: 1.1\n"
    "      presence_penalty: 0\n"
    "      frequency_penalty: -0.5\n"
    "      max_tokens: 256\n"
    "      seed: 42\n"
    "    default: true\n"
    "  - model_name: other\n"
    "    litellm_params: {model: local//abs/path.gguf}\n"
    "litellm_settings:\n"
    "  drop_params: true\n"
    "  callbacks: [a, b]\n"
    "router_settings: {routing_strategy: simple-shuffle}\n"
    "general_settings:\n"
    "  master_key: sk-1234\n"
    "environment_variables:\n"
    "  HF_TOKEN: x\n";

static void test_litellm_full(void **st)
{
    (void)st;
    assert_int_equal(model_list_load_mem(&L, full_yaml, strlen(full_yaml), "/srv/cfg", &M), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.n, 2);
    const model_entry_t *e = &L.v[0];
    assert_string_equal(e->name, "smol");
    assert_int_equal(e->kind, MODEL_KIND_LOCAL);
    assert_string_equal(e->path, "/srv/cfg/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_int_equal(e->is_default, 1);
    assert_int_equal(e->line, 3);
    assert_int_equal(e->threads, 2);
    assert_int_equal(e->ctx, 2048);
    assert_int_equal(e->parallel, 4);
    assert_true(e->temperature == 0.7);
    assert_true(e->top_p == 0.9);
    assert_int_equal(e->top_k, 40);
    assert_true(e->min_p == 0.05);
    assert_true(e->repeat_penalty == 1.1);
    assert_true(e->presence_penalty == 0);
    assert_true(e->frequency_penalty == -0.5);
    assert_int_equal(e->max_tokens, 256);
    assert_int_equal(e->seed, 42);
    assert_int_equal(e->has, MODEL_HAS_TEMPERATURE | MODEL_HAS_TOP_P | MODEL_HAS_TOP_K |
                                 MODEL_HAS_MIN_P | MODEL_HAS_REPEAT_PENALTY |
                                 MODEL_HAS_PRESENCE_PENALTY | MODEL_HAS_FREQUENCY_PENALTY |
                                 MODEL_HAS_MAX_TOKENS | MODEL_HAS_SEED);
    e = &L.v[1];
    assert_string_equal(e->name, "other");
    assert_string_equal(e->path, "/abs/path.gguf");
    assert_int_equal(e->is_default, 0);
    assert_int_equal(L.default_idx, 0);
}

static void test_flow_style(void **st)
{
    (void)st;
    const char *y = "{model_list: [{model_name: \"a.b:c/d-e_f\", litellm_params: "
                    "{model: 'local/x y.gguf', ctx: 512, temperature: 1, top_k: 0}, "
                    "model_info: {default: true}}, "
                    "{model_name: b, litellm_params: {model: local/b.gguf}}]}";
    assert_int_equal(load(y), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.n, 2);
    assert_string_equal(L.v[0].name, "a.b:c/d-e_f");
    assert_string_equal(L.v[0].path, "x y.gguf");
    assert_int_equal(L.v[0].ctx, 512);
    assert_true(L.v[0].temperature == 1.0);
    assert_int_equal(L.v[0].top_k, 0);
    assert_int_equal(L.v[0].has, MODEL_HAS_TEMPERATURE | MODEL_HAS_TOP_K);
    assert_int_equal(L.v[0].is_default, 1);
    assert_string_equal(L.v[1].path, "b.gguf");
}

static void test_defaults(void **st)
{
    (void)st;
    assert_int_equal(load(one("")), 0);
    const model_entry_t *e = &L.v[0];
    assert_int_equal(e->kind, MODEL_KIND_LOCAL);
    assert_string_equal(e->path, "m.gguf");
    assert_int_equal(e->threads, -1);
    assert_int_equal(e->ctx, -1);
    assert_int_equal(e->parallel, -1);
    assert_int_equal(e->has, 0);
    assert_int_equal(e->is_default, 0);
    assert_true(e->temperature == 0 && e->top_p == 0 && e->min_p == 0);
    assert_int_equal(e->top_k, 0);
    assert_int_equal(e->max_tokens, 0);
    assert_int_equal(e->seed, 0);
    /* each field sets exactly its own bit */
    static const struct {
        const char *line;
        unsigned has;
    } bits[] = {
        {"temperature: 0.5", MODEL_HAS_TEMPERATURE},
        {"top_p: 0.5", MODEL_HAS_TOP_P},
        {"top_k: 5", MODEL_HAS_TOP_K},
        {"min_p: 0.1", MODEL_HAS_MIN_P},
        {"repeat_penalty: 1", MODEL_HAS_REPEAT_PENALTY},
        {"presence_penalty: 1", MODEL_HAS_PRESENCE_PENALTY},
        {"frequency_penalty: 1", MODEL_HAS_FREQUENCY_PENALTY},
        {"max_tokens: 5", MODEL_HAS_MAX_TOKENS},
        {"seed: 5", MODEL_HAS_SEED},
        {"threads: 5", 0},
        {"ctx: 512", 0},
        {"parallel: 5", 0},
        {"timeout: 2.5", 0},
    };
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        model_list_free(&L);
        assert_int_equal(load(one(bits[i].line)), 0);
        assert_int_equal(L.v[0].has, bits[i].has);
    }
    assert_true(L.v[0].timeout == 2.5); /* the last one loaded */
}

static void test_default_selection(void **st)
{
    (void)st;
    const char *flag =
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: local/a.gguf}}\n"
        "  - {model_name: b, litellm_params: {model: local/b.gguf}, default: true}\n"
        "  - {model_name: c, litellm_params: {model: local/c.gguf}, default: false}\n";
    assert_int_equal(load(flag), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 1);
    assert_string_equal(model_list_find(&L, "default", 7)->name, "b");
    model_list_free(&L);

    const char *info = "model_list:\n"
                       "  - model_name: a\n"
                       "    litellm_params: {model: local/a.gguf}\n"
                       "  - model_name: b\n"
                       "    litellm_params: {model: local/b.gguf}\n"
                       "    model_info:\n"
                       "      id: some-id\n"
                       "      mode: chat\n"
                       "      base_model: {nested: [1, 2]}\n"
                       "      default: true\n";
    assert_int_equal(load(info), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 1);
    assert_int_equal(L.v[1].is_default, 1);
    model_list_free(&L);

    const char *first = "model_list:\n"
                        "  - model_name: a\n"
                        "    litellm_params: {model: local/a.gguf}\n"
                        "    model_info:\n"
                        "  - {model_name: b, litellm_params: {model: local/b.gguf}, "
                        "model_info: {default: false}}\n";
    assert_int_equal(load(first), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 0);
    assert_string_equal(model_list_find(&L, "default", 7)->name, "a");
    model_list_free(&L);

    /* both spellings agreeing is fine; disagreeing is an error */
    assert_int_equal(
        load("model_list: [{model_name: a, litellm_params: {model: local/a}, default: true, "
             "model_info: {default: true}}]"),
        0);
    model_list_free(&L);
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}, default: true, "
               "model_info: {default: false}}]",
               BAR_ERR_INVALID, "disagree");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a.gguf}, default: true}\n"
               "  - {model_name: b, litellm_params: {model: local/b.gguf}, "
               "model_info: {default: true}}\n",
               BAR_ERR_INVALID, "more than one default");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a.gguf}, default: yes}\n",
               BAR_ERR_FORMAT, "true or false");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a.gguf}, default: \"true\"}\n",
               BAR_ERR_FORMAT, "quoted");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a.gguf}, model_info: [x]}\n",
               BAR_ERR_FORMAT, "model_info must be a mapping");
}

static void test_add_arg(void **st)
{
    (void)st;
    assert_int_equal(model_list_add_arg(&L, "smol=models/SmolLM2.Q4_1.gguf", &M), 0);
    assert_int_equal(model_list_add_arg(&L, "/data/Qwen2.5-0.5B.Q8_0.gguf", &M), 0);
    assert_int_equal(model_list_add_arg(&L, "plain", &M), 0);
    assert_int_equal(model_list_add_arg(&L, "eq=dir/a=b.gguf", &M), 0);
    assert_int_equal(model_list_add_arg(&L, "dir/Upper.GGUF", &M), 0);
    assert_int_equal(L.n, 5);
    assert_string_equal(L.v[0].name, "smol");
    assert_string_equal(L.v[0].path, "models/SmolLM2.Q4_1.gguf");
    assert_string_equal(L.v[1].name, "Qwen2.5-0.5B.Q8_0");
    assert_string_equal(L.v[1].path, "/data/Qwen2.5-0.5B.Q8_0.gguf");
    assert_string_equal(L.v[2].name, "plain");
    assert_string_equal(L.v[3].name, "eq");
    assert_string_equal(L.v[3].path, "dir/a=b.gguf");
    assert_string_equal(L.v[4].name, "Upper");
    for (int i = 0; i < L.n; i++) {
        assert_int_equal(L.v[i].kind, MODEL_KIND_LOCAL);
        assert_int_equal(L.v[i].threads, -1);
        assert_int_equal(L.v[i].ctx, -1);
        assert_int_equal(L.v[i].parallel, -1);
        assert_int_equal(L.v[i].has, 0);
        assert_int_equal(L.v[i].is_default, 0);
    }
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 0);

    static const struct {
        const char *arg, *sub;
    } bad[] = {
        {"", "empty argument"},
        {"=", "no path"},
        {"=x.gguf", "is empty"},
        {"name=", "no path"},
        {"default=x.gguf", "reserved"},
        {"dir/default.gguf", "NAME=PATH"},
        {"dir/.gguf", "NAME=PATH"},
        {"dir/", "NAME=PATH"},
        {"my model.gguf", "NAME=PATH"},
        {"bad name=x.gguf", "character outside"},
        {"smol=other.gguf", "given twice"},
        {"models/smol.gguf", "given twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        M.text[0] = '\0';
        int rc = model_list_add_arg(&L, bad[i].arg, &M);
        if (rc != BAR_ERR_INVALID || !strstr(M.text, bad[i].sub))
            print_error("arg \"%s\": rc %d, message %s\n", bad[i].arg, rc, M.text);
        assert_int_equal(rc, BAR_ERR_INVALID);
        assert_non_null(strstr(M.text, bad[i].sub));
        assert_non_null(strstr(M.text, "--model"));
        assert_int_equal(L.n, 5);
    }
    char longname[200];
    memset(longname, 'a', 128);
    strcpy(longname + 128, "=x.gguf");
    assert_int_equal(model_list_add_arg(&L, longname, &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "longer than 127"));
    strcpy(longname + 127, "=x.gguf");
    assert_int_equal(model_list_add_arg(&L, longname, &M), 0);
    char *longpath = malloc(MODEL_PATH_MAX + 8);
    memcpy(longpath, "p=", 2);
    memset(longpath + 2, 'x', MODEL_PATH_MAX);
    longpath[MODEL_PATH_MAX + 2] = '\0';
    assert_int_equal(model_list_add_arg(&L, longpath, &M), BAR_ERR_RANGE);
    assert_non_null(strstr(M.text, "longer than"));
    free(longpath);

    /* args and a file share one namespace */
    expect_err("model_list: [{model_name: smol, litellm_params: {model: local/s.gguf}}]",
               BAR_ERR_INVALID, "given twice");
}

static void test_unknown_keys(void **st)
{
    (void)st;
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\nfoo: 1\n",
               BAR_ERR_INVALID, "unknown top-level key \"foo\"");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "include: [other.yaml]\n",
               BAR_ERR_INVALID, "\"include\"");
    expect_err("model_list:\n"
               "  - model_name: smol\n"
               "    litellm_params: {model: local/a}\n"
               "    tpm: 100\n",
               BAR_ERR_INVALID, "<memory>:4: model \"smol\": unknown key \"tpm\"");
    /* an unknown key before model_name still names the entry */
    expect_err("model_list:\n"
               "  - rpm: 1\n"
               "    model_name: smol\n"
               "    litellm_params: {model: local/a}\n",
               BAR_ERR_INVALID, "model \"smol\": unknown key \"rpm\"");
    expect_err(one("ctx_size: 100"), BAR_ERR_INVALID,
               "<memory>:5: model \"m\": unknown key \"ctx_size\" in litellm_params");
    expect_err(one("timeout: 0"), BAR_ERR_RANGE, "timeout must be > 0 and <= 86400");
    expect_err(one("timeout: -1"), BAR_ERR_RANGE, "timeout");
    expect_err(one("timeout: 100000"), BAR_ERR_RANGE, "timeout");
    expect_err(one("timeout: soon"), BAR_ERR_FORMAT, "timeout must be a number");
    expect_err(one("TEMPERATURE: 1"), BAR_ERR_INVALID, "\"TEMPERATURE\"");
    /* merge keys are not supported: an unknown key */
    expect_err("defaults: &d {model: local/a}\n"
               "model_list:\n"
               "  - model_name: a\n"
               "    litellm_params:\n"
               "      <<: *d\n",
               BAR_ERR_INVALID, "unknown top-level key \"defaults\"");
    expect_err("model_list:\n"
               "  - model_name: a\n"
               "    litellm_params:\n"
               "      model: local/a\n"
               "      <<: {ctx: 4}\n",
               BAR_ERR_INVALID, "unknown key \"<<\"");
    /* a key twice */
    expect_err(one("model: local/b.gguf"), BAR_ERR_INVALID, "key \"model\" given twice");
    expect_err("model_list:\n"
               "  - model_name: a\n"
               "    model_name: b\n"
               "    litellm_params: {model: local/a}\n",
               BAR_ERR_INVALID, "<memory>:3: model \"a\": key \"model_name\" given twice");
    expect_err("model_list:\n"
               "  - model_name: a\n"
               "    litellm_params: {model: local/a, ctx: 32, ctx: 64}\n",
               BAR_ERR_INVALID, "\"ctx\" given twice");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "model_list: [{model_name: b, litellm_params: {model: local/b}}]\n",
               BAR_ERR_INVALID, "model_list given twice");
    /* a non-scalar key */
    expect_err("model_list:\n"
               "  - model_name: a\n"
               "    litellm_params: {model: local/a, [x]: 1}\n",
               BAR_ERR_FORMAT, "keys must be plain strings");
}

static void test_upstream(void **st)
{
    (void)st;
    /* providers other than openai/ and hosted_vllm/ stay refused */
    static const char *models[] = {"gpt-4o", "ollama/llama3", "locals/x.gguf", "local"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char y[256];
        snprintf(y, sizeof y,
                 "model_list:\n  - model_name: up\n    litellm_params:\n      model: %s\n",
                 models[i]);
        expect_err(y, BAR_ERR_UNSUPPORTED, "other providers are not supported");
        assert_non_null(strstr(M.text, "model \"up\""));
        assert_non_null(strstr(M.text, "<memory>:4:"));
    }
    /* upstream keys on a local model */
    expect_err(one("api_base: http://localhost:8000/v1"), BAR_ERR_INVALID,
               "model \"m\": api_base, api_key, rpm, tpm, weight and max_parallel_requests "
               "belong to an upstream");
    expect_err(one("api_key: os.environ/OPENAI_API_KEY"), BAR_ERR_INVALID, "belong to an upstream");
    expect_err(one("api_version: 2024-01-01"), BAR_ERR_UNSUPPORTED,
               "litellm_params.api_version is not supported");
    /* an upstream needs api_base; local-engine keys do not apply */
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/x}\n",
               BAR_ERR_INVALID, "<memory>:3: model \"up\": an upstream model needs");
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/x, "
               "api_base: http://h:1, ctx: 64}\n",
               BAR_ERR_INVALID, "litellm_params.ctx does not apply to an upstream");
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/, "
               "api_base: http://h:1}\n",
               BAR_ERR_INVALID, "needs the upstream's model name");
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/x, "
               "api_base: ftp://h}\n",
               BAR_ERR_INVALID, "must start with http:// or https://");
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/x, "
               "api_base: http://h, weight: 0}\n",
               BAR_ERR_RANGE, "weight must be > 0");
    expect_err("model_list:\n  - model_name: up\n    litellm_params: {model: openai/x, "
               "api_base: http://h, api_base: http://i}\n",
               BAR_ERR_INVALID, "\"api_base\" given twice");
    /* a local entry and an upstream one cannot share a name */
    expect_err("model_list:\n"
               "  - model_name: g\n    litellm_params: {model: openai/x, api_base: http://a}\n"
               "  - model_name: g\n    litellm_params: {model: local/g.gguf}\n",
               BAR_ERR_INVALID, "must all be upstreams");
    expect_err("model_list:\n"
               "  - model_name: g\n    litellm_params: {model: local/g.gguf}\n"
               "  - model_name: g\n    litellm_params: {model: openai/x, api_base: http://a}\n",
               BAR_ERR_INVALID, "model_name given twice");
    /* router_settings */
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "router_settings: {routing_strategy: usage-based-routing}\n",
               BAR_ERR_UNSUPPORTED, "routing_strategy \"usage-based-routing\" is not supported");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "router_settings: {num_retriez: 1}\n",
               BAR_ERR_INVALID, "<memory>:2: router_settings: unknown key \"num_retriez\"");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "router_settings: {allowed_fails: 0}\n",
               BAR_ERR_RANGE, "allowed_fails must be");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "router_settings: {health_check_interval: 0.01}\n",
               BAR_ERR_RANGE, "health_check_interval must be 0 (off) or 0.1..3600");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "router_settings: {hedging: yes}\n",
               BAR_ERR_FORMAT, "router_settings.hedging must be true or false");
    assert_int_equal(L.n_ups, 0);
    assert_int_equal(L.has_router, 0);
}

static void test_upstream_group(void **st)
{
    (void)st;
    setenv("TEST_UP_KEY", "k-from-env", 1);
    assert_int_equal(load("model_list:\n"
                          "  - model_name: local1\n"
                          "    litellm_params: {model: local/a.gguf}\n"
                          "  - model_name: g\n"
                          "    litellm_params:\n"
                          "      model: openai/served-name\n"
                          "      api_base: http://10.0.0.1:8000/v1\n"
                          "      api_key: os.environ/TEST_UP_KEY\n"
                          "      timeout: 2.5\n"
                          "      temperature: 0.3\n"
                          "      rpm: 600\n"
                          "  - model_name: g\n"
                          "    params: {model: hosted_vllm/other, api_base: https://b.example, "
                          "weight: 3, tpm: 9000, max_parallel_requests: 8}\n"
                          "router_settings:\n"
                          "  routing_strategy: least-busy\n"
                          "  num_retries: 1\n"
                          "  allowed_fails: 4\n"
                          "  cooldown_time: 0.5\n"
                          "  health_check_interval: 2.5\n"
                          "  hedging: true\n"
                          "  fallbacks: [{g: [local1]}]\n"),
                     0);
    assert_int_equal(L.n, 2);
    assert_int_equal(L.v[1].kind, MODEL_KIND_UPSTREAM);
    assert_true(L.v[1].has & MODEL_HAS_TEMPERATURE);
    assert_int_equal(L.n_ups, 2);
    assert_int_equal(L.ups[0].entry, 1);
    assert_int_equal(L.ups[1].entry, 1);
    assert_string_equal(L.ups[0].api_base, "http://10.0.0.1:8000/v1");
    assert_string_equal(L.ups[0].model, "served-name");
    assert_string_equal(L.ups[0].api_key, "os.environ/TEST_UP_KEY"); /* resolved at start */
    assert_true(L.ups[0].timeout == 2.5);
    assert_int_equal(L.ups[0].rpm, 600);
    assert_true(L.ups[0].weight == 1);
    assert_string_equal(L.ups[1].model, "other");
    assert_true(L.ups[1].weight == 3);
    assert_int_equal(L.ups[1].tpm, 9000);
    assert_int_equal(L.ups[1].max_parallel, 8);
    assert_int_equal(L.ups[0].max_parallel, 0);
    assert_int_equal(L.ups[1].line, 12);
    assert_int_equal(L.has_router, 1);
    assert_int_equal(L.router.strategy, ROUTE_LEAST_BUSY);
    assert_int_equal(L.router.num_retries, 1);
    assert_int_equal(L.router.allowed_fails, 4);
    assert_true(L.router.cooldown_time == 0.5);
    assert_true(L.router.health_interval == 2.5);
    assert_int_equal(L.router.hedge, 1);
    /* the same reader took router_settings.fallbacks: g's chain */
    assert_int_equal(L.v[1].n_fallbacks, 1);
    assert_string_equal(L.v[1].fallbacks, "local1");
    assert_int_equal(L.v[0].n_fallbacks, 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_ptr_equal(model_list_find(&L, "g", 1), &L.v[1]);
    /* a failed load leaves the replicas as they were */
    expect_err("model_list:\n"
               "  - model_name: g\n    litellm_params: {model: openai/x, api_base: http://c}\n"
               "  - model_name: bad name\n    litellm_params: {model: local/x}\n",
               BAR_ERR_INVALID, "model_name");
    assert_int_equal(L.n_ups, 2);
}

static void test_ranges(void **st)
{
    (void)st;
    static const char *good[] = {
        "threads: 1",
        "threads: 1024",
        "ctx: 16",
        "ctx: 1048576",
        "parallel: 1",
        "parallel: 1024",
        "temperature: 0",
        "temperature: 2",
        "temperature: 2.0e0",
        "top_p: 0",
        "top_p: 1",
        "top_k: 0",
        "top_k: 2147483647",
        "min_p: 0",
        "min_p: 1.0",
        "repeat_penalty: 0.01",
        "repeat_penalty: 10",
        "presence_penalty: -2",
        "presence_penalty: +2",
        "frequency_penalty: -2",
        "frequency_penalty: 2",
        "max_tokens: 1",
        "max_tokens: 9223372036854775807",
        "seed: 0",
        "seed: 9223372036854775807",
        "temperature: .5",
        "min_p: 1.",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        model_list_free(&L);
        int rc = load(one(good[i]));
        if (rc) print_error("%s: %s\n", good[i], M.text);
        assert_int_equal(rc, 0);
    }
    model_list_free(&L);
    static const struct {
        const char *line, *sub;
    } bad[] = {
        {"threads: 0", "threads must be 1..1024 (got 0)"},
        {"threads: 1025", "threads must be 1..1024"},
        {"ctx: 15", "ctx must be 16..1048576"},
        {"ctx: 1048577", "ctx must be 16..1048576"},
        {"parallel: 0", "parallel must be 1..1024"},
        {"parallel: 1025", "parallel must be 1..1024"},
        {"temperature: -0.1", "temperature must be 0..2"},
        {"temperature: 2.01", "temperature must be 0..2"},
        {"temperature: 1e999", "temperature must be 0..2"},
        {"top_p: 1.5", "top_p must be 0..1"},
        {"top_p: -0.1", "top_p must be 0..1"},
        {"top_k: -1", "top_k must be 0..2147483647"},
        {"top_k: 2147483648", "top_k must be"},
        {"min_p: 1.1", "min_p must be 0..1"},
        {"min_p: -1", "min_p must be 0..1"},
        {"repeat_penalty: 0", "repeat_penalty must be > 0"},
        {"repeat_penalty: -1", "repeat_penalty must be > 0"},
        {"repeat_penalty: 10.5", "repeat_penalty must be > 0 and <= 10"},
        {"presence_penalty: -2.5", "presence_penalty must be -2..2"},
        {"presence_penalty: 2.5", "presence_penalty must be -2..2"},
        {"frequency_penalty: 3", "frequency_penalty must be -2..2"},
        {"frequency_penalty: -3", "frequency_penalty must be -2..2"},
        {"max_tokens: 0", "max_tokens must be >= 1"},
        {"max_tokens: -5", "max_tokens must be >= 1"},
        {"max_tokens: 9223372036854775808", "max_tokens must be >= 1"},
        {"seed: -1", "seed must be >= 0"},
        {"seed: 99999999999999999999999", "seed must be >= 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_err(one(bad[i].line), BAR_ERR_RANGE, bad[i].sub);
        assert_non_null(strstr(M.text, "<memory>:5: model \"m\": "));
    }
}

static void test_types(void **st)
{
    (void)st;
    static const struct {
        const char *line, *sub;
    } bad[] = {
        {"ctx: \"2048\"", "ctx must be an integer, not a quoted string"},
        {"ctx: '2048'", "not a quoted string"},
        {"temperature: \"0.7\"", "temperature must be a number, not a quoted string"},
        {"ctx: 2048.0", "ctx must be an integer (got \"2048.0\")"},
        {"ctx: 1e3", "must be an integer"},
        {"ctx: 0x10", "must be an integer"},
        {"ctx: 1_000", "must be an integer"},
        {"ctx: [1]", "ctx must be an integer"},
        {"ctx: {a: 1}", "ctx must be an integer"},
        {"ctx:", "ctx must be an integer"},
        {"temperature: abc", "temperature must be a number (got \"abc\")"},
        {"temperature: .inf", "must be a number"},
        {"temperature: .nan", "must be a number"},
        {"temperature: inf", "must be a number"},
        {"temperature: 0x1p1", "must be a number"},
        {"temperature: 1e", "must be a number"},
        {"temperature: .", "must be a number"},
        {"temperature: +", "must be a number"},
        {"top_k: 4.5", "must be an integer"},
        {"seed: true", "must be an integer"},
        {"max_tokens: 00000000000000000000000000000000000000000000000000000000000000001",
         "must be an integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(one(bad[i].line), BAR_ERR_FORMAT, bad[i].sub);
    expect_err("model_list:\n  - model_name: m\n    litellm_params: local/m.gguf\n", BAR_ERR_FORMAT,
               "litellm_params must be a mapping");
    expect_err("model_list:\n  - model_name: m\n    litellm_params: {model: [a]}\n", BAR_ERR_FORMAT,
               "litellm_params.model must be a string");
    expect_err("model_list:\n  - model_name: m\n    litellm_params: {model: \"local/a\\0b\"}\n",
               BAR_ERR_FORMAT, "must be a string");
    expect_err("model_list:\n  - model_name: [m]\n    litellm_params: {model: local/a}\n",
               BAR_ERR_FORMAT, "model_name must be a string");
    expect_err("model_list: local/a.gguf\n", BAR_ERR_FORMAT, "model_list must be a sequence");
    expect_err("model_list: {a: 1}\n", BAR_ERR_FORMAT, "model_list must be a sequence");
    expect_err("- model_name: a\n", BAR_ERR_FORMAT, "top level must be a mapping");
    expect_err("just text\n", BAR_ERR_FORMAT, "top level must be a mapping");
    expect_err("model_list:\n  - smol\n", BAR_ERR_FORMAT,
               "<memory>:2: model_list[0]: each model_list item must be a mapping");
    expect_err("model_list:\n  - {model_name: a, litellm_params: {model: local/a}}\n  - [b]\n",
               BAR_ERR_FORMAT, "model_list[1]: each model_list item must be a mapping");
}

static void test_names_and_structure(void **st)
{
    (void)st;
    expect_err("model_list: [{model_name: default, litellm_params: {model: local/a}}]",
               BAR_ERR_INVALID, "model_name \"default\" is reserved");
    expect_err("model_list: [{model_name: \"\", litellm_params: {model: local/a}}]",
               BAR_ERR_INVALID, "is empty");
    expect_err("model_list: [{model_name: , litellm_params: {model: local/a}}]", BAR_ERR_FORMAT,
               "model_list[0]: model_name must be a string");
    expect_err("model_list: [{model_name: \"my model\", litellm_params: {model: local/a}}]",
               BAR_ERR_INVALID, "model_list[0]: model_name \"my model\" has a character outside");
    expect_err("model_list: [{model_name: \"caf\xc3\xa9\", litellm_params: {model: local/a}}]",
               BAR_ERR_INVALID, "model_name \"caf??\" has a character outside");
    char y[512], name[200];
    memset(name, 'n', 128);
    name[128] = '\0';
    snprintf(y, sizeof y, "model_list: [{model_name: %s, litellm_params: {model: local/a}}]", name);
    expect_err(y, BAR_ERR_INVALID, "longer than 127 characters");
    name[127] = '\0';
    snprintf(y, sizeof y, "model_list: [{model_name: %s, litellm_params: {model: local/a}}]", name);
    assert_int_equal(load(y), 0);
    assert_non_null(model_list_find(&L, name, 127));
    model_list_free(&L);

    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a}}\n"
               "  - {model_name: b, litellm_params: {model: local/b}}\n"
               "  - {model_name: a, litellm_params: {model: local/c}}\n",
               BAR_ERR_INVALID,
               "<memory>:4: model \"a\": model_name given twice (first at line 2)");
    expect_err("model_list: [{litellm_params: {model: local/a}}]", BAR_ERR_INVALID,
               "model_list[0]: no model_name");
    expect_err("model_list: [{model_name: a}]", BAR_ERR_INVALID, "model \"a\": no litellm_params");
    expect_err("model_list: [{model_name: a, litellm_params: {ctx: 64}}]", BAR_ERR_INVALID,
               "model \"a\": litellm_params has no model");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/}}]", BAR_ERR_INVALID,
               "\"local/\" has no path");
    expect_err("model_list: []\n", BAR_ERR_INVALID, "<memory>:1: model_list is empty");
    expect_err("model_list:\n", BAR_ERR_INVALID, "model_list is empty");
    expect_err("litellm_settings: {drop_params: true}\n", BAR_ERR_INVALID, "no model_list");
    expect_err("", BAR_ERR_FORMAT, "<memory>: empty file");
    expect_err("# only a comment\n", BAR_ERR_FORMAT, "empty file");
    expect_err("model_list: [{model_name: a, litellm_params: {model: local/a}}]\n"
               "---\n"
               "model_list: [{model_name: b, litellm_params: {model: local/b}}]\n",
               BAR_ERR_FORMAT, "second YAML document");

    /* finish on an empty list */
    assert_int_equal(model_list_finish(&L, &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "no models configured"));

    /* too many entries */
    size_t cap = (MODEL_LIST_MAX + 2) * 64, n = 0;
    char *big = malloc(cap);
    n += (size_t)snprintf(big + n, cap - n, "model_list:\n");
    for (int i = 0; i <= MODEL_LIST_MAX; i++)
        n += (size_t)snprintf(big + n, cap - n,
                              "  - {model_name: m%d, litellm_params: {model: local/x}}\n", i);
    expect_err(big, BAR_ERR_RANGE, "more than 1024 models");
    free(big);
}

static void test_paths(void **st)
{
    (void)st;
    const char *y = "model_list:\n"
                    "  - {model_name: rel, litellm_params: {model: local/models/a.gguf}}\n"
                    "  - {model_name: dot, litellm_params: {model: local/../b.gguf}}\n"
                    "  - {model_name: abs, litellm_params: {model: local//opt/c.gguf}}\n";
    assert_int_equal(model_list_load_mem(&L, y, strlen(y), "/srv/cfg", &M), 0);
    assert_string_equal(L.v[0].path, "/srv/cfg/models/a.gguf");
    assert_string_equal(L.v[1].path, "/srv/cfg/../b.gguf");
    assert_string_equal(L.v[2].path, "/opt/c.gguf");
    model_list_free(&L);
    assert_int_equal(model_list_load_mem(&L, y, strlen(y), "/srv/cfg/", &M), 0);
    assert_string_equal(L.v[0].path, "/srv/cfg/models/a.gguf");
    model_list_free(&L);
    assert_int_equal(model_list_load_mem(&L, y, strlen(y), "cfg", &M), 0);
    assert_string_equal(L.v[0].path, "cfg/models/a.gguf");
    model_list_free(&L);
    assert_int_equal(model_list_load_mem(&L, y, strlen(y), "", &M), 0);
    assert_string_equal(L.v[0].path, "models/a.gguf");
    model_list_free(&L);
    assert_int_equal(model_list_load_mem(&L, y, strlen(y), NULL, &M), 0);
    assert_string_equal(L.v[0].path, "models/a.gguf");
    assert_string_equal(L.v[2].path, "/opt/c.gguf");
    model_list_free(&L);

    /* a resolved path that does not fit */
    char *base = malloc(MODEL_PATH_MAX);
    memset(base, 'd', MODEL_PATH_MAX - 10);
    base[MODEL_PATH_MAX - 10] = '\0';
    const char *s = "model_list: [{model_name: a, litellm_params: {model: local/abcdefghij}}]";
    assert_int_equal(model_list_load_mem(&L, s, strlen(s), base, &M), BAR_ERR_RANGE);
    assert_non_null(strstr(M.text, "model \"a\": model path is longer than 4095 bytes"));
    assert_int_equal(L.n, 0);
    free(base);
}

static void test_load_file(void **st)
{
    (void)st;
    char dir[] = "/tmp/barista_ml_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], path2[256];
    snprintf(path, sizeof path, "%s/models.yaml", dir);
    snprintf(path2, sizeof path2, "%s/bad.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(full_yaml, f);
    fclose(f);
    f = fopen(path2, "w");
    assert_non_null(f);
    fputs("model_list:\n"
          "  - model_name: x\n"
          "    litellm_params:\n"
          "      model: local/x.gguf\n"
          "      threads: 0\n",
          f);
    fclose(f);

    assert_int_equal(model_list_add_arg(&L, "cli=cli.gguf", &M), 0);
    assert_int_equal(model_list_load_file(&L, path, &M), 0);
    assert_int_equal(L.n, 3);
    char want[300];
    snprintf(want, sizeof want, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
    assert_string_equal(L.v[1].path, want);
    assert_string_equal(L.v[2].path, "/abs/path.gguf");
    assert_string_equal(L.v[0].path, "cli.gguf");
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 1);

    /* the error names the file and line, and leaves the list as it was */
    assert_int_equal(model_list_load_file(&L, path2, &M), BAR_ERR_RANGE);
    char sub[300];
    snprintf(sub, sizeof sub, "%s:5: model \"x\": threads must be 1..1024", path2);
    assert_non_null(strstr(M.text, sub));
    assert_int_equal(L.n, 3);
    /* loading the same file twice: its names are taken */
    assert_int_equal(model_list_load_file(&L, path, &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "given twice"));
    assert_non_null(strstr(M.text, path));
    assert_int_equal(L.n, 3);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.yaml", dir);
    assert_int_equal(model_list_load_file(&L, missing, &M), BAR_ERR_IO);
    assert_non_null(strstr(M.text, missing));
    assert_non_null(strstr(M.text, "cannot open"));
    assert_int_equal(model_list_load_file(&L, dir, &M), BAR_ERR_IO); /* a folder */
    assert_int_equal(L.n, 3);

    unlink(path);
    unlink(path2);
    rmdir(dir);
}

static void test_garbage(void **st)
{
    (void)st;
    /* every prefix of a valid file: accepted or a clean error, list unchanged on error */
    size_t n = strlen(full_yaml);
    int accepted = 0;
    for (size_t i = 0; i <= n; i++) {
        model_list_t l = {0};
        bar_msg_t m = {{0}};
        int rc = model_list_load_mem(&l, full_yaml, i, "/b", &m);
        if (rc == 0) {
            accepted++;
            assert_true(l.n >= 1);
            assert_string_equal(l.v[0].name, "smol");
        } else {
            assert_true(rc < 0);
            assert_true(m.text[0] != '\0');
            assert_int_equal(l.n, 0);
        }
        model_list_free(&l);
    }
    assert_true(accepted > 0);

    expect_err("model_list: [", BAR_ERR_FORMAT, "<memory>:2: bad YAML: did not find expected node");
    expect_err("model_list:\n  - model_name: a\n    litellm_params: {model: local/a\n",
               BAR_ERR_FORMAT, "bad YAML");
    expect_err("a: b: c\n", BAR_ERR_FORMAT, "bad YAML");
    expect_err("model_list:\n\t- x\n", BAR_ERR_FORMAT, "<memory>:2: bad YAML");
    expect_err("model_list: *nope\n", BAR_ERR_FORMAT, "bad YAML");
    expect_err("\x01\xff\xfe{[", BAR_ERR_FORMAT, "<memory>: bad YAML");
    expect_err("model_list: [{model_name: \"\xff\"}]", BAR_ERR_FORMAT, "bad YAML");
    const char nul[] = "model_list:\0 []";
    assert_true(model_list_load_mem(&L, nul, sizeof nul - 1, NULL, &M) < 0);
    assert_int_equal(L.n, 0);
    /* aliases resolve; a self-referencing one cannot make the walk loop */
    assert_int_equal(load("p: &p {model: local/a.gguf}\n"), BAR_ERR_INVALID);
    expect_err("model_list: &l [*l]\n", BAR_ERR_FORMAT, "must be a mapping");
    expect_err("model_list:\n"
               "  - &e {model_name: a, litellm_params: {model: local/a}}\n"
               "  - *e\n",
               BAR_ERR_INVALID, "given twice");
    assert_int_equal(load("model_list:\n"
                          "  - {model_name: a, litellm_params: &p {model: local/a, ctx: 64}}\n"
                          "  - {model_name: b, litellm_params: *p}\n"),
                     0);
    assert_int_equal(L.v[1].ctx, 64);
}

static void test_find(void **st)
{
    (void)st;
    assert_null(model_list_find(&L, "default", 7));
    assert_null(model_list_find(&L, "smol", 4));
    assert_int_equal(load(full_yaml), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_ptr_equal(model_list_find(&L, "default", 7), &L.v[0]);
    assert_ptr_equal(model_list_find(&L, "smol", 4), &L.v[0]);
    assert_ptr_equal(model_list_find(&L, "other", 5), &L.v[1]);
    assert_ptr_equal(model_list_find(&L, "smolXYZ", 4), &L.v[0]); /* a slice */
    assert_ptr_equal(model_list_find(&L, "defaultX", 7), &L.v[0]);
    assert_null(model_list_find(&L, "smo", 3));
    assert_null(model_list_find(&L, "smoll", 5));
    assert_null(model_list_find(&L, "SMOL", 4));
    assert_null(model_list_find(&L, "", 0));
    assert_null(model_list_find(&L, "defaults", 8));
    model_list_free(&L);
    assert_null(L.v);
    assert_int_equal(L.n, 0);
    model_list_free(&L); /* twice is fine */
}

/* model_info.mode: embedding entries, their defaults, what they refuse. */
static void test_embedding_mode(void **st)
{
    (void)st;
    const char *y = "model_list:\n"
                    "  - model_name: e1\n"
                    "    litellm_params: {model: local/models/all-MiniLM-L6-v2, threads: 1}\n"
                    "    model_info: {mode: embedding}\n"
                    "  - model_name: smol\n"
                    "    litellm_params: {model: local/smol.gguf}\n"
                    "    model_info: {mode: chat}\n"
                    "  - model_name: e2\n"
                    "    litellm_params: {model: local/e2}\n"
                    "    model_info: {mode: embedding, default: true}\n"
                    "  - model_name: c2\n"
                    "    litellm_params: {model: local/c2.gguf}\n"
                    "    model_info: {mode: completion}\n";
    assert_int_equal(load(y), 0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.n, 4);
    assert_int_equal(L.v[0].mode, MODEL_MODE_EMBEDDING);
    assert_int_equal(L.v[0].threads, 1);
    assert_string_equal(L.v[0].path, "models/all-MiniLM-L6-v2");
    assert_int_equal(L.v[1].mode, MODEL_MODE_CHAT);
    assert_int_equal(L.v[3].mode, MODEL_MODE_CHAT);
    assert_int_equal(L.default_idx, 1); /* the first chat entry, not entry 0 */
    assert_int_equal(L.embed_idx, 2);   /* the embedding entry marked default */
    assert_string_equal(model_list_find(&L, "default", 7)->name, "smol");
    assert_true(model_list_has_embedding(&L));
    model_list_free(&L);

    /* one default per mode: a chat default and an embedding default coexist */
    assert_int_equal(
        load("model_list:\n"
             "  - {model_name: e, litellm_params: {model: local/e}, default: true,"
             " model_info: {mode: embedding}}\n"
             "  - {model_name: c, litellm_params: {model: local/c.gguf}, default: true}\n"),
        0);
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.default_idx, 1);
    assert_int_equal(L.embed_idx, 0);
    model_list_free(&L);

    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a}, default: true,"
               " model_info: {mode: embedding}}\n"
               "  - {model_name: b, litellm_params: {model: local/b}, default: true,"
               " model_info: {mode: embedding}}\n",
               BAR_ERR_INVALID, "more than one default embedding model (\"a\"");
    expect_err(
        "model_list:\n"
        "  - {model_name: a, litellm_params: {model: local/a}, model_info: {mode: rerank}}\n",
        BAR_ERR_UNSUPPORTED, "model_info.mode \"rerank\" is not supported");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a}, model_info: {mode: [x]}}\n",
               BAR_ERR_FORMAT, "model_info.mode must be a string");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a, temperature: 0.5},"
               " model_info: {mode: embedding}}\n",
               BAR_ERR_INVALID, "litellm_params.temperature does not apply to an embedding model");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a, ctx: 512},"
               " model_info: {mode: embedding}}\n",
               BAR_ERR_INVALID, "litellm_params.ctx does not apply");
    expect_err("model_list:\n"
               "  - {model_name: a, litellm_params: {model: local/a},"
               " model_info: {mode: embedding, mode: chat}}\n",
               BAR_ERR_INVALID, "given twice");

    /* embedding entries only: no chat model to serve */
    assert_int_equal(load("model_list:\n"
                          "  - {model_name: e, litellm_params: {model: local/e},"
                          " model_info: {mode: embedding}}\n"),
                     0);
    assert_int_equal(model_list_finish(&L, &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "no chat/completion model"));
}

/* --embedding-model: the folder, its name, the file form. */
static void test_add_embedding(void **st)
{
    (void)st;
    assert_int_equal(model_list_add_arg(&L, "m.gguf", &M), 0);
    assert_int_equal(model_list_add_embedding(&L, "/x/models/all-MiniLM-L6-v2", &M), 0);
    assert_int_equal(model_list_add_embedding(&L, "/y/mini/model.safetensors", &M), 0);
    assert_int_equal(model_list_add_embedding(&L, "other=rel/dir/", &M), 0);
    assert_int_equal(model_list_add_embedding(&L, "=/x/dir", &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "--embedding-model"));
    assert_int_equal(model_list_finish(&L, &M), 0);
    assert_int_equal(L.n, 4);
    assert_string_equal(L.v[1].name, "all-MiniLM-L6-v2");
    assert_string_equal(L.v[1].path, "/x/models/all-MiniLM-L6-v2");
    assert_int_equal(L.v[1].mode, MODEL_MODE_EMBEDDING);
    assert_string_equal(L.v[2].name, "mini");
    assert_string_equal(L.v[2].path, "/y/mini");
    assert_string_equal(L.v[3].name, "other");
    assert_string_equal(L.v[3].path, "rel/dir");
    assert_int_equal(L.v[0].mode, MODEL_MODE_CHAT);
    assert_int_equal(L.default_idx, 0);
    assert_int_equal(L.embed_idx, 1);
    /* names are shared across modes */
    assert_int_equal(model_list_add_embedding(&L, "m=/z", &M), BAR_ERR_INVALID);
    assert_non_null(strstr(M.text, "given twice"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_litellm_full),
        T(test_flow_style),
        T(test_defaults),
        T(test_default_selection),
        T(test_add_arg),
        T(test_unknown_keys),
        T(test_upstream),
        T(test_upstream_group),
        T(test_ranges),
        T(test_types),
        T(test_names_and_structure),
        T(test_paths),
        T(test_load_file),
        T(test_garbage),
        T(test_find),
        T(test_embedding_mode),
        T(test_add_embedding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
