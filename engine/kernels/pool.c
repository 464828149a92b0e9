/* pool.c - persistent compute thread pool (see pool.h).
 *
 * DESIGN: a job is n parts. The owner thread writes the job (fn, arg), resets `done`, and
 * stores `next` = (generation, n, next part 0); then it bumps the futex word `gen` to wake
 * the workers. Every thread, the owner included, claims parts by compare-and-swap on
 * `next` until none is left, runs them, and counts them in `done`; the owner returns when
 * `done` reaches n. Because parts are claimed, not assigned, a worker that is asleep or
 * descheduled (other load on the machine) does not hold the owner up: the owner runs the
 * parts nobody claimed. A late worker finds `next` exhausted or of a newer generation and
 * never touches the old job. fn and arg are plain fields: a successful claim reads the
 * value the owner released after writing them, and the owner does not rewrite them before
 * every claimed part is done.
 * Waiting is a bounded spin (SPIN_NS) followed by a futex sleep. A sleeper first announces
 * itself in a counter and then re-checks the word; the other side changes the word and then
 * reads the counter (both sequentially consistent), so a wake-up is never lost and no
 * syscall is made while nobody sleeps.
 */
#include "engine/kernels/pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long a waiting thread spins before it sleeps. Long enough to bridge the gap between
 * two matmuls of one forward step (layer norm, attention: tens of microseconds), short
 * enough that an idle pool costs nothing measurable. */
#define SPIN_NS 150000L

typedef struct worker {
    pool_t *pool;
    int tid;
} worker_t;

struct pool {
    int n;                       /* threads including the owner */
    int started;                 /* workers actually running */
    pthread_t *tids;             /* (n-1) owned */
    worker_t *args;              /* (n-1) owned */
    pool_fn_cb fn;               /* current job (fn or fn_thread, the other NULL); written by the */
    pool_fn_thread_cb fn_thread; /* owner before `next` is stored */
    void *arg;
    atomic_int stop;
    /* The words the threads write while a job runs, each on a cache line of its own: the
     * workers spin on gen while the owner claims parts from next and counts them in done,
     * and on one line every claim would also take gen's line away from the spinners. */
    _Alignas(64) atomic_uint gen; /* job generation; futex word the workers sleep on */
    atomic_int gen_sleepers;
    _Alignas(64) _Atomic uint64_t next; /* generation << 32 | parts << 16 | next part */
    _Alignas(64) atomic_uint done;      /* parts of the current job finished; the owner's futex */
    atomic_int pending_sleeper;
};

static long futex(atomic_uint *word, int op, unsigned val)
{
    return syscall(SYS_futex, (unsigned *)word, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *word != old (returns the new value) or the spin budget is spent (returns old). */
static unsigned spin_while_equal(atomic_uint *word, unsigned old)
{
    int64_t deadline = 0;
    for (unsigned i = 0;; i++) {
        unsigned v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old)
            return v;
        if ((i & 63) == 63) {
            int64_t t = now_ns();
            if (deadline == 0)
                deadline = t + SPIN_NS;
            else if (t > deadline)
                return old;
        }
        cpu_relax();
    }
}

/* Waits until *word != old: spin, then sleep, announcing the sleep in *sleepers. */
static unsigned wait_while_equal(atomic_uint *word, unsigned old, atomic_int *sleepers)
{
    unsigned v = spin_while_equal(word, old);
    while (v == old) {
        atomic_fetch_add(sleepers, 1);
        if (atomic_load(word) == old)
            futex(word, FUTEX_WAIT, old);
        atomic_fetch_sub(sleepers, 1);
        v = atomic_load_explicit(word, memory_order_acquire);
    }
    return v;
}

/* Claims the next part of job generation g: 1 with *part and *n set, 0 when none is left. */
static int claim(pool_t *p, unsigned g, int *part, int *n)
{
    uint64_t v = atomic_load_explicit(&p->next, memory_order_acquire);
    for (;;) {
        unsigned vg = (unsigned)(v >> 32), vn = (unsigned)(v >> 16) & 0xffff;
        unsigned vi = (unsigned)v & 0xffff;
        if (vg != g || vi >= vn)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&p->next, &v, v + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *part = (int)vi;
            *n = (int)vn;
            return 1;
        }
    }
}

/* Runs parts of job g on thread tid until none is left to claim. */
static void run_parts(pool_t *p, unsigned g, int tid)
{
    int part, n;
    while (claim(p, g, &part, &n)) {
        if (p->fn)
            p->fn(p->arg, part, n);
        else
            p->fn_thread(p->arg, part, n, tid);
        if ((int)atomic_fetch_add(&p->done, 1) + 1 == n && atomic_load(&p->pending_sleeper))
            futex(&p->done, FUTEX_WAKE, 1);
    }
}

static void *worker_main(void *p_)
{
    worker_t *w = p_;
    pool_t *p = w->pool;
    char name[16]; /* what top -H and perf show; the kernel keeps 15 bytes */
    snprintf(name, sizeof(name), "nv-compute-%d", w->tid);
    pthread_setname_np(pthread_self(), name);
    unsigned seen = 0;
    for (;;) {
        seen = wait_while_equal(&p->gen, seen, &p->gen_sleepers);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            break;
        run_parts(p, seen, w->tid);
    }
    return NULL;
}

/* Wakes the workers for the job already stored in `next` (or for stop). */
static void publish(pool_t *p)
{
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->gen_sleepers) > 0)
        futex(&p->gen, FUTEX_WAKE, INT_MAX);
}

int pool_init(pool_t **out, int threads)
{
    *out = NULL;
    if (threads < 1 || threads > POOL_MAX_THREADS)
        return -EINVAL;
    pool_t *p = NULL;
    if (posix_memalign((void **)&p, 64, sizeof(*p)))
        return -ENOMEM;
    memset(p, 0, sizeof(*p));
    p->n = threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->gen_sleepers, 0);
    atomic_init(&p->pending_sleeper, 0);
    atomic_init(&p->stop, 0);
    int rc = -ENOMEM;
    if (threads > 1) {
        p->tids = calloc((size_t)threads - 1, sizeof(*p->tids));
        p->args = calloc((size_t)threads - 1, sizeof(*p->args));
        if (!p->tids || !p->args)
            goto fail;
    }
    for (int i = 0; i < threads - 1; i++) {
        p->args[i].pool = p;
        p->args[i].tid = i + 1;
        int e = pthread_create(&p->tids[i], NULL, worker_main, &p->args[i]);
        if (e) {
            rc = -e;
            goto fail;
        }
        p->started++;
    }
    *out = p;
    return 0;
fail:
    pool_free(p);
    return rc;
}

void pool_free(pool_t *p)
{
    if (!p)
        return;
    if (p->started > 0) {
        atomic_store(&p->stop, 1);
        publish(p);
        for (int i = 0; i < p->started; i++)
            pthread_join(p->tids[i], NULL);
    }
    free(p->tids);
    free(p->args);
    free(p);
}

int pool_threads(const pool_t *p)
{
    return p ? p->n : 1;
}

void pool_run(pool_t *p, pool_fn_cb fn, void *arg)
{
    pool_run_parts(p, pool_threads(p), fn, arg);
}

/* Runs a job of either callback kind (exactly one of fn, fn_thread non-NULL). */
static void run_job(pool_t *p, int parts, pool_fn_cb fn, pool_fn_thread_cb fn_thread, void *arg)
{
    if (parts < 1)
        return;
    if (!p || p->n == 1 || parts == 1) {
        for (int i = 0; i < parts; i++) {
            if (fn)
                fn(arg, i, parts);
            else
                fn_thread(arg, i, parts, 0);
        }
        return;
    }
    if (parts > POOL_MAX_PARTS)
        parts = POOL_MAX_PARTS;
    p->fn = fn;
    p->fn_thread = fn_thread;
    p->arg = arg;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    unsigned g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->next, (uint64_t)g << 32 | (uint64_t)parts << 16,
                          memory_order_release);
    publish(p); /* gen becomes g */
    run_parts(p, g, 0);
    unsigned v = atomic_load_explicit(&p->done, memory_order_acquire);
    while (v != (unsigned)parts) {
        v = spin_while_equal(&p->done, v);
        if (v == (unsigned)parts)
            break;
        atomic_store(&p->pending_sleeper, 1);
        v = atomic_load(&p->done);
        if (v != (unsigned)parts)
            futex(&p->done, FUTEX_WAIT, v);
        atomic_store(&p->pending_sleeper, 0);
        v = atomic_load_explicit(&p->done, memory_order_acquire);
    }
}

void pool_run_parts(pool_t *p, int parts, pool_fn_cb fn, void *arg)
{
    run_job(p, parts, fn, NULL, arg);
}

void pool_run_parts_thread(pool_t *p, int parts, pool_fn_thread_cb fn, void *arg)
{
    run_job(p, parts, NULL, fn, arg);
}

void pool_split(int n, int parts, int i, int *lo, int *hi)
{
    *lo = (int)((long long)n * i / parts);
    *hi = (int)((long long)n * (i + 1) / parts);
}
