/* attention_scores.c - the score tiles of attention (attention_kern.h): the scores q . k_j /
 * sqrt(HS) of several rows against the keys of a context, read in place from the transposed K
 * panels (a panel of HS rows of kbs keys per block and KV head), with AVX2 and AVX-512.
 * scores_avx2 and scores_avx512 are called by the row and decode drivers of attention_tiles.c,
 * which then take the softmax and the chains of V; each score is one chain over d from +0, in
 * the order attention_tiles.c spells out ("THE ORDER OF A ROW'S SUMS"), so a row's scores do
 * not depend on the tile shape, the other rows of a tile or the block size. Only functions with
 * the target attribute use AVX2 or AVX-512 instructions; the driver (attention.c) reaches them
 * only after checking the CPU.
 */
#include "engine/kernels/attention_kern.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef HAVE_VEC_AVX2
/* SCORE TILES. A group is up to 16 consecutive keys of one block's panel: its row d is 16
 * values at k + d * kst bytes (kst = BS values), the group's first key at position j, cnt of
 * its keys wanted (cnt < 16 at the end of a block or of the context: the other lanes read on
 * into the panel's next row, or past the panel's last row into the next KV head's panel or
 * the block's values, memory of the same block, and are dropped; cnt = 0: a group repeated to
 * fill a tile, nothing stored). A tile is R rows (row r's query at q + r qs, its scores at
 * sc + r ld) against NG groups: R x NG x 16 chains, each from +0 over d in order, one FMA per d;
 * then scaled by 1 / sqrt(HS). pf (or NULL): the values of the NG groups (16 rows of HS values
 * each, vst bytes of them per d), asked for to L2 a line at a time as the keys are read. */
typedef struct score_tile {
    const float *q;
    size_t qs;
    float *sc;
    size_t ld;
    size_t kst;
    size_t vst;
    int vskip; /* pf: a line every vskip + 1 values of d (a line holds 64 / vst) */
    int HS;
    float scale;
} score_tile_t;

VEC_AVX2_INLINE void tile_avx2(const int R, const int NG, const score_tile_t *t, const int f16,
                               const char *const *k, const char *const *pf, const int *j,
                               const int *cnt)
{
    __m256 a[4][4][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++)
            a[r][g][0] = a[r][g][1] = _mm256_setzero_ps();
    const size_t kst = t->kst;
    for (int d = 0; d < t->HS; d++) {
        const size_t at = (size_t)d * kst;
        if (pf && !(d & t->vskip))
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++)
                _mm_prefetch(pf[g] + (size_t)d * t->vst, _MM_HINT_T1);
        __m256 x[4][2];
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) {
            x[g][0] = load8(k[g] + at, 0, f16);
            x[g][1] = load8(k[g] + at, 8, f16);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 qb = _mm256_broadcast_ss(t->q + (size_t)r * t->qs + d);
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++) {
                a[r][g][0] = _mm256_fmadd_ps(qb, x[g][0], a[r][g][0]);
                a[r][g][1] = _mm256_fmadd_ps(qb, x[g][1], a[r][g][1]);
            }
        }
    }
    const __m256 scale = _mm256_set1_ps(t->scale);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) {
            float *o = t->sc + (size_t)r * t->ld + j[g];
            const __m256 lo = _mm256_mul_ps(a[r][g][0], scale);
            const __m256 hi = _mm256_mul_ps(a[r][g][1], scale);
            if (cnt[g] == 16) {
                _mm256_storeu_ps(o, lo);
                _mm256_storeu_ps(o + 8, hi);
            } else if (cnt[g] > 0) {
                float tmp[16];
                _mm256_storeu_ps(tmp, lo);
                _mm256_storeu_ps(tmp + 8, hi);
                memcpy(o, tmp, (size_t)cnt[g] * sizeof(float));
            }
        }
}

VEC_AVX512_INLINE void tile_avx512(const int R, const int NG, const score_tile_t *t, const int f16,
                                   const char *const *k, const char *const *pf, const int *j,
                                   const int *cnt)
{
    __m512 a[4][8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++)
            a[r][g] = _mm512_setzero_ps();
    const size_t kst = t->kst;
    for (int d = 0; d < t->HS; d++) {
        const size_t at = (size_t)d * kst;
        if (pf && !(d & t->vskip))
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++)
                _mm_prefetch(pf[g] + (size_t)d * t->vst, _MM_HINT_T1);
        __m512 x[8];
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++)
            x[g] = load16(k[g] + at, f16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 qb = _mm512_set1_ps(t->q[(size_t)r * t->qs + d]);
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++)
                a[r][g] = _mm512_fmadd_ps(qb, x[g], a[r][g]);
        }
    }
    const __m512 scale = _mm512_set1_ps(t->scale);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++)
            if (cnt[g] > 0)
                _mm512_mask_storeu_ps(t->sc + (size_t)r * t->ld + j[g],
                                      (__mmask16)((1u << cnt[g]) - 1),
                                      _mm512_mul_ps(a[r][g], scale));
}

/* The groups [g0, g0 + NG) of a context of n keys (ng groups, gpb per block) for a tile, in
 * head 0's panels: k, j, cnt as score_tile_t describes (groups past ng repeat the first,
 * cnt 0). */
static inline void tile_groups(const kv_src_t *s, size_t es, int n, int ng, int g0, int NG,
                               const char **k, int *j, int *cnt)
{
    const int BS = s->kbs, gpb = (BS + 15) / 16;
    for (int g = 0; g < NG; g++) {
        /* (No division for blocks of up to 16 keys: this runs once per tile.) */
        const int gi = g0 + g, b = gpb == 1 ? gi : gi / gpb, c0 = gpb == 1 ? 0 : gi % gpb * 16;
        if (gi < ng) {
            const int left = BS - c0 < n - b * BS ? BS - c0 : n - b * BS;
            k[g] = s->k + src_kblock(s, b) + (size_t)c0 * es;
            j[g] = b * BS + c0;
            cnt[g] = left < 16 ? left : 16;
        } else {
            k[g] = k[0];
            j[g] = j[0];
            cnt[g] = 0;
        }
    }
}

/* Groups of a context of n keys: gpb per block, the last block's up to position n. */
static inline int score_groups(int BS, int n)
{
    const int gpb = (BS + 15) / 16, nb = (n + BS - 1) / BS;
    return (nb - 1) * gpb + (n - (nb - 1) * BS + 15) / 16;
}

/* scores_t_ISA: the scores of w in tiles of RM rows by NG groups of 16 keys (F16 keys when
 * f16), the last rows of a head in a tile of fewer rows. scores_ISA: the tile shape for w's
 * rows and keys. AVX2 (16 registers): 2 x R x NG accumulators of eight lanes, at most 12: one
 * row takes four groups, two rows three, three rows two, four rows one. AVX-512 (32 registers,
 * a group in one register): one row takes eight groups (the loads, not the FMAs, bound it),
 * two six, three five, four four. One macro makes both, as a function compiled for AVX2 cannot
 * inline the AVX-512 tile. */
#define SCORES_FNS(ISA, INLINE_ATTR, ATTR, NG1, NG2, NG3, NG4)                                     \
    INLINE_ATTR void scores_t_##ISA(const int RM, const int NG, const int f16,                     \
                                    const score_rows_t *w)                                         \
    {                                                                                              \
        const kv_src_t *s = w->s;                                                                  \
        const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);                                  \
        const int ng = score_groups(s->kbs, w->n);                                                 \
        score_tile_t t = {.qs = w->qs,                                                             \
                          .ld = w->ld,                                                             \
                          .kst = (size_t)s->kbs * es,                                              \
                          .HS = s->HS,                                                             \
                          .scale = 1.0f / sqrtf((float)s->HS)};                                    \
        const size_t ves = s->vf16 ? sizeof(uint16_t) : sizeof(float);                             \
        /* A group's values: its 16 rows of the block's V, 16 ves bytes of them per d. */          \
        const int vpf = w->stream && s->kbs == s->BS && s->BS % 16 == 0;                           \
        t.vst = 16 * ves;                                                                          \
        t.vskip = (int)(64 / t.vst) - 1;                                                           \
        const int tiles = (ng + NG - 1) / NG * w->nh;                                              \
        for (int ti = 0; ti < tiles; ti++) {                                                       \
            const int g0 = ti / w->nh * NG, i = ti % w->nh;                                        \
            const char *k[8] = {0}, *pf[8] = {0};                                                  \
            int j[8] = {0}, cnt[8] = {0};                                                          \
            tile_groups(s, es, w->n, ng, g0, NG, k, j, cnt);                                       \
            for (int g = 0; g < NG; g++) {                                                         \
                k[g] += (size_t)i * w->hk;                                                         \
                /* (a repeated group asks for the first one's lines again) */                      \
                if (vpf)                                                                           \
                    pf[g] = s->v + src_vblock(s, j[g] / s->BS) + (size_t)i * w->hk +               \
                            (size_t)(j[g] % s->BS) * s->HS * ves;                                  \
            }                                                                                      \
            for (int r0 = 0; r0 < w->nq; r0 += RM) {                                               \
                const int R = w->nq - r0 < RM ? w->nq - r0 : RM;                                   \
                const char *const *p = vpf && r0 == 0 ? pf : NULL;                                 \
                t.q = w->q + (size_t)(i * w->nq + r0) * w->qs;                                     \
                t.sc = w->sc + (size_t)(i * w->nq + r0) * w->ld;                                   \
                if (R == RM)                                                                       \
                    tile_##ISA(RM, NG, &t, f16, k, p, j, cnt);                                     \
                else if (R == 1)                                                                   \
                    tile_##ISA(1, NG, &t, f16, k, p, j, cnt);                                      \
                else if (RM > 2 && R == 2)                                                         \
                    tile_##ISA(2, NG, &t, f16, k, p, j, cnt);                                      \
                else if (RM > 3)                                                                   \
                    tile_##ISA(3, NG, &t, f16, k, p, j, cnt);                                      \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    ATTR __attribute__((noinline)) void scores_##ISA(const score_rows_t *w)                        \
    {                                                                                              \
        const int RM = w->nq < 4 ? w->nq : 4;                                                      \
        switch (RM * 2 + w->s->f16) {                                                              \
        case 2:                                                                                    \
            scores_t_##ISA(1, NG1, 0, w);                                                          \
            break;                                                                                 \
        case 3:                                                                                    \
            scores_t_##ISA(1, NG1, 1, w);                                                          \
            break;                                                                                 \
        case 4:                                                                                    \
            scores_t_##ISA(2, NG2, 0, w);                                                          \
            break;                                                                                 \
        case 5:                                                                                    \
            scores_t_##ISA(2, NG2, 1, w);                                                          \
            break;                                                                                 \
        case 6:                                                                                    \
            scores_t_##ISA(3, NG3, 0, w);                                                          \
            break;                                                                                 \
        case 7:                                                                                    \
            scores_t_##ISA(3, NG3, 1, w);                                                          \
            break;                                                                                 \
        case 8:                                                                                    \
            scores_t_##ISA(4, NG4, 0, w);                                                          \
            break;                                                                                 \
        default:                                                                                   \
            scores_t_##ISA(4, NG4, 1, w);                                                          \
            break;                                                                                 \
        }                                                                                          \
    }
SCORES_FNS(avx2, VEC_AVX2_INLINE, VEC_AVX2, 4, 3, 2, 1)
SCORES_FNS(avx512, VEC_AVX512_INLINE, VEC_AVX512, 8, 6, 5, 4)
#undef SCORES_FNS
#endif
