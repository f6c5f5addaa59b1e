/* api_semantic.c — the semantic tier as the request path uses it: what a
 * request embeds (chat: the last user message; completions: a string
 * prompt), the partition (everything else that shapes the answer, hashed),
 * the per-request controls (X-Semantic-Cache, Cache-Control), the embedding
 * job, and the store at the end of a generation. The stage itself (lookup,
 * hit, miss) is in pipeline.c; the store and the guard in src/cache/
 * (semantic.h), which knows no OpenAI field names. Loop thread only. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"

void api_sem_free(api_sem_t *s)
{
    if (!s) return;
    free(s->text);
    free(s->vec);
    free(s);
}

/* X-Semantic-Cache: "off" | "min-similarity=X" (X in [0, 1]; a value below
 * the server's threshold is ignored: a request can only be stricter).
 * 0, or -1 with e set (400). */
static int parse_header(http_slice_t v, double thr, int *off, double *min_sim, oai_err_t *e)
{
    *off = 0;
    *min_sim = thr;
    if (!v.p) return 0;
    char buf[64];
    size_t n = 0;
    for (size_t i = 0; i < v.n && n + 1 < sizeof buf; i++)
        if (!isspace((unsigned char)v.p[i])) buf[n++] = (char)tolower((unsigned char)v.p[i]);
    buf[n] = '\0';
    if (!strcmp(buf, "off")) {
        *off = 1;
        return 0;
    }
    if (!strncmp(buf, "min-similarity=", 15)) {
        char *end = NULL;
        double x = strtod(buf + 15, &end);
        if (end != buf + 15 && !*end && x >= 0 && x <= 1) {
            if (x > thr) *min_sim = x;
            return 0;
        }
    }
    oai_err(e, 400, "invalid_request_error", "invalid_value", NULL,
            "X-Semantic-Cache must be 'off' or 'min-similarity=X' with X a cosine similarity "
            "in [0, 1].");
    return -1;
}

int api_sem_prepare(client_t *c, const cJSON *root, const api_cache_keyin_t *in, oai_err_t *e)
{
    api_t *a = c->a;
    c->sem = NULL;
    if (!api_cache_semantic_on(a->cache) || !c->cq.cacheable) return 0;
    if (c->cq.no_cache && c->cq.no_store) return 0;
    if (a->embed_idx < 0 || !a->models[a->embed_idx].bk) return 0; /* none, or loading */
    int off;
    double min_sim;
    if (parse_header(http_req_header(srv_req_http(c->r), "x-semantic-cache"),
                     api_cache_semantic_threshold(a->cache), &off, &min_sim, e))
        return -1;
    if (off) return 0;
    /* the query text, and the body with it taken out (the partition) */
    const char *text = NULL;
    size_t text_len = 0;
    cJSON *dup = cJSON_Duplicate(root, 1);
    if (!dup) return 0;
    if (c->kind == OAI_CHAT) {
        int last = -1;
        for (int i = 0; i < c->q.n_msgs; i++)
            if (!strcmp(c->q.msgs[i].role, "user")) last = i;
        cJSON *msgs = cJSON_GetObjectItemCaseSensitive(dup, "messages");
        cJSON *m = last >= 0 ? cJSON_GetArrayItem(msgs, last) : NULL;
        cJSON *role = m ? cJSON_GetObjectItemCaseSensitive(m, "role") : NULL;
        if (!m || !cJSON_IsString(role) || strcmp(role->valuestring, "user")) {
            cJSON_Delete(dup);
            return 0; /* no user turn, or the parse and the tree disagree */
        }
        text = c->q.msgs[last].content;
        text_len = c->q.msgs[last].content_len;
        cJSON_ReplaceItemInObjectCaseSensitive(m, "content", cJSON_CreateNull());
    } else {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(dup, "prompt");
        if (!cJSON_IsString(p) || !c->q.prompt) {
            cJSON_Delete(dup);
            return 0; /* token or batch prompts: exact tier only */
        }
        text = c->q.prompt;
        text_len = c->q.prompt_len;
        cJSON_ReplaceItemInObjectCaseSensitive(dup, "prompt", cJSON_CreateNull());
    }
    if (!text || !text_len) {
        cJSON_Delete(dup);
        return 0;
    }
    cache_key_ctx_t kc = {in->endpoint, in->model, in->digest,   "", 0,
                          in->skip,     in->extra, in->extra_len};
    cache_key_t pk;
    bar_msg_t m = {{0}};
    int rc = cache_key_make(&pk, dup, &kc, &m);
    cJSON_Delete(dup);
    if (rc) return 0;
    api_sem_t *s = calloc(1, sizeof *s);
    if (!s || !(s->text = malloc(text_len + 1))) {
        free(s);
        return 0;
    }
    memcpy(s->text, text, text_len);
    s->text[text_len] = '\0';
    s->text_len = text_len;
    s->part = semantic_partition(pk.b, sizeof pk.b);
    s->min_sim = min_sim;
    s->lookup = !c->cq.no_cache;
    s->store = !c->cq.no_store;
    c->sem = s;
    return 0;
}

static void on_embedded(void *user, const bk_embed_result_t *r)
{
    client_t *c = user;
    api_sem_t *s = c->sem;
    s->pending = 0;
    int ok = !r->err && r->n == 1 && r->dim > 0 && r->vecs;
    if (ok && (s->vec = malloc((size_t)r->dim * sizeof *s->vec))) {
        memcpy(s->vec, r->vecs, (size_t)r->dim * sizeof *s->vec);
        s->dim = r->dim;
    } else {
        ok = 0;
    }
    s->done(c, ok);
}

int api_sem_embed(client_t *c, void (*done)(client_t *c, int ok))
{
    api_t *a = c->a;
    api_sem_t *s = c->sem;
    if (!s || s->vec || s->pending || a->embed_idx < 0) return 0;
    backend_t *bk = a->models[a->embed_idx].bk;
    if (!bk) return 0;
    const char *texts[1] = {s->text};
    size_t lens[1] = {s->text_len};
    bk_embed_req_t br = {0};
    br.n = 1;
    br.texts = texts;
    br.lens = lens;
    br.cb = on_embedded;
    br.user = c;
    s->done = done;
    bar_msg_t m = {{0}};
    if (bk_embed(bk, &br, &s->job, &m)) return 0; /* busy: go on without the tier */
    s->bk = bk;
    s->pending = 1;
    return 1;
}

void api_sem_cancel(client_t *c)
{
    if (c->sem && c->sem->pending) {
        bk_cancel(c->sem->bk, c->sem->job);
        c->sem->pending = 0;
    }
}

void api_sem_store(api_t *a, const api_cache_req_t *q, const api_sem_t *s)
{
    if (!s || !s->vec || !s->store || q->no_store) return;
    semantic_t *st = api_cache_semantic(a->cache, s->dim);
    if (!st) return;
    int64_t now = api_cache_now_ms();
    uint64_t ttl = api_cache_ttl_ms(a->cache, q);
    semantic_put_t p = {
        q->key, q->ns, s->part, s->vec, s->text, s->text_len, ttl ? now + (int64_t)ttl : 0};
    if (!semantic_put(st, &p, now)) api_cache_semantic_share(a->cache, &p, s->dim);
}
