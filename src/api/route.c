/* route.c — route matching (see route.h). */
#include "api/route.h"

#include <stdio.h>
#include <string.h>

static unsigned method_bit(int m)
{
    if (m == HTTP_GET || m == HTTP_HEAD) return ROUTE_GET;
    if (m == HTTP_POST) return ROUTE_POST;
    if (m == HTTP_DELETE) return ROUTE_DELETE;
    return 0;
}

route_status_t route_find(const route_t *rows, size_t n, http_slice_t path, int method,
                          const route_t **out, http_slice_t *rest)
{
    *out = NULL;
    rest->p = NULL;
    rest->n = 0;
    if (path.n > 1 && path.p[path.n - 1] == '/') path.n--; /* one trailing slash */
    for (size_t i = 0; i < n; i++) {
        const route_t *r = &rows[i];
        size_t k = strlen(r->path);
        int prefix = k > 1 && r->path[k - 1] == '/';
        int hit;
        if (prefix)
            hit = path.n > k && !memcmp(path.p, r->path, k);
        else
            hit = path.n == k && !memcmp(path.p, r->path, k);
        if (!hit) continue;
        *out = r;
        if (prefix) {
            rest->p = path.p + k;
            rest->n = path.n - k;
        }
        return (r->methods & method_bit(method)) ? ROUTE_FOUND : ROUTE_BAD_METHOD;
    }
    return ROUTE_NOT_FOUND;
}

void route_allow(unsigned methods, char *out, size_t size)
{
    int n = 0;
    out[0] = '\0';
    if ((methods & ROUTE_GET) && (size_t)n < size)
        n += snprintf(out + n, size - (size_t)n, "%sGET, HEAD", n ? ", " : "");
    if ((methods & ROUTE_POST) && (size_t)n < size)
        n += snprintf(out + n, size - (size_t)n, "%sPOST", n ? ", " : "");
    if ((methods & ROUTE_DELETE) && (size_t)n < size)
        snprintf(out + n, size - (size_t)n, "%sDELETE", n ? ", " : "");
}
