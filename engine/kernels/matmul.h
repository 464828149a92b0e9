/* matmul.h - private to engine/: Y = X·W (+ bias) for the linear layers and the LM head.
 *
 * Weights are packed once at load into column panels: panel p holds W[:, 16p .. 16p+15] as
 * K rows of 16 contiguous values (zero-padded past N), panels one after another, so each
 * thread streams one contiguous region whatever M is. Values are kept as F32, F16, BF16 or
 * int8 (enum eng_dtype). BF16 panels keep rows in pairs, the operand layout of AMX's
 * TDPBF16PS (rows k and k+1, k even, as one row of 32 values: column j of row k, then of
 * row k+1), padded with zero rows to a multiple of 32. BF16X3 keeps each F32 weight as two
 * BF16, hi (the nearest) and lo (the nearest to w - hi), in BF16's layout with each row of
 * pairs of hi followed by the same row of lo (so a value takes 4 bytes, as F32). Int8 keeps
 * one F32 scale per column beside the panels (symmetric, per output channel: the column's
 * max |w| / 127); the kernels widen each value to q * scale (rounded to F32) as they load it.
 * W8A8 keeps the same values and scales in groups of four rows (matmul_q8.h) and multiplies
 * them by X quantized to int8 per row and block of 256 values of K, with integer sums: every
 * kernel gives the same bits for it (matmul_q8.c, matmul_q8_avx2.c, matmul_q8_avx512.c).
 * The kernel is chosen at run time: AMX when the CPU has AMX-TILE and AMX-BF16 and the OS
 * lets this process use the tiles, else an AVX-512 (F/BW/DQ/VL) path when the CPU has it and
 * the OS saves the ZMM registers, else an AVX2+FMA(+F16C) path when the CPU has that, else a
 * portable C path. Except AMX with BF16 weights, every path widens the weights to F32 and
 * multiplies with F32 X, so all give the same results within float rounding. AMX is the
 * AVX-512 path for F32, F16 and int8 weights; for BF16 weights it rounds X to BF16 (to
 * nearest even), multiplies on the AMX tiles and sums in F32, for every M, so a row's result
 * does not depend on the other rows of the product (relative error up to 2^-8 of
 * sum |x w| more than the others); for BF16X3 weights it splits X into BF16 xh + xl and
 * sums xh wh + xl wh + xh wl on the tiles (about 2^-16 of sum |x w|). The other paths
 * multiply BF16X3 weights as F32 values hi + lo. NANO_VLLM_KERNEL=generic|avx2|avx512|amx in the
 * environment, or mm_set_kernel, forces one (parity tests run each).
 * Columns are split over a persistent thread pool; OpenBLAS is set to one thread at
 * mm_init so its threads and the pool's never run at once. No product goes to OpenBLAS.
 * Batch invariance: on a given kernel, a row of Y is the same bits whatever else is in the
 * product (M, the row's place, the tiles), and on any thread count: every element is summed
 * in one fixed order over K (matmul_kern.h) and threads split columns, never a row's sum.
 *
 * Threads: an mm_t and the weights it multiplies are used by one thread at a time (the
 * scheduler thread); a packed weight is immutable and may be shared read-only.
 */
#ifndef NANO_VLLM_MATMUL_H
#define NANO_VLLM_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels/pool.h"

#define MM_NR 16 /* columns per panel */

/* From the portable kernel to the fastest (the order mm_set_kernel's auto choice relies on). */
enum mm_kernel {
    MM_KERNEL_AUTO = 0,
    MM_KERNEL_GENERIC,
    MM_KERNEL_AVX2,
    MM_KERNEL_AVX512,
    MM_KERNEL_AMX, /* AVX-512 tiles, and AMX for BF16 and BF16X3 weights */
};

typedef struct mm_weight {
    int K, N;     /* logical shape: Y[M,N] = X[M,K] · W[K,N] */
    int n_panels; /* ceil(N / MM_NR) */
    int dtype;    /* enum eng_dtype: ENG_DTYPE_F32, _F16, _BF16, _I8, _BF16X3 or _W8A8 */
    void *data;   /* owned; n_panels * K * MM_NR values (BF16, BF16X3: K rounded up to 32), 64-byte
                   * aligned (2 MiB when large) */
    size_t bytes; /* of data */
    float *scale; /* owned, I8 and W8A8 only (else NULL): (n_panels * MM_NR) column scales, W[k][n]
                   * = data value * scale[n]; 1 past N */
} mm_weight_t;

typedef struct mm mm_t;

/* Creates the context: a pool of `threads` threads (0 = one per online CPU) and the kernel
 * `kernel` names ("generic", "avx2", "avx512", "amx"; "auto" or "" = the best this CPU runs;
 * NULL = as NANO_VLLM_KERNEL says, else auto). A kernel this CPU cannot run is -ENOTSUP, an
 * unknown name -EINVAL. Writes one line into err on failure. */
int mm_init_kernel(mm_t **out, int threads, const char *kernel, char *err, size_t errlen);
/* mm_init_kernel with NULL: the kernel NANO_VLLM_KERNEL names, else the CPU's best. */
int mm_init(mm_t **out, int threads, char *err, size_t errlen);
void mm_free(mm_t *mm);
/* Whether this CPU and OS can run a kernel (AMX: also asks Linux for the tile state). */
int mm_kernel_supported(int kernel);
/* Forces a kernel (MM_KERNEL_AUTO = the best this CPU runs). -ENOTSUP if it cannot run here. */
int mm_set_kernel(mm_t *mm, int kernel);
int mm_get_kernel(const mm_t *mm);
const char *mm_kernel_name(int kernel);
/* 1 if the kernel's vector code is AVX-512 (avx512, and amx: AVX-512 plus the tiles). */
static inline int mm_kernel_avx512(int kernel)
{
    return kernel == MM_KERNEL_AVX512 || kernel == MM_KERNEL_AMX;
}
/* W8A8 products use VNNI's VPDPBUSD where the kernel is AVX2 or AVX-512 (or AMX) and the CPU
 * has AVX-VNNI or AVX512-VNNI (the default), else VPMADDUBSW + VPMADDWD; both give the same
 * bits. mm_set_vnni(mm, 0) forces the latter (tests run both); on = 1 is -ENOTSUP without
 * VNNI or on the generic kernel. The choice is reset by mm_set_kernel. */
int mm_set_vnni(mm_t *mm, int on);
int mm_get_vnni(const mm_t *mm);
/* The software prefetch distance of products whose weights stream once (M within one register
 * tile), in bytes ahead in each panel: `bytes` for 16- and 32-bit weights, `bytes_i8` for
 * int8 (I8, W8A8); 0 keeps the default (MM_PF_DIST, MM_PF_DIST_I8 in matmul.c). For
 * measurements (forward-bench --pf-dist); results do not depend on it. */
void mm_set_pf_dist(mm_t *mm, int bytes, int bytes_i8);
/* The pool, for other parallel work of the same thread (attention); borrowed. */
pool_t *mm_pool(mm_t *mm);

/* Packs W (K x N) from F32 source memory into *w, converting to dtype (ENG_DTYPE_AUTO or
 * F32 keep F32; F16 and BF16 round to nearest even, BF16X3 keeps hi and lo; I8 scales
 * column n by s = max_k |W[k][n]| / 127 (1 when the column is all zeros) and rounds W / s to
 * the nearest int8, ties to even, clamped to [-127, 127]). Element (k, n) of W is read at
 * src[k*ld + n], or at src[n*ld + k] when trans (e.g. the LM head: W = wteᵀ, src = wte
 * with ld = C). Returns 0, -EINVAL (bad shape/dtype) or -ENOMEM; *w is zeroed on failure.
 * The source is only read; the caller may free or unmap it afterwards. */
int mm_weight_init(mm_weight_t *w, const float *src, int K, int N, size_t ld, int trans, int dtype);
/* Same, packing with the pool's threads (large weights load faster). */
int mm_weight_init_mt(mm_t *mm, mm_weight_t *w, const float *src, int K, int N, size_t ld,
                      int trans, int dtype);
/* One source of mm_weight_pack: values as they lie in memory (a checkpoint's mapping, at any
 * alignment), in dtype ENG_DTYPE_F32, _F16 or _BF16. When fd > 0, the same bytes are also at
 * byte offset off of that open file, and packing reads them from it with pread a slab at a
 * time (faster than loads through a mapping; data is read where a read fails). */
typedef struct mm_source {
    const void *data;
    int dtype;
    int n; /* columns of W this source holds (N for a single one) */
    int fd;
    uint64_t off;
} mm_source_t;
/* mm_weight_init_mt from sources in any of those dtypes, with the same result as packing their
 * values widened to F32 (bit for bit): a source already in the kept dtype is copied, others
 * are widened a panel at a time. Several sources are W's columns side by side (transposed
 * only: the rows of q, k and v, or gate and up, as Hugging Face stores them, each ld
 * apart), their n summing to N. */
int mm_weight_pack(mm_t *mm, mm_weight_t *w, const mm_source_t *parts, int n_parts, int K, int N,
                   size_t ld, int trans, int dtype);
/* mm_weight_pack in two steps, so that a caller can tell the cost of fresh memory from that of
 * packing. mm_weight_alloc allocates *w for W (K x N) in dtype (as mm_weight_pack would) and
 * faults its memory in on the pool's threads, whole 2 MiB pages to each (0, -EINVAL or
 * -ENOMEM; *w zeroed on failure). mm_weight_fill packs W from parts (their n summing to w->N
 * when several) into it; on -EINVAL it frees *w. */
int mm_weight_alloc(mm_t *mm, mm_weight_t *w, int K, int N, int dtype);
int mm_weight_fill(mm_t *mm, mm_weight_t *w, const mm_source_t *parts, int n_parts, size_t ld,
                   int trans);
/* mm_weight_free on a zeroed or freed weight is a no-op. */
void mm_weight_free(mm_weight_t *w);
/* Reads column n of W as F32 into out (K values): the token embedding when W = wteᵀ. */
void mm_weight_column(const mm_weight_t *w, int n, float *out);
/* Reads element (k, n) of W as F32 (as stored, i.e. after the 16-bit rounding; for I8 the
 * dequantized value q * scale[n]). */
float mm_weight_get(const mm_weight_t *w, int k, int n);

/* What a product does to each element of Y as it stores it (an epilogue): nothing, or
 * GPT-2's tanh GELU (the FC layer's activation; see engine/kernels/vecmath.h). Applied to the final
 * value, after the bias and the accumulated Y were added. */
enum mm_epilogue { MM_EPI_NONE = 0, MM_EPI_GELU };

/* Y[M,N] = epi(X[M,K]·W (+ bias[N] when bias) (+ Y when accumulate)), epi an enum
 * mm_epilogue. Row m of X is at x + m*ldx, row m of Y at y + m*ldy; ldx >= K, ldy >= N;
 * X and Y must not overlap. M >= 0; M == 0 does nothing. Runs on the pool; called by the
 * thread that owns mm. Each element is computed by the same code whatever thread runs it.
 * With AMX and BF16 or BF16X3 weights, X is first rounded into a buffer mm owns, grown when
 * a larger product comes and kept (no allocation once the largest shape was seen); if it
 * cannot grow, the AVX-512 tiles compute the product instead. */
void mm_matmul(mm_t *mm, int M, const float *x, size_t ldx, const mm_weight_t *w, const float *bias,
               float *y, size_t ldy, int accumulate, int epi);

/* Y[M,N] = X[M,K]·W on the calling thread (no pool), W given as F32 panels the caller laid
 * out (attention's K and V, packed per head), 32-byte aligned: panel p holds W[0:K, 16p:16p+16] as
 * rows of MM_NR floats (columns past N zero), and starts panel_rows >= K rows after panel p-1, so a
 * product may use the first K rows of longer panels. Same tiles and order of k as
 * mm_matmul, so the result does not depend on which thread calls it. */
void mm_matmul_panels(const mm_t *mm, int M, const float *x, size_t ldx, const float *panels, int K,
                      int N, int panel_rows, float *y, size_t ldy);

#endif
