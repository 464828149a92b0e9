/* matmul_amx.c - products with BF16 and BF16X3 weights on AMX (Intel Advanced Matrix
 * Extensions).
 *
 * TDPBF16PS multiplies a 16 x 32 BF16 tile of X by a 32 x 16 BF16 tile of W into a 16 x 16
 * F32 tile: C[m][n] += sum over k of X[m][k] W[k][n], each element summed by the hardware
 * in its own fixed order, so a row of Y depends only on that row of X and on W, never on
 * the other rows of the product (a sequence decodes alike alone and in a batch). X is
 * rounded to BF16 once per product by the calling thread (mm_amx_pack_x, to nearest even as
 * mm_f32_to_bf16) into a buffer padded with zeros to whole tiles. The B operand wants K in
 * pairs (row r of the tile holds W[2r][j], W[2r+1][j] for j = 0..15), which is how BF16
 * panels are packed (matmul.h, 32 rows padded), so a B tile is 1 KiB of a panel, loaded from
 * the weights as they are (re-laying panels of another layout into per-thread scratch on the
 * fly cost more than the products themselves).
 * A tile of Y is 32 rows x 32 columns: four C tiles, two of X, two of W (the eight tile
 * registers). C is summed from zero over the whole K, stored to scratch and finished with
 * AVX-512: (bias + Y when accumulating) + C, then GELU, masked stores for the column tail;
 * padded rows are not stored.
 * BF16X3 weights (F32 weights as BF16 hi + lo, matmul.h) take three tile products per block
 * of K, xh wh + xl wh + xh wl, with X split the same way (xl the BF16 nearest to x - xh, in a
 * second buffer laid out as the first): about 2^-16 of sum |x w| from the F32 product, three
 * times the tile work of BF16 on twice its bytes of weights: faster than the F32 AVX-512
 * tile from 32 rows up, slightly slower for a single row (bench/mm-bench). K in chunks, one
 * panel per tile and X in tile order were no faster.
 * TDPBF16PS counts inputs and products below the normal range
 * as zero, where the other kernels keep them (checked on an AMX Xeon: a subnormal x times 1,
 * and 1e-20 times 1e-20, give 0).
 *
 * The tile instructions are written as inline assembly with memory clobbers (gcc 12's
 * intrinsics are asm statements without them, and clang's need the target on every
 * caller); the sanitizers do not see their memory accesses. matmul.c calls in here only
 * after CPUID, XCR0 and the kernel's permission (arch_prctl) said yes. The tile
 * configuration is per thread: each thread loads it before its first tile instruction, and
 * again when a product needs other row counts (amx_config).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__)

#define TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

/* tmm0..3: C (rows 0-15 / 16-31 of X times panel 0 / 1), tmm4..5: X, tmm6..7: W. */
#define TILE_LOAD(t, base, stride)                                                            \
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"((long)(stride))       \
                     : "memory")
#define TILE_STORE(t, base, stride)                                                           \
    __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"((long)(stride))   \
                     : "memory")
#define TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
/* C += A · B (AT&T order: B, A, C). */
#define TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

/* The tile configuration this thread loaded (tile_rows), 0 before its first: LDTILECFG sets
 * the calling thread's state only, and the pool's threads reach the tiles in any order. */
static _Thread_local int amx_config;

/* Rows of the C and X tiles of a product of M rows: r0 for rows 0-15 of a 32-row block
 * (tmm0, tmm1, tmm4), r1 for rows 16-31 (tmm2, tmm3, tmm5; 1 when unused), packed as
 * r0 * 32 + r1. A product of fewer than 32 rows loads and multiplies only its rows (a block
 * of 32 or more is padded with zero rows), since one row on 16-row tiles was slower than
 * the AVX-512 tile. Each row is computed alike whatever the tile's row count (mm_test
 * checks that). */
static int tile_rows(int M)
{
    if (M >= 32)
        return 16 * 32 + 16;
    if (M > 16)
        return 16 * 32 + (M - 16);
    return M * 32 + 1;
}

/* Palette 1; tiles 16 columns of 4 bytes (16 F32 or 32 BF16 a row); W tiles (tmm6, tmm7) 16
 * rows, the others as tile_rows says. Loading a configuration zeroes the tiles. */
static void amx_configure(int rows)
{
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } __attribute__((aligned(64))) cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    cfg.rows[0] = cfg.rows[1] = cfg.rows[4] = (uint8_t)(rows / 32);
    cfg.rows[2] = cfg.rows[3] = cfg.rows[5] = (uint8_t)(rows % 32);
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
    amx_config = rows;
}

size_t mm_amx_x_ld(int K)
{
    /* Whole 32-column tiles, plus one cache line: rows 2*K apart with K a multiple of 2048
     * (4 KiB) would put every row of an X tile in the same L1 sets (as fch's in gpt2.c). */
    return (size_t)(K + 31) / 32 * 32 + 32;
}

/* Sixteen floats to BF16, nearest even, NaN kept quiet: mm_f32_to_bf16, lane by lane. */
TARGET static __m256i to_bf16(__m512 v)
{
    __m512i x = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

/* Rounds 16 floats to BF16 into hi, and when lo is not NULL what that rounding lost into lo
 * (v - hi is exact in F32). */
TARGET static void pack16(__m512 v, uint16_t *hi, uint16_t *lo)
{
    __m256i h = to_bf16(v);
    _mm256_storeu_si256((__m256i *)hi, h);
    if (lo) {
        __m512 hv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        _mm256_storeu_si256((__m256i *)lo, to_bf16(_mm512_sub_ps(v, hv)));
    }
}

TARGET void mm_amx_pack_x(int M, int Mp, int K, const float *x, size_t ldx, uint16_t *xb,
                          uint16_t *xl)
{
    const size_t ld = mm_amx_x_ld(K);
    for (int m = 0; m < Mp; m++) {
        uint16_t *row = xb + (size_t)m * ld, *lrow = xl ? xl + (size_t)m * ld : NULL;
        if (m >= M) {
            memset(row, 0, ld * sizeof(uint16_t));
            if (lrow)
                memset(lrow, 0, ld * sizeof(uint16_t));
            continue;
        }
        const float *xr = x + (size_t)m * ldx;
        int k = 0;
        for (; k + 16 <= K; k += 16)
            pack16(_mm512_loadu_ps(xr + k), row + k, lrow ? lrow + k : NULL);
        if (k < K) {
            __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
            pack16(_mm512_maskz_loadu_ps(mk, xr + k), row + k, lrow ? lrow + k : NULL);
            k += 16;
        }
        for (; (size_t)k < ld; k += 16) {
            _mm256_storeu_si256((__m256i *)(row + k), _mm256_setzero_si256());
            if (lrow)
                _mm256_storeu_si256((__m256i *)(lrow + k), _mm256_setzero_si256());
        }
    }
}

/* The weights stream from memory (only the first 32 rows of X fetch them; later rows find
 * them in cache): each panel is touched AMX_PF_BYTES (4 KiB) ahead, the distance of the
 * AVX-512 tiles' stream (MM_PF_DIST): 4 blocks of K of BF16, 2 of BF16X3, which shortens
 * a decode step (bench/mm-bench). A prefetch past the last panel is harmless (no fault); its
 * address is computed as an integer, since a pointer that far past the weights is not
 * valid C. */
#define AMX_PF_BYTES 4096

/* Passes over a panel pair from which each pass also prefetches a share of the next pair
 * (prefetch_share), from this many passes of 32 rows up: it pays at four (M = 128), not at
 * two, where the share per pass is too large. */
#define AMX_SHARE_MIN_PASSES 3

static inline void prefetch_blocks(const uint16_t *b0, const uint16_t *b1, int np, int kb,
                                   size_t bytes)
{
    const uintptr_t f0 = (uintptr_t)b0 + (size_t)kb * bytes,
                    f1 = (uintptr_t)b1 + (size_t)kb * bytes;
    for (size_t l = 0; l < bytes; l += 64) {
        _mm_prefetch((const char *)(f0 + (uintptr_t)l), _MM_HINT_T0);
        if (np == 2)
            _mm_prefetch((const char *)(f1 + (uintptr_t)l), _MM_HINT_T0);
    }
}

/* Blocks [first, first + count) of the panel pair at `next` (its two panels pbytes apart),
 * into L2, spread evenly over the nkb steps of a pass: at step kb, the lines due by then. As
 * in prefetch_blocks, addresses past the weights are harmless and computed as integers. */
static inline void prefetch_share(uintptr_t next, size_t pbytes, size_t bbytes, int first,
                                  int count, int kb, int nkb)
{
    size_t total = (size_t)count * bbytes;
    size_t from = total * (size_t)kb / (size_t)nkb, to = total * (size_t)(kb + 1) / (size_t)nkb;
    uintptr_t base = next + (size_t)first * bbytes;
    for (size_t o = from & ~(size_t)63; o < to; o += 64) {
        _mm_prefetch((const char *)(base + o), _MM_HINT_T1);
        _mm_prefetch((const char *)(base + pbytes + o), _MM_HINT_T1);
    }
}

/* Lanes below n set (n may be <= 0 or >= 16). */
static inline __mmask16 lane_mask(int n)
{
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* Y rows [m0, m0 + rows) x columns [n0, n0 + nc) from the C scratch (32 floats a row). */
TARGET static void finish(const mm_amx_job_t *j, const float *c, int m0, int rows, int n0,
                          int nc)
{
    for (int q = 0; q * MM_NR < nc; q++) {
        const __mmask16 mk = lane_mask(nc - q * MM_NR);
        const __m512 b = j->bias ? _mm512_maskz_loadu_ps(mk, j->bias + n0 + q * MM_NR)
                                 : _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            float *yr = j->y + (size_t)(m0 + r) * j->ldy + n0 + q * MM_NR;
            __m512 v = b;
            if (j->accumulate)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, yr));
            v = _mm512_add_ps(v, _mm512_loadu_ps(c + r * 32 + q * MM_NR));
            if (j->gelu)
                v = vm_gelu16(v);
            _mm512_mask_storeu_ps(yr, mk, v);
        }
    }
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* C tiles 0..3 += the X tiles at xa (rows 0-15) and xc (rows 16-31, when two) times the W
 * tiles of panels 0 and 1 (when np == 2) at w0, w1, sw bytes a row; w0 NULL keeps the W
 * tiles already loaded. */
ALWAYS_INLINE void dp_tiles(const uint16_t *xa, const uint16_t *xc, long sx, const uint16_t *w0,
                            const uint16_t *w1, long sw, int np, int two)
{
    TILE_LOAD(4, xa, sx);
    if (w0)
        TILE_LOAD(6, w0, sw);
    TILE_DP(0, 4, 6);
    if (np == 2) {
        if (w0)
            TILE_LOAD(7, w1, sw);
        TILE_DP(1, 4, 7);
    }
    if (two) {
        TILE_LOAD(5, xc, sx);
        TILE_DP(2, 5, 6);
        if (np == 2)
            TILE_DP(3, 5, 7);
    }
}

/* The C tiles of a 32-row block to c (32 floats a row). */
ALWAYS_INLINE void store_c(float *c, int np, int two)
{
    TILE_STORE(0, c, 128);
    if (np == 2)
        TILE_STORE(1, c + 16, 128);
    if (two) {
        TILE_STORE(2, c + 16 * 32, 128);
        if (np == 2)
            TILE_STORE(3, c + 16 * 32 + 16, 128);
    }
}

void mm_amx_config(int M)
{
    const int config = tile_rows(M);
    if (amx_config != config)
        amx_configure(config);
}

void mm_amx_release(void)
{
    __asm__ volatile("tilerelease" ::);
    amx_config = 0;
}

void mm_amx_range(const mm_amx_job_t *j, int p0, int p1, float *c)
{
    mm_amx_config(j->M);
    const mm_weight_t *w = j->w;
    /* BF16X3: F32 weights as BF16 pairs hi + lo (hi the nearest BF16, lo the nearest to what
     * is left) and X as xh + xl (mm_amx_pack_x): x w ~ xh wh + xl wh + xh wl, three tile
     * products per block of K. A panel's rows of pairs alternate hi and lo (64 bytes each),
     * so a W tile is a load with a 128-byte stride, and a block of K is 2 KiB of a panel. */
    const int x3 = w->dtype == ENG_DTYPE_BF16X3;
    const int nkb = mm_panel_rows(w->dtype, w->K) / 32;
    const size_t panel = mm_panel_values(w->dtype, w->K);
    const size_t block = panel / (size_t)nkb; /* values from one block of K to the next */
    const long sw = x3 ? 128 : 64;
    const size_t ldx = mm_amx_x_ld(w->K);
    const long sx = (long)(ldx * sizeof(uint16_t));
    for (int p = p0, np; p < p1; p += np) {
        np = p1 - p < 2 ? p1 - p : 2;
        const uint16_t *b0 = (const uint16_t *)w->data + (size_t)p * panel, *b1 = b0 + panel;
        const int n0 = p * MM_NR;
        const int nc = w->N - n0 < np * MM_NR ? w->N - n0 : np * MM_NR;
        /* Only the first pass (32-row block) over a pair streams it from memory; the later
         * passes find it in cache and leave the memory idle. From three passes on, each pass
         * also asks for its share of the next pair into L2, so the stream goes on under the
         * later passes' tile products (AMX_SHARE_MIN_PASSES). */
        const int nmb = (j->M + 31) / 32, share = (nkb + nmb - 1) / nmb;
        const uintptr_t next = (uintptr_t)(b0 + 2 * panel);
        const size_t pbytes = panel * sizeof(uint16_t), bbytes = block * sizeof(uint16_t);
        const int ahead = (int)(AMX_PF_BYTES / bbytes); /* blocks */
        for (int m0 = 0; m0 < j->M; m0 += 32) {
            const int first = m0 / 32 * share;
            const int count = nmb < AMX_SHARE_MIN_PASSES ? 0
                              : nkb - first < share ? nkb - first
                                                    : share;
            const int two = j->M - m0 > 16; /* a second X tile (its rows past M are zeros) */
            const uint16_t *xa = j->xb + (size_t)m0 * ldx, *xc = xa + 16 * ldx;
            TILE_ZERO(0);
            TILE_ZERO(1);
            TILE_ZERO(2);
            TILE_ZERO(3);
            /* Block kb of a panel is its K rows 32 kb .. 32 kb + 31: 16 rows of pairs, 1 KiB
             * (BF16X3: 2 KiB, hi and lo). */
            if (x3) {
                const uint16_t *la = j->xl + (size_t)m0 * ldx, *lc = la + 16 * ldx;
                for (int kb = 0; kb < nkb; kb++) {
                    if (m0 == 0)
                        prefetch_blocks(b0, b1, np, kb + ahead, bbytes);
                    if (count > 0)
                        prefetch_share(next, pbytes, bbytes, first, count, kb, nkb);
                    const uint16_t *h0 = b0 + kb * block, *h1 = b1 + kb * block;
                    const uint16_t *xh0 = xa + kb * 32, *xh1 = xc + kb * 32;
                    dp_tiles(xh0, xh1, sx, h0, h1, sw, np, two);                       /* xh wh */
                    dp_tiles(la + kb * 32, lc + kb * 32, sx, NULL, NULL, sw, np, two); /* xl wh */
                    dp_tiles(xh0, xh1, sx, h0 + MM_X3_LO, h1 + MM_X3_LO, sw, np, two); /* xh wl */
                }
            } else {
                for (int kb = 0; kb < nkb; kb++) {
                    if (m0 == 0)
                        prefetch_blocks(b0, b1, np, kb + ahead, bbytes);
                    if (count > 0)
                        prefetch_share(next, pbytes, bbytes, first, count, kb, nkb);
                    dp_tiles(xa + kb * 32, xc + kb * 32, sx, b0 + kb * block, b1 + kb * block,
                             sw, np, two);
                }
            }
            store_c(c, np, two);
            const int rows = j->M - m0 < 32 ? j->M - m0 : 32;
            finish(j, c, m0, rows, n0, nc);
        }
    }
}

#else

/* Not x86-64: matmul.c never selects AMX. */
size_t mm_amx_x_ld(int K)
{
    return (size_t)K;
}

void mm_amx_pack_x(int M, int Mp, int K, const float *x, size_t ldx, uint16_t *xb, uint16_t *xl)
{
    (void)M, (void)Mp, (void)K, (void)x, (void)ldx, (void)xb, (void)xl;
}

void mm_amx_config(int M)
{
    (void)M;
}

void mm_amx_release(void)
{
}

void mm_amx_range(const mm_amx_job_t *j, int p0, int p1, float *c)
{
    (void)j, (void)p0, (void)p1, (void)c;
}

#endif
