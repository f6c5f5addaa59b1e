/* timeutil.h — one monotonic clock for every deadline and duration. */
#ifndef BARISTA_UTIL_TIMEUTIL_H
#define BARISTA_UTIL_TIMEUTIL_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC. */
static inline double time_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds since the epoch (for OpenAI `created` fields only). */
static inline long time_now_unix(void)
{
    return (long)time(NULL);
}

#endif
