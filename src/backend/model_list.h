/* model_list.h — the one place models are configured: a YAML model list in
 * the shape LiteLLM users already write (its config.yaml), plus the
 * `--model NAME=PATH` / `--model PATH` command-line form, into one checked
 * table of model entries.
 *
 * File shape (parsed with libyaml; block or flow style):
 *
 *   model_list:
 *     - model_name: smol                 # what requests put in "model"
 *       litellm_params:
 *         model: local/models/smol.gguf  # "local/" + GGUF path
 *         threads: 2                     # these three: server-wide if absent
 *         ctx: 2048
 *         parallel: 4
 *         temperature: 0.7               # sampling defaults for requests
 *         top_p: 0.9                     # that leave the field out
 *         top_k: 40
 *         min_p: 0.05
 *         repeat_penalty: 1.1
 *         presence_penalty: 0
 *         frequency_penalty: 0
 *         max_tokens: 256
 *         seed: 42
 *       default: true                    # or model_info: {default: true}
 *     - model_name: all-MiniLM-L6-v2     # an embedding model (POST /v1/embeddings)
 *       litellm_params:
 *         model: local/models/all-MiniLM-L6-v2   # its folder (model.safetensors,
 *         threads: 1                             # tokenizer.json/vocab.txt, config.json)
 *       model_info:
 *         mode: embedding                # LiteLLM's key; "chat" / "completion" = a GGUF
 *
 * Rules (each broken rule is an error at start-up, never a silent fallback):
 * - Top level is a mapping. `model_list` is required and must be a non-empty
 *   sequence of mappings. router_settings (read once, after the entries:
 *   the upstream groups' model_router_t and its `fallbacks`, below; given
 *   twice is an error) and litellm_settings (only its `fallbacks`) are
 *   read; general_settings and environment_variables are ignored; any other
 *   top-level key is an error. One YAML document per file.
 * - Entry keys: model_name (required), litellm_params (required), default,
 *   model_info (a mapping or empty; its `default` and `mode` are read,
 *   other keys are ignored), fallbacks (below; not on a replica group's
 *   later entries). Any other entry key, and any litellm_params key not
 *   listed above, is an error naming the key and the entry. A key given
 *   twice in one mapping is an error. YAML merge keys (`<<`) are not
 *   supported.
 * - litellm_params.model is "local/" + a path; the path is used as
 *   written when absolute, and joined to base_dir when relative ("local//abs"
 *   is the absolute "/abs"). No `~` or variable expansion. "openai/NAME" or
 *   "hosted_vllm/NAME" is an upstream (model_upstream_t, docs/GATEWAY.md);
 *   any other provider prefix is BAR_ERR_UNSUPPORTED.
 * - model_name: 1..127 characters of [A-Za-z0-9._:/-], not "default" (the
 *   reserved alias for the default model), unique in the list except for
 *   upstream entries: several of one name are one replica group. Any scalar
 *   style.
 * - Numbers must be plain (unquoted) decimal scalars: `ctx: 2048`, not
 *   `ctx: "2048"`; integer fields take integers only; no .inf/.nan, hex or
 *   underscores; explicit tags (`!!str`) are not looked at. Booleans are
 *   plain true/false (also True, TRUE, False, FALSE). Ranges, inclusive
 *   unless stated: threads 1..1024, ctx 16..1048576, parallel 1..1024,
 *   temperature 0..2, top_p 0..1, top_k 0..2147483647, min_p 0..1,
 *   repeat_penalty 0 < x <= 10, presence_penalty and frequency_penalty
 *   -2..2, max_tokens 1..9223372036854775807, seed 0..9223372036854775807.
 * - model_info.mode (LiteLLM's): "chat" or "completion" (the default: a
 *   GGUF served by /v1/chat/completions and /v1/completions) or "embedding"
 *   (a sentence-transformers folder served by /v1/embeddings); other modes
 *   are BAR_ERR_UNSUPPORTED. An embedding entry takes only `model` and
 *   `threads` in litellm_params: ctx, parallel and the sampling fields are
 *   errors on it.
 * - At most one entry per mode is marked default; at most MODEL_LIST_MAX
 *   entries; at least one chat entry (model_list_finish).
 *
 * Fallback chains (latency control; src/control/fallback.h): an entry key
 * `fallbacks: [STEP, ...]` and/or LiteLLM's
 *   router_settings:            # or litellm_settings:
 *     fallbacks: [{"smol": ["smol-q4_0", "static:Busy, try again."]}]
 * (a sequence of one-key mappings NAME: [STEP, ...]; NAME an entry of the
 * same file). Steps are non-empty strings of at most 1024 bytes, at most
 * MODEL_FALLBACK_STEPS per entry; all places append to the entry's chain:
 * the entry key's steps first, then litellm_settings', then
 * router_settings'. What a step means, and whether the model it names
 * exists, is checked by fallback_check at start-up; NAME and a model step
 * may be an upstream replica group. Other keys of litellm_settings are
 * ignored.
 *
 * Error codes: BAR_ERR_IO (file cannot be read), BAR_ERR_FORMAT (not YAML, or
 * the wrong shape or scalar type), BAR_ERR_INVALID (unknown key, bad or
 * duplicate name, second default, empty list, bad --model argument),
 * BAR_ERR_RANGE (value out of range, path or file too long, too many
 * entries), BAR_ERR_UNSUPPORTED (upstream provider or key), BAR_ERR_NOMEM.
 * Messages start with "FILE:LINE: " ("FILE: " where no line applies; FILE
 * is the path given to model_list_load_file, "<memory>" for
 * model_list_load_mem, "--model" for model_list_add_arg) and name the entry
 * as `model "NAME"` or, before its name is known, `model_list[I]` (0-based).
 * Text from the input is quoted with non-printable bytes shown as '?'.
 *
 * Not for: loading the models (src/engine/), upstream backends (a later
 * issue), or server-wide settings (src/server/settings.c). */
#ifndef BARISTA_BACKEND_MODEL_LIST_H
#define BARISTA_BACKEND_MODEL_LIST_H

#include <stddef.h>

#include "util/err.h"

#define MODEL_NAME_MAX 128             /* model_entry_t.name size incl. NUL: names are 1..127 */
#define MODEL_PATH_MAX 4096            /* model_entry_t.path size incl. NUL */
#define MODEL_LIST_MAX 1024            /* most entries one list holds */
#define MODEL_LIST_FILE_MAX (4u << 20) /* largest model list file, bytes */
#define MODEL_FALLBACKS_MAX 2048       /* model_entry_t.fallbacks size: all steps, NULs incl. */
#define MODEL_FALLBACK_STEPS 16        /* most steps one chain holds */

typedef enum {
    MODEL_KIND_LOCAL = 1, /* a GGUF file run by the local engine */
    MODEL_KIND_UPSTREAM,  /* OpenAI-compatible servers (model_list.ups) */
} model_kind_t;

/* What an entry serves (model_info.mode). */
typedef enum {
    MODEL_MODE_CHAT = 0,  /* generation: /v1/chat/completions, /v1/completions */
    MODEL_MODE_EMBEDDING, /* /v1/embeddings */
} model_mode_t;

/* model_entry_t.has: which sampling defaults the entry sets */
enum {
    MODEL_HAS_TEMPERATURE = 1u << 0,
    MODEL_HAS_TOP_P = 1u << 1,
    MODEL_HAS_TOP_K = 1u << 2,
    MODEL_HAS_MIN_P = 1u << 3,
    MODEL_HAS_REPEAT_PENALTY = 1u << 4,
    MODEL_HAS_PRESENCE_PENALTY = 1u << 5,
    MODEL_HAS_FREQUENCY_PENALTY = 1u << 6,
    MODEL_HAS_MAX_TOKENS = 1u << 7,
    MODEL_HAS_SEED = 1u << 8,
};

/* One configured model. A sampling field whose MODEL_HAS_* bit is clear is 0
 * and means nothing: the request's value or the engine's default applies. */
typedef struct {
    char name[MODEL_NAME_MAX]; /* model_name: what requests put in "model"; NUL-terminated */
    model_kind_t kind;
    model_mode_t mode;                /* chat (a GGUF) or embedding (a model folder) */
    char path[MODEL_PATH_MAX];        /* local GGUF path or embedding model folder, resolved
                                         against base_dir */
    int is_default;                   /* "default: true" (or model_info.default) */
    long long threads, ctx, parallel; /* -1 = the server-wide setting */
    double temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    long long top_k, max_tokens, seed;
    double timeout; /* seconds for a whole reply (LiteLLM's), 0 = none */
    unsigned has;   /* MODEL_HAS_* */
    /* the fallback chain (src/control/fallback.h gives the steps meaning):
     * n_fallbacks strings, each NUL-terminated, one after the other */
    char fallbacks[MODEL_FALLBACKS_MAX];
    int n_fallbacks;
    int line; /* 1-based line of the entry in its file; 0 for --model entries */
} model_entry_t;

#define MODEL_URL_MAX 512 /* model_upstream_t.api_base size incl. NUL */
#define MODEL_KEY_MAX 512 /* model_upstream_t.api_key size incl. NUL */

/* One upstream deployment (a replica of its entry's group): litellm_params
 * of an entry whose model is "openai/NAME" or "hosted_vllm/NAME". */
typedef struct {
    int entry;                    /* index of its group's model_entry_t in model_list_t.v */
    char api_base[MODEL_URL_MAX]; /* http(s)://host[:port][/path], no trailing '/'; the
                                     OpenAI paths (/chat/completions) are appended; a base
                                     without "/v1" at its end gets "/v1" */
    char model[MODEL_NAME_MAX];   /* the upstream's model id (NAME) */
    char api_key[MODEL_KEY_MAX];  /* the key as written ("" none; "os.environ/VAR": read at
                                     start). Never printed. */
    double timeout;               /* seconds per attempt, 0 = the default (600) */
    long long rpm, tpm;           /* requests / tokens per minute, counted by this process;
                                     a replica at its limit is not picked (0 = none) */
    long long max_parallel;       /* max_parallel_requests: requests it serves at once, for
                                     the group's wait estimate (0 = unknown) */
    double weight;                /* simple-shuffle weight, default 1 */
    int line;
} model_upstream_t;

typedef enum {
    ROUTE_LATENCY = 0, /* "latency-based-routing": P2C over peak-EWMA × (in-flight + 1) */
    ROUTE_LEAST_BUSY,  /* "least-busy": fewest in flight */
    ROUTE_SHUFFLE,     /* "simple-shuffle": weighted random */
} model_route_t;

/* router_settings (LiteLLM's names), for every upstream group. */
typedef struct {
    model_route_t strategy;
    int num_retries;        /* other replicas tried after a failure, default 2 */
    int allowed_fails;      /* consecutive failures that eject a replica, default 3 */
    double cooldown_time;   /* seconds of the first ejection, default 5 */
    int hedge;              /* "hedging: true" (barista's key): a second attempt on another
                               replica after the group's p95 time to first byte */
    double health_interval; /* health_check_interval: seconds between active checks
                               (GET <api_base>/models on each replica), 0 = off */
} model_router_t;
/* The sampling defaults a model brings itself: what a parameter gets when
 * neither the request nor the model's list entry sets it. `from_file` has a
 * MODEL_HAS_* bit for each value its GGUF's general.sampling.* keys gave;
 * the rest are barista's (llama.cpp's server: temperature 0.8, top_k 40,
 * top_p 0.95, min_p 0.05, repeat_penalty 1; docs/SERVE.md, "Sampling
 * defaults"). */
typedef struct {
    double temperature, top_p, min_p, repeat_penalty;
    int top_k;
    unsigned from_file;
} model_sampling_t;

/* The table. Start from a zeroed struct (`model_list_t l = {0};`), add with
 * the load/add functions, then call model_list_finish once; release with
 * model_list_free. v[0..n) are the entries in the order added; default_idx
 * is the default chat entry's index and embed_idx the default embedding
 * entry's or -1 (both valid after a successful finish). The list owns v. */
typedef struct {
    model_entry_t *v;
    int n, cap;
    int default_idx;
    int embed_idx;
    model_upstream_t *ups; /* upstream replicas, n_ups of them, grouped by .entry */
    int n_ups, cap_ups;
    model_router_t router;
    int has_router; /* router_settings was read (else the defaults apply) */
} model_list_t;

/* Read the YAML file at path (at most MODEL_LIST_FILE_MAX bytes) and append
 * its entries to l; relative model paths resolve against the folder of path
 * (kept relative when path has no '/'). 0, or an error with msg naming the
 * file and line; on error l is as it was before the call. path is borrowed. */
int model_list_load_file(model_list_t *l, const char *path, bar_msg_t *msg);

/* Same from yaml[0..n) (need not be NUL-terminated; borrowed); relative
 * model paths join base_dir (NULL or "" keeps them as written). Messages
 * name the source "<memory>". On error l is as it was before the call. */
int model_list_load_mem(model_list_t *l, const char *yaml, size_t n, const char *base_dir,
                        bar_msg_t *msg);

/* Append one entry from a --model argument: "NAME=PATH" (split at the first
 * '=', so a path may contain '=' in this form) or "PATH" (name = the file's
 * basename without a trailing ".gguf" in any case, which must then be a
 * valid name). The path is used as written; all tuning fields are -1 and no
 * sampling defaults are set. BAR_ERR_INVALID for an empty argument, name or path,
 * a bad, reserved or duplicate name; on error l is unchanged. arg is
 * borrowed. */
int model_list_add_arg(model_list_t *l, const char *arg, bar_msg_t *msg);

/* Append one embedding entry from --embedding-model: "NAME=PATH" or "PATH",
 * PATH the model's folder (a path ending in ".safetensors" names the file
 * inside it: its folder is used). Without NAME the name is the folder's
 * basename (all-MiniLM-L6-v2). Same errors as model_list_add_arg. */
int model_list_add_embedding(model_list_t *l, const char *arg, bar_msg_t *msg);

/* Whether the list has an embedding entry. */
int model_list_has_embedding(const model_list_t *l);

/* Call once after all loads and adds: BAR_ERR_INVALID when the list has no
 * chat entry; otherwise sets default_idx to the chat entry marked default,
 * else the first chat entry, and embed_idx to the embedding entry marked
 * default, else the first embedding entry, else -1. */
int model_list_finish(model_list_t *l, bar_msg_t *msg);

/* The entry requests name with name[0..n) (a slice, need not be
 * NUL-terminated): "default" gives the default chat entry, anything else an exact,
 * case-sensitive name match. NULL when there is none. The pointer is
 * borrowed from l and valid until the next add or model_list_free. */
const model_entry_t *model_list_find(const model_list_t *l, const char *name, size_t n);

/* Release v and zero l (safe on a zeroed or already freed list). */
void model_list_free(model_list_t *l);

#endif
