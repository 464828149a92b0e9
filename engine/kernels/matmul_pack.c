/* matmul_pack.c - the packed weights of engine/kernels/matmul.h: F16/BF16/int8 conversions, packing
 * W into column panels (with the pool's threads when given one) and reading elements back.
 * The layout per dtype is described in matmul.h; panel_at below is its one definition.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
    if (dtype != ENG_DTYPE_BF16 && dtype != ENG_DTYPE_BF16X3)
        return (size_t)k * MM_NR + (size_t)j;
    /* BF16X3: hi's row of pairs, then lo's (MM_X3_LO on): hi's index */
    const size_t pair_row = dtype == ENG_DTYPE_BF16X3 ? 2 * (size_t)MM_X3_LO : 2 * (size_t)MM_NR;
    return (size_t)(k / 2) * pair_row + 2 * (size_t)j + (size_t)(k & 1);
}

typedef struct pack_job {
    mm_weight_t *w;
    const float *src;
    size_t ld;
    int trans;
} pack_job_t;

static float src_at(const pack_job_t *pj, int k, int n)
{
    if (n >= pj->w->N)
        return 0.0f;
    return pj->trans ? pj->src[(size_t)n * pj->ld + k] : pj->src[(size_t)k * pj->ld + n];
}

/* The I8 scales of panel p's columns: max |W[k][n]| / 127, 1 for a column of zeros (and for
 * the padding past N), so every value maps to [-127, 127] and the largest to +-127. */
static void pack_scales(const pack_job_t *pj, int p)
{
    const int K = pj->w->K;
    float mx[MM_NR] = {0};
    for (int k = 0; k < K; k++)
        for (int j = 0; j < MM_NR; j++) {
            float a = fabsf(src_at(pj, k, p * MM_NR + j));
            mx[j] = a > mx[j] ? a : mx[j];
        }
    for (int j = 0; j < MM_NR; j++)
        pj->w->scale[(size_t)p * MM_NR + j] = mx[j] > 0.0f ? mx[j] / 127.0f : 1.0f;
}

static void pack_panels(const pack_job_t *pj, int p0, int p1)
{
    mm_weight_t *w = pj->w;
    const int rows = mm_panel_rows(w->dtype, w->K);
    for (int p = p0; p < p1; p++) {
        if (w->dtype == ENG_DTYPE_I8)
            pack_scales(pj, p);
        const size_t panel = (size_t)p * mm_panel_values(w->dtype, w->K);
        for (int k = 0; k < rows; k++) {
            for (int j = 0; j < MM_NR; j++) {
                float v = k < w->K ? src_at(pj, k, p * MM_NR + j) : 0.0f;
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
                } else
                    ((int8_t *)w->data)[at] = mm_f32_to_i8(v, w->scale[(size_t)p * MM_NR + j]);
            }
        }
    }
}

static void pack_cb(void *arg, int part, int n)
{
    const pack_job_t *pj = arg;
    int p0, p1;
    pool_split(pj->w->n_panels, n, part, &p0, &p1);
    pack_panels(pj, p0, p1);
}

static int weight_alloc(mm_weight_t *w, int K, int N, int dtype)
{
    memset(w, 0, sizeof(*w));
    if (dtype == ENG_DTYPE_AUTO)
        dtype = ENG_DTYPE_F32;
    if (K <= 0 || N <= 0 ||
        (dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16 && dtype != ENG_DTYPE_BF16 &&
         dtype != ENG_DTYPE_I8 && dtype != ENG_DTYPE_BF16X3))
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
    if (dtype == ENG_DTYPE_I8) {
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

int mm_weight_init(mm_weight_t *w, const float *src, int K, int N, size_t ld, int trans,
                   int dtype)
{
    return mm_weight_init_mt(NULL, w, src, K, N, ld, trans, dtype);
}

int mm_weight_init_mt(mm_t *mm, mm_weight_t *w, const float *src, int K, int N, size_t ld,
                      int trans, int dtype)
{
    if (!src || ld < (size_t)(trans ? K : N)) {
        memset(w, 0, sizeof(*w));
        return -EINVAL;
    }
    int rc = weight_alloc(w, K, N, dtype);
    if (rc)
        return rc;
    pack_job_t pj = {.w = w, .src = src, .ld = ld, .trans = trans};
    pool_run(mm ? mm_pool(mm) : NULL, pack_cb, &pj);
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
    size_t at = (size_t)(n / MM_NR) * mm_panel_values(w->dtype, w->K) +
                panel_at(w->dtype, k, n % MM_NR);
    if (w->dtype == ENG_DTYPE_BF16X3)
        return mm_bf16_to_f32(((const uint16_t *)w->data)[at]) +
               mm_bf16_to_f32(((const uint16_t *)w->data)[at + MM_X3_LO]);
    if (w->dtype == ENG_DTYPE_F32)
        return ((const float *)w->data)[at];
    if (w->dtype == ENG_DTYPE_I8)
        return (float)((const int8_t *)w->data)[at] * w->scale[n];
    uint16_t h = ((const uint16_t *)w->data)[at];
    return w->dtype == ENG_DTYPE_F16 ? mm_f16_to_f32(h) : mm_bf16_to_f32(h);
}

void mm_weight_column(const mm_weight_t *w, int n, float *out)
{
    for (int k = 0; k < w->K; k++)
        out[k] = mm_weight_get(w, k, n);
}
