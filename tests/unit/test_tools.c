/* test_tools.c — the tool-call side of the API (src/api/tools.c): requests
 * with tools become a system text, a forced choice a schema; history
 * messages are rendered; generated texts are read back as calls (or not);
 * the streamed chunks reassemble to the message's calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "api/tools.h"

#define TOOL                                                                                       \
    "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"                \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"                        \
    "\"required\":[\"city\"]}}}"

static void test_request(void **state)
{
    (void)state;
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":\"hi\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c\","
                       "\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                       "\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"12C\"}],"
                       "\"tools\":[" TOOL "],\"tool_choice\":\"required\","
                       "\"parallel_tool_calls\":false}";
    oai_req_t r;
    oai_err_t e;
    assert_int_equal(oai_parse_request(&r, OAI_CHAT, body, strlen(body), &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_FORCED);
    assert_int_equal(r.n_msgs, 4);
    assert_non_null(strstr(r.msgs[0].content, "<tools>\n" TOOL "\n</tools>"));
    assert_non_null(strstr(r.msgs[0].content, "Be brief."));
    assert_string_equal(r.msgs[2].content,
                        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}"
                        "\n</tool_call>");
    assert_string_equal(r.msgs[3].role, "user");
    assert_string_equal(r.msgs[3].content, "<tool_response>\n12C\n</tool_response>");
    /* one call (parallel_tool_calls false), its arguments the function's schema */
    assert_non_null(r.constraint);
    assert_non_null(strstr(r.constraint, "\"const\":\"get_weather\""));
    assert_null(strstr(r.constraint, "\"array\""));
    oai_req_free(&r);
    /* none: no tools text, no constraint */
    const char *none = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[" TOOL
                       "],\"tool_choice\":\"none\"}";
    assert_int_equal(oai_parse_request(&r, OAI_CHAT, none, strlen(none), &e), 0);
    assert_int_equal(r.tool_mode, TOOLS_NONE);
    assert_int_equal(r.n_msgs, 1);
    assert_null(r.constraint);
    oai_req_free(&r);
    /* the forced schema, exactly (written from the parameters' text) */
    const char *two = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[" TOOL
                      ",{\"type\":\"function\",\"function\":{\"name\":\"noop\"}}],"
                      "\"tool_choice\":\"required\"}";
    assert_int_equal(oai_parse_request(&r, OAI_CHAT, two, strlen(two), &e), 0);
    assert_string_equal(
        r.constraint,
        "{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"name\":{"
        "\"const\":\"get_weather\"},\"arguments\":{\"type\":\"object\",\"properties\":{\"city\":{"
        "\"type\":\"string\"}},\"required\":[\"city\"]}},\"required\":[\"name\",\"arguments\"],"
        "\"additionalProperties\":false},{\"type\":\"object\",\"properties\":{\"name\":{\"const\":"
        "\"noop\"},\"arguments\":{\"type\":\"object\"}},\"required\":[\"name\",\"arguments\"],"
        "\"additionalProperties\":false}]},\"minItems\":1,\"maxItems\":4}");
    oai_req_free(&r);
    /* a bad tool: its parameter and function named in the 400 */
    const char *bad = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[" TOOL
                      ",{\"type\":\"function\",\"function\":{\"name\":\"g\",\"parameters\":{"
                      "\"type\":\"string\",\"pattern\":\"x\"}}}]}";
    assert_int_not_equal(oai_parse_request(&r, OAI_CHAT, bad, strlen(bad), &e), 0);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.param, "tools[1].function.parameters");
    assert_non_null(strstr(e.message, "Invalid schema for function 'g': "));
    assert_non_null(strstr(e.message, "pattern"));
    oai_req_free(&r);
    const char *badtype = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[" TOOL
                          ",{\"type\":\"web\"}]}";
    assert_int_not_equal(oai_parse_request(&r, OAI_CHAT, badtype, strlen(badtype), &e), 0);
    assert_string_equal(e.param, "tools[1].type");
    assert_string_equal(e.message, "Invalid 'tools[1].type': only 'function' tools are supported.");
    oai_req_free(&r);
}

static void test_read(void **state)
{
    (void)state;
    tools_call_t *c;
    int n;
    const char *one = "{\"name\":\"f\",\"arguments\":{\"a\":1}}";
    assert_int_equal(tools_read(TOOLS_FORCED, one, strlen(one), &c, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].name, "f");
    assert_string_equal(c[0].args, "{\"a\":1}");
    tools_calls_free(c, n);
    const char *arr =
        "[{\"name\":\"f\",\"arguments\":{}},{\"name\":\"g\",\"arguments\":{\"b\":[]}}]";
    assert_int_equal(tools_read(TOOLS_FORCED, arr, strlen(arr), &c, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(c[1].args, "{\"b\":[]}");
    tools_calls_free(c, n);
    const char *cut = "{\"name\":\"f\",\"argu";
    assert_int_equal(tools_read(TOOLS_FORCED, cut, strlen(cut), &c, &n), -1);
    const char *a = "\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"y\"}}\n</tool_call>"
                    "<tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>";
    assert_int_equal(tools_read(TOOLS_AUTO, a, strlen(a), &c, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(c[0].args, "{\"x\":\"y\"}");
    tools_calls_free(c, n);
    const char *prose = "Sure! <tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>";
    assert_int_equal(tools_read(TOOLS_AUTO, prose, strlen(prose), &c, &n), -1);
    assert_int_equal(tools_read(TOOLS_NONE, one, strlen(one), &c, &n), -1);
    assert_int_equal(tools_may_be_call(TOOLS_AUTO, "  <tool", 7), 1);
    assert_int_equal(tools_may_be_call(TOOLS_AUTO, "<tool_call>{", 12), 1);
    assert_int_equal(tools_may_be_call(TOOLS_AUTO, "Hi", 2), 0);
    assert_int_equal(tools_may_be_call(TOOLS_FORCED, "x", 1), 1);
}

/* Auto mode (a model's free text): every call is read, however many, and
 * each call's arguments are the bytes the model wrote (without whitespace
 * outside strings, as forced calls), not cJSON's reprint of them: a big
 * integer id or a number's spelling stays as generated. */
static void test_read_auto_exact(void **state)
{
    (void)state;
    tools_call_t *c;
    int n;
    const char *big = "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"id\": "
                      "12345678901234567890, \"x\": 1.50, \"s\": \"a  b\"}}\n</tool_call>";
    assert_int_equal(tools_read(TOOLS_AUTO, big, strlen(big), &c, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].args, "{\"id\":12345678901234567890,\"x\":1.50,\"s\":\"a  b\"}");
    tools_calls_free(c, n);
    /* text after the call's JSON, inside its tags or after a forced call: not
     * calls (content), never the text dropped */
    const char *trail = "<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":1}} and I think that "
                        "is all</tool_call>";
    assert_int_equal(tools_read(TOOLS_AUTO, trail, strlen(trail), &c, &n), -1);
    const char *ftrail = "{\"name\":\"f\",\"arguments\":{\"a\":1}} done";
    assert_int_equal(tools_read(TOOLS_FORCED, ftrail, strlen(ftrail), &c, &n), -1);
    const char *fws = "{\"name\":\"f\",\"arguments\":{\"a\":1}}\n ";
    assert_int_equal(tools_read(TOOLS_FORCED, fws, strlen(fws), &c, &n), 0);
    tools_calls_free(c, n);
    /* 20 calls in one answer: 20 calls, none dropped */
    char many[2048];
    size_t k = 0;
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(
            many + k, sizeof many - k,
            "<tool_call>{\"name\":\"f%d\",\"arguments\":{\"i\":%d}}</tool_call>\n", i, i);
    assert_int_equal(tools_read(TOOLS_AUTO, many, k, &c, &n), 0);
    assert_int_equal(n, 20);
    assert_string_equal(c[19].name, "f19");
    assert_string_equal(c[19].args, "{\"i\":19}");
    tools_calls_free(c, n);
}

/* The tool_calls deltas in SSE text s: heads counted (names into names[]),
 * arguments concatenated per index; every fragment ends on a UTF-8
 * boundary. */
static int read_deltas(const buf_t *s, char names[][65], char ids[][65], char args[][256])
{
    int heads = 0;
    for (char *p = s->p; p && p < s->p + s->n;) {
        char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_memory_equal(p, "data: ", 6);
        cJSON *ev = cJSON_ParseWithLength(p + 6, (size_t)(end - p - 6));
        assert_non_null(ev);
        cJSON *tc = cJSON_GetArrayItem(
            cJSON_GetObjectItem(
                cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "choices"), 0),
                                    "delta"),
                "tool_calls"),
            0);
        int idx = cJSON_GetObjectItem(tc, "index")->valueint;
        cJSON *fn = cJSON_GetObjectItem(tc, "function");
        if (cJSON_GetObjectItem(tc, "id")) {
            assert_int_equal(idx, heads);
            assert_string_equal(cJSON_GetObjectItem(tc, "type")->valuestring, "function");
            snprintf(names[idx], 65, "%s", cJSON_GetObjectItem(fn, "name")->valuestring);
            snprintf(ids[idx], 65, "%s", cJSON_GetObjectItem(tc, "id")->valuestring);
            heads++;
        }
        const char *a = cJSON_GetObjectItem(fn, "arguments")->valuestring;
        size_t n = strlen(a);
        if (n) { /* the last sequence is complete */
            size_t k = n;
            while (k > 0 && ((unsigned char)a[k - 1] & 0xC0) == 0x80)
                k--;
            assert_true(k > 0);
            unsigned char lead = (unsigned char)a[k - 1];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            assert_int_equal(n - (k - 1), need);
        }
        strcat(args[idx], a);
        cJSON_Delete(ev);
        p = end + 2;
    }
    return heads;
}

static void test_output(void **state)
{
    (void)state;
    oai_resp_t r = {.kind = OAI_CHAT,
                    .id = "chatcmpl-1",
                    .created = 1,
                    .model = "m",
                    .tool_mode = TOOLS_FORCED};
    const char *text =
        "[{\"name\":\"f\",\"arguments\":{\"city\":\"S\xc3\xa3o Paulo, a long name\"}},"
        "{\"name\":\"g\",\"arguments\":{}}]";
    assert_int_equal(tools_finish(&r, text, strlen(text), OAI_FINISH_STOP), OAI_FINISH_TOOL_CALLS);
    assert_int_equal(tools_finish(&r, text, strlen(text), OAI_FINISH_LENGTH), OAI_FINISH_LENGTH);
    buf_t b = {0};
    oai_usage_t u = {1, 2, 0};
    assert_int_equal(
        oai_format_response(&b, &r, text, strlen(text), OAI_FINISH_STOP, &u, NULL, 0, 0), 0);
    cJSON *j = cJSON_ParseWithLength(b.p, b.n);
    assert_non_null(j);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "tool_calls");
    cJSON *msg = cJSON_GetObjectItem(ch, "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
    cJSON *calls = cJSON_GetObjectItem(msg, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), 2);
    /* the stream: name first, then argument fragments that concatenate */
    buf_t s = {0};
    assert_int_equal(
        oai_format_chunk(&s, &r, 0, text, strlen(text), OAI_FINISH_NONE, NULL, NULL, 0, 0), 0);
    char names[4][65] = {"", "", "", ""}, ids[4][65] = {"", "", "", ""};
    char args[4][256] = {"", "", "", ""};
    int heads = read_deltas(&s, names, ids, args);
    for (int i = 0; i < heads; i++) {
        cJSON *want = cJSON_GetArrayItem(calls, i);
        assert_string_equal(ids[i], cJSON_GetObjectItem(want, "id")->valuestring);
    }
    assert_int_equal(heads, 2);
    for (int i = 0; i < 2; i++)
        assert_string_equal(
            args[i], cJSON_GetObjectItem(
                         cJSON_GetObjectItem(cJSON_GetArrayItem(calls, i), "function"), "arguments")
                         ->valuestring);
    cJSON_Delete(j);
    buf_free(&b);
    buf_free(&s);
}

/* Forced calls streamed live: fed a byte at a time, the scanner sends each
 * call's head once its name is complete, then the arguments as they come,
 * never splitting a UTF-8 sequence; they reassemble to tools_read's calls
 * (whitespace outside strings dropped, numbers as generated). */
static void test_live(void **state)
{
    (void)state;
    oai_resp_t r = {.kind = OAI_CHAT,
                    .id = "chatcmpl-2",
                    .created = 1,
                    .model = "m",
                    .tool_mode = TOOLS_FORCED};
    const char *texts[] = {
        "[ {\"name\": \"f\", \"arguments\": {\"city\": \"S\xc3\xa3o \\\"P\\\" }\", \"n\": 1.50, "
        "\"l\": [1, {\"a\": null}]} }, {\"name\":\"g\",\"arguments\":{}} ]",
        "{\"name\": \"get_time\", \"arguments\": {\"zone\": \"\xe6\x9d\xb1\xe4\xba\xac\"}}",
    };
    const char *want0[] = {
        "{\"city\":\"S\xc3\xa3o \\\"P\\\" }\",\"n\":1.50,\"l\":[1,{\"a\":null}]}",
        "{\"zone\":\"\xe6\x9d\xb1\xe4\xba\xac\"}"};
    for (int t = 0; t < 2; t++) {
        const char *text = texts[t];
        size_t n = strlen(text);
        tools_stream_t ts = {0};
        buf_t s = {0};
        int saw_head_early = 0;
        for (size_t i = 1; i <= n; i++) {
            tools_stream(&ts, &s, &r, text, i, 0);
            /* the head is out before the arguments are complete */
            if (i < n - 2 && ts.n_calls >= 1 && strstr(text + i, "}")) saw_head_early = 1;
        }
        tools_stream(&ts, &s, &r, text, n, 1);
        assert_true(saw_head_early);
        char names[4][65] = {"", "", "", ""};
        char args[4][256] = {"", "", "", ""};
        char ids[4][65];
        int heads = read_deltas(&s, names, ids, args);
        tools_call_t *calls;
        int k;
        assert_int_equal(tools_read(TOOLS_FORCED, text, n, &calls, &k), 0);
        assert_int_equal(heads, k);
        for (int i = 0; i < k; i++) {
            assert_string_equal(names[i], calls[i].name);
            assert_string_equal(args[i], calls[i].args);
        }
        assert_string_equal(calls[0].args, want0[t]);
        tools_calls_free(calls, k);
        /* the same text at once (a late joiner) gives the same deltas' sum */
        tools_stream_t once = {0};
        buf_t s2 = {0};
        tools_stream(&once, &s2, &r, text, n, 1);
        char names2[4][65] = {"", "", "", ""};
        char args2[4][256] = {"", "", "", ""};
        char ids2[4][65];
        assert_int_equal(read_deltas(&s2, names2, ids2, args2), heads);
        for (int i = 0; i < heads; i++)
            assert_string_equal(args2[i], args[i]);
        buf_free(&s);
        buf_free(&s2);
    }
    /* arguments before the name: not streamed live */
    const char *odd = "{\"arguments\": {\"x\": 1}, \"name\": \"f\"}";
    tools_stream_t ts = {0};
    buf_t s = {0};
    assert_int_equal(tools_stream(&ts, &s, &r, odd, strlen(odd), 1), 0);
    assert_int_equal(s.n, 0);
    buf_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_read_auto_exact),
        cmocka_unit_test(test_output),
        cmocka_unit_test(test_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
