/* test_config.c — the settings table machinery (src/util/config.c) with the
 * serve table (src/server/settings.c): defaults, ranges, file, env, flags,
 * precedence, redaction, help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/settings.h"

static srv_settings_t s;
static cfg_source_t src[64];
static cfg_t c;

static int setup(void **st)
{
    (void)st;
    memset(&s, 0, sizeof s);
    c = srv_settings_cfg(&s, src);
    unsetenv("BARISTA_PORT");
    unsetenv("BARISTA_THREADS");
    unsetenv("BARISTA_CONFIG");
    unsetenv("BARISTA_API_KEY");
    return 0;
}

static void test_defaults(void **st)
{
    (void)st;
    bar_msg_t m;
    assert_true(srv_settings_count() <= 64);
    assert_int_equal(cfg_set_defaults(&c, &m), 0);
    assert_string_equal(s.host, "127.0.0.1");
    assert_int_equal(s.port, 8080);
    assert_int_equal(s.max_body_bytes, 1048576);
    assert_string_equal(s.access_log, "");
    assert_int_equal(src[cfg_find(&c, "port", 4)], CFG_SRC_DEFAULT);
}

static void test_flags(void **st)
{
    (void)st;
    char *argv[] = {"serve",        "--port", "9000",      "-m", "x.gguf", "--max-body-bytes=100",
                    "--access-log", "-",      "--threads", "3"};
    int help = 0;
    bar_msg_t m;
    assert_int_equal(cfg_load(&c, 10, argv, "config", &help, &m), 0);
    assert_int_equal(help, 0);
    assert_int_equal(s.port, 9000);
    assert_string_equal(s.model, "x.gguf");
    assert_int_equal(s.max_body_bytes, 100);
    assert_string_equal(s.access_log, "-");
    assert_int_equal(s.threads, 3);
    assert_int_equal(src[cfg_find(&c, "max_body_bytes", 14)], CFG_SRC_FLAG);
}

static void test_bad_flags(void **st)
{
    (void)st;
    int help;
    bar_msg_t m;
    char *a1[] = {"serve", "--port", "70000"};
    assert_int_equal(cfg_load(&c, 3, a1, "config", &help, &m), BAR_ERR_RANGE);
    assert_non_null(strstr(m.text, "port"));
    char *a2[] = {"serve", "--port", "12x"};
    assert_int_equal(cfg_load(&c, 3, a2, "config", &help, &m), BAR_ERR_INVALID);
    char *a3[] = {"serve", "--nope", "1"};
    assert_int_equal(cfg_load(&c, 3, a3, "config", &help, &m), BAR_ERR_INVALID);
    assert_non_null(strstr(m.text, "--nope"));
    char *a4[] = {"serve", "--port"};
    assert_int_equal(cfg_load(&c, 2, a4, "config", &help, &m), BAR_ERR_INVALID);
    char *a5[] = {"serve", "stray"};
    assert_int_equal(cfg_load(&c, 2, a5, "config", &help, &m), BAR_ERR_INVALID);
    char *a6[] = {"serve", "--admission=maybe"};
    assert_int_equal(cfg_load(&c, 2, a6, "config", &help, &m), BAR_ERR_INVALID);
    char *a7[] = {"serve", "--bogus", "--help"};
    assert_int_equal(cfg_load(&c, 3, a7, "config", &help, &m), 0);
    assert_int_equal(help, 1);
}

static void test_precedence(void **st)
{
    (void)st;
    char path[] = "/tmp/barista_cfg_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# comment\n\nport = 7000\nthreads=5\nmax_connections = \"12\"\nhost = 0.0.0.0\n");
    fclose(f);
    setenv("BARISTA_CONFIG", path, 1);
    setenv("BARISTA_THREADS", "6", 1);
    char *argv[] = {"serve", "--threads", "7"};
    int help;
    bar_msg_t m;
    assert_int_equal(cfg_load(&c, 1, argv, "config", &help, &m), 0);
    assert_int_equal(s.port, 7000); /* file */
    assert_int_equal(s.threads, 6); /* env beats file */
    assert_int_equal(s.max_connections, 12);
    assert_string_equal(s.host, "0.0.0.0");
    assert_int_equal(src[cfg_find(&c, "port", 4)], CFG_SRC_FILE);
    assert_int_equal(src[cfg_find(&c, "threads", 7)], CFG_SRC_ENV);
    assert_int_equal(cfg_load(&c, 3, argv, "config", &help, &m), 0);
    assert_int_equal(s.threads, 7); /* flag beats env */
    assert_int_equal(src[cfg_find(&c, "threads", 7)], CFG_SRC_FLAG);
    unsetenv("BARISTA_THREADS");
    unsetenv("BARISTA_CONFIG");
    /* --config flag */
    char *a2[] = {"serve", "--config", path};
    assert_int_equal(cfg_load(&c, 3, a2, "config", &help, &m), 0);
    assert_int_equal(s.port, 7000);
    unlink(path);
}

static void test_bad_file(void **st)
{
    (void)st;
    char path[] = "/tmp/barista_cfg_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "port = 1\nwhat = 2\n");
    fclose(f);
    bar_msg_t m;
    assert_int_equal(cfg_set_defaults(&c, &m), 0);
    assert_int_equal(cfg_load_file(&c, path, &m), BAR_ERR_INVALID);
    assert_non_null(strstr(m.text, ":2:"));
    f = fopen(path, "w");
    fprintf(f, "port 1\n");
    fclose(f);
    assert_int_equal(cfg_load_file(&c, path, &m), BAR_ERR_FORMAT);
    f = fopen(path, "w");
    fprintf(f, "config = other\n");
    fclose(f);
    assert_int_equal(cfg_load_file(&c, path, &m), BAR_ERR_INVALID);
    unlink(path);
    assert_int_equal(cfg_load_file(&c, "/nonexistent/x.conf", &m), BAR_ERR_IO);
}

static void test_env_bad(void **st)
{
    (void)st;
    setenv("BARISTA_PORT", "-4", 1);
    char *argv[] = {"serve"};
    int help;
    bar_msg_t m;
    assert_int_equal(cfg_load(&c, 1, argv, "config", &help, &m), BAR_ERR_RANGE);
    assert_non_null(strstr(m.text, "BARISTA_PORT"));
    unsetenv("BARISTA_PORT");
}

static void test_secret_redacted(void **st)
{
    (void)st;
    char *argv[] = {"serve", "--api-key", "sk-verysecret"};
    int help;
    bar_msg_t m;
    assert_int_equal(cfg_load(&c, 3, argv, "config", &help, &m), 0);
    assert_string_equal(s.api_key, "sk-verysecret");
    char out[64];
    int i = cfg_find(&c, "api-key", 7);
    assert_string_equal(cfg_format(&c, i, out, sizeof out), "***");
    i = cfg_find(&c, "port", 4);
    assert_string_equal(cfg_format(&c, i, out, sizeof out), "8080");
}

static void test_help(void **st)
{
    (void)st;
    bar_msg_t m;
    cfg_set_defaults(&c, &m);
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    cfg_print_help(&c, f, "barista serve [OPTIONS]", "desc");
    fclose(f);
    size_t nopt;
    const cfg_opt_t *t = srv_settings_table(&nopt);
    for (size_t i = 0; i < nopt; i++) {
        char flag[128];
        snprintf(flag, sizeof flag, "--%s", t[i].name);
        assert_non_null(strstr(text, flag));
    }
    assert_non_null(strstr(text, "BARISTA_MAX_BODY_BYTES"));
    assert_non_null(strstr(text, "-m, --model [NAME=]PATH"));
    free(text);
}

/* A CFG_NO_NONE string: --no-NAME sets "none"; other strings and integers
 * have no --no- form. */
static void test_no_none(void **st)
{
    (void)st;
    bar_msg_t m;
    int help = 0;
    char *a1[] = {"serve"};
    assert_int_equal(cfg_load(&c, 1, a1, "config", &help, &m), 0);
    assert_string_equal(s.embedding_model, "auto");
    assert_int_equal(s.embedding_cache_entries, 10000);
    char *a2[] = {"serve", "--no-embedding-model"};
    assert_int_equal(cfg_load(&c, 2, a2, "config", &help, &m), 0);
    assert_string_equal(s.embedding_model, "none");
    char *a3[] = {"serve", "--embedding-model", "mini=/m/dir"};
    assert_int_equal(cfg_load(&c, 3, a3, "config", &help, &m), 0);
    assert_string_equal(s.embedding_model, "mini=/m/dir");
    char *a4[] = {"serve", "--no-host"};
    assert_int_equal(cfg_load(&c, 2, a4, "config", &help, &m), BAR_ERR_INVALID);
    assert_non_null(strstr(m.text, "--no-host"));
    char *a5[] = {"serve", "--no-port"};
    assert_int_equal(cfg_load(&c, 2, a5, "config", &help, &m), BAR_ERR_INVALID);
}

#define T(f) cmocka_unit_test_setup(f, setup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),  T(test_no_none),         T(test_flags),
        T(test_bad_flags), T(test_precedence),      T(test_bad_file),
        T(test_env_bad),   T(test_secret_redacted), T(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
