/* fuzz_gguf.c — libFuzzer target for the GGUF reader (engine/gguf.c) and the
 * `barista inspect` printers that walk what it accepts.
 *
 * Each input is parsed as a whole file. A rejected input must come with a
 * message that names an offset; an accepted one is walked completely: every
 * byte of every string, array and tensor extent is read (so ASan checks the
 * bounds the reader promised), every key and tensor name is looked up again,
 * and the inspect view is rendered as text and as JSON. cli_inspect.c is
 * included to reach its static printers; its one public symbol comes from here,
 * so the library's copy is never linked in. Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_inspect.c"
#define FUZZ_INSPECT
#include "fuzz_util.h"
#include "engine/gguf.h"

/* A C copy of a slice for the *_find lookups; NULL when it holds a NUL. */
static const char *cstr(char *buf, size_t cap, gguf_str_t s)
{
    if (s.n >= cap || memchr(s.p, 0, s.n)) return NULL;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    return buf;
}

static void walk(const gguf_t *g, const uint8_t *data, size_t size)
{
    char buf[512];
    if (gguf_data_offset(g) > size || gguf_file_size(g) != size) abort();
    uint32_t a = gguf_alignment(g);
    if (a == 0 || (a & (a - 1))) abort();
    for (size_t i = 0; i < gguf_kv_count(g); i++) {
        const gguf_kv_t *kv = gguf_kv_at(g, i);
        touch(kv->key.p, kv->key.n);
        if (kv->type == GGUF_T_STRING) touch(kv->str.p, kv->str.n);
        if (kv->type == GGUF_T_ARRAY) {
            touch(kv->arr_data, kv->arr_bytes);
            if (kv->arr_type == GGUF_T_STRING) {
                uint64_t n = kv->arr_n < 64 ? kv->arr_n : 64;
                gguf_str_t strs[64];
                if (gguf_arr_strings(kv, strs, n) != 0) abort();
                for (uint64_t k = 0; k < n; k++)
                    touch(strs[k].p, strs[k].n);
            }
        }
        const char *key = cstr(buf, sizeof buf, kv->key);
        if (key) {
            const gguf_kv_t *found = gguf_kv_find(g, key);
            if (found != kv) /* keys are unique */
                abort();
            uint32_t u;
            float f;
            int b;
            gguf_str_t s;
            (void)gguf_get_u32(g, key, &u);
            (void)gguf_get_f32(g, key, &f);
            (void)gguf_get_bool(g, key, &b);
            (void)gguf_get_str(g, key, &s);
        }
    }
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        touch(t->name.p, t->name.n);
        if (t->n_dims > 4 || ggml_type_name(t->type) == NULL) abort();
        const uint8_t *d = t->data;
        if (d < data || t->n_bytes > size || (size_t)(d - data) > size - t->n_bytes) abort();
        if (t->n_bytes) {
            touch(d, 1);
            touch(d + t->n_bytes - 1, 1);
        }
        const char *name = cstr(buf, sizeof buf, t->name);
        if (name && gguf_tensor_find(g, name) != t) abort();
    }
}

static void render(const gguf_t *g)
{
    view_t v = {0};
    v.path = "fuzz.gguf";
    if (view_from_gguf(&v, g) == 0) render_view(&v);
    view_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_t *g = NULL;
    bar_msg_t msg = {{0}};
    int rc = gguf_parse(&g, data, size, &msg);
    if (rc != 0) {
        if (g != NULL || !msg.text[0] ||
            (rc == BAR_ERR_FORMAT && strncmp(msg.text, "offset ", 7) != 0))
            abort();
        return 0;
    }
    walk(g, data, size);
    render(g);
    gguf_close(g);
    return 0;
}
