/* multipart.h — multipart/form-data bodies (RFC 7578), as POST /v1/files
 * receives them: the boundary from the Content-Type header, then the parts,
 * each with its form field name, optional filename and content type, and its
 * bytes (slices into the body, never copied).
 *
 * Strict where it matters: the body must start with the delimiter (a
 * preamble is allowed), every part needs a Content-Disposition of form-data
 * with a name, and the closing delimiter must be there. Not for: what the
 * fields mean (files.c). */
#ifndef BARISTA_API_MULTIPART_H
#define BARISTA_API_MULTIPART_H

#include <stddef.h>

#include "server/http.h"

#define MP_MAX_PARTS 16

typedef struct {
    http_slice_t name;         /* form field name */
    http_slice_t filename;     /* {NULL, 0} when the part is not a file */
    http_slice_t content_type; /* {NULL, 0} when not given */
    http_slice_t data;
} mp_part_t;

/* The boundary of a Content-Type value ("multipart/form-data;
 * boundary=..."), quoted or not. 0, or -1 with *why set (not multipart, no
 * boundary, a boundary over 70 characters). */
int mp_boundary(http_slice_t content_type, http_slice_t *boundary, const char **why);

/* Split body into at most max parts. 0 with *n set, or -1 with *why (a
 * static string saying what is malformed). */
int mp_parse(const char *body, size_t len, http_slice_t boundary, mp_part_t *parts, int max, int *n,
             const char **why);

/* The first part named name, or NULL. */
const mp_part_t *mp_find(const mp_part_t *parts, int n, const char *name);

#endif
