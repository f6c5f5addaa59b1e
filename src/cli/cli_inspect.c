/* cli_inspect.c — `barista inspect FILE [--json]`: what is inside a model file.
 *
 * Maps the file once, picks the reader by its first bytes ("GGUF" magic, or a
 * u64 length followed by '{' for safetensors), and prints the metadata, the
 * tensor table and totals by type, as text or as one JSON document. Both
 * readers' results are first flattened into one view (metadata entries shaped
 * like gguf_kv_t, tensor rows) so the two printers serve both formats.
 * Every byte that came from the file is escaped before it reaches stdout.
 *
 * Not for: validating anything itself (the readers do that) or loading models. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/safetensors.h"
#include "util/mfile.h"

#define TEXT_STR_MAX 64      /* longer strings are cut in text mode */
#define TEXT_ITEM_STR_MAX 24 /* ... and strings inside arrays */
#define TEXT_ARR_ITEMS 5     /* array items shown in text mode */
#define JSON_STR_MAX 4096
#define JSON_ITEM_STR_MAX 256
#define JSON_ARR_ITEMS 16
#define MAX_DIMS 8
#define NAME_MAX_BYTES 200 /* longer keys and tensor names are cut in text mode */
#define NAME_COL_MAX 60    /* widest key / name column */

static const char usage_line[] = "usage: barista inspect [--json] FILE\n";

static const char help_text[] =
    "Print the metadata, tensor table and totals by type of a GGUF (v2/v3) or\n"
    "safetensors file. The format is detected from the first bytes. The whole\n"
    "file is validated first; a bad file prints one line\n"
    "  barista inspect: FILE: offset N: what was expected\n"
    "on stderr and exits 1.\n"
    "\n"
    "options:\n"
    "  --json      print one JSON document instead of text\n"
    "  -h, --help  print this help and exit\n"
    "\n"
    "Text mode escapes bytes that are not printable UTF-8 (\\n, \\t, \\xHH), cuts\n"
    "strings over 64 bytes (the length is shown), shows the first 5 items of an\n"
    "array, and ends with the line \"tensors: N\".\n"
    "\n"
    "JSON schema (integers are exact; invalid UTF-8 becomes U+FFFD):\n"
    "  {\n"
    "    \"file\": str, \"format\": \"gguf\" | \"safetensors\",\n"
    "    \"version\": int, \"alignment\": int,     (gguf only)\n"
    "    \"header_size\": int,                     (safetensors only: JSON header bytes)\n"
    "    \"data_offset\": int, \"file_size\": int,\n"
    "    \"metadata_count\": int,\n"
    "    \"metadata\": [ {\"key\": str, \"type\": T, \"value\": V, ...} ],\n"
    "        T is u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool string array;\n"
    "        strings add \"length\" (bytes) and \"truncated\" (value cut to 4096 bytes);\n"
    "        arrays add \"element_type\", \"length\" (items) and \"truncated\"; their\n"
    "        \"value\" holds the first 16 items (strings cut to 256 bytes; an item\n"
    "        that is itself an array is {\"element_type\", \"length\"});\n"
    "        safetensors __metadata__ entries are all of type string;\n"
    "    \"tensor_count\": int,\n"
    "    \"tensors\": [ {\"name\": str, \"type\": str, \"shape\": [int], \"elements\": int,\n"
    "                  \"offset\": int, \"file_offset\": int, \"bytes\": int} ],\n"
    "        gguf shapes are ggml order (ne[0], the contiguous row, first);\n"
    "        safetensors shapes are row-major as stored; \"offset\" is relative to\n"
    "        the data section, \"file_offset\" to the file;\n"
    "    \"totals\": { TYPE: {\"count\": int, \"bytes\": int} },\n"
    "    \"total_bytes\": int\n"
    "  }\n";

/* ---- the flattened view ------------------------------------------------- */

typedef struct {
    gguf_str_t name;
    const char *type;
    uint32_t n_dims;
    int64_t shape[MAX_DIMS];
    uint64_t elems, offset, file_offset, bytes;
} row_t;

typedef struct {
    const char *type;
    uint64_t count, bytes;
} total_t;

typedef struct {
    const char *path;
    const char *format;
    int is_gguf;
    uint32_t version, alignment;
    size_t header_size, data_offset, file_size;
    size_t n_kv;
    gguf_kv_t *kv; /* safetensors metadata converted to string kvs */
    size_t n_rows;
    row_t *rows;
    size_t n_totals;
    total_t *totals; /* sorted by type name */
    uint64_t total_bytes;
} view_t;

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int total_cmp(const void *a, const void *b)
{
    return strcmp(((const total_t *)a)->type, ((const total_t *)b)->type);
}

/* Totals by type, from the rows. Returns 0 or BAR_ERR_NOMEM. */
static int view_totals(view_t *v)
{
    if (v->n_rows == 0) return 0;
    v->totals = calloc(v->n_rows, sizeof *v->totals);
    if (!v->totals) return BAR_ERR_NOMEM;
    for (size_t i = 0; i < v->n_rows; i++) {
        const row_t *r = &v->rows[i];
        size_t j = 0;
        while (j < v->n_totals && strcmp(v->totals[j].type, r->type) != 0)
            j++;
        if (j == v->n_totals) v->totals[v->n_totals++].type = r->type;
        v->totals[j].count++;
        v->totals[j].bytes = sat_add(v->totals[j].bytes, r->bytes);
        v->total_bytes = sat_add(v->total_bytes, r->bytes);
    }
    qsort(v->totals, v->n_totals, sizeof *v->totals, total_cmp);
    return 0;
}

static int view_from_gguf(view_t *v, const gguf_t *g)
{
    v->format = "gguf";
    v->is_gguf = 1;
    v->version = gguf_version(g);
    v->alignment = gguf_alignment(g);
    v->data_offset = gguf_data_offset(g);
    v->file_size = gguf_file_size(g);
    v->n_kv = gguf_kv_count(g);
    if (v->n_kv && !(v->kv = calloc(v->n_kv, sizeof *v->kv))) return BAR_ERR_NOMEM;
    for (size_t i = 0; i < v->n_kv; i++)
        v->kv[i] = *gguf_kv_at(g, i);
    v->n_rows = gguf_tensor_count(g);
    if (v->n_rows && !(v->rows = calloc(v->n_rows, sizeof *v->rows))) return BAR_ERR_NOMEM;
    for (size_t i = 0; i < v->n_rows; i++) {
        const gguf_tensor_t *t = gguf_tensor_at(g, i);
        row_t *r = &v->rows[i];
        r->name = t->name;
        r->type = ggml_type_name(t->type);
        r->n_dims = t->n_dims;
        r->elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            r->shape[d] = t->ne[d];
            r->elems *= (uint64_t)t->ne[d]; /* checked by gguf_parse */
        }
        r->offset = t->offset;
        r->file_offset = v->data_offset + t->offset;
        r->bytes = t->n_bytes;
    }
    return view_totals(v);
}

static int view_from_safet(view_t *v, const safet_t *s)
{
    v->format = "safetensors";
    v->header_size = safet_header_size(s);
    v->data_offset = safet_data_offset(s);
    v->file_size = safet_file_size(s);
    v->n_kv = safet_meta_count(s);
    if (v->n_kv && !(v->kv = calloc(v->n_kv, sizeof *v->kv))) return BAR_ERR_NOMEM;
    for (size_t i = 0; i < v->n_kv; i++) {
        const safet_meta_t *m = safet_meta_at(s, i);
        v->kv[i].key = (gguf_str_t){m->key, strlen(m->key)};
        v->kv[i].type = GGUF_T_STRING;
        v->kv[i].str = (gguf_str_t){m->value, strlen(m->value)};
    }
    v->n_rows = safet_tensor_count(s);
    if (v->n_rows && !(v->rows = calloc(v->n_rows, sizeof *v->rows))) return BAR_ERR_NOMEM;
    for (size_t i = 0; i < v->n_rows; i++) {
        const safet_tensor_t *t = safet_tensor_at(s, i);
        row_t *r = &v->rows[i];
        r->name = (gguf_str_t){t->name, strlen(t->name)};
        r->type = safet_dtype_name(t->dtype);
        r->n_dims = t->n_dims;
        for (uint32_t d = 0; d < t->n_dims && d < MAX_DIMS; d++)
            r->shape[d] = t->shape[d];
        r->elems = t->n_elems;
        r->offset = t->begin;
        r->file_offset = v->data_offset + t->begin;
        r->bytes = t->n_bytes;
    }
    return view_totals(v);
}

static void view_free(view_t *v)
{
    free(v->kv);
    free(v->rows);
    free(v->totals);
}

/* ---- array elements ------------------------------------------------------- */

static uint64_t ld_le(const uint8_t *p, size_t n)
{
    uint64_t x = 0;
    for (size_t i = n; i-- > 0;)
        x = (x << 8) | p[i];
    return x;
}

/* Bytes one value of type t occupies at p (at most avail), or SIZE_MAX when
 * it does not fit. The reader validated all of this; the walk re-checks. */
static size_t value_span(uint32_t t, const uint8_t *p, size_t avail, int depth)
{
    size_t fixed = gguf_vtype_size(t);
    if (fixed) return fixed <= avail ? fixed : SIZE_MAX;
    if (t == GGUF_T_STRING) {
        if (avail < 8 || ld_le(p, 8) > avail - 8) return SIZE_MAX;
        return 8 + (size_t)ld_le(p, 8);
    }
    if (t != GGUF_T_ARRAY || depth > 8 || avail < 12) return SIZE_MAX;
    uint32_t et = (uint32_t)ld_le(p, 4);
    uint64_t n = ld_le(p + 4, 8);
    size_t off = 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t s = value_span(et, p + off, avail - off, depth + 1);
        if (s == SIZE_MAX) return SIZE_MAX;
        off += s;
    }
    return off;
}

/* Decode the array element at p (type et) into e, shaped like a kv value. */
static int decode_elem(uint32_t et, const uint8_t *p, size_t avail, gguf_kv_t *e, size_t *used)
{
    size_t s = value_span(et, p, avail, 1);
    if (s == SIZE_MAX) return -1;
    memset(e, 0, sizeof *e);
    e->type = (gguf_vtype_t)et;
    switch (et) {
    case GGUF_T_U8:
    case GGUF_T_U16:
    case GGUF_T_U32:
    case GGUF_T_U64:
        e->v.u = ld_le(p, s);
        break;
    case GGUF_T_I8:
        e->v.i = (int8_t)p[0];
        break;
    case GGUF_T_I16:
        e->v.i = (int16_t)ld_le(p, 2);
        break;
    case GGUF_T_I32:
        e->v.i = (int32_t)ld_le(p, 4);
        break;
    case GGUF_T_I64:
        e->v.i = (int64_t)ld_le(p, 8);
        break;
    case GGUF_T_BOOL:
        e->v.b = p[0] != 0;
        break;
    case GGUF_T_F32: {
        uint32_t b = (uint32_t)ld_le(p, 4);
        float f;
        memcpy(&f, &b, 4);
        e->v.f = f;
        break;
    }
    case GGUF_T_F64: {
        uint64_t b = ld_le(p, 8);
        memcpy(&e->v.f, &b, 8);
        break;
    }
    case GGUF_T_STRING:
        e->str = (gguf_str_t){(const char *)p + 8, s - 8};
        break;
    case GGUF_T_ARRAY:
        e->arr_type = (gguf_vtype_t)ld_le(p, 4);
        e->arr_n = ld_le(p + 4, 8);
        e->arr_data = p + 12;
        e->arr_bytes = s - 12;
        break;
    default:
        return -1;
    }
    *used = s;
    return 0;
}

/* ---- text escaping -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

/* Where to cut p[0..n) to at most max bytes without splitting a character. */
static size_t cut_point(const char *p, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    for (int back = 0; back < 3 && k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80; back++)
        k--;
    return k;
}

/* Write p[0..n) escaped: printable ASCII and printable UTF-8 as is, \" \\ \n
 * \t \r, everything else (controls, C1 controls, bidi and line-separator
 * controls, invalid bytes) as \xHH. With f == NULL only counts. Returns the
 * columns written (a multi-byte character counts as one). */
static size_t put_escaped(FILE *f, const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0, cols = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = utf8_len(u + i, n - i, &cp);
        if (l == 1 && cp >= 0x20 && cp < 0x7f) {
            int esc = cp == '"' || cp == '\\';
            if (f) {
                if (esc) fputc('\\', f);
                fputc((int)cp, f);
            }
            cols += 1 + (size_t)esc;
        } else if (l == 1 && (cp == '\n' || cp == '\t' || cp == '\r')) {
            if (f) fputs(cp == '\n' ? "\\n" : cp == '\t' ? "\\t" : "\\r", f);
            cols += 2;
        } else if (l > 1 && cp >= 0xa0 && cp != 0x2028 && cp != 0x2029 &&
                   !(cp >= 0x200e && cp <= 0x200f) && !(cp >= 0x202a && cp <= 0x202e) &&
                   !(cp >= 0x2066 && cp <= 0x2069) && cp != 0xfeff) {
            if (f) fwrite(u + i, 1, l, f); /* printable */
            cols += 1;
        } else {
            if (l == 0) l = 1;
            for (size_t k = 0; k < l; k++)
                if (f) fprintf(f, "\\x%02x", u[i + k]);
            cols += 4 * l;
        }
        i += l;
    }
    return cols;
}

/* A quoted, escaped string cut to max bytes; "... (N bytes)" when cut. */
static void put_str(FILE *f, gguf_str_t s, size_t max)
{
    size_t k = cut_point(s.p, s.n, max);
    fputc('"', f);
    put_escaped(f, s.p, k);
    fputc('"', f);
    if (k < s.n) fprintf(f, "... (%zu bytes)", s.n);
}

/* Shortest %g form that reads back as the same float / double. */
static void fmt_float(char *buf, size_t cap, double v, int is_f32)
{
    if (isnan(v)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v < 0 ? "-inf" : "inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (is_f32 ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) return;
    }
}

/* A scalar value as text (also the JSON number text, for finite values). */
static void fmt_scalar(char *buf, size_t cap, const gguf_kv_t *kv)
{
    switch (kv->type) {
    case GGUF_T_U8:
    case GGUF_T_U16:
    case GGUF_T_U32:
    case GGUF_T_U64:
        snprintf(buf, cap, "%llu", (unsigned long long)kv->v.u);
        break;
    case GGUF_T_I8:
    case GGUF_T_I16:
    case GGUF_T_I32:
    case GGUF_T_I64:
        snprintf(buf, cap, "%lld", (long long)kv->v.i);
        break;
    case GGUF_T_BOOL:
        snprintf(buf, cap, "%s", kv->v.b ? "true" : "false");
        break;
    case GGUF_T_F32:
    case GGUF_T_F64:
        fmt_float(buf, cap, kv->v.f, kv->type == GGUF_T_F32);
        break;
    default:
        snprintf(buf, cap, "?");
        break;
    }
}

/* ---- text output ---------------------------------------------------------- */

static void text_type(char *buf, size_t cap, const gguf_kv_t *kv)
{
    if (kv->type == GGUF_T_ARRAY)
        snprintf(buf, cap, "array[%s]", gguf_vtype_name(kv->arr_type));
    else
        snprintf(buf, cap, "%s", gguf_vtype_name(kv->type));
}

static void text_value(FILE *f, const gguf_kv_t *kv, size_t str_max, int top)
{
    char buf[64];
    if (kv->type == GGUF_T_STRING) {
        put_str(f, kv->str, str_max);
        return;
    }
    if (kv->type != GGUF_T_ARRAY) {
        fmt_scalar(buf, sizeof buf, kv);
        fputs(buf, f);
        return;
    }
    if (!top) { /* a nested array: summary only */
        fprintf(f, "[%s x%llu]", gguf_vtype_name(kv->arr_type), (unsigned long long)kv->arr_n);
        return;
    }
    fprintf(f, "%llu items: [", (unsigned long long)kv->arr_n);
    const uint8_t *p = kv->arr_data;
    size_t left = kv->arr_bytes;
    uint64_t i = 0;
    for (; i < kv->arr_n && i < TEXT_ARR_ITEMS; i++) {
        gguf_kv_t e;
        size_t used;
        if (decode_elem(kv->arr_type, p, left, &e, &used) != 0) break;
        if (i) fputs(", ", f);
        text_value(f, &e, TEXT_ITEM_STR_MAX, 0);
        p += used;
        left -= used;
    }
    if (i < kv->arr_n) fputs(i ? ", ..." : "...", f);
    fputc(']', f);
}

static void text_shape(char *buf, size_t cap, const row_t *r)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < r->n_dims && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)r->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* A key or tensor name, escaped, cut to NAME_MAX_BYTES, padded to width. */
static void put_name(FILE *f, gguf_str_t s, size_t width)
{
    size_t k = cut_point(s.p, s.n, NAME_MAX_BYTES);
    size_t cols = put_escaped(f, s.p, k);
    if (k < s.n)
        fprintf(f, "... (%zu bytes)", s.n);
    else if (cols < width)
        fprintf(f, "%*s", (int)(width - cols), "");
}

/* Columns put_name needs for s (before padding). */
static size_t name_cols(gguf_str_t s)
{
    return put_escaped(NULL, s.p, cut_point(s.p, s.n, NAME_MAX_BYTES));
}

static void print_text(FILE *f, const view_t *v)
{
    fprintf(f, "file:        ");
    put_escaped(f, v->path, strlen(v->path));
    fputc('\n', f);
    if (v->is_gguf) {
        fprintf(f, "format:      gguf v%u\n", v->version);
        fprintf(f, "alignment:   %u\n", v->alignment);
    } else {
        fprintf(f, "format:      safetensors\n");
        fprintf(f, "header size: %zu\n", v->header_size);
    }
    fprintf(f, "data offset: %zu\n", v->data_offset);
    fprintf(f, "file size:   %zu\n", v->file_size);

    /* column widths from the longest key and name, capped */
    size_t kw = 8, nw = 4;
    for (size_t i = 0; i < v->n_kv && kw < NAME_COL_MAX; i++) {
        size_t c = name_cols(v->kv[i].key);
        kw = c > kw ? c : kw;
    }
    for (size_t i = 0; i < v->n_rows && nw < NAME_COL_MAX; i++) {
        size_t c = name_cols(v->rows[i].name);
        nw = c > nw ? c : nw;
    }
    kw = kw < NAME_COL_MAX ? kw : NAME_COL_MAX;
    nw = nw < NAME_COL_MAX ? nw : NAME_COL_MAX;

    fprintf(f, "\nmetadata (%zu keys):\n", v->n_kv);
    for (size_t i = 0; i < v->n_kv; i++) {
        const gguf_kv_t *kv = &v->kv[i];
        char tb[32];
        text_type(tb, sizeof tb, kv);
        fputs("  ", f);
        put_name(f, kv->key, kw);
        fprintf(f, " %-14s ", tb);
        text_value(f, kv, TEXT_STR_MAX, 1);
        fputc('\n', f);
    }

    fprintf(f, "\ntensor table:\n  %-*s %-7s %-22s %12s %12s\n", (int)nw, "name", "type", "shape",
            "offset", "bytes");
    for (size_t i = 0; i < v->n_rows; i++) {
        const row_t *r = &v->rows[i];
        char sb[256];
        text_shape(sb, sizeof sb, r);
        fputs("  ", f);
        put_name(f, r->name, nw);
        fprintf(f, " %-7s %-22s %12llu %12llu\n", r->type, sb, (unsigned long long)r->offset,
                (unsigned long long)r->bytes);
    }

    fprintf(f, "\ntotals by type:\n");
    for (size_t i = 0; i < v->n_totals; i++)
        fprintf(f, "  %-8s %8llu tensors %14llu bytes\n", v->totals[i].type,
                (unsigned long long)v->totals[i].count, (unsigned long long)v->totals[i].bytes);
    fprintf(f, "  %-8s %8zu tensors %14llu bytes\n", "all", v->n_rows,
            (unsigned long long)v->total_bytes);
    fprintf(f, "tensors: %zu\n", v->n_rows);
}

/* ---- JSON output ---------------------------------------------------------- */

/* A JSON string from untrusted bytes: valid UTF-8 kept, each invalid byte and
 * NUL replaced by U+FFFD, cut to max bytes. NULL on allocation failure. */
static cJSON *json_str(const char *p, size_t n, size_t max)
{
    size_t k = cut_point(p, n, max);
    char *buf = malloc(k * 3 + 1);
    if (!buf) return NULL;
    const unsigned char *u = (const unsigned char *)p;
    size_t o = 0;
    for (size_t i = 0; i < k;) {
        uint32_t cp;
        size_t l = utf8_len(u + i, k - i, &cp);
        if (l == 0 || cp == 0) {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += 1;
        } else {
            memcpy(buf + o, u + i, l);
            o += l;
            i += l;
        }
    }
    buf[o] = '\0';
    cJSON *s = cJSON_CreateString(buf);
    free(buf);
    return s;
}

static cJSON *json_u64(uint64_t x)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)x);
    return cJSON_CreateRaw(buf);
}

/* Adds item to obj under name; returns 0, or -1 (and frees item) on failure. */
static int add(cJSON *obj, const char *name, cJSON *item)
{
    if (!item) return -1;
    if (!cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static int push(cJSON *arr, cJSON *item)
{
    if (!item) return -1;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *json_scalar(const gguf_kv_t *kv)
{
    char buf[64];
    if (kv->type == GGUF_T_BOOL) return cJSON_CreateBool(kv->v.b);
    if ((kv->type == GGUF_T_F32 || kv->type == GGUF_T_F64) && !isfinite(kv->v.f))
        return cJSON_CreateNull();
    fmt_scalar(buf, sizeof buf, kv);
    return cJSON_CreateRaw(buf);
}

/* An array item: scalar, string (cut), or a nested array's summary. */
static cJSON *json_item(const gguf_kv_t *e)
{
    if (e->type == GGUF_T_STRING) return json_str(e->str.p, e->str.n, JSON_ITEM_STR_MAX);
    if (e->type != GGUF_T_ARRAY) return json_scalar(e);
    cJSON *o = cJSON_CreateObject();
    if (!o || add(o, "element_type", cJSON_CreateString(gguf_vtype_name(e->arr_type))) ||
        add(o, "length", json_u64(e->arr_n))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *json_kv(const gguf_kv_t *kv)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (add(o, "key", json_str(kv->key.p, kv->key.n, JSON_STR_MAX)) ||
        add(o, "type", cJSON_CreateString(gguf_vtype_name(kv->type))))
        goto fail;
    if (kv->type == GGUF_T_STRING) {
        if (add(o, "value", json_str(kv->str.p, kv->str.n, JSON_STR_MAX)) ||
            add(o, "length", json_u64(kv->str.n)) ||
            add(o, "truncated", cJSON_CreateBool(kv->str.n > JSON_STR_MAX)))
            goto fail;
    } else if (kv->type == GGUF_T_ARRAY) {
        cJSON *items;
        if (add(o, "element_type", cJSON_CreateString(gguf_vtype_name(kv->arr_type))) ||
            add(o, "length", json_u64(kv->arr_n)) || add(o, "value", items = cJSON_CreateArray()))
            goto fail;
        const uint8_t *p = kv->arr_data;
        size_t left = kv->arr_bytes;
        uint64_t i = 0;
        for (; i < kv->arr_n && i < JSON_ARR_ITEMS; i++) {
            gguf_kv_t e;
            size_t used;
            if (decode_elem(kv->arr_type, p, left, &e, &used) != 0) break;
            if (push(items, json_item(&e))) goto fail;
            p += used;
            left -= used;
        }
        if (add(o, "truncated", cJSON_CreateBool(i < kv->arr_n))) goto fail;
    } else if (add(o, "value", json_scalar(kv))) {
        goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *json_row(const row_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON *shape;
    if (add(o, "name", json_str(r->name.p, r->name.n, SIZE_MAX)) ||
        add(o, "type", cJSON_CreateString(r->type)) || add(o, "shape", shape = cJSON_CreateArray()))
        goto fail;
    for (uint32_t d = 0; d < r->n_dims; d++)
        if (push(shape, json_u64((uint64_t)r->shape[d]))) goto fail;
    if (add(o, "elements", json_u64(r->elems)) || add(o, "offset", json_u64(r->offset)) ||
        add(o, "file_offset", json_u64(r->file_offset)) || add(o, "bytes", json_u64(r->bytes)))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* The whole document; NULL on allocation failure. Each container is attached
 * to its parent as soon as it is made, so freeing root frees everything. */
static cJSON *json_view(const view_t *v)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (add(root, "file", json_str(v->path, strlen(v->path), SIZE_MAX)) ||
        add(root, "format", cJSON_CreateString(v->format)))
        goto fail;
    if (v->is_gguf) {
        if (add(root, "version", json_u64(v->version)) ||
            add(root, "alignment", json_u64(v->alignment)))
            goto fail;
    } else if (add(root, "header_size", json_u64(v->header_size))) {
        goto fail;
    }
    cJSON *meta, *tensors, *totals;
    if (add(root, "data_offset", json_u64(v->data_offset)) ||
        add(root, "file_size", json_u64(v->file_size)) ||
        add(root, "metadata_count", json_u64(v->n_kv)) ||
        add(root, "metadata", meta = cJSON_CreateArray()))
        goto fail;
    for (size_t i = 0; i < v->n_kv; i++)
        if (push(meta, json_kv(&v->kv[i]))) goto fail;
    if (add(root, "tensor_count", json_u64(v->n_rows)) ||
        add(root, "tensors", tensors = cJSON_CreateArray()))
        goto fail;
    for (size_t i = 0; i < v->n_rows; i++)
        if (push(tensors, json_row(&v->rows[i]))) goto fail;
    if (add(root, "totals", totals = cJSON_CreateObject())) goto fail;
    for (size_t i = 0; i < v->n_totals; i++) {
        cJSON *t;
        if (add(totals, v->totals[i].type, t = cJSON_CreateObject()) ||
            add(t, "count", json_u64(v->totals[i].count)) ||
            add(t, "bytes", json_u64(v->totals[i].bytes)))
            goto fail;
    }
    if (add(root, "total_bytes", json_u64(v->total_bytes))) goto fail;
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

/* ---- main ----------------------------------------------------------------- */

static int fail_file(const char *path, const char *what)
{
    fprintf(stderr, "barista inspect: %s: %s\n", path, what);
    return 1;
}

int cli_inspect_main(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0, only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_files && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            fputs(usage_line, stdout);
            fputc('\n', stdout);
            fputs(help_text, stdout);
            return 0;
        } else if (!only_files && !strcmp(a, "--json")) {
            json = 1;
        } else if (!only_files && !strcmp(a, "--")) {
            only_files = 1;
        } else if (!only_files && a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "barista inspect: unknown option '%s'\n", a);
            fputs(usage_line, stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "barista inspect: more than one FILE\n");
            fputs(usage_line, stderr);
            return 2;
        } else {
            path = a;
        }
    }
    if (!path) {
        fprintf(stderr, "barista inspect: missing FILE\n");
        fputs(usage_line, stderr);
        return 2;
    }

    bar_msg_t msg = {{0}};
    mfile_t mf;
    if (mfile_open(&mf, path, &msg) != 0) {
        fprintf(stderr, "barista inspect: %s\n", msg.text); /* msg names the path */
        return 1;
    }
    view_t v = {0};
    v.path = path;
    gguf_t *g = NULL;
    safet_t *s = NULL;
    int rc;
    if (mf.size >= 4 && memcmp(mf.data, "GGUF", 4) == 0) {
        rc = gguf_parse(&g, mf.data, mf.size, &msg);
        if (rc == 0) rc = view_from_gguf(&v, g);
    } else if (mf.size >= 9 && mf.data[8] == '{') {
        rc = safet_parse(&s, mf.data, mf.size, &msg);
        if (rc == 0) rc = view_from_safet(&v, s);
    } else {
        rc = bar_fail(&msg, BAR_ERR_FORMAT,
                      "offset 0: expected the GGUF magic or a safetensors header (u64 length "
                      "then '{'), found neither");
    }
    int code = 0;
    if (rc != 0) {
        code = fail_file(path, rc == BAR_ERR_NOMEM && !msg.text[0] ? "out of memory" : msg.text);
    } else if (json) {
        cJSON *doc = json_view(&v);
        char *text = doc ? cJSON_Print(doc) : NULL;
        if (!text) {
            code = fail_file(path, "out of memory building JSON");
        } else {
            fputs(text, stdout);
            fputc('\n', stdout);
        }
        cJSON_free(text);
        cJSON_Delete(doc);
    } else {
        print_text(stdout, &v);
    }
    if (code == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "barista inspect: writing stdout failed\n");
        code = 1;
    }
    view_free(&v);
    gguf_close(g);
    safet_close(s);
    mfile_close(&mf);
    return code;
}
