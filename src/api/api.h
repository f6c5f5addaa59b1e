/* api.h — barista's HTTP API: routing and every endpoint behind `barista serve`.
 *
 * POST /v1/chat/completions, POST /v1/completions (OpenAI, streaming or not),
 * POST /v1/embeddings (an embedding model of the list),
 * GET /v1/models[/{id}], GET /health (process up), GET /ready (model loaded),
 * GET /v1/config (the settings, secrets redacted), GET /metrics (Prometheus).
 * Unknown paths answer 404 and wrong methods 405, both with OpenAI error
 * bodies. Generation requests go through the pipeline (pipeline.c) to a
 * backend; its events are written as they arrive.
 *
 * Several models: each is a backend (backend.h) chosen by the request's
 * "model"; "default" names the default one.
 *
 * Lifecycle: api_create → api_set_backend as each model loads → serve → on
 * shutdown: api_cancel_all when the grace period ends → api_destroy → run
 * the loop until it is empty.
 *
 * Not for: sockets and HTTP framing (src/server/), the engine itself. */
#ifndef BARISTA_API_API_H
#define BARISTA_API_API_H

#include <uv.h>

#include "backend/backend.h"
#include "backend/model_list.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/config.h"

typedef struct api api_t;

/* `s`, `cfg` must outlive the api; `models` is copied (at least one entry).
 * Ownership: api_destroy. */
int api_create(api_t **out, uv_loop_t *loop, const srv_settings_t *s, const cfg_t *cfg,
               const model_list_t *models, bar_msg_t *msg);

/* Model i (models->v[i]) is loaded: serve it through backend b, whose
 * replies are cached under the weights' digest. The api owns b from now on
 * (bk_destroy in api_destroy). */
void api_set_backend(api_t *a, int i, backend_t *b, const char *digest);

/* Model i's backend, or NULL while it loads. */
backend_t *api_backend(api_t *a, int i);

/* The server, for the open-connections gauge (optional). */
void api_set_server(api_t *a, srv_t *s);

/* srv_opts_t hooks: pass `a` as ud. */
void api_handle(void *ud, srv_req_t *r);
void api_on_response(void *ud, const obs_trace_t *t);

/* Cancel every generation still running (shutdown grace is over). Streams
 * whose head went out end with finish_reason "timeout"; replies not yet
 * started get 503. */
void api_cancel_all(api_t *a);

/* Re-read the --keys file (SIGHUP): 0, or a negative code with msg and the
 * old keys stay in force. Connections and requests in flight are untouched. */
int api_reload_keys(api_t *a, bar_msg_t *msg);

/* Generations not yet finished. */
int api_n_generations(const api_t *a);

/* Stop every backend (their jobs end now or on the next loop turns), close
 * the cache; the api is freed on a later loop turn, once its last generation
 * has ended (until then the server may still report responses to it). Run
 * the loop until it is empty afterwards. */
void api_destroy(api_t *a);

#endif
