/* fault.h — allocation fault injection for tests (a build option).
 *
 * Built with -DBARISTA_FAULT_INJECT=ON, the binary and the unit tests link
 * malloc/calloc/realloc/strdup of barista's own code through wrappers
 * (ld --wrap) that can fail on purpose once fault_arm() was called:
 *   BARISTA_FAIL_ALLOC_AT=N     the Nth allocation after arming returns NULL
 *   BARISTA_FAIL_ALLOC_EVERY=N  every Nth allocation after arming does
 * Counting is process-wide (atomic), over every thread. Libraries (libuv,
 * cJSON, hiredis) allocate through their own references and are not
 * affected. Without the option, fault_arm() does nothing and nothing is
 * wrapped. Not for: production use. */
#ifndef BARISTA_UTIL_FAULT_H
#define BARISTA_UTIL_FAULT_H

#include <stdint.h>

#ifdef BARISTA_FAULT_INJECT
/* Start counting allocations (reads the environment once). */
void fault_arm(void);
/* Allocations failed on purpose so far. */
uint64_t fault_failed(void);
#else
static inline void fault_arm(void) {}
static inline uint64_t fault_failed(void)
{
    return 0;
}
#endif

#endif
