/* embeddings.c — the /v1/embeddings request schema and response object
 * (embeddings.h). Validation walks the cJSON tree once; texts stay in the
 * tree, token ids are copied into one int32 block. Not for: the request's
 * lifecycle (embed_job.c). */
#include "api/embeddings.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD_REQ "invalid_request_error"

/* A token id: an integer 0..INT32_MAX (the backend checks its vocabulary). */
static int token_id(const cJSON *v, int32_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < 0 || d > 2147483647.0) return -1;
    *out = (int32_t)d;
    return 0;
}

static int bad_item(oai_err_t *e, int i, const char *want, const cJSON *v)
{
    return oai_err(e, 400, BAD_REQ, "invalid_type", "input",
                   "Invalid type for 'input[%d]': expected %s, but got %s instead. 'input' is a "
                   "string, an array of strings, an array of token ids or an array of token-id "
                   "arrays, not a mix.",
                   i, want, oai_json_type_name(v));
}

static int empty_input(oai_err_t *e, int i)
{
    if (i < 0)
        return oai_err(e, 400, BAD_REQ, "invalid_value", "input",
                       "Invalid 'input': the input is empty; it must be a non-empty string, or an "
                       "array of 1 to %d non-empty inputs.",
                       EMB_MAX_INPUTS);
    return oai_err(e, 400, BAD_REQ, "invalid_value", "input",
                   "Invalid 'input[%d]': the input is empty; each input must have at least one "
                   "character or token.",
                   i);
}

static int alloc_inputs(emb_req_t *r, int n, oai_err_t *e)
{
    r->texts = calloc((size_t)n, sizeof *r->texts);
    r->lens = calloc((size_t)n, sizeof *r->lens);
    r->ids = calloc((size_t)n, sizeof *r->ids);
    r->n_ids = calloc((size_t)n, sizeof *r->n_ids);
    if (!r->texts || !r->lens || !r->ids || !r->n_ids)
        return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

/* An array of integers into r->ids[i] at id_store + *at. */
static int read_ids(emb_req_t *r, const cJSON *arr, int i, size_t *at, int outer, oai_err_t *e)
{
    size_t k = 0;
    r->ids[i] = r->id_store + *at;
    const cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        if (token_id(t, &r->id_store[*at + k]) < 0) {
            if (!cJSON_IsNumber(t))
                return outer ? oai_err(e, 400, BAD_REQ, "invalid_type", "input",
                                       "Invalid type for 'input[%d][%zu]': expected a token id "
                                       "(an integer), but got %s instead.",
                                       i, k, oai_json_type_name(t))
                             : bad_item(e, (int)k, "a token id (an integer)", t);
            return outer ? oai_err(e, 400, BAD_REQ, "invalid_value", "input",
                                   "Invalid 'input[%d][%zu]': a token id is an integer from 0 to "
                                   "2147483647, got %g.",
                                   i, k, t->valuedouble)
                         : oai_err(e, 400, BAD_REQ, "invalid_value", "input",
                                   "Invalid 'input[%zu]': a token id is an integer from 0 to "
                                   "2147483647, got %g.",
                                   k, t->valuedouble);
        }
        k++;
    }
    r->n_ids[i] = k;
    *at += k;
    return 0;
}

/* Count the ids an array of token-id arrays holds (for one allocation). */
static size_t count_ids(const cJSON *in, int nested)
{
    size_t n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, in)
    {
        if (!nested)
            n++;
        else if (cJSON_IsArray(x))
            n += (size_t)cJSON_GetArraySize(x);
    }
    return n;
}

static int parse_input(emb_req_t *r, const cJSON *in, oai_err_t *e)
{
    if (!in)
        return oai_err(e, 400, BAD_REQ, "missing_required_parameter", "input",
                       "Missing required parameter: 'input'.");
    if (cJSON_IsString(in)) {
        size_t n = strlen(in->valuestring);
        if (!n) return empty_input(e, -1);
        int rc = alloc_inputs(r, 1, e);
        if (rc) return rc;
        r->n = 1;
        r->texts[0] = in->valuestring;
        r->lens[0] = n;
        r->n_bytes = n;
        return 0;
    }
    if (!cJSON_IsArray(in))
        return oai_bad_type(e, "input",
                            "a string or an array (of strings, token ids or token-id arrays)", in);
    int n = 0;
    const cJSON *first = in->child, *x;
    cJSON_ArrayForEach(x, in)
    {
        if (++n > EMB_MAX_INPUTS)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "input",
                           "Invalid 'input': at most %d inputs per request, got more.",
                           EMB_MAX_INPUTS);
    }
    if (n == 0) return empty_input(e, -1);
    if (cJSON_IsNumber(first)) {
        /* one input given as token ids */
        r->is_tokens = 1;
        int rc = alloc_inputs(r, 1, e);
        if (rc) return rc;
        if (!(r->id_store = malloc((size_t)n * sizeof *r->id_store)))
            return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
        size_t at = 0;
        if ((rc = read_ids(r, in, 0, &at, 0, e))) return rc;
        r->n = 1;
        r->n_bytes = at;
        return 0;
    }
    int rc = alloc_inputs(r, n, e);
    if (rc) return rc;
    if (cJSON_IsString(first)) {
        int i = 0;
        cJSON_ArrayForEach(x, in)
        {
            if (!cJSON_IsString(x)) return bad_item(e, i, "a string", x);
            size_t len = strlen(x->valuestring);
            if (!len) return empty_input(e, i);
            r->texts[i] = x->valuestring;
            r->lens[i] = len;
            r->n_bytes += len;
            i++;
        }
        r->n = n;
        return 0;
    }
    if (cJSON_IsArray(first)) {
        r->is_tokens = 1;
        size_t total = count_ids(in, 1);
        if (!(r->id_store = malloc((total ? total : 1) * sizeof *r->id_store)))
            return oai_err(e, 500, "server_error", NULL, NULL, "out of memory");
        size_t at = 0;
        int i = 0;
        cJSON_ArrayForEach(x, in)
        {
            if (!cJSON_IsArray(x)) return bad_item(e, i, "an array of token ids", x);
            if (!x->child) return empty_input(e, i);
            if ((rc = read_ids(r, x, i, &at, 1, e))) return rc;
            i++;
        }
        r->n = n;
        r->n_bytes = at;
        return 0;
    }
    return bad_item(e, 0, "a string, a token id or an array of token ids", first);
}

int emb_parse(emb_req_t *r, const cJSON *root, oai_err_t *e)
{
    memset(r, 0, sizeof *r);
    int rc = oai_parse_model_name(root, r->model, sizeof r->model, e);
    if (rc) return rc;
    const cJSON *v;
    if ((v = oai_member(root, "encoding_format"))) {
        if (!cJSON_IsString(v)) return oai_bad_type(e, "encoding_format", "a string", v);
        if (!strcmp(v->valuestring, "base64"))
            r->base64 = 1;
        else if (strcmp(v->valuestring, "float"))
            return oai_err(e, 400, BAD_REQ, "invalid_value", "encoding_format",
                           "Invalid value for 'encoding_format': '%.32s'. Supported values are: "
                           "'float' and 'base64'.",
                           v->valuestring);
    }
    if ((v = oai_member(root, "dimensions"))) {
        if (!cJSON_IsNumber(v)) return oai_bad_type(e, "dimensions", "an integer", v);
        double d = v->valuedouble;
        if (!isfinite(d) || d != floor(d) || d < 1 || d > 1000000)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "dimensions",
                           "Invalid 'dimensions': expected an integer >= 1, got %g.", d);
        r->dimensions = (int)d;
    }
    if ((v = oai_member(root, "user")) && !cJSON_IsString(v))
        return oai_bad_type(e, "user", "a string", v);
    if ((v = oai_member(root, "stream"))) {
        if (!cJSON_IsBool(v)) return oai_bad_type(e, "stream", "a boolean", v);
        if (cJSON_IsTrue(v))
            return oai_err(e, 400, BAD_REQ, "unsupported_value", "stream",
                           "Invalid 'stream': embeddings are returned in one response; streaming "
                           "is not available on /v1/embeddings.");
    }
    if ((v = oai_member(root, "timeout"))) {
        if (!cJSON_IsNumber(v)) return oai_bad_type(e, "timeout", "a number", v);
        double d = v->valuedouble;
        if (!isfinite(d) || d < 0 || d > 86400)
            return oai_err(e, 400, BAD_REQ, "invalid_value", "timeout",
                           "Invalid 'timeout': expected seconds from 0 to 86400, got %g.", d);
        r->timeout_s = d;
    }
    return parse_input(r, oai_member(root, "input"), e);
}

void emb_req_free(emb_req_t *r)
{
    if (!r) return;
    free(r->texts);
    free(r->lens);
    free(r->ids);
    free(r->n_ids);
    free(r->id_store);
    memset(r, 0, sizeof *r);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* n bytes as standard base64 with padding into dst (4 * ceil(n / 3) bytes). */
static size_t base64(char *dst, const unsigned char *s, size_t n)
{
    char *d = dst;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *d++ = B64[v >> 18];
        *d++ = B64[(v >> 12) & 63];
        *d++ = B64[(v >> 6) & 63];
        *d++ = B64[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *d++ = B64[v >> 18];
        *d++ = B64[(v >> 12) & 63];
        *d++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *d++ = '=';
    }
    return (size_t)(d - dst);
}

/* Powers of ten 10^-40 .. 10^60 for fmt_f32's scaling. */
static double POW10[101];
static pthread_once_t pow10_once = PTHREAD_ONCE_INIT;
static void pow10_init(void)
{
    char t[16];
    for (int i = 0; i <= 100; i++) {
        snprintf(t, sizeof t, "1e%d", i - 40);
        POW10[i] = strtod(t, NULL); /* correctly rounded */
    }
}

/* A finite float as a JSON number with 9 significant digits, written at p
 * (at most 16 bytes); returns the end. 9 correctly rounded digits always
 * read back as the same float32; the scaling below is off by at most a few
 * double ulps (1e-15 relative), far inside the half float32 ulp (>= 3e-8
 * relative) the 9th digit leaves. snprintf("%.9g") does the same ~10x slower,
 * which on a 2048 x 384 reply held the loop for half a second. Decimal
 * notation for 1e-7 <= |f| < 1e9, scientific otherwise. */
static char *fmt_f32(char *p, float f)
{
    if (f == 0) {
        *p++ = '0';
        return p;
    }
    double x = f;
    if (x < 0) {
        *p++ = '-';
        x = -x;
    }
    int e2;
    frexp(x, &e2); /* x in [2^(e2-1), 2^e2) */
    /* 10^e <= x < 10^(e+1), give or take one: corrected below */
    int e = (int)floor((double)(e2 - 1) * 0.30102999566398120);
    uint64_t m = (uint64_t)(x * POW10[8 - e + 40] + 0.5);
    if (m >= 1000000000u) { /* log10 was one low, or rounding carried */
        e++;
        m = (uint64_t)(x * POW10[8 - e + 40] + 0.5);
    } else if (m < 100000000u) {
        e--;
        m = (uint64_t)(x * POW10[8 - e + 40] + 0.5);
    }
    if (m >= 1000000000u) { /* 9.999999995 rounding up */
        m /= 10;
        e++;
    }
    char d[9];
    for (int i = 8; i >= 0; i--, m /= 10)
        d[i] = (char)('0' + m % 10);
    int nd = 9;
    while (nd > 1 && d[nd - 1] == '0')
        nd--;
    if (e >= -7 && e < 9) {
        if (e < 0) {
            *p++ = '0';
            *p++ = '.';
            for (int i = -1; i > e; i--)
                *p++ = '0';
            memcpy(p, d, (size_t)nd);
            return p + nd;
        }
        for (int i = 0; i <= e; i++)
            *p++ = i < nd ? d[i] : '0';
        if (nd > e + 1) {
            *p++ = '.';
            memcpy(p, d + e + 1, (size_t)(nd - e - 1));
            p += nd - e - 1;
        }
        return p;
    }
    *p++ = d[0];
    if (nd > 1) {
        *p++ = '.';
        memcpy(p, d + 1, (size_t)(nd - 1));
        p += nd - 1;
    }
    *p++ = 'e';
    if (e < 0) {
        *p++ = '-';
        e = -e;
    }
    if (e >= 10) *p++ = (char)('0' + e / 10);
    *p++ = (char)('0' + e % 10);
    return p;
}

static int put_row(buf_t *out, const float *row, int dim, int b64)
{
    if (b64) {
        /* little-endian float32 bytes, whatever the host order */
        size_t nb = (size_t)dim * 4;
        unsigned char *bytes = malloc(nb ? nb : 1);
        if (!bytes || buf_reserve(out, (nb + 2) / 3 * 4 + 2)) {
            free(bytes);
            return BAR_ERR_NOMEM;
        }
        for (int j = 0; j < dim; j++) {
            float f = isfinite(row[j]) ? row[j] : 0.0f;
            uint32_t u;
            memcpy(&u, &f, 4);
            for (int k = 0; k < 4; k++)
                bytes[(size_t)j * 4 + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        out->p[out->n++] = '"';
        out->n += base64(out->p + out->n, bytes, nb);
        out->p[out->n++] = '"';
        out->p[out->n] = '\0'; /* buf.h's invariant */
        free(bytes);
        return 0;
    }
    /* at most 19 bytes per value with its comma: ",-0.000000123456789" */
    if (buf_reserve(out, (size_t)dim * 20 + 4)) return BAR_ERR_NOMEM;
    pthread_once(&pow10_once, pow10_init);
    char *p = out->p + out->n;
    *p++ = '[';
    for (int j = 0; j < dim; j++) {
        if (j) *p++ = ',';
        p = fmt_f32(p, isfinite(row[j]) ? row[j] : 0.0f);
    }
    out->n = (size_t)(p - out->p);
    out->p[out->n++] = ']';
    out->p[out->n] = '\0';
    return 0;
}

int emb_format_response(buf_t *out, const char *model, const float *vecs, int n, int dim, int b64,
                        long long prompt_tokens)
{
    if (buf_puts(out, "{\"object\":\"list\",\"data\":[")) return BAR_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        if (buf_printf(out, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "",
                       i) ||
            put_row(out, vecs + (size_t)i * (size_t)dim, dim, b64) || buf_puts(out, "}"))
            return BAR_ERR_NOMEM;
    }
    if (buf_puts(out, "],\"model\":") || oai_json_string(out, model, strlen(model)) ||
        buf_printf(out, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}\n",
                   prompt_tokens, prompt_tokens))
        return BAR_ERR_NOMEM;
    return 0;
}
