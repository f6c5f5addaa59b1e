/* dashboard.c — the embedded dashboard page (see dashboard.h). */
#include "obs/dashboard.h"

/* generated from src/obs/dashboard.html (CMakeLists.txt) */
extern const char obs_dashboard_html[];
extern const unsigned long obs_dashboard_html_len;

const char *obs_dashboard_page(size_t *len)
{
    *len = (size_t)obs_dashboard_html_len;
    return obs_dashboard_html;
}
