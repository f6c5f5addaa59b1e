/* cli.h — the barista subcommands. Each takes the argv after the command name
 * (argv[0] is the command name) and returns the process exit code:
 * 0 success, 1 runtime failure (bad file, engine error), 2 usage error.
 * Not for: anything reused by the server; commands are thin shells over modules. */
#ifndef BARISTA_CLI_CLI_H
#define BARISTA_CLI_CLI_H

#include <stddef.h>

#include "util/err.h"

int cli_embed_main(int argc, char **argv);
int cli_inspect_main(int argc, char **argv);
int cli_run_main(int argc, char **argv);
int cli_serve_main(int argc, char **argv);
/* `barista keys add TENANT` | `barista keys hash` (cli_keys.c). */
int cli_keys_main(int argc, char **argv);
int cli_quantize_main(int argc, char **argv);

/* The default models. With no -m/--model and no BARISTA_MODEL, the GGUF is the
 * first regular file named SmolLM2-135M-Instruct.Q4_1.gguf found in, in order:
 *   1. $BARISTA_MODELS/          (when set)
 *   2. ./models/                 (the current folder)
 *   3. <binary's folder>/models/, then <binary's folder>/../models/
 *      (/proc/self/exe, so build/barista finds <repo>/models from anywhere)
 *   4. $BARISTA_CACHE/models/, default ~/.cache/barista/models/ (the folder
 *      scripts/fetch-models caches its downloads in)
 * cli_default_model_help() says the same for --help texts. */

/* Write the default GGUF's path into out (size bytes). $BARISTA_MODEL, when
 * set, is used as is (an explicit choice is never second-guessed). Returns 0,
 * or BAR_ERR_NOTFOUND with msg naming every place looked in and saying to run
 * scripts/fetch-models; out then holds the first place's path. */
int cli_default_model_find(char *out, size_t size, bar_msg_t *msg);

/* The same as a static buffer, errors dropped: the found path, or the first
 * place's when none is found. Not thread-safe. */
const char *cli_default_model(void);

/* all-MiniLM-L6-v2/model.safetensors found in the same places (no
 * BARISTA_MODEL); a static buffer, like cli_default_model(). */
const char *cli_default_embed_model(void);

/* The lookup order above as a few lines of --help text (no trailing newline);
 * a static string. */
const char *cli_default_model_help(void);

#endif
