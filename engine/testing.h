/* testing.h - the one door into the engine's insides for tests and benchmarks (never
 * included by the server): the scheduler behind an engine, to read its step info and
 * counters and to check its invariants (tests/engine/sched_check.h).
 */
#ifndef NANO_VLLM_ENGINE_TESTING_H
#define NANO_VLLM_ENGINE_TESTING_H

#include "engine/engine.h"
#include "engine/sched/scheduler.h"

/* The scheduler behind e. Only while e is driven with eng_step on the calling thread
 * (before eng_start), or after eng_free's join; defined in engine.c, which owns struct eng. */
sched_t *eng_sched(eng_t *e);

#endif
