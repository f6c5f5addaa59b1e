/* dashboard.h — the live dashboard page (GET /dashboard).
 *
 * One self-contained HTML page (CSS and JS inline, charts drawn on canvas by
 * hand, no network fetch but its own snapshot endpoint), kept in
 * src/obs/dashboard.html and compiled into the binary as a C string by
 * cmake/embed.cmake. It polls GET /v1/dashboard/snapshot every second; when
 * that answers 401 (an admin key is set) it asks for the key and sends it as
 * a Bearer header. Not for: the data (metrics.h's snapshot, api_obs.c). */
#ifndef BARISTA_OBS_DASHBOARD_H
#define BARISTA_OBS_DASHBOARD_H

#include <stddef.h>

/* The page's bytes (static, NUL-terminated) and its length. */
const char *obs_dashboard_page(size_t *len);

#endif
