/* batches_int.h — what the three files of the Batch API share: the batch
 * and line structs, their states, and the calls between the HTTP handlers
 * (batches.c), the runner (batches_run.c: lines, scheduling, results,
 * finishing) and the state on disk (batches_state.c: the batch object, its
 * state file, reading a batch's input, loading the records at start). Not a
 * public interface (api_int.h declares batches_*). */
#ifndef BARISTA_API_BATCHES_INT_H
#define BARISTA_API_BATCHES_INT_H

#include <stddef.h>

#include "api/api_int.h"

#define TICK_MS 100          /* the runner's tick: start lines, expire batches */
#define RETRY_S 1.0          /* a line put back (503, 429, shutdown) waits this long */
#define WINDOW_S (24 * 3600) /* completion_window "24h" */

typedef enum {
    B_VALIDATING,
    B_FAILED,
    B_IN_PROGRESS,
    B_FINALIZING,
    B_COMPLETED,
    B_EXPIRED,
    B_CANCELLING,
    B_CANCELLED,
} bstate_t;

/* The status names, by bstate_t (OpenAI's spelling). */
extern const char *const batch_state_name[8];

typedef struct batch batch_t;

typedef enum { L_TODO, L_RUNNING, L_WRITING, L_DONE } lstate_t;

typedef struct {
    batch_t *b;
    char custom_id[128];
    char *body;
    size_t body_len;
    lstate_t st;
    double retry_at; /* monotonic; a 503 waits until then */
    srv_req_t *r;    /* while running */
} bline_t;

struct batch {
    batch_t *next;
    batches_t *bs;
    char id[48], owner[API_OWNER_LEN + 1], input_file_id[48], endpoint[32];
    bstate_t st;
    long created_at, in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at,
        cancelling_at, cancelled_at;
    char output_file_id[64], error_file_id[64];
    int total, n_ok, n_fail;
    char *errors;   /* the "errors" object as JSON, or NULL */
    char *metadata; /* the "metadata" object as JSON, or NULL */
    char *auth, *xns;
    /* running */
    bline_t *lines;
    int n_lines;
    int running, writing, loading;
    int out_fd, err_fd;
};

struct batches {
    api_t *a;
    batch_t *list; /* newest first */
    uv_timer_t tick;
    int stopping;
    int running;                              /* lines in flight, all batches */
    int started;                              /* the tick timer exists */
    unsigned long long n_ok, n_fail, n_retry; /* lines, since start */
};

/* ---- batches_state.c: the batch object and its state on disk ---- */

/* The batch object as JSON into b (private: also the members only the state
 * file keeps: owner, auth, X-Cache-Namespace). */
void batch_json(buf_t *b, const batch_t *x, int private);
/* Path of x's file with suffix (".json" state, ".out"/".err" results). */
void batch_path(const api_t *a, const batch_t *x, const char *suffix, char *out, size_t size);
/* Rewrite x's state file (small; on the loop); a failure is logged. */
void batch_persist(api_t *a, const batch_t *x);
/* Free x's lines and close its result files (x stays). */
void batch_lines_free(batch_t *x);
/* Free x and everything it owns. */
void batch_free(batch_t *x);
/* Whether x has not ended yet (validating .. cancelling). */
int batch_active(const batch_t *x);
/* One piece of background work of a's ended. */
void batches_work_done(api_t *a);
/* Read x's input on the thread pool (resuming: skip the custom_ids its
 * result files already hold), then start it or fail it. */
void batch_load(api_t *a, batch_t *x);

/* ---- batches_run.c: the runner ---- */

/* Everything that will be written is: publish the results, reach the end
 * state (completed, or cancelled/expired as decided before). */
void batch_finish(api_t *a, batch_t *x);
/* Abort x's running lines; they are to do again and their line_done never
 * comes (cancel, shutdown). */
void batch_abort_lines(batch_t *x);
/* End x as failed with one error (code, msg). */
void batch_fail(api_t *a, batch_t *x, const char *code, const char *msg);
/* Finish x if cancelling or when every line is done. */
void batch_maybe_done(api_t *a, batch_t *x);
/* Start the lines that may run now (idle capacity only). */
void batches_pump(batches_t *bs);

#endif
