/* matmul.c - packed-panel GEMM for skinny and large M (see matmul.h): kernel choice,
 * blocking, threading and dispatch. Packing lives in matmul_pack.c, the register tiles in
 * matmul_generic.c, matmul_avx2.c and matmul_avx512.c, the AMX path for BF16 weights in
 * matmul_amx.c (its own loop over a part's panels, 32 x 32 tiles over the whole K).
 *
 * DESIGN: the calling thread splits the panels of W into contiguous ranges, long ones first
 * and shorter ones last (levels_for, matmul_cb), which the pool's threads claim in order;
 * each part walks its range in the order below and writes only its columns of Y, so no two
 * threads write the same memory. Loop nest per part:
 *   for each block of MC rows of X         (X block stays in L2)
 *     for each chunk of KC rows of W      (usually all of K; see MM_XBLOCK)
 *       for each np panels of the range
 *         for each register tile of <= MR rows: Y tile (+)= X tile · np panel chunks
 * MR and np are the kernel's (matmul_kern.h): up to 6 rows for AVX2 (one panel, or up to 4 when
 * the tiles have 1-3 rows) and the portable path (one panel), 8 rows of three adjacent panels
 * for AVX-512 (two for BF16). None of these choices changes a row's result: every tile sums
 * each element in the one order matmul_kern.h fixes, and the threads split columns, never a
 * row's sum over K, so a row gets the same bits in any product on any thread count. With
 * M <= MR there is one tile per np panels over the whole K: the weights stream once, with a
 * software prefetch a few KB ahead (memory bound) that, over the tile's last few KB, runs as a
 * second chunk of K and prefetches the start of the next tile's panels (run_streaming); on AVX2
 * a one-row tile of F32 weights spans more panels (MM_NP_GEMV_AVX2, gemv_body in
 * matmul_avx2.c), so decoding at batch 1 has more chains in flight. With more tiles per panel,
 * tile b of nb prefetches the b-th share of the next panel chunk (of each of the next np
 * panels), so DRAM traffic overlaps the compute of the current chunk instead of stalling the
 * first tile. Epilogues (GELU) are applied by the tile of the last K chunk as it stores Y. AMX
 * with BF16 weights: the calling thread first rounds X into mm->amx_x, then the parts are the
 * same panel ranges (part_range), each walked by mm_amx_range: per two panels, per 32 rows of
 * X, one tile over the whole K.
 */
#include "engine/kernels/matmul.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/matmul_q8.h"

/* Blocking, sized from the caches (32 KiB L1d, 512 KiB L2 per core on the AVX2 EPYC; the
 * AVX-512 Xeon has 48 KiB and 2 MiB), not tuned: on a shared host the alternatives could not
 * be told apart (on the Xeon, K in chunks for every M measured the same as whole K). X rows
 * are read by every panel, so a block of X should stay in L2: when MM_XBLOCK bytes hold at
 * least MM_MC_MIN full rows, a tile runs over the whole K (its Y tile is loaded and stored
 * once). Otherwise (K = 3072) K is cut into chunks of MM_KC rows (16 KiB of an F32 panel,
 * half of L1d) and X into blocks of MM_MC rows. */
#ifndef MM_XBLOCK
#define MM_XBLOCK (256 * 1024)
#endif
#define MM_MC_MIN 48
#define MM_KC 256
_Static_assert(MM_KC % MM_I8_KC == 0, "I8 chunks must not straddle the driver's K chunks");
#define MM_MC 120
/* Near prefetch distance in the panel stream when M <= MR, in bytes of each panel: any of
 * 1-8 KB helps on the AVX-512 Xeon and the AVX2 EPYC does not care (bench/mm-bench, M = 1).
 * On the AVX-512 Zen 5 EPYC, a GPT-2 decode step at batch 1 (forward-bench --pf-dist,
 * steps interleaved over the distances) ran 4-8% faster at 1.5-2 KB than at 4 KB with F32,
 * F16 and BF16 weights on both the avx512 and avx2 kernels (1 KB and 8 KB slower), while
 * int8 weights ran as fast or faster at 4 KB: 2 KB, and 4 KB for int8 (I8 and W8A8). */
#ifndef MM_PF_DIST
#define MM_PF_DIST 2048
#endif
#ifndef MM_PF_DIST_I8
#define MM_PF_DIST_I8 4096
#endif

typedef void (*tile_fn)(const mm_tile_t *t);

struct mm {
    pool_t *pool; /* owned */
    int kernel;   /* enum mm_kernel, never AUTO */
    tile_fn tile;
    int mr;       /* rows per register tile of that kernel (MM_MR_*) */
    int np;       /* panels per register tile: 1, or more (mm_np_avx2, mm_np_avx512) */
    int pf_dist, pf_dist_i8; /* MM_PF_DIST, MM_PF_DIST_I8 unless mm_set_pf_dist said otherwise */
    /* AMX buffers, grown when a larger product comes and kept (no allocation per step once
     * the largest shapes were seen); owned, 64-byte aligned. */
    uint16_t *amx_x;     /* the product's X in BF16 (mm_amx_pack_x) */
    size_t amx_x_bytes;
    float *amx_c;        /* MM_AMX_C floats per pool thread: their C tiles */
    int q8_form;         /* enum mm_q8_form of W8A8 products (matmul_q8.h) */
    mm_q8_x_t q8x;       /* owned: X quantized for a W8A8 product, grown and kept */
};

static int cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return 0;
    /* F16C (CPUID.1:ECX bit 29): clang 14's __builtin_cpu_supports does not know it. Every
     * AVX2 CPU so far has it, but the F16 tile needs it, so check. */
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return 0;
#endif
}

#if defined(__x86_64__) || defined(__i386__)
/* Whether the OS saves every state component in `need` (XCR0 bits) on a context switch: read
 * with XGETBV once CPUID.1:ECX says OSXSAVE (bit 27). */
static int os_saves(unsigned need)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & need) == need;
}
#endif

/* AVX-512 F, BW, DQ and VL in the CPU, and the OS saving the opmask and ZMM registers:
 * XCR0 bits 1, 2 (SSE, AVX) and 5, 6, 7 (opmask, ZMM0-15 upper halves, ZMM16-31). */
static int cpu_has_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    if (!cpu_has_avx2())
        return 0;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return 0;
    return os_saves((1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7));
#else
    return 0;
#endif
}

/* AMX with BF16 products: CPUID.(7,0):EDX bits 24 (AMX-TILE) and 22 (AMX-BF16), the OS
 * saving the tile state (XCR0 bits 17 and 18), and the kernel's permission for this process
 * to use it (Linux asks each process to request the large XTILEDATA state, feature 18, before
 * its first tile instruction; asking again is harmless). The AVX-512 tiles do the rest. */
static int cpu_has_amx(void)
{
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    if (!cpu_has_avx512())
        return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 22)) ||
        !os_saves((1u << 17) | (1u << 18)))
        return 0;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

int mm_kernel_supported(int kernel)
{
    switch (kernel) {
    case MM_KERNEL_GENERIC:
        return 1;
    case MM_KERNEL_AVX2:
        return cpu_has_avx2();
    case MM_KERNEL_AVX512:
        return cpu_has_avx512();
    case MM_KERNEL_AMX:
        return cpu_has_amx();
    default:
        return 0;
    }
}

const char *mm_kernel_name(int kernel)
{
    switch (kernel) {
    case MM_KERNEL_GENERIC:
        return "generic";
    case MM_KERNEL_AVX2:
        return "avx2";
    case MM_KERNEL_AVX512:
        return "avx512";
    case MM_KERNEL_AMX:
        return "amx";
    default:
        return "auto";
    }
}

int mm_set_kernel(mm_t *mm, int kernel)
{
    if (kernel == MM_KERNEL_AUTO) {
        /* enum mm_kernel lists the kernels from the portable one to the fastest. */
        kernel = MM_KERNEL_AMX;
        while (!mm_kernel_supported(kernel))
            kernel--;
    } else if (kernel < MM_KERNEL_GENERIC || kernel > MM_KERNEL_AMX) {
        return -EINVAL;
    } else if (!mm_kernel_supported(kernel)) {
        return -ENOTSUP;
    }
    switch (kernel) {
    case MM_KERNEL_GENERIC:
        mm->tile = mm_tile_generic;
        mm->mr = MM_MR_GENERIC;
        mm->np = 1;
        break;
    case MM_KERNEL_AVX2:
        mm->tile = mm_tile_avx2;
        mm->mr = MM_MR_AVX2;
        mm->np = 1;
        break;
    default: /* AVX-512, and AMX, whose tiles are AVX-512's except for BF16 weights */
        mm->tile = mm_tile_avx512;
        mm->mr = MM_MR_AVX512;
        mm->np = MM_NP_AVX512;
        break;
    }
    mm->kernel = kernel;
    /* W8A8: the kernel's VNNI form where the CPU has it (AMX uses AVX-512's). */
    mm->q8_form = kernel == MM_KERNEL_GENERIC ? MM_Q8_GENERIC
                  : kernel == MM_KERNEL_AVX2  ? MM_Q8_AVX2
                                              : MM_Q8_AVX512;
    if (kernel != MM_KERNEL_GENERIC && mm_q8_form_supported(mm->q8_form + 1))
        mm->q8_form++;
    return 0;
}

int mm_set_vnni(mm_t *mm, int on)
{
    int base = mm->q8_form == MM_Q8_AVX2_VNNI || mm->q8_form == MM_Q8_AVX512_VNNI ? mm->q8_form - 1
                                                                                  : mm->q8_form;
    if (base == MM_Q8_GENERIC)
        return on ? -ENOTSUP : 0;
    if (on && !mm_q8_form_supported(base + 1))
        return -ENOTSUP;
    mm->q8_form = base + (on != 0);
    return 0;
}

int mm_get_vnni(const mm_t *mm)
{
    return mm->q8_form == MM_Q8_AVX2_VNNI || mm->q8_form == MM_Q8_AVX512_VNNI;
}

void mm_set_pf_dist(mm_t *mm, int bytes, int bytes_i8)
{
    mm->pf_dist = bytes > 0 ? bytes : MM_PF_DIST;
    mm->pf_dist_i8 = bytes_i8 > 0 ? bytes_i8 : MM_PF_DIST_I8;
}

int mm_get_kernel(const mm_t *mm)
{
    return mm->kernel;
}

pool_t *mm_pool(mm_t *mm)
{
    return mm->pool;
}

int mm_init(mm_t **out, int threads, char *err, size_t errlen)
{
    return mm_init_kernel(out, threads, NULL, err, errlen);
}

int mm_init_kernel(mm_t **out, int threads, const char *kernel, char *err, size_t errlen)
{
    *out = NULL;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)(n < POOL_MAX_THREADS ? n : POOL_MAX_THREADS) : 1;
    }
    mm_t *mm = calloc(1, sizeof(*mm));
    if (!mm) {
        snprintf(err, errlen, "matmul: out of memory");
        return -ENOMEM;
    }
    int rc = mm_set_kernel(mm, MM_KERNEL_AUTO);
    const char *name = kernel ? kernel : getenv("NANO_VLLM_KERNEL");
    if (rc == 0 && name && *name && strcmp(name, "auto") != 0) {
        /* The names are mm_kernel_name's; none matching is -EINVAL. */
        int k = MM_KERNEL_GENERIC;
        while (k <= MM_KERNEL_AMX && strcmp(name, mm_kernel_name(k)) != 0)
            k++;
        rc = k <= MM_KERNEL_AMX ? mm_set_kernel(mm, k) : -EINVAL;
        if (rc) {
            snprintf(err, errlen, "%s: '%s' %s", kernel ? "kernel" : "NANO_VLLM_KERNEL", name,
                     rc == -EINVAL ? "is not one of auto, generic, avx2, avx512, amx"
                                   : "is not supported by this CPU");
            goto fail;
        }
    }
    mm_set_pf_dist(mm, 0, 0);
    void *c = NULL;
    if (posix_memalign(&c, 64, (size_t)threads * MM_AMX_C * sizeof(float))) {
        snprintf(err, errlen, "matmul: out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    mm->amx_c = c;
    rc = pool_init(&mm->pool, threads);
    if (rc) {
        snprintf(err, errlen, "matmul: cannot start %d compute threads (%s)", threads,
                 strerror(-rc));
        goto fail;
    }
    /* Our pool does the parallel work; BLAS calls made elsewhere must not start a second
     * set of busy threads competing for the same cores. */
    openblas_set_num_threads(1);
    *out = mm;
    return 0;
fail:
    mm_free(mm);
    return rc;
}

void mm_free(mm_t *mm)
{
    if (!mm)
        return;
    pool_free(mm->pool);
    free(mm->amx_x);
    free(mm->amx_c);
    mm_q8_x_free(&mm->q8x);
    free(mm);
}

/* ---- the product ---- */

typedef struct mm_job {
    const mm_t *mm;
    int M;
    const float *x;
    size_t ldx;
    const mm_weight_t *w;
    const float *bias;
    float *y;
    size_t ldy;
    int accumulate;
    int epi;
    int threads; /* of the pool: parts come in levels of this many */
    int panel_rows; /* rows from one panel to the next: w->K, or more (mm_matmul_panels) */
    const mm_q8_job_t *q8; /* W8A8 weights: the product as matmul_q8.c runs it */
} mm_job_t;

/* Panels per register tile of mr rows of a dtype (matmul_kern.h). */
static int tile_np(const mm_t *mm, int mr, int dtype)
{
    if (mr == 1 && mm_gemv_dtype(dtype) && mm->kernel == MM_KERNEL_AVX2)
        return MM_NP_GEMV_AVX2;
    return mm->kernel == MM_KERNEL_AVX2 ? mm_np_avx2(mr) : mm->np > 1 ? mm_np_avx512(mr, dtype) : 1;
}

/* Runs tile t; an I8 tile longer than MM_I8_KC rows of K runs as its chunks of MM_I8_KC, in
 * order, each adding its scaled sum to the Y the previous one stored (matmul_kern.h), with
 * the prefetch stream where the whole tile would have it. t starts at a multiple of
 * MM_I8_KC rows (row 0, or a driver chunk of MM_KC). */
static void run_tile(tile_fn tile, const mm_tile_t *t, size_t row_bytes)
{
    if (t->dtype != ENG_DTYPE_I8 || t->kc <= MM_I8_KC) {
        tile(t);
        return;
    }
    mm_tile_t c = *t;
    for (int kb = 0; kb < t->kc; kb += MM_I8_KC) {
        c.kc = t->kc - kb < MM_I8_KC ? t->kc - kb : MM_I8_KC;
        c.x = t->x + kb;
        c.w = (const char *)t->w + (size_t)kb * row_bytes;
        c.pf = t->pf + (ptrdiff_t)kb * t->pfstep;
        c.bias = kb == 0 ? t->bias : NULL;
        c.load_y = kb == 0 ? t->load_y : 1;
        c.gelu = t->gelu && kb + c.kc == t->kc;
        tile(&c);
    }
}

/* Runs t, a tile of the only row block (M <= MR: the weights stream once), with its
 * software prefetch pf_dist bytes ahead in each of its panels. Near the end of the panels
 * that would touch the next panels of the same tile (already streaming) or nothing, so the
 * next tile's panels would start cold, one pf_dist of each but the first, on every tile: an
 * eighth of 16-bit and a quarter of int8 weights at K = 768 and four panels. Instead the
 * tile runs as two chunks of K (exact: the second starts from the Y the first stored,
 * matmul_kern.h): the first prefetches ahead in its own panels, the last pf_dist bytes or
 * more (chunk boundaries even, and at multiples of MM_I8_KC for I8) prefetch the start of
 * the next tile's panels when `more` says the range has a next tile. */
static void run_streaming(const mm_job_t *j, mm_tile_t *t, tile_fn tile, size_t row_bytes, int more)
{
    const int kc = t->kc, dist = t->dtype == ENG_DTYPE_I8 ? j->mm->pf_dist_i8 : j->mm->pf_dist;
    const char *wp = t->w;
    int ka = kc - (int)((dist + row_bytes - 1) / row_bytes);
    ka = t->dtype == ENG_DTYPE_I8 ? ka / MM_I8_KC * MM_I8_KC : ka / 2 * 2;
    t->pf = wp + dist;
    t->pfstep = (ptrdiff_t)row_bytes;
    if (!more || ka <= 0) {
        run_tile(tile, t, row_bytes);
        return;
    }
    mm_tile_t b = *t;
    t->kc = ka;
    t->gelu = 0;
    run_tile(tile, t, row_bytes);
    b.kc = kc - ka;
    b.x = t->x + ka;
    b.w = wp + (size_t)ka * row_bytes;
    b.bias = NULL;
    b.load_y = 1;
    b.pf = wp + (size_t)t->np * (size_t)t->wstride;
    run_tile(tile, &b, row_bytes);
}

static void matmul_range(const mm_job_t *j, int p0, int p1)
{
    if (j->q8) {
        mm_q8_range(j->q8, p0, p1);
        return;
    }
    const mm_weight_t *w = j->w;
    const int K = w->K;
    const size_t row_bytes = MM_NR * mm_dtype_size(w->dtype);
    const size_t panel_bytes = (size_t)j->panel_rows * row_bytes;
    const char *base = w->data;
    tile_fn tile = j->mm->tile;
    const int MR = j->mm->mr;
    mm_tile_t t = {.ldx = j->ldx, .dtype = w->dtype, .ldy = j->ldy,
                   .wstride = (ptrdiff_t)panel_bytes};

    int kc_max = K, mc_max = j->M;
    if (j->M > MR) {
        int rows_fit = (int)(MM_XBLOCK / ((size_t)K * sizeof(float)));
        if (rows_fit < j->M) {
            if (rows_fit >= MM_MC_MIN) {
                mc_max = rows_fit / MR * MR;
            } else {
                kc_max = MM_KC;
                mc_max = j->M < MM_MC ? j->M : MM_MC;
            }
        }
    }
    for (int m0 = 0; m0 < j->M; m0 += mc_max) {
        int mc = j->M - m0 < mc_max ? j->M - m0 : mc_max;
        int nb = (mc + MR - 1) / MR; /* near-equal row tiles: 8 rows are 4 + 4 */
        /* Of the largest tile. */
        const int npt = tile_np(j->mm, (mc + nb - 1) / nb, w->dtype);
        for (int k0 = 0; k0 < K; k0 += kc_max) {
            int kc = K - k0 < kc_max ? K - k0 : kc_max;
            for (int p = p0, np; p < p1; p += np) {
                const char *wp = base + (size_t)p * panel_bytes + (size_t)k0 * row_bytes;
                int n0 = p * MM_NR;
                np = p1 - p < npt ? p1 - p : npt;
                /* Four panels left for three-panel tiles: two of two, not three and a
                 * one-panel tile (one W load per broadcast of X: load-bound). */
                if (npt == 3 && p1 - p == 4)
                    np = 2;
                t.np = np;
                t.w = wp;
                t.scale = w->scale ? w->scale + n0 : NULL;
                t.kc = kc;
                t.nc = w->N - n0 < np * MM_NR ? w->N - n0 : np * MM_NR;
                t.load_y = j->accumulate || k0 > 0;
                t.gelu = j->epi == MM_EPI_GELU && k0 + kc == K;
                t.bias = j->bias && k0 == 0 ? j->bias + n0 : NULL;
                for (int b = 0; b < nb; b++) {
                    int r0, r1;
                    pool_split(mc, nb, b, &r0, &r1);
                    t.x = j->x + (size_t)(m0 + r0) * j->ldx + k0;
                    t.y = j->y + (size_t)(m0 + r0) * j->ldy + n0;
                    t.mr = r1 - r0;
                    if (nb == 1) {
                        run_streaming(j, &t, tile, row_bytes, p + np < p1);
                        continue;
                    }
                    /* The next tile's panel chunks (for one panel per tile: the next
                     * contiguous bytes of this range); the step rounds up so the nb
                     * shares cover all of it. */
                    ptrdiff_t step = ((ptrdiff_t)row_bytes + nb - 1) / nb;
                    t.pf = wp + (size_t)np * panel_bytes + (size_t)b * (size_t)kc * (size_t)step;
                    t.pfstep = step;
                    run_tile(tile, &t, row_bytes);
                }
            }
        }
    }
}

/* Panel ranges of a product, in the order the pool's threads claim them: level 0 is
 * `threads` parts covering half of the panels, level 1 a quarter, and so on, the last level
 * taking the rest. The first ranges are long contiguous streams; the last are short, so the
 * threads finish together: a thread that is late (asleep, or its core taken by other work)
 * costs the others at most a small part, and the idle tail of the product is a small part
 * instead of an eighth of it. Which thread computes a column does not change its value. */
#define MM_MAX_LEVELS 5
/* When the weights stream once (M within one register tile, a decode step at batch 1 or a
 * few), parts are made smaller, down to MM_PART_BYTES of weights or two panels, whichever is
 * larger: the owner of a job waits on average half of the last part another thread holds,
 * and with five levels the LM head's last parts were 98 panels (2.4 MB of F16, some 75 us of
 * one core's stream) and an F16 FC's six. A part costs a start of its streams, so not less. */
#define MM_MAX_LEVELS_STREAM 12
#define MM_PART_BYTES (32 * 1024)

static int levels_for(int n_panels, int threads, int stream, size_t panel_bytes)
{
    const int max = stream ? MM_MAX_LEVELS_STREAM : MM_MAX_LEVELS;
    int levels = 1;
    while (levels < max && (n_panels >> levels) >= 2 * threads &&
           (!stream || (size_t)((n_panels >> levels) / threads) * panel_bytes >= MM_PART_BYTES))
        levels++;
    return levels;
}

/* The parts of a product on the pool: `threads` per level (levels_for), or 0 when the product
 * is too small to be worth waking the workers (the calling thread computes it alone). mr is
 * the rows of the kernel's register tile: with M <= mr the weights stream once. */
static int parts_for(int M, const mm_weight_t *w, int threads, int mr)
{
    if ((double)M * w->K * w->N < 32768.0)
        return 0;
    size_t panel_bytes = mm_panel_values(w->dtype, w->K) * mm_dtype_size(w->dtype);
    return threads * levels_for(w->n_panels, threads, M <= mr, panel_bytes);
}

/* Part `part` of n (n / threads levels) of a product over P panels: panels [*p0, *p1). */
static void part_range(int P, int threads, int part, int n, int *p0, int *p1)
{
    const int levels = n / threads, level = part / threads;
    int lo = P - (P >> level), hi = level + 1 < levels ? P - (P >> (level + 1)) : P;
    pool_split(hi - lo, threads, part % threads, p0, p1);
    *p0 += lo;
    *p1 += lo;
}

static void matmul_cb(void *arg, int part, int n)
{
    const mm_job_t *j = arg;
    int p0, p1;
    part_range(j->w->n_panels, j->threads, part, n, &p0, &p1);
    if (p0 < p1)
        matmul_range(j, p0, p1);
}

/* ---- BF16 weights on AMX (matmul_amx.c) ---- */

typedef struct amx_run {
    const mm_amx_job_t *job;
    float *c; /* MM_AMX_C per thread */
    int threads;
} amx_run_t;

static void amx_cb(void *arg, int part, int n, int thread)
{
    const amx_run_t *r = arg;
    int p0, p1;
    part_range(r->job->w->n_panels, r->threads, part, n, &p0, &p1);
    if (p0 < p1)
        mm_amx_range(r->job, p0, p1, r->c + (size_t)thread * MM_AMX_C);
}

/* The product on AMX; -ENOMEM (nothing done) when its buffers cannot grow. */
static int matmul_amx(mm_t *mm, int M, const float *x, size_t ldx, const mm_weight_t *w,
                      const float *bias, float *y, size_t ldy, int accumulate, int epi,
                      int threads)
{
    const int Mp = (M + 15) / 16 * 16;
    const int x3 = w->dtype == ENG_DTYPE_BF16X3;
    const size_t plane = (size_t)Mp * mm_amx_x_ld(w->K);
    const size_t need = plane * sizeof(uint16_t) * (x3 ? 2 : 1);
    if (mm->amx_x_bytes < need) {
        void *p = NULL;
        if (posix_memalign(&p, 64, need))
            return -ENOMEM;
        free(mm->amx_x);
        mm->amx_x = p;
        mm->amx_x_bytes = need;
    }
    uint16_t *xl = x3 ? (uint16_t *)mm->amx_x + plane : NULL;
    mm_amx_pack_x(M, Mp, w->K, x, ldx, mm->amx_x, xl);
    mm_amx_job_t job = {.xb = mm->amx_x, .xl = xl, .M = M, .w = w, .bias = bias, .y = y,
                        .ldy = ldy, .accumulate = accumulate, .gelu = epi == MM_EPI_GELU};
    amx_run_t r = {.job = &job, .c = mm->amx_c, .threads = threads};
    const int parts = parts_for(M, w, threads, 0);
    if (parts)
        pool_run_parts_thread(mm->pool, parts, amx_cb, &r);
    else
        mm_amx_range(&job, 0, w->n_panels, r.c);
    return 0;
}

/* ---- W8A8 weights (matmul_q8.c) ---- */

typedef struct q8_quant {
    mm_t *mm;
    int M, K;
    const float *x;
    size_t ldx;
} q8_quant_t;

static void q8_quant_cb(void *arg, int part, int n)
{
    const q8_quant_t *q = arg;
    int m0, m1;
    pool_split(q->M, n, part, &m0, &m1);
    mm_q8_quantize(q->mm->q8_form, &q->mm->q8x, m0, m1, q->K, q->x, q->ldx);
}

/* Quantizes the first rows of X into mm->q8x, on the pool when there are many: all M, or
 * as many as the buffer holds when it cannot grow (halving), 0 when not even one fits. */
static int q8_prepare(mm_t *mm, int M, const float *x, size_t ldx, int K)
{
    int rows = M;
    while (rows > 0 && mm_q8_x_reserve(&mm->q8x, rows, K, mm_q8_wide(mm->q8_form, rows)))
        rows /= 2;
    if (rows == 0)
        return 0;
    q8_quant_t q = {.mm = mm, .M = rows, .K = K, .x = x, .ldx = ldx};
    if ((double)rows * K >= 65536.0)
        pool_run(mm->pool, q8_quant_cb, &q);
    else
        q8_quant_cb(&q, 0, 1);
    return rows;
}

void mm_matmul(mm_t *mm, int M, const float *x, size_t ldx, const mm_weight_t *w,
               const float *bias, float *y, size_t ldy, int accumulate, int epi)
{
    if (M <= 0)
        return;
    const int threads = pool_threads(mm->pool);
    /* BF16 on AMX for every M (one row's result is the same in any batch). If its buffers
     * cannot grow (out of memory), the AVX-512 tiles compute this product instead. */
    if (mm->kernel == MM_KERNEL_AMX &&
        (w->dtype == ENG_DTYPE_BF16 || w->dtype == ENG_DTYPE_BF16X3) &&
        matmul_amx(mm, M, x, ldx, w, bias, y, ldy, accumulate, epi, threads) == 0)
        return;
    mm_job_t j = {.mm = mm, .M = M, .x = x, .ldx = ldx, .w = w, .bias = bias, .y = y,
                  .ldy = ldy, .accumulate = accumulate, .epi = epi, .threads = threads,
                  .panel_rows = mm_panel_rows(w->dtype, w->K)};
    mm_q8_job_t q8;
    if (w->dtype == ENG_DTYPE_W8A8) {
        /* X is quantized first, in mm's buffer, grown when a larger product comes and kept.
         * When it cannot grow, the product runs in parts of the rows it holds (a row's result
         * does not depend on the others); out of memory for a single row, Y is NaN. */
        int rows = q8_prepare(mm, M, x, ldx, w->K);
        if (rows == 0) {
            for (int m = 0; m < M; m++)
                for (int n = 0; n < w->N; n++)
                    y[(size_t)m * ldy + n] = NAN;
            return;
        }
        if (rows < M) {
            mm_matmul(mm, rows, x, ldx, w, bias, y, ldy, accumulate, epi);
            mm_matmul(mm, M - rows, x + (size_t)rows * ldx, ldx, w, bias, y + (size_t)rows * ldy,
                      ldy, accumulate, epi);
            return;
        }
        q8 = (mm_q8_job_t){.form = mm->q8_form,
                           .M = M,
                           .qx = &mm->q8x,
                           .w = w,
                           .bias = bias,
                           .y = y,
                           .ldy = ldy,
                           .accumulate = accumulate,
                           .gelu = epi == MM_EPI_GELU,
                           .pf_dist = mm->pf_dist_i8};
        j.q8 = &q8;
    }
    const int mr = j.q8 ? mm_q8_mr(mm->q8_form) : mm->mr;
    const int parts = parts_for(M, w, threads, mr);
    if (parts)
        pool_run_parts(mm->pool, parts, matmul_cb, &j);
    else
        matmul_range(&j, 0, w->n_panels);
}

void mm_matmul_panels(const mm_t *mm, int M, const float *x, size_t ldx, const float *panels,
                      int K, int N, int panel_rows, float *y, size_t ldy)
{
    if (M <= 0 || K <= 0 || N <= 0)
        return;
    /* A weight that borrows the caller's panels (never freed here). */
    mm_weight_t w = {.K = K, .N = N, .n_panels = (N + MM_NR - 1) / MM_NR,
                     .dtype = ENG_DTYPE_F32, .data = (void *)(uintptr_t)panels};
    mm_job_t j = {.mm = mm, .M = M, .x = x, .ldx = ldx, .w = &w, .y = y, .ldy = ldy,
                  .threads = 1, .panel_rows = panel_rows};
    matmul_range(&j, 0, w.n_panels);
}
