/* fuzz_embeddings.c — libFuzzer target for the /v1/embeddings schema and
 * response writer (src/api/embeddings.c).
 *
 * The input is a request body. A rejected body must give a 4xx/5xx with a
 * message and a param-named error whose body is valid JSON; an accepted one
 * is checked for its invariants (1..2048 inputs, none empty, lengths equal
 * to the strings, token ids >= 0, counts adding up) and a vector per input
 * made of the input's own bytes goes through both encodings, whose output
 * must parse back as JSON with one row per input, every float printed
 * reading back as the same float32. Not for: anything but fuzzing. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/embeddings.h"

static void must_parse(const char *p, size_t n, int rows)
{
    cJSON *j = cJSON_ParseWithLength(p, n);
    if (!j) abort();
    if (rows >= 0 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")) != rows) abort();
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = NULL;
    oai_err_t e;
    memset(&e, 0, sizeof e);
    emb_req_t r;
    memset(&r, 0, sizeof r);
    buf_t b = {0};
    int rc = oai_parse_json((const char *)data, size, &root, &e);
    if (rc == 0) rc = emb_parse(&r, root, &e);
    if (rc < 0) {
        if (e.status < 400 || e.status > 599 || !e.message[0] || rc != -e.status) abort();
        oai_error_body(&b, &e);
        must_parse(b.p, b.n, -1);
    } else {
        if (r.n < 1 || r.n > EMB_MAX_INPUTS) abort();
        size_t total = 0;
        for (int i = 0; i < r.n; i++) {
            if (r.is_tokens) {
                if (!r.n_ids[i]) abort();
                for (size_t k = 0; k < r.n_ids[i]; k++)
                    if (r.ids[i][k] < 0) abort();
                total += r.n_ids[i];
            } else {
                if (!r.lens[i] || strlen(r.texts[i]) != r.lens[i]) abort();
                total += r.lens[i];
            }
        }
        if (total != r.n_bytes) abort();
        const int dim = 3;
        float *v = malloc((size_t)r.n * dim * sizeof *v);
        if (!v) abort();
        /* the vectors: the input's own bytes as float32s (every bit pattern
         * the printer may meet; non-finite ones are written as 0) */
        for (int i = 0; i < r.n * dim; i++) {
            uint32_t u = 0;
            for (int k = 0; k < 4; k++)
                u |= (uint32_t)data[((size_t)i * 4 + (size_t)k) % size] << (8 * k);
            memcpy(&v[i], &u, 4);
        }
        for (int enc = 0; enc < 2; enc++) {
            buf_clear(&b);
            if (emb_format_response(&b, r.model, v, r.n, dim, enc, (long long)total)) abort();
            must_parse(b.p, b.n, r.n);
            if (!enc) { /* every printed value reads back as its float */
                const char *p = strstr(b.p, "\"embedding\":[");
                for (int i = 0; i < r.n * dim; i++) {
                    p = strchr(p, i % dim ? ',' : '[');
                    if (!p) abort();
                    char *end;
                    float got = strtof(++p, &end);
                    float want = isfinite(v[i]) && v[i] != 0 ? v[i] : 0.0f;
                    if (end == p || (memcmp(&got, &want, 4) && !(got == 0 && want == 0))) abort();
                }
            }
        }
        free(v);
    }
    buf_free(&b);
    emb_req_free(&r);
    cJSON_Delete(root);
    return 0;
}
