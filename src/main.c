/* main.c — the barista binary: global flags and the subcommand table.
 * Not for: any command's logic (src/cli/). A command is listed here only once
 * it works. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"embed", "embed lines of text with a BERT sentence encoder (all-MiniLM-L6-v2)",
     cli_embed_main},
    {"inspect", "print the metadata and tensor table of a GGUF or safetensors file",
     cli_inspect_main},
    {"keys", "make an API key for a tenant and the keys-file line to paste (serve --keys)",
     cli_keys_main},
    {"run", "generate text from a prompt with a GGUF model on the CPU", cli_run_main},
    {"quantize", "convert a GGUF model's weights to Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (or F16/BF16/F32)",
     cli_quantize_main},
    {"serve", "serve the model over an OpenAI-compatible HTTP API (SSE streaming)", cli_serve_main},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: barista [--help] [--version] COMMAND [ARGS]\n\n"
               "barista is an LLM serving engine: caching, streaming and latency control.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'barista COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
#ifdef BARISTA_FAULT_INJECT
        printf("barista %s (fault injection: src/util/fault.h)\n", BARISTA_VERSION);
#else
        printf("barista %s\n", BARISTA_VERSION);
#endif
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "barista: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
