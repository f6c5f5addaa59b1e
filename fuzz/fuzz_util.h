/* fuzz_util.h — helpers the libFuzzer targets share: reading every byte a
 * parser promised (so ASan checks the bounds) and a sink for printers. */
#ifndef BARISTA_FUZZ_UTIL_H
#define BARISTA_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static volatile uint8_t fuzz_sink;

/* Read n bytes at p. */
static inline void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    fuzz_sink ^= x;
}

static inline FILE *devnull(void)
{
    static FILE *f;
    if (!f) f = fopen("/dev/null", "w");
    if (!f) abort();
    return f;
}

#ifdef FUZZ_INSPECT
/* Targets that include cli_inspect.c and define FUZZ_INSPECT get this:
 * render an inspect view as text and as JSON (needs cli_inspect.c included
 * first), then free it. */
static inline void render_view(view_t *v)
{
    print_text(devnull(), v);
    cJSON *doc = json_view(v);
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    if (text) fputs(text, devnull());
    cJSON_free(text);
    cJSON_Delete(doc);
}
#endif

#endif
