/* rand.h - the C tests' seeded generator (xorshift64): a seed gives the same values on every
 * machine, so a failure reproduces. Each test keeps its own state. */
#ifndef NANO_VLLM_TESTS_RAND_H
#define NANO_VLLM_TESTS_RAND_H

#include <stdint.h>

/* The next state of *s (never 0 from a nonzero seed). */
static inline uint64_t rand_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [-1, 1), 24 random bits. */
static inline float rand_unit(uint64_t *s)
{
    return (float)((double)((rand_next(s) >> 16) & 0xffffff) / 8388608.0 - 1.0);
}

#endif
