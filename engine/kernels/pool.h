/* pool.h - private to engine/: a persistent compute thread pool for the matrix kernels.
 *
 * pool_run_parts(p, parts, fn, arg) calls fn(arg, part, parts) once for every part in
 * [0, parts), spread over the calling thread and the pool's workers: each thread claims the
 * next unclaimed part until none is left, so a worker that is slow to wake (or descheduled
 * by other load) costs at most the part it already holds. No thread is created per call.
 * Workers spin for a short while after a job (so the next matmul of the same step starts
 * at once), then sleep on a futex until the next job.
 *
 * One thread owns a pool (the scheduler thread, or a test/bench): pool_run is not
 * re-entrant and must not be called from two threads at once.
 */
#ifndef NANO_VLLM_POOL_H
#define NANO_VLLM_POOL_H

typedef struct pool pool_t;

/* One part of a job: part is 0..n-1. Which thread runs it is not fixed. */
typedef void (*pool_fn_cb)(void *arg, int part, int n);

/* Starts threads-1 workers (threads >= 1; 1 means "run everything on the caller").
 * Returns 0, -EINVAL for threads < 1 or > POOL_MAX_THREADS, or -ENOMEM/-EAGAIN when a
 * worker cannot be created (then nothing is left running). */
#define POOL_MAX_THREADS 256
#define POOL_MAX_PARTS 65535
int pool_init(pool_t **out, int threads);
/* Stops and joins the workers. pool_free(NULL) is a no-op. */
void pool_free(pool_t *p);
int pool_threads(const pool_t *p);

/* Runs the parts (at most POOL_MAX_PARTS) and returns when all of them have returned.
 * Writes made inside fn are visible to the caller afterwards. With p NULL (or one thread)
 * the caller runs every part itself. */
void pool_run_parts(pool_t *p, int parts, pool_fn_cb fn, void *arg);
/* A part that also learns which thread runs it: thread is 0 (the caller) ..
 * pool_threads(p) - 1, and no two parts run on the same thread at once, so per-thread
 * scratch indexed by it needs no locking. Which parts a thread gets is not fixed. */
typedef void (*pool_fn_thread_cb)(void *arg, int part, int n, int thread);
void pool_run_parts_thread(pool_t *p, int parts, pool_fn_thread_cb fn, void *arg);
/* pool_run_parts with one part per thread. */
void pool_run(pool_t *p, pool_fn_cb fn, void *arg);

/* Splits [0, n) into parts near-equal contiguous ranges; part i is [*lo, *hi). */
void pool_split(int n, int parts, int i, int *lo, int *hi);

#endif
