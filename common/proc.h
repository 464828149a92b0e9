/* proc.h - what this process has used so far: CPU seconds and resident memory, for benches
 * and tests that report or bound them. Header only: any module may include it. */
#ifndef NANO_VLLM_COMMON_PROC_H
#define NANO_VLLM_COMMON_PROC_H

#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Seconds of CPU the process has used (every thread, user and system). Dividing work by
 * CPU time instead of wall time leaves out the time other tenants held the cores. */
static inline double proc_cpu_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident memory of the process now, in bytes (/proc/self/statm); 0 if unknown. */
static inline double proc_rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

#endif
