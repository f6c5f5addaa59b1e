/* api_int.h — what api.c (routing, admin endpoints) and gen.c (generation
 * requests) share. Not a public interface. */
#ifndef BARISTA_API_API_INT_H
#define BARISTA_API_API_INT_H

#include <pthread.h>
#include <stdint.h>

#include "api/api.h"
#include "api/api_cache.h"
#include "api/openai.h"
#include "obs/metrics.h"

typedef struct gen gen_t;
typedef struct gen_ev gen_ev_t;

struct api {
    uv_loop_t *loop;
    const srv_settings_t *set;
    const cfg_t *cfg;
    engine_t *engine; /* NULL while loading */
    const tok_t *tok;
    int n_ctx;
    char model_id[256];
    long created;
    obs_metrics_t *metrics;
    srv_t *srv;
    uv_async_t async;   /* engine thread → loop */
    pthread_mutex_t mu; /* guards ev_head/ev_tail */
    gen_ev_t *ev_head, *ev_tail;
    gen_t *gens; /* generations awaiting their DONE event */
    int n_gens;
    int n_work;       /* prompts being tokenized on the thread pool */
    int async_closed; /* api_destroy ran and the async handle is closed */
    uint64_t rng;     /* response ids */
    int chat_ok;      /* the model's chat template is usable */
    int chat_tmpl;    /* chat_tmpl_t */
    char chat_err[256];
    api_cache_t *cache; /* the response cache (docs/CACHE.md) */
};

/* Answer an error with an OpenAI body. */
void api_send_error(srv_req_t *r, const oai_err_t *e);
void api_error(srv_req_t *r, int status, const char *type, const char *code, const char *param,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Free the api once it is destroyed and no thread-pool work refers to it. */
void api_maybe_free(api_t *a);

/* POST /v1/chat/completions and /v1/completions. */
void gen_handle(api_t *a, srv_req_t *r, oai_kind_t kind);

/* engine_cancel every unfinished generation (reason "shutdown"). */
void gen_cancel_all(api_t *a);

/* single-flight hook: the last client of a generation left (cancel it). */
void gen_on_sf_empty(void *ctx, sf_entry_t *e);

/* uv_async_t callback: deliver queued engine events. */
void gen_on_async(uv_async_t *h);

#endif
