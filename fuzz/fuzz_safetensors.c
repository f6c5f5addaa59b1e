/* fuzz_safetensors.c — libFuzzer target for the safetensors reader
 * (engine/safetensors.c) and the `barista inspect` printers.
 *
 * Each input is parsed as a whole file. A rejected input must come with a
 * message that names an offset; an accepted one is walked completely: every
 * tensor's extent is read (ASan checks the bounds), byte counts are re-derived
 * from shape x dtype, names and metadata keys are looked up again, and the
 * inspect view is rendered as text and JSON (cli_inspect.c is included for its
 * static printers, as in fuzz_gguf.c). Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_inspect.c"
#define FUZZ_INSPECT
#include "fuzz_util.h"
#include "engine/safetensors.h"

static void walk(const safet_t *s, const uint8_t *data, size_t size)
{
    size_t data_off = safet_data_offset(s);
    if (data_off > size || safet_file_size(s) != size || data_off != 8 + safet_header_size(s))
        abort();
    uint64_t prev_end = 0;
    for (size_t i = 0; i < safet_tensor_count(s); i++) {
        const safet_tensor_t *t = safet_tensor_at(s, i);
        touch(t->name, strlen(t->name));
        if (t->n_dims > SAFET_MAX_DIMS || safet_dtype_name(t->dtype) == NULL) abort();
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (uint64_t)t->shape[d]; /* cannot overflow: checked by the reader */
        if (n != t->n_elems || n * safet_dtype_size(t->dtype) != t->n_bytes ||
            t->end - t->begin != t->n_bytes || t->begin < prev_end)
            abort();
        prev_end = t->end;
        const uint8_t *d = t->data;
        if (d != data + data_off + t->begin || t->end > size - data_off) abort();
        touch(d, t->n_bytes);
        if (safet_tensor_find(s, t->name) != t) abort();
    }
    for (size_t i = 0; i < safet_meta_count(s); i++) {
        const safet_meta_t *m = safet_meta_at(s, i);
        touch(m->value, strlen(m->value));
        if (safet_meta_find(s, m->key) != m->value) abort();
    }
}

static void render(const safet_t *s)
{
    view_t v = {0};
    v.path = "fuzz.safetensors";
    if (view_from_safet(&v, s) == 0) render_view(&v);
    view_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    safet_t *s = NULL;
    bar_msg_t msg = {{0}};
    int rc = safet_parse(&s, data, size, &msg);
    if (rc != 0) {
        if (s != NULL || !msg.text[0] ||
            (rc == BAR_ERR_FORMAT && strncmp(msg.text, "offset ", 7) != 0))
            abort();
        return 0;
    }
    walk(s, data, size);
    render(s);
    safet_close(s);
    return 0;
}
