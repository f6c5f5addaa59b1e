/* cli_run.c — `barista run`: generate text from a prompt on the command line.
 *
 * stdout carries only the generated text, written as tokens arrive; stderr
 * ends with one line of counts and speeds. Not for: serving (cli_serve.c). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "util/mfile.h"
#include "util/timeutil.h"

static const char *usage_line =
    "usage: barista run [-m MODEL] (-p PROMPT | -f FILE) [--chat] [-n N] [--temp T] [--top-k K]\n"
    "                   [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S] [--threads N]\n"
    "                   [--ctx N] [--ignore-eos] [--system TEXT]\n";

static void help(void)
{
    printf("%s\n"
           "Generate text with a GGUF model on the CPU. stdout carries only the generated\n"
           "text, streamed as it is produced; the last stderr line reports\n"
           "  prompt: N tokens, X tok/s; generated: M tokens, Y tok/s\n\n"
           "options:\n"
           "  -m, --model FILE      GGUF model (default: %s)\n"
           "  -p, --prompt TEXT     the prompt\n"
           "  -f, --file FILE       read the prompt from FILE\n"
           "      --chat            wrap the prompt as a user message in the model's chat\n"
           "                        template (otherwise the prompt is fed as-is)\n"
           "      --system TEXT     system message for --chat\n"
           "  -n, --n-predict N     tokens to generate (default 256)\n"
           "      --temp T          temperature, 0 = greedy (default 0.8)\n"
           "      --top-k K         top-k (default 40, 0 = off)\n"
           "      --top-p P         nucleus sampling (default 0.95)\n"
           "      --min-p P         min-p (default 0.05)\n"
           "      --repeat-penalty R  (default 1.0 = off)\n"
           "      --seed S          RNG seed (default: random)\n"
           "  -t, --threads N       worker threads (default: cores)\n"
           "      --ctx N           context length (default: the model's, at most 8192)\n"
           "      --ignore-eos      keep generating past end-of-sequence tokens\n",
           usage_line, cli_default_model());
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

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) {
        fprintf(stderr, "barista run: %s: '%s' is not a number in [%g, %g]\n", flag, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

int cli_run_main(int argc, char **argv)
{
    const char *model = cli_default_model(), *prompt = NULL, *file = NULL, *system = NULL;
    int chat = 0, n_predict = 256, threads = 0, ctx = 0;
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.min_p = 0.05f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help();
            return 0;
        }
        if (!strcmp(a, "--chat")) {
            chat = 1;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            sp.ignore_eos = 1;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-') {
            fprintf(stderr, "barista run: %s '%s'\n%s",
                    a[0] == '-' ? "missing value for" : "unexpected argument", a, usage_line);
            return 2;
        }
        const char *v = argv[++i];
        double d;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            file = v;
        } else if (!strcmp(a, "--system")) {
            system = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (parse_num(a, v, 1, 1 << 20, &d)) return 2;
            n_predict = (int)d;
        } else if (!strcmp(a, "--temp")) {
            if (parse_num(a, v, 0, 100, &d)) return 2;
            sp.temperature = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_num(a, v, 0, 1 << 20, &d)) return 2;
            sp.top_k = (int)d;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_num(a, v, 0, 1, &d)) return 2;
            sp.top_p = (float)d;
        } else if (!strcmp(a, "--min-p")) {
            if (parse_num(a, v, 0, 1, &d)) return 2;
            sp.min_p = (float)d;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (parse_num(a, v, 0, 10, &d)) return 2;
            sp.repeat_penalty = (float)d;
        } else if (!strcmp(a, "--seed")) {
            if (parse_num(a, v, 0, 1.8e19, &d)) return 2;
            sp.seed = (uint64_t)d;
            sp.has_seed = 1;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (parse_num(a, v, 1, 256, &d)) return 2;
            threads = (int)d;
        } else if (!strcmp(a, "--ctx")) {
            if (parse_num(a, v, 16, 1 << 20, &d)) return 2;
            ctx = (int)d;
        } else {
            fprintf(stderr, "barista run: unknown option '%s'\n%s", a, usage_line);
            return 2;
        }
    }
    if (!!prompt == !!file) {
        fprintf(stderr, "barista run: give exactly one of -p PROMPT or -f FILE\n%s", usage_line);
        return 2;
    }
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
    sp.max_tokens = n_predict;

    engine_config_t cfg = {.model_path = model, .n_threads = threads, .n_ctx = ctx, .n_seq_max = 1};
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
    if (chat) {
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
