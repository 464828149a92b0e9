/* bounds.c - read bandwidth and FMA peak (see bounds.h). */
#include "bench/bounds.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
}

double bench_median(double *v, int n)
{
    bench_sort(v, (size_t)n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct read_job {
    const float *buf;
    size_t n;        /* floats, a multiple of 64 */
    float sink[256]; /* one slot per thread, keeps the loads alive */
} read_job_t;

#ifdef HAVE_X86
__attribute__((target("avx2"))) static float read_avx2(const float *p, size_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters)
{
    /* 12 independent chains: more than FMA latency x FMA ports (4 x 2 on Zen 3, 4 x 2 on
     * Haswell..Ice Lake), so the ports, not the chains, bound the rate. */
    __m256 a[12];
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps(1.0f + (float)i * 1e-3f);
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    }
    __m256 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

/* read_avx2 with 512-bit loads, eight accumulators and a prefetch ahead: a little faster
 * (about 30 against 27 GB/s, two threads, on the Xeon where it was written). */
__attribute__((target("avx512f"))) static float read_avx512(const float *p, size_t n)
{
    __m512 a[8];
    for (int i = 0; i < 8; i++)
        a[i] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        _mm_prefetch((const char *)(p + i + 1024), _MM_HINT_T0);
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++)
            a[l] = _mm512_add_ps(a[l], _mm512_load_ps(p + i + 16 * l));
    }
    for (; i < n; i += 16) /* n is a multiple of 64, not always of 128 */
        a[0] = _mm512_add_ps(a[0], _mm512_load_ps(p + i));
    for (int i = 1; i < 8; i++)
        a[0] = _mm512_add_ps(a[0], a[i]);
    return _mm512_reduce_add_ps(a[0]);
}

/* fma_avx2 with 512-bit registers: on CPUs with two 512-bit FMA units this is twice the AVX2
 * rate, and the kernels use it (engine/kernels/matmul_avx512.c), so it is the bound. Twelve chains
 * of 4-cycle FMAs keep both units busy. */
__attribute__((target("avx512f"))) static float fma_avx512(long iters)
{
    __m512 a[12];
    for (int i = 0; i < 12; i++)
        a[i] = _mm512_set1_ps(1.0f + (float)i * 1e-3f);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 12; i++)
        s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}
#endif

static float read_plain(const float *p, size_t n)
{
    float a[16] = {0};
    for (size_t i = 0; i < n; i += 16)
        for (int j = 0; j < 16; j++)
            a[j] += p[i + (size_t)j];
    float s = 0;
    for (int j = 0; j < 16; j++)
        s += a[j];
    return s;
}

/* The CPU checks are the kernels' own (engine/kernels/matmul.c): a bound uses what they can use. */
static int have_avx2_fma(void)
{
    return mm_kernel_supported(MM_KERNEL_AVX2);
}

static int have_avx512(void)
{
    return mm_kernel_supported(MM_KERNEL_AVX512);
}

/* The widest FMA chains this CPU runs: 16 (AVX-512) or 8 lanes (AVX2, or the portable code). */
static int fma_widest(void)
{
    return have_avx512() ? 16 : 8;
}

/* FLOP of one iteration of the FMA chains of `width` lanes: 12 chains. */
static double fma_flop_per_iter(int width)
{
    return 12.0 * width * 2;
}

static void read_cb(void *arg, int tid, int n)
{
    read_job_t *j = arg;
    int lo, hi;
    pool_split((int)(j->n / 64), n, tid, &lo, &hi);
    const float *p = j->buf + (size_t)lo * 64;
    size_t cnt = (size_t)(hi - lo) * 64;
#ifdef HAVE_X86
    if (have_avx512()) {
        j->sink[tid % 256] = read_avx512(p, cnt);
        return;
    }
    if (have_avx2_fma()) {
        j->sink[tid % 256] = read_avx2(p, cnt);
        return;
    }
#endif
    j->sink[tid % 256] = read_plain(p, cnt);
}

double bench_read_bandwidth(pool_t *pool, size_t bytes, int reps)
{
    bytes = bytes / 256 * 256;
    float *buf = NULL;
    /* On huge pages where the kernel allows them, as the packed weights are (matmul_pack.c):
     * with 4 KiB pages the TLB misses alone cost about a tenth of the rate. */
    if (posix_memalign((void **)&buf, (size_t)2 << 20, bytes))
        return 0.0;
#ifdef MADV_HUGEPAGE
    madvise(buf, bytes, MADV_HUGEPAGE); /* advice only */
#endif
    memset(buf, 0, bytes); /* fault the pages in: the passes measure reads only */
    read_job_t j = {.buf = buf, .n = bytes / sizeof(float)};
    double t[64];
    if (reps > 64)
        reps = 64;
    pool_run(pool, read_cb, &j); /* warm-up pass */
    for (int r = 0; r < reps; r++) {
        double t0 = clock_now_sec();
        pool_run(pool, read_cb, &j);
        t[r] = (double)bytes / (clock_now_sec() - t0);
    }
    free(buf);
    return bench_median(t, reps);
}

typedef struct fma_job {
    long iters;
    int width; /* lanes: 16 (AVX-512), else 8 (AVX2 when the CPU has it) */
    float sink[256];
} fma_job_t;

static void fma_cb(void *arg, int tid, int n)
{
    (void)n;
    fma_job_t *j = arg;
#ifdef HAVE_X86
    if (j->width == 16 && have_avx512()) {
        j->sink[tid % 256] = fma_avx512(j->iters);
        return;
    }
    if (have_avx2_fma()) {
        j->sink[tid % 256] = fma_avx2(j->iters);
        return;
    }
#endif
    float a[12][8];
    for (int i = 0; i < 12; i++)
        for (int l = 0; l < 8; l++)
            a[i][l] = 1.0f;
    for (long it = 0; it < j->iters; it++)
        for (int i = 0; i < 12; i++)
            for (int l = 0; l < 8; l++)
                a[i][l] = a[i][l] * 0.999999f + 1e-7f;
    j->sink[tid % 256] = a[0][0] + a[11][7];
}

double bench_fma_peak(pool_t *pool, int reps)
{
    return bench_fma_peak_width(pool, reps, fma_widest());
}

double bench_fma_peak_width(pool_t *pool, int reps, int width)
{
    width = width == 16 ? fma_widest() : 8;
    fma_job_t j = {.iters = 1000000, .width = width};
    double t[64];
    if (reps > 64)
        reps = 64;
    pool_run(pool, fma_cb, &j);
    /* Samples of >= 0.1 s: shorter ones read low on a shared host. */
    double t0 = clock_now_sec();
    pool_run(pool, fma_cb, &j);
    double dt = clock_now_sec() - t0;
    if (dt < 0.1)
        j.iters = (long)((double)j.iters * 0.1 / (dt > 1e-6 ? dt : 1e-6));
    for (int r = 0; r < reps; r++) {
        t0 = clock_now_sec();
        pool_run(pool, fma_cb, &j);
        t[r] = (double)j.iters * fma_flop_per_iter(width) * pool_threads(pool) /
               (clock_now_sec() - t0);
    }
    return bench_median(t, reps);
}

/* The BF16 tile peak (AMX TDPBF16PS) where the kernels use it: 0 when the CPU, the OS or the
 * kernel's permission says no. Four independent C tiles, each TDPBF16PS 16 x 16 x 32
 * multiply-adds (16384 FLOP), operands left in the tile registers: the instruction rate
 * alone, as the FMA chains measure the FMA rate. */
#if defined(__x86_64__)
#define HAVE_AMX_BENCH 1
#define AMX_FLOP_PER_ITER (4.0 * 16 * 16 * 32 * 2)

/* One thread's run: configure, multiply, release. It runs on threads of its own, never on
 * the engine's (the pool's threads and the caller keep their tile configuration loaded
 * between products, engine/kernels/matmul_amx.c). Sets *arg to the FLOP per CPU-second. */
static void *amx_thread(void *arg)
{
    double *io = arg;
    long iters = (long)io[0];
    mm_amx_config(32); /* every tile 16 rows of 64 bytes */
    double t0 = thread_cpu_now();
    for (long it = 0; it < iters; it++)
        __asm__ volatile("tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n\t"
                         "tdpbf16ps %%tmm7, %%tmm4, %%tmm1\n\t"
                         "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n\t"
                         "tdpbf16ps %%tmm7, %%tmm5, %%tmm3" ::);
    io[1] = (double)iters * AMX_FLOP_PER_ITER / (thread_cpu_now() - t0);
    mm_amx_release();
    return NULL;
}

/* Runs `threads` threads of iters iterations at once: wall seconds, and the best thread's
 * FLOP per CPU-second in *core. */
static double amx_run(int threads, long iters, double *core)
{
    pthread_t th[POOL_MAX_THREADS];
    double io[POOL_MAX_THREADS][2];
    int started = 0;
    double t0 = clock_now_sec();
    for (int i = 0; i < threads && i < POOL_MAX_THREADS; i++) {
        io[i][0] = (double)iters;
        io[i][1] = 0;
        if (pthread_create(&th[i], NULL, amx_thread, io[i]) == 0)
            started++;
        else
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double dt = clock_now_sec() - t0;
    *core = 0;
    for (int i = 0; i < started; i++)
        *core = io[i][1] > *core ? io[i][1] : *core;
    return started == threads ? dt : 0;
}
#endif

double bench_amx_peak(pool_t *pool, int reps, double *core)
{
    *core = 0.0;
#ifdef HAVE_AMX_BENCH
    if (!mm_kernel_supported(MM_KERNEL_AMX)) /* which also asks Linux for the tile state */
        return 0.0;
    const int n = pool_threads(pool);
    long iters = 200000;
    double t[64], c;
    if (reps > 64)
        reps = 64;
    double dt = amx_run(n, iters, &c);
    if (dt <= 0)
        return 0.0;
    if (dt < 0.1)
        iters = (long)((double)iters * 0.1 / (dt > 1e-6 ? dt : 1e-6));
    for (int r = 0; r < reps; r++) {
        dt = amx_run(n, iters, &c);
        t[r] = dt > 0 ? (double)iters * AMX_FLOP_PER_ITER * n / dt : 0;
        *core = c > *core ? c : *core;
    }
    return bench_median(t, reps);
#else
    (void)pool;
    (void)reps;
    return 0.0;
#endif
}

double bench_fma_core_peak_cpu(int reps)
{
    return bench_fma_core_peak_cpu_width(reps, fma_widest());
}

double bench_fma_core_peak_cpu_width(int reps, int width)
{
    width = width == 16 ? fma_widest() : 8;
    fma_job_t j = {.iters = 2000000, .width = width};
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = thread_cpu_now();
        fma_cb(&j, 0, 1);
        double f = (double)j.iters * fma_flop_per_iter(width) / (thread_cpu_now() - t0);
        best = f > best ? f : best;
    }
    return best;
}

int bench_shape_ensure(const char *dir, const char *arch, const char *shape, const char *dtype)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (access(path, F_OK) == 0)
        return 0;
    printf("writing a random %s %s checkpoint to %s ...\n", shape, dtype, dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* GPT-2 is make-checkpoint's default: its --arch option knows only the others' shapes. */
        if (!strcmp(arch, "gpt2"))
            execl(BENCH_PYTHON3, BENCH_PYTHON3, BENCH_MAKE_CHECKPOINT, "--out", dir, "--shape",
                  shape, "--dtype", dtype, "--seed", "1", (char *)NULL);
        else
            execl(BENCH_PYTHON3, BENCH_PYTHON3, BENCH_MAKE_CHECKPOINT, "--arch", arch, "--out", dir,
                  "--shape", shape, "--dtype", dtype, "--seed", "1", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return -1;
    return 0;
}

int bench_model_ensure(const char *dir)
{
    return bench_shape_ensure(dir, "gpt2", "124m", "f32");
}

int bench_in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p = c ? c + 1 : NULL;
    }
    return 0;
}
