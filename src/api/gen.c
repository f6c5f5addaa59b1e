/* gen.c — generations and the clients that follow them.
 *
 * A generation is one backend job answering one or more clients: the request
 * that missed the cache (its leader) and the identical requests that joined
 * it while it ran (single-flight). Backend events arrive on the loop thread
 * (backend.h): START opens every client's reply, DELTA is recorded for the
 * cache and fanned out, DONE finishes every client, stores a complete reply
 * in the cache tiers and frees the generation.
 *
 * Back-pressure: a streamed delta is written at once when the connection's
 * unsent bytes are under the bound; otherwise it is appended to the client's
 * pending text and the next drain writes all of it as one chunk. Pending
 * output (text and logprob entries) is bounded by stream-buffer-bytes: past
 * it the reader is too slow and
 * leaves (the generation is cancelled when it was the last one).
 *
 * Deadlines are per client (a joiner's deadline is its own): a timer ends
 * that client's reply — finish_reason "timeout" on a stream whose head is
 * out, 504 otherwise — and the generation is cancelled only when no client
 * is left. A generation cancelled while clients that never received a byte
 * still follow it starts a fresh one for them.
 *
 * Lifetime: a gen_t lives from submit until its DONE event, even if every
 * client left earlier. Not for: parsing and cache decisions (pipeline.c),
 * reply bytes (reply.c), HTTP framing (server/). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_limit.h"
#include "api/reply.h"
#include "api/tools.h"
#include "control/fallback.h"
#include "server/sse.h"
#include "util/timeutil.h"

struct gen {
    api_t *a;
    api_model_t *m;
    gen_t *prev, *next;
    client_t *clients; /* join order; the first one started it */
    uint64_t job;      /* the backend's id */
    long created;
    int want_lp;
    int started;              /* START came: replies are open */
    int cancel_sent;          /* bk_cancel was called */
    const char *leave_reason; /* why the last client left (metrics), static */
    api_cache_req_t cq;
    cache_rec_t *rec; /* recording for the cache; NULL when not cacheable */
    sf_entry_t *sfe;  /* single-flight record twins join; NULL when none */
    api_sem_t *sem;   /* the leader's semantic query: stored with the reply */
    int n_choices;    /* the request's n */
};

/* Pending output of one choice i >= 1 of an n > 1 reply (choice 0 uses the
 * client's text/lp). */
struct client_choice {
    buf_t text;
    lp_list_t *lp;
};

static void client_start(client_t *c);

/* ---- choices (n > 1) ---- */

static buf_t *ch_text(client_t *c, int i)
{
    return i == 0 ? &c->text : &c->more[i - 1].text;
}

static lp_list_t **ch_lp(client_t *c, int i)
{
    return i == 0 ? &c->lp : &c->more[i - 1].lp;
}

static void choices_free(client_t *c)
{
    for (int i = 1; i < c->n_choices && c->more; i++) {
        buf_free(&c->more[i - 1].text);
        lp_list_destroy(c->more[i - 1].lp);
    }
    free(c->more);
    c->more = NULL;
    c->n_choices = 1;
    memset(c->ended, 0, sizeof c->ended);
}

/* Room for n choices' pending output. 0 or BAR_ERR_NOMEM (then one). */
static int choices_init(client_t *c, int n)
{
    choices_free(c);
    if (n <= 1) return 0;
    if (!(c->more = calloc((size_t)n - 1, sizeof *c->more))) return BAR_ERR_NOMEM;
    c->n_choices = n;
    return 0;
}

/* Pending bytes of every choice (text and logprob entries). */
static size_t choices_pending(client_t *c)
{
    size_t n = 0;
    for (int i = 0; i < c->n_choices; i++)
        n += ch_text(c, i)->n + lp_list_bytes(*ch_lp(c, i));
    return n;
}

/* ---- clients ---- */

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

const api_tenant_t *api_client_tenant(const client_t *c)
{
    return &c->tenant;
}

void client_free(client_t *c)
{
    rlr_cancel(c->rl_op);
    c->rl_op = NULL;
    if (c->rl_held) /* tokens corrected to the real count */
        api_limit_settle(c->a, &c->tenant, c->rl_redis, c->rl_reserved, c->rl_used);
    c->rl_held = 0;
    cJSON_Delete(c->root);
    c->root = NULL;
    if (c->memo_hit) cache_entry_release(c->memo_hit);
    c->memo_hit = NULL;
    api_tenant_release(&c->tenant);
    api_sem_cancel(c);
    api_sem_free(c->sem);
    c->sem = NULL;
    oai_req_free(&c->q);
    choices_free(c);
    buf_free(&c->text);
    lp_list_destroy(c->lp);
    sse_close(c->sse);
    c->sse = NULL;
    if (c->timer_on) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, on_timer_closed); /* frees c */
        return;
    }
    free(c);
}

/* Remove c from its generation's list (not from single-flight). */
static void client_unlink(client_t *c)
{
    gen_t *g = c->g;
    if (!g) return;
    for (client_t **pp = &g->clients; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    c->next = NULL;
    c->g = NULL;
}

/* Take the request away from the client: it is answered (or gone). */
static srv_req_t *client_take(client_t *c)
{
    srv_req_t *r = c->r;
    c->r = NULL;
    if (r) srv_req_set_user(r, NULL, NULL, NULL);
    return r;
}

static sf_t *api_sf(api_t *a)
{
    return api_cache_sf(a->cache);
}

/* Detach and free the single-flight record: nobody joins from now on. */
static void gen_sf_finish(gen_t *g)
{
    sf_t *sf = api_sf(g->a);
    if (g->sfe && sf) sf_finish(sf, g->sfe);
    g->sfe = NULL;
}

static void gen_cancel(gen_t *g, const char *reason)
{
    if (g->cancel_sent) return;
    g->cancel_sent = 1;
    obs_metrics_cancelled(g->a->metrics, reason);
    gen_sf_finish(g); /* a twin arriving now must not join a cut-short reply */
    if (g->m->bk) bk_cancel(g->m->bk, g->job); /* NULL: stopping, DONE comes anyway */
}

void gen_cancel_all(api_t *a)
{
    for (gen_t *g = a->gens; g; g = g->next)
        gen_cancel(g, "shutdown");
}

void gen_on_sf_empty(void *ctx, sf_entry_t *e)
{
    (void)ctx;
    gen_t *g = sf_data(e);
    gen_cancel(g, g->leave_reason ? g->leave_reason : "disconnect");
}

/* c leaves its generation (gone, too slow, past its deadline); the last
 * one out cancels it. */
static void client_detach(client_t *c, const char *reason)
{
    gen_t *g = c->g;
    client_unlink(c);
    if (g) g->leave_reason = reason;
    if (g && g->sfe && api_sf(g->a))
        sf_leave(g->sfe, c); /* the last one out cancels (gen_on_sf_empty) */
    else if (g && !g->clients)
        gen_cancel(g, reason);
    if (g && !g->clients && g->sem && !c->sem) {
        c->sem = g->sem; /* cancelled: it stores nothing; a fallback may look it up */
        g->sem = NULL;
    }
}

/* c leaves its generation and is freed. */
static void client_leave(client_t *c, const char *reason)
{
    client_detach(c, reason);
    client_free(c);
}

static void write_sse(client_t *c, buf_t *out)
{
    if (out->n) sse_write(c->sse, out->p, out->n);
    buf_free(out);
}

/* A reader too slow for the pending bound: it leaves (or, alone, ends the
 * generation). May free c. */
static void too_slow(client_t *c)
{
    gen_t *g = c->g;
    if (g && g->clients == c && !c->next) {
        gen_cancel(g, "slow_reader"); /* alone: end the generation */
    } else {
        obs_metrics_cancelled(c->a->metrics, "slow_reader");
        client_take(c);
        sse_end(c->sse);
        client_leave(c, "slow_reader");
    }
}

/* stream_flush for n > 1: each choice's pending output as one chunk of its
 * own (index i). May free c. */
static void stream_flush_choices(client_t *c, int final)
{
    if (!final && !sse_writable(c->sse)) {
        if (choices_pending(c) > (size_t)c->a->set->stream_buffer_bytes) too_slow(c);
        return;
    }
    buf_t out = {0};
    for (int i = 0; i < c->n_choices; i++) {
        buf_t *t = ch_text(c, i);
        lp_list_t *l = *ch_lp(c, i);
        int n_lp = lp_list_n(l);
        if (t->n == 0 && n_lp == 0) continue;
        reply_sse_choice_delta(&out, &c->resp, i, t->p, t->n, lp_list_items(l), n_lp, c->want_lp);
        buf_clear(t);
        if (l) lp_list_clear(l);
    }
    write_sse(c, &out);
}

/* Write the pending text (and logprobs) as one chunk. final: ignore the
 * back-pressure bound (the stream is ending; what is pending is bounded).
 * May free c (a too-slow reader): touch c no more. */
static void stream_flush(client_t *c, int final)
{
    if (!c->r || !c->sse) return;
    if (c->n_choices > 1) {
        stream_flush_choices(c, final);
        return;
    }
    int n_lp = lp_list_n(c->lp);
    if (c->text.n == 0 && (!final || n_lp == 0)) return;
    if (c->resp.tool_mode == TOOLS_FORCED && c->resp.kind == OAI_CHAT) {
        /* forced tool calls go out live, as the scanner reads them (tools.h);
         * c->text keeps the whole text: the finish reason reads it */
        if (!final && !sse_writable(c->sse)) {
            if (c->text.n - c->tstream.pos > (size_t)c->a->set->stream_buffer_bytes) too_slow(c);
            return;
        }
        buf_t out = {0};
        if (tools_stream(&c->tstream, &out, &c->resp, c->text.p, c->text.n, final) > 0 || !final) {
            write_sse(c, &out);
            if (c->lp) lp_list_clear(c->lp);
            return;
        }
        buf_free(&out); /* ended before a call began: the text goes out as content */
    }
    if (c->resp.tool_mode && !final) {
        /* what may become a tool call is held to the end (tools.h) */
        if (tools_may_be_call(c->resp.tool_mode, c->text.p, c->text.n)) return;
        c->resp.tool_mode = 0; /* content: streamed as it comes from now on */
    }
    if (!final && !sse_writable(c->sse)) {
        /* every pending byte counts: text and logprob entries (20
         * alternatives a token weigh ~100x its text) */
        if (c->text.n + lp_list_bytes(c->lp) > (size_t)c->a->set->stream_buffer_bytes) too_slow(c);
        return;
    }
    buf_t out = {0};
    reply_sse_delta(&out, &c->resp, c->text.p, c->text.n, lp_list_items(c->lp), n_lp, c->want_lp);
    write_sse(c, &out);
    buf_clear(&c->text);
    if (c->lp) lp_list_clear(c->lp);
}

static void on_drain(void *user, srv_req_t *r)
{
    (void)r;
    stream_flush(user, 0);
}

static void on_abort(void *user, srv_req_t *r)
{
    client_t *c = user;
    (void)r;
    c->r = NULL;
    if (c->sse) sse_detach(c->sse);
    api_sem_cancel(c); /* waiting for its query's embedding */
    if (c->walk) {
        /* waiting for a cache tier: no generation yet */
        cache_tiers_cancel(api_cache_tiers(c->a->cache), c->walk);
        c->walk = NULL;
    }
    if (!c->g) {
        client_free(c);
        return;
    }
    client_leave(c, "disconnect");
}

/* Add one delta's text and logprobs to the pending output of c's choice
 * `index` (ignored when c has no such choice). */
static int client_push(client_t *c, int index, const char *text, size_t len, const lp_tok_t *lp,
                       int n_lp)
{
    if (index < 0 || index >= c->n_choices) return 0;
    lp_list_t **l = ch_lp(c, index);
    if (c->want_lp && n_lp) {
        if (!*l && !(*l = lp_list_create())) return BAR_ERR_NOMEM;
        for (int i = 0; i < n_lp; i++)
            if (lp_list_push(*l, &lp[i])) return BAR_ERR_NOMEM;
    }
    return len && buf_append(ch_text(c, index), text, len) ? BAR_ERR_NOMEM : 0;
}

/* Close c's stream: the finish chunk of every choice that has not had one
 * (with fin), the usage chunk when asked, [DONE]. */
static void stream_close(client_t *c, oai_finish_t fin, const oai_usage_t *u, const char *timings,
                         size_t timings_len)
{
    buf_t out = {0};
    if (c->n_choices > 1) {
        for (int i = 0; i < c->n_choices; i++)
            if (!c->ended[i]) reply_sse_choice_end(&out, &c->resp, i, fin);
        reply_sse_end_timed(&out, &c->resp, u, c->include_usage, timings, timings_len);
    } else {
        reply_sse_close_timed(&out, &c->resp, fin, u, c->include_usage, timings, timings_len);
    }
    write_sse(c, &out);
}

/* The nearest budget of c (absolute monotonic seconds), 0 when none. */
static double next_expiry(const client_t *c, const char **what)
{
    double e = 0;
    *what = "deadline";
    if (c->deadline > 0) e = c->deadline;
    if (!c->got_tok && c->ttft_deadline > 0 && (e == 0 || c->ttft_deadline < e)) {
        e = c->ttft_deadline;
        *what = "first_token";
    }
    if (c->got_tok && c->stream && c->itl_s > 0 && (e == 0 || c->last_tok + c->itl_s < e)) {
        e = c->last_tok + c->itl_s;
        *what = "inter_token";
    }
    return e;
}

/* A budget ran out: send c a 504 (nothing went out yet) or end its stream
 * with finish_reason "timeout". */
static void on_deadline(uv_timer_t *t)
{
    client_t *c = t->data;
    if (!c->r) return;
    api_t *a = c->a;
    const char *what;
    double e = next_expiry(c, &what);
    if (e == 0 || e > time_now_mono() + 0.0005) { /* a token moved it: not yet */
        client_arm_deadline(c);
        return;
    }
    api_sem_cancel(c);
    if (c->walk) {
        cache_tiers_cancel(api_cache_tiers(a->cache), c->walk);
        c->walk = NULL;
    }
    const char *reason = !strcmp(what, "deadline")      ? "timeout"
                         : !strcmp(what, "first_token") ? "timeout_first_token"
                                                        : "timeout_inter_token";
    if (!c->sse && a->fallback &&
        fallback_chain_len(&(c->fb_origin ? c->fb_origin : c->m)->cfg) > c->fb_next) {
        /* no byte went out: the model's fallback chain answers */
        client_detach(c, reason);
        buf_clear(&c->text);
        if (c->lp) lp_list_clear(c->lp);
        choices_free(c); /* a model step sets its own up again (client_start) */
        c->started = 0;
        c->got_tok = 0;
        /* that budget is spent, though the timer may fire up to 0.5 ms
         * before it: the total one bounds the next step */
        if (!strcmp(what, "first_token")) c->ttft_deadline = 0;
        a->fallback(c);
        return;
    }
    if (c->sse) {
        stream_flush(c, 1);
        int iu = c->include_usage;
        c->include_usage = 0;
        stream_close(c, OAI_FINISH_TIMEOUT, NULL, NULL, 0);
        c->include_usage = iu;
        client_take(c);
        sse_end(c->sse);
    } else {
        srv_req_t *r = client_take(c);
        reply_error(r, 504, "server_error", "timeout", NULL, "%s",
                    !strcmp(what, "first_token")
                        ? "The request produced no first token within its budget."
                        : "The request did not finish within its deadline.");
    }
    if (c->g)
        client_leave(c, reason);
    else
        client_free(c);
}

void client_arm_deadline(client_t *c)
{
    const char *what;
    double e = next_expiry(c, &what);
    if (e <= 0) {
        if (c->timer_on) uv_timer_stop(&c->timer);
        return;
    }
    double left = e - time_now_mono();
    if (!c->timer_on) {
        uv_timer_init(c->a->loop, &c->timer);
        c->timer.data = c;
        c->timer_on = 1;
    }
    uv_timer_start(&c->timer, on_deadline, left > 0 ? (uint64_t)(left * 1e3) + 1 : 0, 0);
}

/* The X-Cache headers of a reply to c. tier/age only for hits. */
static void cache_headers(const client_t *c, const char *xcache, const char *tier, long long age,
                          char *out, size_t size)
{
    reply_cache_headers(xcache, tier, age, c->cq.cacheable ? c->cq.hex : NULL, out, size);
    if (c->r) obs_trace_cache(srv_req_obs(c->r), tier ? tier : xcache);
    if (c->sem_hit) {
        size_t n = strlen(out);
        snprintf(out + n, size - n, "X-Cache-Similarity: %.3f\r\n", (double)c->sem_sim);
    }
    if (c->fb[0]) {
        size_t n = strlen(out);
        snprintf(out + n, size - n, "X-Fallback: %s\r\n", c->fb);
    }
}

/* Start c's reply (the generation started): the SSE head and role chunk,
 * then what the generation produced before c joined. May free c. */
static void client_start(client_t *c)
{
    api_t *a = c->a;
    gen_t *g = c->g;
    c->started = 1;
    reply_make_id(&a->rng, c->id, sizeof c->id, c->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    c->resp = (oai_resp_t){.kind = c->kind,
                           .id = c->id,
                           .created = g->created,
                           .model = c->m->cfg.name,
                           .fallback = c->fb[0] ? c->fb : NULL,
                           .tool_mode = c->q.tool_mode};
    if (choices_init(c, g->n_choices)) {
        reply_error(client_take(c), 500, "server_error", NULL, NULL, "out of memory");
        client_leave(c, "error");
        return;
    }
    if (c->stream) {
        char hdr[512];
        cache_headers(c, c->xcache, NULL, 0, hdr, sizeof hdr);
        c->sse = sse_open(c->r, (uint64_t)a->set->sse_ping_ms, hdr);
        if (!c->sse) {
            reply_error(client_take(c), 500, "server_error", NULL, NULL, "cannot start the stream");
            client_leave(c, "error");
            return;
        }
        buf_t out = {0};
        for (int i = 0; i < c->n_choices; i++)
            reply_sse_choice_open(&out, &c->resp, i);
        write_sse(c, &out);
    }
    if (g->rec && cache_rec_n_chunks(g->rec) > 0) {
        /* a twin joined late: catch up with what is recorded so far */
        cache_meta_t meta = {0};
        meta.key = g->cq.key;
        meta.model = c->m->cfg.name;
        cache_entry_t *e = cache_rec_build(g->rec, &meta);
        if (e) {
            for (int i = 0; i < e->n_chunks; i++) {
                const cache_chunk_t *ch = &e->chunks[i];
                client_push(c, ch->index, e->text + ch->off, ch->len, e->lp + ch->lp0, ch->n_lp);
            }
            c->got_tok = 1; /* its first tokens are here: that budget is met */
            c->last_tok = time_now_mono();
            obs_trace_first_token(srv_req_obs(c->r), c->last_tok);
            if (c->n_choices > 1) {
                /* choices that already ended: their text, then their finish chunk */
                if (c->stream) stream_flush(c, 1);
                buf_t out = {0};
                for (int i = 0; i < c->n_choices && i < e->n_choices; i++)
                    if (e->choice_finish[i]) {
                        c->ended[i] = e->choice_finish[i] == CACHE_FINISH_STOP ? BK_FINISH_STOP
                                                                               : BK_FINISH_LENGTH;
                        if (c->stream)
                            reply_sse_choice_end(&out, &c->resp, i, reply_finish(c->ended[i]));
                    }
                if (c->stream) write_sse(c, &out);
                buf_free(&out);
            }
            cache_entry_release(e);
        }
        if (c->stream) stream_flush(c, 0);
    }
}

/* ---- hits ---- */

void gen_reply_entry(client_t *c, cache_entry_t *e, const char *tier)
{
    api_t *a = c->a;
    obs_trace_t *o = srv_req_obs(c->r);
    obs_trace_first_token(o, o->last); /* the reply goes out now (no new clock read) */
    obs_trace_tokens(o, e->prompt_tokens, e->completion_tokens, e->cached_tokens);
    obs_trace_cache(o, tier);
    srv_req_t *r = client_take(c);
    c->rl_used = 0; /* a hit counts against requests, not tokens */
    long long age = (api_cache_now_ms() - e->stored_ms) / 1000;
    char hdr[512];
    cache_headers(c, "HIT", tier, age, hdr, sizeof hdr);
    unsigned tag = (unsigned)c->kind << 1 | (c->want_lp ? 1u : 0u);
    if (!c->stream && e->memo && e->memo_tag == tag && !c->fb[0]) {
        /* the reply rendered by an earlier hit of this entry, sent as it is */
        srv_respond(r, 200, "application/json", e->memo, e->memo_len, hdr);
        client_free(c);
        return;
    }
    reply_make_id(&a->rng, c->id, sizeof c->id, c->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    oai_resp_t resp = {.kind = c->kind,
                       .id = c->id,
                       .created = (long)e->created,
                       .model = c->m->cfg.name,
                       .fallback = c->fb[0] ? c->fb : NULL,
                       .tool_mode = c->q.tool_mode};
    buf_t out = {0};
    buf_reserve(&out, e->text_len * 2 + 512);
    if (!c->stream) {
        reply_entry_json(&out, &resp, e, c->want_lp);
        srv_respond(r, 200, "application/json", out.p, out.n, hdr);
        /* Keep the rendering for the next hit (its id too: every non-streaming
         * hit of one entry answers with the same "id"). Charged to the L1
         * budget. Entries from L2 are promoted to L1 before this runs. An
         * entry belongs to one model (its name is in the key), so the
         * rendering's "model" is right for every later hit. */
        if (!e->memo && out.n && !c->fb[0]) {
            size_t n = out.n;
            char *p = buf_release(&out);
            if (cache_entry_set_memo(e, p, n, tag))
                free(p);
            else
                api_cache_recharge(a->cache, e);
        }
    } else {
        reply_entry_sse(&out, &resp, e, c->include_usage, c->want_lp);
        size_t n = strlen(hdr);
        snprintf(hdr + n, sizeof hdr - n, "Cache-Control: no-cache\r\n");
        srv_respond(r, 200, "text/event-stream", out.p, out.n, hdr);
    }
    buf_free(&out);
    client_free(c);
}

void gen_reply_text(client_t *c, const char *text, size_t len)
{
    api_t *a = c->a;
    srv_req_t *r = client_take(c);
    reply_make_id(&a->rng, c->id, sizeof c->id, c->kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    oai_resp_t resp = {.kind = c->kind,
                       .id = c->id,
                       .created = time_now_unix(),
                       .model = c->m->cfg.name,
                       .fallback = c->fb[0] ? c->fb : NULL};
    oai_usage_t u = {0};
    char hdr[512];
    cache_headers(c, NULL, NULL, 0, hdr, sizeof hdr); /* not from the cache: X-Fallback only */
    buf_t out = {0};
    if (!c->stream) {
        reply_json(&out, &resp, text, len, OAI_FINISH_STOP, &u, NULL, 0, 0);
        srv_respond(r, 200, "application/json", out.p, out.n, hdr);
    } else {
        reply_sse_open(&out, &resp);
        reply_sse_delta(&out, &resp, text, len, NULL, 0, 0);
        reply_sse_close(&out, &resp, OAI_FINISH_STOP, &u, c->include_usage);
        size_t n = strlen(hdr);
        snprintf(hdr + n, sizeof hdr - n, "Cache-Control: no-cache\r\n");
        srv_respond(r, 200, "text/event-stream", out.p, out.n, hdr);
    }
    buf_free(&out);
    client_free(c);
}

/* ---- generation events ---- */

static void gen_free(gen_t *g)
{
    api_t *a = g->a;
    if (g->prev)
        g->prev->next = g->next;
    else if (a->gens == g)
        a->gens = g->next;
    if (g->next) g->next->prev = g->prev;
    a->n_gens--;
    cache_rec_destroy(g->rec);
    api_sem_free(g->sem);
    free(g);
    if (!a->n_gens && a->on_last_gen) a->on_last_gen(a); /* may free a */
}

/* The OpenAI error for a job that failed before it started. */
static void start_error(const bk_event_t *ev, const client_t *c, oai_err_t *e)
{
    const char *what = c->kind == OAI_CHAT ? "messages" : "prompt";
    const char *param = ev->param ? ev->param : NULL;
    const char *msg = ev->msg ? ev->msg : "generation failed";
    if (ev->finish != BK_FINISH_ERROR)
        oai_err(e, 503, "server_error", "unavailable", NULL, "shutting down");
    else if (ev->err == BAR_ERR_RANGE)
        oai_err(e, 400, "invalid_request_error", "context_length_exceeded", param ? param : what,
                "%s", msg);
    else if (ev->err == BAR_ERR_UNSUPPORTED)
        oai_err(e, 400, "invalid_request_error", "unsupported_value", param, "%s", msg);
    else if (ev->status == 400)
        oai_err(e, 400, "invalid_request_error", "invalid_value", param, "%s", msg);
    else if (ev->status == 503)
        oai_err(e, 503, "server_error", "unavailable", NULL, "%s", msg);
    else if (ev->status == 502 || ev->status == 504) /* an upstream failed (names it) */
        oai_err(e, ev->status, "server_error", "upstream_error", NULL, "%s", msg);
    else
        oai_err(e, 500, "server_error", "engine_error", NULL, "generation failed: %s", msg);
}

/* End c's reply with an error: an error event on a started stream (after
 * what is pending), else an error status. */
static void client_fail(client_t *c, const oai_err_t *e)
{
    if (c->sse) {
        stream_flush(c, 1);
        buf_t out = {0};
        reply_sse_error(&out, e);
        write_sse(c, &out);
        client_take(c);
        sse_end(c->sse);
    } else {
        reply_send_error(client_take(c), e);
    }
}

static void finish_client(client_t *c, const bk_event_t *ev)
{
    oai_usage_t u = {ev->n_prompt, ev->n_gen, ev->n_cached};
    double now = time_now_mono();
    obs_trace_t *o = srv_req_obs(c->r);
    /* an upstream's part (its attempt's start to its first token) is upstream, not
     * prefill; decode runs from that token (a whole reply reaches the client only at
     * the end) */
    obs_trace_generated(o, now, ev->n_prompt, ev->n_gen, ev->n_cached, ev->t_queue,
                        ev->replica ? 0 : ev->t_first_token);
    if (ev->t_upstream > 0) {
        obs_trace_set(o, OBS_UPSTREAM, ev->t_upstream);
        obs_trace_set(o, OBS_DECODE, now - ev->t_upstream_first);
    }
    if (ev->replica) OBS_TRACE_SET(o, replica, ev->replica);
    c->rl_used = (long long)ev->n_prompt + ev->n_gen;
    if (ev->finish == BK_FINISH_ERROR) {
        oai_err_t e;
        if (ev->status == 502 || ev->status == 504) /* an upstream failed (names it) */
            oai_err(&e, ev->status, "server_error", "upstream_error", NULL, "%s",
                    ev->msg ? ev->msg : bar_strerror(ev->err));
        else
            oai_err(&e, 500, "server_error", "engine_error", NULL, "generation failed: %s",
                    ev->msg ? ev->msg : bar_strerror(ev->err));
        client_fail(c, &e);
        return;
    }
    oai_finish_t fin = tools_finish(&c->resp, c->text.p, c->text.n, reply_finish(ev->finish));
    if (c->sse) {
        stream_flush(c, 1);
        buf_t tj = {0};
        obs_trace_json(o, now, &tj); /* the full timings: "barista_timings" */
        stream_close(c, fin, &u, tj.p, tj.n);
        buf_free(&tj);
        client_take(c);
        sse_end(c->sse);
    } else if (fin == OAI_FINISH_TIMEOUT) {
        /* cut short (deadline, shutdown) before any byte went out */
        reply_error(client_take(c), 503, "server_error", "unavailable", NULL,
                    "The generation was stopped (server shutting down) before it finished.");
    } else {
        buf_t out = {0};
        if (c->n_choices > 1) {
            oai_choice_t ch[OAI_N_MAX];
            for (int i = 0; i < c->n_choices; i++) {
                lp_list_t *l = *ch_lp(c, i);
                ch[i] = (oai_choice_t){ch_text(c, i)->p ? ch_text(c, i)->p : "", ch_text(c, i)->n,
                                       c->ended[i] ? reply_finish(c->ended[i]) : fin,
                                       lp_list_items(l), lp_list_n(l)};
            }
            reply_json_n(&out, &c->resp, ch, c->n_choices, &u, c->want_lp);
        } else {
            reply_json(&out, &c->resp, c->text.p, c->text.n, fin, &u, lp_list_items(c->lp),
                       lp_list_n(c->lp), c->want_lp);
        }
        char hdr[512];
        cache_headers(c, c->xcache, NULL, 0, hdr, sizeof hdr);
        srv_respond(client_take(c), 200, "application/json", out.p, out.n, hdr);
        buf_free(&out);
    }
}

static void on_start(gen_t *g)
{
    g->started = 1;
    g->created = time_now_unix();
    for (client_t *c = g->clients, *next; c; c = next) {
        next = c->next;
        if (c->r) client_start(c); /* may free c */
    }
}

/* n > 1: one choice ended; a stream gets its finish chunk now. */
static void on_choice_end(gen_t *g, const bk_event_t *ev)
{
    int i = ev->index;
    if (i < 0 || i >= g->n_choices || i >= OAI_N_MAX) return;
    if (g->rec)
        cache_rec_end_choice(g->rec, i,
                             ev->finish == BK_FINISH_STOP     ? CACHE_FINISH_STOP
                             : ev->finish == BK_FINISH_LENGTH ? CACHE_FINISH_LENGTH
                                                              : CACHE_FINISH_NONE);
    for (client_t *c = g->clients, *next; c; c = next) {
        next = c->next;
        if (!c->r || !c->started || i >= c->n_choices) continue;
        c->ended[i] = (unsigned char)ev->finish;
        if (!c->sse) continue;
        stream_flush(c, 1);
        buf_t out = {0};
        reply_sse_choice_end(&out, &c->resp, i, reply_finish(ev->finish));
        write_sse(c, &out);
    }
}

static void on_delta(gen_t *g, const bk_event_t *ev)
{
    if (g->rec) cache_rec_add_choice(g->rec, ev->index, ev->text, ev->text_len, ev->lp, ev->n_lp);
    for (client_t *c = g->clients, *next; c; c = next) {
        next = c->next;
        if (!c->r || !c->started) continue;
        if (client_push(c, ev->index, ev->text, ev->text_len, ev->lp, ev->n_lp)) {
            /* this client's reply would miss a piece: fail it, never finish it */
            oai_err_t e;
            oai_err(&e, 500, "server_error", NULL, NULL, "out of memory");
            client_fail(c, &e);
            client_leave(c, "error");
            continue;
        }
        if (ev->text_len || ev->n_lp) {
            int first = !c->got_tok;
            c->got_tok = 1;
            c->last_tok = time_now_mono();
            if (first) obs_trace_first_token(srv_req_obs(c->r), c->last_tok);
            /* the first-token budget is met; a stream's stall bound restarts */
            if ((first && c->ttft_deadline > 0) || (c->stream && c->itl_s > 0))
                client_arm_deadline(c);
        }
        if (c->sse) stream_flush(c, 0); /* may free c */
    }
}

static void on_done(gen_t *g, const bk_event_t *ev)
{
    api_t *a = g->a;
    obs_metrics_tokens(a->metrics, ev->n_prompt, ev->n_gen, ev->n_cached);
    if (ev->t_first_token > 0) obs_metrics_ttft(a->metrics, ev->t_first_token);
    /* only completed replies are stored: never errors, cancels, timeouts */
    int complete = ev->finish == BK_FINISH_STOP || ev->finish == BK_FINISH_LENGTH;
    if (g->rec && complete && g->started && api_cache_storing(a->cache) && !g->cq.no_store) {
        cache_meta_t m = {0};
        m.key = g->cq.key;
        m.ns = g->cq.ns;
        m.model = g->m->cfg.name;
        m.created = g->created;
        m.stored_ms = api_cache_now_ms();
        m.ttl_ms = api_cache_ttl_ms(a->cache, &g->cq);
        m.finish = ev->finish == BK_FINISH_STOP ? CACHE_FINISH_STOP : CACHE_FINISH_LENGTH;
        m.prompt_tokens = ev->n_prompt;
        m.completion_tokens = ev->n_gen;
        m.cached_tokens = ev->n_cached;
        cache_entry_t *e = cache_rec_build(g->rec, &m);
        if (e && e->finish == CACHE_FINISH_NONE) { /* a choice was cut short */
            cache_entry_release(e);
            e = NULL;
        }
        if (e) {
            api_cache_store(a->cache, e, &g->cq);
            api_sem_store(a, &g->cq, g->sem);
            cache_entry_release(e);
        }
    }
    gen_sf_finish(g);
    int cut = ev->finish == BK_FINISH_CANCELLED || ev->finish == BK_FINISH_TIMEOUT;
    int stopping = a->destroyed || (a->srv && srv_shutting_down(a->srv));
    while (g->clients) {
        client_t *c = g->clients;
        g->clients = c->next;
        c->next = NULL;
        c->g = NULL;
        if (!c->r) {
            client_free(c);
        } else if (cut && !stopping && (!c->started || (!c->sse && choices_pending(c) == 0))) {
            /* a joiner whose leader was cancelled: a fresh generation */
            buf_clear(&c->text);
            if (c->lp) lp_list_clear(c->lp);
            choices_free(c);
            c->started = 0;
            gen_start(c);
        } else if (!g->started) {
            oai_err_t e;
            start_error(ev, c, &e);
            reply_send_error(client_take(c), &e);
            client_free(c);
        } else {
            finish_client(c, ev);
            client_free(c);
        }
    }
    gen_free(g);
}

static void on_event(void *user, const bk_event_t *ev)
{
    gen_t *g = user;
    if (ev->type == BK_EV_START)
        on_start(g);
    else if (ev->type == BK_EV_DELTA)
        on_delta(g, ev);
    else if (ev->type == BK_EV_CHOICE_END)
        on_choice_end(g, ev);
    else
        on_done(g, ev);
}

/* ---- starting and joining ---- */

/* The backend's answer to a refused submit, as an OpenAI error. */
static void submit_error(const client_t *c, int rc, const char *msg, oai_err_t *e)
{
    bk_event_t ev = {0};
    ev.finish = BK_FINISH_ERROR;
    ev.err = rc;
    ev.status = rc == BAR_ERR_BUSY ? 503 : rc == BAR_ERR_NOMEM ? 500 : 400;
    ev.msg = msg;
    start_error(&ev, c, e);
}

void gen_start(client_t *c)
{
    api_t *a = c->a;
    oai_err_t err;
    if (!c->m->bk) {
        oai_err(&err, 503, "server_error", "model_not_ready", NULL,
                "The model '%s' is still loading; retry when GET /ready answers 200.",
                c->m->cfg.name);
        goto fail;
    }
    gen_t *g = calloc(1, sizeof *g);
    if (!g) {
        oai_err(&err, 500, "server_error", NULL, NULL, "out of memory");
        goto fail;
    }
    g->a = a;
    g->m = c->m;
    g->want_lp = c->q.logprobs;
    g->n_choices = c->q.n > 1 ? c->q.n : 1;
    g->clients = c;
    c->g = g;
    g->sem = c->sem; /* the reply is stored under the leader's query */
    c->sem = NULL;
    if (c->cq.cacheable) {
        sf_t *sf = api_sf(a);
        g->cq = c->cq;
        g->rec = cache_rec_create(c->q.logprobs);
        if (sf && !c->cq.no_cache) {
            g->sfe = sf_begin(sf, &g->cq.key, g);
            if (g->sfe && sf_join(g->sfe, c)) {
                sf_finish(sf, g->sfe);
                g->sfe = NULL;
            }
        }
        if (!c->xcache) {
            c->xcache = "MISS";
            api_cache_count(a->cache, API_CACHE_MISS);
        }
    }
    bk_req_t br;
    bk_msg_t *msgs = NULL;
    char tenant[17] = ""; /* the namespace id: the engine's prefix-cache salt */
    snprintf(tenant, sizeof tenant, "%016llx", (unsigned long long)c->tenant.ns);
    if (api_model_backend_req(c->m, &c->q, c->r ? srv_req_http(c->r)->body.n : 0, tenant, &br,
                              &msgs) < 0) {
        free(msgs);
        oai_err(&err, 500, "server_error", NULL, NULL, "out of memory");
        goto fail_gen;
    }
    br.cb = on_event;
    br.user = g;
    bar_msg_t m = {{0}};
    int rc = bk_submit(c->m->bk, &br, &g->job, &m);
    free(msgs);
    if (rc) {
        submit_error(c, rc, m.text, &err);
        goto fail_gen;
    }
    g->next = a->gens;
    if (a->gens) a->gens->prev = g;
    a->gens = g;
    a->n_gens++;
    srv_req_set_user(c->r, c, on_abort, on_drain);
    return;

fail_gen:
    gen_sf_finish(g);
    cache_rec_destroy(g->rec);
    api_sem_free(g->sem);
    c->g = NULL;
    free(g);
fail:
    reply_send_error(client_take(c), &err);
    client_free(c);
}

void gen_join(client_t *c, sf_entry_t *sfe)
{
    gen_t *g = sf_data(sfe);
    if (sf_join(sfe, c)) {
        gen_start(c);
        return;
    }
    c->g = g;
    client_t **pp = &g->clients;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    c->xcache = "COALESCED";
    api_cache_count(c->a->cache, API_CACHE_COALESCED);
    srv_req_set_user(c->r, c, on_abort, on_drain);
    if (g->started) client_start(c);
}

void client_wait(client_t *c)
{
    srv_req_set_user(c->r, c, on_abort, on_drain);
}
