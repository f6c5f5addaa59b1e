/* dlist.h — the one intrusive doubly linked list: a head pointer and nodes
 * with `prev` / `next` members, pushed at the front and unlinked in O(1).
 * Macros because the node types differ (transfers, sockets, jobs, Redis
 * operations); each argument is evaluated more than once, so pass plain
 * lvalues. Not for: ordering, ownership (the caller frees the node). */
#ifndef BARISTA_UTIL_DLIST_H
#define BARISTA_UTIL_DLIST_H

#include <stddef.h>

/* Put node n at the front of the list whose head is `head`. */
#define DLIST_PUSH(head, n)                                                                        \
    do {                                                                                           \
        (n)->prev = NULL;                                                                          \
        (n)->next = (head);                                                                        \
        if (head) (head)->prev = (n);                                                              \
        (head) = (n);                                                                              \
    } while (0)

/* Take node n out of the list whose head is `head`; n's links are cleared. */
#define DLIST_UNLINK(head, n)                                                                      \
    do {                                                                                           \
        if ((n)->prev)                                                                             \
            (n)->prev->next = (n)->next;                                                           \
        else                                                                                       \
            (head) = (n)->next;                                                                    \
        if ((n)->next) (n)->next->prev = (n)->prev;                                                \
        (n)->prev = NULL;                                                                          \
        (n)->next = NULL;                                                                          \
    } while (0)

#endif
