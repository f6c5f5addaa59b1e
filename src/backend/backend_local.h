/* backend_local.h — the local engine as a backend (backend.h): one loaded
 * GGUF, its tokenizer and chat template, its engine thread and slots.
 *
 * It renders chat messages with the model's template, tokenizes (on the libuv
 * thread pool for big prompts, so the loop stays free), submits token ids to
 * the engine, and turns the engine's token events (engine thread) into
 * text-level bk_event_t on the loop thread (a mutex-protected queue plus
 * uv_async_t). Not for: JSON, caching, HTTP. */
#ifndef BARISTA_BACKEND_BACKEND_LOCAL_H
#define BARISTA_BACKEND_BACKEND_LOCAL_H

#include <uv.h>

#include "backend/backend.h"
#include "backend/model_list.h"
#include "engine/engine.h"

/* Wrap a loaded engine. The backend owns it from now on (bk_destroy calls
 * engine_destroy). max_tokens_default applies when a request gives none.
 * 0, or BAR_ERR_NOMEM. The loop must run until the backend's handles close
 * after bk_destroy. */
int backend_local_create(backend_t **out, uv_loop_t *loop, engine_t *e, int max_tokens_default,
                         bar_msg_t *msg);

/* Keep a feature cache of prompt text -> token ids of max_bytes
 * (engine/tokenizer_cache.h; 0: none, the default). Call once after
 * backend_local_create, before the first submit. 0, BAR_ERR_INVALID (not a
 * local backend) or BAR_ERR_NOMEM. */
int backend_local_set_token_cache(backend_t *b, size_t max_bytes);

/* The engine (for the model id and stats); valid until bk_destroy. */
engine_t *backend_local_engine(backend_t *b);

/* The sampling defaults of b's model (model_list.h): barista's, with every
 * general.sampling.{temp,top_k,top_p,min_p,penalty_repeat} its GGUF carries
 * (in range) taking precedence. 0, or -1 when b is not a local backend. */
int backend_local_sampling_defaults(const backend_t *b, model_sampling_t *out);

#endif
