/* pool_test.c - the compute thread pool: every thread runs every job exactly once, the
 * caller sees the workers' writes, every part of a many-part job runs exactly once (also
 * with the thread index passed to each part), the sleep/wake path after an idle gap works, and
 * init/free edge cases. Written to run under TSan as well (all sharing is via the pool). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kernels/pool.h"
#include "tests/check.h"

#define MAXT 8

typedef struct job {
    int round;
    int n_seen[MAXT];
    int ran[MAXT]; /* each slot written only by its own thread */
    long long sum[MAXT];
} job_t;

static void job_cb(void *arg, int tid, int n)
{
    job_t *j = arg;
    j->n_seen[tid] = n;
    j->ran[tid] = j->round;
    long long s = 0;
    for (int i = 0; i < 1000 * (tid + 1); i++)
        s += i ^ j->round;
    j->sum[tid] = s;
}

static void job_cb_tid(void *arg, int tid, int n)
{
    (void)n;
    job_t *j = arg;
    j->ran[tid] = j->round;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void test_rounds(int threads, int rounds, long gap_us)
{
    pool_t *p = NULL;
    CHECK_INT_EQ(pool_init(&p, threads), 0);
    if (!p)
        return;
    CHECK_INT_EQ(pool_threads(p), threads);
    job_t j;
    memset(&j, 0, sizeof(j));
    for (int r = 1; r <= rounds; r++) {
        j.round = r;
        pool_run(p, r % 2 ? job_cb : job_cb_tid, &j);
        for (int t = 0; t < threads; t++)
            CHECK_INT_EQ(j.ran[t], r);
        if (r % 2) {
            for (int t = 0; t < threads; t++) {
                CHECK_INT_EQ(j.n_seen[t], threads);
                long long s = 0;
                for (int i = 0; i < 1000 * (t + 1); i++)
                    s += i ^ r;
                CHECK_INT_EQ(j.sum[t], s);
            }
        }
        if (check_failed_count)
            break;
        if (gap_us)
            sleep_us(gap_us);
    }
    pool_free(p);
}

typedef struct parts_job {
    int round;
    int n;
    int seen[1000]; /* part i written only by the thread that claimed it */
} parts_job_t;

static void parts_cb(void *arg, int part, int n)
{
    parts_job_t *j = arg;
    if (n == j->n && part >= 0 && part < n)
        j->seen[part] += j->round;
}

/* Many parts over few threads: each part runs exactly once per job. */
static void test_parts(int threads, int rounds)
{
    pool_t *p = NULL;
    CHECK_INT_EQ(pool_init(&p, threads), 0);
    static parts_job_t j;
    memset(&j, 0, sizeof(j));
    for (int r = 1; r <= rounds && !check_failed_count; r++) {
        j.round = 1;
        j.n = 1 + (r * 37) % 1000;
        memset(j.seen, 0, sizeof(j.seen));
        pool_run_parts(p, j.n, parts_cb, &j);
        for (int i = 0; i < 1000; i++)
            if (j.seen[i] != (i < j.n)) {
                CHECK_INT_EQ(j.seen[i], i < j.n);
                break;
            }
    }
    pool_run_parts(p, 0, parts_cb, &j); /* no parts: nothing runs */
    pool_free(p);
}

/* Parts that know their thread: each part runs once, on a thread index in range, and no
 * two parts hold the same thread index at once (plain per-thread counters, so TSan sees a
 * race if they did). */
typedef struct thread_job {
    int n, threads, bad;
    int seen[1000];
    int busy[MAXT];     /* written only by the thread of that index */
    int per_thread[MAXT];
} thread_job_t;

static void thread_cb(void *arg, int part, int n, int thread)
{
    thread_job_t *j = arg;
    if (n != j->n || part < 0 || part >= n || thread < 0 || thread >= j->threads) {
        __atomic_fetch_add(&j->bad, 1, __ATOMIC_RELAXED);
        return;
    }
    if (j->busy[thread]++)
        __atomic_fetch_add(&j->bad, 1, __ATOMIC_RELAXED);
    j->seen[part]++;
    j->per_thread[thread]++;
    j->busy[thread]--;
}

static void test_parts_thread(int threads, int rounds)
{
    pool_t *p = NULL;
    CHECK_INT_EQ(pool_init(&p, threads), 0);
    static thread_job_t j;
    for (int r = 1; r <= rounds && !check_failed_count; r++) {
        memset(&j, 0, sizeof(j));
        j.threads = threads;
        j.n = 1 + (r * 53) % 1000;
        pool_run_parts_thread(p, j.n, thread_cb, &j);
        CHECK_INT_EQ(j.bad, 0);
        int total = 0;
        for (int t = 0; t < MAXT; t++)
            total += j.per_thread[t];
        CHECK_INT_EQ(total, j.n);
        for (int i = 0; i < 1000; i++)
            if (j.seen[i] != (i < j.n)) {
                CHECK_INT_EQ(j.seen[i], i < j.n);
                break;
            }
    }
    pool_free(p);
}

static void test_split(void)
{
    for (int n = 0; n < 50; n++) {
        for (int parts = 1; parts < 9; parts++) {
            int prev = 0;
            for (int i = 0; i < parts; i++) {
                int lo, hi;
                pool_split(n, parts, i, &lo, &hi);
                CHECK_INT_EQ(lo, prev);
                if (hi - lo > n / parts + 1 || hi - lo < n / parts)
                    CHECK_INT_EQ(hi - lo, n / parts);
                prev = hi;
            }
            CHECK_INT_EQ(prev, n);
        }
    }
}

int main(void)
{
    pool_t *p = (pool_t *)1;
    CHECK_INT_EQ(pool_init(&p, 0), -EINVAL);
    CHECK_INT_EQ(p == NULL, 1);
    CHECK_INT_EQ(pool_init(&p, POOL_MAX_THREADS + 1), -EINVAL);
    pool_free(NULL);
    CHECK_INT_EQ(pool_threads(NULL), 1);
    job_t j = {.round = 7};
    pool_run(NULL, job_cb_tid, &j);
    CHECK_INT_EQ(j.ran[0], 7);

    test_split();
    test_rounds(1, 100, 0);
    test_rounds(2, 3000, 0);    /* back to back: the spinning path */
    test_rounds(3, 1000, 0);    /* more threads than this machine may have cores */
    test_rounds(2, 40, 1000);   /* 1 ms gaps: workers go to sleep and must be woken */
    test_rounds(MAXT, 200, 0);
    test_rounds(4, 10, 0);      /* start and stop quickly */
    test_parts(1, 20);
    test_parts(2, 500);
    test_parts(3, 200);
    test_parts_thread(1, 20);
    test_parts_thread(2, 300);
    test_parts_thread(3, 100);

    if (check_failed_count) {
        fprintf(stderr, "pool_test: %d failures\n", check_failed_count);
        return 1;
    }
    printf("pool_test: ok\n");
    return 0;
}
