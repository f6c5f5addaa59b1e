/* backend_local_cost.c — the local backend's online cost model (loop
 * thread only): the prefill cost per prompt token, the time between a
 * sequence's tokens by batch size, the length answers run to, and from them
 * the wait for a place and the expected first and last token of a request
 * that admission judges (bk_estimate). Not for: the queue, jobs
 * and events (backend_local.c). */
#include <stdlib.h>
#include <string.h>

#include "backend/backend_local_int.h"
#include "util/timeutil.h"

static double ewma(double old, double x)
{
    return old > 0 ? 0.8 * old + 0.2 * x : x;
}

#define TPOT_WINDOW 0.005 /* seconds: tokens that come in a burst are averaged over their gap */

/* A token reached the loop: update the cost model. Tokens reach the loop in
 * bursts when the loop or the engine thread was descheduled, so one sample
 * is the time since the last sample over the tokens that came in it, taken
 * once at least TPOT_WINDOW passed: a burst of k tokens after a gap G is
 * G/k each, not G, 0, ..., 0 (which made a loaded machine look fast). */
static double tpot_at(const local_t *b, int k);

void lcost_token(local_t *b, job_t *j, const qev_t *q)
{
    double now = time_now_mono();
    if (j->n_gen == 0) {
        /* a job that did not wait: its first token took its prefill */
        if (!j->waited && q->n_prompt > 0 && q->t_first_token > 0)
            b->prefill_tok = ewma(b->prefill_tok, q->t_first_token / q->n_prompt);
        j->t_last = now;
        j->n_since = 0;
        if (!j->decoding) {
            j->decoding = 1;
            b->n_decoding++;
        }
    } else {
        j->n_since++;
        if (now - j->t_last >= TPOT_WINDOW) {
            double dt = now - j->t_last, x = dt / j->n_since;
            b->tpot = ewma(b->tpot, x);
            /* the batch it ran in: the decoding jobs, at most the running places */
            int k = b->n_decoding < b->n_seq_max ? b->n_decoding : b->n_seq_max;
            if (k < 1) k = 1;
            if (k > BATCH_MAX) k = BATCH_MAX;
            /* seconds over tokens in the last ~STEP_TAU seconds of
             * decoding (both sums decay), not an average of the last few
             * samples: prefill chunks make some steps much longer than
             * others, and a request's tokens see the mix. k sequences sample
             * the same steps, so the decay is per tau k. A gap of a parked
             * (pre-empted) sequence is not a step: a sample counts at most 3
             * times the estimate. */
            if (b->step_n[k] && dt > 3 * b->step[k] * j->n_since) dt = 3 * b->step[k] * j->n_since;
            double f = 1 / (1 + dt / (STEP_TAU * k));
            b->step_d[k] = b->step_d[k] * f + dt;
            b->step_t[k] = b->step_t[k] * f + j->n_since;
            b->step[k] = b->step_d[k] / b->step_t[k];
            b->step_n[k]++;
            b->batch_avg = b->batch_avg > 0 ? 0.95 * b->batch_avg + 0.05 * k : k;
            j->t_last = now;
            j->n_since = 0;
        }
    }
    j->n_gen++;
}

/* A job ended (DONE, q): a request that could stop early (no ignore_eos)
 * and had no cap below the server's default tells how long answers run. */
void lcost_done(local_t *b, const job_t *j, const qev_t *q)
{
    if (j->n_choices < 1) return;
    int per = q->n_gen / j->n_choices;
    if (j->sp.ignore_eos) return;
    int natural = q->finish == ENGINE_FINISH_STOP ||
                  (q->finish == ENGINE_FINISH_LENGTH && j->sp.max_tokens >= b->max_tokens_default);
    if (!natural || per <= 0) return;
    if (b->out_mean <= 0) {
        b->out_mean = per;
        b->out_dev = per / 2.0;
        return;
    }
    double d = per > b->out_mean ? per - b->out_mean : b->out_mean - per;
    b->out_dev = 0.9 * b->out_dev + 0.1 * d;
    b->out_mean = 0.9 * b->out_mean + 0.1 * per;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seconds per token with k sequences decoding together. A batch size
 * measured STEP_MIN times answers for itself; between and beyond measured
 * sizes a least-squares line t = a + c k through them (c >= 0) answers,
 * kept within the two bounds that hold on any hardware: more sequences never
 * make a step faster (t(k) >= t(j) for a measured j < k), and batching never
 * costs more than running them one after the other (t(k) <= t(j) k / j).
 * With one measured size those bounds alone decide: the larger size gets the
 * proportional, pessimistic bound until it is measured. Nothing measured by
 * size yet: the overall EWMA. */
static double tpot_at(const local_t *b, int k)
{
    int ns = b->n_seq_max < BATCH_MAX ? b->n_seq_max : BATCH_MAX;
    if (k > ns) k = ns;
    if (k < 1) k = 1;
    if (b->step_n[k] >= STEP_MIN) return b->step[k];
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    double lo = 0, hi = 0; /* the bounds from the measured sizes */
    int m = 0;
    for (int i = 1; i <= ns; i++) {
        if (b->step_n[i] < STEP_MIN) continue;
        double w = b->step_n[i] < 50 ? b->step_n[i] : 50, t = b->step[i];
        sw += w, sx += w * i, sy += w * t, sxx += w * i * i, sxy += w * i * t;
        m++;
        if (i < k && t > lo) lo = t;                              /* never faster */
        if (i < k && (hi == 0 || t * k / i < hi)) hi = t * k / i; /* never worse than serial */
        if (i > k && (hi == 0 || t < hi)) hi = t;                 /* fewer: never slower */
        if (i > k && t * k / i > lo) lo = t * k / i;
    }
    if (m == 0) return b->tpot;
    double t = lo > 0 ? lo : hi;
    double den = sw * sxx - sx * sx;
    if (m >= 2 && den > 0) {
        double c = (sw * sxy - sx * sy) / den;
        if (c < 0) c = 0;
        double a = (sy - c * sx) / sw;
        t = a + c * k;
    } else if (hi > 0) {
        t = hi; /* one size measured: the pessimistic bound */
    }
    if (t < lo) t = lo;
    if (hi > 0 && t > hi) t = hi;
    return t;
}

/* The earliest free place of slot[0..ns) (ascending) takes svc seconds of
 * work; the order is kept. */
static void take_slot(double *slot, int ns, double svc)
{
    slot[0] += svc;
    for (int i = 1; i < ns && slot[i - 1] > slot[i]; i++) {
        double t = slot[i - 1];
        slot[i - 1] = slot[i];
        slot[i] = t;
    }
}

/* Seconds until a request of priority prio submitted now would have n_seq
 * decoding places: the running jobs finish after their remaining tokens
 * (max_tokens bound: an upper estimate) at the step time with every place
 * taken, the waiting jobs ahead of it take places in order for their prefill
 * and tokens. Work of a lower class (a higher prio number) is not in its
 * way: the engine pre-empts running lower-class sequences into its parking
 * places (as many as are free) and serves waiting ones after it. 0 while
 * nothing was measured. */
double lcost_wait(local_t *b, int prio, int n_seq)
{
    if (b->tpot <= 0 || b->n_seq_max <= 0) return 0;
    int ns = b->n_seq_max < BATCH_MAX ? b->n_seq_max : BATCH_MAX, k = 0;
    double slot[BATCH_MAX], tpot = tpot_at(b, ns);
    double behind = 0; /* started work ahead of it beyond the places (parked, resuming first) */
    int started = 0;
    for (job_t *j = b->jobs; j; j = j->next)
        if (j->n_gen > 0 && !j->cancelled) started++;
    int parking = ns - (started > ns ? started - ns : 0); /* free parking places */
    for (job_t *j = b->jobs; j; j = j->next) {
        if (j->n_gen <= 0 || j->cancelled) continue; /* a cancelled one ends within a step */
        if (j->priority > prio && parking > 0) {
            parking--; /* pre-empted for it */
            continue;
        }
        int left = j->sp.max_tokens - j->n_gen;
        double t = (left > 0 ? left : 0) * tpot;
        if (k < ns)
            slot[k++] = t;
        else
            behind += t;
    }
    while (k < ns)
        slot[k++] = 0;
    qsort(slot, (size_t)ns, sizeof *slot, cmp_dbl);
    /* the parked work beyond the places first, then the waiting jobs ahead
     * of it, oldest first (the list is newest first) */
    take_slot(slot, ns, behind);
    job_t *last = NULL;
    for (job_t *j = b->jobs; j; j = j->next)
        last = j;
    for (job_t *j = last; j; j = j->prev) {
        if (j->n_gen > 0 || j->cancelled || j->priority > prio) continue;
        int mt = j->sp.max_tokens > 0 ? j->sp.max_tokens : b->max_tokens_default;
        take_slot(slot, ns, (double)j->n_tok * b->prefill_tok + mt * tpot);
    }
    int need = n_seq < 1 ? 1 : n_seq > ns ? ns : n_seq;
    return slot[need - 1];
}

/* A safety factor on the time per token admission counts: the step time is
 * an average over the last seconds, and a machine shared with other work
 * swings around it. */
#define ADMIT_TPOT_SAFETY 1.25

/* The sequences a request submitted now decodes alongside (itself
 * included): those decoding now, those waiting (they start soon), its own;
 * at least the concurrency tokens saw lately (arrivals keep coming); every
 * place when it has to wait. */
static int batch_for(const local_t *b, int n_seq, double wait)
{
    int ns = b->n_seq_max < BATCH_MAX ? b->n_seq_max : BATCH_MAX;
    int waiting = 0;
    for (const job_t *j = b->jobs; j; j = j->next)
        if (j->n_gen <= 0 && !j->cancelled) waiting++;
    int k = (b->n_decoding < ns ? b->n_decoding : ns) + waiting + n_seq;
    if (k < (int)(b->batch_avg + 0.5)) k = (int)(b->batch_avg + 0.5);
    if (wait > 0 || k > ns) k = ns;
    return k;
}

void lcost_estimate(local_t *b, const bk_est_in_t *in, bk_est_t *out)
{
    memset(out, 0, sizeof *out);
    if (b->tpot <= 0 || b->n_seq_max <= 0) return;
    int n_seq = in->n_seq > 1 ? in->n_seq : 1;
    out->known = 1;
    out->wait = lcost_wait(b, in->priority, n_seq);
    int k = batch_for(b, n_seq, out->wait);
    out->batch = k;
    out->tpot = tpot_at(b, k) * ADMIT_TPOT_SAFETY;
    out->first = out->wait + in->n_prompt * b->prefill_tok;
    out->done = out->first + (double)(in->n_out > 1 ? in->n_out - 1 : 0) * out->tpot;
}
