/* matmul_avx2.c - the AVX2 + FMA (+ F16C) register tile: up to 6 rows x 16 columns, or
 * fewer rows over more panels (1 x 64 and 2 x 32; mm_np_avx2).
 *
 * Only functions with the target attribute use these instructions; matmul.c calls
 * mm_tile_avx2 only after checking the CPU, so the rest of the binary stays portable.
 * Per k step and panel: one panel row (two ymm of W), one broadcast per row of X and two
 * FMAs per row: at most 12 accumulators + 2 W + 1 broadcast = 15 of the 16 ymm registers,
 * no spills (checked with objdump: no rsp/rbp traffic in the k loop). Int8 rows widen in the
 * same two registers (vpmovsxbd, vcvtdq2ps); their column scales apply once per tile (at
 * most MM_I8_KC rows of K). Each element is one chain of FMAs in order of k (matmul_kern.h):
 * a tile of few rows gets its independent chains from more panels, not from splitting k, so
 * one row decoding alone is summed exactly as inside a batch. (One chain per element over one
 * panel is one FMA latency per panel row, too slow for 16-bit and int8 weights; over four
 * panels a one-row tile has eight chains.)
 */
#include <immintrin.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* The high 16 bits of each 32-bit lane: row k + 1 of a BF16 row of pairs. */
static const uint32_t bf16_high[8]
    __attribute__((aligned(32))) = {0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u,
                                    0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};

/* A BF16 row of pairs (32 values at p) as two F32 vectors, columns 0..7 and 8..15: 32-bit
 * lane j holds column j of row k (low half) and of row k + 1 (high half); odd (a constant)
 * picks row k + 1, reg (a constant) keeps its mask in a register. */
INLINE void bf16_pairs(const uint16_t *p, int odd, int reg, __m256 *lo, __m256 *hi)
{
    __m256i a = _mm256_load_si256((const __m256i *)p),
            b = _mm256_load_si256((const __m256i *)p + 1);
    if (odd && reg) {
        /* The mask in a register (reg, a constant: the tiles of one and two rows have
         * registers to spare): one load less per vector. At batch 1 on the Zen 5 EPYC every
         * BF16 product of SmolLM2-360M took 0.5-1.3% less time than with the mask in memory
         * (forward-bench, steps interleaved). */
        const __m256i m = _mm256_set1_epi32((int)0xffff0000u);
        *lo = _mm256_castsi256_ps(_mm256_and_si256(a, m));
        *hi = _mm256_castsi256_ps(_mm256_and_si256(b, m));
    } else if (odd) {
        /* The mask is an operand in memory (inline assembly, so the compiler cannot keep it
         * in a register): with it in one, gcc 12 spilled three of the twelve accumulators of
         * the 6-row tile in the k loop. */
        __m256i ra, rb;
        __asm__("vpand %1, %2, %0" : "=x"(ra) : "m"(bf16_high), "x"(a));
        __asm__("vpand %1, %2, %0" : "=x"(rb) : "m"(bf16_high), "x"(b));
        *lo = _mm256_castsi256_ps(ra);
        *hi = _mm256_castsi256_ps(rb);
    } else {
        *lo = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
        *hi = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    }
}

/* Row k of a panel as two F32 vectors: columns 0..7 and 8..15. For BF16 k is even and
 * odd (a constant) picks row k or k + 1 of the row of pairs (reg: as bf16_pairs). */
INLINE void load_row(int dt, const void *w, int k, int odd, int reg, __m256 *lo, __m256 *hi)
{
    if (dt == ENG_DTYPE_BF16X3) {
        /* The row of pairs of hi, then the one of lo (32 values each): the weight is hi + lo. */
        const uint16_t *p = (const uint16_t *)w + (size_t)k * 2 * MM_NR;
        __m256 a, b, c, d;
        bf16_pairs(p, odd, 0, &a, &b);
        bf16_pairs(p + MM_X3_LO, odd, 0, &c, &d);
        *lo = _mm256_add_ps(a, c);
        *hi = _mm256_add_ps(b, d);
        return;
    }
    if (dt != ENG_DTYPE_BF16)
        k += odd;
    if (dt == ENG_DTYPE_F32) {
        const float *p = (const float *)w + (size_t)k * MM_NR;
        *lo = _mm256_load_ps(p);
        *hi = _mm256_load_ps(p + 8);
    } else if (dt == ENG_DTYPE_F16) {
        const __m128i *p = (const __m128i *)((const uint16_t *)w + (size_t)k * MM_NR);
        *lo = _mm256_cvtph_ps(_mm_load_si128(p));
        *hi = _mm256_cvtph_ps(_mm_load_si128(p + 1));
    } else if (dt == ENG_DTYPE_I8) {
        /* Sign-extend each 8-byte half to 8 int32 (vpmovsxbd from memory), then convert:
         * exact, the products with X are then ordinary F32 FMAs. */
        const int8_t *p = (const int8_t *)w + (size_t)k * MM_NR;
        *lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
        *hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))));
    } else {
        bf16_pairs((const uint16_t *)w + (size_t)k * MM_NR, odd, reg, lo, hi);
    }
}

INLINE __m256i tail_mask(int n)
{
    /* Lanes < n set (n may be <= 0 or >= 8). */
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* The accumulators are named variables, not an array: with an array, gcc -O2 kept them in
 * memory unless told to unroll, and clang 14 stored all 12 to the stack every k step even
 * then; named ones stay in registers with both (checked with objdump). c<i>_<j> is row i,
 * columns 8j..8j+7 of the tile (panel j / 2). Code for rows MR <= i and vectors 2 NP <= j is
 * dropped (MR and NP are constants). */
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define PANELS(X) X(0) X(1) X(2) X(3)
#define VECS(X, i) X(i, 0) X(i, 1) X(i, 2) X(i, 3) X(i, 4) X(i, 5) X(i, 6) X(i, 7)
#define GRID(X) VECS(X, 0) VECS(X, 1) VECS(X, 2) VECS(X, 3) VECS(X, 4) VECS(X, 5)
#define LIVE(i, j) (MR > (i) && 2 * NP > (j))

INLINE void tile_body(const mm_tile_t *t, const int MR, const int NP, const int DT)
{
    const int full = t->nc == NP * MM_NR;
    /* The start value of an element: its bias (or zero) plus Y when load_y (Y alone when there
     * is no bias: Y as stored by an earlier chunk of K, -0 included). F32, F16, BF16 and
     * BF16X3 elements start from it and add the products in order of k, one FMA after the
     * other; I8 ones add their sum of raw products, times the column scale, to it (the
     * order matmul_kern.h fixes). */
#define START_VALUE(i, j, v)                                                                  \
    {                                                                                         \
        const __m256i mk = tail_mask(t->nc - 8 * (j));                                        \
        const float *yr = t->y + (size_t)(i) * t->ldy + 8 * (j);                              \
        v = _mm256_setzero_ps();                                                              \
        if (t->load_y)                                                                        \
            v = full ? _mm256_loadu_ps(yr) : _mm256_maskload_ps(yr, mk);                      \
        if (t->bias) {                                                                        \
            const float *br = t->bias + 8 * (j);                                              \
            __m256 bv = full ? _mm256_loadu_ps(br) : _mm256_maskload_ps(br, mk);              \
            v = t->load_y ? _mm256_add_ps(bv, v) : bv;                                        \
        }                                                                                     \
    }
#define START(i, j)                                                                           \
    __m256 c##i##_##j = _mm256_setzero_ps();                                                  \
    if (LIVE(i, j) && DT != ENG_DTYPE_I8)                                                     \
        START_VALUE(i, j, c##i##_##j)
    GRID(START)
#undef START
    const float *x = t->x;
    const size_t ldx = t->ldx;
    const char *pf = t->pf;
    const ptrdiff_t pfstep = t->pfstep, ws = t->wstride;
    const int kc = t->kc;
    /* Two rows of the panels per iteration (BF16 keeps them in one row of pairs): per panel,
     * its row as two vectors (2 registers), then one broadcast of X per tile row and two FMAs:
     * 2 NP MR accumulators (at most 12) + 2 + 1 of the 16 registers. */
#define FMA_ROW(i, j0, j1, kk)                                                                \
    if (LIVE(i, j0)) {                                                                        \
        __m256 xv = _mm256_broadcast_ss(x + (size_t)(i) * ldx + (kk));                        \
        c##i##_##j0 = _mm256_fmadd_ps(xv, w0, c##i##_##j0);                                   \
        c##i##_##j1 = _mm256_fmadd_ps(xv, w1, c##i##_##j1);                                   \
    }
#define ROWS_FMA(j0, j1, kk)                                                                  \
    FMA_ROW(0, j0, j1, kk) FMA_ROW(1, j0, j1, kk) FMA_ROW(2, j0, j1, kk)                      \
    FMA_ROW(3, j0, j1, kk) FMA_ROW(4, j0, j1, kk) FMA_ROW(5, j0, j1, kk)
#define ROW_FMAS_0(kk) ROWS_FMA(0, 1, kk)
#define ROW_FMAS_1(kk) ROWS_FMA(2, 3, kk)
#define ROW_FMAS_2(kk) ROWS_FMA(4, 5, kk)
#define ROW_FMAS_3(kk) ROWS_FMA(6, 7, kk)
#define STEP(p, odd)                                                                               \
    if (NP > (p)) {                                                                                \
        __m256 w0, w1;                                                                             \
        load_row(DT, (const char *)t->w + (p)*ws, k, odd, MR <= 2, &w0, &w1);                      \
        _mm_prefetch(pf + (p)*ws + (k + (odd)) * pfstep, _MM_HINT_T0);                             \
        ROW_FMAS_##p(k + (odd))                                                                    \
    }
#define STEP0(p) STEP(p, 0)
#define STEP1(p) STEP(p, 1)
    /* I8: element = start + scale * sum, one FMA (the driver gives an I8 tile at most
     * MM_I8_KC rows of K, so this is one chunk's sum). */
#define FOLD(i, j)                                                                            \
    if (LIVE(i, j)) {                                                                         \
        __m256 v;                                                                             \
        START_VALUE(i, j, v)                                                                  \
        c##i##_##j = _mm256_fmadd_ps(c##i##_##j, _mm256_loadu_ps(t->scale + 8 * (j)), v);     \
    }
    int k = 0;
    for (; k + 2 <= kc; k += 2) {
        PANELS(STEP0)
        PANELS(STEP1)
    }
    if (k < kc) {
        PANELS(STEP0)
    }
    if (DT == ENG_DTYPE_I8) {
        GRID(FOLD)
    }
#undef FOLD
#undef STEP0
#undef STEP1
#undef STEP
#undef START_VALUE
    if (t->gelu) {
#define GELU(i, j)                                                                            \
    if (LIVE(i, j))                                                                           \
        c##i##_##j = vm_gelu8(c##i##_##j);
        GRID(GELU)
#undef GELU
    }
#define STORE(i, j)                                                                           \
    if (LIVE(i, j)) {                                                                         \
        float *yr = t->y + (size_t)(i) * t->ldy + 8 * (j);                                    \
        if (full)                                                                             \
            _mm256_storeu_ps(yr, c##i##_##j);                                                 \
        else                                                                                  \
            _mm256_maskstore_ps(yr, tail_mask(t->nc - 8 * (j)), c##i##_##j);                  \
    }
    GRID(STORE)
#undef STORE
}

/* One row of X over up to MM_NP_GEMV_AVX2 panels of F32 weights: the product of a decode
 * step at batch 1, which streams every weight once. Each element is one chain of FMAs in order of
 * k, from the same start value as tile_body's, so a row gets the same bits here as in a tile
 * of more rows (matmul_kern.h). Six panels are twelve chains (12 accumulators + 2 W + 1
 * broadcast of the 16 registers) and 384 bytes of F32 or 192 of 16-bit weights per FMA
 * latency. The prefetch is one per cache line: per panel, one per two rows of 16-bit weights
 * and two for F32. */
INLINE void gemv_body(const mm_tile_t *t, const int NP, const int DT)
{
    const int full = t->nc == NP * MM_NR;
#define GEMV_VECS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define GEMV_START(j)                                                                              \
    __m256 c##j = _mm256_setzero_ps();                                                             \
    if (2 * NP > j) {                                                                              \
        const __m256i mk = tail_mask(t->nc - 8 * (j));                                             \
        if (t->load_y)                                                                             \
            c##j =                                                                                 \
                full ? _mm256_loadu_ps(t->y + 8 * (j)) : _mm256_maskload_ps(t->y + 8 * (j), mk);   \
        if (t->bias) {                                                                             \
            const float *br = t->bias + 8 * (j);                                                   \
            __m256 bv = full ? _mm256_loadu_ps(br) : _mm256_maskload_ps(br, mk);                   \
            c##j = t->load_y ? _mm256_add_ps(bv, c##j) : bv;                                       \
        }                                                                                          \
    }
    GEMV_VECS(GEMV_START)
#undef GEMV_START
    const char *w = t->w, *pf = t->pf;
    const ptrdiff_t ws = t->wstride, pfstep = t->pfstep;
    const size_t wstep = MM_NR * mm_dtype_size(DT);
    const float *x = t->x;
    const int kc = t->kc;
#define GEMV_PANELS(X, a)                                                                          \
    X(0, 1, 0, a) X(2, 3, 1, a) X(4, 5, 2, a) X(6, 7, 3, a) X(8, 9, 4, a) X(10, 11, 5, a)
#define GEMV_FMA(j0, j1, q, odd)                                                                   \
    if (NP > q) {                                                                                  \
        __m256 w0, w1;                                                                             \
        load_row(DT, w + (q)*ws, 0, odd, 0, &w0, &w1);                                             \
        c##j0 = _mm256_fmadd_ps(xv, w0, c##j0);                                                    \
        c##j1 = _mm256_fmadd_ps(xv, w1, c##j1);                                                    \
    }
#define GEMV_PF(j0, j1, q, o)                                                                      \
    if (NP > q)                                                                                    \
        _mm_prefetch(pf + (q)*ws + (o), _MM_HINT_T0);
    int k = 0;
    for (; k + 2 <= kc; k += 2) {
        {
            const __m256 xv = _mm256_broadcast_ss(x);
            GEMV_PANELS(GEMV_FMA, 0)
        }
        GEMV_PANELS(GEMV_PF, 0)
        {
            const __m256 xv = _mm256_broadcast_ss(x + 1);
            GEMV_PANELS(GEMV_FMA, 1)
        }
        if (DT == ENG_DTYPE_F32) {
            GEMV_PANELS(GEMV_PF, pfstep)
        }
        x += 2;
        w += 2 * wstep;
        pf += 2 * pfstep;
    }
    if (k < kc) {
        const __m256 xv = _mm256_broadcast_ss(x);
        GEMV_PANELS(GEMV_FMA, 0)
    }
#undef GEMV_PF
#undef GEMV_FMA
#undef GEMV_PANELS
#define GEMV_STORE(j)                                                                              \
    if (2 * NP > j) {                                                                              \
        float *yr = t->y + 8 * (j);                                                                \
        if (t->gelu)                                                                               \
            c##j = vm_gelu8(c##j);                                                                 \
        if (full)                                                                                  \
            _mm256_storeu_ps(yr, c##j);                                                            \
        else                                                                                       \
            _mm256_maskstore_ps(yr, tail_mask(t->nc - 8 * (j)), c##j);                             \
    }
    GEMV_VECS(GEMV_STORE)
#undef GEMV_STORE
#undef GEMV_VECS
}

#define GEMV_FN(DT, NAME, P)                                                                       \
    TARGET static void NAME##_##P(const mm_tile_t *t)                                              \
    {                                                                                              \
        gemv_body(t, P, DT);                                                                       \
    }
#define GEMV_FNS(DT, NAME)                                                                         \
    GEMV_FN(DT, NAME, 1)                                                                           \
    GEMV_FN(DT, NAME, 2) GEMV_FN(DT, NAME, 3) GEMV_FN(DT, NAME, 4) GEMV_FN(DT, NAME, 5)            \
        GEMV_FN(DT, NAME, 6) static void (*const NAME[MM_NP_GEMV_AVX2])(const mm_tile_t *) = {     \
            NAME##_1, NAME##_2, NAME##_3, NAME##_4, NAME##_5, NAME##_6};

GEMV_FNS(ENG_DTYPE_F32, gemv_f32)

/* Tiles of MR rows and NP panels, MR = 1..MM_MR_AVX2 and NP = 1..mm_np_avx2(MR); NULL past
 * that. */
#define TILE_FN(DT, NAME, R, P)                                                               \
    TARGET static void NAME##_##R##_##P(const mm_tile_t *t) { tile_body(t, R, P, DT); }
#define TILE_FNS(DT, NAME)                                                                    \
    TILE_FN(DT, NAME, 1, 1) TILE_FN(DT, NAME, 1, 2) TILE_FN(DT, NAME, 1, 3)                   \
    TILE_FN(DT, NAME, 1, 4) TILE_FN(DT, NAME, 2, 1) TILE_FN(DT, NAME, 2, 2)                   \
    TILE_FN(DT, NAME, 3, 1) TILE_FN(DT, NAME, 4, 1) TILE_FN(DT, NAME, 5, 1)                   \
    TILE_FN(DT, NAME, 6, 1)                                                                   \
    static void (*const NAME[MM_MR_AVX2][MM_NP_AVX2])(const mm_tile_t *) = {                  \
        {NAME##_1_1, NAME##_1_2, NAME##_1_3, NAME##_1_4},                                     \
        {NAME##_2_1, NAME##_2_2},                                                             \
        {NAME##_3_1},                                                                         \
        {NAME##_4_1},                                                                         \
        {NAME##_5_1},                                                                         \
        {NAME##_6_1}};

TILE_FNS(ENG_DTYPE_F32, tile_f32)
TILE_FNS(ENG_DTYPE_F16, tile_f16)
TILE_FNS(ENG_DTYPE_BF16, tile_bf16)
TILE_FNS(ENG_DTYPE_I8, tile_i8)
TILE_FNS(ENG_DTYPE_BF16X3, tile_x3)

void mm_tile_avx2(const mm_tile_t *t)
{
    int i = t->mr - 1, p = t->np - 1;
    if (i == 0 && mm_gemv_dtype(t->dtype)) {
        gemv_f32[p](t);
        return;
    }
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
void mm_tile_avx2(const mm_tile_t *t)
{
    mm_tile_generic(t);
}

#endif
