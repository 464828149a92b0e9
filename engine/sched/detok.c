/* detok.c - streaming detokenization with stop strings held back until decided (detok.h).
 * Scheduler thread only.
 */
#include "engine/sched/detok.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int detok_init(detok_t *d, char *const *stops, int n_stop)
{
    memset(d, 0, sizeof(*d));
    tok_stream_init(&d->ts);
    d->stops = stops;
    d->n_stop = n_stop;
    for (int i = 0; i < n_stop; i++) {
        size_t l = strlen(stops[i]);
        if (l > d->max_stop)
            d->max_stop = l;
    }
    /* hold never keeps more than max_stop - 1 bytes between calls, plus one step's text. */
    d->cap = d->max_stop + DETOK_STEP_BYTES;
    d->hold = malloc(d->cap);
    return d->hold ? 0 : -ENOMEM;
}

void detok_free(detok_t *d)
{
    if (!d)
        return;
    free(d->hold);
    memset(d, 0, sizeof(*d));
}

/* The earliest position of any stop string in hold, or -1. */
static long find_stop(const detok_t *d)
{
    long best = -1;
    for (int i = 0; i < d->n_stop; i++) {
        const char *p = memmem(d->hold, d->hold_len, d->stops[i], strlen(d->stops[i]));
        if (p && (best < 0 || p - d->hold < best))
            best = p - d->hold;
    }
    return best;
}

/* The longest suffix of hold that is a proper prefix of some stop string. */
static size_t stop_prefix_suffix(const detok_t *d)
{
    size_t keep = 0;
    for (int i = 0; i < d->n_stop; i++) {
        size_t sl = strlen(d->stops[i]);
        size_t k = sl - 1 < d->hold_len ? sl - 1 : d->hold_len;
        for (; k > keep; k--)
            if (memcmp(d->hold + d->hold_len - k, d->stops[i], k) == 0) {
                keep = k;
                break;
            }
    }
    return keep;
}

static void give(detok_t *d, size_t n, char *out, size_t *out_len)
{
    memcpy(out, d->hold, n);
    out[n] = '\0';
    *out_len = n;
    memmove(d->hold, d->hold + n, d->hold_len - n);
    d->hold_len -= n;
}

int detok_push_text(detok_t *d, const char *text, size_t len, char *out, size_t *out_len)
{
    /* Callers pass at most one token's text; cut rather than overflow if not. */
    if (len > d->cap - 1 - d->hold_len)
        len = d->cap - 1 - d->hold_len;
    memcpy(d->hold + d->hold_len, text, len);
    d->hold_len += len;
    long at = find_stop(d);
    if (at >= 0) {
        give(d, (size_t)at, out, out_len);
        d->hold_len = 0;
        return 1;
    }
    give(d, d->hold_len - stop_prefix_suffix(d), out, out_len);
    return 0;
}

int detok_push(detok_t *d, const tok_t *tok, int32_t id, char *out, size_t *out_len)
{
    char buf[DETOK_STEP_BYTES];
    size_t n = 0;
    int rc = tok_stream_feed(tok, &d->ts, id, buf, sizeof(buf), &n);
    if (rc < 0)
        return rc;
    return detok_push_text(d, buf, n, out, out_len);
}

int detok_finish(detok_t *d, char *out, size_t *out_len)
{
    char buf[TOK_STREAM_OUT_MAX];
    size_t n = 0;
    tok_stream_flush(&d->ts, buf, sizeof(buf), &n);
    if (detok_push_text(d, buf, n, out, out_len))
        return 1;
    /* out already holds what push gave; append the rest of hold after it. */
    memcpy(out + *out_len, d->hold, d->hold_len);
    *out_len += d->hold_len;
    out[*out_len] = '\0';
    d->hold_len = 0;
    return 0;
}
