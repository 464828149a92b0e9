/* matmul_generic.c - the portable register tile (plain C, any CPU).
 * The order of matmul_kern.h, as the vector tiles; each product is rounded before the add
 * (no FMA), and so is an I8 chunk's scaled sum before it is added to the element. */
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/matmul.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

/* Widens row k of the panel into 16 floats (BF16: from the row of pairs holding rows k & ~1
 * and k | 1, see panel_at in matmul_pack.c; I8: the integers, unscaled). */
static void panel_row(const mm_tile_t *t, int k, float *out)
{
    if (t->dtype == ENG_DTYPE_F32) {
        memcpy(out, (const float *)t->w + (size_t)k * MM_NR, MM_NR * sizeof(float));
        return;
    }
    if (t->dtype == ENG_DTYPE_I8) {
        const int8_t *q = (const int8_t *)t->w + (size_t)k * MM_NR;
        for (int j = 0; j < MM_NR; j++)
            out[j] = (float)q[j];
        return;
    }
    if (t->dtype == ENG_DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)t->w + (size_t)k * MM_NR;
        for (int j = 0; j < MM_NR; j++)
            out[j] = mm_f16_to_f32(h[j]);
    } else if (t->dtype == ENG_DTYPE_BF16) {
        const uint16_t *h = (const uint16_t *)t->w + (size_t)(k & ~1) * MM_NR + (k & 1);
        for (int j = 0; j < MM_NR; j++)
            out[j] = mm_bf16_to_f32(h[2 * j]);
    } else {
        /* BF16X3: the row of pairs of hi, then the one of lo; the weight is hi + lo. */
        const uint16_t *h = (const uint16_t *)t->w + (size_t)(k & ~1) * 2 * MM_NR + (k & 1);
        for (int j = 0; j < MM_NR; j++)
            out[j] = mm_bf16_to_f32(h[2 * j]) + mm_bf16_to_f32(h[MM_X3_LO + 2 * j]);
    }
}

void mm_tile_generic(const mm_tile_t *t)
{
    const int i8 = t->dtype == ENG_DTYPE_I8;
    /* The start values; I8 adds its scaled sum to them. */
    float acc[MM_MR_GENERIC][MM_NR], start[MM_MR_GENERIC][MM_NR];
    for (int i = 0; i < t->mr; i++) {
        for (int j = 0; j < MM_NR; j++) {
            float v = 0.0f;
            if (j < t->nc) {
                if (t->load_y)
                    v = t->y[(size_t)i * t->ldy + j];
                if (t->bias)
                    v += t->bias[j];
            }
            start[i][j] = v;
            acc[i][j] = i8 ? 0.0f : v;
        }
    }
    float wrow[MM_NR];
    for (int k = 0; k < t->kc; k++) {
        panel_row(t, k, wrow);
        for (int i = 0; i < t->mr; i++) {
            float xv = t->x[(size_t)i * t->ldx + k];
            for (int j = 0; j < MM_NR; j++)
                acc[i][j] += xv * wrow[j];
        }
    }
    /* I8: one chunk of at most MM_I8_KC rows (the driver cuts longer K). */
    if (i8)
        for (int i = 0; i < t->mr; i++)
            for (int j = 0; j < MM_NR; j++)
                acc[i][j] = start[i][j] + t->scale[j] * acc[i][j];
    if (t->gelu)
        for (int i = 0; i < t->mr; i++)
            for (int j = 0; j < t->nc; j++)
                acc[i][j] = vm_gelu(acc[i][j]);
    for (int i = 0; i < t->mr; i++)
        memcpy(t->y + (size_t)i * t->ldy, acc[i], (size_t)t->nc * sizeof(float));
}
