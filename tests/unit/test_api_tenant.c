/* test_api_tenant.c — src/api/api_tenant.c: which tenant a request is (Bearer
 * or api-key; keys file, --api-key, the open server's anonymous tenants),
 * namespace ids (sub-namespaces, never another tenant's), the keys file's
 * reload (all or nothing; a request keeps the entry it started with), the
 * secret kept next to the snapshot. Requests are real parsed HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api_tenant.h"

static char keyfile[64];

static void write_keys(const char *text)
{
    FILE *f = fopen(keyfile, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void keys_for(char *out, size_t size, const char *extra)
{
    uint8_t da[32], db[32];
    char ha[65], hb[65];
    tenant_sha256("sk-a", 4, da);
    tenant_sha256("sk-b", 4, db);
    tenant_hex(da, 32, ha);
    tenant_hex(db, 32, hb);
    snprintf(out, size,
             "keys:\n  - {key_sha256: %s, tenant: team-a, rpm: 5, models: [m1], priority: 3}\n"
             "  - {key_sha256: %s, tenant: team-b}\n%s",
             ha, hb, extra);
}

/* Parse one request with these header lines. */
static http_rx_t rx;
static const http_req_t *req(const char *headers)
{
    char raw[2048];
    http_rx_free(&rx);
    http_rx_init(&rx, 16384, 16384);
    snprintf(raw, sizeof raw, "GET /v1/models HTTP/1.1\r\nHost: x\r\n%s\r\n", headers);
    http_rx_feed(&rx, raw, strlen(raw));
    assert_int_equal(rx.state, HTTP_RX_DONE);
    return &rx.req;
}

static api_tenants_t *make(srv_settings_t *set)
{
    api_tenants_t *t = NULL;
    bar_msg_t m;
    assert_int_equal(api_tenants_create(&t, NULL, set, &m), 0);
    return t;
}

static void test_keys_file_tenants(void **st)
{
    (void)st;
    char y[1024];
    keys_for(y, sizeof y, "");
    write_keys(y);
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    snprintf(set.keys, sizeof set.keys, "%s", keyfile);
    snprintf(set.namespace_secret, sizeof set.namespace_secret, "s3cret");
    api_tenants_t *t = make(&set);
    assert_true(api_tenants_authed(t));
    assert_string_equal(api_tenants_secret_source(t), "flag");
    api_tenant_t a, a2, b;
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-a\r\n"), &a), 0);
    assert_string_equal(a.name, "team-a");
    assert_true(a.authed);
    assert_int_equal(a.priority, 3);
    assert_int_equal(a.limits.rpm, 5);
    assert_non_null(a.rl);
    assert_non_null(a.key);
    assert_false(tenant_key_allows(a.key, "m2"));
    /* Azure's header names the same tenant and namespace */
    assert_int_equal(api_tenant_resolve(t, req("api-key: sk-a\r\n"), &a2), 0);
    assert_string_equal(a2.name, "team-a");
    assert_true(a2.ns == a.ns);
    assert_ptr_equal(a2.rl, a.rl);
    api_tenant_release(&a2);
    /* a tenant without limits has no limiter */
    assert_int_equal(api_tenant_resolve(t, req("Authorization: bearer sk-b\r\n"), &b), 0);
    assert_string_equal(b.name, "team-b");
    assert_null(b.rl);
    assert_true(b.ns != a.ns);
    /* sub-namespaces: apart from the default one, the tenant half kept,
     * and the same header under another tenant is another namespace */
    api_tenant_t as, bs;
    assert_int_equal(api_tenant_resolve(
                         t, req("Authorization: Bearer sk-a\r\nX-Cache-Namespace: blue\r\n"), &as),
                     0);
    assert_int_equal(
        api_tenant_resolve(t, req("api-key: sk-b\r\nX-Cache-Namespace: blue\r\n"), &bs), 0);
    assert_true(as.ns != a.ns && as.ns >> 32 == a.ns >> 32);
    assert_true(bs.ns != as.ns);
    assert_true(as.ns == api_tenant_ns(t, "team-a", "blue", 4));
    api_tenant_release(&as);
    api_tenant_release(&bs);
    /* unknown, missing, near-miss keys and other schemes */
    api_tenant_t x;
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-c\r\n"), &x), -1);
    assert_int_equal(api_tenant_resolve(t, req(""), &x), -1);
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-a \r\n"), &x), 0);
    api_tenant_release(&x); /* trailing blanks are not part of a header value */
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Basic sk-a\r\n"), &x), -1);
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-aa\r\n"), &x), -1);

    /* reload: a broken file keeps the old keys */
    write_keys("keys:\n  - {tenant: nope}\n");
    bar_msg_t m;
    assert_int_equal(api_tenants_reload(t, &m), BAR_ERR_FORMAT);
    assert_non_null(strstr(m.text, "key_sha256"));
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-a\r\n"), &x), 0);
    api_tenant_release(&x);
    /* a good file replaces them; a request in flight keeps its entry alive
     * (ASan checks a.key is still readable) and the limiter state stays */
    write_keys("keys: []\n");
    assert_int_equal(api_tenants_reload(t, &m), 0);
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-a\r\n"), &x), -1);
    assert_string_equal(a.key->tenant, "team-a");
    assert_int_equal(a.key->n_models, 1);
    keys_for(y, sizeof y, "");
    write_keys(y);
    assert_int_equal(api_tenants_reload(t, &m), 0);
    api_tenant_t again;
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-a\r\n"), &again), 0);
    assert_ptr_equal(again.rl, a.rl);
    assert_true(again.ns == a.ns);
    api_tenant_t copy;
    api_tenant_copy(&copy, &again);
    api_tenant_release(&again);
    assert_string_equal(copy.key->tenant, "team-a");
    api_tenant_release(&copy);
    api_tenant_release(&a);
    api_tenant_release(&b);
    api_tenants_destroy(t);
}

static void test_api_key_shorthand_and_open_server(void **st)
{
    (void)st;
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    snprintf(set.api_key, sizeof set.api_key, "sk-one");
    api_tenants_t *t = make(&set);
    assert_true(api_tenants_authed(t));
    assert_string_equal(api_tenants_secret_source(t), "process");
    api_tenant_t d, x;
    assert_int_equal(api_tenant_resolve(t, req("api-key: sk-one\r\n"), &d), 0);
    assert_string_equal(d.name, "default");
    assert_null(d.rl);
    assert_int_equal(api_tenant_resolve(t, req("api-key: sk-on\r\n"), &x), -1);
    assert_int_equal(api_tenant_resolve(t, req("Authorization: Bearer sk-one1\r\n"), &x), -1);
    api_tenant_release(&d);
    api_tenants_destroy(t);

    /* open: each presented key is its own anonymous tenant, no key the "" one */
    memset(&set, 0, sizeof set);
    t = make(&set);
    assert_false(api_tenants_authed(t));
    api_tenant_t n, k1, k2, k3;
    assert_int_equal(api_tenant_resolve(t, req(""), &n), 0);
    assert_string_equal(n.name, "");
    char long1[700], long2[700];
    memset(long1, 'j', sizeof long1);
    memcpy(long2, long1, sizeof long1);
    long1[sizeof long1 - 1] = long2[sizeof long2 - 1] = '\0';
    long2[650] = 'k'; /* the same 650-byte prefix */
    char h1[800], h2[800];
    snprintf(h1, sizeof h1, "Authorization: Bearer %s\r\n", long1);
    snprintf(h2, sizeof h2, "Authorization: Bearer %s\r\n", long2);
    assert_int_equal(api_tenant_resolve(t, req(h1), &k1), 0);
    assert_int_equal(api_tenant_resolve(t, req(h2), &k2), 0);
    assert_int_equal(strncmp(k1.name, "anon:", 5), 0);
    assert_int_equal(strlen(k1.name), 5 + 32);
    assert_string_not_equal(k1.name, k2.name);
    assert_true(k1.ns != k2.ns && k1.ns != n.ns);
    snprintf(h2, sizeof h2, "api-key: %s\r\n", long1);
    assert_int_equal(api_tenant_resolve(t, req(h2), &k3), 0);
    assert_true(k3.ns == k1.ns);
    api_tenants_destroy(t);
}

/* The namespace memo (api_tenant.c ns_of) answers what the HMAC would, for
 * more tenants than it has slots, in any order and again. */
static void test_ns_memo_equals_hmac(void **st)
{
    (void)st;
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    api_tenants_t *t = make(&set);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 300; i++) {
            int k = round == 1 ? 299 - i : (i * 7) % 300; /* three orders */
            char key[32], hdr[64];
            snprintf(key, sizeof key, "sk-memo-%d", k);
            snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", key);
            api_tenant_t a;
            assert_int_equal(api_tenant_resolve(t, req(hdr), &a), 0);
            assert_true(a.ns == api_tenant_ns(t, a.name, NULL, 0));
            /* a sub-namespace is never memoised: still its own id */
            assert_int_equal(api_tenant_resolve(t, req("X-Cache-Namespace: s\r\n"), &a), 0);
            assert_true(a.ns == api_tenant_ns(t, "", "s", 1) &&
                        a.ns != api_tenant_ns(t, "", NULL, 0));
        }
    }
    api_tenants_destroy(t);
}

/* The key memo (api_tenant.c key_digest) gives what SHA-256 gives, for more
 * keys than it has slots, in any order and again; keys of one length that
 * differ in their last byte, and keys longer than the memo keeps, too. */
static void test_key_memo_equals_sha256(void **st)
{
    (void)st;
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    api_tenants_t *t = make(&set);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 300; i++) {
            int k = round == 1 ? 299 - i : (i * 7) % 300;
            char key[160], hdr[200];
            if (k % 3 == 2) /* longer than KEY_MEMO_MAX */
                snprintf(key, sizeof key, "sk-%0120d", k);
            else
                snprintf(key, sizeof key, "sk-memo-%03d", k);
            snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", key);
            api_tenant_t a;
            assert_int_equal(api_tenant_resolve(t, req(hdr), &a), 0);
            uint8_t d[32];
            char want[64] = "anon:";
            tenant_sha256(key, strlen(key), d);
            tenant_hex(d, 16, want + 5);
            assert_string_equal(a.name, want);
        }
    }
    api_tenants_destroy(t);
}

static void test_secret_next_to_the_snapshot(void **st)
{
    (void)st;
    char snap[64], sec[80];
    snprintf(snap, sizeof snap, "/tmp/barista-test-snap-%d", (int)getpid());
    snprintf(sec, sizeof sec, "%s.ns-secret", snap);
    unlink(sec);
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    snprintf(set.cache_file, sizeof set.cache_file, "%s", snap);
    api_tenants_t *t1 = make(&set);
    assert_string_equal(api_tenants_secret_source(t1), "file");
    uint64_t ns1 = api_tenant_ns(t1, "team", NULL, 0);
    api_tenants_t *t2 = make(&set); /* a restart reads the same secret */
    assert_true(api_tenant_ns(t2, "team", NULL, 0) == ns1);
    api_tenants_destroy(t1);
    api_tenants_destroy(t2);
    unlink(sec);
    api_tenants_t *t3 = make(&set); /* a new secret, a new id */
    assert_true(api_tenant_ns(t3, "team", NULL, 0) != ns1);
    api_tenants_destroy(t3);
    unlink(sec);
    /* a flag wins over the file, and gives the same id wherever it is set */
    snprintf(set.namespace_secret, sizeof set.namespace_secret, "shared");
    api_tenants_t *f1 = make(&set);
    memset(set.cache_file, 0, sizeof set.cache_file);
    api_tenants_t *f2 = make(&set);
    assert_true(api_tenant_ns(f1, "team", "x", 1) == api_tenant_ns(f2, "team", "x", 1));
    api_tenants_destroy(f1);
    api_tenants_destroy(f2);
}

static void test_bad_keys_file_is_an_error(void **st)
{
    (void)st;
    write_keys("keys:\n  - {key_sha256: 12, tenant: t}\n");
    srv_settings_t set;
    memset(&set, 0, sizeof set);
    snprintf(set.keys, sizeof set.keys, "%s", keyfile);
    api_tenants_t *t = NULL;
    bar_msg_t m;
    assert_int_equal(api_tenants_create(&t, NULL, &set, &m), BAR_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(m.text, ":2:"));
    snprintf(set.keys, sizeof set.keys, "/nonexistent/keys.yaml");
    assert_int_equal(api_tenants_create(&t, NULL, &set, &m), BAR_ERR_IO);
}

int main(void)
{
    snprintf(keyfile, sizeof keyfile, "/tmp/barista-test-apikeys-%d.yaml", (int)getpid());
    http_rx_init(&rx, 16384, 16384);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_file_tenants),
        cmocka_unit_test(test_api_key_shorthand_and_open_server),
        cmocka_unit_test(test_ns_memo_equals_hmac),
        cmocka_unit_test(test_key_memo_equals_sha256),
        cmocka_unit_test(test_secret_next_to_the_snapshot),
        cmocka_unit_test(test_bad_keys_file_is_an_error),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    http_rx_free(&rx);
    unlink(keyfile);
    return rc;
}
