/* fallback.h — fallback chains: what a request gets when its budget will be
 * missed (admission's estimate says so) or was missed before the first byte
 * went out.
 *
 * A chain belongs to a model entry (model_list.h: the entry's `fallbacks:`
 * or LiteLLM's `router_settings: fallbacks: [{NAME: [...]}]`) and is an
 * ordered list of steps, each one string:
 *
 *   model:NAME      run the request on model NAME (another entry), within
 *                   what is left of the budget; a bare NAME is the same
 *                   (LiteLLM's shape)
 *   semantic        the semantic cache at a relaxed threshold: the tier's
 *                   threshold minus FALLBACK_SEMANTIC_RELAX; an approximate
 *                   answer, marked as such
 *   semantic:SIM    the same with the threshold SIM (0 < SIM <= 1)
 *   static:TEXT     TEXT as the reply
 *
 * This module parses and checks steps and walks a chain; running a step
 * (submitting, replying) is the API layer's (src/api/pipeline.c).
 * Not for: budgets and admission (pipeline.c), metrics (obs/). */
#ifndef BARISTA_CONTROL_FALLBACK_H
#define BARISTA_CONTROL_FALLBACK_H

#include <stddef.h>

#include "backend/model_list.h"
#include "util/err.h"

#define FALLBACK_SEMANTIC_RELAX 0.10 /* "semantic": this much under the tier's threshold */

typedef enum {
    FALLBACK_MODEL = 1,
    FALLBACK_SEMANTIC,
    FALLBACK_STATIC,
} fallback_kind_t;

/* One parsed step. arg points into the string parsed (borrowed): the model
 * name (MODEL) or the text (STATIC); empty for SEMANTIC. */
typedef struct {
    fallback_kind_t kind;
    const char *arg;
    size_t arg_len;
    double min_sim; /* SEMANTIC: the threshold given, 0 = the tier's minus the relax */
} fallback_step_t;

/* Parse one step string s[0..n). 0, or BAR_ERR_INVALID with msg saying why
 * (empty, "model:" without a name, "static:" without text, a bad
 * "semantic:SIM"). */
int fallback_step_parse(const char *s, size_t n, fallback_step_t *out, bar_msg_t *msg);

/* Step i (0-based) of entry e's chain into *out: 1, or 0 when the chain has
 * no step i (or the stored step does not parse, which fallback_check
 * refuses at start-up). out borrows from e. */
int fallback_chain_step(const model_entry_t *e, int i, fallback_step_t *out);

/* How many steps e's chain has. */
int fallback_chain_len(const model_entry_t *e);

/* Start-up check of every chain of the finished list l: each step parses,
 * a model step names a chat entry of l that is not the entry itself.
 * 0, or BAR_ERR_INVALID with one line naming the entry and the step (e.g.
 * `model "smol": fallback step "model:nope" names an unknown model "nope"`). */
int fallback_check(const model_list_t *l, bar_msg_t *msg);

/* The X-Fallback value of step st: "model:NAME", "semantic" or "static",
 * NUL-terminated into out[0..cap) (cut to fit). */
void fallback_step_name(const fallback_step_t *st, char *out, size_t cap);

/* The metric label of a step kind: "model", "semantic", "static". */
const char *fallback_kind_name(fallback_kind_t k);

#endif
