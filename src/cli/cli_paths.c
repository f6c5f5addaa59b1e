/* cli_paths.c — where the fetched default models live (see cli.h). */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>

static const char *models_dir(void)
{
    const char *d = getenv("BARISTA_MODELS");
    return (d && *d) ? d : "models";
}

const char *cli_default_model(void)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", models_dir());
    return buf;
}

const char *cli_default_embed_model(void)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/all-MiniLM-L6-v2/model.safetensors", models_dir());
    return buf;
}
