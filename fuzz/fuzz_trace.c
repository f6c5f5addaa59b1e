/* fuzz_trace.c — libFuzzer target for what a client controls in a request's
 * trace (src/obs/trace.c, src/obs/access_log.c): the X-Request-Id bytes, and
 * the strings that end up in the access log (model, tenant, path).
 *
 * The input is split at its first 0xff byte: before it the X-Request-Id, after
 * it a string used as model name and path. An id is echoed only when valid
 * (1..128 printable ASCII bytes without spaces); a generated one is 32 hex
 * digits. The Server-Timing header must be one header line (no CR/LF inside);
 * the access-log writer escapes every client string (ASan/UBSan check it).
 * Not for: anything but fuzzing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "obs/access_log.h"
#include "obs/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *cut = memchr(data, 0xff, size);
    size_t idn = cut ? (size_t)(cut - data) : size;
    const char *rest = cut ? (const char *)cut + 1 : "";
    size_t rn = cut ? size - idn - 1 : 0;
    obs_idgen_t g;
    obs_idgen_init(&g);
    obs_trace_t t;
    obs_trace_begin(&t, 1.0, (const char *)data, idn, &g);
    int valid = obs_id_valid((const char *)data, idn);
    if (valid != t.id_given) abort();
    if (valid && (strlen(t.id) != idn || memcmp(t.id, data, idn))) abort();
    if (!valid && strlen(t.id) != 32) abort();
    char s[300];
    size_t sn = rn < sizeof s - 1 ? rn : sizeof s - 1;
    memcpy(s, rest, sn);
    s[sn] = '\0';
    OBS_TRACE_SET(&t, model, s);
    OBS_TRACE_SET(&t, tenant, s);
    obs_trace_mark(&t, OBS_PARSE, 1.5);
    obs_trace_set(&t, OBS_QUEUE, (double)size);
    buf_t b = {0};
    if (obs_trace_headers(&t, 2.0, &b)) abort();
    /* "X-Request-Id: ...\r\nServer-Timing: ...\r\n": exactly two CRLFs */
    int crlf = 0;
    for (size_t i = 0; i < b.n; i++) {
        if (b.p[i] == '\n' && (i == 0 || b.p[i - 1] != '\r')) abort();
        if (b.p[i] == '\r') crlf++;
    }
    if (crlf != 2) abort();
    obs_trace_end(&t, 3.0, 200, size);
    static obs_alog_t *l;
    bar_msg_t msg;
    if (!l && obs_alog_open(&l, "/dev/null", &msg)) abort();
    obs_alog_write(l, &t, s, "POST", rest, rn);
    buf_free(&b);
    return 0;
}
