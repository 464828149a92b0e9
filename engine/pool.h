/* pool.h - private to engine/: a persistent compute thread pool for the matrix kernels.
 *
 * pool_run(p, fn, arg) runs fn(arg, tid, n) on n threads at once: the calling thread is
 * tid 0, the pool's workers are 1..n-1. No thread is created per call. Workers spin for a
 * short while after a job (so the next matmul of the same step starts at once), then sleep
 * on a futex until the next job, so they never compete with other work for long.
 *
 * One thread owns a pool (the scheduler thread, or a test/bench): pool_run is not
 * re-entrant and must not be called from two threads at once.
 */
#ifndef NANO_VLLM_POOL_H
#define NANO_VLLM_POOL_H

typedef struct pool pool_t;

/* fn runs once on each of the n threads; tid is 0..n-1. */
typedef void (*pool_fn_cb)(void *arg, int tid, int n);

/* Starts threads-1 workers (threads >= 1; 1 means "run everything on the caller").
 * Returns 0, -EINVAL for threads < 1 or > POOL_MAX_THREADS, or -ENOMEM/-EAGAIN when a
 * worker cannot be created (then nothing is left running). */
#define POOL_MAX_THREADS 256
int pool_init(pool_t **out, int threads);
/* Stops and joins the workers. pool_free(NULL) is a no-op. */
void pool_free(pool_t *p);
int pool_threads(const pool_t *p);

/* Runs fn on every thread and returns when all of them have returned. Writes made by any
 * thread inside fn are visible to the caller afterwards. p may be NULL: fn(arg, 0, 1). */
void pool_run(pool_t *p, pool_fn_cb fn, void *arg);

/* Splits [0, n) into parts near-equal contiguous ranges; part i is [*lo, *hi). */
void pool_split(int n, int parts, int i, int *lo, int *hi);

#endif
