/* ratelimit.c — the local rate limiter: one GCRA per per-minute limit and a
 * counter of requests in flight, per tenant, in a small open-addressing
 * table by name. Not for: Redis (ratelimit_redis.c), HTTP (src/api/). */
#include "control/ratelimit.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rl_state {
    char name[TENANT_NAME_MAX];
    double tat_req, tat_tok; /* theoretical arrival times (monotonic seconds) */
    int inflight;
};

struct rl {
    rl_state_t **tab; /* open addressing, power-of-two capacity, never shrinks */
    size_t cap, n;
};

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

rl_t *rl_create(void)
{
    rl_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cap = 16;
    r->tab = calloc(r->cap, sizeof *r->tab);
    if (!r->tab) {
        free(r);
        return NULL;
    }
    return r;
}

void rl_destroy(rl_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->cap; i++)
        free(r->tab[i]);
    free(r->tab);
    free(r);
}

static int grow(rl_t *r)
{
    size_t cap = r->cap * 2;
    rl_state_t **t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < r->cap; i++) {
        if (!r->tab[i]) continue;
        size_t j = hash_name(r->tab[i]->name) & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = r->tab[i];
    }
    free(r->tab);
    r->tab = t;
    r->cap = cap;
    return 0;
}

rl_state_t *rl_state(rl_t *r, const char *name)
{
    size_t j = hash_name(name) & (r->cap - 1);
    while (r->tab[j]) {
        if (!strcmp(r->tab[j]->name, name)) return r->tab[j];
        j = (j + 1) & (r->cap - 1);
    }
    if ((r->n + 1) * 2 > r->cap) {
        if (grow(r)) return NULL;
        return rl_state(r, name);
    }
    rl_state_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    snprintf(s->name, sizeof s->name, "%s", name);
    r->tab[j] = s;
    r->n++;
    return s;
}

/* One GCRA check: a limit of `lim` per window, `cost` units now. The new
 * TAT in *tat_out; 0 when it conforms, else the seconds until it would. */
static double gcra(double tat, long long lim, long long cost, double now, double *tat_out)
{
    double t = RL_WINDOW_S / (double)lim; /* emission interval */
    double base = tat > now ? tat : now;
    double next = base + (double)cost * t;
    *tat_out = next;
    double over = next - now - RL_WINDOW_S;
    return over > 1e-9 ? over : 0;
}

static long long remaining(double tat, long long lim, double now)
{
    double t = RL_WINDOW_S / (double)lim;
    double used = tat > now ? tat - now : 0;
    double rem = floor((RL_WINDOW_S - used) / t + 1e-9);
    if (rem < 0) rem = 0;
    if (rem > (double)lim) rem = (double)lim;
    return (long long)rem;
}

static void fill(const rl_state_t *s, const tenant_limits_t *lim, double now, rl_verdict_t *v)
{
    v->lim_req = lim->rpm;
    v->lim_tok = lim->tpm;
    if (lim->rpm > 0) {
        v->rem_req = remaining(s->tat_req, lim->rpm, now);
        v->reset_req_s = s->tat_req > now ? s->tat_req - now : 0;
    }
    if (lim->tpm > 0) {
        v->rem_tok = remaining(s->tat_tok, lim->tpm, now);
        v->reset_tok_s = s->tat_tok > now ? s->tat_tok - now : 0;
    }
}

void rl_peek(const rl_state_t *s, const tenant_limits_t *lim, double now, rl_verdict_t *v)
{
    memset(v, 0, sizeof *v);
    fill(s, lim, now, v);
}

rl_what_t rl_admit(rl_state_t *s, const tenant_limits_t *lim, long long tokens, double now,
                   rl_verdict_t *v)
{
    memset(v, 0, sizeof *v);
    if (tokens < 0) tokens = 0;
    double nreq = s->tat_req, ntok = s->tat_tok;
    if (lim->max_concurrency > 0 && s->inflight >= lim->max_concurrency) {
        v->refused = RL_CONCURRENCY;
        v->retry_s = 1;
    }
    if (!v->refused && lim->rpm > 0) {
        double w = gcra(s->tat_req, lim->rpm, 1, now, &nreq);
        if (w > 0) {
            v->refused = RL_REQUESTS;
            v->retry_s = w;
        }
    }
    if (!v->refused && lim->tpm > 0) {
        if (tokens > lim->tpm) {
            v->refused = RL_TOKENS;
            v->too_large = 1;
            v->retry_s = RL_WINDOW_S;
        } else {
            double w = gcra(s->tat_tok, lim->tpm, tokens, now, &ntok);
            if (w > 0) {
                v->refused = RL_TOKENS;
                v->retry_s = w;
            }
        }
    }
    if (!v->refused) {
        s->tat_req = nreq;
        s->tat_tok = ntok;
        if (lim->max_concurrency > 0) s->inflight++;
    }
    fill(s, lim, now, v);
    return v->refused;
}

void rl_settle(rl_state_t *s, const tenant_limits_t *lim, long long reserved, long long used,
               double now)
{
    if (lim->max_concurrency > 0 && s->inflight > 0) s->inflight--;
    if (lim->tpm <= 0 || used < 0 || used == reserved) return;
    double t = RL_WINDOW_S / (double)lim->tpm;
    double base = s->tat_tok > now ? s->tat_tok : now;
    s->tat_tok = base + (double)(used - reserved) * t;
    if (s->tat_tok < now) s->tat_tok = now; /* a refund never banks more than a full bucket */
}

int rl_inflight(const rl_state_t *s)
{
    return s->inflight;
}

void rl_duration(double s, char *out, size_t size)
{
    if (s < 0) s = 0;
    if (s < 1) {
        snprintf(out, size, "%dms", (int)ceil(s * 1e3));
        return;
    }
    if (s < 60) {
        snprintf(out, size, "%.3gs", s);
        return;
    }
    int m = (int)(s / 60);
    snprintf(out, size, "%dm%ds", m, (int)ceil(s - m * 60.0 - 1e-9));
}

void rl_headers(const rl_verdict_t *v, char *out, size_t size)
{
    size_t n = 0;
    out[0] = '\0';
    char d[32];
    if (v->lim_req > 0) {
        rl_duration(v->reset_req_s, d, sizeof d);
        n += (size_t)snprintf(out + n, size - n,
                              "x-ratelimit-limit-requests: %lld\r\n"
                              "x-ratelimit-remaining-requests: %lld\r\n"
                              "x-ratelimit-reset-requests: %s\r\n",
                              v->lim_req, v->rem_req, d);
        if (n >= size) n = size - 1;
    }
    if (v->lim_tok > 0) {
        rl_duration(v->reset_tok_s, d, sizeof d);
        snprintf(out + n, size - n,
                 "x-ratelimit-limit-tokens: %lld\r\n"
                 "x-ratelimit-remaining-tokens: %lld\r\n"
                 "x-ratelimit-reset-tokens: %s\r\n",
                 v->lim_tok, v->rem_tok, d);
    }
}
