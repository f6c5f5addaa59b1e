/* config.c — table-driven settings: flags, file, environment, help, dump.
 * See config.h for the formats and the precedence. */
#include "util/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int name_eq(const char *opt, const char *name, size_t len)
{
    size_t i = 0;
    for (; i < len; i++) {
        char a = opt[i], b = name[i];
        if (!a) return 0;
        if (b == '_') b = '-';
        if (a != (char)tolower((unsigned char)b)) return 0;
    }
    return opt[i] == '\0';
}

int cfg_find(const cfg_t *c, const char *name, size_t name_len)
{
    for (size_t i = 0; i < c->n_opts; i++)
        if (name_eq(c->opts[i].name, name, name_len)) return (int)i;
    return -1;
}

static void *field(const cfg_t *c, int i)
{
    return (char *)c->obj + c->opts[i].offset;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t k = 0; k < 4; k++) {
        if (!strcasecmp(v, yes[k])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, no[k])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int cfg_set(cfg_t *c, int i, const char *value, cfg_source_t src, bar_msg_t *msg)
{
    const cfg_opt_t *o = &c->opts[i];
    switch (o->type) {
    case CFG_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (end == value || *end || errno == ERANGE || isspace((unsigned char)*value))
            return bar_fail(msg, BAR_ERR_INVALID, "%s: '%s' is not an integer", o->name, value);
        if (v < o->min || v > o->max)
            return bar_fail(msg, BAR_ERR_RANGE, "%s: %lld is out of range [%lld, %lld]", o->name, v,
                            o->min, o->max);
        *(long long *)field(c, i) = v;
        break;
    }
    case CFG_BOOL: {
        int v;
        if (parse_bool(value, &v))
            return bar_fail(msg, BAR_ERR_INVALID, "%s: '%s' is not a boolean (true/false)", o->name,
                            value);
        *(int *)field(c, i) = v;
        break;
    }
    case CFG_STR: {
        size_t n = strlen(value);
        char *f = field(c, i);
        size_t at = 0;
        /* a list: the same flag again adds an item (not across sources) */
        if ((o->flags & CFG_APPEND) && c->src && c->src[i] == src && src == CFG_SRC_FLAG && f[0]) {
            at = strlen(f);
            if (at + 1 + n >= o->size)
                return bar_fail(msg, BAR_ERR_RANGE, "%s: values longer than %zu bytes in all",
                                o->name, o->size - 1);
            f[at++] = '\n';
        }
        if (at + n >= o->size)
            return bar_fail(msg, BAR_ERR_RANGE, "%s: value longer than %zu bytes", o->name,
                            o->size - 1);
        memcpy(f + at, value, n + 1);
        break;
    }
    default:
        return bar_fail(msg, BAR_ERR_INTERNAL, "%s: bad setting type", o->name);
    }
    if (c->src) c->src[i] = src;
    return 0;
}

int cfg_set_defaults(cfg_t *c, bar_msg_t *msg)
{
    for (size_t i = 0; i < c->n_opts; i++) {
        int rc = cfg_set(c, (int)i, c->opts[i].def ? c->opts[i].def : "", CFG_SRC_DEFAULT, msg);
        if (rc) return rc;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int cfg_load_file(cfg_t *c, const char *path, bar_msg_t *msg)
{
    FILE *f = fopen(path, "r");
    if (!f) return bar_fail(msg, BAR_ERR_IO, "config file %s: %s", path, strerror(errno));
    char line[8192];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = bar_fail(msg, BAR_ERR_FORMAT, "%s:%d: line too long", path, lineno);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = bar_fail(msg, BAR_ERR_FORMAT, "%s:%d: expected 'name = value'", path, lineno);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vn = strlen(val);
        if (vn >= 2 && val[0] == '"' && val[vn - 1] == '"') {
            val[vn - 1] = '\0';
            val++;
        }
        int i = cfg_find(c, key, strlen(key));
        if (i < 0 || (c->opts[i].flags & CFG_NO_FILE)) {
            rc = bar_fail(msg, BAR_ERR_INVALID, "%s:%d: unknown setting '%s'", path, lineno, key);
            break;
        }
        bar_msg_t m2;
        rc = cfg_set(c, i, val, CFG_SRC_FILE, &m2);
        if (rc) {
            bar_fail(msg, rc, "%s:%d: %s", path, lineno, m2.text);
            break;
        }
    }
    fclose(f);
    return rc;
}

static void env_name(const cfg_t *c, int i, char *out, size_t size)
{
    snprintf(out, size, "%s%s", c->env_prefix ? c->env_prefix : "", c->opts[i].name);
    for (char *p = out; *p; p++)
        *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
}

int cfg_load_env(cfg_t *c, bar_msg_t *msg)
{
    for (size_t i = 0; i < c->n_opts; i++) {
        char name[128];
        if (c->opts[i].flags & CFG_NO_ENV) continue;
        env_name(c, (int)i, name, sizeof name);
        const char *v = getenv(name);
        if (!v) continue;
        bar_msg_t m2;
        int rc = cfg_set(c, (int)i, v, CFG_SRC_ENV, &m2);
        if (rc) return bar_fail(msg, rc, "environment %s: %s", name, m2.text);
    }
    return 0;
}

/* Find the option an argv word names. Sets *inline_val for --name=value. */
static int match_flag(const cfg_t *c, const char *arg, const char **inline_val, int *negated)
{
    *inline_val = NULL;
    *negated = 0;
    if (arg[0] == '-' && arg[1] && arg[1] != '-') {
        if (arg[2]) return -1;
        for (size_t i = 0; i < c->n_opts; i++)
            if (c->opts[i].short_flag == arg[1]) return (int)i;
        return -1;
    }
    if (strncmp(arg, "--", 2)) return -1;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (eq) *inline_val = eq + 1;
    int i = cfg_find(c, name, len);
    if (i < 0 && !eq && len > 3 && !strncmp(name, "no-", 3)) {
        i = cfg_find(c, name + 3, len - 3);
        if (i >= 0 && (c->opts[i].type == CFG_BOOL || (c->opts[i].flags & CFG_NO_NONE)))
            *negated = 1;
        else
            i = -1;
    }
    return i;
}

int cfg_parse_args(cfg_t *c, int argc, char **argv, int *help, bar_msg_t *msg)
{
    *help = 0;
    for (int a = 1; a < argc; a++)
        if (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help")) {
            *help = 1;
            return 0;
        }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a], *val;
        int neg;
        int i = match_flag(c, arg, &val, &neg);
        if (i < 0) {
            if (arg[0] == '-') return bar_fail(msg, BAR_ERR_INVALID, "unknown option '%s'", arg);
            return bar_fail(msg, BAR_ERR_INVALID, "unexpected argument '%s'", arg);
        }
        if (c->opts[i].type == CFG_BOOL && !val) val = neg ? "false" : "true";
        if (c->opts[i].type == CFG_STR && neg) val = "none";
        if (!val) {
            if (a + 1 >= argc)
                return bar_fail(msg, BAR_ERR_INVALID, "option '%s' needs a value", arg);
            val = argv[++a];
        }
        int rc = cfg_set(c, i, val, CFG_SRC_FLAG, msg);
        if (rc) return rc;
    }
    return 0;
}

int cfg_load(cfg_t *c, int argc, char **argv, const char *config_opt, int *help, bar_msg_t *msg)
{
    int rc = cfg_set_defaults(c, msg);
    if (rc) return rc;
    /* flags first into a scratch pass only to learn --help and --config */
    rc = cfg_parse_args(c, argc, argv, help, msg);
    if (rc || *help) return rc;
    if (config_opt) {
        int ci = cfg_find(c, config_opt, strlen(config_opt));
        char path[4096] = "";
        if (ci >= 0) {
            snprintf(path, sizeof path, "%s", cfg_get_str(c, ci));
            if (!path[0]) {
                char name[128];
                env_name(c, ci, name, sizeof name);
                const char *v = getenv(name);
                if (v) snprintf(path, sizeof path, "%s", v);
            }
        }
        rc = cfg_set_defaults(c, msg);
        if (rc) return rc;
        if (path[0]) {
            rc = cfg_load_file(c, path, msg);
            if (rc) return rc;
        }
    }
    rc = cfg_load_env(c, msg);
    if (rc) return rc;
    return cfg_parse_args(c, argc, argv, help, msg);
}

void cfg_print_help(const cfg_t *c, FILE *f, const char *usage, const char *desc)
{
    fprintf(f, "usage: %s\n\n", usage);
    if (desc) fprintf(f, "%s\n\n", desc);
    fprintf(f, "options (flag > %s* environment > config file > default):\n",
            c->env_prefix ? c->env_prefix : "");
    fprintf(f, "  -h, --help\n      print this help and exit\n");
    for (size_t i = 0; i < c->n_opts; i++) {
        const cfg_opt_t *o = &c->opts[i];
        char lhs[128], env[128];
        int k = 0;
        if (o->short_flag)
            k = snprintf(lhs, sizeof lhs, "-%c, ", o->short_flag);
        else
            k = snprintf(lhs, sizeof lhs, "    ");
        snprintf(lhs + k, sizeof lhs - (size_t)k, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        env_name(c, (int)i, env, sizeof env);
        fprintf(f, "  %s\n      %s", lhs, o->help);
        if (o->type == CFG_INT)
            fprintf(f, " [default %s; %lld..%lld]", o->def, o->min, o->max);
        else if (o->type == CFG_BOOL)
            fprintf(f, " [default %s]", o->def);
        else if (o->def && o->def[0] && !(o->flags & CFG_SECRET))
            fprintf(f, " [default %s]", o->def);
        if (o->flags & CFG_NO_ENV)
            fprintf(f, "\n      (no environment variable)\n");
        else
            fprintf(f, "\n      env %s\n", env);
    }
}

const char *cfg_format(const cfg_t *c, int i, char *out, size_t size)
{
    const cfg_opt_t *o = &c->opts[i];
    switch (o->type) {
    case CFG_INT:
        snprintf(out, size, "%lld", *(const long long *)field(c, i));
        break;
    case CFG_BOOL:
        snprintf(out, size, "%s", *(const int *)field(c, i) ? "true" : "false");
        break;
    case CFG_STR: {
        const char *s = (const char *)field(c, i);
        if ((o->flags & CFG_SECRET) && s[0]) s = "***";
        snprintf(out, size, "%s", s);
        break;
    }
    default:
        snprintf(out, size, "?");
    }
    return out;
}

long long cfg_get_int(const cfg_t *c, int i)
{
    const cfg_opt_t *o = &c->opts[i];
    if (o->type == CFG_BOOL) return *(const int *)field(c, i);
    if (o->type == CFG_INT) return *(const long long *)field(c, i);
    return 0;
}

const char *cfg_get_str(const cfg_t *c, int i)
{
    if (c->opts[i].type != CFG_STR) return "";
    return (const char *)field(c, i);
}

const char *cfg_source_name(cfg_source_t s)
{
    switch (s) {
    case CFG_SRC_FILE:
        return "file";
    case CFG_SRC_ENV:
        return "env";
    case CFG_SRC_FLAG:
        return "flag";
    default:
        return "default";
    }
}
