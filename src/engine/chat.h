/* chat.h — render chat messages into a model's prompt text.
 *
 * barista does not run Jinja. chat_template_detect recognises the model's
 * tokenizer.chat_template as one of a few known template families and
 * chat_render reproduces that family's output byte for byte (checked against
 * jinja2 rendering of the real template, tests/ref/chat_vectors.json). The
 * result is text with special tokens written verbatim ("<|im_start|>"), to be
 * encoded with tok_encode(parse_special=1, add_special=1). Not for: tool calls,
 * multimodal content, or arbitrary Jinja templates (those are refused). */
#ifndef BARISTA_ENGINE_CHAT_H
#define BARISTA_ENGINE_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "util/err.h"

/* One message; role and content are UTF-8 slices (not NUL-terminated),
 * borrowed for the duration of the call. */
typedef struct {
    const char *role;
    size_t role_len;
    const char *content;
    size_t content_len;
} chat_msg_t;

typedef enum {
    /* SmolLM2's ChatML: like CHAT_TMPL_CHATML, plus the system message
     * "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
     * inserted before the first message when that message is not "system". */
    CHAT_TMPL_CHATML_SMOLLM = 1,
    /* Plain ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message,
     * then "<|im_start|>assistant\n" as the generation prompt. */
    CHAT_TMPL_CHATML = 2,
} chat_tmpl_t;

/* Classify g's tokenizer.chat_template. A ChatML template (uses <|im_start|>
 * and <|im_end|>) is CHAT_TMPL_CHATML_SMOLLM when it carries SmolLM's default
 * system prompt, else CHAT_TMPL_CHATML. Errors: BAR_ERR_NOTFOUND (the model has
 * no template), BAR_ERR_UNSUPPORTED (a template of another family; msg says
 * which markers were looked for), BAR_ERR_FORMAT (the key is not a string). */
int chat_template_detect(const gguf_t *g, chat_tmpl_t *out, bar_msg_t *msg);

/* Human-readable name of tmpl ("chatml-smollm", "chatml"); never NULL. */
const char *chat_template_name(chat_tmpl_t tmpl);

/* Render msgs[0..n) into a malloc'd, NUL-terminated UTF-8 string *out (caller
 * frees; *out_len excludes the NUL), appending the assistant generation prompt
 * if add_generation_prompt. Roles and contents are copied verbatim (no
 * trimming, no escaping: a content that contains "<|im_end|>" will be parsed as
 * that token by tok_encode(parse_special=1); callers that do not want this
 * must encode contents separately). n may be 0. Errors: BAR_ERR_INVALID
 * (unknown tmpl, NULL slices with non-zero length), BAR_ERR_NOMEM. */
int chat_render(chat_tmpl_t tmpl, const chat_msg_t *msgs, size_t n, int add_generation_prompt,
                char **out, size_t *out_len, bar_msg_t *msg);

/* Render and tokenize in one step, treating roles and contents as plain text:
 * a message that contains "<|im_end|>" gets the tokens of those characters,
 * never the control token, so a user cannot forge turns (prompt injection).
 * Only the template's own scaffold becomes special tokens. For contents free
 * of special-token text the ids equal tok_encode(chat_render(...),
 * add_special=1, parse_special=1). *ids is malloc'd (caller frees).
 * Errors: as chat_render, plus tokenizer errors. */
typedef struct tok tok_t;
int chat_encode(chat_tmpl_t tmpl, const tok_t *tok, const chat_msg_t *msgs, size_t n,
                int add_generation_prompt, int32_t **ids, size_t *n_ids, bar_msg_t *msg);

#endif
