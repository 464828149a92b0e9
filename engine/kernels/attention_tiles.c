/* attention_tiles.c - the per-row arithmetic of attention (attention_kern.h): the portable row
 * (attn_row_generic), and the AVX2 and AVX-512 drivers of a prefill chunk's rows and of a decode
 * token (attn_rows_ISA, attn_dec_ISA) with their softmax and chains of V, reading V block by
 * block in place; their scores come from the score tiles of attention_scores.c (q . K^T over the
 * transposed K panels). Every row, a decode token or a row of a prefill chunk, is attended in
 * the same order, spelled out below for both files. Several rows go through the same passes
 * (a chunk's consecutive rows, or a decode token's query heads of one KV head), sharing the
 * loads of V. Only functions with the target attribute use AVX2 or AVX-512 instructions; the
 * driver (attention.c) calls them only after checking the CPU.
 */
#include "engine/kernels/attention_kern.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/kernels/vec.h"
#include "engine/kernels/vecmath.h"

/* THE ORDER OF A ROW'S SUMS. Every row of every step, a decode token or a row inside a prefill
 * chunk of any size, goes through the same per-row arithmetic, fixed by the row's position and
 * its context only:
 *   score[j] = (sum over d = 0..HS-1 of q[d] k_j[d]) * (1 / sqrt(HS)) for j = 0..pos, the sum
 *     one chain in order of d from +0 (fused multiply-adds with the AVX2 and AVX-512 kernels,
 *     which therefore agree bit for bit; a multiply and an add with the portable one);
 *   p = softmax(score[0..pos]) (ops->softmax over exactly pos + 1 values);
 *   out[c] = sum over j = 0..pos of p[j] v_j[c], one chain in order of j from +0.
 * The chains of a score run side by side for the keys of a panel (one vector lane per key) and
 * for several rows (a chunk's consecutive rows, or a decode token's query heads of one KV head),
 * sharing each load of K and V. Keys past a row's own position (in the block that straddles it,
 * or for the other rows of a tile) are computed in lanes of their own and dropped: softmax sees
 * only the row's pos + 1 scores, and the rest of P is exact zeros, which leave a chain of V from
 * +0 unchanged (V of those positions is finite: written in this step). So a row's bits do not
 * depend on how the prompt was chunked, on the other rows of its chunk or step, on whether its
 * prefix was computed in this step, an earlier one or came from the prefix cache, on the block
 * size, or on the thread. */

/* One row and query head over positions [0, n) (portable): out = softmax(q . K^T / sqrt(HS)) V.
 * The scores of up to ATTN_CHUNK keys of a block go together, one chain per key over d; out
 * accumulates p_j v_j in order of j (vec_axpy). scores has room for n floats. */
void attn_row_generic(const vec_ops_t *ops, float *out, const float *q, const kv_src_t *s, int n,
                      float *scores)
{
    const int BS = s->BS, KB = s->kbs, HS = s->HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float buf[ATTN_CHUNK], acc[ATTN_CHUNK];
    for (int j0 = 0, b = 0; j0 < n; j0 += KB, b++) {
        const int rows = n - j0 < KB ? n - j0 : KB;
        const char *kb = s->k + src_kblock(s, b);
        for (int c0 = 0; c0 < rows; c0 += ATTN_CHUNK) {
            const int w = rows - c0 < ATTN_CHUNK ? rows - c0 : ATTN_CHUNK;
            for (int r = 0; r < w; r++)
                acc[r] = 0;
            for (int d = 0; d < HS; d++) {
                const float *k;
                if (s->f16) {
                    ops->from_f16(buf, (const uint16_t *)kb + (size_t)d * KB + c0, w);
                    k = buf;
                } else {
                    k = (const float *)kb + (size_t)d * KB + c0;
                }
                for (int r = 0; r < w; r++)
                    acc[r] += q[d] * k[r];
            }
            for (int r = 0; r < w; r++)
                scores[j0 + c0 + r] = acc[r] * scale;
        }
    }
    ops->softmax(scores, n);
    memset(out, 0, (size_t)HS * sizeof(float));
    const size_t es = s->vf16 ? sizeof(uint16_t) : sizeof(float);
    for (int j = 0; j < n; j++) {
        const char *vr = s->v + src_vblock(s, j / BS) + (size_t)(j % BS) * HS * es;
        for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
            int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
            const float *v;
            if (s->vf16) {
                ops->from_f16(buf, (const uint16_t *)vr + c0, w);
                v = buf;
            } else {
                v = (const float *)vr + c0;
            }
            vec_axpy(out + c0, scores[j], v, w);
        }
    }
}

#ifdef HAVE_VEC_AVX2
/* How far ahead a decode token's pass over V asks for lines, in bytes of its run (tried 4, 8
 * and 16 KiB: 4 is as fast as any). */
#define ATTN_AHEAD 4096

/* Most runs of V a decode token reads side by side (pv_dec_ISA). */
#define PV_STREAMS 4

/* Asks for the lines of bytes [p, p + n) to be brought to the caches. */
VEC_AVX2_INLINE void prefetch_span(const void *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* Columns [c0, c0 + 8 nv) of out = sum_j p[j] v_j for nr rows (p[r], o[r]), j in [0, n): one
 * FMA chain per element from +0, in order of j; the rows share the loads of V. */
VEC_AVX2_INLINE void pv_pass(int nr, int nv, float *const *p, const kv_src_t *s, int n, int c0,
                             float *const *o, int f16)
{
    const int BS = s->BS, HS = s->HS;
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float), row = (size_t)HS * es;
    __m256 a[ATTN_ROWS][8];
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++)
            a[r][u] = _mm256_setzero_ps();
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        const char *v = s->v + src_vblock(s, b) + (size_t)c0 * es;
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int jr = 0; jr < rows; jr++, v += row) {
            __m256 x[8];
#pragma GCC unroll 8
            for (int u = 0; u < nv; u++)
                x[u] = load8(v, 8 * u, f16);
#pragma GCC unroll 8
            for (int r = 0; r < ATTN_ROWS; r++)
                if (r < nr) {
                    __m256 pr = _mm256_broadcast_ss(p[r] + j0 + jr);
#pragma GCC unroll 8
                    for (int u = 0; u < nv; u++)
                        a[r][u] = _mm256_fmadd_ps(pr, x[u], a[r][u]);
                }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
        if (r < nr)
#pragma GCC unroll 8
            for (int u = 0; u < nv; u++)
                _mm256_storeu_ps(o[r] + c0 + 8 * u, a[r][u]);
}

/* pv_pass with 16-lane vectors: columns [c0, c0 + 16 NV) for NR rows, the same chains. */
VEC_AVX512_INLINE void pv_pass16(const int NR, const int NV, float *const *p, const kv_src_t *s,
                                 int n, int c0, float *const *o)
{
    const int BS = s->BS, HS = s->HS;
    __m512 a[ATTN_ROWS][4];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int u = 0; u < NV; u++)
            a[r][u] = _mm512_setzero_ps();
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        const float *v = (const float *)(s->v + src_vblock(s, b)) + c0;
        const int rows = n - j0 < BS ? n - j0 : BS;
        for (int jr = 0; jr < rows; jr++, v += HS) {
            __m512 x[4];
#pragma GCC unroll 8
            for (int u = 0; u < NV; u++)
                x[u] = _mm512_loadu_ps(v + 16 * u);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                const __m512 pr = _mm512_set1_ps(p[r][j0 + jr]);
#pragma GCC unroll 8
                for (int u = 0; u < NV; u++)
                    a[r][u] = _mm512_fmadd_ps(pr, x[u], a[r][u]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int u = 0; u < NV; u++)
            _mm512_storeu_ps(o[r] + c0 + 16 * u, a[r][u]);
}

VEC_AVX512_INLINE void pv_rows16(const int NR, float *const *p, const kv_src_t *s, int n,
                                 float *const *o)
{
    for (int c0 = 0; c0 < s->HS;) {
        const int left = s->HS - c0;
        if (left >= 64) {
            pv_pass16(NR, 4, p, s, n, c0, o);
            c0 += 64;
        } else if (left >= 32) {
            pv_pass16(NR, 2, p, s, n, c0, o);
            c0 += 32;
        } else {
            pv_pass16(NR, 1, p, s, n, c0, o);
            c0 += 16;
        }
    }
}

/* O = P V for nr (1..ATTN_ROWS) rows over positions [0, n) of s's F32 values, AVX-512. */
VEC_AVX512 __attribute__((noinline)) static void
pv_rows_avx512(int nr, float *const *p, const kv_src_t *s, int n, float *const *o)
{
    switch (nr) {
    case 1:
        pv_rows16(1, p, s, n, o);
        break;
    case 2:
        pv_rows16(2, p, s, n, o);
        break;
    case 3:
        pv_rows16(3, p, s, n, o);
        break;
    default:
        pv_rows16(4, p, s, n, o);
        break;
    }
}

/* The rows with NR (a constant) of them, V in F32 (a chunk over an F16 cache reads it widened).
 * regs32: an AVX-512 CPU (its score tiles, and V in 16-lane vectors, 64 columns at a time for
 * up to four rows); else one row takes 64 columns of V, two rows 32, more rows 16, as 16
 * registers hold. */
VEC_AVX2_INLINE void attend_rows_t(const vec_ops_t *ops, const int NR, const attn_rows_t *w,
                                   const kv_src_t *s, const int regs32)
{
    const int HS = s->HS;
    int n = 0;
    for (int r = 0; r < NR; r++)
        n = w->n[r] > n ? w->n[r] : n;
    const score_rows_t sr = {.s = s,
                             .hk = 0,
                             .n = n,
                             .nq = NR,
                             .nh = 1,
                             .q = w->q,
                             .qs = w->qs,
                             .sc = w->sc,
                             .ld = w->ld};
    if (regs32)
        scores_avx512(&sr);
    else
        scores_avx2(&sr);
    float *p[ATTN_ROWS], *o[ATTN_ROWS];
    for (int r = 0; r < NR; r++) {
        p[r] = w->sc + (size_t)r * w->ld;
        o[r] = w->o + (size_t)r * w->os;
        ops->softmax(p[r], w->n[r]);
        if (w->n[r] < n) /* exact zeros: no-ops in the chains of V */
            memset(p[r] + w->n[r], 0, (size_t)(n - w->n[r]) * sizeof(float));
    }
    if (regs32) {
        pv_rows_avx512(NR, p, s, n, o);
        return;
    }
    for (int c0 = 0; c0 < HS;) {
        int left = HS - c0;
        if (NR == 1 && left >= 64) {
            pv_pass(1, 8, p, s, n, c0, o, 0);
            c0 += 64;
        } else if (left >= 32 && (NR <= 2 || regs32)) {
            pv_pass(NR, 4, p, s, n, c0, o, 0);
            c0 += 32;
        } else {
            pv_pass(NR, 2, p, s, n, c0, o, 0);
            c0 += 16;
        }
    }
}

/* Where a stream of V asks for lines ahead while it reads a block's rows of one head: row jr
 * asks for the row's width of lines at p + jr row while jr < split, else at p2 + (jr - split)
 * row (p2 NULL: nothing). */
typedef struct pf_run {
    const char *p, *p2;
    int split;
} pf_run_t;

VEC_AVX2_INLINE void pf_row(const pf_run_t *f, int jr, size_t row)
{
    if (jr < f->split)
        prefetch_span(f->p + (size_t)jr * row, row);
    else if (f->p2)
        prefetch_span(f->p2 + (size_t)(jr - f->split) * row, row);
}

/* Columns [c0, c0 + 8 nv) of o[h][r] += sum_j p[h][r][j] v_j over the `rows` rows of one
 * block of V of ns (1 or 2) heads (v[h]: head h's first row, `row` bytes apart; p and o
 * indexed h ATTN_ROWS + r), nr rows of each head sharing each load: the chains of pv_pass
 * carried from block to block through o (a float stored and loaded back is the same float).
 * Two heads are two streams of V read side by side. pf[h]: head h's lines to ask for
 * meanwhile, for the first columns (c0 == 0) only. */
VEC_AVX2_INLINE void pv_block(int ns, int nr, int nv, const float *const *p, const char *const *v,
                              size_t row, int rows, int c0, float *const *o, int f16,
                              const pf_run_t *pf)
{
    __m256 a[2][ATTN_ROWS][8];
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++)
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_ROWS; r++)
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++)
                a[h][r][u] = h < ns && r < nr && u < nv
                                 ? _mm256_loadu_ps(o[h * ATTN_ROWS + r] + c0 + 8 * u)
                                 : _mm256_setzero_ps();
    for (int jr = 0; jr < rows; jr++) {
#pragma GCC unroll 8
        for (int h = 0; h < 2; h++)
            if (h < ns && c0 == 0)
                pf_row(&pf[h], jr, row);
#pragma GCC unroll 8
        for (int h = 0; h < 2; h++)
            if (h < ns) {
                __m256 x[8];
#pragma GCC unroll 8
                for (int u = 0; u < nv; u++)
                    x[u] = load8(v[h] + (size_t)jr * row, c0 + 8 * u, f16);
#pragma GCC unroll 8
                for (int r = 0; r < ATTN_ROWS; r++)
                    if (r < nr) {
                        __m256 pr = _mm256_broadcast_ss(p[h * ATTN_ROWS + r] + jr);
#pragma GCC unroll 8
                        for (int u = 0; u < nv; u++)
                            a[h][r][u] = _mm256_fmadd_ps(pr, x[u], a[h][r][u]);
                    }
            }
    }
#pragma GCC unroll 8
    for (int h = 0; h < 2; h++)
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_ROWS; r++)
            if (h < ns && r < nr)
#pragma GCC unroll 8
                for (int u = 0; u < nv; u++)
                    _mm256_storeu_ps(o[h * ATTN_ROWS + r] + c0 + 8 * u, a[h][r][u]);
}

/* pv_block with 16-lane vectors for NS heads of NR rows: columns [c0, c0 + 16 NV), the same
 * chains. */
VEC_AVX512_INLINE void pv_block16(const int NS, const int NR, const int NV, const float *const *p,
                                  const char *const *v, size_t row, int rows, int c0,
                                  float *const *o, const int f16, const pf_run_t *pf)
{
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    __m512 a[PV_STREAMS][ATTN_ROWS][4];
#pragma GCC unroll 8
    for (int h = 0; h < NS; h++)
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
            for (int u = 0; u < NV; u++)
                a[h][r][u] = _mm512_loadu_ps(o[h * ATTN_ROWS + r] + c0 + 16 * u);
    for (int jr = 0; jr < rows; jr++) {
#pragma GCC unroll 8
        for (int h = 0; h < NS; h++)
            if (c0 == 0)
                pf_row(&pf[h], jr, row);
#pragma GCC unroll 8
        for (int h = 0; h < NS; h++) {
            const char *vr = v[h] + (size_t)jr * row + (size_t)c0 * es;
            __m512 x[4];
#pragma GCC unroll 8
            for (int u = 0; u < NV; u++)
                x[u] = load16(vr + (size_t)u * 16 * es, f16);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                const __m512 pr = _mm512_set1_ps(p[h * ATTN_ROWS + r][jr]);
#pragma GCC unroll 8
                for (int u = 0; u < NV; u++)
                    a[h][r][u] = _mm512_fmadd_ps(pr, x[u], a[h][r][u]);
            }
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < NS; h++)
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
            for (int u = 0; u < NV; u++)
                _mm512_storeu_ps(o[h * ATTN_ROWS + r] + c0 + 16 * u, a[h][r][u]);
}

/* One block's rows of NS heads for NR rows each, all their columns: pv_block16 in 64, 32 or 16
 * columns at a time. */
VEC_AVX512_INLINE void pv_head16(const int NS, const int NR, const float *const *p,
                                 const char *const *v, size_t row, int rows, int HS,
                                 float *const *o, const int f16, const pf_run_t *pf)
{
    for (int c0 = 0; c0 < HS;) {
        const int left = HS - c0;
        if (left >= 64) {
            pv_block16(NS, NR, 4, p, v, row, rows, c0, o, f16, pf);
            c0 += 64;
        } else if (left >= 32) {
            pv_block16(NS, NR, 2, p, v, row, rows, c0, o, f16, pf);
            c0 += 32;
        } else {
            pv_block16(NS, NR, 1, p, v, row, rows, c0, o, f16, pf);
            c0 += 16;
        }
    }
}

/* The same with 8-lane vectors, as 16 registers hold: one head of one row takes 64 columns at
 * a time, 32 for two rows (or two heads of one row), else 16. */
VEC_AVX2_INLINE void pv_head8(int ns, int nr, const float *const *p, const char *const *v,
                              size_t row, int rows, int HS, float *const *o, const int f16,
                              const pf_run_t *pf)
{
    for (int c0 = 0; c0 < HS;) {
        const int left = HS - c0, acc = ns * nr;
        if (acc == 1 && left >= 64) {
            pv_block(1, 1, 8, p, v, row, rows, c0, o, f16, pf);
            c0 += 64;
        } else if (left >= 32 && acc <= 2) {
            pv_block(ns, nr, 4, p, v, row, rows, c0, o, f16, pf);
            c0 += 32;
        } else {
            pv_block(ns, nr, 2, p, v, row, rows, c0, o, f16, pf);
            c0 += 16;
        }
    }
}

/* The chains of V of a decode token (attend_dec_t's second pass) with ISA's vectors: block by
 * block over all the heads. With query groups of up to two rows the heads go as nst streams
 * side by side, runs of per heads each ([0, per), [per, 2 per), ...; several runs of each
 * block read at once keep more lines in flight than one), each asking for its lines
 * ATTN_AHEAD bytes further on in its own run, a line for each line read (in the next block's
 * run once this one's end is nearer). Two streams, or up to NSMAX (at least two heads each)
 * with query groups of one row and F16 values: AVX-512 reads four (measured on Zen 5, 2 threads:
 * F16 at context 256 4-5% faster than two, at context 64 the same; F32 values 2-4% slower, so
 * they keep two); AVX2's 16 registers hold two. */
#define PV_DEC_FNS(ISA, ATTR, NSMAX, HEAD_CALL)                                                    \
    ATTR __attribute__((noinline)) static void pv_dec_##ISA(const attn_dec_t *d,                   \
                                                            const kv_src_t *s, const int f16)      \
    {                                                                                              \
        const int BS = s->BS, HS = s->HS, n = d->n;                                                \
        const size_t row = (size_t)HS * (f16 ? sizeof(uint16_t) : sizeof(float));                  \
        const int nb = (n + BS - 1) / BS;                                                          \
        const int nst = d->nkv < 2 || d->group > 2                    ? 1                          \
                        : d->group == 2 || !f16 || d->nkv < 2 * NSMAX ? 2                          \
                                                                      : NSMAX;                     \
        const int per = (d->nkv + nst - 1) / nst;                                                  \
        for (int b = 0; b < nb; b++) {                                                             \
            const int j0 = b * BS, rows = n - j0 < BS ? n - j0 : BS;                               \
            const char *vb = s->v + src_vblock(s, b);                                              \
            const char *pb = b + 1 < nb ? s->v + src_vblock(s, b + 1) : NULL;                      \
            for (int i = 0; i < per; i++) {                                                        \
                int ns = 0;                                                                        \
                while (ns < nst && ns * per + i < d->nkv)                                          \
                    ns++;                                                                          \
                const char *v[PV_STREAMS];                                                         \
                pf_run_t pf[PV_STREAMS];                                                           \
                for (int h = 0; h < ns; h++) {                                                     \
                    /* Stream h's run in a block: heads [h per, h per + len). */                   \
                    const int h1 = (h + 1) * per < d->nkv ? (h + 1) * per : d->nkv;                \
                    const size_t base = (size_t)h * per * d->hstride;                              \
                    const size_t len = (size_t)(h1 - h * per) * d->hstride;                        \
                    const size_t at = (size_t)i * d->hstride + ATTN_AHEAD;                         \
                    v[h] = vb + base + (size_t)i * d->hstride;                                     \
                    pf[h].p = vb + base + at;                                                      \
                    pf[h].split = at < len ? (int)((len - at) / row) : 0;                          \
                    pf[h].p2 = pb && (at < len || at - len < len)                                  \
                                   ? pb + base + (at < len ? 0 : at - len)                         \
                                   : NULL;                                                         \
                }                                                                                  \
                for (int r0 = 0; r0 < d->group; r0 += ATTN_ROWS) {                                 \
                    const int nr = d->group - r0 < ATTN_ROWS ? d->group - r0 : ATTN_ROWS;          \
                    const float *p[PV_STREAMS * ATTN_ROWS];                                        \
                    float *o[PV_STREAMS * ATTN_ROWS];                                              \
                    for (int h = 0; h < ns; h++)                                                   \
                        for (int r = 0; r < nr; r++) {                                             \
                            const size_t qh = (size_t)(i + h * per) * d->group + r0 + r;           \
                            p[h * ATTN_ROWS + r] = d->sc + qh * d->ld + j0;                        \
                            o[h * ATTN_ROWS + r] = d->o + qh * HS;                                 \
                        }                                                                          \
                    if (r0 > 0) /* the lines were asked for with the first rows */                 \
                        for (int h = 0; h < ns; h++)                                               \
                            pf[h].split = 0, pf[h].p2 = NULL;                                      \
                    HEAD_CALL;                                                                     \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
/* (AVX-512: NS x NR x NV accumulators, at most 16: two heads only with rows of up to two,
 * three or four with rows of one.) */
#define PV_HEAD16(NS)                                                                              \
    switch (nr) {                                                                                  \
    case 1:                                                                                        \
        pv_head16(NS, 1, p, v, row, rows, HS, o, f16, pf);                                         \
        break;                                                                                     \
    case 2:                                                                                        \
        pv_head16(NS, 2, p, v, row, rows, HS, o, f16, pf);                                         \
        break;                                                                                     \
    case 3:                                                                                        \
        pv_head16(1, 3, p, v, row, rows, HS, o, f16, pf);                                          \
        break;                                                                                     \
    default:                                                                                       \
        pv_head16(1, 4, p, v, row, rows, HS, o, f16, pf);                                          \
        break;                                                                                     \
    }
PV_DEC_FNS(avx2, VEC_AVX2, 2, pv_head8(ns, nr, p, v, row, rows, HS, o, f16, pf))
/* The AVX-512 call for ns streams (three or four only with rows of one). */
#define PV_STREAMS16                                                                               \
    switch (ns) {                                                                                  \
    case 4:                                                                                        \
        pv_head16(4, 1, p, v, row, rows, HS, o, f16, pf);                                          \
        break;                                                                                     \
    case 3:                                                                                        \
        pv_head16(3, 1, p, v, row, rows, HS, o, f16, pf);                                          \
        break;                                                                                     \
    case 2:                                                                                        \
        PV_HEAD16(2)                                                                               \
        break;                                                                                     \
    default:                                                                                       \
        PV_HEAD16(1)                                                                               \
        break;                                                                                     \
    }
PV_DEC_FNS(avx512, VEC_AVX512, PV_STREAMS, PV_STREAMS16)
#undef PV_STREAMS16
#undef PV_HEAD16
#undef PV_DEC_FNS

/* A decode token of one sequence over KV heads [0, w->nkv) of s (head i's panel and rows
 * hstride bytes after head 0's in every block): the same arithmetic as attend_rows_t for each
 * query head. The scores go a few blocks at a time over all the heads, each head's query heads
 * together as the rows of the score tiles (see score_rows_t); then the chains of V
 * (pv_dec_ISA). */
VEC_AVX2_INLINE void attend_dec_t(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s,
                                  const int f16, const int regs32)
{
    const int HS = s->HS, n = d->n, nq = d->nkv * d->group;
    const score_rows_t sr = {.s = s,
                             .hk = d->hstride,
                             .n = n,
                             .nq = d->group,
                             .nh = d->nkv,
                             .q = d->q,
                             .qs = (size_t)HS,
                             .sc = d->sc,
                             .ld = d->ld,
                             .stream = 1};
    if (regs32)
        scores_avx512(&sr);
    else
        scores_avx2(&sr);
    for (int h = 0; h < nq; h++) {
        ops->softmax(d->sc + (size_t)h * d->ld, n);
        memset(d->o + (size_t)h * HS, 0, (size_t)HS * sizeof(float));
    }
    if (regs32)
        pv_dec_avx512(d, s, f16);
    else
        pv_dec_avx2(d, s, f16);
}

VEC_AVX2 void attn_dec_avx2(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s)
{
    if (s->vf16)
        attend_dec_t(ops, d, s, 1, 0);
    else
        attend_dec_t(ops, d, s, 0, 0);
}

/* attend_rows_t for w's row count. */
VEC_AVX2_INLINE void attend_rows_any(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s,
                                     const int regs32)
{
    switch (w->nr) {
    case 1:
        attend_rows_t(ops, 1, w, s, regs32);
        break;
    case 2:
        attend_rows_t(ops, 2, w, s, regs32);
        break;
    case 3:
        attend_rows_t(ops, 3, w, s, regs32);
        break;
    default:
        attend_rows_t(ops, 4, w, s, regs32);
        break;
    }
}

VEC_AVX2 void attn_rows_avx2(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s)
{
    attend_rows_any(ops, w, s, 0);
}

VEC_AVX512 void attn_rows_avx512(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s)
{
    attend_rows_any(ops, w, s, 1);
}

VEC_AVX512 void attn_dec_avx512(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s)
{
    if (s->vf16)
        attend_dec_t(ops, d, s, 1, 1);
    else
        attend_dec_t(ops, d, s, 0, 1);
}
#endif
