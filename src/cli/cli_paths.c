/* cli_paths.c — where the default models are found (see cli.h for the order).
 *
 * A new user runs `barista run` from any folder, not only the repository's
 * root, so the default model is looked for in a fixed list of places and the
 * error names every one of them. Not for: opening or checking model files
 * (engine/), or fetching them (scripts/fetch-models). */
#include "cli/cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_GGUF "SmolLM2-135M-Instruct.Q4_1.gguf"
#define DEFAULT_EMBED "all-MiniLM-L6-v2/model.safetensors"
#define MAX_PLACES 5

/* A folder to look in, as a path and as the text the not-found error shows. */
typedef struct {
    char dir[PATH_MAX];
    char shown[PATH_MAX + 32];
} place_t;

static void add_place(place_t *p, size_t *n, const char *dir, const char *shown)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(p[i].dir, dir)) return;
    if (*n >= MAX_PLACES || strlen(dir) >= sizeof p->dir) return;
    snprintf(p[*n].dir, sizeof p->dir, "%s", dir);
    snprintf(p[*n].shown, sizeof p->shown, "%s", shown ? shown : dir);
    (*n)++;
}

/* Strip the last path component in place ("/a/b/c" -> "/a/b", "/a" -> "/"). */
static void parent(char *path)
{
    char *s = strrchr(path, '/');
    if (!s) return;
    if (s == path)
        s[1] = '\0';
    else
        *s = '\0';
}

/* The folders, in lookup order (cli.h). */
static size_t places(place_t *p)
{
    size_t n = 0;
    char buf[PATH_MAX + 64], shown[PATH_MAX + 64];
    const char *env = getenv("BARISTA_MODELS");
    if (env && *env) {
        snprintf(shown, sizeof shown, "$BARISTA_MODELS=%s", env);
        add_place(p, &n, env, shown);
    }
    add_place(p, &n, "models", "./models");
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        parent(exe); /* the binary's folder */
        snprintf(buf, sizeof buf, "%s/models", strcmp(exe, "/") ? exe : "");
        add_place(p, &n, buf, NULL);
        parent(exe); /* its parent */
        snprintf(buf, sizeof buf, "%s/models", strcmp(exe, "/") ? exe : "");
        add_place(p, &n, buf, NULL);
    }
    const char *cache = getenv("BARISTA_CACHE"), *home = getenv("HOME");
    if (cache && *cache)
        snprintf(buf, sizeof buf, "%s/models", cache);
    else if (home && *home)
        snprintf(buf, sizeof buf, "%s/.cache/barista/models", home);
    else
        buf[0] = '\0';
    if (buf[0]) add_place(p, &n, buf, NULL);
    return n;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Look for `name` in every place; on a miss the message lists them all. */
static int find(const char *name, char *out, size_t size, bar_msg_t *msg)
{
    place_t p[MAX_PLACES];
    size_t n = places(p);
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(out, size, "%s/%s", p[i].dir, name);
        if (k > 0 && (size_t)k < size && is_file(out)) return 0;
    }
    char list[2048] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof list; i++) {
        int k = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", p[i].shown);
        if (k > 0) used += (size_t)k;
    }
    /* what callers get if they go on anyway: the first place */
    snprintf(out, size, "%s/%s", n ? p[0].dir : "models", name);
    return bar_fail(msg, BAR_ERR_NOTFOUND,
                    "cannot find the default model %s; looked in %s. Run scripts/fetch-models "
                    "from the barista repository, or give -m FILE (or BARISTA_MODEL=FILE)",
                    name, list);
}

int cli_default_model_find(char *out, size_t size, bar_msg_t *msg)
{
    const char *env = getenv("BARISTA_MODEL");
    if (env && *env) {
        if ((size_t)snprintf(out, size, "%s", env) >= size)
            return bar_fail(msg, BAR_ERR_RANGE, "BARISTA_MODEL is longer than %zu bytes", size - 1);
        return 0;
    }
    return find(DEFAULT_GGUF, out, size, msg);
}

const char *cli_default_model(void)
{
    static char buf[PATH_MAX + 64];
    bar_msg_t msg;
    cli_default_model_find(buf, sizeof buf, &msg);
    return buf;
}

const char *cli_default_embed_model(void)
{
    static char buf[PATH_MAX + 64];
    bar_msg_t msg;
    find(DEFAULT_EMBED, buf, sizeof buf, &msg);
    return buf;
}

const char *cli_default_model_help(void)
{
    return "Without -m/--model or BARISTA_MODEL, the model is the first\n" DEFAULT_GGUF
           " found in:\n"
           "  1. $BARISTA_MODELS/ (when set)\n"
           "  2. ./models/ (in the current folder)\n"
           "  3. models/ in the barista binary's folder, then in its parent folder\n"
           "     (so build/barista finds the repository's models/ from any folder)\n"
           "  4. $BARISTA_CACHE/models/, by default ~/.cache/barista/models/ (the cache\n"
           "     folder of scripts/fetch-models; to fill it, run\n"
           "     BARISTA_MODELS=~/.cache/barista/models scripts/fetch-models)\n"
           "Run scripts/fetch-models in the repository to download it into models/.";
}
