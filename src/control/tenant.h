/* tenant.h — API keys and the tenants they belong to: the keys file
 * (`--keys FILE`, YAML), the lookup of a presented key, and the keyed hashes
 * that name a tenant's cache namespace (docs/TENANTS.md).
 *
 * The file holds SHA-256 digests of the keys, never a key: a presented key
 * is hashed and its digest compared with every entry's in constant time, so
 * neither the key's length nor which byte differs shows in the timing.
 *
 *   keys:
 *     - key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
 *       tenant: team-a
 *       models: [smollm2]      # absent = every model
 *       rpm: 60                # requests per minute, absent/0 = no limit
 *       tpm: 20000             # tokens per minute (prompt + max_tokens)
 *       max_concurrency: 4     # requests in flight
 *       priority: 0            # lower runs sooner; a request can only raise it
 *       admin: false           # may use the cache admin API for any tenant
 *
 * Not for: HTTP (src/api/), counting requests (ratelimit.h). */
#ifndef BARISTA_CONTROL_TENANT_H
#define BARISTA_CONTROL_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define TENANT_NAME_MAX 64         /* bytes with the NUL: names are 1..63 of [A-Za-z0-9._:@-] */
#define TENANT_FILE_MAX (4u << 20) /* a keys file larger than this is refused */
#define TENANT_MODEL_NAME_MAX 128  /* as MODEL_NAME_MAX */
#define TENANT_PRIORITY_MIN (-1000)
#define TENANT_PRIORITY_MAX 1000

/* A tenant's limits; 0 = none. Keys of one tenant must agree on them. */
typedef struct {
    long long rpm;       /* requests per minute */
    long long tpm;       /* tokens per minute */
    int max_concurrency; /* requests in flight */
} tenant_limits_t;

/* One key of the file. */
typedef struct {
    uint8_t digest[32]; /* SHA-256 of the key */
    char tenant[TENANT_NAME_MAX];
    char (*models)[TENANT_MODEL_NAME_MAX]; /* allowed model names */
    int n_models;                          /* -1: every model */
    tenant_limits_t lim;
    int priority;
    int admin;
} tenant_key_t;

typedef struct {
    tenant_key_t *v;
    int n;
} tenant_table_t;

/* Parse a keys file held in memory (src names it in messages). The whole
 * file is checked before *out is set: 0 and a table (tenant_table_free), or
 * BAR_ERR_FORMAT / RANGE / NOMEM with "src:line: what" in msg. */
int tenant_table_load_mem(tenant_table_t **out, const char *yaml, size_t n, const char *src,
                          bar_msg_t *msg);
/* The same from a file. BAR_ERR_IO when it cannot be read. */
int tenant_table_load_file(tenant_table_t **out, const char *path, bar_msg_t *msg);
/* NULL is fine. */
void tenant_table_free(tenant_table_t *t);

/* The entry whose digest is SHA-256(key[0..n)), or NULL. Every entry is
 * compared, in constant time each. */
const tenant_key_t *tenant_table_find(const tenant_table_t *t, const char *key, size_t n);
/* The same by the key's SHA-256 (the caller hashed it, e.g. through a memo). */
const tenant_key_t *tenant_table_find_digest(const tenant_table_t *t, const uint8_t d[32]);

/* Whether the key may use the model named `name` (its resolved name). */
int tenant_key_allows(const tenant_key_t *k, const char *name);

/* Whether name[0..n) is a valid tenant name. */
int tenant_name_ok(const char *name, size_t n);

/* SHA-256 and HMAC-SHA256 (OpenSSL's libcrypto). */
void tenant_sha256(const void *p, size_t n, uint8_t out[32]);
void tenant_hmac(const uint8_t *key, size_t kn, const void *p, size_t n, uint8_t out[32]);

/* The namespace id of (tenant, sub): the first 4 bytes of
 * HMAC(secret, tenant) then the first 4 of HMAC(secret, tenant NUL sub)
 * (sub absent or empty: HMAC(secret, tenant) again), big-endian. The high
 * half names the tenant, so every sub-namespace of one tenant shares it. */
uint64_t tenant_ns_id(const uint8_t secret[32], const char *tenant, size_t tn, const char *sub,
                      size_t sn);

/* 32 random bytes (getrandom). 0 or BAR_ERR_IO. */
int tenant_random(uint8_t out[32]);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void tenant_hex(const uint8_t *p, size_t n, char *out);
/* Parse 64 hex digits into 32 bytes: 0 or -1. */
int tenant_unhex32(const char *p, size_t n, uint8_t out[32]);

#endif
