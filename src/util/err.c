/* err.c — the bar_strerror table and bar_fail helper (see err.h). */
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *bar_strerror(int err)
{
    switch (err) {
    case BAR_OK:
        return "ok";
    case BAR_ERR_NOMEM:
        return "out of memory";
    case BAR_ERR_IO:
        return "I/O error";
    case BAR_ERR_FORMAT:
        return "malformed data";
    case BAR_ERR_UNSUPPORTED:
        return "unsupported";
    case BAR_ERR_INVALID:
        return "invalid argument";
    case BAR_ERR_RANGE:
        return "out of range";
    case BAR_ERR_NOTFOUND:
        return "not found";
    case BAR_ERR_BUSY:
        return "busy";
    case BAR_ERR_TIMEOUT:
        return "timed out";
    case BAR_ERR_CANCELLED:
        return "cancelled";
    case BAR_ERR_INTERNAL:
        return "internal error";
    default:
        return "unknown error";
    }
}

int bar_fail(bar_msg_t *msg, int err, const char *fmt, ...)
{
    if (msg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg->text, sizeof msg->text, fmt, ap);
        va_end(ap);
    }
    return err;
}
