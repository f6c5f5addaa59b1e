/* cli_quantize.c — `barista quantize IN.gguf OUT.gguf TYPE`: convert a
 * model's weight matrices to another ggml type (engine/quantize.h).
 * Not for: the conversion itself (quantize.c) or loading models. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/quantize.h"

static const char usage_line[] = "usage: barista quantize [--pure] [-v] IN.gguf OUT.gguf TYPE\n";
static const char help_text[] =
    "Convert the 2-D weight matrices of a GGUF model to TYPE and write a new\n"
    "GGUF file (metadata and 1-D tensors such as norms are copied unchanged).\n"
    "\n"
    "TYPE: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 (llama.cpp's block formats and reference\n"
    "rounding, so the file loads in llama.cpp too), or F16 BF16 F32.\n"
    "Quantized inputs are dequantized to float first: converting a Q4_1 file\n"
    "to Q8_0 cannot bring back the precision Q4_1 dropped.\n"
    "\n"
    "  --pure     give the token embedding (the tied output matrix) TYPE too;\n"
    "             by default it becomes Q8_0 when TYPE has fewer bits (the\n"
    "             output matrix is the most sensitive one; llama.cpp uses\n"
    "             Q6_K there, which barista does not implement)\n"
    "  -v         print each converted tensor\n"
    "  -h, --help this text\n";

int cli_quantize_main(int argc, char **argv)
{
    const char *pos[3];
    int n_pos = 0;
    quant_opts_t o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_line, stdout);
            fputc('\n', stdout);
            fputs(help_text, stdout);
            return 0;
        } else if (!strcmp(a, "--pure")) {
            o.pure = 1;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o.verbose = 1;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "barista quantize: unknown option '%s'\n%s", a, usage_line);
            return 2;
        } else if (n_pos == 3) {
            fprintf(stderr, "barista quantize: too many arguments\n%s", usage_line);
            return 2;
        } else {
            pos[n_pos++] = a;
        }
    }
    if (n_pos != 3) {
        fprintf(stderr, "barista quantize: need IN, OUT and TYPE\n%s", usage_line);
        return 2;
    }
    if (quant_type_parse(pos[2], &o.type)) {
        fprintf(stderr,
                "barista quantize: unknown TYPE '%s' (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 F16 BF16 F32)\n",
                pos[2]);
        return 2;
    }
    if (!strcmp(pos[0], pos[1])) {
        fprintf(stderr, "barista quantize: OUT must differ from IN\n");
        return 2;
    }
    quant_report_t rep;
    bar_msg_t msg = {0};
    int rc = quant_file(pos[0], pos[1], &o, &rep, &msg);
    if (rc) {
        fprintf(stderr, "barista quantize: %s\n", msg.text[0] ? msg.text : bar_strerror(rc));
        return 1;
    }
    fprintf(stderr, "barista quantize: %s: %zu tensors (%zu converted), %.1f MB -> %.1f MB\n",
            pos[1], rep.n_tensors, rep.n_converted, rep.bytes_in / 1e6, rep.bytes_out / 1e6);
    return 0;
}
