/* matmul_q8.h - private to the matmul files: products with W8A8 weights (ENG_DTYPE_W8A8),
 * int8 weights times int8 activations summed as integers.
 *
 * Weights: one F32 scale per output column (max |w| / 127) and the values rounded to int8 in
 * [-127, 127], kept as unsigned bytes q + 128 in panels of 16 columns whose rows come in
 * groups of four: group g holds rows 4g..4g+3 of column j at bytes 4j..4j+3 (64 bytes a
 * group, zero weights (128) past K up to a multiple of 4), the operand layout of VPDPBUSD.
 * Activations: each product first quantizes X row by row, in blocks of MM_Q8_KB values of K
 * (block b covers K values [b MM_Q8_KB, (b + 1) MM_Q8_KB)): scale s = max |x| / 127 over the
 * block, q = x * (127 / max |x|) rounded to nearest even (a block whose max |x| is below
 * 2^-100 is all zeros with scale 0; one with an Inf or NaN gets scale NaN), so a row's
 * quantization depends on that row alone. Per element and block, the tile sums
 * d = sum_k qx[k] qw[k] exactly in int32 (|d| <= 256 * 127 * 127 < 2^23, exact in F32 too),
 * and the element becomes fma((float)d * s_x, s_w, previous value), blocks in order of K,
 * starting from the bias (or zero) plus Y when accumulating, as the other tiles start. Integer
 * sums are exact and the float steps are the same on every path, so every kernel and form
 * (VNNI or not) gives the same bits for a row, whatever the other rows of the product,
 * except that the portable tile's GELU is the scalar vm_gelu.
 * Forms: with VNNI, VPDPBUSD multiplies the unsigned weight bytes by the signed X and the
 * tile subtracts 128 * sum_k qx[k] (kept per row and block beside the scales); without it
 * (AVX2, or AVX-512 without VNNI) the weight bytes are flipped back to signed (xor 0x80) and
 * multiplied as |qx| times qw with the sign of qx (VPSIGNB, VPMADDUBSW, VPMADDWD), so the
 * 16-bit pair sums stay below 2 * 127 * 127 and never saturate. AVX2 without VNNI does that
 * for one and two rows only; from three rows on it multiplies 16-bit values (VPMADDWD: the
 * weight bytes zero-extended, X kept as 16-bit values too, in q16) and subtracts 128 *
 * sum_k qx[k] as VNNI does.
 */
#ifndef NANO_VLLM_MATMUL_Q8_H
#define NANO_VLLM_MATMUL_Q8_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels/pool.h"

#define MM_Q8_KB 256 /* values of K per activation scale */

/* How a kernel multiplies W8A8 weights (mm_q8_form_supported says which this CPU runs). */
enum mm_q8_form {
    MM_Q8_GENERIC = 0,
    MM_Q8_AVX2,        /* VPMADDUBSW + VPMADDWD to 2 rows, VPMADDWD 6 x 16 from 3 */
    MM_Q8_AVX2_VNNI,   /* AVX-VNNI VPDPBUSD on ymm */
    MM_Q8_AVX512,      /* VPMADDUBSW + VPMADDWD on zmm */
    MM_Q8_AVX512_VNNI, /* AVX512-VNNI VPDPBUSD */
    MM_Q8_N_FORMS
};

/* X quantized for one product: owned buffers, grown when a larger product comes and kept. */
typedef struct mm_q8_x {
    int8_t *q;    /* rows ldq bytes apart, zeros past K up to a multiple of 4; 64-byte aligned */
    float *s;     /* per row, nb scales (rows nb apart) */
    int32_t *sum; /* per row, nb sums of q, laid out as s */
    int16_t *q16; /* MM_Q8_AVX2 (wide): q as 16-bit values, rows ldq values apart; else NULL */
    size_t ldq;
    int nb;                  /* blocks of K: ceil(K / MM_Q8_KB) */
    int wide;                /* q16 in use */
    size_t q_bytes, s_count; /* capacities */
    size_t q16_bytes;
} mm_q8_x_t;

/* One tile: Y[mr, nc] (+)= block of X · block of W for np panels, as described above. */
typedef struct mm_q8_tile {
    const int8_t *x;     /* row 0 at the block's first K value */
    const int16_t *x16;  /* the same in qx->q16 (wide), rows ldx values apart; or NULL */
    size_t ldx;          /* bytes */
    const float *xs;     /* row 0's scale of this block; rows xstride apart */
    const int32_t *xsum; /* row 0's sum of this block, laid out as xs */
    size_t xstride;
    const uint8_t *w;   /* the first panel at the block's first group */
    ptrdiff_t wstride;  /* bytes from one panel to the next */
    int np;             /* panels */
    const float *scale; /* the panels' np * 16 column scales */
    int kc;             /* values of K in the block, a multiple of 4 (zeros past K) */
    int mr, nc;
    float *y;
    size_t ldy;
    const float *bias; /* or NULL (only on the first block) */
    int load_y;        /* start from Y (not from zero) */
    int gelu;          /* the last block: store gelu(value) */
    const char *pf;    /* prefetch: pf + p * wstride + g * pfstep at group g, panel p */
    ptrdiff_t pfstep;
} mm_q8_tile_t;

typedef void (*mm_q8_tile_fn)(const mm_q8_tile_t *t);

/* Rows and panels per tile of each form: at most mr_max rows; a tile of mr rows spans
 * mm_q8_np(form, mr) panels. */
int mm_q8_mr(int form);
int mm_q8_np(int form, int mr);
/* MM_Q8_AVX2 multiplies tiles of MM_Q8_WIDE_MR rows or more as 16-bit values, from q16.
 * mm_q8_wide: whether a product of M rows in this form needs q16 (mm_q8_x_reserve's wide). */
#define MM_Q8_WIDE_MR 3
int mm_q8_wide(int form, int M);
mm_q8_tile_fn mm_q8_tile_for(int form);
void mm_q8_tile_generic(const mm_q8_tile_t *t);
void mm_q8_tile_avx2(const mm_q8_tile_t *t);
void mm_q8_tile_avx2_vnni(const mm_q8_tile_t *t);
void mm_q8_tile_avx512(const mm_q8_tile_t *t);
void mm_q8_tile_avx512_vnni(const mm_q8_tile_t *t);

/* Whether this CPU runs a form (VNNI forms: the CPUID bits; the rest follows the kernel). */
int mm_q8_form_supported(int form);

/* Quantizes rows [m0, m1) of X (K values each, rows ldx apart) into qx (sized by
 * mm_q8_x_reserve), with the form's vector instructions; every form gives the same bytes. */
void mm_q8_quantize(int form, mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx);
void mm_q8_quantize_avx2(mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx);
void mm_q8_quantize_avx512(mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx);
/* The scalar steps shared by every quantizer: the block's scale and 127 / max |x| (0 when
 * the block is zeros or not finite) from the bits of max |x|, and one value. */
void mm_q8_block_scale(uint32_t amax_bits, float *scale, float *inv);
int8_t mm_q8_value(float x, float inv);

/* Grows qx for M rows of K (kept), with q16 when wide (the form MM_Q8_AVX2); 0 or -ENOMEM
 * (qx unchanged). */
int mm_q8_x_reserve(mm_q8_x_t *qx, int M, int K, int wide);
void mm_q8_x_free(mm_q8_x_t *qx);

/* A product's shared description for mm_q8_range. */
typedef struct mm_q8_job {
    int form;
    int M;
    const mm_q8_x_t *qx;
    const struct mm_weight *w; /* W8A8 */
    const float *bias;
    float *y;
    size_t ldy;
    int accumulate, gelu;
    int pf_dist;
} mm_q8_job_t;

/* Panels [p0, p1) of the product (one thread's part). */
void mm_q8_range(const mm_q8_job_t *j, int p0, int p1);

#endif
