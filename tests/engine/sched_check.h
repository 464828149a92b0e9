/* sched_check.h - invariants of the scheduler and its block manager, for the tests
 * (sched_check.c). Each returns 0, or -1 with the first broken rule in err.
 */
#ifndef NANO_VLLM_TESTS_SCHED_CHECK_H
#define NANO_VLLM_TESTS_SCHED_CHECK_H

#include <stddef.h>

#include "engine/sched/scheduler.h"

/* The block manager alone: the free list holds exactly the refcount-0 blocks, once each,
 * num_free matches, every registered block is found by its tokens. */
int blk_check(const blk_mgr_t *m, char *err, size_t errlen);

/* blk_check, then the sequences against the blocks: every block's refcount is the number
 * of block tables holding it, only running sequences hold blocks and enough for what they
 * computed, a shared block is full, the lists and counters match the sequences' states. */
int sched_check(const sched_t *s, char *err, size_t errlen);

#endif
