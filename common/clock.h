/* clock.h - seconds on the monotonic clock, for timing phases and intervals (never for the
 * time of day). Header only: any module may include it. */
#ifndef NANO_VLLM_COMMON_CLOCK_H
#define NANO_VLLM_COMMON_CLOCK_H

#include <time.h>

static inline double clock_now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
