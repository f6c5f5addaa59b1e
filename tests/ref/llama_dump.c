/* llama_dump.c — dump every intermediate tensor llama.cpp computes for one
 * batch of tokens (its graph eval callback), to compare barista op by op.
 * A development tool, not part of the build or the tests; see
 * MODEL_VECTORS.md ("Matching llama.cpp's numerics") for how to build and use it.
 * Output: for each tensor a header line "T name|op|type|ne0 ne1 ne2 ne3|nb0..nb3|bytes"
 * followed by its raw bytes and a newline; the logits of every token go to logits.bin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
static FILE *out;
static bool cb(struct ggml_tensor *t, bool ask, void *ud)
{
    (void)ud;
    if (ask) return true;
    size_t nb = ggml_nbytes(t);
    fprintf(out, "T %s|%s|%d|%lld %lld %lld %lld|%zu %zu %zu %zu|%zu\n", t->name, ggml_op_desc(t),
            (int)t->type, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
            (long long)t->ne[3], t->nb[0], t->nb[1], t->nb[2], t->nb[3], nb);
    fwrite(t->data, 1, nb, out);
    fputc('\n', out);
    return true;
}
int main(int argc, char **argv)
{
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *m = llama_model_load_from_file(argv[1], mp);
    out = fopen(argv[2], "wb");
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_threads = 2;
    cp.n_threads_batch = 2;
    cp.n_batch = 512;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = cb;
    cp.cb_eval_user_data = NULL;
    struct llama_context *c = llama_init_from_model(m, cp);
    int n = argc - 3;
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = atoi(argv[3 + i]);
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(c, b)) {
        fprintf(stderr, "decode failed\n");
        return 1;
    }
    fclose(out);
    const float *lg = llama_get_logits(c);
    FILE *f = fopen("logits.bin", "wb");
    fwrite(lg, 4, (size_t)n * 49152, f);
    fclose(f);
    return 0;
}
