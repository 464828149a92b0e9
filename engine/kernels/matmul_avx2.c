/* matmul_avx2.c - the AVX2 + FMA (+ F16C) register tile, up to 6 x 16.
 *
 * Only functions with the target attribute use these instructions; matmul.c calls
 * mm_tile_avx2 only after checking the CPU, so the rest of the binary stays portable.
 * Per k step: one panel row (two ymm of W), one broadcast per row of X and two FMAs per
 * row: 12 accumulators + 2 W + 1 broadcast = 15 of the 16 ymm registers, no spills
 * (checked with objdump: no rsp/rbp traffic in the k loop, also for int8 with gcc 12 and
 * clang 14). Int8 rows widen in the same two registers (vpmovsxbd, vcvtdq2ps); their column
 * scales, bias and Y are applied after the loop.
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
static const uint32_t bf16_high[8] __attribute__((aligned(32))) = {
    0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u,
    0xffff0000u, 0xffff0000u, 0xffff0000u, 0xffff0000u};

/* A BF16 row of pairs (32 values at p) as two F32 vectors, columns 0..7 and 8..15: 32-bit
 * lane j holds column j of row k (low half) and of row k + 1 (high half); odd (a constant)
 * picks row k + 1. */
INLINE void bf16_pairs(const uint16_t *p, int odd, __m256 *lo, __m256 *hi)
{
    __m256i a = _mm256_load_si256((const __m256i *)p),
            b = _mm256_load_si256((const __m256i *)p + 1);
    if (odd) {
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
 * odd (a constant) picks row k or k + 1 of the row of pairs. */
INLINE void load_row(int dt, const void *w, int k, int odd, __m256 *lo, __m256 *hi)
{
    if (dt == ENG_DTYPE_BF16X3) {
        /* The row of pairs of hi, then the one of lo (32 values each): the weight is hi + lo. */
        const uint16_t *p = (const uint16_t *)w + (size_t)k * 2 * MM_NR;
        __m256 a, b, c, d;
        bf16_pairs(p, odd, &a, &b);
        bf16_pairs(p + MM_X3_LO, odd, &c, &d);
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
        bf16_pairs((const uint16_t *)w + (size_t)k * MM_NR, odd, lo, hi);
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
 * then; named ones stay in registers with both (checked with objdump). Tiles with MR <= i drop row i's code (MR is a constant). */
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* The start value of a tile: the bias (or zero), plus Y when load_y. */
#define LOAD_BIAS(b0, b1)                                                                     \
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();                                \
    if (t->bias) {                                                                            \
        b0 = full ? _mm256_loadu_ps(t->bias) : _mm256_maskload_ps(t->bias, m0);               \
        b1 = full ? _mm256_loadu_ps(t->bias + 8) : _mm256_maskload_ps(t->bias + 8, m1);       \
    }
#define ADD_Y(i, v0, v1)                                                                      \
    if (t->load_y) {                                                                          \
        const float *yr = t->y + (size_t)(i) * t->ldy;                                        \
        v0 = _mm256_add_ps(v0, full ? _mm256_loadu_ps(yr) : _mm256_maskload_ps(yr, m0));      \
        v1 = _mm256_add_ps(v1, full ? _mm256_loadu_ps(yr + 8) : _mm256_maskload_ps(yr + 8, m1)); \
    }

INLINE void tile_body(const mm_tile_t *t, const int MR, const int DT)
{
    const int full = t->nc == MM_NR;
    const __m256i m0 = tail_mask(t->nc), m1 = tail_mask(t->nc - 8);
    /* F32/F16/BF16 start from the bias and Y; I8 sums the raw products from zero and adds
     * them, scaled, to the start value after the k loop (the bias is loaded only then, so it
     * takes no registers in the loop). */
#define DECL(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
    ROWS(DECL)
#undef DECL
    if (DT != ENG_DTYPE_I8) {
        LOAD_BIAS(b0, b1)
#define START(i)                                                                              \
    if (MR > i) {                                                                             \
        c##i##0 = b0;                                                                         \
        c##i##1 = b1;                                                                         \
        ADD_Y(i, c##i##0, c##i##1)                                                            \
    }
        ROWS(START)
#undef START
    }
    const float *x = t->x;
    const size_t ldx = t->ldx;
    const char *pf = t->pf;
    const ptrdiff_t pfstep = t->pfstep;
    const int kc = t->kc;
    if (MR == 1) {
        /* One row has only two accumulators, and each k step's FMAs would wait for the
         * previous step's (4-5 cycles of latency): one panel row per ~4 cycles, too slow to
         * keep up with memory for 16-bit weights. Odd k go to a second pair, added at the end
         * (the same order as mm_tile_generic). */
        __m256 e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps();
        int k = 0;
        for (; k + 2 <= kc; k += 2) {
            __m256 w0, w1, v0, v1;
            load_row(DT, t->w, k, 0, &w0, &w1);
            load_row(DT, t->w, k, 1, &v0, &v1);
            _mm_prefetch(pf + k * pfstep, _MM_HINT_T0);
            _mm_prefetch(pf + (k + 1) * pfstep, _MM_HINT_T0);
            __m256 xa = _mm256_broadcast_ss(x + k), xb = _mm256_broadcast_ss(x + k + 1);
            c00 = _mm256_fmadd_ps(xa, w0, c00);
            c01 = _mm256_fmadd_ps(xa, w1, c01);
            e0 = _mm256_fmadd_ps(xb, v0, e0);
            e1 = _mm256_fmadd_ps(xb, v1, e1);
        }
        if (k < kc) {
            __m256 w0, w1;
            load_row(DT, t->w, k, 0, &w0, &w1);
            __m256 xa = _mm256_broadcast_ss(x + k);
            c00 = _mm256_fmadd_ps(xa, w0, c00);
            c01 = _mm256_fmadd_ps(xa, w1, c01);
        }
        c00 = _mm256_add_ps(c00, e0);
        c01 = _mm256_add_ps(c01, e1);
    } else {
        /* Two rows per iteration (BF16 keeps them in one row of pairs), in order of k. */
        int k = 0;
        for (; k + 2 <= kc; k += 2) {
            __m256 w0, w1;
            load_row(DT, t->w, k, 0, &w0, &w1);
            _mm_prefetch(pf + k * pfstep, _MM_HINT_T0);
#define STEP(i, kk)                                                                           \
    if (MR > i) {                                                                             \
        __m256 xv = _mm256_broadcast_ss(x + (size_t)(i) * ldx + (kk));                        \
        c##i##0 = _mm256_fmadd_ps(xv, w0, c##i##0);                                           \
        c##i##1 = _mm256_fmadd_ps(xv, w1, c##i##1);                                           \
    }
#define STEP0(i) STEP(i, k)
#define STEP1(i) STEP(i, k + 1)
            ROWS(STEP0)
            load_row(DT, t->w, k, 1, &w0, &w1);
            _mm_prefetch(pf + (k + 1) * pfstep, _MM_HINT_T0);
            ROWS(STEP1)
        }
        if (k < kc) {
            __m256 w0, w1;
            load_row(DT, t->w, k, 0, &w0, &w1);
            ROWS(STEP0)
        }
#undef STEP0
#undef STEP1
#undef STEP
    }
    if (DT == ENG_DTYPE_I8) {
        const __m256 s0 = _mm256_loadu_ps(t->scale), s1 = _mm256_loadu_ps(t->scale + 8);
        LOAD_BIAS(b0, b1)
#define SCALE(i)                                                                              \
    if (MR > i) {                                                                             \
        __m256 v0 = b0, v1 = b1;                                                              \
        ADD_Y(i, v0, v1)                                                                      \
        c##i##0 = _mm256_fmadd_ps(c##i##0, s0, v0);                                           \
        c##i##1 = _mm256_fmadd_ps(c##i##1, s1, v1);                                           \
    }
        ROWS(SCALE)
#undef SCALE
    }
    if (t->gelu) {
#define GELU(i)                                                                               \
    if (MR > i) {                                                                             \
        c##i##0 = vm_gelu8(c##i##0);                                                          \
        c##i##1 = vm_gelu8(c##i##1);                                                          \
    }
        ROWS(GELU)
#undef GELU
    }
#define STORE(i)                                                                              \
    if (MR > i) {                                                                             \
        float *yr = t->y + (size_t)(i) * t->ldy;                                              \
        if (full) {                                                                           \
            _mm256_storeu_ps(yr, c##i##0);                                                    \
            _mm256_storeu_ps(yr + 8, c##i##1);                                                \
        } else {                                                                              \
            _mm256_maskstore_ps(yr, m0, c##i##0);                                             \
            _mm256_maskstore_ps(yr + 8, m1, c##i##1);                                         \
        }                                                                                     \
    }
    ROWS(STORE)
#undef STORE
}

#define TILE_FNS(DT, NAME)                                                                    \
    TARGET static void NAME##_1(const mm_tile_t *t) { tile_body(t, 1, DT); }                  \
    TARGET static void NAME##_2(const mm_tile_t *t) { tile_body(t, 2, DT); }                  \
    TARGET static void NAME##_3(const mm_tile_t *t) { tile_body(t, 3, DT); }                  \
    TARGET static void NAME##_4(const mm_tile_t *t) { tile_body(t, 4, DT); }                  \
    TARGET static void NAME##_5(const mm_tile_t *t) { tile_body(t, 5, DT); }                  \
    TARGET static void NAME##_6(const mm_tile_t *t) { tile_body(t, 6, DT); }                  \
    static void (*const NAME[MM_MR_AVX2])(const mm_tile_t *) = {NAME##_1, NAME##_2,          \
                                                                NAME##_3, NAME##_4,          \
                                                                NAME##_5, NAME##_6};

TILE_FNS(ENG_DTYPE_F32, tile_f32)
TILE_FNS(ENG_DTYPE_F16, tile_f16)
TILE_FNS(ENG_DTYPE_BF16, tile_bf16)
TILE_FNS(ENG_DTYPE_I8, tile_i8)
TILE_FNS(ENG_DTYPE_BF16X3, tile_x3)

void mm_tile_avx2(const mm_tile_t *t)
{
    int i = t->mr - 1;
    if (t->dtype == ENG_DTYPE_F32)
        tile_f32[i](t);
    else if (t->dtype == ENG_DTYPE_F16)
        tile_f16[i](t);
    else if (t->dtype == ENG_DTYPE_BF16)
        tile_bf16[i](t);
    else if (t->dtype == ENG_DTYPE_BF16X3)
        tile_x3[i](t);
    else
        tile_i8[i](t);
}

#else

/* Not an x86 CPU: matmul.c never selects this path. */
void mm_tile_avx2(const mm_tile_t *t)
{
    mm_tile_generic(t);
}

#endif
