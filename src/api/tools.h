/* tools.h — structured outputs and tool calls in the OpenAI API: the
 * request side (response_format, tools, tool_choice, parallel_tool_calls,
 * tool messages in the history) and the output side (a generated text read
 * back as tool calls, written as message.tool_calls or streamed deltas).
 *
 * The model sees tools the way Hermes/Qwen-style templates show them (the
 * format SmolLM2's ChatML template lacks; docs/API.md, "Tools"): the system
 * message lists the functions inside <tools></tools> and asks for calls as
 * <tool_call>{"name": ..., "arguments": {...}}</tool_call>; an assistant
 * message's tool_calls are rendered in that form, a "tool" message as a user
 * turn holding <tool_response>...</tool_response>.
 *
 *  - tool_choice "auto" (the default with tools): free text; a reply that
 *    begins with <tool_call> is read back as calls.
 *  - "required" / a named function: the output is constrained (the JSON
 *    Schema of a call, or with parallel_tool_calls an array of 1..4 calls)
 *    so the arguments always parse and match the function's parameters.
 *  - "none": the tools are not shown.
 *
 * Tool calls are derived from the generated text and the request alone, so a
 * cached reply (which stores the text; the tools are in its key) replays as
 * the same calls, streamed or not. Not for: the JSON Schema compiler
 * (engine/json_schema.c), sockets or caching. */
#ifndef BARISTA_API_TOOLS_H
#define BARISTA_API_TOOLS_H

#include <stddef.h>

#include "api/openai.h"
#include "util/buf.h"

struct cJSON;

/* oai_req_t.tool_mode / oai_resp_t.tool_mode */
enum { TOOLS_NONE = 0, TOOLS_AUTO = 1, TOOLS_FORCED = 2 };

/* response_format into r->constraint (a JSON Schema; json_object:
 * {"type":"object"}). 0 or a 400 naming the field (and the schema keyword). */
int tools_parse_response_format(oai_req_t *r, const struct cJSON *root, oai_err_t *e);

/* tools, tool_choice, parallel_tool_calls (after the messages are parsed):
 * r->tool_mode, the tools' system text merged into r->msgs, and for a forced
 * choice r->constraint. 0 or a 400 naming the field. */
int tools_parse_request(oai_req_t *r, const struct cJSON *root, oai_err_t *e);

/* Only the tool mode (for a cache hit's delivery: the body is known valid). */
int tools_mode_of(const struct cJSON *root);

/* History: an assistant message's tool_calls appended to m->content as
 * <tool_call> blocks; a "tool" message's content wrapped as a tool response
 * (m->role becomes "user"). param prefix: "messages[i]". */
int tools_render_calls(oai_msg_t *m, const struct cJSON *calls, int i, oai_err_t *e);
int tools_render_result(oai_msg_t *m, int i, oai_err_t *e);

/* The output side. A generated text read as tool calls. */
typedef struct {
    char name[65];
    char *args; /* compact JSON text, heap */
} tools_call_t;

/* 0 and n >= 1 calls (free with tools_calls_free), or -1: the text is not a
 * complete set of tool calls for this mode (it is then plain content). */
int tools_read(int mode, const char *text, size_t n, tools_call_t **calls, int *n_calls);
void tools_calls_free(tools_call_t *calls, int n);

/* Streaming, auto mode: 1 while text (what was generated so far) may still
 * turn out to be a tool call, so it must not be sent as content yet. */
int tools_may_be_call(int mode, const char *text, size_t n);

/* The finish_reason for a reply of text: tool_calls when it reads as calls
 * and the generation stopped on its own. */
oai_finish_t tools_finish(const oai_resp_t *r, const char *text, size_t n, oai_finish_t fin);

/* Writers for openai.c: ,"tool_calls":[...] of a message (returns -1 when
 * the text is not calls, writing nothing), and the streamed chunks of the
 * calls (name first, then argument fragments; -1: not calls). Call ids are
 * "call_" + 24 hex digits from the response id and the call's index. */
int tools_put_message(buf_t *out, const oai_resp_t *r, const char *text, size_t n);
int tools_put_chunks(buf_t *out, const oai_resp_t *r, const char *text, size_t n);

/* Live streaming of forced tool calls (tool_choice "required" or named: the
 * output is constrained to calls, {"name": ..., "arguments": {...}} or an
 * array of them, name first). A scanner over the text generated so far
 * sends, as OpenAI does, per call a first delta {index, id, type,
 * function: {name, arguments: ""}} as soon as the name is complete, then
 * the arguments as they are generated (the value's bytes without the
 * whitespace outside strings: the same text tools_read gives, so a stream
 * reassembles to the non-streamed calls). Auto mode is not live: its text is
 * only known to be calls when it ends. */
typedef struct {
    size_t pos;      /* bytes of the text scanned */
    int depth;       /* containers open */
    int call_depth;  /* depth inside a call: 1 (one call) or 2 (an array); 0 not yet */
    int in_str, esc; /* inside a string, after a backslash */
    int expect_key;  /* the next string at call level is a key */
    int reading_key; /* that key's bytes */
    char key[16];    /* (only "name" and "arguments" matter) */
    int key_len;
    int want;    /* the value after ':' at call level: 1 name, 2 arguments */
    int in_name; /* reading the name string */
    char name[65];
    int name_len;
    int in_args;  /* inside the arguments value */
    int n_calls;  /* calls whose head was sent */
    int broken;   /* not the expected shape (arguments before name, too many calls) */
    char pend[8]; /* arguments bytes held: an incomplete UTF-8 sequence */
    int n_pend;
} tools_stream_t;

/* Scan text[0..n) (the whole text generated so far; the scanner remembers
 * where it stopped) and append the chunks it decides to out. final: the
 * generation ended, send what is held. Returns the calls begun so far. */
int tools_stream(tools_stream_t *s, buf_t *out, const oai_resp_t *r, const char *text, size_t n,
                 int final);

#endif
