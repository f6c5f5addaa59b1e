/* test_openai.c — OpenAI request validation and response objects
 * (src/api/openai.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "api/openai.h"

static int parse(oai_req_t *r, oai_kind_t k, const char *body, oai_err_t *e)
{
    return oai_parse_request(r, k, body, strlen(body), e);
}

static void test_chat_ok(void **st)
{
    (void)st;
    oai_req_t r;
    oai_err_t e;
    const char *b =
        "{\"model\":\"default\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi \"},"
        "{\"type\":\"text\",\"text\":\"there\"}]}],\"max_tokens\":8,\"temperature\":0,"
        "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"seed\":42,\"stop\":[\"a\",\"b\"],"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"n\":1,\"user\":\"u\","
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"logprobs\":true,\"top_logprobs\":3,\"unknown_field\":{\"x\":1}}";
    assert_int_equal(parse(&r, OAI_CHAT, b, &e), 0);
    assert_string_equal(r.model, "default");
    assert_int_equal(r.n_msgs, 2);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[1].content, "hi there");
    assert_int_equal(r.msgs[1].content_len, 8);
    assert_int_equal(r.max_tokens, 8);
    assert_true(r.temperature == 0.0);
    assert_int_equal(r.top_k, 40);
    assert_true(r.has_seed);
    assert_int_equal(r.seed, 42);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "b");
    assert_true(r.stream && r.include_usage && r.logprobs);
    assert_int_equal(r.top_logprobs, 3);
    oai_req_free(&r);
}

static void test_defaults(void **st)
{
    (void)st;
    oai_req_t r;
    oai_err_t e;
    assert_int_equal(parse(&r, OAI_COMPLETION, "{\"prompt\":[\"once\"]}", &e), 0);
    assert_string_equal(r.prompt, "once");
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.temperature == 1.0 && r.top_p == 1.0);
    assert_false(r.stream);
    assert_false(r.logprobs);
    oai_req_free(&r);
    assert_int_equal(parse(&r, OAI_COMPLETION,
                           "{\"prompt\":\"x\",\"max_completion_tokens\":3,"
                           "\"logprobs\":2,\"stop\":\"\\n\"}",
                           &e),
                     0);
    assert_int_equal(r.max_tokens, 3);
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 2);
    assert_int_equal(r.n_stop, 1);
    oai_req_free(&r);
}

typedef struct {
    oai_kind_t kind;
    const char *body;
    int status;
    const char *param; /* NULL = null */
} bad_t;

static const bad_t bad[] = {
    {OAI_CHAT, "", 400, NULL},
    {OAI_CHAT, "{", 400, NULL},
    {OAI_CHAT, "{\"messages\":[}", 400, NULL},
    {OAI_CHAT, "[1,2]", 400, NULL},
    {OAI_CHAT, "\"str\"", 400, NULL},
    {OAI_CHAT, "null", 400, NULL},
    {OAI_CHAT, "{\"messages\":[]} trailing", 400, NULL},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],}", 400, NULL},
    {OAI_CHAT, "{'messages':[]}", 400, NULL},
    {OAI_CHAT, "{}", 400, "messages"},
    {OAI_CHAT, "{\"messages\":{}}", 400, "messages"},
    {OAI_CHAT, "{\"messages\":[]}", 400, "messages"},
    {OAI_CHAT, "{\"messages\":[1]}", 400, "messages[0]"},
    {OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
     "\"image_url\":{\"url\":\"x\"}}]}]}",
     400, "messages[0].content[0].type"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
     "messages[0].content[0].text"},
    {OAI_CHAT, "{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "model"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}",
     400, "temperature"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", 400,
     "temperature"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":1.5}", 400,
     "top_p"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", 400,
     "max_tokens"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2.5}", 400,
     "max_tokens"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":-1}", 400,
     "max_completion_tokens"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", 400, "n"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\","
     "\"e\"]}",
     400, "stop"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", 400,
     "stop[0]"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", 400,
     "stream"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":"
     "{\"include_usage\":true}}",
     400, "stream_options"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400,
     "top_logprobs"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
     "\"top_logprobs\":21}",
     400, "top_logprobs"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":\"s\"}", 400,
     "seed"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"presence_penalty\":-3}",
     400, "presence_penalty"},
    {OAI_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
     "\"function\"}]}",
     400, "tools"},
    {OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"user\":1}", 400, "user"},
    {OAI_COMPLETION, "{}", 400, "prompt"},
    {OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt"},
    {OAI_COMPLETION, "{\"prompt\":[1,2]}", 400, "prompt"},
    {OAI_COMPLETION, "{\"prompt\":[5]}", 400, "prompt[0]"},
    {OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs"},
    {OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":6}", 400, "logprobs"},
    {OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", 400, "echo"},
};

static void test_bad_requests(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        oai_req_t r;
        oai_err_t e;
        memset(&e, 0, sizeof e);
        int rc = parse(&r, bad[i].kind, bad[i].body, &e);
        if (rc != -bad[i].status || strcmp(e.param, bad[i].param ? bad[i].param : ""))
            fail_msg("case %zu (%s): rc %d param '%s' msg '%s'", i, bad[i].body, rc, e.param,
                     e.message);
        assert_string_equal(e.type, "invalid_request_error");
        assert_true(e.message[0] != '\0');
        buf_t b = {0};
        oai_error_body(&b, &e);
        cJSON *j = cJSON_Parse(b.p);
        assert_non_null(j);
        cJSON *err = cJSON_GetObjectItem(j, "error");
        assert_non_null(cJSON_GetObjectItem(err, "message"));
        assert_non_null(cJSON_GetObjectItem(err, "param"));
        assert_non_null(cJSON_GetObjectItem(err, "code"));
        cJSON_Delete(j);
        buf_free(&b);
        oai_req_free(&r);
    }
}

/* cache_salt: a string of at most 256 bytes, kept as given */
static void test_cache_salt(void **st)
{
    (void)st;
    char body[1024], salt[300];
    oai_req_t r;
    oai_err_t e;
    for (int n = 255; n <= 257; n++) {
        memset(salt, 's', (size_t)n);
        salt[n] = 0;
        snprintf(body, sizeof body, "{\"prompt\":\"x\",\"cache_salt\":\"%s\"}", salt);
        memset(&e, 0, sizeof e);
        int rc = parse(&r, OAI_COMPLETION, body, &e);
        if (n <= 256) {
            assert_int_equal(rc, 0);
            assert_string_equal(r.cache_salt, salt);
        } else {
            assert_int_equal(rc, -400);
            assert_string_equal(e.param, "cache_salt");
            assert_non_null(strstr(e.message, "256"));
        }
        oai_req_free(&r);
    }
    memset(&e, 0, sizeof e);
    assert_int_equal(parse(&r, OAI_COMPLETION, "{\"prompt\":\"x\",\"cache_salt\":5}", &e), -400);
    assert_string_equal(e.param, "cache_salt");
    oai_req_free(&r);
}

static void test_json_string(void **st)
{
    (void)st;
    buf_t b = {0};
    oai_json_string(&b, "a\"b\\c\n\x01\xc3\xa9\xff\xe2\x82", 12);
    assert_string_equal(b.p,
                        "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
    buf_free(&b);
}

static void test_format(void **st)
{
    (void)st;
    oai_resp_t r = {.kind = OAI_CHAT, .id = "chatcmpl-1", .created = 123, .model = "m"};
    oai_usage_t u = {5, 2, 1};
    buf_t b = {0};
    oai_format_response(&b, &r, "hi", 2, OAI_FINISH_LENGTH, &u, NULL, 0, 0);
    cJSON *j = cJSON_Parse(b.p);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion");
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "length");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "content")->valuestring, "hi");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint,
                     7);
    cJSON_Delete(j);
    buf_clear(&b);

    lp_alt_t tops[] = {{"a", 1, -0.1}, {"b", 1, -2.0}};
    lp_tok_t lp = {"a", 1, -0.1, 2, tops};
    oai_format_chunk(&b, &r, 0, "a", 1, OAI_FINISH_NONE, NULL, &lp, 1, 1);
    assert_memory_equal(b.p, "data: ", 6);
    assert_memory_equal(b.p + b.n - 2, "\n\n", 2);
    j = cJSON_Parse(b.p + 6);
    assert_non_null(j);
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content")->valuestring, "a");
    cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(lc), 1);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(lc, 0), "top_logprobs")), 2);
    cJSON_Delete(j);
    buf_clear(&b);

    oai_format_chunk(&b, &r, 0, NULL, 0, OAI_FINISH_NONE, &u, NULL, 0, 0);
    j = cJSON_Parse(b.p + 6);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
    assert_non_null(cJSON_GetObjectItem(j, "usage"));
    cJSON_Delete(j);
    buf_clear(&b);

    oai_resp_t rc = {.kind = OAI_COMPLETION, .id = "cmpl-1", .created = 1, .model = "m"};
    oai_format_response(&b, &rc, "x", 1, OAI_FINISH_STOP, &u, &lp, 1, 1);
    j = cJSON_Parse(b.p);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion");
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(ch, "text")->valuestring, "x");
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "token_logprobs"));
    cJSON_Delete(j);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_ok),      cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bad_requests), cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_format),       cmocka_unit_test(test_cache_salt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
