/* api_tenant.c — a request's tenant: key lookup (keys file, --api-key, or the
 * open server's anonymous tenants), the namespace secret, the keys file's
 * reload, the limiter states. Not for: the keys file's format (tenant.c), the
 * limiter's arithmetic (ratelimit.c). */
#include "api/api_tenant.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cache/cache_redis.h"

#define NS_MEMO 64      /* slots of api_tenants_t.ns_memo (a power of two) */
#define KEY_MEMO 64     /* slots of api_tenants_t.key_memo (a power of two) */
#define KEY_MEMO_MAX 96 /* longer keys are hashed on every request */

typedef struct {
    char name[TENANT_NAME_MAX];
    uint64_t ns; /* tenant_ns_id(secret, name, no sub-namespace) */
    int ok;      /* the slot holds name's id */
} ns_memo_t;

/* A presented key and its SHA-256. The raw key is kept (like the request
 * buffer that brought it) so a hit is an exact, constant-time comparison,
 * never a weaker hash's verdict; cleansed at destroy. */
typedef struct {
    size_t n; /* 0: empty */
    char key[KEY_MEMO_MAX];
    uint8_t d[32];
} key_memo_t;

struct api_keyset {
    int refs;
    tenant_table_t *t; /* NULL: no keys file */
};

struct api_tenants {
    const srv_settings_t *set;
    api_keyset_t *ks;   /* the current keys file */
    uint8_t secret[32]; /* namespace HMAC key */
    const char *secret_src;
    uint8_t api_key_d[32]; /* SHA-256 of --api-key */
    int has_api_key;
    rl_t *rl;
    rlr_t *rlr; /* rpm/tpm shared through Redis; NULL: local only */
    /* tenant name -> namespace id without a sub-namespace, direct-mapped:
     * the HMAC is most of an exact hit's CPU (OpenSSL fetches the MAC on
     * every call), and a request's tenant is almost always a recent one */
    ns_memo_t ns_memo[NS_MEMO];
    /* presented key -> SHA-256, direct-mapped: OpenSSL's one-shot SHA256
     * (a digest fetch per call) was ~7,000 instructions of every request
     * that carries a key, half of an exact hit's user-space work */
    key_memo_t key_memo[KEY_MEMO];
};

#define SECRET_REDIS_KEY "barista:tenant:ns-secret"

static void ks_unref(api_keyset_t *ks)
{
    if (!ks || --ks->refs > 0) return;
    tenant_table_free(ks->t);
    free(ks);
}

static int ks_load(api_keyset_t **out, const char *path, bar_msg_t *msg)
{
    api_keyset_t *ks = calloc(1, sizeof *ks);
    if (!ks) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    ks->refs = 1;
    if (path && path[0]) {
        int rc = tenant_table_load_file(&ks->t, path, msg);
        if (rc) {
            free(ks);
            return rc;
        }
    }
    *out = ks;
    return 0;
}

/* The secret shared through Redis: SET NX a fresh one, then GET whichever
 * won. A short blocking exchange at start-up (before the loop serves). */
static int secret_from_redis(const char *url, uint8_t out[32])
{
    cache_redis_url_t u;
    bar_msg_t m;
    if (cache_redis_parse_url(url, &u, &m)) return -1;
    struct timeval tv = {0, 500000};
    redisContext *rc = redisConnectWithTimeout(u.host, u.port, tv);
    if (!rc || rc->err) {
        if (rc) redisFree(rc);
        return -1;
    }
    redisSetTimeout(rc, tv);
    int ok = 1;
    redisReply *r;
    if (u.password[0]) {
        r = u.user[0] ? redisCommand(rc, "AUTH %s %s", u.user, u.password)
                      : redisCommand(rc, "AUTH %s", u.password);
        ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
    }
    uint8_t fresh[32];
    char hex[65];
    if (ok && tenant_random(fresh) == 0) {
        tenant_hex(fresh, 32, hex);
        r = redisCommand(rc, "SET %s %s NX", SECRET_REDIS_KEY, hex);
        ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
    } else {
        ok = 0;
    }
    if (ok) {
        r = redisCommand(rc, "GET %s", SECRET_REDIS_KEY);
        ok = r && r->type == REDIS_REPLY_STRING && tenant_unhex32(r->str, r->len, out) == 0;
        if (r) freeReplyObject(r);
    }
    redisFree(rc);
    return ok ? 0 : -1;
}

/* The secret kept next to the cache snapshot (PATH.ns-secret, 0600), so a
 * restart reads its own snapshot's namespaces: read it, or create it. */
static int secret_from_file(const char *snapshot, uint8_t out[32])
{
    char path[4200];
    snprintf(path, sizeof path, "%s.ns-secret", snapshot);
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            char hex[65];
            ssize_t n = read(fd, hex, 64);
            close(fd);
            return n == 64 && tenant_unhex32(hex, 64, out) == 0 ? 0 : -1;
        }
        uint8_t fresh[32];
        char hex[66];
        if (tenant_random(fresh)) return -1;
        tenant_hex(fresh, 32, hex);
        hex[64] = '\n';
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == EEXIST) continue; /* another process made it first: read theirs */
            return -1;
        }
        int ok = write(fd, hex, 65) == 65 && fsync(fd) == 0;
        close(fd);
        if (!ok) return -1;
        memcpy(out, fresh, 32);
        return 0;
    }
    return -1;
}

int api_tenants_create(api_tenants_t **out, uv_loop_t *loop, const srv_settings_t *set,
                       bar_msg_t *msg)
{
    api_tenants_t *t = calloc(1, sizeof *t);
    if (!t || !(t->rl = rl_create())) {
        free(t);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    t->set = set;
    int rc = ks_load(&t->ks, set->keys, msg);
    if (rc) {
        rl_destroy(t->rl);
        free(t);
        return rc;
    }
    if (set->api_key[0]) {
        tenant_sha256(set->api_key, strlen(set->api_key), t->api_key_d);
        t->has_api_key = 1;
    }
    if (set->namespace_secret[0]) {
        /* any string: its SHA-256 is the HMAC key */
        tenant_sha256(set->namespace_secret, strlen(set->namespace_secret), t->secret);
        t->secret_src = "flag";
    } else if (set->redis[0] && secret_from_redis(set->redis, t->secret) == 0) {
        t->secret_src = "redis";
    } else if (set->cache_file[0] && secret_from_file(set->cache_file, t->secret) == 0) {
        t->secret_src = "file";
    } else {
        if (tenant_random(t->secret)) {
            api_tenants_destroy(t);
            return bar_fail(msg, BAR_ERR_IO, "getrandom failed: no namespace secret");
        }
        t->secret_src = "process";
        if (set->redis[0])
            fprintf(stderr, "barista serve: warning: Redis unreachable at start: the cache "
                            "namespace secret is this process's own (replicas will not share "
                            "cache entries; set --namespace-secret)\n");
    }
    if (set->redis[0] && loop &&
        !(t->rlr = rlr_create(loop, set->redis, (int)set->ratelimit_wait_ms, msg))) {
        api_tenants_destroy(t);
        return BAR_ERR_INVALID;
    }
    *out = t;
    return 0;
}

void api_tenants_close(api_tenants_t *t)
{
    if (!t) return;
    rlr_t *r = t->rlr;
    t->rlr = NULL;
    rlr_destroy(r);
}

rlr_t *api_tenants_rlr(api_tenants_t *t)
{
    return t ? t->rlr : NULL;
}

void api_tenants_destroy(api_tenants_t *t)
{
    if (!t) return;
    api_tenants_close(t);
    ks_unref(t->ks);
    rl_destroy(t->rl);
    OPENSSL_cleanse(t->secret, sizeof t->secret);
    OPENSSL_cleanse(t->key_memo, sizeof t->key_memo);
    free(t);
}

int api_tenants_reload(api_tenants_t *t, bar_msg_t *msg)
{
    if (!t->set->keys[0]) return bar_fail(msg, BAR_ERR_INVALID, "no --keys file to reload");
    api_keyset_t *ks;
    int rc = ks_load(&ks, t->set->keys, msg);
    if (rc) return rc;
    ks_unref(t->ks);
    t->ks = ks;
    return 0;
}

int api_tenants_authed(const api_tenants_t *t)
{
    return t->has_api_key || t->set->keys[0];
}

const char *api_tenants_secret_source(const api_tenants_t *t)
{
    return t->secret_src;
}

uint64_t api_tenant_ns(const api_tenants_t *t, const char *name, const char *sub, size_t n)
{
    return tenant_ns_id(t->secret, name, strlen(name), sub, n);
}

/* api_tenant_ns(t, name, NULL, 0) through the memo (the secret never
 * changes after api_tenants_create, so an entry never goes stale). */
static uint64_t ns_of(api_tenants_t *t, const char *name)
{
    size_t n = strlen(name);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)name[i]) * 16777619u;
    ns_memo_t *e = &t->ns_memo[h & (NS_MEMO - 1)];
    if (e->ok && !strcmp(e->name, name)) return e->ns;
    e->ns = tenant_ns_id(t->secret, name, n, NULL, 0);
    e->ok = n < sizeof e->name; /* names are < TENANT_NAME_MAX; anything longer is not kept */
    if (e->ok) memcpy(e->name, name, n + 1);
    return e->ns;
}

/* SHA-256 of a presented key through the memo (the digest of a key never
 * changes, so an entry never goes stale). The slot is picked by FNV-1a of
 * the key; a hit needs the same length and the same bytes, compared in
 * constant time. */
static void key_digest(api_tenants_t *t, const char *key, size_t n, uint8_t d[32])
{
    if (n > KEY_MEMO_MAX) {
        tenant_sha256(key, n, d);
        return;
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    key_memo_t *e = &t->key_memo[h & (KEY_MEMO - 1)];
    if (e->n == n && !CRYPTO_memcmp(e->key, key, n)) {
        memcpy(d, e->d, 32);
        return;
    }
    tenant_sha256(key, n, d);
    memcpy(e->key, key, n);
    memcpy(e->d, d, 32);
    e->n = n;
}

int api_tenant_limited(const api_tenant_t *tn)
{
    return tn->limits.rpm > 0 || tn->limits.tpm > 0 || tn->limits.max_concurrency > 0;
}

/* The presented key: 'Authorization: Bearer K' first, else 'api-key: K'. */
static http_slice_t presented_key(const http_req_t *h)
{
    http_slice_t v = http_req_header(h, "authorization");
    if (v.p && v.n > 7 && !strncasecmp(v.p, "Bearer ", 7)) {
        v.p += 7;
        v.n -= 7;
        while (v.n && *v.p == ' ')
            v.p++, v.n--;
    } else {
        v = http_req_header(h, "api-key");
    }
    /* a field value has no trailing blanks (RFC 9110's OWS) */
    while (v.p && v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t'))
        v.n--;
    if (v.p && v.n) return v;
    return (http_slice_t){NULL, 0};
}

int api_tenant_of_key(api_tenants_t *t, const char *key, size_t n, api_tenant_t *out)
{
    memset(out, 0, sizeof *out);
    if (!api_tenants_authed(t)) {
        if (key && n) {
            uint8_t d[32];
            char hex[33];
            key_digest(t, key, n, d);
            tenant_hex(d, 16, hex);
            _Static_assert(sizeof out->name >= 5 + 33, "anon:<32 hex> fits");
            memcpy(out->name, "anon:", 5);
            memcpy(out->name + 5, hex, 33);
        }
        out->ns = ns_of(t, out->name);
        return 0;
    }
    if (!key || !n) return -1;
    uint8_t d[32];
    key_digest(t, key, n, d);
    const tenant_key_t *k = tenant_table_find_digest(t->ks->t, d);
    if (k) {
        snprintf(out->name, sizeof out->name, "%s", k->tenant);
        out->priority = k->priority;
        out->admin = k->admin;
        out->limits = k->lim;
        out->key = k;
        out->ks = t->ks;
        t->ks->refs++;
    } else if (t->has_api_key) {
        if (CRYPTO_memcmp(d, t->api_key_d, 32)) return -1;
        snprintf(out->name, sizeof out->name, "default");
    } else {
        return -1;
    }
    out->authed = 1;
    if (api_tenant_limited(out)) out->rl = rl_state(t->rl, out->name);
    out->ns = ns_of(t, out->name);
    return 0;
}

int api_tenant_resolve(api_tenants_t *t, const http_req_t *h, api_tenant_t *out)
{
    http_slice_t k = presented_key(h);
    if (api_tenant_of_key(t, k.p, k.n, out)) return -1;
    http_slice_t sub = http_req_header(h, "x-cache-namespace");
    if (sub.p && sub.n) out->ns = api_tenant_ns(t, out->name, sub.p, sub.n);
    return 0;
}

void api_tenant_release(api_tenant_t *tn)
{
    if (!tn) return;
    ks_unref(tn->ks);
    tn->ks = NULL;
    tn->key = NULL;
}

void api_tenant_copy(api_tenant_t *dst, const api_tenant_t *src)
{
    *dst = *src;
    if (dst->ks) dst->ks->refs++;
}
