/* fuzz_keys.c — libFuzzer target for the keys file (src/control/tenant.c).
 *
 * The whole input is loaded as a keys file. A rejected input must give a
 * negative code, a non-empty message and no table; an accepted one is
 * checked against the header's rules (tenant names valid, digests unique,
 * limits and priority in range, model names non-empty and NUL-terminated,
 * keys of one tenant agreeing on their limits) and every entry is found again
 * by a lookup of its own digest's preimage-free path (tenant_table_find of a
 * key that is not in the file finds nothing). Any violation abort()s. Not
 * for: anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/tenant.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tenant_table_t *t = NULL;
    bar_msg_t m;
    m.text[0] = '\0';
    int rc = tenant_table_load_mem(&t, (const char *)data, size, "fuzz", &m);
    if (rc > 0) abort();
    if (strnlen(m.text, sizeof m.text) == sizeof m.text) abort();
    if (rc < 0) {
        if (t || m.text[0] == '\0') abort();
        return 0;
    }
    if (!t || t->n < 0) abort();
    for (int i = 0; i < t->n; i++) {
        const tenant_key_t *k = &t->v[i];
        size_t n = strnlen(k->tenant, sizeof k->tenant);
        if (!tenant_name_ok(k->tenant, n)) abort();
        if (k->lim.rpm < 0 || k->lim.tpm < 0 || k->lim.max_concurrency < 0) abort();
        if (k->priority < TENANT_PRIORITY_MIN || k->priority > TENANT_PRIORITY_MAX) abort();
        if (k->admin != 0 && k->admin != 1) abort();
        if (k->n_models < -1) abort();
        for (int j = 0; j < k->n_models; j++) {
            size_t mn = strnlen(k->models[j], TENANT_MODEL_NAME_MAX);
            if (mn == 0 || mn == TENANT_MODEL_NAME_MAX) abort();
            touch(k->models[j], mn);
            if (!tenant_key_allows(k, k->models[j])) abort();
        }
        for (int j = 0; j < i; j++) {
            const tenant_key_t *o = &t->v[j];
            if (!memcmp(o->digest, k->digest, 32)) abort();
            if (!strcmp(o->tenant, k->tenant) &&
                (o->lim.rpm != k->lim.rpm || o->lim.tpm != k->lim.tpm ||
                 o->lim.max_concurrency != k->lim.max_concurrency))
                abort();
        }
    }
    /* the input itself as a presented key: found only if its digest is listed */
    const tenant_key_t *f = tenant_table_find(t, (const char *)data, size);
    if (f) {
        uint8_t d[32];
        tenant_sha256(data, size, d);
        if (memcmp(d, f->digest, 32)) abort();
    }
    tenant_table_free(t);
    return 0;
}
