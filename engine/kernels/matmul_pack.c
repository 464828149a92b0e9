/* matmul_pack.c - the packed weights of engine/kernels/matmul.h: F16/BF16/int8 conversions, packing
 * W into column panels (with the pool's threads when given one) and reading elements back.
 * The layout per dtype is described in matmul.h; panel_at below is its one definition.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"

/* ---- conversions ---- */

uint16_t mm_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, nan (kept quiet) */
        return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half, exact scale then RNE */
        float a;
        memcpy(&a, &ax, sizeof(a));
        return sign | (uint16_t)lrintf(a * 0x1p24f);
    }
    /* Rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a
     * carry out of the mantissa correctly bumps the exponent. */
    ax += 0xc8000fffu + ((ax >> 13) & 1);
    return sign | (uint16_t)(ax >> 13);
}

float mm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    if (e == 0) {
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    }
    if (e == 31)
        bits = sign | 0x7f800000u | (m << 13);
    else
        bits = sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t mm_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float mm_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

int8_t mm_f32_to_i8(float v, float scale)
{
    float r = rintf(v / scale); /* the default rounding mode: nearest, ties to even */
    if (r > 127.0f)
        return 127;
    if (r < -127.0f)
        return -127;
    return r == r ? (int8_t)r : 0;
}

/* ---- packing ---- */

/* Index of element (k, j) of a panel (j = 0..15) in values from the panel's start. BF16
 * stores rows k and k+1 (k even) as one 32-value row of pairs: column j of row k at 2j, of
 * row k+1 at 2j+1. That is the layout of an AMX B tile row (TDPBF16PS takes K in pairs),
 * and widening is cheap: a 32-bit lane holds column j of both rows, so a shift left by 16
 * gives row k as F32 and a mask of the high half gives row k+1. */
static size_t panel_at(int dtype, int k, int j)
{
    if (dtype == ENG_DTYPE_W8A8) /* groups of four rows: column j's four at 4j (matmul_q8.h) */
        return (size_t)(k / 4) * 4 * MM_NR + 4 * (size_t)j + (size_t)(k & 3);
    if (dtype != ENG_DTYPE_BF16 && dtype != ENG_DTYPE_BF16X3)
        return (size_t)k * MM_NR + (size_t)j;
    /* BF16X3: hi's row of pairs, then lo's (MM_X3_LO on): hi's index */
    const size_t pair_row = dtype == ENG_DTYPE_BF16X3 ? 2 * (size_t)MM_X3_LO : 2 * (size_t)MM_NR;
    return (size_t)(k / 2) * pair_row + 2 * (size_t)j + (size_t)(k & 1);
}

/* A weight being packed: where column n of W comes from (its part's memory, a row of it when
 * transposed) and how far apart rows k are. */
typedef struct pack_job {
    mm_weight_t *w;
    const mm_source_t *parts;
    int n_parts;
    size_t ld;
    int trans;
    int fast;     /* every part is in w->dtype (F32, F16 or BF16): copied, never widened */
    float *block; /* (threads, rows x MM_NR) F32 scratch of the widening path */
    int n_chunks; /* parts of the pool job */
    int by_rows;  /* BF16 kept as BF16, not transposed: parts are bands of rows (copy_rows_bf16) */
    int band;     /* rows of pairs per part when by_rows */
    int n0, k0;   /* a slab read in: the parts hold W's columns from n0 (trans), rows from k0 */
    char *stage;  /* (threads, stage_bytes): the slabs the parts' files are read into, or NULL */
    size_t stage_bytes;
    int avx512; /* the BF16 copies use AVX-512 (the pool's kernel is AVX-512 or AMX) */
} pack_job_t;

static size_t src_size(int dtype)
{
    return dtype == ENG_DTYPE_F32 ? 4 : 2;
}

/* Element i of a source column, at any alignment (a checkpoint's offsets are its own). */
static inline float load_f32(const void *col, size_t i)
{
    float v;
    memcpy(&v, (const char *)col + i * sizeof(v), sizeof(v));
    return v;
}

static inline uint16_t load_u16(const void *col, size_t i)
{
    uint16_t v;
    memcpy(&v, (const char *)col + i * sizeof(v), sizeof(v));
    return v;
}

/* Points col[j] at element (0, 16p + j) of W and sets its dtype, for the 16 columns of panel
 * p (NULL past N); element (k, n) is then at col + k * kstride values. */
static void panel_columns(const pack_job_t *pj, int p, const void *col[MM_NR], int dt[MM_NR])
{
    int part = 0, first = 0; /* parts[part] holds columns [first, first + parts[part].n) */
    for (int j = 0; j < MM_NR; j++) {
        int n = p * MM_NR + j;
        col[j] = NULL;
        dt[j] = ENG_DTYPE_F32;
        if (n >= pj->w->N)
            continue;
        n -= pj->n0;
        while (pj->n_parts > 1 && n >= first + pj->parts[part].n)
            first += pj->parts[part++].n;
        const mm_source_t *s = &pj->parts[part];
        size_t at = pj->trans ? (size_t)(n - first) * pj->ld : (size_t)(n - first);
        col[j] = (const char *)s->data + at * src_size(s->dtype);
        dt[j] = s->dtype;
    }
}

/* Widens panel p's source to F32 in blk (rows x MM_NR, zero past K and N): the values the
 * packing rounds, as mm_f16_to_f32 and mm_bf16_to_f32 give them. */
static void widen_panel(const pack_job_t *pj, int p, float *blk, int rows)
{
    const void *col[MM_NR];
    int dt[MM_NR];
    panel_columns(pj, p, col, dt);
    const size_t ks = pj->trans ? 1 : pj->ld;
    const int K = pj->w->K;
    for (int j = 0; j < MM_NR; j++) {
        for (int k = 0; k < K; k++) {
            float v = 0.0f;
            if (col[j] && dt[j] == ENG_DTYPE_F32)
                v = load_f32(col[j], (size_t)k * ks);
            else if (col[j] && dt[j] == ENG_DTYPE_F16)
                v = mm_f16_to_f32(load_u16(col[j], (size_t)k * ks));
            else if (col[j])
                v = mm_bf16_to_f32(load_u16(col[j], (size_t)k * ks));
            blk[(size_t)k * MM_NR + j] = v;
        }
        for (int k = K; k < rows; k++)
            blk[(size_t)k * MM_NR + j] = 0.0f;
    }
}

/* The I8 scales of panel p's columns: max |W[k][n]| / 127, 1 for a column of zeros (and for
 * the padding past N), so every value maps to [-127, 127] and the largest to +-127. */
static void pack_scales(mm_weight_t *w, int p, const float *blk)
{
    float mx[MM_NR] = {0};
    for (int k = 0; k < w->K; k++)
        for (int j = 0; j < MM_NR; j++) {
            float a = fabsf(blk[(size_t)k * MM_NR + j]);
            mx[j] = a > mx[j] ? a : mx[j];
        }
    for (int j = 0; j < MM_NR; j++)
        w->scale[(size_t)p * MM_NR + j] = mx[j] > 0.0f ? mx[j] / 127.0f : 1.0f;
}

/* Packs panel p from its F32 values blk (rows x MM_NR) in w->dtype. */
static void pack_panel(mm_weight_t *w, int p, const float *blk)
{
    const int rows = mm_panel_rows(w->dtype, w->K);
    if (w->dtype == ENG_DTYPE_I8 || w->dtype == ENG_DTYPE_W8A8)
        pack_scales(w, p, blk);
    const size_t panel = (size_t)p * mm_panel_values(w->dtype, w->K);
    for (int k = 0; k < rows; k++) {
        for (int j = 0; j < MM_NR; j++) {
            float v = blk[(size_t)k * MM_NR + j];
            size_t at = panel + panel_at(w->dtype, k, j);
            if (w->dtype == ENG_DTYPE_F32)
                ((float *)w->data)[at] = v;
            else if (w->dtype == ENG_DTYPE_F16)
                ((uint16_t *)w->data)[at] = mm_f32_to_f16(v);
            else if (w->dtype == ENG_DTYPE_BF16)
                ((uint16_t *)w->data)[at] = mm_f32_to_bf16(v);
            else if (w->dtype == ENG_DTYPE_BF16X3) {
                uint16_t hi = mm_f32_to_bf16(v);
                ((uint16_t *)w->data)[at] = hi;
                ((uint16_t *)w->data)[at + MM_X3_LO] = mm_f32_to_bf16(v - mm_bf16_to_f32(hi));
            } else if (w->dtype == ENG_DTYPE_I8) {
                ((int8_t *)w->data)[at] = mm_f32_to_i8(v, w->scale[(size_t)p * MM_NR + j]);
            } else { /* W8A8: q + 128 as a byte; rows past K are zeros (128) */
                int q = k < w->K ? mm_f32_to_i8(v, w->scale[(size_t)p * MM_NR + j]) : 0;
                ((uint8_t *)w->data)[at] = (uint8_t)(q + 128);
            }
        }
    }
}

/* What the widening path stores for a value already in the kept 16-bit dtype: the value
 * itself, except that NaNs come out quiet (mm_f32_to_bf16 sets bit 6 of a BF16 NaN;
 * mm_f32_to_f16 makes an F16 NaN sign | 0x7e00). Every other value widens exactly and rounds
 * back to itself, so copying through these is bit for bit the widening path. */
static inline uint16_t same_bf16(uint16_t h)
{
    return (h & 0x7fff) > 0x7f80 ? (uint16_t)(h | 0x40) : h;
}

static inline uint16_t same_f16(uint16_t h)
{
    return (h & 0x7fff) > 0x7c00 ? (uint16_t)((h & 0x8000) | 0x7e00) : h;
}

/* Packs panel p straight from a source in the kept dtype (pj->fast). The source is walked
 * in its own order: down each column's row of the file when transposed, else along each row
 * (16 neighbours, one cache line), so every line and page of it is read once. */
static void copy_panel(const pack_job_t *pj, int p)
{
    mm_weight_t *w = pj->w;
    const void *col[MM_NR];
    int dt[MM_NR];
    panel_columns(pj, p, col, dt);
    const size_t ks = pj->trans ? 1 : pj->ld;
    const int K = w->K, rows = mm_panel_rows(w->dtype, K);
    const int outer = pj->trans ? MM_NR : K, inner = pj->trans ? K : MM_NR;
    const size_t panel = (size_t)p * mm_panel_values(w->dtype, K);
    float *f32 = (float *)w->data + panel;
    uint16_t *u16 = (uint16_t *)w->data + panel;
    for (int a = 0; a < outer; a++) {
        for (int b = 0; b < inner; b++) {
            const int j = pj->trans ? a : b, k = pj->trans ? b : a;
            const size_t at = (size_t)k * ks;
            if (w->dtype == ENG_DTYPE_F32)
                f32[(size_t)k * MM_NR + j] = col[j] ? load_f32(col[j], at) : 0.0f;
            else if (w->dtype == ENG_DTYPE_F16)
                u16[(size_t)k * MM_NR + j] = col[j] ? same_f16(load_u16(col[j], at)) : 0;
            else /* BF16: rows k and k+1 as one row of pairs (panel_at) */
                u16[(size_t)(k / 2) * 2 * MM_NR + 2 * (size_t)j + (size_t)(k & 1)] =
                    col[j] ? same_bf16(load_u16(col[j], at)) : 0;
        }
    }
    /* BF16's zero rows up to a multiple of 32. */
    if (w->dtype == ENG_DTYPE_BF16)
        for (int k = K; k < rows; k++)
            for (int j = 0; j < MM_NR; j++)
                u16[(size_t)(k / 2) * 2 * MM_NR + 2 * (size_t)j + (size_t)(k & 1)] = 0;
}

static inline uint32_t load_u32(const void *p, size_t i)
{
    uint32_t v;
    memcpy(&v, (const char *)p + i * sizeof(v), sizeof(v));
    return v;
}

/* same_bf16 on both values of a 32-bit word. */
static inline uint32_t same_bf16x2(uint32_t v)
{
    return (uint32_t)same_bf16((uint16_t)v) | (uint32_t)same_bf16((uint16_t)(v >> 16)) << 16;
}

#if defined(__x86_64__)
#define PACK_AVX512 __attribute__((target("avx512f,avx512bw")))

/* same_bf16 on 32 values. */
PACK_AVX512 static inline __m512i same_bf16_avx512(__m512i v)
{
    const __mmask32 nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(v, _mm512_set1_epi16(0x7fff)),
                                                  _mm512_set1_epi16(0x7f80));
    return _mm512_mask_mov_epi16(v, nan, _mm512_or_si512(v, _mm512_set1_epi16(0x40)));
}

/* copy_panel_bf16's rows of pairs [0, pairs / 16 * 16), 16 at a time: word k2 .. k2 + 15 of
 * each of the 16 file rows is a 16 x 16 block of 32-bit words, transposed in registers into
 * 16 rows of pairs and stored in full 64-byte lines past the caches (nothing reads the packed
 * weights until the load is over). Returns the rows of pairs done. */
PACK_AVX512 static int copy_pairs_avx512(const void *const col[MM_NR], uint32_t *o32, int pairs)
{
    int k2 = 0;
    for (; k2 + 16 <= pairs; k2 += 16) {
        __m512i r[16], t[16];
        for (int j = 0; j < 16; j++)
            r[j] = same_bf16_avx512(_mm512_loadu_si512((const char *)col[j] + (size_t)k2 * 4));
        /* 32-bit words, then 64-bit pairs of them: r[4b + c]'s 128-bit lane L is word 4L + c
         * of file rows 4b .. 4b + 3. */
        for (int j = 0; j < 16; j += 2) {
            t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
            t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
        }
        for (int j = 0; j < 16; j += 4) {
            r[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
            r[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
            r[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
            r[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
        }
        /* Then 128-bit lanes, twice: r[c] becomes word c of all 16 rows. */
        for (int j = 0; j < 4; j++) {
            t[j] = _mm512_shuffle_i32x4(r[j], r[j + 4], 0x88);
            t[j + 4] = _mm512_shuffle_i32x4(r[j], r[j + 4], 0xdd);
            t[j + 8] = _mm512_shuffle_i32x4(r[j + 8], r[j + 12], 0x88);
            t[j + 12] = _mm512_shuffle_i32x4(r[j + 8], r[j + 12], 0xdd);
        }
        for (int j = 0; j < 4; j++) {
            r[j] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0x88);
            r[j + 8] = _mm512_shuffle_i32x4(t[j], t[j + 8], 0xdd);
            r[j + 4] = _mm512_shuffle_i32x4(t[j + 4], t[j + 12], 0x88);
            r[j + 12] = _mm512_shuffle_i32x4(t[j + 4], t[j + 12], 0xdd);
        }
        for (int j = 0; j < 16; j++)
            _mm512_stream_si512((void *)(o32 + (size_t)(k2 + j) * MM_NR), r[j]);
    }
    _mm_sfence();
    return k2;
}

/* copy_rows_bf16's full panels [0, full) of the rows of pairs [q0, q1) (both rows in W; row
 * k of W at src + (k - k0) * ld values): two panels at a time, each down all its rows of
 * pairs (one run of memory), a row of pairs being 32 columns of each of two rows interleaved
 * by a two-source permute per panel. */
PACK_AVX512 static void copy_band_avx512(const char *src, size_t ld, int k0, uint16_t *data,
                                         size_t pv, int q0, int q1, int full)
{
    uint16_t ilo[32], ihi[32]; /* column j of row k to 2j, of row k + 1 to 2j + 1 */
    for (int j = 0; j < 16; j++) {
        ilo[2 * j] = (uint16_t)j, ilo[2 * j + 1] = (uint16_t)(32 + j);
        ihi[2 * j] = (uint16_t)(16 + j), ihi[2 * j + 1] = (uint16_t)(48 + j);
    }
    const __m512i lo = _mm512_loadu_si512(ilo), hi = _mm512_loadu_si512(ihi);
    for (int p = 0; p < full; p += 2) {
        const __mmask32 m = p + 1 < full ? 0xffffffffu : 0xffffu;
        uint16_t *o = data + (size_t)p * pv + (size_t)q0 * 2 * MM_NR;
        const char *r = src + ((size_t)(2 * q0 - k0) * ld + (size_t)p * MM_NR) * 2;
        for (int q = q0; q < q1; q++, o += 2 * MM_NR, r += 4 * ld) {
            __m512i a = same_bf16_avx512(_mm512_maskz_loadu_epi16(m, r));
            __m512i b = same_bf16_avx512(_mm512_maskz_loadu_epi16(m, r + 2 * ld));
            _mm512_stream_si512((void *)o, _mm512_permutex2var_epi16(a, lo, b));
            if (p + 1 < full)
                _mm512_stream_si512((void *)(o + pv), _mm512_permutex2var_epi16(a, hi, b));
        }
    }
    _mm_sfence();
}
#endif

/* copy_panel for BF16 with all 16 columns present, transposed (column n of W is row n of
 * the file): rows k and k+1 of a column are one 32-bit word of the file's row, and a panel's
 * row of pairs is the next word of each of its 16 file rows. The panel is written front to
 * back, one 64-byte row of pairs at a time, and its 16 file rows are read front to back. */
static void copy_panel_bf16(const pack_job_t *pj, int p)
{
    mm_weight_t *w = pj->w;
    const void *col[MM_NR];
    int dt[MM_NR];
    panel_columns(pj, p, col, dt);
    const int K = w->K, rows = mm_panel_rows(w->dtype, K), pairs = K / 2;
    uint16_t *out = (uint16_t *)w->data + (size_t)p * mm_panel_values(w->dtype, K);
    uint32_t *o32 = (uint32_t *)out; /* the panel's rows of pairs, 64-byte aligned */
    int k2 = 0;
#if defined(__x86_64__)
    if (pj->avx512)
        k2 = copy_pairs_avx512(col, o32, pairs);
#endif
    for (; k2 < pairs; k2++)
        for (int j = 0; j < MM_NR; j++)
            o32[(size_t)k2 * MM_NR + (size_t)j] = same_bf16x2(load_u32(col[j], (size_t)k2));
    for (int k = 2 * pairs; k < rows; k++) /* an odd last row, then zero rows */
        for (int j = 0; j < MM_NR; j++)
            out[(size_t)(k / 2) * 2 * MM_NR + 2 * (size_t)j + (size_t)(k & 1)] =
                k < K ? same_bf16(load_u16(col[j], (size_t)k)) : 0;
}

/* Pairs of rows per pool part of copy_rows_bf16. */
#define PACK_PAIRS_PER_CHUNK 8

/* Packs the rows of pairs [q0, q1) of every panel from one BF16 source in the kept dtype, not
 * transposed (row k of W is row k of the file): file rows 2q and 2q+1 are read once, front to
 * back, and give each panel its whole 64-byte row of pairs q (zero past K and N). */
static void copy_rows_bf16(const pack_job_t *pj, int q0, int q1)
{
    mm_weight_t *w = pj->w;
    const int K = w->K, N = w->N, full = N / MM_NR;
    const size_t pv = mm_panel_values(w->dtype, K);
    const char *src = pj->parts[0].data;
    uint16_t *data = w->data;
    const int both = K / 2 < q1 ? K / 2 : q1; /* rows of pairs with both rows in W: [q0, both) */
#if defined(__x86_64__)
    if (pj->avx512 && both > q0)
        copy_band_avx512(src, pj->ld, pj->k0, data, pv, q0, both, full);
#endif
    for (int q = q0; q < q1; q++) {
        const int k = 2 * q;
        const char *r0 = k < K ? src + (size_t)(k - pj->k0) * pj->ld * 2 : NULL;
        const char *r1 = k + 1 < K ? src + (size_t)(k + 1 - pj->k0) * pj->ld * 2 : NULL;
        int p = pj->avx512 && q < both ? full : 0;
        if (r0 && r1) {
            for (; p < full; p++) {
                uint16_t a[MM_NR], b[MM_NR], *o = data + (size_t)p * pv + (size_t)q * 2 * MM_NR;
                memcpy(a, r0 + (size_t)p * MM_NR * 2, sizeof(a));
                memcpy(b, r1 + (size_t)p * MM_NR * 2, sizeof(b));
                for (int j = 0; j < MM_NR; j++) {
                    o[2 * j] = same_bf16(a[j]);
                    o[2 * j + 1] = same_bf16(b[j]);
                }
            }
        }
        for (; p < w->n_panels; p++) { /* a partial last panel, an odd last row, zero rows */
            uint16_t *o = data + (size_t)p * pv + (size_t)q * 2 * MM_NR;
            for (int j = 0; j < MM_NR; j++) {
                const int n = p * MM_NR + j;
                o[2 * j] = r0 && n < N ? same_bf16(load_u16(r0, (size_t)n)) : 0;
                o[2 * j + 1] = r1 && n < N ? same_bf16(load_u16(r1, (size_t)n)) : 0;
            }
        }
    }
}

/* Reads len bytes at off of fd into buf: 0, or -1 when it cannot (the caller then reads the
 * mapping). */
static int read_slab(int fd, char *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t r = pread(fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        buf += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Reads W's columns [c0, c1) (transposed: rows of the parts' files, ld apart) into buf one
 * after the other, and makes *sj (*pj with the one source *one) pack from there: 0, or -1
 * when they do not fit in a slab or a read failed (the caller packs from the memory). */
static int stage_columns(const pack_job_t *pj, int c0, int c1, char *buf, pack_job_t *sj,
                         mm_source_t *one)
{
    const size_t es = src_size(pj->parts[0].dtype), row = pj->ld * es;
    if ((size_t)(c1 - c0 - 1) * row + (size_t)pj->w->K * es > pj->stage_bytes)
        return -1;
    int first = 0;
    for (int i = 0; i < pj->n_parts; first += pj->parts[i++].n) {
        const mm_source_t *s = &pj->parts[i];
        const int a = c0 > first ? c0 : first, b = c1 < first + s->n ? c1 : first + s->n;
        if (a < b && read_slab(s->fd, buf + (size_t)(a - c0) * row,
                               (size_t)(b - a - 1) * row + (size_t)pj->w->K * es,
                               s->off + (uint64_t)(a - first) * row))
            return -1;
    }
    *sj = *pj;
    *one = (mm_source_t){.data = buf, .dtype = pj->parts[0].dtype, .n = c1 - c0};
    sj->parts = one;
    sj->n_parts = 1;
    sj->n0 = c0;
    return 0;
}

/* Reads W's rows [k0, k1) (not transposed, one BF16 source) into buf and makes *sj pack from
 * there: 0 or -1 as stage_columns. */
static int stage_rows(const pack_job_t *pj, int k0, int k1, char *buf, pack_job_t *sj,
                      mm_source_t *one)
{
    const mm_source_t *s = &pj->parts[0];
    const size_t row = pj->ld * 2, len = (size_t)(k1 - k0 - 1) * row + (size_t)pj->w->N * 2;
    if (len > pj->stage_bytes || read_slab(s->fd, buf, len, s->off + (uint64_t)k0 * row))
        return -1;
    *sj = *pj;
    *one = (mm_source_t){.data = buf, .dtype = s->dtype, .n = s->n};
    sj->parts = one;
    sj->k0 = k0;
    return 0;
}

/* Packs panels [p0, p1) from pj's sources. */
static void pack_panels(const pack_job_t *pj, int p0, int p1, float *blk)
{
    const int rows = mm_panel_rows(pj->w->dtype, pj->w->K);
    for (int p = p0; p < p1; p++) {
        if (pj->fast && pj->w->dtype == ENG_DTYPE_BF16 && (p + 1) * MM_NR <= pj->w->N &&
            pj->trans) {
            copy_panel_bf16(pj, p);
        } else if (pj->fast) {
            copy_panel(pj, p);
        } else {
            widen_panel(pj, p, blk, rows);
            pack_panel(pj->w, p, blk);
        }
    }
}

static void pack_cb(void *arg, int part, int n, int thread)
{
    const pack_job_t *pj = arg;
    char *stage = pj->stage ? pj->stage + (size_t)thread * pj->stage_bytes : NULL;
    pack_job_t sj;
    mm_source_t one;
    int p0, p1;
    if (pj->by_rows) {
        const int pairs = mm_panel_rows(pj->w->dtype, pj->w->K) / 2;
        p0 = part * pj->band;
        p1 = p0 + pj->band < pairs ? p0 + pj->band : pairs;
        const int k0 = 2 * p0, k1 = 2 * p1 < pj->w->K ? 2 * p1 : pj->w->K;
        if (stage && k0 < k1 && stage_rows(pj, k0, k1, stage, &sj, &one) == 0)
            copy_rows_bf16(&sj, p0, p1);
        else
            copy_rows_bf16(pj, p0, p1);
        return;
    }
    pool_split(pj->w->n_panels, n, part, &p0, &p1);
    const int rows = mm_panel_rows(pj->w->dtype, pj->w->K);
    float *blk = pj->block ? pj->block + (size_t)thread * (size_t)rows * MM_NR : NULL;
    if (!stage) {
        pack_panels(pj, p0, p1, blk);
        return;
    }
    /* Transposed: a panel's 16 columns are 16 consecutive rows of the file; read as many
     * panels' rows at a time as the slab holds. */
    const size_t panel_src = MM_NR * pj->ld * src_size(pj->parts[0].dtype);
    const int step = pj->stage_bytes / panel_src > 1 ? (int)(pj->stage_bytes / panel_src) : 1;
    for (int g0 = p0; g0 < p1; g0 += step) {
        const int g1 = g0 + step < p1 ? g0 + step : p1;
        const int c1 = g1 * MM_NR < pj->w->N ? g1 * MM_NR : pj->w->N;
        if (stage_columns(pj, g0 * MM_NR, c1, stage, &sj, &one) == 0)
            pack_panels(&sj, g0, g1, blk);
        else
            pack_panels(pj, g0, g1, blk);
    }
}

static int weight_alloc(mm_weight_t *w, int K, int N, int dtype)
{
    memset(w, 0, sizeof(*w));
    if (dtype == ENG_DTYPE_AUTO)
        dtype = ENG_DTYPE_F32;
    if (K <= 0 || N <= 0 ||
        (dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16 && dtype != ENG_DTYPE_BF16 &&
         dtype != ENG_DTYPE_I8 && dtype != ENG_DTYPE_BF16X3 && dtype != ENG_DTYPE_W8A8))
        return -EINVAL;
    w->K = K;
    w->N = N;
    w->n_panels = (N + MM_NR - 1) / MM_NR;
    w->dtype = dtype;
    w->bytes = (size_t)w->n_panels * (size_t)mm_panel_rows(dtype, K) * MM_NR * mm_dtype_size(dtype);
    /* Large weights start on a 2 MiB boundary and their whole 2 MiB pages are advised as
     * huge pages: fewer TLB misses in the stream. The tail past the last whole page is not
     * advised, so it takes 4 KiB pages: advising it would make the kernel fill a whole huge
     * page for it (about 1 MiB of resident padding per weight, ~57 MiB for GPT-2 124M). */
    size_t huge = (size_t)2 << 20;
    size_t align = w->bytes >= huge ? huge : 64;
    size_t size = (w->bytes + 63) / 64 * 64;
    if (dtype == ENG_DTYPE_I8 || dtype == ENG_DTYPE_W8A8) {
        w->scale = malloc((size_t)w->n_panels * MM_NR * sizeof(float));
        if (!w->scale) {
            memset(w, 0, sizeof(*w));
            return -ENOMEM;
        }
    }
    if (posix_memalign(&w->data, align, size)) {
        w->data = NULL;
        mm_weight_free(w);
        return -ENOMEM;
    }
#ifdef MADV_HUGEPAGE
    if (align == huge)
        madvise(w->data, w->bytes / huge * huge, MADV_HUGEPAGE); /* advice only */
#endif
    return 0;
}

int mm_weight_init(mm_weight_t *w, const float *src, int K, int N, size_t ld, int trans, int dtype)
{
    return mm_weight_init_mt(NULL, w, src, K, N, ld, trans, dtype);
}

int mm_weight_init_mt(mm_t *mm, mm_weight_t *w, const float *src, int K, int N, size_t ld,
                      int trans, int dtype)
{
    mm_source_t part = {.data = src, .dtype = ENG_DTYPE_F32, .n = N};
    return mm_weight_pack(mm, w, &part, 1, K, N, ld, trans, dtype);
}

/* Bytes of the file a thread reads in at a time (about its share of the L2 cache). */
#define PACK_STAGE_BYTES ((size_t)1 << 20)

/* Panels per pool part: small enough that a thread slowed by other load holds up little. */
#define PACK_PANELS_PER_CHUNK 4

/* Faults in one 2 MiB part of a weight's memory (the kernel clears it, 2 MiB at once when it
 * gives a huge page). MADV_POPULATE_WRITE (Linux 5.14) does it without a fault per page;
 * without it, a write of a zero per 4 KiB: the memory is not packed yet, so no value is lost. */
static void prefault_cb(void *arg, int part, int n)
{
    const mm_weight_t *w = arg;
    const size_t huge = (size_t)2 << 20, lo = (size_t)part * huge;
    const size_t hi = lo + huge < w->bytes ? lo + huge : w->bytes;
    char *at = (char *)w->data + lo;
    (void)n;
#ifdef MADV_POPULATE_WRITE
    if (madvise(at, hi - lo, MADV_POPULATE_WRITE) == 0)
        return;
#endif
    for (size_t i = 0; i < hi - lo; i += 4096)
        ((volatile char *)at)[i] = 0;
}

int mm_weight_alloc(mm_t *mm, mm_weight_t *w, int K, int N, int dtype)
{
    int rc = weight_alloc(w, K, N, dtype);
    const size_t huge = (size_t)2 << 20;
    if (rc || w->bytes < huge)
        return rc;
    /* Whole 2 MiB pages per part: two threads never wait on the clearing of one huge page. */
    size_t parts = (w->bytes + huge - 1) / huge;
    pool_run_parts(mm ? mm_pool(mm) : NULL, parts > POOL_MAX_PARTS ? POOL_MAX_PARTS : (int)parts,
                   prefault_cb, w);
    return 0;
}

int mm_weight_pack(mm_t *mm, mm_weight_t *w, const mm_source_t *parts, int n_parts, int K, int N,
                   size_t ld, int trans, int dtype)
{
    memset(w, 0, sizeof(*w));
    int rc = mm_weight_alloc(mm, w, K, N, dtype);
    rc = rc ? rc : mm_weight_fill(mm, w, parts, n_parts, ld, trans);
    return rc;
}

int mm_weight_fill(mm_t *mm, mm_weight_t *w, const mm_source_t *parts, int n_parts, size_t ld,
                   int trans)
{
    const int K = w->K, N = w->N;
    int sum = 0, same = 1;
    for (int i = 0; i < n_parts; i++) {
        const mm_source_t *s = &parts[i];
        if (!s->data || s->n < 1 ||
            (s->dtype != ENG_DTYPE_F32 && s->dtype != ENG_DTYPE_F16 && s->dtype != ENG_DTYPE_BF16))
            sum = -1;
        if (sum >= 0)
            sum += s->n;
        same = same && s->dtype == w->dtype;
    }
    if (!w->data || n_parts < 1 || sum < 0 || (n_parts > 1 && (!trans || sum != N)) ||
        ld < (size_t)(trans ? K : N)) {
        mm_weight_free(w);
        return -EINVAL;
    }
    pool_t *pool = mm ? mm_pool(mm) : NULL;
    const int threads = pool ? pool_threads(pool) : 1;
    pack_job_t pj = {.w = w, .parts = parts, .n_parts = n_parts, .ld = ld, .trans = trans};
    pj.fast = same && (w->dtype == ENG_DTYPE_F32 || w->dtype == ENG_DTYPE_F16 ||
                       w->dtype == ENG_DTYPE_BF16);
    if (!pj.fast) {
        pj.block =
            malloc((size_t)threads * (size_t)mm_panel_rows(w->dtype, K) * MM_NR * sizeof(float));
        if (!pj.block) {
            mm_weight_free(w);
            return -ENOMEM;
        }
    }
#if defined(__x86_64__)
    pj.avx512 = mm && mm_kernel_avx512(mm_get_kernel(mm));
#endif
    int chunks = (w->n_panels + PACK_PANELS_PER_CHUNK - 1) / PACK_PANELS_PER_CHUNK;
    chunks = chunks > POOL_MAX_PARTS ? POOL_MAX_PARTS : chunks;
    pj.by_rows = pj.fast && w->dtype == ENG_DTYPE_BF16 && !trans && n_parts == 1;
    /* Slabs of the file when every source has one, in one dtype: the panels' rows when
     * transposed (a panel's at least), bands of rows when copied by rows (two at least). */
    int stage = trans || pj.by_rows;
    for (int i = 0; i < n_parts; i++)
        stage = stage && parts[i].fd > 0 && parts[i].dtype == parts[0].dtype;
    if (stage) {
        const size_t es = src_size(parts[0].dtype);
        const size_t need = trans ? MM_NR * ld * es : 2 * ld * es;
        pj.stage_bytes = ((need > PACK_STAGE_BYTES ? need : PACK_STAGE_BYTES) + 63) / 64 * 64;
        pj.stage = malloc((size_t)threads * pj.stage_bytes);
    }
    if (pj.by_rows) {
        const int pairs = mm_panel_rows(w->dtype, K) / 2;
        pj.band = PACK_PAIRS_PER_CHUNK;
        if (pj.stage) /* as many as a slab holds, but a few parts per thread */
            pj.band = (int)(pj.stage_bytes / (2 * ld * 2));
        if (pj.stage && pj.band > (pairs + 4 * threads - 1) / (4 * threads))
            pj.band = (pairs + 4 * threads - 1) / (4 * threads);
        if (pairs / pj.band >= POOL_MAX_PARTS)
            pj.band = pairs / (POOL_MAX_PARTS - 1) + 1;
        chunks = (pairs + pj.band - 1) / pj.band;
    }
    pool_run_parts_thread(pool, chunks, pack_cb, &pj);
    free(pj.block);
    free(pj.stage);
    return 0;
}

void mm_weight_free(mm_weight_t *w)
{
    if (!w)
        return;
    free(w->data);
    free(w->scale);
    memset(w, 0, sizeof(*w));
}

float mm_weight_get(const mm_weight_t *w, int k, int n)
{
    size_t at =
        (size_t)(n / MM_NR) * mm_panel_values(w->dtype, w->K) + panel_at(w->dtype, k, n % MM_NR);
    if (w->dtype == ENG_DTYPE_BF16X3)
        return mm_bf16_to_f32(((const uint16_t *)w->data)[at]) +
               mm_bf16_to_f32(((const uint16_t *)w->data)[at + MM_X3_LO]);
    if (w->dtype == ENG_DTYPE_F32)
        return ((const float *)w->data)[at];
    if (w->dtype == ENG_DTYPE_I8)
        return (float)((const int8_t *)w->data)[at] * w->scale[n];
    if (w->dtype == ENG_DTYPE_W8A8)
        return (float)((int)((const uint8_t *)w->data)[at] - 128) * w->scale[n];
    uint16_t h = ((const uint16_t *)w->data)[at];
    return w->dtype == ENG_DTYPE_F16 ? mm_f16_to_f32(h) : mm_bf16_to_f32(h);
}

void mm_weight_column(const mm_weight_t *w, int n, float *out)
{
    for (int k = 0; k < w->K; k++)
        out[k] = mm_weight_get(w, k, n);
}
