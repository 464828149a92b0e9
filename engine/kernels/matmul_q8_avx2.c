/* matmul_q8_avx2.c - the AVX2 W8A8 tiles (matmul_q8.h): up to 6 rows x 16
 * columns, 1 x 64 and 2 x 32, int32 sums per 8 columns in one ymm; and the AVX2 quantizer.
 *
 * Per group of four K values: a panel's 64-byte row as two ymm (columns 0-7 and 8-15, four
 * values each) and per row of X its four int8 values broadcast. With AVX-VNNI one VPDPBUSD
 * (VEX) per row and vector adds the four products of unsigned weight bytes and signed X, and
 * the tile subtracts 128 times the row's sum of X for the weights' offset. Without it: the
 * weight bytes made signed (xor 0x80), VPSIGNB by X, VPMADDUBSW with |X| (pair sums at most
 * 2 * 127 * 127: no saturation) and VPMADDWD by ones into int32, for one and two rows; from
 * three rows on, tile_wd (16-bit values, no VPSIGNB: see there). VPDPBUSD is written as
 * inline assembly so no function here carries the AVX-VNNI target (a compiler may fuse
 * VPMADDWD + VPADDD into VPDPWSSD where it is allowed, which the other form must not
 * contain). matmul.c picks these tiles only after checking the CPU.
 */
#include <immintrin.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_q8.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)

#define ISA "avx2,fma,f16c"

#define INLINE static inline __attribute__((always_inline, target(ISA)))

INLINE __m256i tail_mask(int n)
{
    /* Lanes < n set (n may be <= 0 or >= 8). */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return _mm256_set1_epi32(v);
}

/* acc += the four products of each lane: w (unsigned bytes, offset 128; ws the same made
 * signed) times x (ax = |x|). */
INLINE __m256i dot4(__m256i acc, __m256i w, __m256i ws, __m256i x, __m256i ax, int vnni)
{
    if (vnni) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(w), "x"(x));
        return acc;
    }
    (void)w;
    __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(ws, x));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

/* The epilogue of matmul_q8.h for row i, columns col..col+7 of the tile (d: their int32 sums,
 * the weights' offset taken off; full: all eight are in the tile): start value, then
 * fma((float)d * s_x, s_w, start). */
INLINE void finish8(const mm_q8_tile_t *t, int i, int col, __m256i d, int full)
{
    const __m256i mk = tail_mask(t->nc - col);
    float *yr = t->y + (size_t)i * t->ldy + col;
    __m256 val = _mm256_setzero_ps();
    if (t->load_y)
        val = full ? _mm256_loadu_ps(yr) : _mm256_maskload_ps(yr, mk);
    if (t->bias) {
        const float *br = t->bias + col;
        __m256 bv = full ? _mm256_loadu_ps(br) : _mm256_maskload_ps(br, mk);
        val = t->load_y ? _mm256_add_ps(bv, val) : bv;
    }
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(t->xs[(size_t)i * t->xstride]));
    val = _mm256_fmadd_ps(f, _mm256_loadu_ps(t->scale + col), val);
    if (t->gelu)
        val = vm_gelu8(val);
    if (full)
        _mm256_storeu_ps(yr, val);
    else
        _mm256_maskstore_ps(yr, mk, val);
}

/* a<i>_<v>: row i, columns 8v..8v+7 of the tile (panel v / 2); code for rows MR <= i and
 * vectors 2 NP <= v is dropped (MR and NP are constants). */
#define VECS(X, i) X(i, 0) X(i, 1) X(i, 2) X(i, 3) X(i, 4) X(i, 5) X(i, 6) X(i, 7)
#define GRID(X) VECS(X, 0) VECS(X, 1) VECS(X, 2) VECS(X, 3) VECS(X, 4) VECS(X, 5)
#define LIVE(i, v) (MR > (i) && 2 * NP > (v))

INLINE void tile_body(const mm_q8_tile_t *t, const int MR, const int NP, const int VNNI)
{
    const int full = t->nc == NP * MM_NR;
#define START(i, v) __m256i a##i##_##v = _mm256_setzero_si256();
    GRID(START)
#undef START
    const uint8_t *w = t->w;
    const char *pf = t->pf;
    const ptrdiff_t ws = t->wstride, pfstep = t->pfstep;
    const int8_t *x = t->x;
    const size_t ldx = t->ldx;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
#define DOT(i, v0, v1)                                                                             \
    if (LIVE(i, v0)) {                                                                             \
        __m256i xv = bcast4(x + (size_t)(i)*ldx), ax = xv;                                         \
        if (!VNNI)                                                                                 \
            ax = _mm256_abs_epi8(xv);                                                              \
        a##i##_##v0 = dot4(a##i##_##v0, w0, s0, xv, ax, VNNI);                                     \
        a##i##_##v1 = dot4(a##i##_##v1, w1, s1, xv, ax, VNNI);                                     \
    }
#define ROWS_DOT(v0, v1)                                                                           \
    DOT(0, v0, v1) DOT(1, v0, v1) DOT(2, v0, v1) DOT(3, v0, v1) DOT(4, v0, v1) DOT(5, v0, v1)
#define PANEL(p, v0, v1)                                                                           \
    if (NP > (p)) {                                                                                \
        const uint8_t *wp = w + (p)*ws;                                                            \
        __m256i w0 = _mm256_loadu_si256((const __m256i *)wp),                                      \
                w1 = _mm256_loadu_si256((const __m256i *)(wp + 32)), s0 = w0, s1 = w1;             \
        _mm_prefetch(pf + (p)*ws, _MM_HINT_T0);                                                    \
        if (!VNNI) {                                                                               \
            s0 = _mm256_xor_si256(w0, flip);                                                       \
            s1 = _mm256_xor_si256(w1, flip);                                                       \
        }                                                                                          \
        ROWS_DOT(v0, v1)                                                                           \
    }
    for (int g = 0; g < t->kc / 4; g++) {
        PANEL(0, 0, 1)
        PANEL(1, 2, 3)
        PANEL(2, 4, 5)
        PANEL(3, 6, 7)
        x += 4;
        w += 4 * MM_NR;
        pf += pfstep;
    }
#undef PANEL
#undef ROWS_DOT
#undef DOT
#define FINISH(i, v)                                                                               \
    if (LIVE(i, v)) {                                                                              \
        __m256i d = a##i##_##v;                                                                    \
        if (VNNI)                                                                                  \
            d = _mm256_sub_epi32(d, _mm256_set1_epi32(128 * t->xsum[(size_t)(i)*t->xstride]));     \
        finish8(t, i, 8 * (v), d, full);                                                           \
    }
    GRID(FINISH)
#undef FINISH
}

/* The form without VNNI from 3 rows on: VPMADDWD on 16-bit values, no VPSIGNB (which takes
 * the same two ports as the multiplies on the AMD EPYC measured, so the 4 x 16 tile's 24 VPSIGNB,
 * VPMADDUBSW and VPMADDWD of a group took 12 cycles or more against 6 for 12 VPMADDWD here). Per
 * half panel (8 columns) and group of four K values, the weight bytes zero-extended to two ymm of
 * 16 bits (columns 4c..4c+3, four values each) and per row its four 16-bit values (q16, written by
 * the quantizer) broadcast; one VPMADDWD per row and ymm sums pairs of K, so lanes 2c and 2c + 1
 * hold column c's two halves, added by VPHADDD at the end. The unsigned weights (offset 128) are
 * corrected by 128 times the row's sum of X, as with VNNI; every sum is exact (at most 256 * 127 *
 * 255 < 2^24), so the results are the other forms' bits. */
#define HROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
INLINE void tile_wd_body(const mm_q8_tile_t *t, const int MR)
{
    const ptrdiff_t ld = (ptrdiff_t)(t->ldx * sizeof(int16_t));
    for (int h = 0; h < 2 && 8 * h < t->nc; h++) {
        const int full = t->nc >= 8 * h + 8;
#define START(i) __m256i b##i##_0 = _mm256_setzero_si256(), b##i##_1 = _mm256_setzero_si256();
        HROWS(START)
#undef START
        const uint8_t *w = t->w + 32 * h;
        const char *pf = t->pf + 32 * h;
        const ptrdiff_t pfstep = t->pfstep;
        const int16_t *x = t->x16;
        const ptrdiff_t x3 = 3 * (ptrdiff_t)t->ldx; /* locals: the clobber below spares them */
        const int groups = t->kc / 4;
        for (int g = 0; g < groups; g++) {
            _mm_prefetch(pf, _MM_HINT_T0);
            /* Written out: the compiler spills the sums of six rows otherwise. It reads W and X
             * through the pointers: hence the memory clobber. */
#define WD_ROW(addr, a, b)                                                                         \
    "vpbroadcastq " addr ", %%ymm14\n\t"                                                           \
    "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t"                                                       \
    "vpaddd %%ymm15, %" #a ", %" #a "\n\t"                                                         \
    "vpmaddwd %%ymm14, %%ymm13, %%ymm15\n\t"                                                       \
    "vpaddd %%ymm15, %" #b ", %" #b "\n\t"
#define R0 WD_ROW("(%[x])", 0, 1)
#define R1 WD_ROW("(%[x], %[ld])", 2, 3)
#define R2 WD_ROW("(%[x], %[ld], 2)", 4, 5)
#define R3 WD_ROW("(%[x3])", 6, 7)
#define R4 WD_ROW("(%[x3], %[ld])", 8, 9)
#define R5 WD_ROW("(%[x3], %[ld], 2)", 10, 11)
#define WD_ASM(ROWS)                                                                               \
    __asm__("vpmovzxbw (%[w]), %%ymm12\n\t"                                                        \
            "vpmovzxbw 16(%[w]), %%ymm13\n\t" ROWS                                                 \
            : "+x"(b0_0), "+x"(b0_1), "+x"(b1_0), "+x"(b1_1), "+x"(b2_0), "+x"(b2_1), "+x"(b3_0),  \
              "+x"(b3_1), "+x"(b4_0), "+x"(b4_1), "+x"(b5_0), "+x"(b5_1)                           \
            : [w] "r"(w), [x] "r"(x), [x3] "r"(x + x3), [ld] "r"(ld)                               \
            : "xmm12", "xmm13", "xmm14", "xmm15", "memory")
            if (MR == 6)
                WD_ASM(R0 R1 R2 R3 R4 R5);
            else if (MR == 5)
                WD_ASM(R0 R1 R2 R3 R4);
            else if (MR == 4)
                WD_ASM(R0 R1 R2 R3);
            else
                WD_ASM(R0 R1 R2);
#undef R0
#undef R1
#undef R2
#undef R3
#undef R4
#undef R5
#undef WD_ASM
#undef WD_ROW
            x += 4;
            w += 4 * MM_NR;
            pf += pfstep;
        }
#define FINISH(i)                                                                                  \
    if (MR > (i)) {                                                                                \
        __m256i d = _mm256_permute4x64_epi64(_mm256_hadd_epi32(b##i##_0, b##i##_1), 0xd8);         \
        d = _mm256_sub_epi32(d, _mm256_set1_epi32(128 * t->xsum[(size_t)(i)*t->xstride]));         \
        finish8(t, i, 8 * h, d, full);                                                             \
    }
        HROWS(FINISH)
#undef FINISH
    }
}

#define TILE_WD(R)                                                                                 \
    __attribute__((target(ISA))) static void tile_wd_##R(const mm_q8_tile_t *t)                    \
    {                                                                                              \
        tile_wd_body(t, R);                                                                        \
    }
TILE_WD(3)
TILE_WD(4)
TILE_WD(5)
TILE_WD(6)

/* Tiles of MR rows and NP panels (mm_q8_np); NULL past that. */
#define TILE_FN(V, NAME, R, P)                                                                     \
    __attribute__((target(ISA))) static void NAME##_##R##_##P(const mm_q8_tile_t *t)               \
    {                                                                                              \
        tile_body(t, R, P, V);                                                                     \
    }
TILE_FN(0, tile_plain, 1, 1)
TILE_FN(0, tile_plain, 1, 2)
TILE_FN(0, tile_plain, 1, 3)
TILE_FN(0, tile_plain, 1, 4)
TILE_FN(0, tile_plain, 2, 1)
TILE_FN(0, tile_plain, 2, 2)
TILE_FN(1, tile_vnni, 1, 1)
TILE_FN(1, tile_vnni, 1, 2)
TILE_FN(1, tile_vnni, 1, 3)
TILE_FN(1, tile_vnni, 1, 4)
TILE_FN(1, tile_vnni, 2, 1)
TILE_FN(1, tile_vnni, 2, 2)
TILE_FN(1, tile_vnni, 3, 1)
TILE_FN(1, tile_vnni, 4, 1)
TILE_FN(1, tile_vnni, 5, 1)
TILE_FN(1, tile_vnni, 6, 1)

/* Without VNNI: one and two rows here, MM_Q8_WIDE_MR rows and more in tile_wd. */
static void (*const tile_plain[2][4])(const mm_q8_tile_t *) = {
    {tile_plain_1_1, tile_plain_1_2, tile_plain_1_3, tile_plain_1_4},
    {tile_plain_2_1, tile_plain_2_2}};
static void (*const tile_wd[4])(const mm_q8_tile_t *) = {tile_wd_3, tile_wd_4, tile_wd_5,
                                                         tile_wd_6};
static void (*const tile_vnni[6][4])(const mm_q8_tile_t *) = {
    {tile_vnni_1_1, tile_vnni_1_2, tile_vnni_1_3, tile_vnni_1_4},
    {tile_vnni_2_1, tile_vnni_2_2},
    {tile_vnni_3_1},
    {tile_vnni_4_1},
    {tile_vnni_5_1},
    {tile_vnni_6_1}};

void mm_q8_tile_avx2(const mm_q8_tile_t *t)
{
    if (t->mr >= MM_Q8_WIDE_MR)
        tile_wd[t->mr - MM_Q8_WIDE_MR](t);
    else
        tile_plain[t->mr - 1][t->np - 1](t);
}

void mm_q8_tile_avx2_vnni(const mm_q8_tile_t *t)
{
    tile_vnni[t->mr - 1][t->np - 1](t);
}

/* The quantizer of matmul_q8.h, 8 values at a time (the tail as mm_q8_value): max |x| from
 * the bits, then q = x * inv rounded by VCVTPS2DQ in the current mode, as rintf. */
__attribute__((target(ISA))) void mm_q8_quantize_avx2(mm_q8_x_t *qx, int m0, int m1, int K,
                                                      const float *x, size_t ldx)
{
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (int m = m0; m < m1; m++) {
        const float *xr = x + (size_t)m * ldx;
        int8_t *q = qx->q + (size_t)m * qx->ldq;
        for (int b = 0; b < qx->nb; b++) {
            const int k0 = b * MM_Q8_KB, k1 = K - k0 < MM_Q8_KB ? K : k0 + MM_Q8_KB;
            const int kv = k0 + (k1 - k0) / 8 * 8;
            __m256i mx = _mm256_setzero_si256();
            for (int k = k0; k < kv; k += 8)
                mx = _mm256_max_epu32(
                    mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(xr + k)), abs_mask));
            uint32_t lanes[8], amax = 0;
            _mm256_storeu_si256((__m256i *)lanes, mx);
            for (int i = 0; i < 8; i++)
                amax = lanes[i] > amax ? lanes[i] : amax;
            for (int k = kv; k < k1; k++) {
                uint32_t bits;
                memcpy(&bits, &xr[k], sizeof(bits));
                bits &= 0x7fffffffu;
                amax = bits > amax ? bits : amax;
            }
            float inv;
            mm_q8_block_scale(amax, &qx->s[(size_t)m * qx->nb + b], &inv);
            int32_t total = 0;
            if (inv == 0.0f) {
                memset(q + k0, 0, (size_t)(k1 - k0));
            } else {
                const __m256 vinv = _mm256_set1_ps(inv);
                __m256i sum = _mm256_setzero_si256();
                for (int k = k0; k < kv; k += 8) {
                    __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + k), vinv));
                    r = _mm256_min_epi32(_mm256_max_epi32(r, lo), hi);
                    sum = _mm256_add_epi32(sum, r);
                    /* 8 int32 in [-127, 127] to 8 bytes: pack to 16 bits, then to 8. */
                    __m128i h =
                        _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
                    _mm_storel_epi64((__m128i *)(q + k), _mm_packs_epi16(h, h));
                }
                int32_t s8[8];
                _mm256_storeu_si256((__m256i *)s8, sum);
                for (int i = 0; i < 8; i++)
                    total += s8[i];
                for (int k = kv; k < k1; k++) {
                    q[k] = mm_q8_value(xr[k], inv);
                    total += q[k];
                }
            }
            qx->sum[(size_t)m * qx->nb + b] = total;
        }
        for (int k = K; k < (K + 3) / 4 * 4; k++)
            q[k] = 0;
        if (qx->wide) /* the row as 16-bit values (past K's multiple of 4: never read) */
            for (int k = 0; k < K; k += 16)
                _mm256_store_si256((__m256i *)(qx->q16 + (size_t)m * qx->ldq + k),
                                   _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + k))));
    }
}

#else

void mm_q8_tile_avx2(const mm_q8_tile_t *t)
{
    mm_q8_tile_generic(t);
}

void mm_q8_tile_avx2_vnni(const mm_q8_tile_t *t)
{
    mm_q8_tile_generic(t);
}

void mm_q8_quantize_avx2(mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx)
{
    mm_q8_quantize(MM_Q8_GENERIC, qx, m0, m1, K, x, ldx);
}

#endif
