/* matmul_q8.c - W8A8 products (matmul_q8.h): X's quantization buffer, the scalar quantizer,
 * a part's loop over its panels and the portable tile. The vector tiles and quantizers are
 * in matmul_q8_avx2.c and matmul_q8_avx512.c.
 *
 * Loop nest per part (as matmul.c's): for each block of rows of X (its int8 rows stay in L2),
 * for each np panels of the range, for each block of MM_Q8_KB values of K, for each register
 * tile of rows: the tile sums its block and adds it to Y (stored between blocks, exact), so
 * a block's weights stay in L1 while every tile of rows reads them.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_q8.h"
#include "engine/kernels/vecmath.h"

#define Q8_XBLOCK (256 * 1024) /* bytes of int8 X rows per row block (L2) */

/* ---- forms ---- */

/* CPUID.(7,0):ECX bit 11 (AVX512-VNNI); CPUID.(7,1):EAX bit 4 (AVX-VNNI). The kernels' own
 * checks (AVX2, AVX-512 and the OS state) come first, in mm_set_kernel. */
int mm_q8_form_supported(int form)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    switch (form) {
    case MM_Q8_AVX512_VNNI:
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (c & (1u << 11));
    case MM_Q8_AVX2_VNNI:
        return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
    default:
        return form >= MM_Q8_GENERIC && form < MM_Q8_N_FORMS;
    }
#else
    return form == MM_Q8_GENERIC;
#endif
}

int mm_q8_mr(int form)
{
    return form == MM_Q8_AVX512 || form == MM_Q8_AVX512_VNNI ? 8 : 6;
}

int mm_q8_wide(int form, int M)
{
    return form == MM_Q8_AVX2 && M >= MM_Q8_WIDE_MR;
}

/* One and two rows span more panels, so a tile has enough independent chains (and enough
 * bytes in flight) to keep up with memory, as the F32 tiles. */
int mm_q8_np(int form, int mr)
{
    if (form == MM_Q8_GENERIC)
        return 1;
    if (form == MM_Q8_AVX512 || form == MM_Q8_AVX512_VNNI) /* 8 x 48 with VNNI: 24 sums */
        return mr <= 2 ? 4 : form == MM_Q8_AVX512_VNNI ? 3 : 2;
    return mr == 1 ? 4 : mr == 2 ? 2 : 1;
}

mm_q8_tile_fn mm_q8_tile_for(int form)
{
    switch (form) {
    case MM_Q8_AVX2:
        return mm_q8_tile_avx2;
    case MM_Q8_AVX2_VNNI:
        return mm_q8_tile_avx2_vnni;
    case MM_Q8_AVX512:
        return mm_q8_tile_avx512;
    case MM_Q8_AVX512_VNNI:
        return mm_q8_tile_avx512_vnni;
    default:
        return mm_q8_tile_generic;
    }
}

/* ---- X ---- */

int mm_q8_x_reserve(mm_q8_x_t *qx, int M, int K, int wide)
{
    const int nb = (K + MM_Q8_KB - 1) / MM_Q8_KB;
    /* Rows on whole cache lines, plus one when that is a multiple of 4 KiB (rows in the same
     * L1 sets otherwise). */
    size_t ldq = ((size_t)K + 63) / 64 * 64;
    if (ldq % 4096 == 0)
        ldq += 64;
    const size_t qb = (size_t)M * ldq, sc = (size_t)M * (size_t)nb;
    if (qb > qx->q_bytes) {
        void *p = NULL;
        if (posix_memalign(&p, 64, qb))
            return -ENOMEM;
        free(qx->q);
        qx->q = p;
        qx->q_bytes = qb;
    }
    if (wide && qb * sizeof(int16_t) > qx->q16_bytes) {
        void *p = NULL;
        if (posix_memalign(&p, 64, qb * sizeof(int16_t)))
            return -ENOMEM;
        free(qx->q16);
        qx->q16 = p;
        qx->q16_bytes = qb * sizeof(int16_t);
    }
    if (sc > qx->s_count) {
        float *s = malloc(sc * sizeof(float));
        int32_t *sum = malloc(sc * sizeof(int32_t));
        if (!s || !sum) {
            free(s);
            free(sum);
            return -ENOMEM;
        }
        free(qx->s);
        free(qx->sum);
        qx->s = s;
        qx->sum = sum;
        qx->s_count = sc;
    }
    qx->ldq = ldq;
    qx->nb = nb;
    qx->wide = wide;
    return 0;
}

void mm_q8_x_free(mm_q8_x_t *qx)
{
    if (!qx)
        return;
    free(qx->q);
    free(qx->q16);
    free(qx->s);
    free(qx->sum);
    memset(qx, 0, sizeof(*qx));
}

void mm_q8_block_scale(uint32_t amax_bits, float *scale, float *inv)
{
    float a;
    memcpy(&a, &amax_bits, sizeof(a));
    if (amax_bits >= 0x7f800000u) { /* Inf or NaN in the block: the row's result is NaN */
        *scale = NAN;
        *inv = 0.0f;
    } else if (a < 0x1p-100f) { /* zeros (127 / a would overflow below ~2^-120) */
        *scale = 0.0f;
        *inv = 0.0f;
    } else {
        *scale = a / 127.0f;
        *inv = 127.0f / a;
    }
}

int8_t mm_q8_value(float x, float inv)
{
    /* |x inv| <= 127 (1 + 2^-23) for a finite block, so no clamp is needed beyond rounding;
     * the vector quantizers convert with the same rounding (the current mode: nearest even). */
    float r = rintf(x * inv);
    return (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
}

static void quantize_generic(mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx)
{
    for (int m = m0; m < m1; m++) {
        const float *xr = x + (size_t)m * ldx;
        int8_t *q = qx->q + (size_t)m * qx->ldq;
        for (int b = 0; b < qx->nb; b++) {
            const int k0 = b * MM_Q8_KB, k1 = K - k0 < MM_Q8_KB ? K : k0 + MM_Q8_KB;
            uint32_t amax = 0;
            for (int k = k0; k < k1; k++) {
                uint32_t bits;
                memcpy(&bits, &xr[k], sizeof(bits));
                bits &= 0x7fffffffu;
                amax = bits > amax ? bits : amax;
            }
            float inv;
            mm_q8_block_scale(amax, &qx->s[(size_t)m * qx->nb + b], &inv);
            int32_t sum = 0;
            for (int k = k0; k < k1; k++) {
                q[k] = inv != 0.0f ? mm_q8_value(xr[k], inv) : 0;
                sum += q[k];
            }
            qx->sum[(size_t)m * qx->nb + b] = sum;
        }
        for (int k = K; k < (K + 3) / 4 * 4; k++)
            q[k] = 0;
    }
}

void mm_q8_quantize(int form, mm_q8_x_t *qx, int m0, int m1, int K, const float *x, size_t ldx)
{
    if (form == MM_Q8_AVX512 || form == MM_Q8_AVX512_VNNI)
        mm_q8_quantize_avx512(qx, m0, m1, K, x, ldx);
    else if (form == MM_Q8_AVX2 || form == MM_Q8_AVX2_VNNI)
        mm_q8_quantize_avx2(qx, m0, m1, K, x, ldx);
    else
        quantize_generic(qx, m0, m1, K, x, ldx);
}

/* ---- a part's panels ---- */

void mm_q8_range(const mm_q8_job_t *j, int p0, int p1)
{
    const mm_weight_t *w = j->w;
    const mm_q8_x_t *qx = j->qx;
    const int Kp = (w->K + 3) / 4 * 4, MR = mm_q8_mr(j->form);
    const size_t panel_bytes = (size_t)Kp * MM_NR;
    const mm_q8_tile_fn tile = mm_q8_tile_for(j->form);
    mm_q8_tile_t t = {.ldx = qx->ldq,
                      .xstride = (size_t)qx->nb,
                      .wstride = (ptrdiff_t)panel_bytes,
                      .ldy = j->ldy};
    int mc_max = j->M;
    const size_t row_bytes = qx->ldq * (qx->wide ? sizeof(int16_t) : 1);
    if (j->M > MR && (size_t)j->M * row_bytes > Q8_XBLOCK) {
        mc_max = (int)(Q8_XBLOCK / row_bytes) / MR * MR;
        mc_max = mc_max < MR ? MR : mc_max;
    }
    for (int m0 = 0; m0 < j->M; m0 += mc_max) {
        const int mc = j->M - m0 < mc_max ? j->M - m0 : mc_max;
        const int nb = (mc + MR - 1) / MR; /* near-equal row tiles */
        const int npt = mm_q8_np(j->form, (mc + nb - 1) / nb);
        for (int p = p0, np; p < p1; p += np) {
            np = p1 - p < npt ? p1 - p : npt;
            if (npt == 3 && p1 - p == 4) /* 2 + 2, not 3 + a load-bound one-panel tile */
                np = 2;
            const int n0 = p * MM_NR;
            t.np = np;
            t.scale = w->scale + n0;
            t.nc = w->N - n0 < np * MM_NR ? w->N - n0 : np * MM_NR;
            for (int kb = 0; kb < qx->nb; kb++) {
                const int k0 = kb * MM_Q8_KB;
                const uint8_t *wp =
                    (const uint8_t *)w->data + (size_t)p * panel_bytes + (size_t)k0 * MM_NR;
                t.w = wp;
                t.kc = Kp - k0 < MM_Q8_KB ? Kp - k0 : MM_Q8_KB;
                t.load_y = j->accumulate || kb > 0;
                t.bias = j->bias && kb == 0 ? j->bias + n0 : NULL;
                t.gelu = j->gelu && kb == qx->nb - 1;
                for (int b = 0; b < nb; b++) {
                    int r0, r1;
                    pool_split(mc, nb, b, &r0, &r1);
                    const size_t row = (size_t)(m0 + r0);
                    t.x = qx->q + row * qx->ldq + k0;
                    t.x16 = qx->wide ? qx->q16 + row * qx->ldq + k0 : NULL;
                    t.xs = qx->s + row * (size_t)qx->nb + kb;
                    t.xsum = qx->sum + row * (size_t)qx->nb + kb;
                    t.y = j->y + row * j->ldy + n0;
                    t.mr = r1 - r0;
                    if (nb == 1) {
                        /* pf_dist ahead in the panels; past their end (the last block),
                         * the start of the next tile's panels, which would otherwise all
                         * but the first start cold (a quarter of the weights at K = 768),
                         * or nothing new at the end of the range. */
                        const int kpf = k0 + j->pf_dist / (4 * MM_NR) * 4;
                        t.pf = (const char *)wp + j->pf_dist;
                        if (kpf >= Kp)
                            t.pf = (const char *)w->data +
                                   (size_t)(p + np < p1 ? p + np : p) * panel_bytes +
                                   (size_t)(kpf - Kp) * MM_NR;
                        t.pfstep = 4 * MM_NR;
                    } else {
                        /* This block of the next np panels, a share per row tile. */
                        ptrdiff_t step = (4 * MM_NR + nb - 1) / nb;
                        t.pf = (const char *)wp + (size_t)np * panel_bytes +
                               (size_t)b * (size_t)(t.kc / 4) * (size_t)step;
                        t.pfstep = step;
                    }
                    tile(&t);
                }
            }
        }
    }
}

/* ---- the portable tile ---- */

void mm_q8_tile_generic(const mm_q8_tile_t *t)
{
    enum { MR = 6, NC = 4 * MM_NR };
    int32_t d[MR][NC];
    memset(d, 0, sizeof(d));
    for (int p = 0; p < t->np; p++) {
        const uint8_t *w = t->w + (ptrdiff_t)p * t->wstride;
        for (int g = 0; g < t->kc / 4; g++) {
            for (int i = 0; i < t->mr; i++) {
                const int8_t *x = t->x + (size_t)i * t->ldx + 4 * g;
                for (int j = 0; j < MM_NR; j++) {
                    const uint8_t *wj = w + (size_t)g * 4 * MM_NR + 4 * j;
                    int32_t s = 0;
                    for (int u = 0; u < 4; u++)
                        s += (int32_t)x[u] * ((int32_t)wj[u] - 128);
                    d[i][p * MM_NR + j] += s;
                }
            }
        }
    }
    for (int i = 0; i < t->mr; i++) {
        float *y = t->y + (size_t)i * t->ldy;
        const float sx = t->xs[(size_t)i * t->xstride];
        for (int j = 0; j < t->nc; j++) {
            float v = t->load_y ? y[j] : 0.0f;
            if (t->bias)
                v = t->load_y ? t->bias[j] + v : t->bias[j];
            v = fmaf((float)d[i][j] * sx, t->scale[j], v);
            y[j] = t->gelu ? vm_gelu(v) : v;
        }
    }
}
