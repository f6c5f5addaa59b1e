/* fault.c — the allocation wrappers behind fault.h (compiled to nothing
 * without BARISTA_FAULT_INJECT). */
#include "util/fault.h"

#ifdef BARISTA_FAULT_INJECT
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static atomic_int armed;
static atomic_ullong count, failed;
static unsigned long long at, every;

void fault_arm(void)
{
    const char *a = getenv("BARISTA_FAIL_ALLOC_AT"), *e = getenv("BARISTA_FAIL_ALLOC_EVERY");
    at = a ? strtoull(a, NULL, 10) : 0;
    every = e ? strtoull(e, NULL, 10) : 0;
    atomic_store(&count, 0);
    atomic_store(&armed, at || every);
}

uint64_t fault_failed(void)
{
    return atomic_load(&failed);
}

static int fail_now(void)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed)) return 0;
    unsigned long long k = atomic_fetch_add(&count, 1) + 1;
    if ((at && k == at) || (every && k % every == 0)) {
        atomic_fetch_add(&failed, 1);
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    return fail_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
#endif
