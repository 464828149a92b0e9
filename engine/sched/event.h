/* event.h - private to engine/: where output events come from.
 *
 * Events are made on the scheduler thread and freed on whichever thread took them
 * (eng_event_free). Small ones (one step of one plain stream) are recycled through an
 * ev_cache so that steady decoding allocates nothing; bigger ones (logprobs, long text)
 * are plain allocations. The cache outlives the engine while events are out: it is freed
 * by whoever drops the last reference (ev_cache_close or the last eng_event_free).
 */
#ifndef NANO_VLLM_EVENT_H
#define NANO_VLLM_EVENT_H

#include <stddef.h>

#include "engine/engine.h"

typedef struct ev_cache ev_cache_t;

/* A cache, or NULL when out of memory (events are then plain allocations). */
ev_cache_t *ev_cache_new(void);
/* The owner is done with it (scheduler thread): events still out are freed by
 * eng_event_free as usual; the cache goes with the last of them. NULL is a no-op. */
void ev_cache_close(ev_cache_t *c);
/* An event with room for extra bytes after the struct, zeroed up to the struct's end, or
 * NULL. Scheduler thread only (c may be NULL). */
eng_event_t *ev_alloc(ev_cache_t *c, size_t extra);

#endif
