/* api_int.h — what the files of src/api/ share: the api object, the models
 * it serves, and the client/generation nouns of the request path. Not a
 * public interface (api.h is).
 *
 * Files, each calling only those after it: api.c (lifecycle, the route table,
 * plain endpoints) → pipeline.c (the generation request path, stage by
 * stage) → gen.c (generations and the clients following them) → models.c
 * (the served models, sampling defaults), api_cache.c (cache tiers, keys,
 * admin endpoints), reply.c (reply bytes, error replies), route.c. */
#ifndef BARISTA_API_API_INT_H
#define BARISTA_API_API_INT_H

#include <stdint.h>

#include "api/api.h"
#include "api/api_cache.h"
#include "api/api_tenant.h"
#include "api/openai.h"
#include "api/tools.h"
#include "backend/backend.h"
#include "backend/model_list.h"
#include "obs/metrics.h"

typedef struct gen gen_t;
typedef struct client client_t;
typedef struct api_file api_file_t;
typedef struct batches batches_t;
typedef struct async_tab async_tab_t;

/* A request's use of the semantic tier (api_semantic.c). */
typedef struct api_sem {
    char *text; /* the embedded query text (chat: last user message; completions: prompt) */
    size_t text_len;
    uint64_t part;  /* semantic_partition of everything else that shapes the answer */
    double min_sim; /* the threshold for this request (cosine similarity) */
    int lookup;     /* read (not Cache-Control: no-cache) */
    int store;      /* write (not no-store) */
    float *vec;     /* the query's embedding once computed, dim floats */
    int dim;
    backend_t *bk; /* the embedding job while pending */
    uint64_t job;
    int pending;
    void (*done)(client_t *c, int ok);
} api_sem_t;
typedef struct embed_job embed_job_t;

/* /v1/embeddings counters (written by embed_job.c only). */
typedef struct {
    uint64_t requests, failed, cancelled; /* answered 200 / answered with an error / cancelled */
    uint64_t inputs, tokens;              /* of answered requests */
} api_embed_stats_t;

/* One served model: a name requests route by, its settings, its backend. */
typedef struct {
    model_entry_t cfg;                  /* name, path, per-model settings, sampling defaults */
    backend_t *bk;                      /* NULL while loading */
    char digest[CACHE_KEY_HEX_LEN + 1]; /* weights digest: part of every cache key */
    int n_ctx;
    int embed_dim;         /* embedding models: vector size once known, else 0 */
    model_sampling_t dflt; /* the model's own sampling defaults (local models) */
    int has_dflt;
    long created;
} api_model_t;

struct api {
    uv_loop_t *loop;
    const srv_settings_t *set;
    const cfg_t *cfg;
    api_model_t *models;
    int n_models;
    int default_idx;
    int embed_idx; /* the default embedding model, -1: none */
    int n_ready;   /* models with a backend */
    long created;
    obs_metrics_t *metrics;
    srv_t *srv;
    gen_t *gens; /* generations not yet DONE */
    int n_gens;
    int destroyed;                 /* api_destroy ran: free once the last generation ends */
    void (*on_last_gen)(api_t *a); /* gen.c calls it when n_gens drops to 0 */
    /* pipeline.c's fallback runner (pipeline_fallback), called by gen.c when a
     * budget ran out before any byte went out; a pointer, so gen.c does not
     * call back up into pipeline.c */
    int (*fallback)(client_t *c);
    uv_timer_t closer; /* closed by api_destroy: the api is never freed before its callback */
    int closed;
    uint64_t rng; /* response ids */
    api_cache_t *cache;
    gram_cache_t *grams;    /* compiled response_format / tool schemas, shared by all requests */
    api_tenants_t *tenants; /* keys, namespace ids, rate limits */
    embed_job_t *embeds;    /* /v1/embeddings requests waiting for their backend */
    int n_embeds;
    api_embed_stats_t emb;
    /* Files + Batch API (files.c, batches*.c), respond-async (async.c) */
    api_file_t *files; /* newest first; NULL list without --data-dir */
    int files_on;      /* --data-dir given and usable */
    batches_t *batches;
    async_tab_t *async;
    int n_work; /* disk jobs on the libuv thread pool: the api outlives them */
};

/* ---- models.c ---- */

/* The model a request names ("" and "default" → the default chat model), or
 * NULL. Any mode: the caller checks cfg.mode. */
api_model_t *api_model_find(api_t *a, const char *name);

/* The same for /v1/embeddings: "" and "default" → the default embedding
 * model (NULL when none is served); other names as api_model_find. */
api_model_t *api_model_find_embedding(api_t *a, const char *name);

/* The sampling values actually used: the request's, the model's defaults for
 * what it left out, OpenAI's for the rest. */
void api_model_sampling(const api_model_t *m, const oai_req_t *q, bk_sampling_t *sp);

/* What only the model can check in q: n within its parallel sequences,
 * logit_bias ids within its vocabulary. 0, or a 400 naming the field in *e
 * (a negative status). Nothing while the model is loading. */
int api_model_check(const api_model_t *m, const oai_req_t *q, oai_err_t *e);

/* Request q for model m's backend (cb/user left for the caller); tenant: the
 * namespace it comes from (its namespace id as hex; borrowed for bk_submit). *msgs is the
 * caller's to free after bk_submit. 0 or BAR_ERR_NOMEM. */
int api_model_backend_req(const api_model_t *m, const oai_req_t *q, size_t body_bytes,
                          const char *tenant, bk_req_t *br, bk_msg_t **msgs);

/* ---- files.c: POST/GET/DELETE /v1/files[...] ---- */

#define API_OWNER_LEN 64
#define API_PATH_MAX                                                                               \
    8448 /* --data-dir (4095) + a file or batch name */ /* hex digits of an owner id, at most */

/* Who owns what a request creates, as hex (the only place that says it):
 * SHA-256 of the tenant's name and the request's X-Cache-Namespace, so it
 * stays the same across restarts and replicas (the namespace id's secret may
 * not) and one tenant's sub-namespaces stay apart, as their caches do. */
void api_owner_of(const api_tenant_t *tn, const http_req_t *h, char out[API_OWNER_LEN + 1]);

struct api_file {
    char id[48];
    char owner[API_OWNER_LEN + 1];
    char filename[256];
    char purpose[24]; /* "batch" | "batch_output" */
    long long bytes;
    long lines; /* non-empty lines */
    long created;
    api_file_t *next;
};

/* Load the files under --data-dir (start-up; blocking). 0 or an error. */
int files_init(api_t *a, bar_msg_t *msg);
void files_free(api_t *a);
/* /v1/files and /v1/files/{id}[/content]; rest is what follows "/v1/files/". */
void files_handle(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn);
/* The file id of owner, or NULL (another owner's file is not there). */
api_file_t *files_find(api_t *a, const char *id, const char *owner);
/* Path of a file's bytes (or, suffix ".json", its metadata). */
void files_path(const api_t *a, const char *id, const char *suffix, char *out, size_t size);
/* Register a file whose bytes are already at files_path(id, ".jsonl"):
 * write its metadata (blocking, small) and list it. 0 or an error. */
int files_add(api_t *a, const api_file_t *f, bar_msg_t *msg);
/* Answer 404 "the Files/Batch API needs --data-dir" when it is off: -1. */
int files_check_on(api_t *a, srv_req_t *r);

/* A request under /v1/files/ or /v1/batches/ that names one item. */
typedef struct {
    char owner[API_OWNER_LEN + 1]; /* the request's owner (api_owner_of) */
    http_slice_t id;               /* the item's id: rest up to the first '/' */
    int sub;                       /* the id is followed by `sub` ("/content", "/cancel") */
} api_route_path_t;

/* A handler of a collection (POST creates, GET lists) for owner. */
typedef void (*api_collection_fn)(api_t *a, srv_req_t *r, const char *owner);

/* The prologue the Files and Batches handlers share; rest is what follows
 * base + "/". Returns 1 when rest names one item (p->owner, p->id, p->sub
 * set: the caller goes on), or 0 when it answered the request itself: 404
 * when the API is off (no --data-dir) or rest is neither "{id}" nor "{id}"
 * + sub, and for the collection (rest empty) post or get, by method. */
int files_route_split(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn,
                      const char *base, const char *sub, api_collection_fn post,
                      api_collection_fn get, api_route_path_t *p);

/* ---- batches.c, batches_run.c, batches_state.c: /v1/batches[...] ---- */

/* Read the batch records (start-up; blocking; no loop handle yet). */
int batches_init(api_t *a, bar_msg_t *msg);
/* Start the runner and resume the unfinished batches. */
void batches_start(api_t *a);
void batches_handle(api_t *a, srv_req_t *r, http_slice_t rest, const api_tenant_t *tn);
/* Shutdown: start nothing new; give up running lines (they run again on resume). */
void batches_stop(api_t *a);
void batches_free(api_t *a);
/* The batch gauges and counters in Prometheus text. */
void batches_metrics(const api_t *a, buf_t *b);

/* ---- async.c: Prefer: respond-async ---- */

/* Whether h asks for respond-async (RFC 7240 Prefer). */
int async_wanted(const http_req_t *h);
/* Run a chat/completions request in the background: 202 + Location now. */
void async_start(api_t *a, srv_req_t *r, oai_kind_t kind, api_tenant_t *tn);
/* GET /v1/async/{id}. */
void async_handle(api_t *a, srv_req_t *r, http_slice_t id, const api_tenant_t *tn);
void async_stop(api_t *a);
void async_free(api_t *a);

/* ---- api_obs.c ---- */

/* /metrics: the per-model gauges under vLLM's names (running, waiting, KV use). */
void api_obs_gauges(api_t *a, buf_t *b);
/* GET /dashboard: the embedded page. */
void api_dashboard_page(api_t *a, srv_req_t *r);
/* GET /v1/dashboard/snapshot: the dashboard's JSON (docs/METRICS.md). */
void api_dashboard_snapshot(api_t *a, srv_req_t *r);

/* ---- pipeline.c ---- */

/* POST /v1/chat/completions and /v1/completions, for tenant tn (moved into
 * the request: the caller no longer releases it). */
void pipeline_handle(api_t *a, srv_req_t *r, oai_kind_t kind, api_tenant_t *tn);

/* c's budget will be missed (admission) or ran out before any byte of its
 * reply went out, and c follows no generation: answer it with the next
 * usable step of its model's fallback chain (control/fallback.h), or 504
 * (type "timeout") when the chain is exhausted. 1: c was taken over (it may
 * be freed); 0: the model has no chain, c is untouched. */
int pipeline_fallback(client_t *c);

/* ---- embed_job.c ---- */

/* POST /v1/embeddings for tenant tn (borrowed: its model list applies). */
void embed_handle(api_t *a, srv_req_t *r, const api_tenant_t *tn);
/* Cancel every embeddings request still waiting (503 to each): shutdown. */
void embed_cancel_all(api_t *a);
/* The embeddings and feature-cache counters in Prometheus text. */
void embed_metrics(const api_t *a, buf_t *b);

/* ---- api_semantic.c ---- */

/* Decide whether c (cacheable, keyed) uses the semantic tier and set c->sem
 * (the query text and the partition, made from the body root with the query
 * taken out, keyed like in). 0 (c->sem may stay NULL), or -1 with e: a bad
 * X-Semantic-Cache header (400). */
int api_sem_prepare(client_t *c, const cJSON *root, const api_cache_keyin_t *in, oai_err_t *e);
/* Embed c's query on the embedding backend: 1 started (done(c, ok) comes
 * later on the loop, unless api_sem_cancel), 0 not (go on without). */
int api_sem_embed(client_t *c, void (*done)(client_t *c, int ok));
/* The client left: cancel a pending embedding (done never comes). */
void api_sem_cancel(client_t *c);
/* Store the finished reply of request q (already in the exact tiers) in the
 * semantic tier. */
void api_sem_store(api_t *a, const api_cache_req_t *q, const api_sem_t *s);
void api_sem_free(api_sem_t *s);

/* ---- gen.c: one HTTP request waiting for a generation ---- */

struct client {
    api_t *a;
    api_model_t *m;
    gen_t *g;       /* the generation it follows; NULL before */
    client_t *next; /* in g->clients */
    srv_req_t *r;   /* NULL once answered or once the client is gone */
    struct sse *sse;
    oai_req_t q; /* parsed request (a leader's moves to its generation) */
    oai_kind_t kind;
    int stream, include_usage, want_lp;
    int started; /* the reply has begun (SSE head out, or JSON owed) */
    api_cache_req_t cq;
    const char *xcache; /* "MISS" | "COALESCED" | "BYPASS"; NULL: cache off */
    cache_walk_t *walk; /* pending tier lookup */
    api_sem_t *sem;     /* the semantic tier's part of this request, NULL: not used */
    int sem_hit;        /* answered from the semantic tier with similarity sem_sim */
    float sem_sim;
    cache_key_t sem_key;  /* the semantic candidate being fetched from the exact tiers */
    double deadline;      /* absolute monotonic seconds, 0 = none */
    double t0;            /* when the request arrived */
    double ttft_deadline; /* the first token by then (absolute), 0 = none */
    double itl_s;         /* stream: at most this between tokens, 0 = off */
    double last_tok;      /* when the last token reached this client */
    int got_tok;          /* a token reached this client */
    uv_timer_t timer;     /* the nearest of the budgets above */
    int timer_on;
    oai_resp_t resp;
    char id[48];
    buf_t text;             /* non-stream: all text; stream: not yet written (forced tool
                               calls streamed: all text, tstream.pos of it written) */
    tools_stream_t tstream; /* forced tool calls streamed live (tools.h) */
    struct lp_list *lp;     /* same split as text */
    api_tenant_t tenant;    /* who asks (released by client_free) */
    int rl_held;            /* holds a concurrency slot / a charge: settled in client_free */
    int rl_redis;           /* the tokens were charged in Redis (corrected there) */
    long long rl_tokens;    /* the tokens asked for at admission */
    long long rl_reserved, rl_used; /* tokens charged at admission / really used (-1: unknown) */
    struct rlr_op *rl_op;           /* a Redis check in flight */
    void (*rl_cont)(client_t *c);   /* where the pipeline goes on once admitted */
    struct cJSON *root;             /* the parsed body while the limit stage waits */
    cache_entry_t *memo_hit;        /* the memo's L1 entry while the limit stage waits */
    /* fallback chain (pipeline_fallback): the model whose chain applies (the
     * one the request named), NULL until a step ran; the next step to try;
     * the step answering (X-Fallback, "barista_fallback"), "" = none */
    api_model_t *fb_origin;
    int fb_next;
    char fb[MODEL_NAME_MAX + 8];
    /* n > 1: choices 1..n-1 (choice 0 is text/lp above) and each choice's end */
    int n_choices;
    struct client_choice *more;     /* [n_choices - 1] */
    unsigned char ended[OAI_N_MAX]; /* bk_finish_t once choice i ended, 0 while it runs */
};

/* The tenant of a request (for the batch API and other callers). */
const api_tenant_t *api_client_tenant(const client_t *c);

/* A miss: start a generation for c on its model's backend. */
void gen_start(client_t *c);
/* A twin of a generation in flight: follow it (or start one if it ended). */
void gen_join(client_t *c, sf_entry_t *sfe);
/* Answer c from a stored entry at once, and free c. */
void gen_reply_entry(client_t *c, cache_entry_t *e, const char *tier);
/* Answer c with text (a static fallback step) as a complete reply or
 * stream, and free c. */
void gen_reply_text(client_t *c, const char *text, size_t len);
/* Free a client that is not attached to a generation. */
void client_free(client_t *c);
/* Arm (or re-arm) c's budget timer for the nearest of its deadline, its
 * first-token deadline (until a token came) and its inter-token bound
 * (streams, after the first token). Nothing when none applies. */
void client_arm_deadline(client_t *c);

/* Wait for an asynchronous cache tier: disconnects reach the client. */
void client_wait(client_t *c);

/* Cancel every unfinished generation (shutdown). */
void gen_cancel_all(api_t *a);
/* single-flight hook: the last client of a generation left. */
void gen_on_sf_empty(void *ctx, sf_entry_t *e);

#endif
