/* backend_local.c — the local engine behind the backend interface (see
 * backend_local.h).
 *
 * A job lives from bk_submit until its DONE event has been delivered. Its
 * prompt is rendered and tokenized inline for small requests and on the libuv
 * thread pool for big ones; START is delivered through the same queue as the
 * engine's events, so a job's events always arrive in order and never from
 * inside bk_submit.
 *
 * Memory: a token event copies its text and alternatives into one allocation
 * on the engine thread; if that allocation fails the job is marked lost and
 * cancelled, and its DONE turns into an error (a reply missing a token must
 * never finish normally or be cached). The DONE event is preallocated at
 * submit, so it cannot be lost. */
#include "backend/backend_local.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/gram_cache.h"
#include "engine/grammar.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_cache.h"
#include "util/timeutil.h"

#include "backend/backend_local_int.h"

/* ---- the queue ---- */

/* Take e back out of the queue (not yet delivered). */
static void queue_remove(local_t *b, qev_t *e)
{
    pthread_mutex_lock(&b->mu);
    qev_t *prev = NULL;
    for (qev_t *q = b->head; q; prev = q, q = q->next)
        if (q == e) {
            if (prev)
                prev->next = q->next;
            else
                b->head = q->next;
            if (b->tail == q) b->tail = prev;
            break;
        }
    e->next = NULL;
    pthread_mutex_unlock(&b->mu);
}

static void queue_push(local_t *b, qev_t *e)
{
    e->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = e;
    else
        b->head = e;
    b->tail = e;
    pthread_mutex_unlock(&b->mu);
    uv_async_send(&b->async);
}

/* Engine thread: copy the event and queue it. */
static void on_engine_event(void *user, const engine_event_t *ev)
{
    job_t *j = user;
    local_t *b = j->b;
    qev_t *e;
    if (ev->type == ENGINE_EV_DONE) {
        int i = ev->index >= 0 && ev->index < j->n_choices ? ev->index : 0;
        e = j->done_ev[i];
        j->done_ev[i] = NULL;
        if (!e) return; /* never: one DONE per choice */
        e->kind = EV_DONE;
        e->finish = ev->finish;
        e->err = ev->err;
        snprintf(e->msg, sizeof e->msg, "%s", ev->msg ? ev->msg : "");
    } else {
        e = malloc(sizeof *e + ev->text_len + 1);
        if (!e) {
            /* the reply would miss a token: fail the job instead */
            pthread_mutex_lock(&b->mu);
            j->lost = 1;
            pthread_mutex_unlock(&b->mu);
            engine_cancel(b->engine, ev->req_id);
            return;
        }
        memset(e, 0, sizeof *e);
        e->kind = EV_TOKEN;
        e->token = ev->token;
        e->logprob = ev->logprob;
        e->n_top = ev->top && ev->n_top > 0 ? (ev->n_top < TOP_MAX ? ev->n_top : TOP_MAX) : 0;
        if (e->n_top) memcpy(e->top, ev->top, (size_t)e->n_top * sizeof *e->top);
        e->text_len = ev->text_len;
        if (ev->text_len) memcpy(e->text, ev->text, ev->text_len);
        e->text[ev->text_len] = '\0';
    }
    e->next = NULL;
    e->j = j;
    e->index = ev->index;
    e->n_prompt = ev->n_prompt;
    e->n_cached = ev->n_cached;
    e->n_gen = ev->n_gen;
    e->t_first_token = ev->t_first_token;
    e->t_queue = ev->t_queue;
    queue_push(b, e);
}

/* ---- jobs ---- */

static void job_free(job_t *j)
{
    local_t *b = j->b;
    if (j->prev)
        j->prev->next = j->next;
    else if (b->jobs == j)
        b->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    b->n_jobs--;
    if (j->decoding) b->n_decoding--;
    for (int i = 0; i < j->n_msgs; i++) {
        free((char *)j->msgs[i].role);
        free((char *)j->msgs[i].content);
    }
    free(j->msgs);
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j->toks);
    for (int i = 0; i < CHOICES_MAX; i++)
        free(j->done_ev[i]);
    free(j->bias);
    gram_release(j->sp.grammar);
    free(j->start_ev);
    free(j);
}

static void maybe_free(local_t *b)
{
    if (!b->closed || b->n_work || b->n_jobs) return;
    gram_cache_destroy(b->grams);
    tok_cache_destroy(b->tcache);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static int job_fail(job_t *j, int err, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int job_fail(job_t *j, int err, int status, const char *param, const char *fmt, ...)
{
    j->failed = 1;
    j->err = err;
    j->status = status;
    snprintf(j->param, sizeof j->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->msg, sizeof j->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* Render (chat) and tokenize the prompt into j->toks. Pure computation on the
 * job's own copies and the immutable tokenizer: safe on a worker thread. */
static void prepare(job_t *j)
{
    local_t *b = j->b;
    const char *what = j->is_chat ? "messages" : "prompt";
    size_t n_tok = 0;
    int rc;
    if (j->is_chat) {
        if (!b->chat_ok) {
            job_fail(j, BAR_ERR_UNSUPPORTED, 400, "messages",
                     "This model has no usable chat template (%s); use /v1/completions.",
                     b->chat_err);
            return;
        }
        int32_t *ids = NULL;
        tok_cache_key_t key = tok_cache_key_chat_init((int)b->chat_tmpl, 1);
        for (int i = 0; i < j->n_msgs; i++) {
            tok_cache_key_add(&key, j->msgs[i].role, j->msgs[i].role_len);
            tok_cache_key_add(&key, j->msgs[i].content, j->msgs[i].content_len);
        }
        if (!tok_cache_get(b->tcache, key, &ids, &n_tok)) {
            bar_msg_t msg = {{0}};
            rc = chat_encode(b->chat_tmpl, b->tok, j->msgs, (size_t)j->n_msgs, 1, &ids, &n_tok,
                             &msg);
            if (rc) {
                job_fail(j, rc, 500, NULL, "chat template: %s", msg.text);
                return;
            }
            tok_cache_put(b->tcache, key, ids, n_tok);
        }
        j->toks = ids;
    } else if (tok_cache_get(b->tcache, tok_cache_key_text(j->prompt, j->prompt_len, 1, 0),
                             &j->toks, &n_tok)) {
        /* the same prompt was tokenized before: its ids, copied */
    } else {
        size_t cap = (size_t)b->n_ctx;
        j->toks = malloc(cap * sizeof *j->toks);
        if (!j->toks) {
            job_fail(j, BAR_ERR_NOMEM, 500, NULL, "out of memory");
            return;
        }
        rc = tok_encode(b->tok, j->prompt, j->prompt_len, 1, 0, j->toks, cap, &n_tok);
        if (rc && rc != BAR_ERR_RANGE) {
            job_fail(j, rc, 500, NULL, "tokenizer failed: %s", bar_strerror(rc));
            return;
        }
        if (rc == BAR_ERR_RANGE && n_tok <= cap) n_tok = cap + 1; /* at least */
        if (!rc) /* whole prompts only: a cut one is refused below anyway */
            tok_cache_put(b->tcache, tok_cache_key_text(j->prompt, j->prompt_len, 1, 0), j->toks,
                          n_tok);
    }
    j->n_tok = n_tok;
    if (n_tok >= (size_t)b->n_ctx && b->kv_limited)
        job_fail(j, BAR_ERR_RANGE, 400, what,
                 "This server's KV cache (kv-mem %zu bytes) holds at most %d tokens per "
                 "sequence. However, your %s resulted in %zu tokens, leaving no room for the "
                 "completion. Please reduce the length of the %s.",
                 b->kv_mem, b->n_ctx, what, n_tok, what);
    else if (n_tok >= (size_t)b->n_ctx)
        job_fail(j, BAR_ERR_RANGE, 400, what,
                 "This model's maximum context length is %d tokens. However, your %s resulted "
                 "in %zu tokens, leaving no room for the completion. Please reduce the length "
                 "of the %s.",
                 b->n_ctx, what, n_tok, what);
    else if (n_tok == 0)
        job_fail(j, BAR_ERR_INVALID, 400, what, "The prompt is empty.");
}

/* Deliver a DONE for a job that never reached the engine, then free it. */
static void deliver_unsubmitted(job_t *j)
{
    bk_event_t ev = {0};
    ev.type = BK_EV_DONE;
    if (j->failed) {
        ev.finish = BK_FINISH_ERROR;
        ev.err = j->err;
        ev.status = j->status;
        ev.msg = j->msg;
        ev.param = j->param[0] ? j->param : NULL;
    } else {
        ev.finish = BK_FINISH_CANCELLED;
    }
    j->cb(j->user, &ev);
    job_free(j);
}

/* The prompt is ready: hand it to the engine; START follows through the
 * queue. 0, or -1 with j->failed set (nothing was delivered). */
static int engine_start(job_t *j)
{
    local_t *b = j->b;
    if (j->failed) return -1;
    long long room = (long long)b->n_ctx - (long long)j->n_tok;
    long long mt = j->max_tokens_req > 0 ? j->max_tokens_req : b->max_tokens_default;
    j->sp.max_tokens = (int)(mt < room ? mt : room);
    engine_req_t er = {0};
    er.prompt = j->toks;
    er.n_prompt = j->n_tok;
    er.sampling = j->sp;
    er.deadline = j->deadline;
    er.priority = -j->priority; /* the engine runs higher first */
    er.salt = j->salt;
    er.cb = on_engine_event;
    er.user = j;
    /* START goes into the queue BEFORE the engine can produce events, so it
     * is always delivered first; a refused submit takes it back (nothing
     * drains the queue before this returns: delivery runs on this thread) */
    qev_t *start = j->start_ev;
    j->start_ev = NULL;
    start->kind = EV_START;
    start->j = j;
    start->n_prompt = (int)j->n_tok;
    queue_push(b, start);
    bar_msg_t msg = {{0}};
    int rc = engine_submit(b->engine, &er, &j->req_id, &msg);
    free(j->toks);
    j->toks = NULL;
    if (rc) {
        queue_remove(b, start);
        j->start_ev = start;
        const char *what = j->is_chat ? "messages" : "prompt";
        if (rc == BAR_ERR_RANGE) return job_fail(j, rc, 400, what, "%s", msg.text);
        if (rc == BAR_ERR_BUSY)
            return job_fail(j, rc, 503, NULL, "%s",
                            msg.text[0] ? msg.text : "the engine is shutting down");
        return job_fail(j, rc, rc == BAR_ERR_INVALID ? 400 : 500, NULL, "%s",
                        msg.text[0] ? msg.text : bar_strerror(rc));
    }
    j->submitted = 1;
    return 0;
}

static void prepare_work(uv_work_t *w)
{
    prepare(w->data);
}

static void finish_destroy(local_t *b);

static void prepare_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    local_t *b = j->b;
    b->n_work--;
    j->in_work = 0;
    if (status && !j->failed) job_fail(j, BAR_ERR_IO, 500, NULL, "tokenization cancelled");
    if (j->cancelled || b->closing || engine_start(j) < 0) deliver_unsubmitted(j);
    if (b->destroy_pending && b->n_work == 0) finish_destroy(b);
    maybe_free(b);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* The prefix-cache namespace of a request: its tenant and its cache_salt,
 * each length-prefixed so that no two pairs hash the same bytes. */
static uint64_t prefix_salt(const char *tenant, const char *cache_salt)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    const char *parts[2] = {tenant ? tenant : "", cache_salt ? cache_salt : ""};
    for (int i = 0; i < 2; i++) {
        uint64_t n = strlen(parts[i]);
        XXH3_64bits_update(&st, &n, sizeof n);
        XXH3_64bits_update(&st, parts[i], (size_t)n);
    }
    return XXH3_64bits_digest(&st);
}

static int local_submit(backend_t *base, const bk_req_t *r, uint64_t *id, bar_msg_t *msg)
{
    local_t *b = (local_t *)base;
    if (b->closing) return bar_fail(msg, BAR_ERR_BUSY, "the engine is shutting down");
    int n_choices = r->sp.n > 1 ? r->sp.n : 1;
    if (n_choices > CHOICES_MAX || n_choices > b->n_seq_max)
        return bar_fail(msg, BAR_ERR_INVALID,
                        "n: %d choices need as many sequences; this model decodes %d at once "
                        "(--parallel) and answers at most %d",
                        n_choices, b->n_seq_max, CHOICES_MAX);
    for (int i = 0; i < r->sp.n_logit_bias; i++)
        if (r->sp.logit_bias[i].token < 0 || r->sp.logit_bias[i].token >= b->n_vocab)
            return bar_fail(msg, BAR_ERR_INVALID,
                            "logit_bias: token id %d is outside this model's vocabulary (0..%d)",
                            r->sp.logit_bias[i].token, b->n_vocab - 1);
    if (r->tools) return bar_fail(msg, BAR_ERR_UNSUPPORTED, "tools: not supported by this model");
    job_t *j = calloc(1, sizeof *j);
    if (!j) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    j->b = b;
    j->cb = r->cb;
    j->user = r->user;
    j->is_chat = r->is_chat;
    j->deadline = r->deadline;
    j->priority = r->priority;
    j->salt = prefix_salt(r->tenant, r->cache_salt);
    j->max_tokens_req = r->sp.max_tokens;
    j->n_choices = n_choices;
    int oom = 0;
    for (int i = 0; i < n_choices; i++)
        oom |= !(j->done_ev[i] = calloc(1, sizeof *j->done_ev[i] + 1));
    j->start_ev = calloc(1, sizeof *j->start_ev + 1);
    oom |= !j->start_ev;
    if (r->sp.n_logit_bias > 0) {
        j->bias = calloc((size_t)r->sp.n_logit_bias, sizeof *j->bias);
        oom |= !j->bias;
        for (int i = 0; j->bias && i < r->sp.n_logit_bias; i++)
            j->bias[i] = (engine_bias_t){r->sp.logit_bias[i].token, r->sp.logit_bias[i].bias};
    }
    if (r->is_chat) {
        j->msgs = calloc((size_t)r->n_msgs + 1, sizeof *j->msgs);
        oom |= !j->msgs;
        /* role and content are copied: the request is freed when its client
         * goes away, while a big prompt may still be tokenized on a worker */
        for (int i = 0; !oom && i < r->n_msgs; i++) {
            size_t rl = strlen(r->msgs[i].role);
            char *role = dup_n(r->msgs[i].role, rl);
            char *c = dup_n(r->msgs[i].content, r->msgs[i].content_len);
            if (!c || !role) {
                free(role);
                free(c);
                oom = 1;
                break;
            }
            j->msgs[i] = (chat_msg_t){role, rl, c, r->msgs[i].content_len};
            j->n_msgs = i + 1;
        }
    } else {
        j->prompt = dup_n(r->prompt, r->prompt_len);
        j->prompt_len = r->prompt_len;
        oom |= !j->prompt;
    }
    engine_sampling_t sp = engine_sampling_default();
    sp.temperature = (float)r->sp.temperature;
    sp.top_p = (float)r->sp.top_p;
    sp.top_k = r->sp.top_k;
    sp.min_p = (float)r->sp.min_p;
    sp.presence_penalty = (float)r->sp.presence_penalty;
    sp.frequency_penalty = (float)r->sp.frequency_penalty;
    sp.repeat_penalty = (float)r->sp.repeat_penalty;
    sp.seed = r->sp.seed;
    sp.has_seed = r->sp.has_seed;
    for (int i = 0; !oom && i < r->sp.n_stop && i < 4; i++) {
        j->stop[i] = dup_n(r->sp.stop[i], strlen(r->sp.stop[i]));
        oom |= !j->stop[i];
        sp.stop[i] = j->stop[i];
        j->n_stop = i + 1;
    }
    sp.n_stop = j->n_stop;
    sp.ignore_eos = r->sp.ignore_eos;
    sp.logprobs = r->sp.logprobs;
    sp.top_logprobs = r->sp.top_logprobs > TOP_MAX ? TOP_MAX : r->sp.top_logprobs;
    sp.n = n_choices;
    sp.logit_bias = j->bias;
    sp.n_logit_bias = j->bias ? r->sp.n_logit_bias : 0;
    if (!oom && r->sp.constraint) {
        bar_msg_t cm = {{0}};
        int rc = 0;
        if (r->sp.grammar) /* compiled by the API layer: this request's one compile */
            sp.grammar = gram_ref(r->sp.grammar);
        else
            rc = gram_cache_get(b->grams, r->sp.constraint, r->sp.constraint_len, &sp.grammar, &cm);
        if (rc) {
            j->sp = sp;
            b->n_jobs++; /* job_free counts it out */
            job_free(j);
            return bar_fail(msg, rc == BAR_ERR_NOMEM ? rc : BAR_ERR_INVALID, "response_format: %s",
                            cm.text);
        }
    }
    j->sp = sp;
    j->id = ++b->next_id;
    j->t_submit = time_now_mono();
    j->waited = b->n_jobs >= b->n_seq_max;
    j->next = b->jobs;
    if (b->jobs) b->jobs->prev = j;
    b->jobs = j;
    b->n_jobs++;
    if (oom) {
        job_free(j);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    *id = j->id;
    if (r->body_bytes >= PREPARE_INLINE_MAX) {
        /* a big prompt: tokenize on the libuv thread pool so the loop stays free */
        j->work.data = j;
        if (uv_queue_work(b->loop, &j->work, prepare_work, prepare_done) == 0) {
            j->in_work = 1;
            b->n_work++;
            return 0;
        }
    }
    prepare(j);
    if (engine_start(j) < 0) {
        /* refused at once: no event will come */
        int rc = bar_fail(msg, j->err ? j->err : BAR_ERR_INVALID, "%s", j->msg);
        job_free(j);
        return rc;
    }
    return 0;
}

static job_t *find_job(local_t *b, uint64_t id)
{
    for (job_t *j = b->jobs; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

static void local_cancel(backend_t *base, uint64_t id)
{
    local_t *b = (local_t *)base;
    job_t *j = find_job(b, id);
    if (!j) return;
    j->cancelled = 1; /* tokenizing: ends when that returns; submitted: within a step */
    if (j->submitted) engine_cancel(b->engine, j->req_id);
}

/* ---- loop side: queue → events ---- */

/* n > 1: choice q->index ended. Tell the caller (CHOICE_END) and fold it
 * into the job's DONE: 1 when it was the last choice, q then carries the
 * DONE (every choice's tokens, the finish of the whole), else 0. */
static int choices_done(job_t *j, qev_t *q)
{
    bk_event_t ev = {0};
    ev.type = BK_EV_CHOICE_END;
    ev.index = q->index;
    ev.n_prompt = q->n_prompt;
    ev.n_cached = q->n_cached;
    ev.n_gen = q->n_gen;
    ev.finish = q->finish == ENGINE_FINISH_STOP        ? BK_FINISH_STOP
                : q->finish == ENGINE_FINISH_LENGTH    ? BK_FINISH_LENGTH
                : q->finish == ENGINE_FINISH_TIMEOUT   ? BK_FINISH_TIMEOUT
                : q->finish == ENGINE_FINISH_CANCELLED ? BK_FINISH_CANCELLED
                                                       : BK_FINISH_ERROR;
    j->cb(j->user, &ev);
    if (q->index == 0) j->first_fin = q->finish;
    if (q->finish != ENGINE_FINISH_STOP && q->finish != ENGINE_FINISH_LENGTH &&
        (!j->cut || q->finish == ENGINE_FINISH_ERROR)) {
        j->cut = q->finish;
        j->cut_err = q->err;
        snprintf(j->cut_msg, sizeof j->cut_msg, "%s", q->msg);
    }
    j->gen_total += q->n_gen;
    if (++j->n_ended < j->n_choices) return 0;
    q->n_gen = j->gen_total;
    q->finish = j->cut ? j->cut : j->first_fin;
    if (j->cut) {
        q->err = j->cut_err;
        snprintf(q->msg, sizeof q->msg, "%s", j->cut_msg);
    }
    return 1;
}

static void deliver(local_t *b, qev_t *q)
{
    job_t *j = q->j;
    bk_event_t ev = {0};
    ev.n_prompt = q->n_prompt;
    ev.n_cached = q->n_cached;
    ev.n_gen = q->n_gen;
    ev.t_first_token = q->t_first_token;
    ev.t_queue = q->t_queue;
    if (q->kind == EV_START) {
        ev.type = BK_EV_START;
        j->cb(j->user, &ev);
        return;
    }
    if (q->kind == EV_TOKEN) {
        lcost_token(b, j, q);
        char pieces[(TOP_MAX + 1) * PIECE_MAX];
        lp_alt_t tops[TOP_MAX];
        lp_tok_t lp;
        ev.type = BK_EV_DELTA;
        ev.index = q->index;
        ev.text = q->text;
        ev.text_len = q->text_len;
        if (j->sp.logprobs) {
            size_t n = tok_piece(b->tok, q->token, 1, pieces, PIECE_MAX);
            lp = (lp_tok_t){pieces, n > PIECE_MAX ? PIECE_MAX : n, q->logprob, 0, tops};
            for (int k = 0; k < q->n_top && k < j->sp.top_logprobs; k++) {
                char *p = pieces + (size_t)(k + 1) * PIECE_MAX;
                size_t m = tok_piece(b->tok, q->top[k].token, 1, p, PIECE_MAX);
                tops[k] = (lp_alt_t){p, m > PIECE_MAX ? PIECE_MAX : m, q->top[k].logprob};
                lp.n_top = k + 1;
            }
            ev.lp = &lp;
            ev.n_lp = 1;
        }
        j->cb(j->user, &ev);
        return;
    }
    if (j->n_choices > 1 && !choices_done(j, q)) { /* more choices to come */
        free(q);
        return;
    }
    ev.n_gen = q->n_gen; /* n > 1: every choice's */
    ev.type = BK_EV_DONE;
    lcost_done(b, j, q);
    pthread_mutex_lock(&b->mu);
    int lost = j->lost;
    pthread_mutex_unlock(&b->mu);
    switch (q->finish) {
    case ENGINE_FINISH_STOP:
        ev.finish = BK_FINISH_STOP;
        break;
    case ENGINE_FINISH_LENGTH:
        ev.finish = BK_FINISH_LENGTH;
        break;
    case ENGINE_FINISH_TIMEOUT:
        ev.finish = BK_FINISH_TIMEOUT;
        break;
    case ENGINE_FINISH_CANCELLED:
        ev.finish = BK_FINISH_CANCELLED;
        break;
    default:
        ev.finish = BK_FINISH_ERROR;
        ev.err = q->err ? q->err : BAR_ERR_IO;
        ev.status = 500;
        ev.msg = q->msg[0] ? q->msg : bar_strerror(ev.err);
        break;
    }
    if (lost) {
        ev.finish = BK_FINISH_ERROR;
        ev.err = BAR_ERR_NOMEM;
        ev.status = 500;
        ev.msg = "out of memory: a token event was lost";
    }
    j->cb(j->user, &ev);
    free(q);
    job_free(j);
}

static void drain(local_t *b)
{
    pthread_mutex_lock(&b->mu);
    qev_t *list = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        qev_t *next = list->next;
        int done = list->kind == EV_DONE;
        deliver(b, list); /* frees a DONE event with its job */
        if (!done) free(list);
        list = next;
    }
}

static void on_async(uv_async_t *h)
{
    drain(h->data);
}

static void local_stats(backend_t *base, bk_stats_t *out)
{
    local_t *b = (local_t *)base;
    engine_stats_t st;
    engine_stats(b->engine, &st);
    memset(out, 0, sizeof *out);
    out->n_ctx = st.n_ctx;
    out->n_active = st.n_active;
    out->n_queued = st.n_queued;
    out->n_jobs = b->n_jobs;
    out->kind = "local";
    out->kernel_level = st.kernel_level;
    out->n_threads = st.n_threads;
    out->n_vocab = st.n_vocab;
    out->n_slots = b->n_seq_max;
    out->s_per_prompt_token = b->prefill_tok;
    out->s_per_output_token = b->tpot;
    out->est_wait = lcost_wait(b, 0, 1);
    out->mean_out_tokens = b->out_mean;
    out->dev_out_tokens = b->out_dev;
    /* waiting: queued in the engine for a slot, or still being tokenized */
    out->n_waiting = st.n_queued;
    for (job_t *j = b->jobs; j; j = j->next)
        if (!j->submitted && !j->cancelled) out->n_waiting++;
    out->kv_blocks_total = st.kv_blocks_total;
    out->kv_blocks_used = st.kv_blocks_used;
    out->kv_blocks_cached = st.kv_blocks_cached;
    out->kv_blocks_free = st.kv_blocks_free;
    out->kv_evictions = st.kv_evictions;
    out->prefix_hit_tokens = st.prefix_hit_tokens;
    out->preemptions = st.preemptions;
    out->prefill_tokens = st.n_tokens_prompt;
    tok_cache_stats_t tc;
    tok_cache_stats(b->tcache, &tc);
    out->tok_cache_hits = tc.hits;
    out->tok_cache_misses = tc.misses;
    out->tok_cache_evictions = tc.evictions;
    out->tok_cache_entries = tc.entries;
    out->tok_cache_bytes = tc.bytes;
}

static int local_count_tokens(backend_t *base, const bk_req_t *r, size_t *n, bar_msg_t *msg)
{
    local_t *b = (local_t *)base;
    if (r->is_chat) {
        if (!b->chat_ok) return bar_fail(msg, BAR_ERR_UNSUPPORTED, "no usable chat template");
        chat_msg_t *m = calloc((size_t)r->n_msgs + 1, sizeof *m);
        if (!m) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
        for (int i = 0; i < r->n_msgs; i++)
            m[i] = (chat_msg_t){r->msgs[i].role, strlen(r->msgs[i].role), r->msgs[i].content,
                                r->msgs[i].content_len};
        int32_t *ids = NULL;
        int rc = chat_encode(b->chat_tmpl, b->tok, m, (size_t)r->n_msgs, 1, &ids, n, msg);
        free(m);
        free(ids);
        return rc;
    }
    size_t cap = (size_t)b->n_ctx * 4;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    int rc = tok_encode(b->tok, r->prompt, r->prompt_len, 1, 0, ids, cap, n);
    free(ids);
    if (rc) return bar_fail(msg, rc, "tokenizer: %s", bar_strerror(rc));
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    local_t *b = h->data;
    b->closed = 1;
    maybe_free(b);
}

/* Stop the engine (pending requests get DONE/CANCELLED into the queue),
 * deliver what is queued, close the wake-up handle. */
static void finish_destroy(local_t *b)
{
    b->destroy_pending = 0;
    engine_destroy(b->engine);
    b->engine = NULL;
    drain(b);
    uv_close((uv_handle_t *)&b->async, on_closed);
}

static void local_destroy(backend_t *base)
{
    local_t *b = (local_t *)base;
    b->closing = 1;
    if (b->n_work) {
        /* prompts are being tokenized on the thread pool with the engine's
         * tokenizer: the engine (and its tokenizer) goes when the last of
         * them is back (prepare_done); running jobs end now */
        for (job_t *j = b->jobs; j; j = j->next)
            if (j->submitted) engine_cancel(b->engine, j->req_id);
        b->destroy_pending = 1;
        return;
    }
    finish_destroy(b);
}

/* Admission's question (backend.h bk_estimate): when would a request
 * submitted now get a decoding place, its first token and its last? Its own
 * priority class counts: running work of a lower class it would pre-empt is
 * not in its way, waiting work of a lower class runs after it. The time per
 * token is the step time measured online at the number of sequences it will
 * decode alongside (more sequences, slower steps). */
static void local_estimate(backend_t *base, const bk_est_in_t *in, bk_est_t *out)
{
    lcost_estimate((local_t *)base, in, out);
}

static const bk_ops_t LOCAL_OPS = {
    local_submit, local_cancel,  local_stats,    local_count_tokens,
    NULL,         local_destroy, local_estimate,
};

int backend_local_create(backend_t **out, uv_loop_t *loop, engine_t *e, int max_tokens_default,
                         bar_msg_t *msg)
{
    local_t *b = calloc(1, sizeof *b);
    if (!b || gram_cache_create(&b->grams, GRAM_CACHE)) {
        free(b);
        return bar_fail(msg, BAR_ERR_NOMEM, "out of memory");
    }
    b->base.ops = &LOCAL_OPS;
    b->loop = loop;
    b->engine = e;
    b->tok = engine_tok(e);
    engine_stats_t st;
    engine_stats(e, &st);
    b->n_ctx = st.n_ctx;
    b->n_seq_max = st.n_seq_max;
    b->n_vocab = st.n_vocab;
    b->kv_limited = st.n_ctx < st.n_ctx_max;
    b->kv_mem = st.kv_mem;
    b->max_tokens_default = max_tokens_default;
    bar_msg_t m = {{0}};
    int rc = chat_template_detect(engine_gguf(e), &b->chat_tmpl, &m);
    if (rc == BAR_ERR_NOTFOUND) {
        b->chat_tmpl = CHAT_TMPL_CHATML; /* no template in the file: ChatML, as llama.cpp */
        rc = 0;
    }
    b->chat_ok = rc == 0;
    if (rc) snprintf(b->chat_err, sizeof b->chat_err, "%.200s", m.text);
    pthread_mutex_init(&b->mu, NULL);
    uv_async_init(loop, &b->async, on_async);
    b->async.data = b;
    *out = &b->base;
    return 0;
}

int backend_local_set_token_cache(backend_t *base, size_t max_bytes)
{
    local_t *b = (local_t *)base;
    if (b->base.ops != &LOCAL_OPS) return BAR_ERR_INVALID;
    tok_cache_t *c = NULL;
    if (max_bytes) {
        int rc = tok_cache_create(&c, max_bytes);
        if (rc) return rc;
    }
    tok_cache_destroy(b->tcache); /* nothing is tokenizing yet: set once, before traffic */
    b->tcache = c;
    return 0;
}

engine_t *backend_local_engine(backend_t *base)
{
    return ((local_t *)base)->engine;
}

/* A numeric GGUF value of key in [lo, hi] into *out: 1, else 0. */
static int gguf_num(const gguf_t *g, const char *key, double lo, double hi, double *out)
{
    const gguf_kv_t *kv = gguf_kv_find(g, key);
    if (!kv) return 0;
    double v;
    switch (kv->type) {
    case GGUF_T_F32:
    case GGUF_T_F64:
        v = kv->v.f;
        break;
    case GGUF_T_U8:
    case GGUF_T_U16:
    case GGUF_T_U32:
    case GGUF_T_U64:
        v = (double)kv->v.u;
        break;
    case GGUF_T_I8:
    case GGUF_T_I16:
    case GGUF_T_I32:
    case GGUF_T_I64:
        v = (double)kv->v.i;
        break;
    default:
        return 0;
    }
    if (!(v >= lo && v <= hi)) return 0; /* NaN or out of range: ignored */
    *out = v;
    return 1;
}

int backend_local_sampling_defaults(const backend_t *base, model_sampling_t *out)
{
    if (!base || base->ops != &LOCAL_OPS) return -1;
    const local_t *b = (const local_t *)base;
    /* barista's: llama.cpp server's defaults (bench/sampling_defaults: coherent
     * where OpenAI's temperature 1 / top_p 1 is not, for the default model) */
    *out = (model_sampling_t){0.8, 0.95, 0.05, 1.0, 40, 0};
    const gguf_t *g = engine_gguf(b->engine);
    double v;
    if (gguf_num(g, "general.sampling.temp", 0, 2, &v)) {
        out->temperature = v;
        out->from_file |= MODEL_HAS_TEMPERATURE;
    }
    if (gguf_num(g, "general.sampling.top_p", 0, 1, &v)) {
        out->top_p = v;
        out->from_file |= MODEL_HAS_TOP_P;
    }
    if (gguf_num(g, "general.sampling.min_p", 0, 1, &v)) {
        out->min_p = v;
        out->from_file |= MODEL_HAS_MIN_P;
    }
    if (gguf_num(g, "general.sampling.penalty_repeat", 0, 10, &v)) {
        out->repeat_penalty = v;
        out->from_file |= MODEL_HAS_REPEAT_PENALTY;
    }
    if (gguf_num(g, "general.sampling.top_k", 0, 1 << 20, &v)) {
        out->top_k = (int)v;
        out->from_file |= MODEL_HAS_TOP_K;
    }
    return 0;
}

const char *bk_finish_name(bk_finish_t f)
{
    static const char *const names[] = {"none",    "stop",      "length", "tool_calls",
                                        "timeout", "cancelled", "error"};
    return (unsigned)f < sizeof names / sizeof names[0] ? names[f] : "?";
}
