/* config.h — table-driven settings (redis `static_configs[]` in spirit).
 *
 * A command describes each setting once in a cfg_opt_t table: name, type,
 * default, range, help, whether it is a secret. The same table then drives
 * the command-line flags (--name VALUE, --name=VALUE, -x VALUE), a config
 * file, BARISTA_* environment variables, the generated --help text and the
 * redacted dump served by GET /v1/config. Precedence, highest first:
 * flag > environment > config file > default.
 *
 * Config file format: one `name = value` per line; names are the flag names
 * ("max-body-bytes", underscores accepted too); `#` starts a comment line;
 * a value may be wrapped in double quotes. Unknown names are an error.
 *
 * Environment: BARISTA_ + the name upper-cased with '-' → '_'
 * (max-body-bytes → BARISTA_MAX_BODY_BYTES).
 *
 * Not for: per-request parameters (src/api/) or anything that needs JSON. */
#ifndef BARISTA_UTIL_CONFIG_H
#define BARISTA_UTIL_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "util/err.h"

typedef enum {
    CFG_INT = 1, /* long long in the struct */
    CFG_BOOL,    /* int in the struct: 0/1; text: 1/0, true/false, yes/no, on/off */
    CFG_STR,     /* char[size] in the struct */
} cfg_type_t;

enum {
    CFG_SECRET = 1 << 0,  /* shown as "***" (or "" when unset) in dumps */
    CFG_NO_FILE = 1 << 1, /* not accepted in the config file (e.g. --config itself) */
    CFG_APPEND = 1 << 2,  /* CFG_STR: a repeated flag appends "\n" + value (a list) */
    CFG_NO_ENV = 1 << 3,  /* not read from the environment (its name is taken) */
    CFG_NO_NONE = 1 << 4, /* CFG_STR: the flag --no-NAME sets it to "none" */
};

typedef struct {
    const char *name; /* long flag without "--", lower-case, '-' separated */
    char short_flag;  /* e.g. 'm' for -m, or 0 */
    cfg_type_t type;
    size_t offset;       /* offsetof(settings struct, field) */
    size_t size;         /* CFG_STR: size of the char array incl. NUL */
    const char *def;     /* default, as text */
    long long min, max;  /* CFG_INT range, inclusive */
    const char *metavar; /* e.g. "N", "PATH"; NULL for booleans */
    const char *help;
    unsigned flags;
} cfg_opt_t;

typedef enum {
    CFG_SRC_DEFAULT = 0,
    CFG_SRC_FILE,
    CFG_SRC_ENV,
    CFG_SRC_FLAG,
} cfg_source_t;

/* One settings object bound to its table. `src` has n_opts entries (caller
 * storage) and records where each value came from. */
typedef struct {
    const cfg_opt_t *opts;
    size_t n_opts;
    void *obj;
    cfg_source_t *src;
    const char *env_prefix; /* "BARISTA_" */
} cfg_t;

/* Index of a setting by name ('-' or '_' separators), or -1. */
int cfg_find(const cfg_t *c, const char *name, size_t name_len);

/* Set every setting to its default. 0 or an error if a default is invalid
 * (a table bug). */
int cfg_set_defaults(cfg_t *c, bar_msg_t *msg);

/* Parse `value` for setting `i` and store it. BAR_ERR_INVALID (not a number,
 * not a boolean), BAR_ERR_RANGE (outside min..max or too long), msg names the
 * setting and the allowed range. */
int cfg_set(cfg_t *c, int i, const char *value, cfg_source_t src, bar_msg_t *msg);

/* Load a `name = value` file. BAR_ERR_IO, or a parse error with "FILE:LINE". */
int cfg_load_file(cfg_t *c, const char *path, bar_msg_t *msg);

/* Apply every set BARISTA_* variable that names a setting. */
int cfg_load_env(cfg_t *c, bar_msg_t *msg);

/* Apply command-line flags. argv[0] is the command name and is skipped.
 * *help is set to 1 when -h/--help is present (nothing else is then checked).
 * Positional arguments are an error. */
int cfg_parse_args(cfg_t *c, int argc, char **argv, int *help, bar_msg_t *msg);

/* The whole pipeline: defaults, the config file named by the setting
 * `config_opt` (from a flag, else from the environment; may be NULL), the
 * environment, then flags. */
int cfg_load(cfg_t *c, int argc, char **argv, const char *config_opt, int *help, bar_msg_t *msg);

/* Print "usage: USAGE\n\nDESC\n\noptions:\n" and one entry per setting with
 * its default, range and environment variable. */
void cfg_print_help(const cfg_t *c, FILE *f, const char *usage, const char *desc);

/* The value of setting i as text, secrets redacted ("***" when set, "" when
 * empty). Returns `out`. */
const char *cfg_format(const cfg_t *c, int i, char *out, size_t size);

/* Typed access to setting i. */
long long cfg_get_int(const cfg_t *c, int i);
const char *cfg_get_str(const cfg_t *c, int i);

const char *cfg_source_name(cfg_source_t s);

#endif
