/* testutil.h — what several unit tests share: where the fetched models are. */
#ifndef BARISTA_TESTS_TESTUTIL_H
#define BARISTA_TESTS_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_SMOLLM2 "SmolLM2-135M-Instruct.Q4_1.gguf"

/* buf <- $BARISTA_MODELS/file, or <source>/models/file; returns buf. */
static inline const char *test_model_path(char *buf, size_t cap, const char *file)
{
    const char *dir = getenv("BARISTA_MODELS");
    snprintf(buf, cap, "%s/%s", dir && *dir ? dir : BARISTA_SOURCE_DIR "/models", file);
    return buf;
}

#endif
