/* bert.c — BERT encoder forward pass, mean pooling, L2 norm (see bert.h).
 *
 * Layout. Weights are copied out of the safetensors mapping into one 64-byte
 * aligned F32 arena at load (the mapping's tensors are unaligned in general,
 * and F16/BF16 files are widened once). Linear layers keep PyTorch's
 * [out, in] row-major layout, which is kern_matmul's W (one row per output).
 * Q, K and V are concatenated into one [3 * hidden, hidden] matrix so one
 * matmul produces all three.
 *
 * Activations for a batch of T tokens (sequences end to end):
 *   x    [T, H]      hidden state (H = 384)
 *   qkv  [T, 3H]     q | k | v of each token (head h at columns h * dh ..)
 *   att  [T, H]      attention output before the output dense
 *   tmp  [T, H]      dense output + residual, LayerNorm'd into x
 *   ff   [T, I]      intermediate (I = 1536), GELU applied in place
 * Per thread: kh [L, dh], vt [dh, L], s [L, L] for one (sequence, head).
 *
 * Numerics: F32 throughout; GELU is the exact erf form (hidden_act "gelu");
 * softmax subtracts the row max and uses kern_expf (same bits at every
 * kernel level); LayerNorm uses the biased variance with eps from config.json.
 * Mean pooling divides by the sequence length (every token is real). */
#include "engine/bert.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bert_gemm.h"
#include "engine/kernels/kern.h"
#include "engine/pool.h"
#include "engine/safetensors.h"
#include "util/fp16.h"

#define BERT_MAX_LAYERS 48

typedef struct {
    float *wqkv, *bqkv; /* [3H, H], [3H] */
    float *wo, *bo;     /* [H, H], [H] */
    float *ln1_g, *ln1_b;
    float *w1, *b1; /* [I, H], [I] */
    float *w2, *b2; /* [H, I], [H] */
    float *ln2_g, *ln2_b;
    /* the same four matrices packed for bert_gemm (NULL at the scalar level) */
    float *pqkv, *po, *p1, *p2;
} layer_t;

struct bert {
    int hidden, n_layers, n_heads, head_dim, inter, n_pos, n_vocab, n_types;
    float eps;
    int max_tokens; /* the window */
    wp_t *wp;
    float *arena;
    float *packed;     /* arena of the packed matrices, or NULL */
    bert_gemm_fn gemm; /* NULL: kern_matmul (the scalar reference) */
    float *tok_emb;    /* [vocab, H] */
    float *pos_emb;    /* [n_pos, H] */
    float *type_emb;   /* [n_types, H]; row 0 is used */
    float *emb_ln_g, *emb_ln_b;
    layer_t layers[BERT_MAX_LAYERS];
};

struct bert_ctx {
    const bert_t *m;
    pool_t *pool;
    int cap; /* tokens */
    float *x, *qkv, *att, *tmp, *ff;
    float **kh, **vt, **s; /* per thread */
    int nth;
};

/* ---- loading ---- */

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        if (sz >= 0 && sz < (16 << 20) && fseek(f, 0, SEEK_SET) == 0) {
            b = malloc((size_t)sz + 1);
            if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
                free(b);
                b = NULL;
            }
            if (b) {
                b[sz] = '\0';
                *n = (size_t)sz;
            }
        }
    }
    fclose(f);
    return b;
}

static int cfg_int(const cJSON *o, const char *k, int lo, int hi, int *out, bar_msg_t *msg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi ||
        v->valuedouble != (double)(int)v->valuedouble)
        return bar_fail(msg, BAR_ERR_FORMAT, "config.json: %s must be an integer in [%d, %d]", k,
                        lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

static int load_config(bert_t *m, const char *dir, bar_msg_t *msg)
{
    char path[4096];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *t = slurp(path, &n);
    if (!t) return bar_fail(msg, BAR_ERR_IO, "%s: cannot read", path);
    cJSON *c = cJSON_ParseWithLength(t, n);
    free(t);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return bar_fail(msg, BAR_ERR_FORMAT, "%s: not a JSON object", path);
    }
    int rc = 0;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(c, "hidden_act");
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(c, "position_embedding_type");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(c, "layer_norm_eps");
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "bert") != 0)
        rc = bar_fail(msg, BAR_ERR_UNSUPPORTED, "config.json: model_type %.40s (only bert)",
                      cJSON_IsString(mt) ? mt->valuestring : "?");
    else if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu") != 0)
        rc = bar_fail(msg, BAR_ERR_UNSUPPORTED, "config.json: hidden_act %.40s (only gelu)",
                      act->valuestring);
    else if (cJSON_IsString(pe) && strcmp(pe->valuestring, "absolute") != 0)
        rc =
            bar_fail(msg, BAR_ERR_UNSUPPORTED,
                     "config.json: position_embedding_type %.40s (only absolute)", pe->valuestring);
    if (!rc) rc = cfg_int(c, "hidden_size", 16, 8192, &m->hidden, msg);
    if (!rc) rc = cfg_int(c, "num_hidden_layers", 1, BERT_MAX_LAYERS, &m->n_layers, msg);
    if (!rc) rc = cfg_int(c, "num_attention_heads", 1, 256, &m->n_heads, msg);
    if (!rc) rc = cfg_int(c, "intermediate_size", 16, 65536, &m->inter, msg);
    if (!rc) rc = cfg_int(c, "max_position_embeddings", 2, 65536, &m->n_pos, msg);
    if (!rc) rc = cfg_int(c, "vocab_size", 8, 1 << 22, &m->n_vocab, msg);
    m->n_types = 2;
    if (!rc && cJSON_GetObjectItemCaseSensitive(c, "type_vocab_size"))
        rc = cfg_int(c, "type_vocab_size", 1, 1024, &m->n_types, msg);
    if (!rc && m->hidden % m->n_heads != 0)
        rc = bar_fail(msg, BAR_ERR_FORMAT,
                      "config.json: hidden_size %d is not a multiple of %d heads", m->hidden,
                      m->n_heads);
    m->eps = 1e-12f;
    if (!rc && eps) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0 && eps->valuedouble < 1))
            rc = bar_fail(msg, BAR_ERR_FORMAT, "config.json: layer_norm_eps out of range");
        else
            m->eps = (float)eps->valuedouble;
    }
    m->head_dim = m->hidden / (m->n_heads ? m->n_heads : 1);
    cJSON_Delete(c);
    if (rc) return rc;
    /* the window: sentence-transformers' max_seq_length */
    m->max_tokens = m->n_pos;
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    t = slurp(path, &n);
    if (t) {
        cJSON *s = cJSON_ParseWithLength(t, n);
        free(t);
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(s, "max_seq_length");
        if (cJSON_IsNumber(ml) && ml->valuedouble >= 2 && ml->valuedouble < m->n_pos)
            m->max_tokens = (int)ml->valuedouble;
        cJSON_Delete(s);
    }
    return 0;
}

/* Copy tensor `name` (optionally "bert."-prefixed) of shape [d0] or [d0, d1]
 * (d1 = 0: 1-D) into dst as F32. */
static int take(const safet_t *st, const char *name, int64_t d0, int64_t d1, float *dst,
                bar_msg_t *msg)
{
    char full[256];
    const safet_tensor_t *t = safet_tensor_find(st, name);
    if (!t) {
        snprintf(full, sizeof full, "bert.%s", name);
        t = safet_tensor_find(st, full);
    }
    if (!t) return bar_fail(msg, BAR_ERR_FORMAT, "model.safetensors: no tensor %s", name);
    uint32_t nd = d1 ? 2 : 1;
    if (t->n_dims != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1))
        return bar_fail(msg, BAR_ERR_FORMAT,
                        "model.safetensors: %s has shape [%lld%s%lld], expected [%lld, %lld]", name,
                        (long long)t->shape[0], t->n_dims > 1 ? ", " : "",
                        t->n_dims > 1 ? (long long)t->shape[1] : 0LL, (long long)d0, (long long)d1);
    size_t n = (size_t)t->n_elems;
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case SAFET_F32:
        memcpy(dst, p, n * sizeof(float));
        break;
    case SAFET_F16:
    case SAFET_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == SAFET_F16 ? fp16_to_f32(h) : bf16_to_f32(h);
        }
        break;
    default:
        return bar_fail(msg, BAR_ERR_UNSUPPORTED, "model.safetensors: %s is %s (F32/F16/BF16 only)",
                        name, safet_dtype_name(t->dtype));
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return bar_fail(msg, BAR_ERR_FORMAT, "model.safetensors: %s has a non-finite value",
                            name);
    return 0;
}

/* 64-byte aligned slices of the arena */
static float *carve(float **at, size_t n)
{
    float *p = *at;
    *at += (n + 15) & ~(size_t)15;
    return p;
}

static int load_weights(bert_t *m, const char *dir, bar_msg_t *msg)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    safet_t *st = NULL;
    int rc = safet_open(&st, path, msg);
    if (rc) return rc;
    const size_t H = (size_t)m->hidden, I = (size_t)m->inter;
    size_t per_layer = 0;
    size_t sizes[] = {3 * H * H, 3 * H, H * H, H, H, H, I * H, I, H * I, H, H, H};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        per_layer += (sizes[i] + 15) & ~(size_t)15;
    size_t total = ((size_t)m->n_vocab * H + 15) + ((size_t)m->n_pos * H + 15) +
                   ((size_t)m->n_types * H + 15) + 2 * (H + 15) + (size_t)m->n_layers * per_layer;
    if (posix_memalign((void **)&m->arena, 64, total * sizeof(float))) {
        m->arena = NULL;
        safet_close(st);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory (%zu MB of weights)", total >> 18);
    }
    float *at = m->arena;
    m->tok_emb = carve(&at, (size_t)m->n_vocab * H);
    m->pos_emb = carve(&at, (size_t)m->n_pos * H);
    m->type_emb = carve(&at, (size_t)m->n_types * H);
    m->emb_ln_g = carve(&at, H);
    m->emb_ln_b = carve(&at, H);
    rc = take(st, "embeddings.word_embeddings.weight", m->n_vocab, (int64_t)H, m->tok_emb, msg);
    if (!rc)
        rc = take(st, "embeddings.position_embeddings.weight", m->n_pos, (int64_t)H, m->pos_emb,
                  msg);
    if (!rc)
        rc = take(st, "embeddings.token_type_embeddings.weight", m->n_types, (int64_t)H,
                  m->type_emb, msg);
    if (!rc) rc = take(st, "embeddings.LayerNorm.weight", (int64_t)H, 0, m->emb_ln_g, msg);
    if (!rc) rc = take(st, "embeddings.LayerNorm.bias", (int64_t)H, 0, m->emb_ln_b, msg);
    for (int l = 0; !rc && l < m->n_layers; l++) {
        layer_t *L = &m->layers[l];
        char nm[160];
#define NM(s) (snprintf(nm, sizeof nm, "encoder.layer.%d.%s", l, s), nm)
        L->wqkv = carve(&at, 3 * H * H);
        L->bqkv = carve(&at, 3 * H);
        L->wo = carve(&at, H * H);
        L->bo = carve(&at, H);
        L->ln1_g = carve(&at, H);
        L->ln1_b = carve(&at, H);
        L->w1 = carve(&at, I * H);
        L->b1 = carve(&at, I);
        L->w2 = carve(&at, H * I);
        L->b2 = carve(&at, H);
        L->ln2_g = carve(&at, H);
        L->ln2_b = carve(&at, H);
        static const char *const qkv[3] = {"query", "key", "value"};
        for (int k = 0; !rc && k < 3; k++) {
            char w[64], b[64];
            snprintf(w, sizeof w, "attention.self.%s.weight", qkv[k]);
            snprintf(b, sizeof b, "attention.self.%s.bias", qkv[k]);
            rc = take(st, NM(w), (int64_t)H, (int64_t)H, L->wqkv + (size_t)k * H * H, msg);
            if (!rc) rc = take(st, NM(b), (int64_t)H, 0, L->bqkv + (size_t)k * H, msg);
        }
        if (!rc)
            rc = take(st, NM("attention.output.dense.weight"), (int64_t)H, (int64_t)H, L->wo, msg);
        if (!rc) rc = take(st, NM("attention.output.dense.bias"), (int64_t)H, 0, L->bo, msg);
        if (!rc)
            rc = take(st, NM("attention.output.LayerNorm.weight"), (int64_t)H, 0, L->ln1_g, msg);
        if (!rc) rc = take(st, NM("attention.output.LayerNorm.bias"), (int64_t)H, 0, L->ln1_b, msg);
        if (!rc) rc = take(st, NM("intermediate.dense.weight"), (int64_t)I, (int64_t)H, L->w1, msg);
        if (!rc) rc = take(st, NM("intermediate.dense.bias"), (int64_t)I, 0, L->b1, msg);
        if (!rc) rc = take(st, NM("output.dense.weight"), (int64_t)H, (int64_t)I, L->w2, msg);
        if (!rc) rc = take(st, NM("output.dense.bias"), (int64_t)H, 0, L->b2, msg);
        if (!rc) rc = take(st, NM("output.LayerNorm.weight"), (int64_t)H, 0, L->ln2_g, msg);
        if (!rc) rc = take(st, NM("output.LayerNorm.bias"), (int64_t)H, 0, L->ln2_b, msg);
#undef NM
    }
    safet_close(st);
    return rc;
}

/* Pick the matmul by the kernel level in use and pack the weights for it. */
static int pack_weights(bert_t *m)
{
    const char *lvl = kern_level_name();
    bert_gemm_fn g = !strcmp(lvl, "avx512") ? bert_gemm_avx512
                     : !strcmp(lvl, "avx2") ? bert_gemm_avx2
                                            : NULL;
    if (!g || m->hidden % BERT_GEMM_NR || m->inter % BERT_GEMM_NR) return 0;
    const size_t H = (size_t)m->hidden, I = (size_t)m->inter;
    size_t per = 3 * H * H + H * H + 2 * I * H;
    if (posix_memalign((void **)&m->packed, 64, (size_t)m->n_layers * per * sizeof(float)))
        return BAR_ERR_NOMEM;
    float *at = m->packed;
    for (int l = 0; l < m->n_layers; l++) {
        layer_t *L = &m->layers[l];
        L->pqkv = at;
        bert_gemm_pack(L->wqkv, 3 * m->hidden, m->hidden, at);
        at += 3 * H * H;
        L->po = at;
        bert_gemm_pack(L->wo, m->hidden, m->hidden, at);
        at += H * H;
        L->p1 = at;
        bert_gemm_pack(L->w1, m->inter, m->hidden, at);
        at += I * H;
        L->p2 = at;
        bert_gemm_pack(L->w2, m->hidden, m->inter, at);
        at += H * I;
    }
    m->gemm = g;
    return 0;
}

int bert_load(bert_t **out, const char *model_dir, bar_msg_t *msg)
{
    *out = NULL;
    bert_t *m = calloc(1, sizeof *m);
    if (!m) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    int rc = load_config(m, model_dir, msg);
    if (!rc) rc = wp_load(&m->wp, model_dir, msg);
    if (!rc && wp_vocab_size(m->wp) > m->n_vocab)
        rc = bar_fail(msg, BAR_ERR_FORMAT,
                      "vocab.txt has %d tokens but config.json vocab_size is %d",
                      wp_vocab_size(m->wp), m->n_vocab);
    if (!rc) rc = load_weights(m, model_dir, msg);
    if (rc) {
        bert_free(m);
        return rc;
    }
    kern_init();
    rc = pack_weights(m);
    if (rc) {
        bert_free(m);
        return bar_fail(msg, rc, "out of memory for the packed weights");
    }
    *out = m;
    return 0;
}

void bert_free(bert_t *m)
{
    if (!m) return;
    wp_free(m->wp);
    free(m->arena);
    free(m->packed);
    free(m);
}

int bert_dim(const bert_t *m)
{
    return m->hidden;
}
int bert_max_tokens(const bert_t *m)
{
    return m->max_tokens;
}
int bert_vocab_size(const bert_t *m)
{
    return m->n_vocab;
}
const wp_t *bert_wp(const bert_t *m)
{
    return m->wp;
}

int bert_tokenize(const bert_t *m, const char *text, size_t len, int32_t *ids, size_t cap,
                  size_t *n, size_t *n_full)
{
    if (cap > (size_t)m->max_tokens) cap = (size_t)m->max_tokens;
    return wp_encode(m->wp, text, len, ids, cap, n, n_full);
}

/* ---- context ---- */

static float *falloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float))) return NULL;
    return p;
}

bert_ctx_t *bert_ctx_create(const bert_t *m, int max_batch_tokens, int n_threads)
{
    bert_ctx_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->m = m;
    c->cap = max_batch_tokens < m->max_tokens ? m->max_tokens : max_batch_tokens;
    c->pool = pool_create(n_threads);
    if (!c->pool) {
        free(c);
        return NULL;
    }
    c->nth = pool_size(c->pool);
    size_t T = (size_t)c->cap, H = (size_t)m->hidden, L = (size_t)m->max_tokens;
    c->x = falloc(T * H);
    c->qkv = falloc(T * 3 * H);
    c->att = falloc(T * H);
    c->tmp = falloc(T * H);
    c->ff = falloc(T * (size_t)m->inter);
    c->kh = calloc((size_t)c->nth, sizeof *c->kh);
    c->vt = calloc((size_t)c->nth, sizeof *c->vt);
    c->s = calloc((size_t)c->nth, sizeof *c->s);
    int ok = c->x && c->qkv && c->att && c->tmp && c->ff && c->kh && c->vt && c->s;
    for (int i = 0; ok && i < c->nth; i++) {
        c->kh[i] = falloc(L * (size_t)m->head_dim);
        c->vt[i] = falloc(L * (size_t)m->head_dim);
        c->s[i] = falloc(L * L);
        ok = c->kh[i] && c->vt[i] && c->s[i];
    }
    if (!ok) {
        bert_ctx_free(c);
        return NULL;
    }
    return c;
}

void bert_ctx_free(bert_ctx_t *c)
{
    if (!c) return;
    pool_destroy(c->pool);
    free(c->x);
    free(c->qkv);
    free(c->att);
    free(c->tmp);
    free(c->ff);
    for (int i = 0; i < c->nth; i++) {
        if (c->kh) free(c->kh[i]);
        if (c->vt) free(c->vt[i]);
        if (c->s) free(c->s[i]);
    }
    free(c->kh);
    free(c->vt);
    free(c->s);
    free(c);
}

int bert_ctx_max_tokens(const bert_ctx_t *c)
{
    return c->cap;
}
int bert_ctx_threads(const bert_ctx_t *c)
{
    return c->nth;
}

/* ---- forward ---- */

typedef enum { POST_BIAS = 0, POST_GELU, POST_RESID } post_t;

/* Y[T, rows] = X[T, n] W^T + b, then GELU or + R (residual [T, rows]). */
typedef struct {
    const float *W, *Wp, *b, *X, *R;
    bert_gemm_fn gemm;
    float *Y;
    int n, rows, T;
    post_t post;
} mm_t;

static void mm_task(void *arg, int ith, int nth)
{
    const mm_t *t = arg;
    int r0, r1;
    if (t->gemm) {
        /* whole panels of BERT_GEMM_NR columns per thread */
        int np = t->rows / BERT_GEMM_NR, per = np / nth, rem = np % nth;
        int p0 = ith * per + (ith < rem ? ith : rem), p1 = p0 + per + (ith < rem);
        r0 = p0 * BERT_GEMM_NR;
        r1 = p1 * BERT_GEMM_NR;
        if (r0 >= r1) return;
        t->gemm(t->Wp, t->n, p0, p1, t->X, t->n, t->T, t->Y, t->rows);
    } else {
        pool_split(t->rows, ith, nth, &r0, &r1);
        if (r0 >= r1) return;
        kern_matmul(GGML_F32, t->W, t->n, r0, r1, NULL, t->X, t->n, t->T, t->Y, t->rows);
    }
    for (int b = 0; b < t->T; b++) {
        float *y = t->Y + (size_t)b * t->rows;
        switch (t->post) {
        case POST_BIAS:
            for (int r = r0; r < r1; r++)
                y[r] += t->b[r];
            break;
        case POST_GELU:
            for (int r = r0; r < r1; r++) {
                float v = y[r] + t->b[r];
                y[r] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
            }
            break;
        case POST_RESID: {
            const float *res = t->R + (size_t)b * t->rows;
            for (int r = r0; r < r1; r++)
                y[r] += t->b[r] + res[r];
            break;
        }
        }
    }
}

static void matmul(bert_ctx_t *c, const float *W, const float *Wp, const float *b, const float *X,
                   int n, int rows, int T, float *Y, post_t post, const float *R)
{
    mm_t t = {W, Wp, b, X, R, Wp ? c->m->gemm : NULL, Y, n, rows, T, post};
    pool_run(c->pool, mm_task, &t);
}

/* LayerNorm of T rows of H in src into dst (may alias) */
typedef struct {
    const float *src, *g, *b;
    float *dst;
    int T, H;
    float eps;
} ln_t;

static void ln_task(void *arg, int ith, int nth)
{
    const ln_t *t = arg;
    int per = (t->T + nth - 1) / nth, r0 = ith * per, r1 = r0 + per < t->T ? r0 + per : t->T;
    for (int r = r0; r < r1; r++) {
        const float *x = t->src + (size_t)r * t->H;
        float *y = t->dst + (size_t)r * t->H;
        float mean = 0, var = 0;
        for (int i = 0; i < t->H; i++)
            mean += x[i];
        mean /= (float)t->H;
        for (int i = 0; i < t->H; i++) {
            float d = x[i] - mean;
            var += d * d;
        }
        var /= (float)t->H;
        float inv = 1.0f / sqrtf(var + t->eps);
        for (int i = 0; i < t->H; i++)
            y[i] = (x[i] - mean) * inv * t->g[i] + t->b[i];
    }
}

static void layernorm(bert_ctx_t *c, const float *src, float *dst, const float *g, const float *b,
                      int T)
{
    ln_t t = {src, g, b, dst, T, c->m->hidden, c->m->eps};
    pool_run(c->pool, ln_task, &t);
}

/* Self-attention of every (sequence, head) pair: att = softmax(q k^T / sqrt(dh)) v */
typedef struct {
    bert_ctx_t *c;
    const int *off, *len;
    int n_seq;
} att_t;

static void att_task(void *arg, int ith, int nth)
{
    const att_t *t = arg;
    const bert_t *m = t->c->m;
    const int H = m->hidden, dh = m->head_dim, nh = m->n_heads, H3 = 3 * H;
    const float scale = 1.0f / sqrtf((float)dh);
    float *kh = t->c->kh[ith], *vt = t->c->vt[ith], *s = t->c->s[ith];
    for (int job = ith; job < t->n_seq * nh; job += nth) {
        int q = job / nh, h = job % nh;
        int L = t->len[q], o = t->off[q];
        const float *qkv = t->c->qkv + (size_t)o * H3;
        /* kh [L, dh] = keys of head h; vt [dh, L] = values transposed */
        for (int j = 0; j < L; j++) {
            memcpy(kh + (size_t)j * dh, qkv + (size_t)j * H3 + H + h * dh,
                   (size_t)dh * sizeof(float));
            const float *v = qkv + (size_t)j * H3 + 2 * H + h * dh;
            for (int d = 0; d < dh; d++)
                vt[(size_t)d * L + j] = v[d];
        }
        /* s [L, L]: row i = q_i . k_j */
        kern_matmul(GGML_F32, kh, dh, 0, L, NULL, qkv + h * dh, H3, L, s, L);
        for (int i = 0; i < L; i++) {
            float *row = s + (size_t)i * L, mx = -INFINITY, sum = 0;
            for (int j = 0; j < L; j++) {
                row[j] *= scale;
                if (row[j] > mx) mx = row[j];
            }
            for (int j = 0; j < L; j++)
                row[j] -= mx;
            kern_expf(row, row, L);
            for (int j = 0; j < L; j++)
                sum += row[j];
            float inv = 1.0f / sum;
            for (int j = 0; j < L; j++)
                row[j] *= inv;
        }
        /* att rows o.., columns h*dh..: P [L, L] x V [L, dh] = rows of vt . P rows */
        kern_matmul(GGML_F32, vt, L, 0, dh, NULL, s, L, L, t->c->att + (size_t)o * H + h * dh, H);
    }
}

int bert_embed(bert_ctx_t *c, const int32_t *const *ids, const int *lens, int n_seq, float *out)
{
    const bert_t *m = c->m;
    const int H = m->hidden;
    int T = 0;
    if (n_seq < 0) return BAR_ERR_INVALID;
    for (int i = 0; i < n_seq; i++) {
        if (lens[i] < 1 || lens[i] > m->max_tokens || T + lens[i] > c->cap) return BAR_ERR_INVALID;
        for (int j = 0; j < lens[i]; j++)
            if (ids[i][j] < 0 || ids[i][j] >= m->n_vocab) return BAR_ERR_INVALID;
        T += lens[i];
    }
    if (n_seq == 0) return 0;
    int *off = malloc(2 * (size_t)n_seq * sizeof *off);
    if (!off) return BAR_ERR_NOMEM;
    int *len = off + n_seq;
    /* embeddings: word + position + token type 0 */
    for (int i = 0, o = 0; i < n_seq; i++) {
        off[i] = o;
        len[i] = lens[i];
        for (int j = 0; j < lens[i]; j++) {
            float *x = c->x + (size_t)(o + j) * H;
            const float *w = m->tok_emb + (size_t)ids[i][j] * H;
            const float *p = m->pos_emb + (size_t)j * H;
            for (int d = 0; d < H; d++)
                x[d] = w[d] + p[d] + m->type_emb[d];
        }
        o += lens[i];
    }
    layernorm(c, c->x, c->x, m->emb_ln_g, m->emb_ln_b, T);
    att_t at = {c, off, len, n_seq};
    for (int l = 0; l < m->n_layers; l++) {
        const layer_t *L = &m->layers[l];
        matmul(c, L->wqkv, L->pqkv, L->bqkv, c->x, H, 3 * H, T, c->qkv, POST_BIAS, NULL);
        pool_run(c->pool, att_task, &at);
        matmul(c, L->wo, L->po, L->bo, c->att, H, H, T, c->tmp, POST_RESID, c->x);
        layernorm(c, c->tmp, c->x, L->ln1_g, L->ln1_b, T);
        matmul(c, L->w1, L->p1, L->b1, c->x, H, m->inter, T, c->ff, POST_GELU, NULL);
        matmul(c, L->w2, L->p2, L->b2, c->ff, m->inter, H, T, c->tmp, POST_RESID, c->x);
        layernorm(c, c->tmp, c->x, L->ln2_g, L->ln2_b, T);
    }
    /* mean pooling over each sequence's tokens, then L2 normalisation */
    for (int i = 0; i < n_seq; i++) {
        float *v = out + (size_t)i * H;
        for (int d = 0; d < H; d++)
            v[d] = 0;
        for (int j = 0; j < len[i]; j++) {
            const float *x = c->x + (size_t)(off[i] + j) * H;
            for (int d = 0; d < H; d++)
                v[d] += x[d];
        }
        double ss = 0;
        for (int d = 0; d < H; d++) {
            v[d] /= (float)len[i];
            ss += (double)v[d] * v[d];
        }
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int d = 0; d < H; d++)
            v[d] *= inv;
    }
    free(off);
    return 0;
}
