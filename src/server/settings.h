/* settings.h — every `barista serve` setting, declared once.
 *
 * srv_settings_table() is the one table (util/config.h) behind the serve
 * flags, the config file, the BARISTA_* environment variables, `barista serve
 * --help` and GET /v1/config. Adding a setting = one field here + one table
 * row in settings.c. Not for: per-request parameters. */
#ifndef BARISTA_SERVER_SETTINGS_H
#define BARISTA_SERVER_SETTINGS_H

#include "util/config.h"

typedef struct {
    char host[256];
    long long port;
    char model[16384];                 /* "[NAME=]PATH" lines; "" = the fetched default model */
    char models[4096];                 /* YAML model list file, "" = none */
    char model_id[256];                /* "" = the model file's basename */
    char embedding_model[4096];        /* "[NAME=]PATH" | "auto" | "none" */
    long long embedding_cache_entries; /* feature cache: texts whose vectors are kept */
    long long token_cache_bytes;       /* feature cache: prompt text -> token ids, bytes */
    char config[4096];                 /* config file path (flag or env only) */
    long long threads;                 /* 0 = number of cores */
    long long ctx;                     /* 0 = the model's, capped by the engine */
    long long parallel;                /* sequences decoded together */
    long long kv_mem;                  /* paged KV cache bytes; 0 = parallel x ctx positions */
    long long max_body_bytes;
    long long max_header_bytes;
    long long max_connections;
    long long header_timeout_ms;
    long long body_timeout_ms;
    long long idle_timeout_ms;
    long long shutdown_grace_ms;
    long long sse_ping_ms;
    long long max_tokens_default;
    long long write_queue_bytes;      /* socket back-pressure bound per connection */
    long long send_buffer_bytes;      /* SO_SNDBUF for connections; 0 = the OS default */
    long long stream_buffer_bytes;    /* max undelivered text per stream before it is cancelled */
    long long request_timeout_ms;     /* total generation deadline; 0 = none */
    long long first_token_timeout_ms; /* budget for the first token; 0 = none */
    long long inter_token_timeout_ms; /* stream stall detector; 0 = off */
    long long max_queue;              /* waiting requests per model before 503; 0 = none */
    int admission;                    /* refuse what cannot meet its budget */
    char api_key[256];                /* "" = no authentication */
    char keys[4096];                  /* keys file (YAML, docs/TENANTS.md); "" = none */
    char namespace_secret[256];       /* HMAC key of cache namespaces; "" = Redis's or generated */
    long long ratelimit_wait_ms;      /* longest wait for Redis's rate-limit verdict */
    char access_log[4096];            /* access log file, "-" = stdout, "" / "none" = off */
    /* exact-match response cache (docs/CACHE.md) */
    long long cache_mem;            /* L1 byte budget; 0 = no L1 */
    long long cache_ttl_s;          /* default TTL of a stored reply; 0 = none */
    long long cache_max_ttl_s;      /* cap on a client's max-age as a TTL */
    char cache_policy[16];          /* "s3fifo" | "lru" */
    int cache_sampled;              /* cache sampled requests without a max-age opt-in */
    int semantic_cache;             /* the semantic tier (needs an embedding model) */
    char semantic_threshold[32];    /* cosine similarity a semantic hit needs, "0.xx" */
    long long semantic_max_entries; /* semantic tier: entries kept (oldest go first) */
    char redis[1024];               /* L2 URL; "" = no L2 */
    long long redis_timeout_ms;     /* L2 GET timeout */
    long long redis_stall_ms;       /* any command unanswered this long drops the connection */
    char cache_file[4096];          /* snapshot path; "" = none */
    long long cache_snapshot_s;     /* periodic snapshot period; 0 = only at shutdown */
    char admin_key[256];            /* "" = admin API off */
    /* Files + Batch API, Prefer: respond-async (docs/BATCH.md) */
    char data_dir[4096];            /* files and batches; "" = the Files/Batch API is off */
    long long batch_max_file_bytes; /* per uploaded file (→ 413) */
    long long batch_max_lines;      /* requests per batch input file (→ 400) */
    long long batch_max_files;      /* files one owner may keep (→ 400) */
    long long batch_concurrency;    /* batch lines in flight at once; 0 = the model's slots - 1 */
    long long async_ttl_s;          /* how long a respond-async result is kept */
} srv_settings_t;

/* The table and its length. */
const cfg_opt_t *srv_settings_table(size_t *n);

/* Bind a settings object (and its n-entry source array) to the table. */
cfg_t srv_settings_cfg(srv_settings_t *s, cfg_source_t *src);

/* Number of settings (the size the source array needs). */
size_t srv_settings_count(void);

#endif
