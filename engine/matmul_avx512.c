/* matmul_avx512.c - the AVX-512 register tile, up to MM_MR_AVX512 x 16.
 *
 * Only functions with the target attribute use these instructions; matmul.c calls
 * mm_tile_avx512 only after checking the CPU and the OS (XCR0), so the rest of the binary
 * stays portable. A panel row is one zmm, so each row of the tile has one accumulator; per k
 * step: one panel row widened to F32, and one FMA per row of X with the X value broadcast
 * from memory ({1to16}). Tail columns (nc < 16) use a lane mask for bias, Y and the stores.
 * The panels are the same as the other tiles' (16 columns, BF16 interleaved as in slot_of in
 * matmul.c), so weights packed once run on any kernel.
 *
 * Rows per tile: FMA latency 4 x 2 FMA units needs at least 8 independent accumulators;
 * 8, 12 and 14 rows measured the same within noise (bench/mm-bench, fc, F32, hot weights).
 */
#include <immintrin.h>

#include "engine/engine.h"
#include "engine/matmul.h"
#include "engine/matmul_kern.h"
#include "engine/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)

#define TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define INLINE                                                                                \
    static inline __attribute__((always_inline,                                               \
                                 target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

/* Row k of a panel as one F32 vector, columns 0..15. */
INLINE __m512 load_row(int dt, const void *w, int k, __m512i bf16_idx)
{
    if (dt == ENG_DTYPE_F32)
        return _mm512_loadu_ps((const float *)w + (size_t)k * MM_NR);
    if (dt == ENG_DTYPE_F16)
        return _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + (size_t)k * MM_NR)));
    if (dt == ENG_DTYPE_I8) {
        /* vpmovsxbd from memory, then convert: exact, as in the AVX2 tile. */
        const int8_t *p = (const int8_t *)w + (size_t)k * MM_NR;
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    }
    /* Interleaved BF16 (16-bit slot 2j = column j, 2j+1 = column 8+j): one vpermw puts
     * column j's bits in the high half of lane j and zeroes the low halves. */
    __m256i r = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + (size_t)k * MM_NR));
    return _mm512_castsi512_ps(
        _mm512_maskz_permutexvar_epi16(0xaaaaaaaau, bf16_idx, _mm512_castsi256_si512(r)));
}

/* The vpermw index for load_row's BF16 case: word 2j+1 of the result takes the slot of
 * column j (even words are zeroed by the mask; their index does not matter). */
INLINE __m512i bf16_index(void)
{
    return _mm512_set_epi16(15, 0, 13, 0, 11, 0, 9, 0, 7, 0, 5, 0, 3, 0, 1, 0, /* cols 8-15 */
                            14, 0, 12, 0, 10, 0, 8, 0, 6, 0, 4, 0, 2, 0, 0, 0); /* cols 0-7 */
}

/* Row i of the tile's X, from the bases xa = row 0, xb = row 3, xc = row 6, xd = row 9 and
 * the row stride s in bytes (i is a constant: one addressing mode per row). */
INLINE const float *x_row(int i, const char *xa, const char *xb, const char *xc,
                          const char *xd, size_t s)
{
    switch (i) {
    case 0: return (const float *)xa;
    case 1: return (const float *)(xa + s);
    case 2: return (const float *)(xa + 2 * s);
    case 3: return (const float *)xb;
    case 4: return (const float *)(xa + 4 * s);
    case 5: return (const float *)(xb + 2 * s);
    case 6: return (const float *)xc;
    case 7: return (const float *)(xb + 4 * s);
    case 8: return (const float *)(xa + 8 * s);
    case 9: return (const float *)xd;
    case 10: return (const float *)(xc + 4 * s);
    default: return (const float *)(xb + 8 * s); /* 11 */
    }
}

/* The accumulators are named variables, not an array, as in the AVX2 tile (an array stayed
 * in memory with gcc -O2 and clang 14). Tiles with MR <= i drop row i's code. */
#define ROWS(X)                                                                               \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

INLINE void tile_body(const mm_tile_t *t, const int MR, const int DT)
{
    const __mmask16 m = (__mmask16)((1u << t->nc) - 1);
    const __m512i bf16_idx = bf16_index();
    /* The start value: the bias (or zero) plus Y when load_y. I8 sums the raw products from
     * zero and adds them, scaled, to the start value after the k loop. */
    const __m512 b = t->bias ? _mm512_maskz_loadu_ps(m, t->bias) : _mm512_setzero_ps();
#define START(i)                                                                              \
    __m512 c##i = _mm512_setzero_ps();                                                        \
    if (MR > i && DT != ENG_DTYPE_I8) {                                                       \
        c##i = b;                                                                             \
        if (t->load_y)                                                                        \
            c##i = _mm512_add_ps(c##i, _mm512_maskz_loadu_ps(m, t->y + (size_t)(i) * t->ldy)); \
    }
    ROWS(START)
#undef START
    const float *x = t->x;
    const size_t ldx = t->ldx;
    const char *pf = t->pf;
    const ptrdiff_t pfstep = t->pfstep;
    const int kc = t->kc;
    if (MR == 1) {
        /* One accumulator would make each FMA wait for the previous one: odd k go to a
         * second one, added at the end (the same order as the other tiles). */
        __m512 e0 = _mm512_setzero_ps();
        int k = 0;
        for (; k + 2 <= kc; k += 2) {
            __m512 w0 = load_row(DT, t->w, k, bf16_idx), w1 = load_row(DT, t->w, k + 1, bf16_idx);
            _mm_prefetch(pf + k * pfstep, _MM_HINT_T0);
            _mm_prefetch(pf + (k + 1) * pfstep, _MM_HINT_T0);
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(x[k]), w0, c0);
            e0 = _mm512_fmadd_ps(_mm512_set1_ps(x[k + 1]), w1, e0);
        }
        if (k < kc)
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(x[k]), load_row(DT, t->w, k, bf16_idx), c0);
        c0 = _mm512_add_ps(c0, e0);
    } else {
        /* Twelve row pointers and the loop's own would not fit the 15 general registers
         * (gcc kept some on the stack): rows are addressed from four bases instead, as base +
         * 1, 2, 4 or 8 row strides (see x_row), and the bases step by one float. */
        const size_t s = ldx * sizeof(float);
        const char *xa = (const char *)x, *xb = xa + 3 * s, *xc = xa + 6 * s, *xd = xa + 9 * s;
        const char *w = t->w;
        const size_t wstep = MM_NR * (DT == ENG_DTYPE_F32 ? 4 : DT == ENG_DTYPE_I8 ? 1 : 2);
        for (int k = kc; k > 0; k--) {
            __m512 w0 = load_row(DT, w, 0, bf16_idx);
            _mm_prefetch(pf, _MM_HINT_T0);
#define STEP(i)                                                                               \
    if (MR > i)                                                                               \
        c##i = _mm512_fmadd_ps(_mm512_set1_ps(*x_row(i, xa, xb, xc, xd, s)), w0, c##i);
            ROWS(STEP)
#undef STEP
            xa += sizeof(float);
            xb += sizeof(float);
            xc += sizeof(float);
            xd += sizeof(float);
            w += wstep;
            pf += pfstep;
        }
    }
    if (DT == ENG_DTYPE_I8) {
        const __m512 sc = _mm512_loadu_ps(t->scale);
#define SCALE(i)                                                                              \
    if (MR > i) {                                                                             \
        __m512 v = b;                                                                         \
        if (t->load_y)                                                                        \
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, t->y + (size_t)(i) * t->ldy));      \
        c##i = _mm512_fmadd_ps(c##i, sc, v);                                                  \
    }
        ROWS(SCALE)
#undef SCALE
    }
    if (t->gelu) {
#define GELU(i)                                                                               \
    if (MR > i)                                                                               \
        c##i = vm_gelu16(c##i);
        ROWS(GELU)
#undef GELU
    }
#define STORE(i)                                                                              \
    if (MR > i)                                                                               \
        _mm512_mask_storeu_ps(t->y + (size_t)(i) * t->ldy, m, c##i);
    ROWS(STORE)
#undef STORE
}

#define TILE_FN(DT, NAME, R)                                                                  \
    TARGET static void NAME##_##R(const mm_tile_t *t) { tile_body(t, R, DT); }
#define TILE_FNS(DT, NAME)                                                                    \
    TILE_FN(DT, NAME, 1) TILE_FN(DT, NAME, 2) TILE_FN(DT, NAME, 3) TILE_FN(DT, NAME, 4)       \
    TILE_FN(DT, NAME, 5) TILE_FN(DT, NAME, 6) TILE_FN(DT, NAME, 7) TILE_FN(DT, NAME, 8)       \
    TILE_FN(DT, NAME, 9) TILE_FN(DT, NAME, 10) TILE_FN(DT, NAME, 11) TILE_FN(DT, NAME, 12)    \
    static void (*const NAME[MM_MR_AVX512])(const mm_tile_t *) = {                            \
        NAME##_1, NAME##_2, NAME##_3, NAME##_4,  NAME##_5,  NAME##_6,                          \
        NAME##_7, NAME##_8, NAME##_9, NAME##_10, NAME##_11, NAME##_12};

TILE_FNS(ENG_DTYPE_F32, tile_f32)
TILE_FNS(ENG_DTYPE_F16, tile_f16)
TILE_FNS(ENG_DTYPE_BF16, tile_bf16)
TILE_FNS(ENG_DTYPE_I8, tile_i8)

void mm_tile_avx512(const mm_tile_t *t)
{
    int i = t->mr - 1;
    if (t->dtype == ENG_DTYPE_F32)
        tile_f32[i](t);
    else if (t->dtype == ENG_DTYPE_F16)
        tile_f16[i](t);
    else if (t->dtype == ENG_DTYPE_BF16)
        tile_bf16[i](t);
    else
        tile_i8[i](t);
}

#else

/* Not an x86 CPU: matmul.c never selects this path. */
void mm_tile_avx512(const mm_tile_t *t)
{
    mm_tile_generic(t);
}

#endif
