/* model.c — llama-architecture loading and the batched forward pass.
 *
 * Data layout (row-major, one row per token of the batch):
 *   x, xn, att, tmp : [n][n_embd]  float
 *   q               : [n][n_head  * head_dim]
 *   k, v            : [n][n_head_kv * head_dim]
 *   gate, up        : [n][n_ff]
 *   xq              : [n][kern_act_bytes(max(n_embd, n_ff))]  Q8 activations
 *   KV cache        : blocks of KV_BLOCK (64) positions; a sequence's block
 *                     table maps position p to block table[p / 64]
 *   K block         : [layer][p % 64][n_head_kv * head_dim] fp16
 *   V block         : [layer][n_head_kv * head_dim][p % 64] fp16: transposed,
 *                     so that each output element is one fp16 dot over
 *                     positions whose 64-position segments are the blocks
 *                     (kern_dot_hh_tab reads them through the table); memory
 *                     is touched only as blocks are first written
 * Numerics follow llama.cpp's CPU backend (AVX-512 build) operation by
 * operation, so that barista's logits equal its bit for bit and greedy tokens
 * agree (docs/ARCHITECTURE.md, "Numerics"): RMSNorm sums float squares in
 * double; RoPE angles come from theta *= base^(-2/n_rot) per pair, rotated
 * with one fma each; Q, K, V and the softmax weights are rounded to fp16 and
 * dotted by kern_dot_hh in llama.cpp's batched order when the sequence has
 * two or more tokens in this step and in its single-row order otherwise;
 * softmax and SiLU use its exp polynomial (kern_expf) and sum exps in 16-lane
 * blocks into a double; matmuls use the kernels' exact order.
 * Weights are GGUF matrices [n_in, n_out] (ne[0] = n_in is the row length);
 * kern_matmul dots each output row with every activation row of the batch.
 * Matmuls are split by output rows over the worker pool; attention is split
 * over (token, head) pairs. Nothing allocates inside model_forward.
 * Not for: sampling or scheduling. */
#include "engine/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/kernels/kern.h"
#include "util/fp16.h"

typedef struct {
    ggml_type_t type;
    const void *data;
    int n_in;
    int n_out;
} wmat_t;

typedef struct {
    float *attn_norm; /* [n_embd] */
    wmat_t wq, wk, wv, wo;
    float *ffn_norm; /* [n_embd] */
    wmat_t w_gate, w_up, w_down;
} layer_t;

struct model {
    gguf_t *g;
    model_hparams_t hp;
    wmat_t tok_embd; /* [n_embd, n_vocab] */
    wmat_t output;   /* [n_embd, n_vocab], tok_embd when tied */
    float *out_norm; /* [n_embd] */
    layer_t *layers;
    float **owned; /* norm vectors we allocated */
    int n_owned;
};

struct kv_cache {
    int n_blocks, n_layer, kv_dim;
    int n_slots, n_ctx, bps; /* kv_create: slot s owns blocks [s * bps, (s + 1) * bps) */
    uint16_t *k, *v;         /* fp16, [n_blocks][n_layer][KV_BLOCK * kv_dim] each */
    size_t bytes;
};

_Static_assert((int)KV_BLOCK == (int)KERN_SEG, "a KV block is one segment of kern_dot_hh_tab");

struct model_ctx {
    const model_t *m;
    pool_t *pool;
    int n_batch, n_ctx;
    float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up;
    uint8_t *xq;
    size_t act_stride;     /* bytes per activation row of the widest input */
    float *scores;         /* [nth][n_ctx_pad] */
    const uint16_t **segs; /* [nth][n_ctx_pad / 64] V segment table of one item */
    uint16_t *half;        /* [nth][n_ctx_pad + head_dim] fp16 softmax weights and Q */
    float *rope;           /* [n_batch][n_rot] cos, sin per pair of each batch row */
    float *ex;             /* [n_batch][n_ff] exp scratch for SwiGLU */
    int *order;            /* [n_batch] attention dot order per batch row */
    int n_ctx_pad;         /* n_ctx rounded up to 64 */
    float theta_scale;     /* rope base ^ (-2 / n_rot) */
    int nth;
};

/* ---------------------------------------------------------------- loading */

static int get_u32(const gguf_t *g, const char *arch, const char *suffix, int required,
                   uint32_t dflt, uint32_t *out, bar_msg_t *msg)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_u32(g, key, out);
    if (rc == BAR_ERR_NOTFOUND && !required) {
        *out = dflt;
        return 0;
    }
    if (rc)
        return bar_fail(msg, BAR_ERR_FORMAT, "metadata %s: %s", key,
                        rc == BAR_ERR_NOTFOUND ? "missing" : "not an unsigned integer");
    return 0;
}

static int get_f32(const gguf_t *g, const char *arch, const char *suffix, float dflt, float *out,
                   bar_msg_t *msg)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(g, key, out);
    if (rc == BAR_ERR_NOTFOUND) {
        *out = dflt;
        return 0;
    }
    if (rc) return bar_fail(msg, BAR_ERR_FORMAT, "metadata %s: not a float", key);
    return 0;
}

static int find_tensor(const gguf_t *g, const char *name, int64_t ne0, int64_t ne1,
                       const gguf_tensor_t **out, bar_msg_t *msg)
{
    const gguf_tensor_t *t = gguf_tensor_find(g, name);
    if (!t) return bar_fail(msg, BAR_ERR_FORMAT, "tensor %s: missing", name);
    int64_t want1 = ne1 < 0 ? 1 : ne1;
    uint32_t want_dims = ne1 < 0 ? 1 : 2;
    int ok = t->ne[0] == ne0 && t->ne[1] == want1 && t->ne[2] == 1 && t->ne[3] == 1 &&
             t->n_dims <= 2 && (t->n_dims == want_dims || (want_dims == 2 && want1 == 1));
    if (!ok) {
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "tensor %s: shape [%lld, %lld, %lld, %lld], expected [%lld%s%lld]", name,
                        (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                        (long long)t->ne[3], (long long)ne0, ne1 < 0 ? "" : ", ",
                        ne1 < 0 ? 0LL : (long long)ne1);
    }
    *out = t;
    return 0;
}

static int load_mat(const gguf_t *g, const char *name, int n_in, int n_out, wmat_t *w,
                    bar_msg_t *msg)
{
    const gguf_tensor_t *t;
    int rc = find_tensor(g, name, n_in, n_out, &t, msg);
    if (rc) return rc;
    if (!kern_type_supported(t->type)) {
        const char *tn = ggml_type_name(t->type);
        return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                        "tensor %s: type %s is not supported (supported: F32, F16, BF16, Q4_0, "
                        "Q4_1, Q5_0, Q5_1, Q8_0)",
                        name, tn ? tn : "unknown");
    }
    if (n_in % 32 != 0 && t->type != GGML_F32 && t->type != GGML_F16 && t->type != GGML_BF16)
        return bar_fail(msg, BAR_ERR_UNSUPPORTED, "tensor %s: row length %d not a multiple of 32",
                        name, n_in);
    w->type = t->type;
    w->data = t->data;
    w->n_in = n_in;
    w->n_out = n_out;
    return 0;
}

static int load_norm(model_t *m, const char *name, int n, float **out, bar_msg_t *msg)
{
    const gguf_tensor_t *t;
    int rc = find_tensor(m->g, name, n, -1, &t, msg);
    if (rc) return rc;
    float *f = malloc((size_t)n * sizeof(float));
    if (!f) return bar_fail(msg, BAR_ERR_NOMEM, "tensor %s: out of memory", name);
    m->owned[m->n_owned++] = f;
    if (t->type == GGML_F32) {
        memcpy(f, t->data, (size_t)n * sizeof(float));
    } else if (t->type == GGML_F16) {
        const uint8_t *p = t->data;
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            f[i] = fp16_to_f32(h);
        }
    } else if (t->type == GGML_BF16) {
        const uint8_t *p = t->data;
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            f[i] = bf16_to_f32(h);
        }
    } else {
        const char *tn = ggml_type_name(t->type);
        return bar_fail(msg, BAR_ERR_UNSUPPORTED, "tensor %s: type %s, expected F32, F16 or BF16",
                        name, tn ? tn : "unknown");
    }
    *out = f;
    return 0;
}

static int load_all(model_t *m, bar_msg_t *msg)
{
    const gguf_t *g = m->g;
    gguf_str_t arch;
    if (gguf_get_str(g, "general.architecture", &arch))
        return bar_fail(msg, BAR_ERR_FORMAT, "metadata general.architecture: missing");
    if (!(arch.n == 5 && !memcmp(arch.p, "llama", 5)))
        return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                        "architecture '%.*s' is not supported (supported: llama)",
                        (int)(arch.n > 64 ? 64 : arch.n), arch.p);
    const char *a = "llama";
    model_hparams_t *hp = &m->hp;
    uint32_t u;
    int rc;
#define U32(field, key, req, dflt)                                                                 \
    do {                                                                                           \
        if ((rc = get_u32(g, a, key, req, dflt, &u, msg))) return rc;                              \
        hp->field = (int)u;                                                                        \
    } while (0)
    U32(n_layer, "block_count", 1, 0);
    U32(n_embd, "embedding_length", 1, 0);
    U32(n_ff, "feed_forward_length", 1, 0);
    U32(n_head, "attention.head_count", 1, 0);
    U32(n_head_kv, "attention.head_count_kv", 0, (uint32_t)hp->n_head);
    U32(n_ctx_train, "context_length", 0, 2048);
#undef U32
    if (hp->n_layer <= 0 || hp->n_layer > 1024 || hp->n_embd <= 0 || hp->n_embd > 65536 ||
        hp->n_ff <= 0 || hp->n_ff > 262144 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_head % hp->n_head_kv != 0 || hp->n_embd % hp->n_head != 0)
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "inconsistent hyperparameters: layers %d, embd %d, ff %d, heads %d/%d",
                        hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 || hp->head_dim > 256)
        return bar_fail(msg, BAR_ERR_UNSUPPORTED, "head dimension %d (must be even, <= 256)",
                        hp->head_dim);
    if ((rc = get_u32(g, a, "rope.dimension_count", 0, (uint32_t)hp->head_dim, &u, msg))) return rc;
    hp->n_rot = (int)u;
    if (hp->n_rot <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return bar_fail(msg, BAR_ERR_FORMAT, "rope dimension %d invalid for head dim %d", hp->n_rot,
                        hp->head_dim);
    if ((rc = get_f32(g, a, "rope.freq_base", 10000.0f, &hp->rope_base, msg))) return rc;
    if ((rc = get_f32(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, msg)))
        return rc;
    if (hp->n_ctx_train <= 0) hp->n_ctx_train = 2048;

    const gguf_tensor_t *emb = gguf_tensor_find(g, "token_embd.weight");
    if (!emb) return bar_fail(msg, BAR_ERR_FORMAT, "tensor token_embd.weight: missing");
    if (emb->n_dims != 2 || emb->ne[0] != hp->n_embd || emb->ne[1] <= 0 || emb->ne[1] > (1 << 24))
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "tensor token_embd.weight: shape [%lld, %lld], expected [%d, n_vocab]",
                        (long long)emb->ne[0], (long long)emb->ne[1], hp->n_embd);
    hp->n_vocab = (int)emb->ne[1];
    if ((rc = load_mat(g, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, msg)))
        return rc;
    if (gguf_tensor_find(g, "output.weight")) {
        if ((rc = load_mat(g, "output.weight", hp->n_embd, hp->n_vocab, &m->output, msg)))
            return rc;
    } else {
        m->output = m->tok_embd; /* tied embeddings */
    }

    m->owned = calloc((size_t)hp->n_layer * 2 + 1, sizeof(float *));
    m->layers = calloc((size_t)hp->n_layer, sizeof(layer_t));
    if (!m->owned || !m->layers) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    if ((rc = load_norm(m, "output_norm.weight", hp->n_embd, &m->out_norm, msg))) return rc;
    int kv_dim = hp->n_head_kv * hp->head_dim;
    for (int l = 0; l < hp->n_layer; l++) {
        layer_t *L = &m->layers[l];
        char name[96];
#define NAME(s) (snprintf(name, sizeof name, "blk.%d.%s.weight", l, s), name)
        if ((rc = load_norm(m, NAME("attn_norm"), hp->n_embd, &L->attn_norm, msg)) ||
            (rc = load_norm(m, NAME("ffn_norm"), hp->n_embd, &L->ffn_norm, msg)) ||
            (rc = load_mat(g, NAME("attn_q"), hp->n_embd, hp->n_embd, &L->wq, msg)) ||
            (rc = load_mat(g, NAME("attn_k"), hp->n_embd, kv_dim, &L->wk, msg)) ||
            (rc = load_mat(g, NAME("attn_v"), hp->n_embd, kv_dim, &L->wv, msg)) ||
            (rc = load_mat(g, NAME("attn_output"), hp->n_embd, hp->n_embd, &L->wo, msg)) ||
            (rc = load_mat(g, NAME("ffn_gate"), hp->n_embd, hp->n_ff, &L->w_gate, msg)) ||
            (rc = load_mat(g, NAME("ffn_up"), hp->n_embd, hp->n_ff, &L->w_up, msg)) ||
            (rc = load_mat(g, NAME("ffn_down"), hp->n_ff, hp->n_embd, &L->w_down, msg)))
            return rc;
#undef NAME
    }
    return 0;
}

int model_load(model_t **out, const char *path, bar_msg_t *msg)
{
    *out = NULL;
    kern_init();
    model_t *m = calloc(1, sizeof *m);
    if (!m) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    int rc = gguf_open(&m->g, path, msg);
    if (rc == 0) rc = load_all(m, msg);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void model_free(model_t *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    if (m->g) gguf_close(m->g);
    free(m);
}

const model_hparams_t *model_hparams(const model_t *m)
{
    return &m->hp;
}

const gguf_t *model_gguf(const model_t *m)
{
    return m->g;
}

const char *model_weight_type(const model_t *m)
{
    const char *n = ggml_type_name(m->layers[0].wq.type);
    return n ? n : "?";
}

/* --------------------------------------------------------------- KV cache */

static void *big_alloc(size_t bytes)
{
    /* Anonymous mapping: pages cost memory only once written. */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

size_t kv_block_bytes(const model_t *m)
{
    return 2 * (size_t)m->hp.n_layer * KV_BLOCK * m->hp.n_head_kv * m->hp.head_dim *
           sizeof(uint16_t);
}

int kv_create_blocks(kv_cache_t **out, const model_t *m, int n_blocks, bar_msg_t *msg)
{
    *out = NULL;
    if (n_blocks <= 0) return bar_fail(msg, BAR_ERR_INVALID, "kv cache: %d blocks", n_blocks);
    kv_cache_t *kv = calloc(1, sizeof *kv);
    if (!kv) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    kv->n_blocks = n_blocks;
    kv->n_layer = m->hp.n_layer;
    kv->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    kv->bytes = (size_t)n_blocks * kv->n_layer * KV_BLOCK * kv->kv_dim * sizeof(uint16_t);
    kv->k = big_alloc(kv->bytes);
    kv->v = big_alloc(kv->bytes);
    if (!kv->k || !kv->v) {
        size_t bytes = kv->bytes;
        kv_destroy(kv);
        return bar_fail(msg, BAR_ERR_NOMEM, "kv cache: cannot reserve 2 x %zu bytes", bytes);
    }
    *out = kv;
    return 0;
}

int kv_create(kv_cache_t **out, const model_t *m, int n_slots, int n_ctx, bar_msg_t *msg)
{
    *out = NULL;
    if (n_slots <= 0 || n_ctx <= 0)
        return bar_fail(msg, BAR_ERR_INVALID, "kv cache: %d slots x %d positions", n_slots, n_ctx);
    int bps = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    int rc = kv_create_blocks(out, m, n_slots * bps, msg);
    if (rc) return rc;
    (*out)->n_slots = n_slots;
    (*out)->n_ctx = n_ctx;
    (*out)->bps = bps;
    return 0;
}

void kv_destroy(kv_cache_t *kv)
{
    if (!kv) return;
    if (kv->k) munmap(kv->k, kv->bytes);
    if (kv->v) munmap(kv->v, kv->bytes);
    free(kv);
}

int kv_n_blocks(const kv_cache_t *kv)
{
    return kv->n_blocks;
}

/* K or V data of (block, layer): KV_BLOCK * kv_dim values */
static inline size_t blk_off(const kv_cache_t *kv, int block, int layer)
{
    return ((size_t)block * kv->n_layer + layer) * KV_BLOCK * kv->kv_dim;
}

void kv_copy_block(kv_cache_t *kv, int dst, int src)
{
    if (dst == src) return;
    size_t n = (size_t)kv->n_layer * KV_BLOCK * kv->kv_dim * sizeof(uint16_t);
    memcpy(kv->k + blk_off(kv, dst, 0), kv->k + blk_off(kv, src, 0), n);
    memcpy(kv->v + blk_off(kv, dst, 0), kv->v + blk_off(kv, src, 0), n);
}

/* the block holding position pos of batch token i's sequence */
static inline int blk_of(const kv_cache_t *kv, const int *const *blocks, const model_batch_t *b,
                         int i, int pos)
{
    return blocks ? blocks[b->slot[i]][pos / KV_BLOCK] : b->slot[i] * kv->bps + pos / KV_BLOCK;
}

/* ---------------------------------------------------------- forward pass */

int model_ctx_create(model_ctx_t **out, const model_t *m, int n_batch, int n_ctx, pool_t *pool,
                     bar_msg_t *msg)
{
    *out = NULL;
    const model_hparams_t *hp = &m->hp;
    model_ctx_t *c = calloc(1, sizeof *c);
    if (!c) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    c->m = m;
    c->pool = pool;
    c->n_batch = n_batch;
    c->n_ctx = n_ctx;
    c->nth = pool_size(pool);
    size_t nb = (size_t)n_batch;
    int kv_dim = hp->n_head_kv * hp->head_dim;
    int widest = hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd;
    c->act_stride = kern_act_bytes(widest);
    c->x = malloc(nb * hp->n_embd * sizeof(float));
    c->xn = malloc(nb * hp->n_embd * sizeof(float));
    c->q = malloc(nb * hp->n_embd * sizeof(float));
    c->k = malloc(nb * kv_dim * sizeof(float));
    c->v = malloc(nb * kv_dim * sizeof(float));
    c->att = malloc(nb * hp->n_embd * sizeof(float));
    c->tmp = malloc(nb * hp->n_embd * sizeof(float));
    c->gate = malloc(nb * hp->n_ff * sizeof(float));
    c->up = malloc(nb * hp->n_ff * sizeof(float));
    c->xq = malloc(nb * c->act_stride);
    c->n_ctx_pad = (n_ctx + 63) & ~63;
    c->scores = malloc((size_t)c->nth * c->n_ctx_pad * sizeof(float));
    c->half = malloc((size_t)c->nth * (c->n_ctx_pad + hp->head_dim) * sizeof(uint16_t));
    c->segs = malloc((size_t)c->nth * (c->n_ctx_pad / 64) * sizeof *c->segs);
    c->rope = malloc(nb * hp->n_rot * sizeof(float));
    c->ex = malloc(nb * hp->n_ff * sizeof(float));
    c->order = malloc(nb * sizeof(int));
    if (!c->x || !c->xn || !c->q || !c->k || !c->v || !c->att || !c->tmp || !c->gate || !c->up ||
        !c->xq || !c->scores || !c->half || !c->segs || !c->rope || !c->ex || !c->order) {
        model_ctx_destroy(c);
        return bar_fail(msg, BAR_ERR_NOMEM, "forward scratch: out of memory");
    }
    c->theta_scale = powf(hp->rope_base, -2.0f / (float)hp->n_rot);
    *out = c;
    return 0;
}

void model_ctx_destroy(model_ctx_t *c)
{
    if (!c) return;
    free(c->x);
    free(c->xn);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->tmp);
    free(c->gate);
    free(c->up);
    free(c->xq);
    free(c->scores);
    free(c->half);
    free(c->segs);
    free(c->rope);
    free(c->ex);
    free(c->order);
    free(c);
}

/* llama.cpp's rms_norm then mul: float squares summed in double, the mean
 * and scale in float, (x * scale) * w. */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

/* cos, sin of each rotated pair at position pos: the angle starts at pos and
 * is multiplied by theta_scale per pair, in float (llama.cpp's rope cache). */
static void rope_angles(float *cs, int n_rot, int pos, float theta_scale)
{
    float theta = (float)pos;
    for (int i = 0; i < n_rot; i += 2) {
        cs[i] = cosf(theta);
        cs[i + 1] = sinf(theta);
        theta *= theta_scale;
    }
}

/* Rotate adjacent pairs (llama's "normal" RoPE) of every head; dimensions at
 * and past n_rot stay as they are. */
static void rope(float *x, int n_heads, int head_dim, int n_rot, const float *cs)
{
    for (int h = 0; h < n_heads; h++) {
        float *p = x + h * head_dim;
        for (int i = 0; i < n_rot; i += 2) {
            float a = p[i], b = p[i + 1], c = cs[i], s = cs[i + 1];
            p[i] = fmaf(a, c, -(b * s));
            p[i + 1] = fmaf(a, s, b * c);
        }
    }
}

/* Up to three matrices that share one input, computed in one pool_run. */
typedef struct {
    int n_mat;
    const wmat_t *w[3];
    float *y[3];
    const uint8_t *xq;
    const float *x; /* float input rows, for float weights */
    int ldx;
    int nb;
} mm_job_t;

static void mm_worker(void *ctx, int ith, int nth)
{
    const mm_job_t *j = ctx;
    for (int i = 0; i < j->n_mat; i++) {
        const wmat_t *w = j->w[i];
        int lo, hi;
        pool_split(w->n_out, ith, nth, &lo, &hi);
        if (lo >= hi) continue;
        kern_matmul(w->type, w->data, w->n_in, lo, hi, j->xq, j->x, j->ldx, j->nb, j->y[i],
                    w->n_out);
    }
}

/* Quantize nb rows of `x` (row length n, row stride ldx) into c->xq, packed
 * at kern_act_bytes(n) per row as kern_matmul expects. */
static void quantize_rows(model_ctx_t *c, const float *x, int n, int ldx, int nb)
{
    size_t stride = kern_act_bytes(n);
    for (int b = 0; b < nb; b++)
        kern_quantize_act(x + (size_t)b * ldx, c->xq + (size_t)b * stride, n);
}

static void matmul3(model_ctx_t *c, int nb, const float *x, int n_mat, const wmat_t *w0, float *y0,
                    const wmat_t *w1, float *y1, const wmat_t *w2, float *y2)
{
    mm_job_t j = {.n_mat = n_mat,
                  .w = {w0, w1, w2},
                  .y = {y0, y1, y2},
                  .xq = c->xq,
                  .x = x,
                  .ldx = w0->n_in,
                  .nb = nb};
    pool_run(c->pool, mm_worker, &j);
}

typedef struct {
    model_ctx_t *c;
    kv_cache_t *kv;
    const model_batch_t *b;
    const int *const *blocks;
    int layer;
} att_job_t;

static void att_worker(void *ctx, int ith, int nth)
{
    const att_job_t *j = ctx;
    model_ctx_t *c = j->c;
    const model_hparams_t *hp = &c->m->hp;
    const kv_cache_t *kv = j->kv;
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    int kv_dim = kv->kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->scores + (size_t)ith * c->n_ctx_pad;
    uint16_t *pw = c->half + (size_t)ith * (c->n_ctx_pad + hd), *q = pw + c->n_ctx_pad;
    const uint16_t **segs = c->segs + (size_t)ith * (c->n_ctx_pad / 64);
    int items = j->b->n * hp->n_head;
    for (int it = ith; it < items; it += nth) {
        int i = it / hp->n_head, h = it % hp->n_head;
        int kvh = h / group, pos = j->b->pos[i];
        int order = c->order[i];
        const float *q32 = c->q + (size_t)i * hp->n_embd + h * hd;
        for (int d = 0; d < hd; d++)
            q[d] = fp16_from_f32(q32[d]);
        /* scores, one block of positions at a time (each is its own dot);
         * exps summed in blocks of 16 positions (masked lanes are 0) */
        int n = pos + 1, n16 = (n + 15) & ~15;
        for (int p0 = 0, jb = 0; p0 < n; p0 += KV_BLOCK, jb++) {
            int blk = blk_of(kv, j->blocks, j->b, i, p0);
            int rows = n - p0 < KV_BLOCK ? n - p0 : KV_BLOCK;
            kern_dot_hh(kv->k + blk_off(kv, blk, j->layer) + kvh * hd, (size_t)kv_dim, KERN_SEG,
                        rows, q, hd, order, sc + p0);
            segs[jb] = kv->v + blk_off(kv, blk, j->layer) + (size_t)kvh * hd * KV_BLOCK;
        }
        float mx = -INFINITY;
        for (int p = 0; p < n; p++) {
            sc[p] *= scale;
            if (sc[p] > mx) mx = sc[p];
        }
        for (int p = 0; p < n; p++)
            sc[p] -= mx;
        for (int p = n; p < n16; p++)
            sc[p] = -INFINITY;
        kern_expf(sc, sc, n16);
        double sum = 0.0;
        for (int p = 0; p < n16; p += 16)
            sum += (double)kern_hsum16(sc + p);
        float inv = (float)(1.0 / sum);
        /* weights rounded to fp16, zero up to the dot's step (16 or 64) */
        int nv = order == KERN_ORDER_TILE ? n16 : (n + 63) & ~63;
        for (int p = 0; p < n; p++)
            pw[p] = fp16_from_f32(sc[p] * inv);
        for (int p = n; p < nv; p++)
            pw[p] = 0;
        float *o = c->att + (size_t)i * hp->n_embd + h * hd;
        kern_dot_hh_tab(segs, KV_BLOCK, hd, pw, nv, order, o);
    }
}

/* y = silu(g) * u over n values as llama.cpp's swiglu: x / (1 + exp(0 - x))
 * with its exp polynomial in blocks of 16, libm expf for a tail. */
static void swiglu(float *g, const float *u, float *ex, int n)
{
    int n16 = n & ~15;
    for (int i = 0; i < n16; i++)
        ex[i] = 0.0f - g[i];
    kern_expf(ex, ex, n16);
    for (int i = n16; i < n; i++)
        ex[i] = expf(-g[i]);
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + ex[i]) * u[i];
}

int model_forward(model_ctx_t *c, kv_cache_t *kv, const model_batch_t *b, float *logits,
                  bar_msg_t *msg)
{
    return model_forward_paged(c, kv, b, NULL, 0, logits, msg);
}

int model_forward_paged(model_ctx_t *c, kv_cache_t *kv, const model_batch_t *b,
                        const int *const *blocks, int n_seq, float *logits, bar_msg_t *msg)
{
    const model_t *m = c->m;
    const model_hparams_t *hp = &m->hp;
    int n = b->n, E = hp->n_embd, F = hp->n_ff;
    int kv_dim = hp->n_head_kv * hp->head_dim;
    if (n <= 0 || n > c->n_batch)
        return bar_fail(msg, BAR_ERR_INVALID, "batch of %d tokens (max %d)", n, c->n_batch);
    int next_row = 0;
    for (int i = 0; i < n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab)
            return bar_fail(msg, BAR_ERR_INVALID, "token id %d outside vocabulary of %d",
                            b->tokens[i], hp->n_vocab);
        int n_ctx = blocks || kv->n_ctx > c->n_ctx ? c->n_ctx : kv->n_ctx;
        if (b->pos[i] < 0 || b->pos[i] >= n_ctx)
            return bar_fail(msg, BAR_ERR_RANGE, "position %d outside context of %d", b->pos[i],
                            n_ctx);
        if (b->logit_row[i] >= 0 && b->logit_row[i] != next_row++)
            return bar_fail(msg, BAR_ERR_INVALID, "logit rows must be 0, 1, 2, ... in token order");
        int n_s = blocks ? n_seq : kv->n_slots;
        if (b->slot[i] < 0 || b->slot[i] >= n_s)
            return bar_fail(msg, BAR_ERR_INVALID, "sequence %d outside %d", b->slot[i], n_s);
        for (int p0 = 0; blocks && p0 <= b->pos[i]; p0 += KV_BLOCK) {
            int blk = blocks[b->slot[i]][p0 / KV_BLOCK];
            if (blk < 0 || blk >= kv->n_blocks)
                return bar_fail(msg, BAR_ERR_INVALID, "block %d outside %d blocks", blk,
                                kv->n_blocks);
        }
    }

    size_t emb_row = kern_row_bytes(m->tok_embd.type, E);
    for (int i = 0; i < n; i++)
        kern_dequant_row(m->tok_embd.type,
                         (const uint8_t *)m->tok_embd.data + emb_row * b->tokens[i],
                         c->x + (size_t)i * E, E);

    /* per row: rope angles, and llama.cpp's attention order — its batched
     * kernels run when the sequence has two or more tokens in this step */
    for (int i = 0; i < n; i++) {
        rope_angles(c->rope + (size_t)i * hp->n_rot, hp->n_rot, b->pos[i], c->theta_scale);
        int same = 0;
        for (int j = 0; j < n && same < 2; j++)
            same += b->slot[j] == b->slot[i];
        c->order[i] = same >= 2 ? KERN_ORDER_TILE : KERN_ORDER_VEC;
    }

    for (int l = 0; l < hp->n_layer; l++) {
        const layer_t *L = &m->layers[l];
        /* attention block */
        for (int i = 0; i < n; i++)
            rmsnorm(c->xn + (size_t)i * E, c->x + (size_t)i * E, L->attn_norm, E, hp->rms_eps);
        quantize_rows(c, c->xn, E, E, n);
        matmul3(c, n, c->xn, 3, &L->wq, c->q, &L->wk, c->k, &L->wv, c->v);
        for (int i = 0; i < n; i++) {
            const float *cs = c->rope + (size_t)i * hp->n_rot;
            rope(c->q + (size_t)i * E, hp->n_head, hp->head_dim, hp->n_rot, cs);
            rope(c->k + (size_t)i * kv_dim, hp->n_head_kv, hp->head_dim, hp->n_rot, cs);
            int blk = blk_of(kv, blocks, b, i, b->pos[i]), pb = b->pos[i] % KV_BLOCK;
            uint16_t *kr = kv->k + blk_off(kv, blk, l) + (size_t)pb * kv_dim;
            uint16_t *vt = kv->v + blk_off(kv, blk, l) + pb;
            for (int d = 0; d < kv_dim; d++) {
                kr[d] = fp16_from_f32(c->k[(size_t)i * kv_dim + d]);
                vt[(size_t)d * KERN_SEG] = fp16_from_f32(c->v[(size_t)i * kv_dim + d]);
            }
        }
        att_job_t aj = {c, kv, b, blocks, l};
        pool_run(c->pool, att_worker, &aj);
        quantize_rows(c, c->att, E, E, n);
        matmul3(c, n, c->att, 1, &L->wo, c->tmp, NULL, NULL, NULL, NULL);
        for (size_t i = 0; i < (size_t)n * E; i++)
            c->x[i] += c->tmp[i];

        /* feed-forward block (SwiGLU) */
        for (int i = 0; i < n; i++)
            rmsnorm(c->xn + (size_t)i * E, c->x + (size_t)i * E, L->ffn_norm, E, hp->rms_eps);
        quantize_rows(c, c->xn, E, E, n);
        matmul3(c, n, c->xn, 2, &L->w_gate, c->gate, &L->w_up, c->up, NULL, NULL);
        for (int i = 0; i < n; i++)
            swiglu(c->gate + (size_t)i * F, c->up + (size_t)i * F, c->ex + (size_t)i * F, F);
        quantize_rows(c, c->gate, F, F, n);
        matmul3(c, n, c->gate, 1, &L->w_down, c->tmp, NULL, NULL, NULL, NULL);
        for (size_t i = 0; i < (size_t)n * E; i++)
            c->x[i] += c->tmp[i];
    }

    /* logits for the rows that asked: gather normalised rows, one matmul */
    int n_out = 0;
    for (int i = 0; i < n; i++) {
        if (b->logit_row[i] < 0) continue;
        rmsnorm(c->xn + (size_t)n_out * E, c->x + (size_t)i * E, m->out_norm, E, hp->rms_eps);
        n_out++;
    }
    if (n_out == 0) return 0;
    quantize_rows(c, c->xn, E, E, n_out);
    matmul3(c, n_out, c->xn, 1, &m->output, logits, NULL, NULL, NULL, NULL);
    return 0;
}
