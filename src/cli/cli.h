/* cli.h — the barista subcommands. Each takes the argv after the command name
 * (argv[0] is the command name) and returns the process exit code:
 * 0 success, 1 runtime failure (bad file, engine error), 2 usage error.
 * Not for: anything reused by the server; commands are thin shells over modules. */
#ifndef BARISTA_CLI_CLI_H
#define BARISTA_CLI_CLI_H

int cli_inspect_main(int argc, char **argv);
int cli_run_main(int argc, char **argv);
int cli_serve_main(int argc, char **argv);

/* Default model paths, relative to the models/ folder that scripts/fetch-models
 * fills; BARISTA_MODELS overrides the folder. Returns a static buffer. */
const char *cli_default_model(void);
const char *cli_default_embed_model(void);

#endif
