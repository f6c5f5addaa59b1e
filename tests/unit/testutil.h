/* testutil.h — what several unit tests share: where the fetched models are,
 * and reading a whole file. */
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

/* The whole file at path, NUL-terminated, in a malloc'd buffer (caller frees);
 * its length in *n when n is not NULL. NULL when it cannot be read. */
static inline char *test_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[sz] = '\0';
        if (n) *n = (size_t)sz;
    }
    return p;
}

#endif
