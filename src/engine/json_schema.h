/* json_schema.h — a JSON Schema compiled into a byte grammar (grammar.h)
 * whose language is the JSON texts that validate against it.
 *
 * Supported: OpenAI's strict-mode subset — type (one or a list of object,
 * array, string, number, integer, boolean, null), properties, required,
 * additionalProperties (false; true or a schema are accepted and generate no
 * extra keys), items, minItems/maxItems (up to 64), enum, const, anyOf,
 * $ref to "#", "#/$defs/NAME" or "#/definitions/NAME" (recursion allowed),
 * $defs/definitions; annotations (title, description, $schema, $id,
 * default, examples, strict) are ignored. Any other keyword is refused with
 * its name and path, never ignored: an output that does not match a strict
 * schema must not happen.
 *
 * The generated text: compact JSON with at most one space after '{', '[',
 * ',' and ':' and before '}' and ']' (so a model cannot loop on
 * whitespace), properties in the schema's order (optional ones may be left
 * out), strings of JSON characters (valid UTF-8, escapes), integers of at
 * most 16 digits, numbers with at most 16 fraction digits and a 3-digit
 * exponent. An object schema without "properties" (and "type":"object" of
 * json_object mode) is any JSON object.
 *
 * Not for: matching (grammar.c), the OpenAI request shape (src/api/). */
#ifndef BARISTA_ENGINE_JSON_SCHEMA_H
#define BARISTA_ENGINE_JSON_SCHEMA_H

#include <stddef.h>

#include "engine/grammar.h"
#include "util/err.h"

/* Compile the schema text json[0..n). 0 and *out (one reference, the
 * caller's), or BAR_ERR_INVALID with msg saying what is wrong and where
 * ("unsupported keyword 'pattern' at #/properties/name"), or NOMEM. */
int json_schema_compile(const char *json, size_t n, gram_t **out, bar_msg_t *msg);

#endif
