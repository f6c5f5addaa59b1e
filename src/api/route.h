/* route.h — the route table: method + path → handler, with the key it needs.
 *
 * A new endpoint is one row. Paths match exactly (one trailing slash is
 * ignored), or as a prefix when the row's path ends in '/' ("/v1/models/"
 * matches "/v1/models/x" and hands the handler "x"). Rows are tried in order,
 * so put an exact path before a prefix of it. HEAD is GET. Not for: what the
 * handlers do (api.c, pipeline.c), authentication itself (the dispatcher
 * checks the row's auth against the configured keys). */
#ifndef BARISTA_API_ROUTE_H
#define BARISTA_API_ROUTE_H

#include <stddef.h>

#include "server/http.h"

enum {
    ROUTE_GET = 1u << 0,
    ROUTE_POST = 1u << 1,
    ROUTE_DELETE = 1u << 2,
};

typedef enum {
    ROUTE_OPEN = 0,     /* no key (health probes, metrics scrapes) */
    ROUTE_API_KEY,      /* --api-key, when set */
    ROUTE_ADMIN_KEY,    /* --admin-key; the route does not exist without one */
    ROUTE_ADMIN_IF_SET, /* --admin-key when one is set (401 without it), else open */
} route_auth_t;

typedef struct {
    unsigned methods;  /* ROUTE_GET | ROUTE_POST ... */
    const char *path;  /* exact, or a prefix ending in '/' */
    const char *label; /* metrics label (barista_requests_total{endpoint}) */
    route_auth_t auth;
    int handler; /* the caller's handler index (api.c dispatches on it) */
} route_t;

typedef enum {
    ROUTE_FOUND = 0,
    ROUTE_NOT_FOUND,
    ROUTE_BAD_METHOD, /* the path exists; *out is the row (its methods give Allow) */
} route_status_t;

/* Match path (as the client sent it, without the query) and method (an
 * HTTP_* value of http.h) against n rows. *out: the row (FOUND, BAD_METHOD);
 * *rest: what follows a prefix row's path (empty for exact rows). */
route_status_t route_find(const route_t *rows, size_t n, http_slice_t path, int method,
                          const route_t **out, http_slice_t *rest);

/* "GET, HEAD" / "POST" / "DELETE" ... for an Allow header. */
void route_allow(unsigned methods, char *out, size_t size);

#endif
