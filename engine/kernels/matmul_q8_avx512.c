/* matmul_q8_avx512.c - the AVX-512 W8A8 tiles (matmul_q8.h): up to 8 rows x three panels
 * with VNNI (24 sums; two panels without), 1-2 rows x four, int32 sums per 16 columns in one
 * zmm; and the AVX-512 quantizer of X. 8 x 48 against 8 x 32 with VNNI (Zen 5 EPYC, one
 * thread, M = 32): 2-4% less time per product.
 *
 * Per group of four K values: a 64-byte row of each panel (16 columns x 4 values), and per
 * row of X its four int8 values broadcast to every lane. With AVX512-VNNI one VPDPBUSD per
 * row and panel adds the four products of unsigned weight bytes and signed X into each int32
 * lane (64 multiply-adds an instruction, 16 for an F32 FMA); the tile then subtracts 128 times
 * the row's sum of X for the weights' offset. Without VNNI (AVX-512 BW): the weight bytes are
 * made signed (xor 0x80), negated where X is negative (masked VPSUBB: there is no VPSIGNB on
 * zmm), and multiplied by |X| with VPMADDUBSW (pairs to int16, at most 2 * 127 * 127: no
 * saturation) and VPMADDWD by ones (to int32). Only functions with the target attributes use
 * these instructions; matmul.c picks them after checking the CPU and the OS.
 */
#include <immintrin.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_q8.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)

#define ISA "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"
#define INLINE static inline __attribute__((always_inline, target(ISA)))

/* Lanes below n set (n may be <= 0 or >= 16). */
INLINE __mmask16 lane_mask(int n)
{
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

INLINE __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return _mm512_set1_epi32(v);
}

/* acc += the four products of each lane: w (unsigned bytes, offset 128) times x. */
INLINE __m512i dot4(__m512i acc, __m512i w, __m512i ws, __m512i x, __m512i ax, __mmask64 neg,
                    int vnni)
{
    if (vnni) {
        /* VPDPBUSD (AVX512-VNNI) as inline assembly, so that no function here carries the
         * VNNI target: a compiler may turn VPMADDWD + VPADDD into VNNI's VPDPWSSD where the
         * target allows it, which the other form must not contain. acc += w (u8) . x (s8). */
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
        return acc;
    }
    (void)w;
    (void)x;
    __m512i sw = _mm512_mask_sub_epi8(ws, neg, _mm512_setzero_si512(), ws);
    __m512i p16 = _mm512_maddubs_epi16(ax, sw);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(p16, _mm512_set1_epi16(1)));
}

#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

INLINE void tile_body(const mm_q8_tile_t *t, const int MR, const int NP, const int VNNI)
{
    const __mmask16 m0 = lane_mask(t->nc), m1 = lane_mask(t->nc - MM_NR),
                    m2 = lane_mask(t->nc - 2 * MM_NR), m3 = lane_mask(t->nc - 3 * MM_NR);
#define PANELS(X, i)                                                                               \
    X(i, 0, m0)                                                                                    \
    if (NP > 1)                                                                                    \
        X(i, 1, m1)                                                                                \
    if (NP > 2)                                                                                    \
        X(i, 2, m2)                                                                                \
    if (NP > 3)                                                                                    \
    X(i, 3, m3)
#define START(i)                                                                                   \
    __m512i a##i##0 = _mm512_setzero_si512(), a##i##1 = a##i##0, a##i##2 = a##i##0,                \
            a##i##3 = a##i##0;
    ROWS(START)
#undef START
    const uint8_t *w = t->w;
    const char *pf = t->pf;
    const ptrdiff_t ws = t->wstride, pfstep = t->pfstep;
    const int8_t *x = t->x;
    const size_t ldx = t->ldx;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int g = 0; g < t->kc / 4; g++) {
        __m512i W0 = _mm512_loadu_si512(w), W1 = W0, W2 = W0, W3 = W0;
        _mm_prefetch(pf, _MM_HINT_T0);
        if (NP > 1) {
            W1 = _mm512_loadu_si512(w + ws);
            _mm_prefetch(pf + ws, _MM_HINT_T0);
        }
        if (NP > 2) {
            W2 = _mm512_loadu_si512(w + 2 * ws);
            _mm_prefetch(pf + 2 * ws, _MM_HINT_T0);
        }
        if (NP > 3) {
            W3 = _mm512_loadu_si512(w + 3 * ws);
            _mm_prefetch(pf + 3 * ws, _MM_HINT_T0);
        }
        __m512i S0 = W0, S1 = W1, S2 = W2, S3 = W3;
        if (!VNNI) {
            S0 = _mm512_xor_si512(W0, flip);
            S1 = _mm512_xor_si512(W1, flip);
            S2 = _mm512_xor_si512(W2, flip);
            S3 = _mm512_xor_si512(W3, flip);
        }
#define DOT1(i, q, m) a##i##q = dot4(a##i##q, W##q, S##q, xv, ax, neg, VNNI);
#define STEP(i)                                                                                    \
    if (MR > i) {                                                                                  \
        __m512i xv = bcast4(x + (size_t)(i)*ldx), ax = xv;                                         \
        __mmask64 neg = 0;                                                                         \
        if (!VNNI) {                                                                               \
            ax = _mm512_abs_epi8(xv);                                                              \
            neg = _mm512_movepi8_mask(xv);                                                         \
        }                                                                                          \
        PANELS(DOT1, i)                                                                            \
    }
        ROWS(STEP)
#undef STEP
#undef DOT1
        x += 4;
        w += 4 * MM_NR;
        pf += pfstep;
    }
    /* The epilogue of matmul_q8.h: start value, then fma((float)d * s_x, s_w, start). */
#define FINISH1(i, q, m)                                                                           \
    {                                                                                              \
        float *yr = t->y + (size_t)(i)*t->ldy + (q)*MM_NR;                                         \
        __m512 v = _mm512_setzero_ps();                                                            \
        if (t->load_y)                                                                             \
            v = _mm512_maskz_loadu_ps(m, yr);                                                      \
        if (t->bias) {                                                                             \
            __m512 bv = _mm512_maskz_loadu_ps(m, t->bias + (q)*MM_NR);                             \
            v = t->load_y ? _mm512_add_ps(bv, v) : bv;                                             \
        }                                                                                          \
        __m512i d = a##i##q;                                                                       \
        if (VNNI)                                                                                  \
            d = _mm512_sub_epi32(d, corr);                                                         \
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(d), sx);                                       \
        v = _mm512_fmadd_ps(f, _mm512_loadu_ps(t->scale + (q)*MM_NR), v);                          \
        if (t->gelu)                                                                               \
            v = vm_gelu16(v);                                                                      \
        _mm512_mask_storeu_ps(yr, m, v);                                                           \
    }
#define FINISH(i)                                                                                  \
    if (MR > i) {                                                                                  \
        const __m512 sx = _mm512_set1_ps(t->xs[(size_t)(i)*t->xstride]);                           \
        const __m512i corr = _mm512_set1_epi32(128 * t->xsum[(size_t)(i)*t->xstride]);             \
        (void)corr;                                                                                \
        PANELS(FINISH1, i)                                                                         \
    }
    ROWS(FINISH)
#undef FINISH
#undef FINISH1
#undef PANELS
}

/* Tiles of MR rows and NP panels (mm_q8_np): NP 1..4 for MR <= 2; from 3 rows on, NP 1..2,
 * or 1..3 with VNNI (P3 says whether to make the three-panel tiles). */
#define TILE_FN(V, NAME, R, P)                                                                     \
    __attribute__((target(ISA))) static void NAME##_##R##_##P(const mm_q8_tile_t *t)               \
    {                                                                                              \
        tile_body(t, R, P, V);                                                                     \
    }
#define TILE_ROW(V, NAME, R, P3)                                                                   \
    TILE_FN(V, NAME, R, 1) TILE_FN(V, NAME, R, 2) P3(TILE_FN(V, NAME, R, 3))
#define YES(x) x
#define NO(x)
/* clang-format off */
#define TILE_FNS(V, NAME, P3)                                                                      \
    TILE_FN(V, NAME, 1, 1) TILE_FN(V, NAME, 1, 2) TILE_FN(V, NAME, 1, 3)                           \
    TILE_FN(V, NAME, 1, 4) TILE_FN(V, NAME, 2, 1) TILE_FN(V, NAME, 2, 2)                           \
    TILE_FN(V, NAME, 2, 3) TILE_FN(V, NAME, 2, 4) TILE_ROW(V, NAME, 3, P3)                         \
    TILE_ROW(V, NAME, 4, P3) TILE_ROW(V, NAME, 5, P3) TILE_ROW(V, NAME, 6, P3)                     \
    TILE_ROW(V, NAME, 7, P3) TILE_ROW(V, NAME, 8, P3)                                              \
    static void (*const NAME[8][4])(const mm_q8_tile_t *) = {                                      \
        {NAME##_1_1, NAME##_1_2, NAME##_1_3, NAME##_1_4},                                          \
        {NAME##_2_1, NAME##_2_2, NAME##_2_3, NAME##_2_4},                                          \
        {NAME##_3_1, NAME##_3_2, P3(NAME##_3_3)},                                                  \
        {NAME##_4_1, NAME##_4_2, P3(NAME##_4_3)},                                                  \
        {NAME##_5_1, NAME##_5_2, P3(NAME##_5_3)},                                                  \
        {NAME##_6_1, NAME##_6_2, P3(NAME##_6_3)},                                                  \
        {NAME##_7_1, NAME##_7_2, P3(NAME##_7_3)},                                                  \
        {NAME##_8_1, NAME##_8_2, P3(NAME##_8_3)}};
/* clang-format on */

TILE_FNS(0, tile_bw, NO)
TILE_FNS(1, tile_vnni, YES)

void mm_q8_tile_avx512(const mm_q8_tile_t *t)
{
    tile_bw[t->mr - 1][t->np - 1](t);
}

void mm_q8_tile_avx512_vnni(const mm_q8_tile_t *t)
{
    tile_vnni[t->mr - 1][t->np - 1](t);
}

/* The quantizer of matmul_q8.h, 16 values at a time: max |x| from the bits (positive floats
 * order as their bits, and Inf and NaN above every finite value), then q = x * inv rounded
 * by VCVTPS2DQ in the current rounding mode, as mm_q8_value's rintf. */
__attribute__((target(ISA))) void mm_q8_quantize_avx512(mm_q8_x_t *qx, int m0, int m1, int K,
                                                        const float *x, size_t ldx)
{
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    for (int m = m0; m < m1; m++) {
        const float *xr = x + (size_t)m * ldx;
        int8_t *q = qx->q + (size_t)m * qx->ldq;
        for (int b = 0; b < qx->nb; b++) {
            const int k0 = b * MM_Q8_KB, k1 = K - k0 < MM_Q8_KB ? K : k0 + MM_Q8_KB;
            __m512i mx = _mm512_setzero_si512();
            for (int k = k0; k < k1; k += 16) {
                __mmask16 mk = lane_mask(k1 - k);
                __m512i v = _mm512_maskz_loadu_epi32(mk, xr + k);
                mx = _mm512_max_epu32(mx, _mm512_and_si512(v, abs_mask));
            }
            float inv;
            mm_q8_block_scale((uint32_t)_mm512_reduce_max_epu32(mx), &qx->s[(size_t)m * qx->nb + b],
                              &inv);
            __m512i sum = _mm512_setzero_si512();
            const __m512 vinv = _mm512_set1_ps(inv);
            const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
            for (int k = k0; k < k1; k += 16) {
                __mmask16 mk = lane_mask(k1 - k);
                __m512i r = _mm512_setzero_si512();
                if (inv != 0.0f) {
                    r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + k), vinv));
                    r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
                }
                sum = _mm512_add_epi32(sum, r);
                _mm512_mask_cvtepi32_storeu_epi8(q + k, mk, r);
            }
            qx->sum[(size_t)m * qx->nb + b] = _mm512_reduce_add_epi32(sum);
        }
        for (int k = K; k < (K + 3) / 4 * 4; k++)
            q[k] = 0;
    }
}

#else

void mm_q8_tile_avx512(const mm_q8_tile_t *t)
{
    mm_q8_tile_generic(t);
}

void mm_q8_tile_avx512_vnni(const mm_q8_tile_t *t)
{
    mm_q8_tile_generic(t);
}

void mm_q8_quantize_avx512(mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx)
{
    mm_q8_quantize(MM_Q8_GENERIC, qx, m0, m1, K, x, ldx);
}

#endif
