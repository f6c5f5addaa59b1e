/* settings.c — the serve settings table (see settings.h). */
#include "server/settings.h"

#include <stddef.h>

#define F(name) offsetof(srv_settings_t, name)
#define STR(name) CFG_STR, F(name), sizeof(((srv_settings_t *)0)->name)
#define INT(name) CFG_INT, F(name), 0
#define BOOL(name) CFG_BOOL, F(name), 0
#define MAXI 1000000000000LL

static const cfg_opt_t table[] = {
    {"host", 0, STR(host), "127.0.0.1", 0, 0, "ADDR", "address to listen on (0.0.0.0 for all)", 0},
    {"port", 'p', INT(port), "8080", 0, 65535, "PORT", "TCP port (0 = pick a free one)", 0},
    {"model", 'm', STR(model), "", 0, 0, "[NAME=]PATH",
     "a GGUF model to serve, as NAME (default: the file name without .gguf); repeat for "
     "several models [default: the fetched default model, see below]",
     CFG_APPEND},
    {"models", 0, STR(models), "", 0, 0, "FILE",
     "YAML model list in LiteLLM's shape (model_list: model_name + litellm_params), see "
     "docs/SERVE.md (no environment variable: BARISTA_MODELS names the models folder)",
     CFG_NO_ENV},
    {"model-id", 0, STR(model_id), "", 0, 0, "NAME",
     "model id served by /v1/models [default the file name without .gguf]", 0},
    {"embedding-model", 0, STR(embedding_model), "auto", 0, 0, "[NAME=]PATH|auto|none",
     "embedding model folder (sentence-transformers layout: model.safetensors, tokenizer, "
     "config) served on POST /v1/embeddings as NAME (default: the folder name); auto = the "
     "fetched all-MiniLM-L6-v2 when present (unless --models lists one); none or "
     "--no-embedding-model = no embedding model",
     CFG_NO_NONE},
    {"embedding-cache-entries", 0, INT(embedding_cache_entries), "10000", 0, 100000000, "N",
     "feature cache of the embedding model: recent texts whose vectors are kept (0 = off)", 0},
    {"token-cache-bytes", 0, INT(token_cache_bytes), "16777216", 0, 1LL << 40, "BYTES",
     "feature cache of each local model: recent prompts' token ids, at most this many bytes "
     "(0 = off)",
     0},
    {"config", 'c', STR(config), "", 0, 0, "FILE", "config file of 'name = value' lines",
     CFG_NO_FILE},
    {"threads", 't', INT(threads), "0", 0, 1024, "N", "matmul threads (0 = number of cores)", 0},
    {"ctx", 0, INT(ctx), "0", 0, 1 << 20, "N",
     "context length per sequence (0 = the model's, capped at 8192)", 0},
    {"parallel", 0, INT(parallel), "8", 1, 256, "N", "sequences decoded together", 0},
    {"kv-mem", 0, INT(kv_mem), "0", 0, 1LL << 40, "BYTES",
     "memory of the paged KV cache shared by all sequences and the prefix cache (0 = parallel x "
     "ctx positions: 1.5 GB, reserved virtually, for the default model at ctx 8192)",
     0},
    {"max-body-bytes", 0, INT(max_body_bytes), "1048576", 1, 1LL << 32, "BYTES",
     "largest request body accepted (larger: 413)", 0},
    {"max-header-bytes", 0, INT(max_header_bytes), "16384", 256, 1 << 20, "BYTES",
     "largest request line + headers accepted (larger: 431)", 0},
    {"max-connections", 0, INT(max_connections), "1024", 1, 1000000, "N",
     "open connections; further ones get 503 and are closed", 0},
    {"header-timeout-ms", 0, INT(header_timeout_ms), "10000", 1, MAXI, "MS",
     "time allowed to send the request line and headers (then 408)", 0},
    {"body-timeout-ms", 0, INT(body_timeout_ms), "30000", 1, MAXI, "MS",
     "time allowed to send the request body (then 408)", 0},
    {"idle-timeout-ms", 0, INT(idle_timeout_ms), "60000", 1, MAXI, "MS",
     "keep-alive: close a connection idle this long between requests", 0},
    {"shutdown-grace-ms", 0, INT(shutdown_grace_ms), "10000", 0, MAXI, "MS",
     "on SIGTERM/SIGINT, let in-flight requests finish this long, then cancel them", 0},
    {"sse-ping-ms", 0, INT(sse_ping_ms), "5000", 0, MAXI, "MS",
     "send an SSE comment after this much silence on a stream (0 = never)", 0},
    {"max-tokens-default", 0, INT(max_tokens_default), "512", 1, 1 << 20, "N",
     "max_tokens when a request gives none (always capped by the context)", 0},
    {"write-queue-bytes", 0, INT(write_queue_bytes), "65536", 1024, 1LL << 30, "BYTES",
     "unsent bytes per connection above which a stream stops writing and coalesces", 0},
    {"send-buffer-bytes", 0, INT(send_buffer_bytes), "0", 0, 1LL << 30, "BYTES",
     "kernel send buffer per connection (SO_SNDBUF; 0 = the OS default)", 0},
    {"stream-buffer-bytes", 0, INT(stream_buffer_bytes), "1048576", 1024, 1LL << 32, "BYTES",
     "undelivered output (text and logprobs) per stream above which the reader is too slow: "
     "cancel",
     0},
    {"request-timeout-ms", 0, INT(request_timeout_ms), "0", 0, MAXI, "MS",
     "deadline for a whole generation (0 = none); past it the reply ends early", 0},
    {"first-token-timeout-ms", 0, INT(first_token_timeout_ms), "0", 0, MAXI, "MS",
     "budget for the first token of a generation (0 = none); X-First-Token-Timeout-Ms can lower it",
     0},
    {"inter-token-timeout-ms", 0, INT(inter_token_timeout_ms), "0", 0, MAXI, "MS",
     "a stream that produces no token for this long ends with finish_reason \"timeout\" (0 = off)",
     0},
    {"admission", 0, BOOL(admission), "true", 0, 1, NULL,
     "refuse at once (503 overloaded) a request whose first token cannot come within its "
     "budget, by the measured costs (--no-admission: let it queue and time out)",
     0},
    {"max-queue", 0, INT(max_queue), "0", 0, 1000000, "N",
     "requests waiting for a model's engine beyond which new ones get 503 overloaded (0 = no "
     "bound)",
     0},
    {"api-key", 0, STR(api_key), "", 0, 0, "KEY",
     "require 'Authorization: Bearer KEY' on /v1/* (empty = open); one tenant, 'default'",
     CFG_SECRET},
    {"keys", 0, STR(keys), "", 0, 0, "FILE",
     "API keys file (YAML: key_sha256, tenant, models, rpm, tpm, max_concurrency, priority; "
     "docs/TENANTS.md); reloaded on SIGHUP",
     0},
    {"namespace-secret", 0, STR(namespace_secret), "", 0, 0, "SECRET",
     "key of the HMAC that names tenants' cache namespaces (empty = kept in Redis, or one per "
     "process)",
     CFG_SECRET},
    {"ratelimit-wait-ms", 0, INT(ratelimit_wait_ms), "20", 1, 10000, "MS",
     "longest wait for Redis's rate-limit verdict; past it (or with Redis down) this replica's "
     "own limiter decides",
     0},
    {"access-log", 0, STR(access_log), "", 0, 0, "FILE|-",
     "access log: one JSON line per request appended to FILE, or to stdout with '-' (empty or "
     "--no-access-log = off; docs/METRICS.md)",
     CFG_NO_NONE},
    {"cache-mem", 0, INT(cache_mem), "268435456", 0, 1LL << 40, "BYTES",
     "response cache (L1) memory budget; 0 disables the in-process cache", 0},
    {"cache-ttl-s", 0, INT(cache_ttl_s), "3600", 0, MAXI, "S",
     "how long a cached reply lives unless the request says max-age (0 = until evicted)", 0},
    {"cache-max-ttl-s", 0, INT(cache_max_ttl_s), "86400", 1, MAXI, "S",
     "upper bound on a client's Cache-Control max-age when it sets how long a reply is kept", 0},
    {"cache-policy", 0, STR(cache_policy), "s3fifo", 0, 0, "s3fifo|lru",
     "response cache eviction policy", 0},
    {"cache-sampled", 0, BOOL(cache_sampled), "false", 0, 1, NULL,
     "cache sampled (temperature > 0, no seed) requests without a Cache-Control opt-in", 0},
    {"semantic-cache", 0, BOOL(semantic_cache), "false", 0, 1, NULL,
     "semantic cache tier: answer a cacheable request from a stored reply to a question with "
     "the same meaning (needs the embedding model; docs/CACHE.md)",
     0},
    {"semantic-threshold", 0, STR(semantic_threshold), "0.95", 0, 0, "SIM",
     "cosine similarity (0..1, not a distance) a semantic hit needs, on top of the guard", 0},
    {"semantic-max-entries", 0, INT(semantic_max_entries), "100000", 1, 100000000, "N",
     "semantic tier: entries kept in the vector index (the oldest go first)", 0},
    {"redis", 0, STR(redis), "", 0, 0, "URL",
     "shared L2 response cache: redis://[[user]:pass@]host[:port][/db] (empty = none)", CFG_SECRET},
    {"redis-timeout-ms", 0, INT(redis_timeout_ms), "5", 1, 60000, "MS",
     "L2 lookup timeout; slower answers count as misses", 0},
    {"redis-stall-ms", 0, INT(redis_stall_ms), "1000", 10, 600000, "MS",
     "any Redis command unanswered this long drops the connection (a hung Redis); purges then "
     "report l2 failed",
     0},
    {"cache-file", 0, STR(cache_file), "", 0, 0, "PATH",
     "response cache snapshot: loaded at start, written periodically and at shutdown", 0},
    {"cache-snapshot-s", 0, INT(cache_snapshot_s), "300", 0, MAXI, "S",
     "write the cache snapshot this often (0 = only at shutdown)", 0},
    {"admin-key", 0, STR(admin_key), "", 0, 0, "KEY",
     "enable the cache admin API (DELETE /v1/cache, GET /v1/cache/stats) for this bearer key",
     CFG_SECRET},
    {"data-dir", 0, STR(data_dir), "", 0, 0, "DIR",
     "where the Files and Batch API keep uploaded files, batches and their results (created if "
     "missing); empty = the Files/Batch API is off (its routes answer 404)",
     0},
    {"batch-max-file-bytes", 0, INT(batch_max_file_bytes), "104857600", 1, MAXI, "BYTES",
     "largest file POST /v1/files takes (413 above; --max-body-bytes must allow it too)", 0},
    {"batch-max-lines", 0, INT(batch_max_lines), "50000", 1, 10000000, "N",
     "most requests (lines) in one batch input file (400 above)", 0},
    {"batch-max-files", 0, INT(batch_max_files), "1000", 1, 10000000, "N",
     "most files one owner (API key namespace) may keep, batch outputs included (400 above)", 0},
    {"batch-concurrency", 0, INT(batch_concurrency), "0", 0, 4096, "N",
     "batch lines running at once across all batches (0 = the model's --parallel minus one, at "
     "least 1); lines start only while no request waits for an engine slot",
     0},
    {"async-ttl-s", 0, INT(async_ttl_s), "600", 1, MAXI, "S",
     "how long the result of a 'Prefer: respond-async' request is kept for GET /v1/async/{id}", 0},
};

const cfg_opt_t *srv_settings_table(size_t *n)
{
    *n = sizeof table / sizeof table[0];
    return table;
}

size_t srv_settings_count(void)
{
    return sizeof table / sizeof table[0];
}

cfg_t srv_settings_cfg(srv_settings_t *s, cfg_source_t *src)
{
    cfg_t c = {table, sizeof table / sizeof table[0], s, src, "BARISTA_"};
    return c;
}
