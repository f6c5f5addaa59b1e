/* tools.c — response_format, tools and tool calls (see tools.h). */
#include "api/tools.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/gram_cache.h"

#define BAD_REQ "invalid_request_error"
#define OPEN_TAG "<tool_call>"
#define CLOSE_TAG "</tool_call>"
#define MAX_PARALLEL 4  /* calls in one forced reply with parallel_tool_calls */
#define ARG_FRAGMENT 24 /* bytes of arguments per streamed delta */
#define TOOLS_MAX 128   /* tools in one request (OpenAI's limit) */

static int nomem(oai_err_t *e)
{
    return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* Compile schema text through the request's grammar cache (r->grams; a
 * schema seen before is not compiled again): 0 and, when out is non-NULL,
 * *out (a reference), or gram_cache_get's error with m. */
static int compile_text(const oai_req_t *r, const char *text, gram_t **out, bar_msg_t *m)
{
    gram_t *g = NULL;
    int rc = gram_cache_get(r->grams, text, strlen(text), &g, m);
    if (rc) return rc;
    if (out)
        *out = g;
    else
        gram_release(g);
    return 0;
}

/* The 400 (or 500) of compile_text's failure rc for the schema at param. */
static int schema_error(oai_err_t *e, int rc, const char *param, const char *what,
                        const bar_msg_t *m)
{
    if (rc == BAR_ERR_NOMEM) return nomem(e);
    return oai_err(e, 400, BAD_REQ, "invalid_json_schema", param, "Invalid schema for %s: %s", what,
                   m->text);
}

/* compile_text, answering a failure as schema_error. */
static int compile_schema(const oai_req_t *r, const char *text, const char *param, const char *what,
                          gram_t **out, oai_err_t *e)
{
    bar_msg_t m;
    m.text[0] = '\0';
    int rc = compile_text(r, text, out, &m);
    return rc ? schema_error(e, rc, param, what, &m) : 0;
}

/* The output constraint: text (heap, taken) and its grammar g (a reference,
 * taken; NULL: compile text here). This is the request's one compile of it:
 * the backend decodes with r->grammar. */
static int set_constraint(oai_req_t *r, char *text, gram_t *g, const char *param, oai_err_t *e)
{
    if (!text) {
        gram_release(g);
        return nomem(e);
    }
    if (!g) {
        int rc = compile_schema(r, text, param, param, &g, e);
        if (rc) {
            free(text);
            return rc;
        }
    }
    free(r->constraint);
    gram_release(r->grammar);
    r->constraint = text;
    r->constraint_len = strlen(text);
    r->grammar = g;
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return 0;
    return 1;
}

int tools_parse_response_format(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    const cJSON *v = oai_member(root, "response_format");
    if (!v) return 0;
    if (!cJSON_IsObject(v)) return oai_bad_type(e, "response_format", "an object", v);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!t)
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter", "response_format.type",
                       "Missing required parameter: 'response_format.type'.");
    if (!cJSON_IsString(t)) return oai_bad_type(e, "response_format.type", "a string", t);
    if (!strcmp(t->valuestring, "text")) return 0;
    if (!strcmp(t->valuestring, "json_object"))
        return set_constraint(r, strdup("{\"type\":\"object\"}"), NULL, "response_format", e);
    if (strcmp(t->valuestring, "json_schema"))
        return oai_err(e, 400, BAD_REQ, "invalid_value", "response_format.type",
                       "Invalid value for 'response_format.type': '%.32s'. Supported values are: "
                       "'text', 'json_object' and 'json_schema'.",
                       t->valuestring);
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
    if (!js || cJSON_IsNull(js))
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter", "response_format.json_schema",
                       "Missing required parameter: 'response_format.json_schema'.");
    if (!cJSON_IsObject(js)) return oai_bad_type(e, "response_format.json_schema", "an object", js);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name");
    if (!name)
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter",
                       "response_format.json_schema.name",
                       "Missing required parameter: 'response_format.json_schema.name'.");
    if (!cJSON_IsString(name) || !valid_name(name->valuestring))
        return oai_err(e, 400, BAD_REQ, "invalid_value", "response_format.json_schema.name",
                       "Invalid 'response_format.json_schema.name': expected a string of 1 to 64 "
                       "letters, digits, '_' or '-'.");
    const cJSON *strict = oai_member(js, "strict");
    if (strict && !cJSON_IsBool(strict))
        return oai_bad_type(e, "response_format.json_schema.strict", "a boolean", strict);
    const cJSON *schema = oai_member(js, "schema");
    if (!schema)
        return set_constraint(r, strdup("{\"type\":\"object\"}"), NULL, "response_format", e);
    if (!cJSON_IsObject(schema))
        return oai_bad_type(e, "response_format.json_schema.schema", "an object", schema);
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) return nomem(e);
    char what[128];
    snprintf(what, sizeof what, "response_format '%s'", name->valuestring);
    gram_t *g = NULL;
    int rc = compile_schema(r, text, "response_format.json_schema.schema", what, &g, e);
    if (rc) {
        free(text);
        return rc;
    }
    return set_constraint(r, text, g, NULL, e);
}

/* ---- request: tools ---- */

/* The mode of tool_choice tc (NULL: absent) with tools (NULL: absent):
 * TOOLS_*, or -1 for a tool_choice of no known shape; *named: a forced
 * function's name. */
static int tool_choice_from(const cJSON *tc, const cJSON *tools, const char **named)
{
    *named = NULL;
    int has = cJSON_IsArray(tools) && tools->child;
    if (!tc) return has ? TOOLS_AUTO : TOOLS_NONE;
    if (cJSON_IsString(tc)) {
        if (!strcmp(tc->valuestring, "none")) return TOOLS_NONE;
        if (!strcmp(tc->valuestring, "auto")) return TOOLS_AUTO;
        if (!strcmp(tc->valuestring, "required")) return TOOLS_FORCED;
        return -1;
    }
    if (cJSON_IsObject(tc)) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "function");
        const cJSON *n = cJSON_IsObject(f) ? cJSON_GetObjectItemCaseSensitive(f, "name") : NULL;
        if (cJSON_IsString(n)) {
            *named = n->valuestring;
            return TOOLS_FORCED;
        }
    }
    return -1;
}

static int tool_choice_of(const cJSON *root, const char **named)
{
    return tool_choice_from(oai_member(root, "tool_choice"), oai_member(root, "tools"), named);
}

int tools_mode_of(const cJSON *root)
{
    const char *named;
    int m = tool_choice_of(root, &named);
    const cJSON *tools = oai_member(root, "tools");
    if (!cJSON_IsArray(tools) || cJSON_GetArraySize(tools) == 0) return TOOLS_NONE;
    return m < 0 ? TOOLS_NONE : m;
}

static const char TOOLS_INTRO[] =
    "You are a function calling AI model. You are given function signatures within <tools></tools> "
    "XML tags. You may call one or more of these functions to answer the user. Do not make "
    "assumptions about the values to pass. The functions:\n<tools>\n";
static const char TOOLS_OUTRO[] =
    "</tools>\nTo call a function, answer with a JSON object holding its name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
    "\"arguments\": <arguments-object>}\n</tool_call>";

/* The system message gets the tools text in front of its own. */
static int merge_system(oai_req_t *r, const char *text, size_t n, oai_err_t *e)
{
    if (r->n_msgs > 0 && !strcmp(r->msgs[0].role, "system")) {
        oai_msg_t *m = &r->msgs[0];
        char *c = malloc(n + 2 + m->content_len + 1);
        if (!c) return nomem(e);
        memcpy(c, text, n);
        size_t k = n;
        if (m->content_len) {
            memcpy(c + k, "\n\n", 2);
            k += 2;
            memcpy(c + k, m->content, m->content_len);
            k += m->content_len;
        }
        c[k] = '\0';
        free(m->content);
        m->content = c;
        m->content_len = k;
        return 0;
    }
    oai_msg_t *ms = realloc(r->msgs, ((size_t)r->n_msgs + 1) * sizeof *ms);
    if (!ms) return nomem(e);
    r->msgs = ms;
    memmove(ms + 1, ms, (size_t)r->n_msgs * sizeof *ms);
    memset(&ms[0], 0, sizeof ms[0]);
    snprintf(ms[0].role, sizeof ms[0].role, "system");
    ms[0].content = malloc(n + 1);
    if (!ms[0].content) {
        memmove(ms, ms + 1, (size_t)r->n_msgs * sizeof *ms);
        return nomem(e);
    }
    memcpy(ms[0].content, text, n);
    ms[0].content[n] = '\0';
    ms[0].content_len = n;
    r->n_msgs++;
    return 0;
}

/* {"type":"object","properties":{"name":{"const":NAME},"arguments":PARAMS},...}
 * into b, PARAMS the tool's parameters as printed for their own compile
 * (NULL: any object): the bytes cJSON would print for that tree, without
 * building and printing it again on every request. 0 or NOMEM. */
static int put_call_schema(buf_t *b, const char *name, const char *params)
{
    int rc = buf_puts(b, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":");
    rc |= buf_json_str(b, name, strlen(name)); /* a valid name: nothing to escape */
    rc |= buf_puts(b, "},\"arguments\":");
    rc |= buf_puts(b, params ? params : "{\"type\":\"object\"}");
    rc |= buf_puts(b, "},\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}");
    return rc ? BAR_ERR_NOMEM : 0;
}

/* The tools' parameters as printed: p[i] tool i's (NULL: none), n of them
 * (p and each text heap; tools_parse_request frees them). */
typedef struct {
    char **p;
    int n;
} ptexts_t;

/* tools_parse_request with pt: filled as the tools are checked. */
static int parse_tools(oai_req_t *r, const cJSON *root, ptexts_t *pt, oai_err_t *e)
{
    r->parallel_tool_calls = 1;
    const cJSON *v = oai_member(root, "parallel_tool_calls");
    if (v) {
        if (!cJSON_IsBool(v)) return oai_bad_type(e, "parallel_tool_calls", "a boolean", v);
        r->parallel_tool_calls = cJSON_IsTrue(v);
    }
    const cJSON *tools = oai_member(root, "tools");
    const cJSON *tc = oai_member(root, "tool_choice");
    if (!tools && !tc) return 0; /* the common request: nothing more to look at */
    if (tools && !cJSON_IsArray(tools)) return oai_bad_type(e, "tools", "an array", tools);
    int n_tools = tools ? cJSON_GetArraySize(tools) : 0;
    if (n_tools > TOOLS_MAX)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "tools",
                       "Invalid 'tools': at most %d tools, got %d.", TOOLS_MAX, n_tools);
    if (n_tools > 0) {
        if (!(pt->p = calloc((size_t)n_tools, sizeof *pt->p))) return nomem(e);
        pt->n = n_tools;
    }
    char **ptext = pt->p;
    char param[96];
/* a parameter's name, written only for an error */
#define P(field) (snprintf(param, sizeof param, "tools[%d]" field, i), param)
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        if (!cJSON_IsObject(t)) return oai_bad_type(e, P(""), "an object", t);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))
            return oai_err(e, 400, BAD_REQ, "invalid_value", P(".type"),
                           "Invalid '%s': only 'function' tools are supported.", P(".type"));
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!fn)
            return oai_err(e, 400, BAD_REQ, "missing_required_parameter", P(".function"),
                           "Missing required parameter: '%s'.", P(".function"));
        if (!cJSON_IsObject(fn)) return oai_bad_type(e, P(".function"), "an object", fn);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!name)
            return oai_err(e, 400, BAD_REQ, "missing_required_parameter", P(".function.name"),
                           "Missing required parameter: '%s'.", P(".function.name"));
        if (!cJSON_IsString(name) || !valid_name(name->valuestring))
            return oai_err(e, 400, BAD_REQ, "invalid_value", P(".function.name"),
                           "Invalid '%s': a function name is 1 to 64 letters, digits, '_' or '-'.",
                           P(".function.name"));
        for (const cJSON *u = tools->child; u && u != t; u = u->next) {
            const cJSON *un = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(u, "function"), "name");
            if (cJSON_IsString(un) && !strcmp(un->valuestring, name->valuestring))
                return oai_err(e, 400, BAD_REQ, "invalid_value", P(".function.name"),
                               "Invalid '%s': the function name '%s' is used twice.",
                               P(".function.name"), name->valuestring);
        }
        const cJSON *d = oai_member(fn, "description");
        if (d && !cJSON_IsString(d))
            return oai_bad_type(e, P(".function.description"), "a string", d);
        const cJSON *st = oai_member(fn, "strict");
        if (st && !cJSON_IsBool(st)) return oai_bad_type(e, P(".function.strict"), "a boolean", st);
        const cJSON *p = oai_member(fn, "parameters");
        if (p) {
            if (!cJSON_IsObject(p))
                return oai_bad_type(e, P(".function.parameters"), "an object", p);
            if (!(ptext[i] = cJSON_PrintUnformatted(p))) return nomem(e);
            bar_msg_t m;
            m.text[0] = '\0';
            int rc = compile_text(r, ptext[i], NULL, &m);
            if (rc) {
                char what[128];
                snprintf(what, sizeof what, "function '%s'", name->valuestring);
                return schema_error(e, rc, P(".function.parameters"), what, &m);
            }
        }
        i++;
    }
#undef P
    const char *named = NULL;
    int mode = tool_choice_from(tc, tools, &named);
    if (mode < 0)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "tool_choice",
                       "Invalid 'tool_choice': expected 'none', 'auto', 'required' or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}.");
    if (tc && n_tools == 0)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "tool_choice",
                       "Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                       "'tools' are specified.");
    int chosen = -1;
    if (named) {
        i = 0;
        cJSON_ArrayForEach(t, tools)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring, named))
                chosen = i;
            i++;
        }
        if (chosen < 0)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "tool_choice",
                           "Invalid 'tool_choice': no function named '%.64s' in 'tools'.", named);
    }
    r->tool_mode = n_tools ? mode : TOOLS_NONE;
    if (r->tool_mode == TOOLS_NONE) return 0;
    if (r->kind != OAI_CHAT)
        return oai_err(e, 400, BAD_REQ, "unsupported_parameter", "tools",
                       "'tools' is only supported on /v1/chat/completions.");
    if (r->constraint)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "response_format",
                       "'response_format' cannot be combined with tool calls; use tool_choice "
                       "'none' or drop response_format.");
    /* the system text: every tool as one JSON line */
    buf_t b = {0};
    int oom = buf_puts(&b, TOOLS_INTRO);
    cJSON_ArrayForEach(t, tools)
    {
        char *line = cJSON_PrintUnformatted(t);
        oom |= !line || buf_puts(&b, line) || buf_puts(&b, "\n");
        free(line);
    }
    oom |= buf_puts(&b, TOOLS_OUTRO);
    if (oom) { /* never a system text cut short */
        buf_free(&b);
        return nomem(e);
    }
    int rc = merge_system(r, b.p, b.n, e);
    buf_free(&b);
    if (rc || r->tool_mode != TOOLS_FORCED) return rc;
    /* forced: the output is a call (or with parallel calls an array of them),
     * the schema written from the parameters' texts printed above */
    if (r->parallel_tool_calls && chosen < 0) oom |= buf_puts(&b, "{\"type\":\"array\",\"items\":");
    if (chosen < 0) oom |= buf_puts(&b, "{\"anyOf\":[");
    i = 0;
    cJSON_ArrayForEach(t, tools)
    {
        if (chosen < 0 || chosen == i) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
            if (chosen < 0 && i) oom |= buf_puts(&b, ",");
            oom |= put_call_schema(&b, cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring,
                                   ptext[i]);
        }
        i++;
    }
    if (chosen < 0) oom |= buf_puts(&b, "]}");
    if (r->parallel_tool_calls && chosen < 0)
        oom |= buf_printf(&b, ",\"minItems\":1,\"maxItems\":%d}", MAX_PARALLEL);
    if (oom) {
        buf_free(&b);
        return nomem(e);
    }
    return set_constraint(r, buf_release(&b), NULL, "tools", e);
}

int tools_parse_request(oai_req_t *r, const cJSON *root, oai_err_t *e)
{
    ptexts_t pt = {NULL, 0};
    int rc = parse_tools(r, root, &pt, e);
    for (int i = 0; i < pt.n; i++)
        free(pt.p[i]);
    free(pt.p);
    return rc;
}

/* ---- request: history ---- */

static int append(oai_msg_t *m, const char *s, size_t n)
{
    char *c = realloc(m->content, m->content_len + n + 1);
    if (!c) return -1;
    memcpy(c + m->content_len, s, n);
    m->content_len += n;
    c[m->content_len] = '\0';
    m->content = c;
    return 0;
}

int tools_render_calls(oai_msg_t *m, const cJSON *calls, int i, oai_err_t *e)
{
    char param[96];
    snprintf(param, sizeof param, "messages[%d].tool_calls", i);
    if (!cJSON_IsArray(calls)) return oai_bad_type(e, param, "an array", calls);
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d]", i, k);
        if (!cJSON_IsObject(c)) return oai_bad_type(e, param, "an object", c);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name =
            cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
        const cJSON *args =
            cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "arguments") : NULL;
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].function.name", i, k);
        if (!cJSON_IsString(name))
            return name ? oai_bad_type(e, param, "a string", name)
                        : oai_err(e, 400, BAD_REQ, "missing_required_parameter", param,
                                  "Missing required parameter: '%s'.", param);
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].function.arguments", i, k);
        if (args && !cJSON_IsString(args)) return oai_bad_type(e, param, "a string", args);
        cJSON *call = cJSON_CreateObject();
        if (!call) return nomem(e);
        cJSON_AddStringToObject(call, "name", name->valuestring);
        cJSON *parsed = args ? cJSON_Parse(args->valuestring) : NULL;
        if (parsed)
            cJSON_AddItemToObject(call, "arguments", parsed);
        else
            cJSON_AddStringToObject(call, "arguments", args ? args->valuestring : "");
        char *text = cJSON_PrintUnformatted(call);
        cJSON_Delete(call);
        if (!text) return nomem(e);
        int rc = (m->content_len && append(m, "\n", 1)) || append(m, OPEN_TAG "\n", 12) ||
                 append(m, text, strlen(text)) || append(m, "\n" CLOSE_TAG, 13);
        free(text);
        if (rc) return nomem(e);
        k++;
    }
    return 0;
}

int tools_render_result(oai_msg_t *m, int i, oai_err_t *e)
{
    (void)i;
    static const char pre[] = "<tool_response>\n", post[] = "\n</tool_response>";
    char *c = malloc(sizeof pre - 1 + m->content_len + sizeof post);
    if (!c) return nomem(e);
    memcpy(c, pre, sizeof pre - 1);
    memcpy(c + sizeof pre - 1, m->content, m->content_len);
    memcpy(c + sizeof pre - 1 + m->content_len, post, sizeof post);
    free(m->content);
    m->content = c;
    m->content_len += sizeof pre - 1 + sizeof post - 1;
    snprintf(m->role, sizeof m->role, "user");
    return 0;
}

/* ---- output ---- */

void tools_calls_free(tools_call_t *calls, int n)
{
    for (int i = 0; i < n; i++)
        free(calls[i].args);
    free(calls);
}

/* one {"name": ..., "arguments": ...} into calls[*n] */
static int read_call(const cJSON *o, tools_call_t *calls, int *n)
{
    const cJSON *name = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "name") : NULL;
    const cJSON *args = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "arguments") : NULL;
    if (!cJSON_IsString(name) || !valid_name(name->valuestring)) return -1;
    char *a = NULL;
    if (!args)
        a = strdup("{}");
    else if (cJSON_IsString(args))
        a = strdup(args->valuestring);
    else if (cJSON_IsObject(args))
        a = cJSON_PrintUnformatted(args);
    if (!a) return -1;
    snprintf(calls[*n].name, sizeof calls[*n].name, "%s", name->valuestring);
    calls[*n].args = a;
    (*n)++;
    return 0;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
        p++;
    return p;
}

static int forced_args(const char *text, size_t n, tools_call_t *calls, int k);

/* text[0..n) as one JSON value with nothing but whitespace after it (cJSON
 * alone ignores what follows: a call's trailing prose would be dropped
 * unseen), or NULL. */
static cJSON *parse_whole(const char *text, size_t n)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (j && skip_ws(end, text + n) != text + n) {
        cJSON_Delete(j);
        j = NULL;
    }
    return j;
}

int tools_read(int mode, const char *text, size_t n, tools_call_t **out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (mode == TOOLS_NONE || !text || n == 0) return -1;
    int cap = MAX_PARALLEL * 4; /* forced: the most the scanner reads; auto: grows */
    tools_call_t *calls = calloc((size_t)cap, sizeof *calls);
    if (!calls) return -1;
    int k = 0, ok = 1;
    if (mode == TOOLS_FORCED) {
        cJSON *j = parse_whole(text, n);
        if (cJSON_IsArray(j)) {
            const cJSON *c;
            cJSON_ArrayForEach(c, j) if (ok && k < MAX_PARALLEL * 4) ok = !read_call(c, calls, &k);
        } else {
            ok = j && !read_call(j, calls, &k);
        }
        cJSON_Delete(j);
        if (ok && k) ok = !forced_args(text, n, calls, k);
    } else {
        const char *p = text, *end = text + n;
        p = skip_ws(p, end);
        while (ok && p < end) {
            size_t ol = strlen(OPEN_TAG);
            if (k == cap) { /* every call is read: none dropped */
                tools_call_t *more = realloc(calls, (size_t)cap * 2 * sizeof *calls);
                if (!more) {
                    ok = 0;
                    break;
                }
                calls = more;
                cap *= 2;
            }
            if ((size_t)(end - p) < ol || memcmp(p, OPEN_TAG, ol)) {
                ok = 0;
                break;
            }
            p += ol;
            const char *close = NULL;
            for (const char *q = p; q + strlen(CLOSE_TAG) <= end; q++)
                if (!memcmp(q, CLOSE_TAG, strlen(CLOSE_TAG))) {
                    close = q;
                    break;
                }
            const char *stop = close ? close : end;
            cJSON *j = parse_whole(p, (size_t)(stop - p));
            ok = j && !read_call(j, calls, &k);
            cJSON_Delete(j);
            /* an object's arguments as generated, not reprinted (cJSON turns
             * 12345678901234567890 into 1.2345678901234567e+19); string
             * arguments, or a call the scanner reads otherwise, as read */
            if (ok) forced_args(p, (size_t)(stop - p), calls + k - 1, 1);
            p = close ? close + strlen(CLOSE_TAG) : end;
            p = skip_ws(p, end);
        }
    }
    if (!ok || k == 0) {
        tools_calls_free(calls, k);
        return -1;
    }
    *out = calls;
    *n_out = k;
    return 0;
}

int tools_may_be_call(int mode, const char *text, size_t n)
{
    if (mode == TOOLS_FORCED) return 1;
    if (mode != TOOLS_AUTO) return 0;
    const char *p = skip_ws(text, text + n);
    size_t m = (size_t)(text + n - p), ol = strlen(OPEN_TAG);
    return !memcmp(p, OPEN_TAG, m < ol ? m : ol);
}

oai_finish_t tools_finish(const oai_resp_t *r, const char *text, size_t n, oai_finish_t fin)
{
    if (r->kind != OAI_CHAT || !r->tool_mode || fin != OAI_FINISH_STOP) return fin;
    tools_call_t *calls;
    int k;
    if (tools_read(r->tool_mode, text, n, &calls, &k)) return fin;
    tools_calls_free(calls, k);
    return OAI_FINISH_TOOL_CALLS;
}

static void put_id(buf_t *out, const oai_resp_t *r, int i)
{
    uint64_t h = XXH3_64bits_withSeed(r->id, strlen(r->id), (uint64_t)i);
    uint64_t h2 = XXH3_64bits_withSeed(r->id, strlen(r->id), (uint64_t)i + 0x5bd1e995u);
    buf_printf(out, "\"call_%016llx%08llx\"", (unsigned long long)h,
               (unsigned long long)(h2 & 0xffffffffull));
}

int tools_put_message(buf_t *out, const oai_resp_t *r, const char *text, size_t n)
{
    tools_call_t *calls;
    int k;
    if (r->kind != OAI_CHAT || tools_read(r->tool_mode, text, n, &calls, &k)) return -1;
    buf_puts(out, "\"content\":null,\"tool_calls\":[");
    for (int i = 0; i < k; i++) {
        buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
        put_id(out, r, i);
        buf_puts(out, ",\"type\":\"function\",\"function\":{\"name\":");
        oai_json_string(out, calls[i].name, strlen(calls[i].name));
        buf_puts(out, ",\"arguments\":");
        oai_json_string(out, calls[i].args, strlen(calls[i].args));
        buf_puts(out, "}}");
    }
    buf_puts(out, "]");
    tools_calls_free(calls, k);
    return 0;
}

static void chunk_head(buf_t *out, const oai_resp_t *r)
{
    buf_puts(out, "data: {\"id\":");
    oai_json_string(out, r->id, strlen(r->id));
    buf_printf(out, ",\"object\":\"chat.completion.chunk\",\"created\":%ld,\"model\":", r->created);
    oai_json_string(out, r->model, strlen(r->model));
    buf_puts(out, ",\"system_fingerprint\":\"barista\",\"choices\":[{\"index\":0,\"delta\":{"
                  "\"tool_calls\":[{\"index\":");
}

static void chunk_tail(buf_t *out)
{
    buf_puts(out, "}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
}

/* ---- the forced calls' scanner ---- */

/* What the scanner found: a call's name is complete (head), or bytes of its
 * arguments. */
typedef void (*scan_fn)(void *ctx, int head, int index, const char *name, const char *p, size_t n);

static int utf8_tail_incomplete(const char *p, size_t n)
{
    /* bytes at the end of p[0..n) that begin a UTF-8 sequence not yet complete */
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)p[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? (int)back : 0;
    }
    return 0;
}

static void scan(tools_stream_t *s, const char *text, size_t n, int final, scan_fn fn, void *ctx)
{
    char args[256];
    size_t na = 0;
#define FLUSH_ARGS()                                                                               \
    do {                                                                                           \
        if (na) fn(ctx, 0, s->n_calls - 1, NULL, args, na);                                        \
        na = 0;                                                                                    \
    } while (0)
#define PUT_ARG(ch)                                                                                \
    do {                                                                                           \
        if (na == sizeof args) { /* full: send it, but not half a UTF-8 sequence */                \
            size_t keep_ = (size_t)utf8_tail_incomplete(args, na);                                 \
            fn(ctx, 0, s->n_calls - 1, NULL, args, na - keep_);                                    \
            memmove(args, args + na - keep_, keep_);                                               \
            na = keep_;                                                                            \
        }                                                                                          \
        args[na++] = (ch);                                                                         \
    } while (0)
    if (s->pos > n) memset(s, 0, sizeof *s); /* the text was reset (not streamed yet) */
    for (int i = 0; i < s->n_pend; i++)
        PUT_ARG(s->pend[i]);
    s->n_pend = 0;
    for (; s->pos < n && !s->broken; s->pos++) {
        char c = text[s->pos];
        if (s->in_str) {
            if (s->in_args) PUT_ARG(c);
            if (s->esc) {
                s->esc = 0;
            } else if (c == '\\') {
                s->esc = 1;
            } else if (c == '"') {
                s->in_str = 0;
                if (s->reading_key) {
                    s->reading_key = 0;
                    s->key[s->key_len] = '\0';
                    s->want = !strcmp(s->key, "name") ? 1 : !strcmp(s->key, "arguments") ? 2 : 0;
                } else if (s->in_name) {
                    s->in_name = 0;
                    s->name[s->name_len] = '\0';
                    if (s->n_calls >= MAX_PARALLEL * 4) {
                        s->broken = 1;
                        break;
                    }
                    FLUSH_ARGS();
                    s->n_calls++;
                    fn(ctx, 1, s->n_calls - 1, s->name, NULL, 0);
                }
                continue;
            }
            if (s->reading_key && s->key_len < (int)sizeof s->key - 1) s->key[s->key_len++] = c;
            if (s->in_name && s->name_len < (int)sizeof s->name - 1) s->name[s->name_len++] = c;
            continue;
        }
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') continue;
        if (s->in_args && s->depth == s->call_depth && (c == ',' || c == '}'))
            s->in_args = 0; /* a scalar value ended */
        if (s->in_args) PUT_ARG(c);
        switch (c) {
        case '"':
            s->in_str = 1;
            if (s->depth == s->call_depth && s->expect_key) {
                s->reading_key = 1;
                s->key_len = 0;
                s->expect_key = 0;
            } else if (s->depth == s->call_depth && s->want == 1 && !s->in_args) {
                s->in_name = 1;
                s->name_len = 0;
            }
            break;
        case '{':
        case '[':
            if (s->depth == 0) s->call_depth = c == '[' ? 2 : 1;
            s->depth++;
            if (s->depth == s->call_depth && c == '{' && !s->in_args) {
                s->expect_key = 1;
                s->want = 0;
            }
            break;
        case '}':
        case ']':
            s->depth--;
            if (s->in_args && s->depth == s->call_depth) s->in_args = 0; /* its object closed */
            break;
        case ':':
            if (s->depth == s->call_depth && !s->in_args && s->want == 2) {
                if (s->n_calls == 0 || s->name[0] == '\0') {
                    s->broken = 1; /* arguments before the name */
                    break;
                }
                s->in_args = 1;
                s->name[0] = '\0'; /* the next call needs its own name first */
            }
            break;
        case ',':
            if (s->depth == s->call_depth && !s->in_args) s->expect_key = 1;
            break;
        default:
            break;
        }
    }
    if (!final && s->in_args) {
        /* hold back an incomplete UTF-8 sequence for the next scan */
        int k = utf8_tail_incomplete(args, na);
        memcpy(s->pend, args + na - (size_t)k, (size_t)k);
        s->n_pend = k;
        na -= (size_t)k;
    }
    FLUSH_ARGS();
#undef PUT_ARG
#undef FLUSH_ARGS
}

typedef struct {
    buf_t *out;
    const oai_resp_t *r;
} live_t;

static void live_emit(void *ctx, int head, int index, const char *name, const char *p, size_t n)
{
    live_t *l = ctx;
    chunk_head(l->out, l->r);
    buf_printf(l->out, "%d,", index);
    if (head) {
        buf_puts(l->out, "\"id\":");
        put_id(l->out, l->r, index);
        buf_puts(l->out, ",\"type\":\"function\",\"function\":{\"name\":");
        oai_json_string(l->out, name, strlen(name));
        buf_puts(l->out, ",\"arguments\":\"\"}");
    } else {
        buf_puts(l->out, "\"function\":{\"arguments\":");
        oai_json_string(l->out, p, n);
        buf_puts(l->out, "}");
    }
    chunk_tail(l->out);
}

int tools_stream(tools_stream_t *s, buf_t *out, const oai_resp_t *r, const char *text, size_t n,
                 int final)
{
    live_t l = {out, r};
    scan(s, text, n, final, live_emit, &l);
    return s->n_calls;
}

/* The calls of a forced text, as the scanner reads them. */
typedef struct {
    int n;
    char name[MAX_PARALLEL * 4][65];
    buf_t args[MAX_PARALLEL * 4];
} collect_t;

static void collect_emit(void *ctx, int head, int index, const char *name, const char *p, size_t n)
{
    collect_t *c = ctx;
    if (index < 0 || index >= MAX_PARALLEL * 4) return;
    if (head) {
        c->n = index + 1;
        snprintf(c->name[index], sizeof c->name[index], "%s", name);
    } else {
        buf_append(&c->args[index], p, n);
    }
}

/* Forced calls read by cJSON take their arguments as the scanner (and so a
 * live stream) sends them: the generated bytes without the whitespace
 * outside strings (cJSON would reprint numbers and escapes). 0, or -1 when
 * the scanner reads other calls than cJSON (a text the constraint never
 * makes: duplicate keys, escaped names, arguments that are no object), so
 * that what was streamed and what is answered never differ. */
static int forced_args(const char *text, size_t n, tools_call_t *calls, int k)
{
    tools_stream_t s = {0};
    collect_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    scan(&s, text, n, 1, collect_emit, c);
    int ok = !s.broken && c->n == k;
    for (int i = 0; ok && i < k; i++)
        ok = !strcmp(c->name[i], calls[i].name) && c->args[i].n && c->args[i].p[0] == '{';
    for (int i = 0; ok && i < k; i++) {
        char *a = strndup(c->args[i].p, c->args[i].n);
        ok = a != NULL;
        if (a) {
            free(calls[i].args);
            calls[i].args = a;
        }
    }
    for (int i = 0; i < MAX_PARALLEL * 4; i++)
        buf_free(&c->args[i]);
    free(c);
    return ok ? 0 : -1;
}

int tools_put_chunks(buf_t *out, const oai_resp_t *r, const char *text, size_t n)
{
    tools_call_t *calls;
    int k;
    if (r->kind != OAI_CHAT || tools_read(r->tool_mode, text, n, &calls, &k)) return -1;
    for (int i = 0; i < k; i++) {
        /* the call's head: index, id, type, name, empty arguments */
        chunk_head(out, r);
        buf_printf(out, "%d,\"id\":", i);
        put_id(out, r, i);
        buf_puts(out, ",\"type\":\"function\",\"function\":{\"name\":");
        oai_json_string(out, calls[i].name, strlen(calls[i].name));
        buf_puts(out, ",\"arguments\":\"\"}");
        chunk_tail(out);
        /* then the arguments in fragments (never splitting a UTF-8 sequence) */
        const char *a = calls[i].args;
        size_t len = strlen(a), off = 0;
        while (off < len) {
            size_t m = len - off < ARG_FRAGMENT ? len - off : ARG_FRAGMENT;
            while (off + m < len && ((unsigned char)a[off + m] & 0xC0) == 0x80)
                m++;
            chunk_head(out, r);
            buf_printf(out, "%d,\"function\":{\"arguments\":", i);
            oai_json_string(out, a + off, m);
            buf_puts(out, "}");
            chunk_tail(out);
            off += m;
        }
    }
    tools_calls_free(calls, k);
    return out->p ? 0 : -1;
}
