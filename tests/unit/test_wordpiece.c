/* test_wordpiece.c — engine/wordpiece.c against Hugging Face `tokenizers`.
 *
 * Every case of tests/ref/wordpiece_vectors.json (560 texts: English, accents,
 * CJK, emoji, code, special-token text, whitespace-only and empty strings,
 * control characters, a 1,000-word text; see gen_wordpiece_vectors.py) must
 * give exactly the reference ids; long cases are also checked truncated to
 * 256 tokens. Plus the contract (cap, n_full, lookups), load errors and
 * random bytes. Needs the fetched all-MiniLM-L6-v2 folder (BARISTA_MODELS). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <string.h>

#include "engine/wordpiece.h"
#include "testutil.h"

typedef struct {
    wp_t *wp;
    cJSON *vec;
} fix_t;

static int setup(void **state)
{
    static fix_t f;
    char dir[1024];
    test_model_path(dir, sizeof dir, "all-MiniLM-L6-v2");
    bar_msg_t msg = {{0}};
    int rc = wp_load(&f.wp, dir, &msg);
    if (rc) {
        fprintf(stderr,
                "test_wordpiece: cannot load %s: %s. Run scripts/fetch-models or set "
                "BARISTA_MODELS.\n",
                dir, msg.text);
        return -1;
    }
    char *t = test_read_file(BARISTA_SOURCE_DIR "/tests/ref/wordpiece_vectors.json", NULL);
    if (!t) return -1;
    f.vec = cJSON_Parse(t);
    free(t);
    if (!f.vec) return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fix_t *f = *state;
    wp_free(f->wp);
    cJSON_Delete(f->vec);
    return 0;
}

static size_t case_text(const cJSON *c, char *buf, size_t cap)
{
    const cJSON *hex = cJSON_GetObjectItemCaseSensitive(c, "hex");
    if (cJSON_IsString(hex)) {
        size_t n = strlen(hex->valuestring) / 2;
        assert_true(n <= cap);
        for (size_t i = 0; i < n; i++) {
            unsigned v;
            assert_int_equal(sscanf(hex->valuestring + 2 * i, "%2x", &v), 1);
            buf[i] = (char)v;
        }
        return n;
    }
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(c, "text");
    assert_true(cJSON_IsString(tx));
    size_t n = strlen(tx->valuestring);
    assert_true(n <= cap);
    memcpy(buf, tx->valuestring, n);
    return n;
}

static void test_vectors(void **state)
{
    fix_t *f = *state;
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(f->vec, "cases");
    static char text[1 << 16];
    static int32_t ids[8192];
    int n_cases = 0, n_bad = 0, n_long = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        size_t len = case_text(c, text, sizeof text);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
        int nw = cJSON_GetArraySize(want);
        size_t n = 0, n_full = 0;
        assert_int_equal(wp_encode(f->wp, text, len, ids, 8192, &n, &n_full), 0);
        int ok = (int)n == nw && n_full == n;
        for (int i = 0; ok && i < nw; i++)
            ok = ids[i] == cJSON_GetArrayItem(want, i)->valueint;
        if (!ok) {
            n_bad++;
            const cJSON *tag = cJSON_GetObjectItemCaseSensitive(c, "tag");
            fprintf(stderr, "MISMATCH [%s] %.80s\n  got ", tag->valuestring, text);
            for (size_t i = 0; i < n && i < 24; i++)
                fprintf(stderr, "%d ", ids[i]);
            fprintf(stderr, "\n want ");
            for (int i = 0; i < nw && i < 24; i++)
                fprintf(stderr, "%d ", cJSON_GetArrayItem(want, i)->valueint);
            fprintf(stderr, "\n");
        }
        /* truncated to the model's 256-token window: first 255 then [SEP] */
        if (nw > 256) {
            n_long++;
            assert_int_equal(wp_encode(f->wp, text, len, ids, 256, &n, &n_full), 0);
            assert_int_equal(n, 256);
            assert_int_equal(n_full, (size_t)nw);
            for (int i = 0; i < 255; i++)
                assert_int_equal(ids[i], cJSON_GetArrayItem(want, i)->valueint);
            assert_int_equal(ids[255], wp_sep_id(f->wp));
        }
        n_cases++;
    }
    fprintf(stderr, "test_wordpiece: %d cases (%d longer than 256 tokens), %d mismatches\n",
            n_cases, n_long, n_bad);
    assert_true(n_cases >= 500);
    assert_true(n_long >= 2);
    assert_int_equal(n_bad, 0);
}

static void test_contract(void **state)
{
    fix_t *f = *state;
    int32_t ids[8];
    size_t n = 99, nf = 99;
    assert_int_equal(wp_vocab_size(f->wp), 30522);
    assert_int_equal(wp_cls_id(f->wp), 101);
    assert_int_equal(wp_sep_id(f->wp), 102);
    assert_int_equal(wp_unk_id(f->wp), 100);
    assert_int_equal(wp_lookup(f->wp, "hello", 5), 7592);
    assert_int_equal(wp_lookup(f->wp, "##ing", 5), 2075);
    assert_int_equal(wp_lookup(f->wp, "no-such-token", 13), -1);
    size_t tl = 0;
    const char *t = wp_token(f->wp, 7592, &tl);
    assert_non_null(t);
    assert_int_equal(tl, 5);
    assert_memory_equal(t, "hello", 5);
    assert_null(wp_token(f->wp, -1, &tl));
    assert_null(wp_token(f->wp, 30522, &tl));
    /* empty text: [CLS] [SEP] */
    assert_int_equal(wp_encode(f->wp, "", 0, ids, 8, &n, &nf), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[1], 102);
    assert_int_equal(wp_encode(f->wp, "x", 1, ids, 1, &n, &nf), BAR_ERR_INVALID);
    /* cap 2: [CLS] [SEP] whatever the text */
    assert_int_equal(wp_encode(f->wp, "hello world", 11, ids, 2, &n, &nf), 0);
    assert_int_equal(n, 2);
    assert_int_equal(nf, 4);
    assert_int_equal(ids[1], 102);
    /* "hello world" at cap 3: [CLS] hello [SEP] */
    assert_int_equal(wp_encode(f->wp, "hello world", 11, ids, 3, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 7592);
    assert_int_equal(ids[2], 102);
}

static void test_load_errors(void **state)
{
    (void)state;
    wp_t *wp = NULL;
    bar_msg_t msg = {{0}};
    assert_int_equal(wp_load(&wp, "/nonexistent-dir", &msg), BAR_ERR_IO);
    assert_null(wp);
    assert_non_null(strstr(msg.text, "vocab.txt"));
    const char *v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n##lo\nhel\n";
    assert_int_equal(wp_load_mem(&wp, "", 0, NULL, 0, &msg), BAR_ERR_FORMAT);
    assert_int_equal(wp_load_mem(&wp, "a\nb\n", 4, NULL, 0, &msg), BAR_ERR_FORMAT);
    assert_non_null(strstr(msg.text, "[CLS]"));
    assert_int_equal(wp_load_mem(&wp, v, strlen(v), "{", 1, &msg), BAR_ERR_FORMAT);
    const char *bpe = "{\"model\":{\"type\":\"BPE\"}}";
    assert_int_equal(wp_load_mem(&wp, v, strlen(v), bpe, strlen(bpe), &msg), BAR_ERR_UNSUPPORTED);
    assert_null(wp);
    /* a tiny vocabulary: greedy longest match */
    assert_int_equal(wp_load_mem(&wp, v, strlen(v), NULL, 0, &msg), 0);
    int32_t ids[16];
    size_t n;
    assert_int_equal(wp_encode(wp, "HELLO hello hello! xyz", 22, ids, 16, &n, NULL), 0);
    int want[] = {2, 4, 4, 4, 1, 1, 3}; /* "!" and "xyz" are not in it */
    assert_int_equal(n, 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(ids[i], want[i]);
    /* "helhello" -> hel ##lo? no: "hel" then "##hello" is absent -> one [UNK] */
    assert_int_equal(wp_encode(wp, "helhello", 8, ids, 16, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 1);
    /* "hello" + "##lo": the longest prefix first */
    const char *v2 = "[UNK]\n[CLS]\n[SEP]\nhel\nhello\n##lo\n";
    wp_t *wp2 = NULL;
    assert_int_equal(wp_load_mem(&wp2, v2, strlen(v2), NULL, 0, &msg), 0);
    assert_int_equal(wp_encode(wp2, "hellolo hello", 13, ids, 16, &n, NULL), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[1], 4);
    assert_int_equal(ids[2], 5);
    assert_int_equal(ids[3], 4);
    wp_free(wp2);
    assert_int_equal(wp_encode(wp, "hello\xff", 6, ids, 16, &n, NULL), 0);
    assert_int_equal(ids[1], 4);
    wp_free(wp);
}

/* random bytes never crash and always give [CLS] ... [SEP] with valid ids */
static void test_random(void **state)
{
    fix_t *f = *state;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    static char buf[4096];
    static int32_t ids[8192];
    for (int it = 0; it < 2000; it++) {
        size_t len = 0, want = (size_t)(it % 300);
        while (len < want) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            buf[len++] = (char)(it % 2 ? (s & 0xFF) : (0x20 + s % 0x60) | ((s >> 8) & 0x80));
        }
        size_t n = 0, nf = 0;
        assert_int_equal(wp_encode(f->wp, buf, len, ids, 8192, &n, &nf), 0);
        assert_true(n >= 2 && n == nf);
        assert_int_equal(ids[0], 101);
        assert_int_equal(ids[n - 1], 102);
        for (size_t i = 0; i < n; i++)
            assert_true(ids[i] >= 0 && ids[i] < 30522);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_contract),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
