/* fuzz_batch_line.c — libFuzzer target for one line of a batch input file
 * (batch_line_parse, src/batch/batch_store.c) and for reading the custom_id
 * back from a result line (batch_result_custom_id, used when a batch
 * resumes).
 *
 * An accepted line must give a non-empty custom_id and a body that is a
 * JSON object without "stream"; a rejected one a code and a reason. Not
 * for: anything but fuzzing. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch_store.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    if (!line) abort();
    memcpy(line, data, size);
    batch_line_t bl;
    const char *code = NULL;
    char why[256];
    why[0] = '\0';
    if (batch_line_parse(line, size, "/v1/chat/completions", &bl, &code, why, sizeof why) == 0) {
        if (!bl.custom_id[0] || !bl.body || strlen(bl.body) != bl.body_len) abort();
        cJSON *o = cJSON_Parse(bl.body);
        if (!cJSON_IsObject(o) || cJSON_GetObjectItemCaseSensitive(o, "stream")) abort();
        cJSON_Delete(o);
        free(bl.body);
    } else {
        if (!code || !why[0] || bl.body) abort();
    }
    if (strlen(bl.custom_id) >= sizeof bl.custom_id) abort();
    char id[128];
    int res = batch_result_custom_id(line, size, id);
    if (strlen(id) >= sizeof id || (res && !id[0])) abort();
    free(line);
    return 0;
}
