/* list.h - an intrusive circular doubly linked list, after libuv's queue.h (src/queue.h).
 *
 * An element embeds a list_t (its link); a list is a list_t of its own, the sentinel, which
 * points to itself when empty, so inserting and removing never test for an end. LIST_DATA
 * gets the element back from its link. Header only, no state, no allocation: any module may
 * include it. Not thread-safe; whoever owns the list serialises access.
 */
#ifndef NANO_VLLM_COMMON_LIST_H
#define NANO_VLLM_COMMON_LIST_H

#include <stddef.h>

typedef struct list {
    struct list *next, *prev;
} list_t;

/* The element of type `type` whose member `field` is the link `ptr`. */
#define LIST_DATA(ptr, type, field) ((type *)(((char *)(ptr)) - offsetof(type, field)))

/* for (list_t *it = first; it != head; it = it->next); removing `it` inside the loop is not
 * allowed (take the next one first, as list_next allows). */
#define LIST_FOREACH(it, head) for ((it) = (head)->next; (it) != (head); (it) = (it)->next)

/* An empty list, or an element linked to nothing (list_remove leaves it so). */
static inline void list_init(list_t *l)
{
    l->next = l->prev = l;
}

static inline int list_empty(const list_t *l)
{
    return l->next == l;
}

/* The first / last link of head, or NULL when it is empty. */
static inline list_t *list_first(const list_t *head)
{
    return head->next == head ? NULL : head->next;
}

static inline list_t *list_last(const list_t *head)
{
    return head->prev == head ? NULL : head->prev;
}

/* The link after e in head, or NULL when e is the last. */
static inline list_t *list_next(const list_t *head, const list_t *e)
{
    return e->next == head ? NULL : e->next;
}

/* Links e after pos (pos may be the head: e becomes the first). */
static inline void list_insert_after(list_t *pos, list_t *e)
{
    e->prev = pos;
    e->next = pos->next;
    pos->next->prev = e;
    pos->next = e;
}

static inline void list_insert_head(list_t *head, list_t *e)
{
    list_insert_after(head, e);
}

static inline void list_insert_tail(list_t *head, list_t *e)
{
    list_insert_after(head->prev, e);
}

/* Unlinks e from whatever list holds it; e is left linked to itself. */
static inline void list_remove(list_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    list_init(e);
}

#endif
