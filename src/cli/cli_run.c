/* cli_run.c — `barista run`: generate text from a prompt on the command line.
 *
 * stdout carries only the generated text, written as tokens arrive; stderr
 * ends with one line of counts and speeds. Not for: serving (cli_serve.c). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "util/config.h"
#include "util/mfile.h"
#include "util/timeutil.h"

/* A command-line argument can be at most 128 KiB on Linux (MAX_ARG_STRLEN),
 * so a prompt given with -p or BARISTA_PROMPT always fits. */
#define TEXT_MAX (128 * 1024)

/* Every `barista run` setting. Real numbers are text in the table (util/config
 * has integers, booleans and strings) and are checked by run_real(). */
typedef struct {
    char model[4096]; /* "" = cli_default_model_find() */
    char prompt[TEXT_MAX];
    char file[4096];
    int chat;
    char system[TEXT_MAX];
    long long n_predict;
    char temp[32];
    long long top_k;
    char top_p[32];
    char min_p[32];
    char repeat_penalty[32];
    long long seed; /* -1 = from the clock */
    long long threads;
    long long ctx;
    int ignore_eos;
} run_settings_t;

#define F(name) offsetof(run_settings_t, name)
#define STR(name) CFG_STR, F(name), sizeof(((run_settings_t *)0)->name)
#define INT(name) CFG_INT, F(name), 0
#define BOOL(name) CFG_BOOL, F(name), 0

/* threads and ctx share BARISTA_THREADS / BARISTA_CTX with `barista serve`,
 * so they take the same ranges. */
static const cfg_opt_t table[] = {
    {"model", 'm', STR(model), "", 0, 0, "FILE", "GGUF model [default: found as shown above]", 0},
    {"prompt", 'p', STR(prompt), "", 0, 0, "TEXT", "the prompt (give -p or -f)", 0},
    {"file", 'f', STR(file), "", 0, 0, "FILE", "read the prompt from FILE", 0},
    {"chat", 0, BOOL(chat), "false", 0, 1, NULL,
     "wrap the prompt as a user message in the model's chat template (otherwise it is fed "
     "as-is)",
     0},
    {"system", 0, STR(system), "", 0, 0, "TEXT", "system message for --chat", 0},
    {"n-predict", 'n', INT(n_predict), "256", 1, 1 << 20, "N", "tokens to generate", 0},
    {"temp", 0, STR(temp), "0.8", 0, 0, "T", "temperature, 0..100 (0 = greedy)", 0},
    {"top-k", 0, INT(top_k), "40", 0, 1 << 20, "K", "top-k (0 = off)", 0},
    {"top-p", 0, STR(top_p), "0.95", 0, 0, "P", "nucleus sampling, 0..1 (1 = off)", 0},
    {"min-p", 0, STR(min_p), "0.05", 0, 0, "P", "min-p, 0..1 (0 = off)", 0},
    {"repeat-penalty", 0, STR(repeat_penalty), "1.0", 0, 0, "R", "repeat penalty, 0..10 (1 = off)",
     0},
    {"seed", 0, INT(seed), "-1", -1, 9223372036854775807LL, "S", "RNG seed (-1 = from the clock)",
     0},
    {"threads", 't', INT(threads), "0", 0, 1024, "N", "worker threads (0 = number of cores)", 0},
    {"ctx", 0, INT(ctx), "0", 0, 1 << 20, "N", "context length (0 = the model's, at most 8192)", 0},
    {"ignore-eos", 0, BOOL(ignore_eos), "false", 0, 1, NULL,
     "keep generating past end-of-sequence tokens", 0},
};

#define N_OPTS (sizeof table / sizeof table[0])

static const char *usage_line = "barista run [OPTIONS] (-p PROMPT | -f FILE)";

static const char *desc =
    "Generate text with a GGUF model on the CPU. stdout carries only the generated\n"
    "text, streamed as it is produced; the last stderr line reports\n"
    "  prompt: N tokens, X tok/s; generated: M tokens, Y tok/s\n"
    "Every option can also be set in the environment (BARISTA_NAME, e.g.\n"
    "BARISTA_TEMP=0); a flag wins over the environment.\n\n";

static void help(const cfg_t *c)
{
    char d[2048];
    snprintf(d, sizeof d, "%s%s", desc, cli_default_model_help());
    cfg_print_help(c, stdout, usage_line, d);
}

static int usage_error(const char *what)
{
    fprintf(stderr, "barista run: %s\nusage: %s\nRun 'barista run --help' for the options.\n", what,
            usage_line);
    return 2;
}

/* Setting `name` (a CFG_STR holding a real number) as a float in [lo, hi];
 * BAR_ERR_INVALID naming the setting (and its variable, if from there). */
static int run_real(const cfg_t *c, const char *name, double lo, double hi, float *out,
                    bar_msg_t *msg)
{
    int i = cfg_find(c, name, strlen(name));
    const char *v = cfg_get_str(c, i);
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || !(d >= lo && d <= hi)) {
        char env[64] = "";
        if (c->src[i] == CFG_SRC_ENV) {
            int k = snprintf(env, sizeof env, "environment BARISTA_");
            for (const char *p = name; *p && (size_t)k < sizeof env - 1; p++)
                env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
            snprintf(env + k, sizeof env - (size_t)k, ": ");
        }
        return bar_fail(msg, BAR_ERR_INVALID, "%s%s: '%s' is not a number in [%g, %g]", env, name,
                        v, lo, hi);
    }
    *out = (float)d;
    return 0;
}

/* Load the settings (default < environment < flag), find the default model
 * and fill the sampling parameters. Returns -1 to go on generating, or the
 * exit code once --help or an error has been printed. */
static int run_settings_load(run_settings_t *s, cfg_source_t *src, int argc, char **argv,
                             engine_sampling_t *sp)
{
    cfg_t c = {table, N_OPTS, s, src, "BARISTA_"};
    bar_msg_t msg = {{0}};
    int help_wanted = 0;
    if (cfg_load(&c, argc, argv, NULL, &help_wanted, &msg)) return usage_error(msg.text);
    if (help_wanted) {
        help(&c);
        return 0;
    }
    *sp = engine_sampling_default();
    if (run_real(&c, "temp", 0, 100, &sp->temperature, &msg) ||
        run_real(&c, "top-p", 0, 1, &sp->top_p, &msg) ||
        run_real(&c, "min-p", 0, 1, &sp->min_p, &msg) ||
        run_real(&c, "repeat-penalty", 0, 10, &sp->repeat_penalty, &msg))
        return usage_error(msg.text);
    sp->top_k = (int)s->top_k;
    sp->max_tokens = (int)s->n_predict;
    sp->ignore_eos = s->ignore_eos;
    if (s->seed >= 0) {
        sp->seed = (uint64_t)s->seed;
        sp->has_seed = 1;
    }
    /* exactly one prompt source; a flag beats the environment */
    int ip = cfg_find(&c, "prompt", 6), iff = cfg_find(&c, "file", 4);
    int has_p = src[ip] != CFG_SRC_DEFAULT, has_f = src[iff] != CFG_SRC_DEFAULT;
    if (has_p && has_f) {
        if (src[ip] == src[iff]) return usage_error("give only one of -p PROMPT or -f FILE");
        if (src[ip] > src[iff])
            has_f = 0;
        else
            has_p = 0;
    }
    if (!has_p && !has_f) return usage_error("give exactly one of -p PROMPT or -f FILE");
    if (has_f && !s->file[0]) return usage_error("file: the file name is empty");
    if (!has_f) s->file[0] = '\0';
    if (!s->model[0] && cli_default_model_find(s->model, sizeof s->model, &msg)) {
        fprintf(stderr, "barista run: %s\n", msg.text);
        return 1;
    }
    return -1;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    engine_finish_t finish;
    int n_prompt, n_gen, err;
    double t_first;
    double t_done;
    char msg[512];
} run_state_t;

static void on_event(void *user, const engine_event_t *ev)
{
    run_state_t *st = user;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (ev->text_len) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
        }
        return;
    }
    pthread_mutex_lock(&st->mu);
    st->done = 1;
    st->finish = ev->finish;
    st->n_prompt = ev->n_prompt;
    st->n_gen = ev->n_gen;
    st->t_first = ev->t_first_token;
    st->err = ev->err;
    st->t_done = time_now_mono();
    if (ev->msg) snprintf(st->msg, sizeof st->msg, "%s", ev->msg);
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Tokenize the prompt, generate, stream; returns the exit code. */
static int run_generate(const run_settings_t *set, engine_sampling_t sp)
{
    const char *prompt = set->prompt, *file = set->file[0] ? set->file : NULL;
    const char *system = set->system[0] ? set->system : NULL;
    mfile_t pf = {0};
    bar_msg_t msg = {{0}};
    size_t prompt_len;
    if (file) {
        if (mfile_open(&pf, file, &msg)) {
            fprintf(stderr, "barista run: %s\n", msg.text);
            return 1;
        }
        prompt = (const char *)pf.data;
        prompt_len = pf.size;
    } else {
        prompt_len = strlen(prompt);
    }
    if (prompt_len == 0) {
        fprintf(stderr, "barista run: the prompt is empty\n");
        mfile_close(&pf);
        return 2;
    }
    engine_config_t cfg = {.model_path = set->model,
                           .n_threads = (int)set->threads,
                           .n_ctx = (int)set->ctx,
                           .n_seq_max = 1};
    engine_t *e;
    if (engine_create(&e, &cfg, &msg)) {
        fprintf(stderr, "barista run: %s\n", msg.text);
        mfile_close(&pf);
        return 1;
    }
    const tok_t *tok = engine_tok(e);
    int rc = 0;
    size_t n_tok = 0;
    int32_t *ids = NULL;
    if (set->chat) {
        chat_tmpl_t tmpl;
        chat_msg_t msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (chat_msg_t){"system", 6, system, strlen(system)};
        msgs[n++] = (chat_msg_t){"user", 4, prompt, prompt_len};
        if (chat_template_detect(engine_gguf(e), &tmpl, &msg) ||
            chat_encode(tmpl, tok, msgs, n, 1, &ids, &n_tok, &msg)) {
            fprintf(stderr, "barista run: %s\n", msg.text);
            rc = 1;
            goto out;
        }
    } else {
        size_t cap = prompt_len + 16;
        ids = malloc(cap * sizeof(int32_t));
        if (!ids || tok_encode(tok, prompt, prompt_len, 1, 0, ids, cap, &n_tok)) {
            fprintf(stderr, "barista run: cannot tokenize the prompt\n");
            rc = 1;
            goto out;
        }
    }
    if (n_tok == 0) {
        fprintf(stderr, "barista run: the prompt is empty after tokenization\n");
        rc = 2;
        goto out;
    }
    run_state_t st;
    memset(&st, 0, sizeof st);
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    engine_req_t req = {
        .prompt = ids, .n_prompt = n_tok, .sampling = sp, .cb = on_event, .user = &st};
    uint64_t id;
    double t0 = time_now_mono();
    if (engine_submit(e, &req, &id, &msg)) {
        fprintf(stderr, "barista run: %s\n", msg.text);
        rc = 1;
        goto out_st;
    }
    pthread_mutex_lock(&st.mu);
    while (!st.done)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    printf("\n");
    fflush(stdout);
    if (st.finish == ENGINE_FINISH_ERROR) {
        fprintf(stderr, "barista run: %s\n", st.msg[0] ? st.msg : bar_strerror(st.err));
        rc = 1;
        goto out_st;
    }
    {
        double t_pp = st.t_first > 0 ? st.t_first : st.t_done - t0;
        double t_tg = st.t_done - t0 - t_pp;
        int n_dec = st.n_gen > 1 ? st.n_gen - 1 : 0; /* the first token came with the prompt */
        fprintf(stderr, "prompt: %d tokens, %.2f tok/s; generated: %d tokens, %.2f tok/s\n",
                st.n_prompt, t_pp > 0 ? st.n_prompt / t_pp : 0.0, st.n_gen,
                (t_tg > 0 && n_dec > 0) ? n_dec / t_tg : 0.0);
    }
out_st:
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
out:
    free(ids);
    engine_destroy(e);
    mfile_close(&pf);
    return rc;
}

int cli_run_main(int argc, char **argv)
{
    run_settings_t *set = calloc(1, sizeof *set);
    if (!set) {
        fprintf(stderr, "barista run: out of memory\n");
        return 1;
    }
    cfg_source_t src[N_OPTS];
    engine_sampling_t sp;
    int rc = run_settings_load(set, src, argc, argv, &sp);
    if (rc < 0) rc = run_generate(set, sp);
    free(set);
    return rc;
}
