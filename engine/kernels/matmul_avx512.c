/* matmul_avx512.c - the AVX-512 register tile, up to 8 rows x three panels (48 columns; two
 * panels for BF16 and BF16X3), and 1-2 rows x up to four panels (mm_np_avx512).
 *
 * Only functions with the target attribute use these instructions; matmul.c calls
 * mm_tile_avx512 only after checking the CPU and the OS (XCR0), so the rest of the binary
 * stays portable. A panel row is one zmm. Per k step: a row of each panel, widened to F32,
 * one broadcast per row of X and one FMA per row and panel: at 8 x 48, 24 accumulators + 3 W
 * + 1 broadcast of the 32 zmm registers, no spills (checked with objdump: no stack traffic in
 * any k loop, gcc 12). Tail columns use lane masks for bias, Y and the stores. The panels are
 * the other tiles' (16 columns, BF16 rows in pairs as in panel_at in matmul_pack.c, so one
 * 64-byte load serves two k steps), so weights packed once run on any kernel; a range's last
 * tile may get fewer panels. The k loop takes two rows per iteration, one for the
 * three-panel tiles. Each element is one chain of FMAs in order of k (matmul_kern.h),
 * whatever the tile's rows: tiles of one or two rows span four panels, so a one-row tile has
 * four chains, 256 bytes of F32 or 64 of int8 weights per FMA latency on one core, above one
 * core's share of the memory bandwidth (with two panels and two chains, a one-row tile was
 * latency-bound).
 *
 * Why 8 x 48: two FMA units with 4 cycles of latency need at least 8 independent
 * accumulators, but the loads, not the FMAs, can set the pace: a one-panel tile loads one X
 * broadcast per FMA (13 loads per 12 FMAs at 12 rows), 8 x 32 10 loads per 16 FMAs, 8 x 48
 * 11 per 24. On the Zen 5 EPYC (1 thread, M = 32, weights from memory) 8 x 48 took 2-4% less
 * time than 8 x 32 at K = 768 and 6% less at K = 3072, the same at M = 512 (bench/mm-bench
 * shapes); 12 x 16 and 6 x 32 were slower than 8 x 32 on the AVX-512 Xeon.
 */
#include <immintrin.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)

#define TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define INLINE                                                                                     \
    static inline                                                                                  \
        __attribute__((always_inline, target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

/* A BF16 row of pairs (32 values at p) as 16 floats: 32-bit lane j holds column j of row k
 * in its low half and of row k + 1 in its high half, so a shift or a mask widens either (odd,
 * a constant, picks row k + 1). */
INLINE __m512 bf16_pairs(const uint16_t *p, int odd)
{
    __m512i r = _mm512_loadu_si512(p);
    return _mm512_castsi512_ps(odd ? _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u))
                                   : _mm512_slli_epi32(r, 16));
}

/* Row k + odd of a panel as one F32 vector, columns 0..15 (odd a constant; for BF16 and
 * BF16X3 k is even: rows k and k + 1 are one row of pairs, bf16_pairs). */
INLINE __m512 load_row(int dt, const void *w, int k, int odd)
{
    if (dt == ENG_DTYPE_BF16)
        return bf16_pairs((const uint16_t *)w + (size_t)k * MM_NR, odd);
    if (dt == ENG_DTYPE_BF16X3) {
        /* The row of pairs of hi, then the one of lo: the weight is hi + lo. */
        const uint16_t *p = (const uint16_t *)w + (size_t)k * 2 * MM_NR;
        return _mm512_add_ps(bf16_pairs(p, odd), bf16_pairs(p + MM_X3_LO, odd));
    }
    k += odd;
    if (dt == ENG_DTYPE_F32)
        return _mm512_loadu_ps((const float *)w + (size_t)k * MM_NR);
    if (dt == ENG_DTYPE_F16)
        return _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + (size_t)k * MM_NR)));
    /* I8: vpmovsxbd from memory, then convert: exact, as in the AVX2 tile. */
    const int8_t *p = (const int8_t *)w + (size_t)k * MM_NR;
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* Row i of the tile's X, from the bases xa = row 0, xb = row 3, xc = row 6 and the row stride
 * s in bytes (i is a constant: one addressing mode per row). */
INLINE const float *x_row(int i, const char *xa, const char *xb, const char *xc, size_t s)
{
    switch (i) {
    case 0:
        return (const float *)xa;
    case 1:
        return (const float *)(xa + s);
    case 2:
        return (const float *)(xa + 2 * s);
    case 3:
        return (const float *)xb;
    case 4:
        return (const float *)(xa + 4 * s);
    case 5:
        return (const float *)(xb + 2 * s);
    case 6:
        return (const float *)xc;
    default:
        return (const float *)(xb + 4 * s); /* 7 */
    }
}

/* Lanes below n set (n may be <= 0 or >= 16). */
INLINE __mmask16 lane_mask(int n)
{
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* The accumulators are named variables, not an array, as in the AVX2 tile (an array stayed
 * in memory with gcc -O2 and clang 14): c<i>0 for columns 0..15 of row i, c<i>1 for the
 * second panel's. Tiles with MR <= i drop row i's code, with NP = 1 the second panel's. */
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

INLINE void tile_body(const mm_tile_t *t, const int MR, const int NP, const int DT)
{
    const __mmask16 m0 = lane_mask(t->nc), m1 = lane_mask(t->nc - MM_NR),
                    m2 = lane_mask(t->nc - 2 * MM_NR), m3 = lane_mask(t->nc - 3 * MM_NR);
    /* The start value of an element: its bias (or zero) plus Y when load_y (Y alone when there
     * is no bias: Y as stored by an earlier chunk of K, -0 included). F32, F16, BF16 and
     * BF16X3 elements start from it and add the products in order of k, one FMA after the
     * other; I8 ones add their sum of raw products, times the column scale, to it (the
     * order matmul_kern.h fixes). */
#define START_VALUE(i, q, m, v)                                                                    \
    {                                                                                              \
        v = _mm512_setzero_ps();                                                                   \
        if (t->load_y)                                                                             \
            v = _mm512_maskz_loadu_ps(m, t->y + (size_t)(i)*t->ldy + (q)*MM_NR);                   \
        if (t->bias) {                                                                             \
            __m512 bv = _mm512_maskz_loadu_ps(m, t->bias + (q)*MM_NR);                             \
            v = t->load_y ? _mm512_add_ps(bv, v) : bv;                                             \
        }                                                                                          \
    }
    /* PANELS(X, i) applies X(i, q, mask) to each panel q < NP of row i. */
#define PANELS(X, i)                                                                               \
    X(i, 0, m0)                                                                                    \
    if (NP > 1)                                                                                    \
        X(i, 1, m1)                                                                                \
    if (NP > 2)                                                                                    \
        X(i, 2, m2)                                                                                \
    if (NP > 3)                                                                                    \
    X(i, 3, m3)
#define START1(i, q, m) START_VALUE(i, q, m, c##i##q)
#define START(i)                                                                                   \
    __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps(),                           \
           c##i##2 = _mm512_setzero_ps(), c##i##3 = _mm512_setzero_ps();                           \
    if (MR > i && DT != ENG_DTYPE_I8) {                                                            \
        PANELS(START1, i)                                                                          \
    }
    ROWS(START)
#undef START
#undef START1
    const char *w = t->w, *pf = t->pf;
    const ptrdiff_t ws = t->wstride, pfstep = t->pfstep;
    const size_t wstep = MM_NR * mm_dtype_size(DT);
    const int kc = t->kc;
    /* Eight row pointers and the loop's own would not all fit the 15 general registers
     * (with twelve rows gcc kept some on the stack): rows are addressed from three bases
     * instead, as base + 1, 2 or 4 row strides (see x_row), and the bases step by one
     * float. */
    const size_t s = t->ldx * sizeof(float);
    const char *xa = (const char *)t->x, *xb = xa + 3 * s, *xc = xa + 6 * s;
    /* Two rows per iteration (BF16 keeps them in one row of pairs), in order of k: the rows
     * of the NP panels (w0..w3, then v0..v3), one broadcast of X per tile row and NP FMAs. */
    /* One prefetch per two rows of 16-bit weights (a 64-byte line when the stream steps by a
     * whole row) in the tiles of one and two rows, the decode at batch 1: at M = 1 on the Zen 5
     * EPYC every F16 and BF16 product of GPT-2 took 0.3-1.5% less time than with one per row
     * (forward-bench, steps interleaved). Tiles of more rows keep one per row: their stream
     * steps by a share of a row (matmul.c), and they were not measured faster. */
    const int pf_line = MR <= 2 && (DT == ENG_DTYPE_F16 || DT == ENG_DTYPE_BF16);
#define FMA1(i, q, m) c##i##q = _mm512_fmadd_ps(xv, W##q, c##i##q);
#define STEP(i, kk)                                                                                \
    if (MR > i) {                                                                                  \
        __m512 xv = _mm512_set1_ps(x_row(i, xa, xb, xc, s)[kk]);                                   \
        PANELS(FMA1, i)                                                                            \
    }
#define STEP0(i) STEP(i, 0)
#define STEP1(i) STEP(i, 1)
#define LOAD_ROWS(odd, pfo)                                                                        \
    const int dopf = !(odd) || !pf_line;                                                           \
    __m512 W0 = load_row(DT, w, 0, odd), W1 = W0, W2 = W0, W3 = W0;                                \
    if (dopf)                                                                                      \
        _mm_prefetch(pf + (pfo), _MM_HINT_T0);                                                     \
    if (NP > 1) {                                                                                  \
        W1 = load_row(DT, w + ws, 0, odd);                                                         \
        if (dopf)                                                                                  \
            _mm_prefetch(pf + ws + (pfo), _MM_HINT_T0);                                            \
    }                                                                                              \
    if (NP > 2) {                                                                                  \
        W2 = load_row(DT, w + 2 * ws, 0, odd);                                                     \
        if (dopf)                                                                                  \
            _mm_prefetch(pf + 2 * ws + (pfo), _MM_HINT_T0);                                        \
    }                                                                                              \
    if (NP > 3) {                                                                                  \
        W3 = load_row(DT, w + 3 * ws, 0, odd);                                                     \
        if (dopf)                                                                                  \
            _mm_prefetch(pf + 3 * ws + (pfo), _MM_HINT_T0);                                        \
    }
    /* I8: element = start + scale * sum, one FMA (the driver gives an I8 tile at most
     * MM_I8_KC rows of K, so this is one chunk's sum). */
#define FOLD1(i, q, m)                                                                             \
    {                                                                                              \
        __m512 v;                                                                                  \
        START_VALUE(i, q, m, v)                                                                    \
        c##i##q = _mm512_fmadd_ps(c##i##q, _mm512_loadu_ps(t->scale + (q)*MM_NR), v);              \
    }
#define FOLD(i)                                                                                    \
    if (MR > i) {                                                                                  \
        PANELS(FOLD1, i)                                                                           \
    }
    int k = kc;
    /* Three panels (24 accumulators): one row per iteration. With two, gcc loaded the second
     * row's panels before the first row's FMAs and kept accumulators on the stack. (BF16 with
     * three panels and one row per iteration, taking row k of a row of pairs as a shift by 16
     * or 0 and a mask, ran 6-12% slower than its 8 x 32 tile: it stays there.) */
    if (NP == 3 && MR > 2) {
        for (; k >= 1; k--) {
            LOAD_ROWS(0, 0)
            ROWS(STEP0)
            xa += sizeof(float);
            xb += sizeof(float);
            xc += sizeof(float);
            w += wstep;
            pf += pfstep;
        }
    }
    for (; k >= 2; k -= 2) {
        {
            LOAD_ROWS(0, 0)
            ROWS(STEP0);
        }
        {
            LOAD_ROWS(1, pfstep)
            ROWS(STEP1);
        }
        xa += 2 * sizeof(float);
        xb += 2 * sizeof(float);
        xc += 2 * sizeof(float);
        w += 2 * wstep;
        pf += 2 * pfstep;
    }
    if (k) {
        LOAD_ROWS(0, 0)
        ROWS(STEP0)
    }
    if (DT == ENG_DTYPE_I8) {
        ROWS(FOLD)
    }
#undef FOLD
#undef FOLD1
#undef LOAD_ROWS
#undef STEP0
#undef STEP1
#undef STEP
#undef FMA1
    if (t->gelu) {
#define GELU1(i, q, m) c##i##q = vm_gelu16(c##i##q);
#define GELU(i)                                                                                    \
    if (MR > i) {                                                                                  \
        PANELS(GELU1, i)                                                                           \
    }
        ROWS(GELU)
#undef GELU
#undef GELU1
    }
#define STORE1(i, q, m) _mm512_mask_storeu_ps(t->y + (size_t)(i)*t->ldy + (q)*MM_NR, m, c##i##q);
#define STORE(i)                                                                                   \
    if (MR > i) {                                                                                  \
        PANELS(STORE1, i)                                                                          \
    }
    ROWS(STORE)
#undef STORE
#undef STORE1
#undef PANELS
#undef START_VALUE
}

/* Tiles of MR rows and NP panels (mm_np_avx512): NP 1..4 for MR <= 2; from 3 rows on, NP
 * 1..3, or 1..2 for BF16 and BF16X3 (P3 says whether to make the three-panel tiles); NULL
 * past that. */
#define TILE_FN(DT, NAME, R, P)                                                                    \
    TARGET static void NAME##_##R##_##P(const mm_tile_t *t)                                        \
    {                                                                                              \
        tile_body(t, R, P, DT);                                                                    \
    }
#define TILE_ROW(DT, NAME, R, P3)                                                                  \
    TILE_FN(DT, NAME, R, 1) TILE_FN(DT, NAME, R, 2) P3(TILE_FN(DT, NAME, R, 3))
#define YES(x) x
#define NO(x)
/* clang-format off */
#define TILE_FNS(DT, NAME, P3)                                                                     \
    TILE_FN(DT, NAME, 1, 1) TILE_FN(DT, NAME, 1, 2) TILE_FN(DT, NAME, 1, 3)                        \
    TILE_FN(DT, NAME, 1, 4) TILE_FN(DT, NAME, 2, 1) TILE_FN(DT, NAME, 2, 2)                        \
    TILE_FN(DT, NAME, 2, 3) TILE_FN(DT, NAME, 2, 4) TILE_ROW(DT, NAME, 3, P3)                      \
    TILE_ROW(DT, NAME, 4, P3) TILE_ROW(DT, NAME, 5, P3) TILE_ROW(DT, NAME, 6, P3)                  \
    TILE_ROW(DT, NAME, 7, P3) TILE_ROW(DT, NAME, 8, P3)                                            \
    static void (*const NAME[MM_MR_AVX512][MM_NP_AVX512])(const mm_tile_t *) = {                   \
        {NAME##_1_1, NAME##_1_2, NAME##_1_3, NAME##_1_4},                                          \
        {NAME##_2_1, NAME##_2_2, NAME##_2_3, NAME##_2_4},                                          \
        {NAME##_3_1, NAME##_3_2, P3(NAME##_3_3)},                                                  \
        {NAME##_4_1, NAME##_4_2, P3(NAME##_4_3)},                                                  \
        {NAME##_5_1, NAME##_5_2, P3(NAME##_5_3)},                                                  \
        {NAME##_6_1, NAME##_6_2, P3(NAME##_6_3)},                                                  \
        {NAME##_7_1, NAME##_7_2, P3(NAME##_7_3)},                                                  \
        {NAME##_8_1, NAME##_8_2, P3(NAME##_8_3)}};
/* clang-format on */

TILE_FNS(ENG_DTYPE_F32, tile_f32, YES)
TILE_FNS(ENG_DTYPE_F16, tile_f16, YES)
TILE_FNS(ENG_DTYPE_BF16, tile_bf16, NO)
TILE_FNS(ENG_DTYPE_I8, tile_i8, YES)
TILE_FNS(ENG_DTYPE_BF16X3, tile_x3, NO)

void mm_tile_avx512(const mm_tile_t *t)
{
    int i = t->mr - 1, p = t->np - 1;
    if (t->dtype == ENG_DTYPE_F32)
        tile_f32[i][p](t);
    else if (t->dtype == ENG_DTYPE_F16)
        tile_f16[i][p](t);
    else if (t->dtype == ENG_DTYPE_BF16)
        tile_bf16[i][p](t);
    else if (t->dtype == ENG_DTYPE_BF16X3)
        tile_x3[i][p](t);
    else
        tile_i8[i][p](t);
}

#else

/* Not an x86 CPU: matmul.c never selects this path. */
void mm_tile_avx512(const mm_tile_t *t)
{
    mm_tile_generic(t);
}

#endif
