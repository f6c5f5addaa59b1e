/* balance.c — replica health and routing (see balance.h). */
#include "control/balance.h"

#include <math.h>

#define EWMA_TAU 10.0   /* seconds: decay of the peak-EWMA latency */
#define EWMA_FLOOR 1e-3 /* seconds: a replica never measured costs this */

const double bal_hist_le[BAL_HIST_N] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,    2.5,   5,    10,  30};

void bal_hist_observe(bal_hist_t *h, double v)
{
    for (int i = 0; i < BAL_HIST_N; i++)
        if (v <= bal_hist_le[i]) h->counts[i]++;
    h->n++;
    h->sum += v;
}

static long long minute_of(double now)
{
    return (long long)floor(now / 60.0);
}

int bal_over_limit(const bal_rep_t *r, double now)
{
    if (r->minute != minute_of(now)) return 0; /* a new minute: nothing counted yet */
    return (r->rpm > 0 && r->min_req >= r->rpm) || (r->tpm > 0 && r->min_tok >= r->tpm);
}

void bal_count(bal_rep_t *r, int n_req, long long n_tok, double now)
{
    long long m = minute_of(now);
    if (r->minute != m) {
        r->minute = m;
        r->min_req = 0;
        r->min_tok = 0;
    }
    r->min_req += n_req;
    r->min_tok += n_tok;
}

double bal_limit_reset(double now)
{
    return (double)(minute_of(now) + 1) * 60.0 - now;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int bal_eligible(const bal_rep_t *r, double now)
{
    if (r->until == 0) return 1;
    if (now < r->until) return 0;
    return !r->probing; /* half-open: one trial at a time */
}

double bal_cost(const bal_rep_t *r, double now)
{
    double e = r->ewma;
    if (r->t_ewma > 0 && now > r->t_ewma) e *= exp(-(now - r->t_ewma) / EWMA_TAU);
    if (e < EWMA_FLOOR) e = EWMA_FLOOR;
    return e * (r->inflight + 1);
}

/* Peak EWMA: a slower sample replaces the average at once, faster ones
 * pull it down with a weight that grows with the time since the last. */
void bal_observe(bal_rep_t *r, double rtt, double now)
{
    if (rtt > r->ewma || r->t_ewma == 0) {
        r->ewma = rtt;
    } else {
        double w = exp(-(now - r->t_ewma) / EWMA_TAU);
        r->ewma = r->ewma * w + rtt * (1 - w);
    }
    r->t_ewma = now;
}

void bal_ok(bal_rep_t *r)
{
    r->fails = 0;
    r->n_eject = 0;
    r->until = 0;
    r->probing = 0;
    r->n_ok++;
}

double bal_fail(bal_rep_t *r, double now, int allowed_fails, double cooldown)
{
    /* a replica that fails fast must not look fast to P2C */
    bal_observe(r, r->ewma > BAL_FAIL_PENALTY ? r->ewma : BAL_FAIL_PENALTY, now);
    r->n_err++;
    r->fails++;
    int half_open = r->until > 0;
    if (!half_open && r->fails < allowed_fails) return 0;
    if (r->n_eject < 30) r->n_eject++;
    r->n_ejections++;
    double f = r->n_eject > 1 ? pow(2, r->n_eject - 1) : 1;
    if (f > BAL_EJECT_MAX_FACTOR) f = BAL_EJECT_MAX_FACTOR;
    r->until = now + cooldown * f;
    r->probing = 0;
    return cooldown * f;
}

int bal_pick(bal_rep_t *const *reps, int n_reps, unsigned tried, model_route_t strategy,
             uint64_t *rng, double now)
{
    int cand[BAL_MAX_REPS], n = 0, n_any = 0, any[BAL_MAX_REPS];
    for (int i = 0; i < n_reps && n_any < BAL_MAX_REPS; i++) {
        if (i < 32 && (tried & (1u << i))) continue;
        if (bal_over_limit(reps[i], now)) continue; /* not even in panic routing */
        any[n_any++] = i;
        if (bal_eligible(reps[i], now)) cand[n++] = i;
    }
    if (n_any == 0) return -1;
    if (n == 0) { /* all ejected: panic routing to the one back soonest */
        int best = any[0];
        for (int k = 1; k < n_any; k++)
            if (reps[any[k]]->until < reps[best]->until) best = any[k];
        return best;
    }
    if (n == 1) return cand[0];
    for (int k = 0; k < n; k++) /* a replica whose cooldown ended gets its trial first */
        if (reps[cand[k]]->until > 0) return cand[k];
    if (strategy == ROUTE_SHUFFLE) {
        double tot = 0;
        for (int k = 0; k < n; k++)
            tot += reps[cand[k]]->weight;
        double x = (double)(rnd(rng) >> 11) / 9007199254740992.0 * tot;
        for (int k = 0; k < n; k++) {
            x -= reps[cand[k]]->weight;
            if (x < 0) return cand[k];
        }
        return cand[n - 1];
    }
    if (strategy == ROUTE_LEAST_BUSY) {
        int best = cand[rnd(rng) % (uint64_t)n];
        for (int k = 0; k < n; k++)
            if (reps[cand[k]]->inflight < reps[best]->inflight) best = cand[k];
        return best;
    }
    int a = (int)(rnd(rng) % (uint64_t)n), b = (int)(rnd(rng) % (uint64_t)(n - 1));
    if (b >= a) b++;
    return bal_cost(reps[cand[a]], now) <= bal_cost(reps[cand[b]], now) ? cand[a] : cand[b];
}
