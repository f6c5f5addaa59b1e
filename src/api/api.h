/* api.h — barista's HTTP API: routing and every endpoint behind `barista serve`.
 *
 * POST /v1/chat/completions, POST /v1/completions (OpenAI, streaming or not),
 * GET /v1/models[/{id}], GET /health (process up), GET /ready (model loaded),
 * GET /v1/config (the settings, secrets redacted), GET /metrics (Prometheus).
 * Unknown paths answer 404 and wrong methods 405, both with OpenAI error
 * bodies. Generation requests are tokenized here and handed to the engine;
 * engine events come back to the loop through a mutex-protected queue and a
 * uv_async_t, and are written as they arrive.
 *
 * Lifecycle: api_create → (api_set_engine once the model is loaded) → serve →
 * on shutdown: api_cancel_all when the grace period ends → engine_destroy →
 * api_destroy → run the loop until it is empty.
 *
 * Not for: sockets and HTTP framing (src/server/), the engine itself. */
#ifndef BARISTA_API_API_H
#define BARISTA_API_API_H

#include <uv.h>

#include "engine/engine.h"
#include "server/server.h"
#include "server/settings.h"
#include "util/config.h"

typedef struct api api_t;

/* `s` and `cfg` must outlive the api. Ownership: freed by api_destroy. */
int api_create(api_t **out, uv_loop_t *loop, const srv_settings_t *s, const cfg_t *cfg,
               bar_msg_t *msg);

/* The model is loaded: start serving generation requests (and /ready). The
 * engine stays owned by the caller. */
void api_set_engine(api_t *a, engine_t *e);

/* The model file's digest (cache_key_file_digest): part of every response
 * cache key, so a changed model never serves old answers. Call before
 * api_set_engine. */
void api_set_model_digest(api_t *a, const char *digest);

/* The server, for the open-connections gauge (optional). */
void api_set_server(api_t *a, srv_t *s);

/* srv_opts_t hooks: pass `a` as ud. */
void api_handle(void *ud, srv_req_t *r);
void api_on_response(void *ud, const char *label, int status);

/* Cancel every generation still running (shutdown grace is over). Their
 * responses end normally with finish_reason "length". */
void api_cancel_all(api_t *a);

/* Generations not yet finished by the engine. */
int api_n_generations(const api_t *a);

/* Deliver queued engine events now (after engine_destroy, so every
 * generation's memory is released). */
void api_drain_events(api_t *a);

/* Close the async handle; the api is freed when the loop runs its close
 * callback. Call after engine_destroy. */
void api_destroy(api_t *a);

#endif
