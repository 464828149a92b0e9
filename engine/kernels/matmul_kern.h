/* matmul_kern.h - private to the matmul files: one register tile of the packed GEMM, and
 * the AMX path for BF16 weights (its own loop over panels, below).
 *
 * A tile is Y[mr, nc] (+)= X[mr, k0:k0+kc] · P[k0:k0+kc, 0:nc] where P is np adjacent packed
 * panels side by side (MM_NR columns each, zero-padded) and mr is at most the kernel's rows
 * per tile (below). The order of the sums is fixed by construction, the same for every tile
 * shape, so a row's result does not depend on how many rows the product has, which tile it
 * falls in, how many panels that tile spans or which thread runs it: each element starts
 * from its bias (or zero) plus Y when the tile loads Y, then adds x[k] * w[k] for k in
 * order, one rounding (FMA) or two (the portable tile) per step, in one chain. w[k] is the
 * stored value widened to F32. I8 sums the raw int8 products the same way, from zero, over
 * each chunk of MM_I8_KC rows of K (chunks at multiples of MM_I8_KC from row 0: the driver
 * never gives an I8 tile more), and the tile adds the chunk's sum times the column scale to
 * its start value, one FMA: one scaling per chunk instead of one per weight, at fixed places,
 * so it does not depend on M either. K cut into chunks (Y stored and loaded between them,
 * exact in F32) gives the same bits as one pass: an element without bias starts from the
 * loaded Y itself (-0 included), not 0 + Y. Never several chains per element: the kernels
 * get independent FMA chains from more panels per tile when the tile has few rows
 * (mm_np_avx2).
 */
#ifndef NANO_VLLM_MATMUL_KERN_H
#define NANO_VLLM_MATMUL_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

/* Rows and panels per register tile, per kernel. AVX2: up to 6 x 16, 12 ymm accumulators (of
 * 16 registers); 1 and 2 rows take more panels (mm_np_avx2), so a one-row tile has 8 chains
 * of FMAs and keeps up with memory. AVX-512: 8 x 48 = 24 zmm accumulators (8 x 32 for
 * BF16); see matmul_avx512.c for why. The driver cuts the rows of X into near-equal tiles of
 * at most MM_MR_* rows, and gives a tile the panels of the largest tile's count while its
 * range has that many left (the last of a range may get fewer). */
#define MM_I8_KC 256 /* rows of K per I8 chunk; the driver's K chunks are multiples of it */
#define MM_MR_GENERIC 6
#define MM_MR_AVX2 6
#define MM_NP_AVX2 4
#define MM_MR_AVX512 8
#define MM_NP_AVX512 4

/* Panels per AVX-512 tile of mr rows of a dtype: 3 (the 8 x 48 tile, 24 accumulators), 2 for
 * BF16 and BF16X3 (8 x 32: their rows come in pairs, and the loop over pairs kept accumulators
 * on the stack with three panels), 4 for 1 and 2 rows, whose one or two chains per panel
 * would otherwise be too few to keep up with memory (1 thread, weights in cache, M = 1: F16
 * and int8 took 1.3-1.6 times as long with 2 panels as the two-chain one-row tile before
 * it). */
static inline int mm_np_avx512(int mr, int dtype)
{
    return mr <= 2 ? 4 : dtype == ENG_DTYPE_BF16 || dtype == ENG_DTYPE_BF16X3 ? 2 : 3;
}

/* Panels per AVX2 tile of mr rows: 8 accumulators for 1 and 2 rows (with 12, gcc kept one
 * on the stack for 2 rows: it holds both rows' broadcasts), 6-12 from 3 rows on. */
static inline int mm_np_avx2(int mr)
{
    return mr == 1 ? 4 : mr == 2 ? 2 : 1;
}

/* One-row tiles (a decode step at batch 1) of F32 weights on AVX2 run its gemv_body over
 * MM_NP_GEMV_AVX2 panels (matmul_avx2.c). With AVX-512, and with 16-bit weights, the same
 * change measured no faster end to end (bench/forward-bench dec1), so they keep the tiles.
 * Nor do more panels help 16-bit and int8 weights at batch 1: 8 were slower than 4, 3 and 6
 * the same. */
#define MM_NP_GEMV_AVX2 6
static inline int mm_gemv_dtype(int dtype)
{
    return dtype == ENG_DTYPE_F32;
}

typedef struct mm_tile {
    const float *x;   /* row 0 of the tile at column k0 */
    size_t ldx;
    const void *w;    /* the panel at row k0 (F32, F16, BF16 or I8 layout per dtype; k0 and
                       * the BF16 row pairs are even, see matmul.h) */
    ptrdiff_t wstride;  /* bytes from one panel to the next (np > 1) */
    int np;             /* panels: 1..the kernel's count for mr rows (MM_NP_AVX512, mm_np_avx2) */
    const float *scale; /* I8: the panels' np * MM_NR column scales; else unused */
    int kc;           /* rows of P */
    int mr;           /* 1..the kernel's MM_MR_* */
    int nc;           /* valid columns, 1..np * MM_NR */
    int dtype;        /* enum eng_dtype */
    float *y;         /* row 0 of the tile at column n0 */
    size_t ldy;
    const float *bias; /* at n0, or NULL: added to the start value */
    int load_y;        /* 1: start from Y; 0: start from zero */
    int gelu;          /* 1: the last chunk of K; store gelu(value) instead of the value */
    const char *pf;    /* prefetch stream: pf + p*wstride + k*pfstep is touched at step k,
                        * for each panel p < np */
    ptrdiff_t pfstep;
} mm_tile_t;

void mm_tile_generic(const mm_tile_t *t);
void mm_tile_avx2(const mm_tile_t *t);
void mm_tile_avx512(const mm_tile_t *t);

/* AMX (matmul_amx.c): Y (+)= X·W for BF16 weights, rows of X rounded to BF16, and for
 * BF16X3 weights, rows of X split into two BF16 (xb, xl). The calling thread packs X once
 * per product (mm_amx_pack_x); each part then runs mm_amx_range over its panels with its
 * own MM_AMX_C floats of scratch. */
#define MM_AMX_C (32 * 32)
typedef struct mm_amx_job {
    const uint16_t *xb;   /* X in BF16: rows mm_amx_x_ld(K) apart, zeros past K and past M
                           * up to a multiple of 16 rows, 64-byte aligned */
    const uint16_t *xl;   /* BF16X3 weights: X - xb in BF16, laid out as xb */
    int M;
    const struct mm_weight *w; /* BF16 */
    const float *bias;    /* or NULL */
    float *y;
    size_t ldy;
    int accumulate;
    int gelu;
} mm_amx_job_t;

/* Values from one row of the packed X to the next (whole 32-column tiles and a line more). */
size_t mm_amx_x_ld(int K);
/* Rounds rows 0..M-1 of X to BF16 (as mm_f32_to_bf16) into xb, zeros up to Mp rows. */
void mm_amx_pack_x(int M, int Mp, int K, const float *x, size_t ldx, uint16_t *xb, uint16_t *xl);
/* Panels [p0, p1) of the product; loads the tile configuration on the thread's first call.
 * c: MM_AMX_C floats, 64-byte aligned, this thread's alone. */
void mm_amx_range(const mm_amx_job_t *j, int p0, int p1, float *c);
/* The calling thread's tile configuration for products of M rows, loaded unless it is the
 * one loaded (from M >= 32 on: tmm0..7 all 16 rows of 64 bytes); mm_amx_release gives the
 * tiles back, and the thread's next product loads it again. For threads of their own (the
 * AMX peak in bench/bounds.c); the engine's threads keep theirs between products. */
void mm_amx_config(int M);
void mm_amx_release(void);

/* Bytes per stored value of a dtype (enum eng_dtype). */
static inline size_t mm_dtype_size(int dtype)
{
    return dtype == ENG_DTYPE_F32 || dtype == ENG_DTYPE_BF16X3 ? 4
           : dtype == ENG_DTYPE_I8 || dtype == ENG_DTYPE_W8A8  ? 1
                                                               : 2;
}

/* Rows a panel stores for K rows of W: K, except BF16, which keeps rows in pairs and pads
 * with zero rows to a multiple of 32 (whole AMX tiles; GPT-2's K are multiples of 32), and
 * W8A8, which keeps rows in groups of four, padded to a multiple of 4. */
static inline int mm_panel_rows(int dtype, int K)
{
    if (dtype == ENG_DTYPE_W8A8) /* rows in groups of four (matmul_q8.h) */
        return (K + 3) / 4 * 4;
    return dtype == ENG_DTYPE_BF16 || dtype == ENG_DTYPE_BF16X3 ? (K + 31) / 32 * 32 : K;
}

/* BF16X3: values from a row of pairs of hi to the same row of lo (matmul_pack.c panel_at). */
#define MM_X3_LO (2 * MM_NR)

/* Stored values (of the dtype's element: float, 16 bits or int8) from one panel to the next:
 * rows x 16, twice that for BF16X3 (hi and lo). */
static inline size_t mm_panel_values(int dtype, int K)
{
    return (size_t)mm_panel_rows(dtype, K) * MM_NR * (dtype == ENG_DTYPE_BF16X3 ? 2 : 1);
}

/* Scalar conversions shared by packing and the portable path (round to nearest even). */
uint16_t mm_f32_to_f16(float f);
float mm_f16_to_f32(uint16_t h);
uint16_t mm_f32_to_bf16(float f);
float mm_bf16_to_f32(uint16_t b);
/* Rounds v / scale to the nearest integer (ties to even), clamped to [-127, 127]; NaN -> 0. */
int8_t mm_f32_to_i8(float v, float scale);

#endif
