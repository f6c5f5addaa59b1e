/* fuzz_wordpiece.c — libFuzzer target for the WordPiece tokenizer
 * (engine/wordpiece.c).
 *
 * The first byte picks the mode:
 *  - even: the rest is text, tokenized with a built-in vocabulary (ASCII
 *    letters and words, "##" pieces, accented and Greek letters, CJK, the
 *    BERT special tokens) — or, when $BARISTA_MODELS/all-MiniLM-L6-v2 exists,
 *    the real one. Checked: 0, [CLS] first, [SEP] last, every id in the
 *    vocabulary, n == n_full, and the cap-16 encoding is the same prefix with
 *    [SEP] last.
 *  - odd: the rest is "vocab.txt\0tokenizer.json" for wp_load_mem; a refused
 *    load must leave NULL and a message; an accepted one tokenizes a fixed
 *    mixed-script text under the same checks.
 * Any violation abort()s. Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/wordpiece.h"
#include "fuzz_util.h"

static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
                            "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr\ns\nt\nu\nv\nw\n"
                            "x\ny\nz\n0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n.\n,\n!\n?\n-\n'\n(\n)\n[\n]\n"
                            "the\nhello\nworld\nun\n##aff\n##able\n##s\n##ing\n##ed\n##a\n##b\n"
                            "##c\n##e\n##o\n##1\n##2\né\nα\n##β\nω\n我\n爱\n中\n"
                            "ᄒ\n##ᅡ\n##ᆫ\n";

static wp_t *g_wp;

static void check(const wp_t *wp, const char *text, size_t len)
{
    static int32_t ids[1 << 16], ids2[16];
    size_t n = 0, nf = 0, n2 = 0, nf2 = 0;
    if (wp_encode(wp, text, len, ids, sizeof ids / sizeof ids[0], &n, &nf) != 0) abort();
    if (n < 2 || n != nf || ids[0] != wp_cls_id(wp) || ids[n - 1] != wp_sep_id(wp)) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= wp_vocab_size(wp)) abort();
    if (wp_encode(wp, text, len, ids2, 16, &n2, &nf2) != 0) abort();
    if (nf2 != nf || n2 != (n < 16 ? n : 16) || ids2[n2 - 1] != wp_sep_id(wp)) abort();
    if (memcmp(ids, ids2, (n2 - 1) * sizeof *ids) != 0) abort();
    for (size_t i = 0; i < n; i++) {
        size_t tl = 0;
        const char *t = wp_token(wp, ids[i], &tl);
        if (!t) abort();
        touch(t, tl);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    bar_msg_t msg = {{0}};
    if (!g_wp) {
        const char *dir = getenv("BARISTA_MODELS");
        char path[4096];
        if (dir) {
            snprintf(path, sizeof path, "%s/all-MiniLM-L6-v2", dir);
            if (wp_load(&g_wp, path, &msg) != 0) g_wp = NULL;
        }
        if (!g_wp && wp_load_mem(&g_wp, VOCAB, sizeof VOCAB - 1, NULL, 0, &msg) != 0) abort();
    }
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        check(g_wp, rest, n);
        return 0;
    }
    const char *nul = memchr(rest, '\0', n);
    size_t vn = nul ? (size_t)(nul - rest) : n;
    const char *json = nul ? nul + 1 : NULL;
    size_t jn = nul ? n - vn - 1 : 0;
    wp_t *wp = NULL;
    int rc = wp_load_mem(&wp, rest, vn, json, jn, &msg);
    if (rc != 0) {
        if (wp || !msg.text[0]) abort();
        return 0;
    }
    static const char T[] = "Héllo, WORLD! unaffable 我爱中文 [MASK] x##y 한 αβω \t\n 123";
    check(wp, T, sizeof T - 1);
    wp_free(wp);
    return 0;
}
