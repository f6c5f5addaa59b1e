/* fuzz_tool_stream.c — libFuzzer target for the forced tool calls' live
 * scanner (tools_stream in src/api/tools.c), which reads model output.
 *
 * The first byte picks a split step; the rest is the generated text, fed to
 * the scanner in pieces of that many bytes as a stream would, then once
 * whole. Every event must be one `data: {json}` line; the calls reassembled
 * from the split feed must equal the ones from the whole feed; and when the
 * text reads as forced calls (tools_read), the stream must carry exactly
 * those names and arguments, and a single call wrapped in <tool_call> tags
 * reads (tools_read, auto mode) as the same call. Texts with a NUL byte are skipped: the events
 * carry it as \u0000, which cJSON (reading them back) ends a string at.
 * Texts that are not well-formed UTF-8 are skipped too (the constraint only
 * generates UTF-8; the JSON writer turns a bad byte into U+FFFD, so where a
 * stream splits one would show). Not for: anything but fuzzing. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/tools.h"

#define MAXC 32

typedef struct {
    int heads;
    char name[MAXC][65];
    buf_t args[MAXC];
} calls_t;

static void read_events(const buf_t *b, calls_t *c)
{
    for (size_t off = 0; off < b->n;) {
        const char *ev = b->p + off;
        const char *end = memmem(ev, b->n - off, "\n\n", 2);
        if (!end || end - ev < 8 || memcmp(ev, "data: ", 6)) abort();
        if (memchr(ev, '\n', (size_t)(end - ev))) abort();
        cJSON *j = cJSON_ParseWithLength(ev + 6, (size_t)(end - ev) - 6);
        if (!j) abort();
        cJSON *tc = cJSON_GetArrayItem(
            cJSON_GetObjectItem(
                cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                    "delta"),
                "tool_calls"),
            0);
        cJSON *idx = cJSON_GetObjectItem(tc, "index");
        cJSON *fn = cJSON_GetObjectItem(tc, "function");
        cJSON *args = cJSON_GetObjectItem(fn, "arguments");
        if (!cJSON_IsNumber(idx) || !cJSON_IsString(args)) abort();
        int i = idx->valueint;
        if (cJSON_GetObjectItem(tc, "id")) {
            if (i != c->heads || i >= MAXC) abort(); /* heads come in order */
            cJSON *name = cJSON_GetObjectItem(fn, "name");
            if (!cJSON_IsString(name) || args->valuestring[0]) abort();
            strncpy(c->name[i], name->valuestring, 64);
            c->heads++;
        } else if (i < 0 || i >= c->heads) {
            abort(); /* arguments of a call whose head was not sent */
        }
        buf_append(&c->args[i], args->valuestring, strlen(args->valuestring));
        cJSON_Delete(j);
        off = (size_t)(end - b->p) + 2;
    }
}

/* Well-formed UTF-8 (what the constraint generates: the JSON writer turns
 * a bad byte into U+FFFD, so how a stream splits it would show). */
static int valid_utf8(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t need = c < 0x80                ? 1
                      : c >= 0xC2 && c < 0xE0 ? 2
                      : c >= 0xE0 && c < 0xF0 ? 3
                      : c >= 0xF0 && c < 0xF5 ? 4
                                              : 0;
        if (!need || i + need > n) return 0;
        for (size_t k = 1; k < need; k++)
            if (((unsigned char)p[i + k] & 0xC0) != 0x80) return 0;
        unsigned char c1 = need > 1 ? (unsigned char)p[i + 1] : 0x80;
        if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
            (c == 0xF4 && c1 > 0x8F))
            return 0; /* overlong, a surrogate, past U+10FFFF */
        i += need;
    }
    return 1;
}

static void calls_free(calls_t *c)
{
    for (int i = 0; i < MAXC; i++)
        buf_free(&c->args[i]);
}

static int args_eq(const buf_t *a, const buf_t *b)
{
    return a->n == b->n && (!a->n || !memcmp(a->p, b->p, a->n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = data[0] % 16 + 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    if (memchr(text, '\0', n)) return 0; /* cJSON reads "\u0000" back as a string's end */
    if (!valid_utf8(text, n)) return 0;
    oai_resp_t r = {
        .kind = OAI_CHAT, .id = "id-1", .created = 1, .model = "m", .tool_mode = TOOLS_FORCED};
    tools_stream_t split = {0}, whole = {0};
    buf_t bs = {0}, bw = {0};
    for (size_t i = step; i < n; i += step)
        tools_stream(&split, &bs, &r, text, i, 0);
    int ks = tools_stream(&split, &bs, &r, text, n, 1);
    int kw = tools_stream(&whole, &bw, &r, text, n, 1);
    if (ks != kw) abort();
    calls_t cs = {0}, cw = {0};
    read_events(&bs, &cs);
    read_events(&bw, &cw);
    if (cs.heads != ks || cw.heads != kw) abort();
    for (int i = 0; i < cs.heads; i++)
        if (strcmp(cs.name[i], cw.name[i]) || !args_eq(&cs.args[i], &cw.args[i])) abort();
    tools_call_t *calls;
    int k;
    if (tools_read(TOOLS_FORCED, text, n, &calls, &k) == 0) {
        if (k != cs.heads) abort();
        for (int i = 0; i < k; i++)
            if (strcmp(calls[i].name, cs.name[i]) || strlen(calls[i].args) != cs.args[i].n ||
                memcmp(calls[i].args, cs.args[i].p ? cs.args[i].p : "", cs.args[i].n))
                abort();
        /* one call, as auto mode's free text would hold it: the same call */
        const char *open = "<tool_call>\n", *close = "\n</tool_call>";
        char *w = malloc(n + 32);
        if (k == 1 && w && !memmem(text, n, "</tool_call>", 12) && text[0] == '{') {
            memcpy(w, open, strlen(open));
            memcpy(w + strlen(open), text, n);
            memcpy(w + strlen(open) + n, close, strlen(close));
            tools_call_t *ac;
            int ak;
            if (tools_read(TOOLS_AUTO, w, strlen(open) + n + strlen(close), &ac, &ak) != 0 ||
                ak != 1 || strcmp(ac[0].name, calls[0].name) || strcmp(ac[0].args, calls[0].args))
                abort();
            tools_calls_free(ac, ak);
        }
        free(w);
        tools_calls_free(calls, k);
    }
    calls_free(&cs);
    calls_free(&cw);
    buf_free(&bs);
    buf_free(&bw);
    return 0;
}
