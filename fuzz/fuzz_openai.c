/* fuzz_openai.c — libFuzzer target for OpenAI request validation and the
 * response writers (src/api/openai.c).
 *
 * The first byte picks chat or completions; the rest is the request body. A
 * rejected body must give a 4xx/5xx with a message, and its error body must be
 * valid JSON; an accepted one is checked for its invariants (stop count, role
 * names, lengths) and its contents are echoed through every response writer,
 * whose output must parse back as JSON (so no byte sequence can break the
 * SSE/JSON framing). Not for: anything but fuzzing. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai.h"

static void must_parse(const char *p, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(p, n);
    if (!j) abort();
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    oai_kind_t kind = (data[0] & 1) ? OAI_CHAT : OAI_COMPLETION;
    oai_req_t r;
    oai_err_t e;
    memset(&e, 0, sizeof e);
    int rc = oai_parse_request(&r, kind, (const char *)data + 1, size - 1, &e);
    buf_t b = {0};
    if (rc < 0) {
        if (e.status < 400 || e.status > 599 || !e.message[0] || rc != -e.status) abort();
        oai_error_body(&b, &e);
        must_parse(b.p, b.n);
        buf_free(&b);
        oai_req_free(&r);
        return 0;
    }
    if (r.n_stop < 0 || r.n_stop > OAI_MAX_STOP) abort();
    const char *text = "";
    size_t len = 0;
    if (kind == OAI_CHAT) {
        if (r.n_msgs < 1) abort();
        for (int i = 0; i < r.n_msgs; i++) {
            const char *role = r.msgs[i].role;
            if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
                abort();
            if (strlen(r.msgs[i].content) > r.msgs[i].content_len) abort();
        }
        text = r.msgs[r.n_msgs - 1].content;
        len = r.msgs[r.n_msgs - 1].content_len;
    } else {
        if (!r.prompt) abort();
        text = r.prompt;
        len = r.prompt_len;
    }
    oai_resp_t resp = {kind, "id-1", 1, r.model[0] ? r.model : "m", NULL};
    oai_usage_t u = {1, 2, 0};
    lp_alt_t top = {text, len, -1.0};
    lp_tok_t lp = {text, len, -0.5, 1, &top};
    oai_format_response(&b, &resp, text, len, OAI_FINISH_STOP, &u, &lp, 1, r.logprobs);
    must_parse(b.p, b.n);
    buf_clear(&b);
    oai_format_chunk(&b, &resp, 0, text, len, OAI_FINISH_NONE, NULL, &lp, 1, r.logprobs);
    if (b.n < 8 || memcmp(b.p, "data: ", 6) || memcmp(b.p + b.n - 2, "\n\n", 2)) abort();
    if (memchr(b.p, '\n', b.n - 2)) abort(); /* a raw newline inside the event would split it */
    must_parse(b.p + 6, b.n - 8);
    buf_free(&b);
    oai_req_free(&r);
    return 0;
}
