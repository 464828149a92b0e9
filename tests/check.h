/* check.h - assertion helpers for the C test suites: each failure prints both values and
 * the location, counts, and the test keeps going so one run shows every failure. The
 * exit status is check_failures() != 0. */
#ifndef NANO_VLLM_TESTS_CHECK_H
#define NANO_VLLM_TESTS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failed_count;

static inline int check_failures(void)
{
    return check_failed_count;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    va_, vb_);                                                                     \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

/* Two NUL-terminated strings are equal (NULL equals nothing). */
#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *va_ = (a), *vb_ = (b);                                                         \
        if (!va_ || !vb_ || strcmp(va_, vb_) != 0) {                                               \
            fprintf(stderr, "%s:%d: %s == %s failed:\n  got  '%s'\n  want '%s'\n", __FILE__,       \
                    __LINE__, #a, #b, va_ ? va_ : "(null)", vb_ ? vb_ : "(null)");                 \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b), vt_ = (double)(tol);                          \
        if (!(va_ - vb_ <= vt_ && vb_ - va_ <= vt_)) {                                             \
            fprintf(stderr, "%s:%d: %s ~ %s failed: %.9g vs %.9g (tol %g)\n", __FILE__, __LINE__,  \
                    #a, #b, va_, vb_, vt_);                                                        \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

/* a <= b */
#define CHECK_LE(a, b)                                                                             \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b);                                               \
        if (!(va_ <= vb_)) {                                                                       \
            fprintf(stderr, "%s:%d: %s <= %s failed: %.9g > %.9g\n", __FILE__, __LINE__, #a, #b,   \
                    va_, vb_);                                                                     \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

/* The haystack string contains needle. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *vh_ = (hay), *vn_ = (needle);                                                  \
        if (!vh_ || !strstr(vh_, vn_)) {                                                           \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,         \
                    vh_ ? vh_ : "(null)", vn_);                                                    \
            check_failed_count++;                                                                  \
        }                                                                                          \
    } while (0)

#endif
