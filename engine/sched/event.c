/* event.c - output events: allocation, recycling, eng_event_free (see event.h).
 *
 * DESIGN
 * - Every event is preceded by a header naming its cache (NULL for a plain allocation).
 * - The scheduler thread takes recycled slots from a private stash; when the stash is
 *   empty it takes the cache's whole free list under the lock (one lock per step, not per
 *   event). eng_event_free, on the thread that took the events, puts a slot back under the
 *   lock, or frees it when the cache is closed or already holds EV_CACHE_MAX free slots.
 * - live counts slots that are not on the free list (in the stash or out as events); the
 *   cache is freed when it is closed and live drops to zero.
 */
#include "engine/sched/event.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One slot: the event and a step's worth of ids and text of one plain stream. */
#define EV_SLOT_BYTES 256
/* Free slots kept: enough for a few steps of the largest batches. */
#define EV_CACHE_MAX 4096

typedef struct ev_hdr {
    ev_cache_t *cache; /* NULL: a plain allocation */
    struct ev_hdr *next; /* on the free list or in the stash */
} ev_hdr_t;

struct ev_cache {
    pthread_mutex_t mu;
    ev_hdr_t *free_list; /* guarded by mu */
    int n_free;          /* guarded by mu */
    long live;           /* guarded by mu */
    int closed;          /* guarded by mu */
    ev_hdr_t *stash;     /* scheduler thread only */
};

static eng_event_t *ev_of(ev_hdr_t *h)
{
    return (eng_event_t *)(void *)(h + 1);
}

ev_cache_t *ev_cache_new(void)
{
    ev_cache_t *c = calloc(1, sizeof(*c));
    if (c && pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void cache_destroy(ev_cache_t *c)
{
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void ev_cache_close(ev_cache_t *c)
{
    if (!c)
        return;
    long stashed = 0;
    while (c->stash) {
        ev_hdr_t *h = c->stash;
        c->stash = h->next;
        free(h);
        stashed++;
    }
    pthread_mutex_lock(&c->mu);
    while (c->free_list) {
        ev_hdr_t *h = c->free_list;
        c->free_list = h->next;
        free(h);
    }
    c->n_free = 0;
    c->live -= stashed;
    c->closed = 1;
    int last = c->live == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        cache_destroy(c);
}

/* A recycled or new slot of c, or NULL. */
static ev_hdr_t *slot_take(ev_cache_t *c)
{
    if (!c->stash) {
        pthread_mutex_lock(&c->mu);
        c->stash = c->free_list;
        c->free_list = NULL;
        c->live += c->n_free;
        c->n_free = 0;
        int grow = c->stash == NULL;
        if (grow)
            c->live++; /* counted before the allocation, undone below if it fails */
        pthread_mutex_unlock(&c->mu);
        if (grow) {
            ev_hdr_t *h = malloc(sizeof(ev_hdr_t) + EV_SLOT_BYTES);
            if (!h) {
                pthread_mutex_lock(&c->mu);
                c->live--;
                pthread_mutex_unlock(&c->mu);
            }
            return h;
        }
    }
    ev_hdr_t *h = c->stash;
    c->stash = h->next;
    return h;
}

eng_event_t *ev_alloc(ev_cache_t *c, size_t extra)
{
    ev_hdr_t *h;
    if (c && sizeof(eng_event_t) + extra <= EV_SLOT_BYTES) {
        h = slot_take(c);
        if (h)
            h->cache = c;
    } else {
        h = malloc(sizeof(ev_hdr_t) + sizeof(eng_event_t) + extra);
        if (h)
            h->cache = NULL;
    }
    if (!h)
        return NULL;
    h->next = NULL;
    eng_event_t *ev = ev_of(h);
    memset(ev, 0, sizeof(*ev));
    return ev;
}

void eng_event_free(eng_event_t *ev)
{
    if (!ev)
        return;
    ev_hdr_t *h = (ev_hdr_t *)(void *)ev - 1;
    ev_cache_t *c = h->cache;
    if (!c) {
        free(h);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->live--;
    int keep = !c->closed && c->n_free < EV_CACHE_MAX;
    if (keep) {
        h->next = c->free_list;
        c->free_list = h;
        c->n_free++;
    }
    int last = c->closed && c->live == 0;
    pthread_mutex_unlock(&c->mu);
    if (!keep)
        free(h);
    if (last)
        cache_destroy(c);
}
