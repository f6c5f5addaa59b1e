/* tenant.c — the keys file (YAML, libyaml's document API walked over a fixed
 * shape: top mapping → `keys` sequence → entry mappings → scalars or one
 * sequence of model names, so aliases and deep nesting cannot make it loop),
 * constant-time key lookup, and the namespace hashes (libcrypto's SHA-256 and
 * HMAC). Not for: request handling (src/api/), rate limits (ratelimit.c). */
#include "control/tenant.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <yaml.h>

/* ---- hashes ---- */

void tenant_sha256(const void *p, size_t n, uint8_t out[32])
{
    SHA256(p ? p : (const void *)"", n, out);
}

void tenant_hmac(const uint8_t *key, size_t kn, const void *p, size_t n, uint8_t out[32])
{
    unsigned len = 32;
    HMAC(EVP_sha256(), key, (int)kn, p ? p : (const void *)"", n, out, &len);
}

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

uint64_t tenant_ns_id(const uint8_t secret[32], const char *tenant, size_t tn, const char *sub,
                      size_t sn)
{
    uint8_t h[32], s[32];
    tenant_hmac(secret, 32, tenant, tn, h);
    if (!sub || !sn) return (uint64_t)be32(h) << 32 | be32(h + 4);
    /* tenant NUL sub */
    char small[TENANT_NAME_MAX + 1 + 512];
    size_t need = tn + 1 + sn;
    char *buf = need <= sizeof small ? small : malloc(need);
    if (!buf) { /* out of memory: the sub-namespace cut to what fits */
        buf = small;
        tn = tn < TENANT_NAME_MAX ? tn : TENANT_NAME_MAX;
        sn = sizeof small - 1 - tn;
        need = sizeof small;
    }
    memcpy(buf, tenant, tn);
    buf[tn] = '\0';
    memcpy(buf + tn + 1, sub, sn);
    tenant_hmac(secret, 32, buf, need, s);
    if (buf != small) free(buf);
    return (uint64_t)be32(h) << 32 | be32(s);
}

int tenant_random(uint8_t out[32])
{
    size_t got = 0;
    while (got < 32) {
        ssize_t k = getrandom(out + got, 32 - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return BAR_ERR_IO;
        }
        got += (size_t)k;
    }
    return 0;
}

void tenant_hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tenant_unhex32(const char *p, size_t n, uint8_t out[32])
{
    if (n != 64) return -1;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int tenant_name_ok(const char *name, size_t n)
{
    if (n == 0 || n >= TENANT_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

/* ---- lookup ---- */

const tenant_key_t *tenant_table_find(const tenant_table_t *t, const char *key, size_t n)
{
    if (!t || !key || !n) return NULL;
    uint8_t d[32];
    tenant_sha256(key, n, d);
    return tenant_table_find_digest(t, d);
}

const tenant_key_t *tenant_table_find_digest(const tenant_table_t *t, const uint8_t d[32])
{
    if (!t) return NULL;
    const tenant_key_t *found = NULL;
    /* every entry, each in constant time: the time depends on the number of
     * entries only, never on the key */
    for (int i = 0; i < t->n; i++) {
        int eq = CRYPTO_memcmp(d, t->v[i].digest, 32) == 0;
        found = eq ? &t->v[i] : found;
    }
    return found;
}

int tenant_key_allows(const tenant_key_t *k, const char *name)
{
    if (!k || k->n_models < 0) return 1;
    for (int i = 0; i < k->n_models; i++)
        if (!strcmp(k->models[i], name)) return 1;
    return 0;
}

void tenant_table_free(tenant_table_t *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++)
        free(t->v[i].models);
    free(t->v);
    free(t);
}

/* ---- the file ---- */

typedef struct {
    yaml_document_t *doc;
    const char *src;
    bar_msg_t *msg;
} walk_t;

static size_t line_of(const yaml_node_t *nd)
{
    return nd->start_mark.line + 1;
}

static int is_scalar(const yaml_node_t *nd)
{
    return nd && nd->type == YAML_SCALAR_NODE;
}

static int scalar_is(const yaml_node_t *nd, const char *s)
{
    return is_scalar(nd) && nd->data.scalar.length == strlen(s) &&
           !memcmp(nd->data.scalar.value, s, nd->data.scalar.length);
}

/* A plain (unquoted) integer scalar in [lo, hi]. */
static int get_int(walk_t *w, const yaml_node_t *v, const char *key, long long lo, long long hi,
                   long long *out)
{
    if (!is_scalar(v) || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: '%s' must be an integer", w->src,
                        line_of(v), key);
    const char *p = (const char *)v->data.scalar.value;
    size_t n = v->data.scalar.length, i = 0;
    int neg = 0;
    if (n && p[0] == '-') neg = 1, i = 1;
    long long x = 0;
    if (i == n || n - i > 15)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: '%s' must be an integer", w->src,
                        line_of(v), key);
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: '%s' must be an integer", w->src,
                            line_of(v), key);
        x = x * 10 + (p[i] - '0');
    }
    if (neg) x = -x;
    if (x < lo || x > hi)
        return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: '%s' must be from %lld to %lld", w->src,
                        line_of(v), key, lo, hi);
    *out = x;
    return 0;
}

static int get_bool(walk_t *w, const yaml_node_t *v, const char *key, int *out)
{
    if (scalar_is(v, "true") || scalar_is(v, "True") || scalar_is(v, "yes")) {
        *out = 1;
        return 0;
    }
    if (scalar_is(v, "false") || scalar_is(v, "False") || scalar_is(v, "no")) {
        *out = 0;
        return 0;
    }
    return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: '%s' must be true or false", w->src,
                    line_of(v), key);
}

static int get_models(walk_t *w, const yaml_node_t *v, tenant_key_t *k)
{
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: 'models' must be a list of model names",
                        w->src, line_of(v));
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n > 1024)
        return bar_fail(w->msg, BAR_ERR_RANGE, "%s:%zu: 'models' lists more than 1024 names",
                        w->src, line_of(v));
    k->models = calloc(n ? n : 1, sizeof *k->models);
    if (!k->models) return bar_fail(w->msg, BAR_ERR_NOMEM, "%s: out of memory", w->src);
    k->n_models = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *m = yaml_document_get_node(w->doc, *it);
        if (!is_scalar(m) || m->data.scalar.length == 0 ||
            m->data.scalar.length >= TENANT_MODEL_NAME_MAX ||
            memchr(m->data.scalar.value, '\0', m->data.scalar.length))
            return bar_fail(w->msg, BAR_ERR_FORMAT,
                            "%s:%zu: each of 'models' must be a model name (1 to 127 characters)",
                            w->src, line_of(m ? m : v));
        memcpy(k->models[k->n_models], m->data.scalar.value, m->data.scalar.length);
        k->models[k->n_models][m->data.scalar.length] = '\0';
        k->n_models++;
    }
    return 0;
}

enum { F_DIGEST, F_TENANT, F_MODELS, F_RPM, F_TPM, F_CONC, F_PRIO, F_ADMIN, N_FIELDS };
static const char *const FIELDS[N_FIELDS] = {
    "key_sha256", "tenant", "models", "rpm", "tpm", "max_concurrency", "priority", "admin",
};

static int read_entry(walk_t *w, const yaml_node_t *m, tenant_key_t *k)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: each entry of 'keys' must be a mapping (key_sha256, tenant, ...)",
                        w->src, line_of(m));
    const yaml_node_t *val[N_FIELDS] = {0};
    for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(w->doc, pr->value);
        int f = -1;
        for (int i = 0; i < N_FIELDS && f < 0; i++)
            if (scalar_is(kn, FIELDS[i])) f = i;
        if (f < 0) {
            char shown[52] = "?";
            if (is_scalar(kn)) {
                size_t n = kn->data.scalar.length > 48 ? 48 : kn->data.scalar.length;
                for (size_t i = 0; i < n; i++) {
                    unsigned char c = kn->data.scalar.value[i];
                    shown[i] = c >= 0x20 && c < 0x7f && c != '\'' ? (char)c : '?';
                }
                shown[n] = '\0';
            }
            return bar_fail(w->msg, BAR_ERR_FORMAT,
                            "%s:%zu: unknown field '%s' (key_sha256, tenant, models, rpm, tpm, "
                            "max_concurrency, priority, admin)",
                            w->src, line_of(kn), shown);
        }
        if (val[f])
            return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: '%s' given twice", w->src, line_of(kn),
                            FIELDS[f]);
        val[f] = vn;
    }
    if (!val[F_DIGEST])
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: an entry without 'key_sha256'", w->src,
                        line_of(m));
    if (!val[F_TENANT])
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: an entry without 'tenant'", w->src,
                        line_of(m));
    const yaml_node_t *d = val[F_DIGEST];
    if (!is_scalar(d) ||
        tenant_unhex32((const char *)d->data.scalar.value, d->data.scalar.length, k->digest))
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: 'key_sha256' must be 64 hex digits (the SHA-256 of the key, "
                        "never the key: see 'barista keys add')",
                        w->src, line_of(d));
    const yaml_node_t *t = val[F_TENANT];
    if (!is_scalar(t) || !tenant_name_ok((const char *)t->data.scalar.value, t->data.scalar.length))
        return bar_fail(w->msg, BAR_ERR_FORMAT,
                        "%s:%zu: 'tenant' must be 1 to 63 characters of [A-Za-z0-9._:@-]", w->src,
                        line_of(t));
    memcpy(k->tenant, t->data.scalar.value, t->data.scalar.length);
    k->tenant[t->data.scalar.length] = '\0';
    int rc;
    long long x;
    k->n_models = -1;
    if (val[F_MODELS] && (rc = get_models(w, val[F_MODELS], k))) return rc;
    if (val[F_RPM]) {
        if ((rc = get_int(w, val[F_RPM], "rpm", 0, 1000000000LL, &x))) return rc;
        k->lim.rpm = x;
    }
    if (val[F_TPM]) {
        if ((rc = get_int(w, val[F_TPM], "tpm", 0, 1000000000000LL, &x))) return rc;
        k->lim.tpm = x;
    }
    if (val[F_CONC]) {
        if ((rc = get_int(w, val[F_CONC], "max_concurrency", 0, 1000000, &x))) return rc;
        k->lim.max_concurrency = (int)x;
    }
    if (val[F_PRIO]) {
        if ((rc =
                 get_int(w, val[F_PRIO], "priority", TENANT_PRIORITY_MIN, TENANT_PRIORITY_MAX, &x)))
            return rc;
        k->priority = (int)x;
    }
    if (val[F_ADMIN] && (rc = get_bool(w, val[F_ADMIN], "admin", &k->admin))) return rc;
    return 0;
}

static int read_doc(walk_t *w, tenant_table_t *t)
{
    yaml_node_t *root = yaml_document_get_root_node(w->doc);
    if (!root)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: empty file: expected 'keys:' and a list",
                        w->src);
    if (root->type != YAML_MAPPING_NODE)
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: expected a mapping with 'keys:'", w->src,
                        line_of(root));
    const yaml_node_t *list = NULL;
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *kn = yaml_document_get_node(w->doc, pr->key);
        if (!scalar_is(kn, "keys"))
            return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: unknown top-level field (only 'keys')",
                            w->src, line_of(kn));
        if (list)
            return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: 'keys' given twice", w->src,
                            line_of(kn));
        list = yaml_document_get_node(w->doc, pr->value);
    }
    if (!list) return bar_fail(w->msg, BAR_ERR_FORMAT, "%s: no 'keys:' list", w->src);
    if (list->type != YAML_SEQUENCE_NODE) {
        if (scalar_is(list, "") || scalar_is(list, "null") || scalar_is(list, "~")) return 0;
        return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: 'keys' must be a list", w->src,
                        line_of(list));
    }
    size_t n = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
    if (n > 100000) return bar_fail(w->msg, BAR_ERR_RANGE, "%s: more than 100000 keys", w->src);
    t->v = calloc(n ? n : 1, sizeof *t->v);
    if (!t->v) return bar_fail(w->msg, BAR_ERR_NOMEM, "%s: out of memory", w->src);
    for (yaml_node_item_t *it = list->data.sequence.items.start; it < list->data.sequence.items.top;
         it++) {
        yaml_node_t *m = yaml_document_get_node(w->doc, *it);
        tenant_key_t *k = &t->v[t->n];
        t->n++; /* counted first: tenant_table_free frees a half-read entry's models */
        int rc = read_entry(w, m, k);
        if (rc) return rc;
        for (int j = 0; j < t->n - 1; j++) {
            const tenant_key_t *o = &t->v[j];
            if (!memcmp(o->digest, k->digest, 32))
                return bar_fail(w->msg, BAR_ERR_FORMAT, "%s:%zu: this key_sha256 is listed twice",
                                w->src, line_of(m));
            if (!strcmp(o->tenant, k->tenant) &&
                (o->lim.rpm != k->lim.rpm || o->lim.tpm != k->lim.tpm ||
                 o->lim.max_concurrency != k->lim.max_concurrency))
                return bar_fail(w->msg, BAR_ERR_FORMAT,
                                "%s:%zu: tenant '%s' has another key with other rpm/tpm/"
                                "max_concurrency (a tenant's keys share its limits)",
                                w->src, line_of(m), k->tenant);
        }
    }
    return 0;
}

static int yaml_error(const yaml_parser_t *p, const char *src, bar_msg_t *msg)
{
    if (p->error == YAML_MEMORY_ERROR)
        return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_READER_ERROR)
        return bar_fail(msg, BAR_ERR_FORMAT, "%s: bad YAML: %s at byte %zu", src, problem,
                        p->problem_offset);
    return bar_fail(msg, BAR_ERR_FORMAT, "%s:%zu: bad YAML: %s", src, p->problem_mark.line + 1,
                    problem);
}

int tenant_table_load_mem(tenant_table_t **out, const char *yaml, size_t n, const char *src,
                          bar_msg_t *msg)
{
    if (n > TENANT_FILE_MAX)
        return bar_fail(msg, BAR_ERR_RANGE, "%s: larger than %u bytes", src, TENANT_FILE_MAX);
    tenant_table_t *t = calloc(1, sizeof *t);
    if (!t) return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        free(t);
        return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", src);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)(yaml ? yaml : ""), n);
    yaml_document_t doc;
    int rc;
    if (!yaml_parser_load(&p, &doc)) {
        rc = yaml_error(&p, src, msg);
    } else {
        walk_t w = {&doc, src, msg};
        rc = read_doc(&w, t);
        yaml_document_delete(&doc);
        if (rc == 0) { /* one document per file */
            yaml_document_t more;
            if (!yaml_parser_load(&p, &more)) {
                rc = yaml_error(&p, src, msg);
            } else {
                if (yaml_document_get_root_node(&more))
                    rc = bar_fail(msg, BAR_ERR_FORMAT, "%s: a second YAML document (one per file)",
                                  src);
                yaml_document_delete(&more);
            }
        }
    }
    yaml_parser_delete(&p);
    if (rc) {
        tenant_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tenant_table_load_file(tenant_table_t **out, const char *path, bar_msg_t *msg)
{
    FILE *f = fopen(path, "rb");
    if (!f) return bar_fail(msg, BAR_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(TENANT_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return bar_fail(msg, BAR_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, TENANT_FILE_MAX + 1, f);
    int err = ferror(f);
    fclose(f);
    int rc = err ? bar_fail(msg, BAR_ERR_IO, "%s: read error", path)
                 : tenant_table_load_mem(out, buf, n, path, msg);
    free(buf);
    return rc;
}
