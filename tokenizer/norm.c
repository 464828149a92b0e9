/* norm.c - the normalizer steps: Unicode normalization forms (utf8proc), Prepend, Replace.
 *
 * Each step turns the current text into a new buffer; a text no step changes is not
 * copied. Unicode forms leave ASCII text as it is (a fast path, since every form maps ASCII
 * to itself) and normalize each maximal valid UTF-8 run on its own, keeping invalid bytes
 * where they are (Hugging Face never sees invalid UTF-8; this keeps byte-level tokenizers
 * lossless for it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tokenizer/internal.h"

typedef struct buf {
    char *p;
    size_t n, cap;
} buf_t;

static int put(buf_t *b, const void *s, size_t n)
{
    if (n == 0) /* s and b->p may both be NULL then: memcpy must not see them */
        return 0;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

static int unicode_form(int kind, const char *s, size_t len, buf_t *out)
{
    static const int opts[] = {
        UTF8PROC_STABLE | UTF8PROC_COMPOSE,
        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE,
        UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
    };
    const utf8proc_uint8_t *u = (const utf8proc_uint8_t *)s;
    size_t pos = 0;
    while (pos < len) {
        /* the longest valid run from pos */
        size_t end = pos;
        while (end < len) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t k = utf8proc_iterate(u + end, (utf8proc_ssize_t)(len - end), &cp);
            if (k <= 0)
                break;
            end += (size_t)k;
        }
        if (end > pos) {
            utf8proc_uint8_t *res = NULL;
            utf8proc_ssize_t n = utf8proc_map(u + pos, (utf8proc_ssize_t)(end - pos), &res,
                                              (utf8proc_option_t)opts[kind - NORM_NFC]);
            if (n < 0) {
                free(res);
                return n == UTF8PROC_ERROR_NOMEM ? -ENOMEM : -EINVAL;
            }
            int rc = put(out, res, (size_t)n);
            free(res);
            if (rc < 0)
                return rc;
        }
        if (end < len && put(out, s + end, 1) < 0)
            return -ENOMEM;
        pos = end < len ? end + 1 : end;
    }
    return 0;
}

static int replace(const tok_norm_t *n, const char *s, size_t len, buf_t *out)
{
    const char *p = s, *end = s + len, *m;
    while ((m = memmem(p, (size_t)(end - p), n->a, n->alen))) {
        if (put(out, p, (size_t)(m - p)) < 0 || put(out, n->b, n->blen) < 0)
            return -ENOMEM;
        p = m + n->alen;
    }
    return put(out, p, (size_t)(end - p));
}

static int ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

int tok_normalize(const tok_t *t, const char *s, size_t len, char **out, size_t *outlen, int *owned)
{
    char *cur = (char *)s;
    size_t n = len;
    int own = 0, rc = 0;
    for (int i = 0; i < t->n_norm && rc == 0; i++) {
        const tok_norm_t *st = &t->norm[i];
        buf_t b = {0};
        if (st->kind <= NORM_NFKD) {
            if (ascii(cur, n))
                continue;
            rc = unicode_form(st->kind, cur, n, &b);
        } else if (st->kind == NORM_PREPEND) {
            if (n == 0)
                continue;
            rc = put(&b, st->a, st->alen);
            if (rc == 0)
                rc = put(&b, cur, n);
        } else {
            if (!memmem(cur, n, st->a, st->alen))
                continue;
            rc = replace(st, cur, n, &b);
        }
        if (rc < 0) {
            free(b.p);
            break;
        }
        if (own)
            free(cur);
        cur = b.p;
        n = b.n;
        own = 1;
        if (!cur) {
            cur = (char *)s + len; /* an empty result */
            own = 0;
        }
    }
    if (rc < 0) {
        if (own)
            free(cur);
        return rc;
    }
    *out = cur;
    *outlen = n;
    *owned = own;
    return 0;
}
