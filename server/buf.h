/* buf.h - growing a malloc'd byte buffer by doubling: the one loop behind server/'s appenders
 * (a stream's pending bytes, an SSE event, a choice's text, `generate`'s completions).
 *
 * A buffer is three fields of its owner: the pointer, the bytes used and the capacity, all
 * zero at first; the owner frees the pointer. Header only; the caller's thread.
 */
#ifndef NANO_VLLM_SERVER_BUF_H
#define NANO_VLLM_SERVER_BUF_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Makes *cap at least need, doubling from first (or the current capacity). Returns 0, or
 * -ENOMEM with *p and *cap unchanged. */
static inline int buf_reserve(char **p, size_t *cap, size_t need, size_t first)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    char *b = realloc(*p, c);
    if (!b)
        return -ENOMEM;
    *p = b;
    *cap = c;
    return 0;
}

/* Appends s[0..n) at *len and keeps the text NUL-terminated. 0 or -ENOMEM (nothing
 * appended). */
static inline int buf_append_text(char **p, size_t *len, size_t *cap, const char *s, size_t n,
                                  size_t first)
{
    if (buf_reserve(p, cap, *len + n + 1, first))
        return -ENOMEM;
    if (n) /* s may be NULL when n is 0 */
        memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

#endif
