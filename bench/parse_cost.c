/* parse_cost.c — the cost of validating a chat request's tree
 * (oai_parse_tree_cached, the parse stage after cJSON) with the API's grammar
 * cache, per request shape, the cache warm (the same schema every time):
 *   plain        no response_format, no tools
 *   schema       response_format json_schema (a 6-property object)
 *   tools_auto   4 tools with parameters, tool_choice auto
 *   tools_forced the same 4 tools, tool_choice required (the call schema)
 * Usage: parse_cost [N [SHAPE]] — N requests of each shape (default 20000;
 * SHAPE: only that one); prints
 * "shape ns_per_request" (the median of 5 runs). For instruction counts run
 * it under callgrind with two N and divide the difference (docs/BENCHMARKS.md
 * has the numbers). Build: cc -O2 -Isrc bench/parse_cost.c
 * build/libbarista_core.a $(pkg-config --libs ...) (see bench/structured). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "api/openai.h"
#include "engine/gram_cache.h"

#define MSGS                                                                                       \
    "\"messages\":[{\"role\":\"system\",\"content\":\"You are "                                    \
    "terse.\"},{\"role\":\"user\",\"content\":\"What is the weather in Paris today? Answer "       \
    "briefly.\"}]"
#define TOOL(n)                                                                                    \
    "{\"type\":\"function\",\"function\":{\"name\":\"" n "\",\"description\":\"Look it up.\","     \
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"          \
    "\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\",\"unit\"],"     \
    "\"additionalProperties\":false}}}"
#define TOOLS                                                                                      \
    "\"tools\":[" TOOL("get_weather") "," TOOL("get_time") "," TOOL("get_news") "," TOOL(          \
        "get_tide") "]"

static const char *const SHAPES[][2] = {
    {"plain", "{\"model\":\"default\"," MSGS ",\"temperature\":0,\"max_tokens\":64}"},
    {"schema",
     "{\"model\":\"default\"," MSGS ",\"temperature\":0,\"max_tokens\":64,\"response_format\":{"
     "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"w\",\"strict\":true,\"schema\":{"
     "\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"temp\":{\"type\":"
     "\"number\"},\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"]},\"sky\":{\"type\":"
     "\"string\"},\"wind\":{\"type\":\"integer\"},\"rain\":{\"type\":\"boolean\"}},"
     "\"required\":[\"city\",\"temp\",\"unit\",\"sky\",\"wind\",\"rain\"],"
     "\"additionalProperties\":false}}}}"},
    {"tools_auto",
     "{\"model\":\"default\"," MSGS ",\"temperature\":0,\"max_tokens\":64," TOOLS "}"},
    {"tools_forced", "{\"model\":\"default\"," MSGS ",\"temperature\":0,\"max_tokens\":64," TOOLS
                     ",\"tool_choice\":\"required\"}"},
};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 1) n = 1;
    gram_cache_t *gc;
    if (gram_cache_create(&gc, 64)) return 1;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        if (argc > 2 && strcmp(argv[2], SHAPES[s][0])) continue;
        oai_err_t e;
        cJSON *root = NULL;
        if (oai_parse_json(SHAPES[s][1], strlen(SHAPES[s][1]), &root, &e)) {
            fprintf(stderr, "%s: %s\n", SHAPES[s][0], e.message);
            return 1;
        }
        double runs[5];
        for (int k = 0; k < 5; k++) {
            double t0 = now_ns();
            for (int i = 0; i < n; i++) {
                oai_req_t r;
                if (oai_parse_tree_cached(&r, OAI_CHAT, root, gc, &e)) {
                    fprintf(stderr, "%s: %s\n", SHAPES[s][0], e.message);
                    return 1;
                }
                oai_req_free(&r);
            }
            runs[k] = (now_ns() - t0) / n;
        }
        qsort(runs, 5, sizeof runs[0], cmp);
        printf("%s %.0f\n", SHAPES[s][0], runs[2]);
        cJSON_Delete(root);
    }
    gram_cache_destroy(gc);
    return 0;
}
