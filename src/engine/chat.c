/* chat.c — ChatML prompt rendering (see chat.h).
 *
 * SmolLM2-135M-Instruct's template, as stored in its GGUF, is
 *
 *   {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
 *   {{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging
 *   Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' +
 *   message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}
 *   {{ '<|im_start|>assistant\n' }}{% endif %}
 *
 * (line breaks added here). Note that the default system message is emitted
 * inside the loop, so zero messages give no system message. Not for: other
 * template languages or families. */
#include "engine/chat.h"
#include "engine/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SMOLLM_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

int chat_template_detect(const gguf_t *g, chat_tmpl_t *out, bar_msg_t *msg)
{
    gguf_str_t s;
    int rc = gguf_get_str(g, "tokenizer.chat_template", &s);
    if (rc == BAR_ERR_NOTFOUND)
        return bar_fail(msg, BAR_ERR_NOTFOUND, "chat: the model has no tokenizer.chat_template");
    if (rc < 0)
        return bar_fail(msg, BAR_ERR_FORMAT, "chat: tokenizer.chat_template is not a string");
    int chatml = memmem(s.p, s.n, "<|im_start|>", 12) && memmem(s.p, s.n, "<|im_end|>", 10);
    if (!chatml)
        return bar_fail(msg, BAR_ERR_UNSUPPORTED,
                        "chat: unsupported chat template (only ChatML, with <|im_start|> and "
                        "<|im_end|>, is implemented)");
    *out = memmem(s.p, s.n, SMOLLM_SYSTEM, sizeof SMOLLM_SYSTEM - 1) ? CHAT_TMPL_CHATML_SMOLLM
                                                                     : CHAT_TMPL_CHATML;
    return 0;
}

const char *chat_template_name(chat_tmpl_t tmpl)
{
    switch (tmpl) {
    case CHAT_TMPL_CHATML_SMOLLM:
        return "chatml-smollm";
    case CHAT_TMPL_CHATML:
        return "chatml";
    default:
        return "unknown";
    }
}

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static int buf_put(buf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1)
            c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return BAR_ERR_NOMEM;
        b->p = q;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

#define PUT_LIT(b, lit) buf_put((b), (lit), sizeof(lit) - 1)

static int put_msg(buf_t *b, const char *role, size_t rl, const char *content, size_t cl)
{
    int rc;
    if ((rc = PUT_LIT(b, "<|im_start|>")) < 0 || (rc = buf_put(b, role, rl)) < 0 ||
        (rc = PUT_LIT(b, "\n")) < 0 || (rc = buf_put(b, content, cl)) < 0 ||
        (rc = PUT_LIT(b, "<|im_end|>\n")) < 0)
        return rc;
    return 0;
}

/* The arguments chat_render and chat_encode share. */
static int check_args(chat_tmpl_t tmpl, const chat_msg_t *msgs, size_t n, bar_msg_t *msg)
{
    if (tmpl != CHAT_TMPL_CHATML_SMOLLM && tmpl != CHAT_TMPL_CHATML)
        return bar_fail(msg, BAR_ERR_INVALID, "chat: unknown template id %d", (int)tmpl);
    if (n > 0 && !msgs) return bar_fail(msg, BAR_ERR_INVALID, "chat: NULL message array");
    for (size_t i = 0; i < n; i++)
        if ((!msgs[i].role && msgs[i].role_len) || (!msgs[i].content && msgs[i].content_len))
            return bar_fail(msg, BAR_ERR_INVALID, "chat: message %zu has a NULL slice", i);
    return 0;
}

int chat_render(chat_tmpl_t tmpl, const chat_msg_t *msgs, size_t n, int add_generation_prompt,
                char **out, size_t *out_len, bar_msg_t *msg)
{
    *out = NULL;
    *out_len = 0;
    int rc0 = check_args(tmpl, msgs, n, msg);
    if (rc0) return rc0;

    buf_t b = {0};
    int rc = buf_put(&b, "", 0);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i == 0 && tmpl == CHAT_TMPL_CHATML_SMOLLM &&
            !(msgs[0].role_len == 6 && memcmp(msgs[0].role, "system", 6) == 0))
            rc = put_msg(&b, "system", 6, SMOLLM_SYSTEM, sizeof SMOLLM_SYSTEM - 1);
        if (rc == 0)
            rc = put_msg(&b, msgs[i].role, msgs[i].role_len, msgs[i].content, msgs[i].content_len);
    }
    if (rc == 0 && add_generation_prompt) rc = PUT_LIT(&b, "<|im_start|>assistant\n");
    if (rc < 0) {
        free(b.p);
        return bar_fail(msg, rc, "chat: out of memory");
    }
    *out = b.p;
    *out_len = b.n;
    return 0;
}

/* ---- chat_encode: scaffold as special tokens, text as text ---------------- */

typedef struct {
    int32_t *p;
    size_t n, cap;
} ids_t;

/* Append the ids of text[0..len) encoded with parse_special. */
static int ids_encode(ids_t *v, const tok_t *tok, const char *text, size_t len, int special,
                      bar_msg_t *msg)
{
    for (;;) {
        size_t need = 0;
        int32_t *at = v->p ? v->p + v->n : NULL; /* NULL + 0 is undefined */
        int rc = tok_encode(tok, text, len, 0, special, at, v->cap - v->n, &need);
        if (rc == 0) {
            v->n += need;
            return 0;
        }
        if (rc != BAR_ERR_RANGE) return bar_fail(msg, rc, "chat: cannot tokenize a message");
        size_t c = v->cap ? v->cap : 256;
        while (c < v->n + need)
            c *= 2;
        int32_t *q = realloc(v->p, c * sizeof(int32_t));
        if (!q) return bar_fail(msg, BAR_ERR_NOMEM, "chat: out of memory");
        v->p = q;
        v->cap = c;
    }
}

static int encode_msg(ids_t *v, const tok_t *tok, const char *role, size_t rl, const char *content,
                      size_t cl, bar_msg_t *msg)
{
    /* role + "\n" + content is one plain-text run, so pre-tokenization sees
     * exactly what it sees in the rendered string */
    char *run = malloc(rl + 1 + cl + 1);
    if (!run) return bar_fail(msg, BAR_ERR_NOMEM, "chat: out of memory");
    if (rl) memcpy(run, role, rl);
    run[rl] = '\n';
    if (cl) memcpy(run + rl + 1, content, cl);
    int rc = ids_encode(v, tok, "<|im_start|>", 12, 1, msg);
    if (rc == 0) rc = ids_encode(v, tok, run, rl + 1 + cl, 0, msg);
    if (rc == 0) rc = ids_encode(v, tok, "<|im_end|>\n", 11, 1, msg);
    free(run);
    return rc;
}

int chat_encode(chat_tmpl_t tmpl, const tok_t *tok, const chat_msg_t *msgs, size_t n,
                int add_generation_prompt, int32_t **ids, size_t *n_ids, bar_msg_t *msg)
{
    *ids = NULL;
    *n_ids = 0;
    int rc0 = check_args(tmpl, msgs, n, msg);
    if (rc0) return rc0;
    ids_t v = {0};
    int rc = 0;
    if (tok_add_bos(tok) && tok_bos(tok) >= 0) {
        v.p = malloc(256 * sizeof(int32_t));
        if (!v.p) return bar_fail(msg, BAR_ERR_NOMEM, "chat: out of memory");
        v.cap = 256;
        v.p[v.n++] = tok_bos(tok);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i == 0 && tmpl == CHAT_TMPL_CHATML_SMOLLM &&
            !(msgs[0].role_len == 6 && memcmp(msgs[0].role, "system", 6) == 0))
            rc = encode_msg(&v, tok, "system", 6, SMOLLM_SYSTEM, sizeof SMOLLM_SYSTEM - 1, msg);
        if (rc == 0)
            rc = encode_msg(&v, tok, msgs[i].role, msgs[i].role_len, msgs[i].content,
                            msgs[i].content_len, msg);
    }
    if (rc == 0 && add_generation_prompt)
        rc = ids_encode(&v, tok, "<|im_start|>assistant\n", 22, 1, msg);
    if (rc) {
        free(v.p);
        return rc;
    }
    *ids = v.p;
    *n_ids = v.n;
    return 0;
}
