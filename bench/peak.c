/* bench/peak.c - the FMA peak of this machine, for scripts that need a bound measured in
 * the same run (bench/loadgen.py divides served tokens/s by it).
 *
 *   bench/peak [--threads N] [--reps R]
 *
 * Prints one line of key=value pairs:
 *   fma_gflops=...        FMA chains on N threads (default one per online core), median of R
 *   core_gflops_cpu=...   one core, GFLOP per CPU-second (holds on a busy host too)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bounds.h"
#include "engine/kernels/pool.h"

int main(int argc, char **argv)
{
    int threads = 0, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--reps R]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 && n <= POOL_MAX_THREADS ? (int)n : 1;
    }
    if (reps < 1 || reps > 64) {
        fputs("bench/peak: --reps must be 1..64\n", stderr);
        return 2;
    }
    pool_t *pool = NULL;
    if (pool_init(&pool, threads) < 0) {
        fprintf(stderr, "bench/peak: cannot start %d threads\n", threads);
        return 1;
    }
    double fma = bench_fma_peak(pool, reps);
    pool_free(pool);
    double core = bench_fma_core_peak_cpu(reps);
    printf("threads=%d fma_gflops=%.1f core_gflops_cpu=%.1f\n", threads, fma / 1e9, core / 1e9);
    return 0;
}
