/* test_tenant.c — src/control/tenant.c: the keys file (fields, defaults,
 * every refusal with its line, truncated and garbage input), constant-time
 * lookup, model lists, SHA-256 / HMAC-SHA256 known answers (FIPS 180-2,
 * RFC 4231) and the namespace id layout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control/tenant.h"

#define D1 "0f2c10bf3d128c719c6bfa4ecbae94b7fceebaea6e4438fef38a90e5acc326f3" /* "sk-1" */
#define D2 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" /* "abc" */

static int load(tenant_table_t **t, const char *yaml, bar_msg_t *m)
{
    *t = NULL;
    m->text[0] = '\0';
    return tenant_table_load_mem(t, yaml, strlen(yaml), "keys.yaml", m);
}

static void expect_err_at(const char *yaml, int rc, const char *sub, int line)
{
    tenant_table_t *t;
    bar_msg_t m;
    int got = load(&t, yaml, &m);
    if (got != rc || !strstr(m.text, sub))
        print_error("line %d: rc %d (want %d), message '%s' (want '%s')\n", line, got, rc, m.text,
                    sub);
    assert_int_equal(got, rc);
    assert_non_null(strstr(m.text, sub));
    assert_null(t);
}
#define expect_err(yaml, rc, sub) expect_err_at(yaml, rc, sub, __LINE__)

static void hex_of(const uint8_t *d, char *out)
{
    tenant_hex(d, 32, out);
}

static void test_sha256_and_hmac_known_answers(void **st)
{
    (void)st;
    uint8_t d[32];
    char h[65];
    tenant_sha256("abc", 3, d);
    hex_of(d, h);
    assert_string_equal(h, D2);
    tenant_sha256("", 0, d);
    hex_of(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* RFC 4231 test cases 1 and 2 */
    uint8_t k1[20];
    memset(k1, 0x0b, sizeof k1);
    tenant_hmac(k1, sizeof k1, "Hi There", 8, d);
    hex_of(d, h);
    assert_string_equal(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    tenant_hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, d);
    hex_of(d, h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_namespace_ids(void **st)
{
    (void)st;
    uint8_t secret[32];
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)i;
    /* HMAC(secret, "team-a")[0..8) and, with a sub, [0..4) + HMAC(secret, "team-a\0blue")[0..4) */
    assert_true(tenant_ns_id(secret, "team-a", 6, NULL, 0) == 0xea40457e3a31beedull);
    assert_true(tenant_ns_id(secret, "team-a", 6, "", 0) == 0xea40457e3a31beedull);
    assert_true(tenant_ns_id(secret, "team-a", 6, "blue", 4) == 0xea40457e13ade87bull);
    /* the high half names the tenant; another secret, another id */
    uint64_t b = tenant_ns_id(secret, "team-b", 6, "blue", 4);
    assert_true(b >> 32 != 0xea40457eull);
    secret[0] ^= 1;
    assert_true(tenant_ns_id(secret, "team-a", 6, NULL, 0) != 0xea40457e3a31beedull);
    /* a long sub-namespace (beyond the stack buffer) is hashed whole */
    char big[3000];
    memset(big, 'q', sizeof big);
    uint64_t x = tenant_ns_id(secret, "t", 1, big, sizeof big);
    big[2999] = 'r';
    assert_true(tenant_ns_id(secret, "t", 1, big, sizeof big) != x);
}

static void test_load_and_find(void **st)
{
    (void)st;
    tenant_table_t *t;
    bar_msg_t m;
    const char *y = "keys:\n"
                    "  - key_sha256: " D1 "\n"
                    "    tenant: team-a\n"
                    "    models: [m1, \"m2\"]\n"
                    "    rpm: 60\n"
                    "    tpm: 20000\n"
                    "    max_concurrency: 4\n"
                    "    priority: -3\n"
                    "    admin: true\n"
                    "  - {key_sha256: " D2 ", tenant: b.team@x:1}\n";
    assert_int_equal(load(&t, y, &m), 0);
    assert_int_equal(t->n, 2);
    const tenant_key_t *k = tenant_table_find(t, "sk-1", 4);
    assert_non_null(k);
    assert_string_equal(k->tenant, "team-a");
    assert_int_equal(k->lim.rpm, 60);
    assert_int_equal(k->lim.tpm, 20000);
    assert_int_equal(k->lim.max_concurrency, 4);
    assert_int_equal(k->priority, -3);
    assert_int_equal(k->admin, 1);
    assert_int_equal(k->n_models, 2);
    assert_true(tenant_key_allows(k, "m1") && tenant_key_allows(k, "m2"));
    assert_false(tenant_key_allows(k, "m3"));
    assert_false(tenant_key_allows(k, "m"));
    const tenant_key_t *k2 = tenant_table_find(t, "abc", 3);
    assert_non_null(k2);
    assert_string_equal(k2->tenant, "b.team@x:1");
    assert_int_equal(k2->n_models, -1); /* absent = every model */
    assert_true(tenant_key_allows(k2, "anything"));
    assert_int_equal(k2->lim.rpm, 0);
    assert_int_equal(k2->admin, 0);
    assert_true(tenant_key_allows(NULL, "x"));
    /* near misses are misses */
    assert_null(tenant_table_find(t, "sk-", 3));
    assert_null(tenant_table_find(t, "sk-1 ", 5));
    assert_null(tenant_table_find(t, "SK-1", 4));
    assert_null(tenant_table_find(t, "", 0));
    assert_null(tenant_table_find(NULL, "sk-1", 4));
    tenant_table_free(t);
    /* an empty list is a valid file (nobody gets in) */
    assert_int_equal(load(&t, "keys: []\n", &m), 0);
    assert_int_equal(t->n, 0);
    assert_null(tenant_table_find(t, "abc", 3));
    tenant_table_free(t);
    assert_int_equal(load(&t, "keys:\n", &m), 0);
    tenant_table_free(t);
    /* a digest in capitals is the same digest; an empty models list allows nothing */
    char up[200];
    snprintf(up, sizeof up, "keys:\n  - {key_sha256: %s, tenant: t, models: []}\n", D2);
    for (char *p = strstr(up, D2); *p != ','; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 32);
    assert_int_equal(load(&t, up, &m), 0);
    k = tenant_table_find(t, "abc", 3);
    assert_non_null(k);
    assert_false(tenant_key_allows(k, "m1"));
    tenant_table_free(t);
}

static void test_refusals(void **st)
{
    (void)st;
    expect_err("", BAR_ERR_FORMAT, "empty file");
    expect_err("- a\n", BAR_ERR_FORMAT, "expected a mapping");
    expect_err("other: 1\n", BAR_ERR_FORMAT, "unknown top-level field");
    expect_err("keys: 3\n", BAR_ERR_FORMAT, "'keys' must be a list");
    expect_err("keys:\n  - 3\n", BAR_ERR_FORMAT, "keys.yaml:2: each entry");
    expect_err("keys:\n  - {tenant: t}\n", BAR_ERR_FORMAT, "without 'key_sha256'");
    expect_err("keys:\n  - {key_sha256: " D1 "}\n", BAR_ERR_FORMAT, "without 'tenant'");
    expect_err("keys:\n  - {key_sha256: sk-1, tenant: t}\n", BAR_ERR_FORMAT,
               "keys.yaml:2: 'key_sha256' must be 64 hex digits");
    expect_err("keys:\n  - {key_sha256: " D1 "0, tenant: t}\n", BAR_ERR_FORMAT, "64 hex");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: \"a b\"}\n", BAR_ERR_FORMAT,
               "'tenant' must be");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: \"\"}\n", BAR_ERR_FORMAT,
               "'tenant' must be");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: "
               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\n",
               BAR_ERR_FORMAT, "'tenant' must be");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, rpm: -1}\n", BAR_ERR_RANGE,
               "'rpm' must be from 0");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, rpm: \"5\"}\n", BAR_ERR_FORMAT,
               "'rpm' must be an integer");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, tpm: 1.5}\n", BAR_ERR_FORMAT,
               "'tpm' must be an integer");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, max_concurrency: [1]}\n", BAR_ERR_FORMAT,
               "'max_concurrency' must be an integer");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, priority: 5000}\n", BAR_ERR_RANGE,
               "'priority'");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, admin: maybe}\n", BAR_ERR_FORMAT,
               "'admin' must be true or false");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, models: m1}\n", BAR_ERR_FORMAT,
               "'models' must be a list");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, models: [[a]]}\n", BAR_ERR_FORMAT,
               "each of 'models'");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, key: sk-1}\n", BAR_ERR_FORMAT,
               "unknown field 'key'");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, tenant: u}\n", BAR_ERR_FORMAT,
               "given twice");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t}\n  - {key_sha256: " D1 ", tenant: u}\n",
               BAR_ERR_FORMAT, "keys.yaml:3: this key_sha256 is listed twice");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t, rpm: 5}\n  - {key_sha256: " D2
               ", tenant: t, rpm: 6}\n",
               BAR_ERR_FORMAT, "share its limits");
    expect_err("keys: []\nkeys: []\n", BAR_ERR_FORMAT, "given twice");
    expect_err("keys: []\n---\nkeys: []\n", BAR_ERR_FORMAT, "second YAML document");
    expect_err("keys: [\n", BAR_ERR_FORMAT, "bad YAML");
    expect_err("keys:\n  - {key_sha256: " D1 ", tenant: t\n", BAR_ERR_FORMAT, "bad YAML");
    expect_err("keys: \xff\xfe\n", BAR_ERR_FORMAT, "bad YAML");
    /* aliases cannot make the walker loop */
    expect_err("a: &x [*x]\n", BAR_ERR_FORMAT, "");
}

static void test_truncations_never_crash(void **st)
{
    (void)st;
    const char *y = "keys:\n  - key_sha256: " D1 "\n    tenant: team-a\n    models: [m1, m2]\n"
                    "    rpm: 60\n    admin: true\n  - {key_sha256: " D2 ", tenant: t2}\n";
    size_t n = strlen(y);
    for (size_t i = 0; i <= n; i++) {
        tenant_table_t *t = NULL;
        bar_msg_t m;
        int rc = tenant_table_load_mem(&t, y, i, "k", &m);
        assert_true(rc == 0 || rc == BAR_ERR_FORMAT || rc == BAR_ERR_RANGE);
        assert_true((rc == 0) == (t != NULL));
        tenant_table_free(t);
    }
}

static void test_file(void **st)
{
    (void)st;
    char path[] = "/tmp/barista-test-keys-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *y = "keys:\n  - {key_sha256: " D2 ", tenant: t}\n";
    assert_int_equal(write(fd, y, strlen(y)), (ssize_t)strlen(y));
    close(fd);
    tenant_table_t *t = NULL;
    bar_msg_t m;
    assert_int_equal(tenant_table_load_file(&t, path, &m), 0);
    assert_non_null(tenant_table_find(t, "abc", 3));
    tenant_table_free(t);
    unlink(path);
    assert_int_equal(tenant_table_load_file(&t, path, &m), BAR_ERR_IO);
    assert_non_null(strstr(m.text, path));
}

static void test_names_and_hex(void **st)
{
    (void)st;
    assert_true(tenant_name_ok("a", 1));
    assert_true(tenant_name_ok("A-z_0.9:@", 9));
    assert_false(tenant_name_ok("", 0));
    assert_false(tenant_name_ok("a/b", 3));
    assert_false(tenant_name_ok("a\0b", 3));
    uint8_t d[32];
    assert_int_equal(tenant_unhex32(D1, 64, d), 0);
    char h[65];
    tenant_hex(d, 32, h);
    assert_string_equal(h, D1);
    assert_int_equal(tenant_unhex32(D1, 63, d), -1);
    assert_int_equal(tenant_unhex32("g" D1, 64, d), -1);
    uint8_t r1[32], r2[32];
    assert_int_equal(tenant_random(r1), 0);
    assert_int_equal(tenant_random(r2), 0);
    assert_memory_not_equal(r1, r2, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_and_hmac_known_answers),
        cmocka_unit_test(test_namespace_ids),
        cmocka_unit_test(test_load_and_find),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_truncations_never_crash),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_names_and_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
