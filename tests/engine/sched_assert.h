/* sched_assert.h - assertion helpers for the scheduler tests: each prints both values and
 * the location, then exits non-zero (the exit status is the verdict). */
#ifndef NANO_VLLM_SCHED_ASSERT_H
#define NANO_VLLM_SCHED_ASSERT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT_TRUE(c)                                                                      \
    do {                                                                                    \
        if (!(c)) {                                                                         \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c);       \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define ASSERT_OP(a, op, b)                                                                 \
    do {                                                                                    \
        long long a_ = (long long)(a), b_ = (long long)(b);                                 \
        if (!(a_ op b_)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s %s %s, got %lld %s %lld\n", __FILE__,       \
                    __LINE__, #a, #op, #b, a_, #op, b_);                                    \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_OP(a, !=, b)
#define ASSERT_LE(a, b) ASSERT_OP(a, <=, b)
#define ASSERT_LT(a, b) ASSERT_OP(a, <, b)
#define ASSERT_GE(a, b) ASSERT_OP(a, >=, b)
#define ASSERT_GT(a, b) ASSERT_OP(a, >, b)

#define ASSERT_STREQ(a, b)                                                                  \
    do {                                                                                    \
        const char *a_ = (a), *b_ = (b);                                                    \
        if (strcmp(a_, b_) != 0) {                                                          \
            fprintf(stderr, "%s:%d: expected %s == %s, got \"%s\" vs \"%s\"\n", __FILE__,   \
                    __LINE__, #a, #b, a_, b_);                                              \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#endif
