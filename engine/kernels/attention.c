/* attention.c - the paged KV cache memory and causal self-attention through block tables
 * (see attention.h). Every row, a decode token or a row of a prefill chunk, is attended by the
 * same per-row arithmetic (the order is spelled out above attend_row_generic), reading K and V
 * block by block in place. K is stored transposed, a panel of HS rows of BS keys per block and
 * KV head, so the scores of a block are broadcast-FMAs of the query against panel rows, one
 * chain per score over the head dimension with the keys side by side in vector lanes; several
 * rows go through the same tiles (a chunk's consecutive rows, or a decode token's query heads
 * of one KV head), sharing the loads of K and V. Grouped-query attention: one work item is a
 * sequence and a range of its KV heads and serves the NH/NKV query heads that read each of
 * them, so each KV head's keys and values are written and read by one thread.
 */
#include "engine/kernels/attention.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/engine.h"
#include "engine/kernels/vec.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_VEC_AVX2 1
#endif

static size_t kv_elem_size(int dtype)
{
    return dtype == ENG_DTYPE_F16 ? sizeof(uint16_t) : sizeof(float);
}

size_t kv_cache_block_bytes(int n_layer, int n_kv_head, int head_size, int block_size, int dtype)
{
    return (size_t)n_layer * 2 * (size_t)block_size * (size_t)n_kv_head * (size_t)head_size *
           kv_elem_size(dtype);
}

static size_t kv_block_bytes(const kv_cache_t *kv)
{
    return kv_cache_block_bytes(kv->n_layer, kv->n_kv_head, kv->head_size, kv->block_size,
                                kv->dtype);
}

int kv_cache_init(kv_cache_t *kv, int n_layer, int n_kv_head, int head_size, int block_size,
                  int num_blocks, int dtype)
{
    memset(kv, 0, sizeof(*kv));
    /* Slots (block * BS + row) are int32 in the batch. */
    if (n_layer < 1 || n_kv_head < 1 || head_size < 1 || block_size < 1 || block_size > 4096 ||
        num_blocks < 1 || (int64_t)num_blocks * block_size > INT32_MAX ||
        (dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16))
        return -EINVAL;
    size_t per_block = kv_cache_block_bytes(n_layer, n_kv_head, head_size, block_size, dtype);
    if ((size_t)num_blocks > SIZE_MAX / per_block)
        return -ENOMEM;
    /* Fresh anonymous pages, mapped lazily (only used blocks become RSS), on a 2 MiB boundary
     * and advised as huge pages: decode attention reads a few KiB from each of many blocks
     * spread over the pool, each a new 4 KiB page to the TLB (measured: attention went from
     * 0.18-0.22 to 0.17-0.18 of the matrix tiles' time at context 128; a small gain). The
     * mapping is cut to exactly the aligned pool, so kv_cache_free unmaps it whole. */
    const size_t huge = (size_t)2 << 20, bytes = (size_t)num_blocks * per_block;
    if (bytes > SIZE_MAX - huge)
        return -ENOMEM;
    char *map =
        mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return -ENOMEM;
    char *data = (char *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
    if (data > map)
        munmap(map, (size_t)(data - map));
    if (map + bytes + huge > data + bytes)
        munmap(data + bytes, (size_t)(map + bytes + huge - (data + bytes)));
#ifdef MADV_HUGEPAGE
    if (bytes >= huge)
        madvise(data, bytes / huge * huge, MADV_HUGEPAGE); /* advice only */
#endif
    kv->data = data;
    kv->num_blocks = num_blocks;
    kv->block_size = block_size;
    kv->n_layer = n_layer;
    kv->n_kv_head = n_kv_head;
    kv->head_size = head_size;
    kv->dtype = dtype;
    return 0;
}

void kv_cache_copy_block(kv_cache_t *kv, int32_t dst, int32_t src)
{
    size_t bytes = kv_block_bytes(kv);
    memcpy((char *)kv->data + (size_t)dst * bytes, (const char *)kv->data + (size_t)src * bytes,
           bytes);
}

void kv_cache_free(kv_cache_t *kv)
{
    if (!kv)
        return;
    if (kv->data)
        munmap(kv->data, (size_t)kv->num_blocks * kv_block_bytes(kv));
    memset(kv, 0, sizeof(*kv));
}

/* Rows attended together, sharing each load of K and V (the AVX2 code). */
#define ATTN_ROWS 4

/* A thread's scratch is scratch_rows(HS) rows of max_ctx floats, scratch_ld(max_ctx) apart:
 * first the scores of ATTN_ROWS rows, then one KV head's values and keys widened from F16 (a
 * prefill chunk over an F16 cache). A decode token of several KV heads (attend_dec) uses every row
 * for scores. */
static size_t scratch_ld(int max_ctx)
{
    return ((size_t)max_ctx + 15) / 16 * 16;
}

static int scratch_rows(int HS)
{
    return ATTN_ROWS + 2 * HS;
}

size_t attn_scratch_floats(int HS, int max_ctx)
{
    return (size_t)scratch_rows(HS) * scratch_ld(max_ctx);
}

/* Index (in elements of kv->dtype) of KV head g's K (v = 0) or V (v = 1) of layer l in block
 * blk: BS x HS values each. K is a panel, transposed: row d holds dimension d of the block's BS
 * keys (element d * BS + r for key r), so the scores of a row against a block are HS
 * broadcast-FMAs of q[d] against row d. V keeps a row per position (element r * HS + c). */
static size_t kv_at(const kv_cache_t *kv, int32_t blk, int l, int v, int g)
{
    const size_t BS = (size_t)kv->block_size, HS = (size_t)kv->head_size;
    const size_t C = (size_t)kv->n_kv_head * HS;
    return (((size_t)blk * (size_t)kv->n_layer + (size_t)l) * 2 + (size_t)v) * BS * C +
           (size_t)g * BS * HS;
}

/* Where one KV head's keys and values of one layer are for a sequence: block b of its keys
 * starts at k + ktable[b] * kbstride bytes (a panel of HS rows of kbs keys, F16 when f16, else
 * F32), block b of its values at v + vtable[b] * vbstride (BS rows of HS values, F16 when
 * vf16); b itself when the table is NULL (a widened copy laid out block after block, its key
 * panels of 16 keys). */
typedef struct kv_src {
    const char *k, *v;
    size_t kbstride, vbstride;
    const int32_t *ktable, *vtable; /* (blocks) or NULL */
    int BS, kbs, HS, f16, vf16;
} kv_src_t;

static inline size_t src_kblock(const kv_src_t *s, int b)
{
    return (size_t)(s->ktable ? s->ktable[b] : b) * s->kbstride;
}

static inline size_t src_vblock(const kv_src_t *s, int b)
{
    return (size_t)(s->vtable ? s->vtable[b] : b) * s->vbstride;
}

/* The cache itself as a kv_src_t for KV head g of layer l of a sequence. */
static kv_src_t src_cache(const kv_cache_t *kv, const int32_t *table, int l, int g)
{
    const size_t es = kv_elem_size(kv->dtype);
    const int f16 = kv->dtype == ENG_DTYPE_F16;
    return (kv_src_t){.k = (const char *)kv->data + kv_at(kv, 0, l, 0, g) * es,
                      .v = (const char *)kv->data + kv_at(kv, 0, l, 1, g) * es,
                      .kbstride = kv_block_bytes(kv),
                      .vbstride = kv_block_bytes(kv),
                      .ktable = table,
                      .vtable = table,
                      .BS = kv->block_size,
                      .kbs = kv->block_size,
                      .HS = kv->head_size,
                      .f16 = f16,
                      .vf16 = f16};
}

/* The values of positions [0, n) of src widened to F32 into dst (n HS floats, block after
 * block): the same values the cache holds, read once by a prefill chunk's rows instead of
 * converted by each. (Keys are converted as they are loaded: a panel load serves all the rows
 * of a tile.) */
static void src_widen_v(const vec_ops_t *ops, kv_src_t *s, int n, float *dst)
{
    const int BS = s->BS, HS = s->HS;
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        int rows = n - j0 < BS ? n - j0 : BS;
        ops->from_f16(dst + (size_t)j0 * HS, (const uint16_t *)(s->v + src_vblock(s, b)),
                      rows * HS);
    }
    s->v = (const char *)dst;
    s->vbstride = (size_t)BS * HS * sizeof(float);
    s->vtable = NULL;
    s->vf16 = 0;
}

/* The keys of positions [0, n) of src widened to F32 into dst (HS rows of 16 floats per 16
 * positions, the panels as they are when BS is a multiple of 16): the same values, converted
 * once for all the rows of a chunk. */
static void src_widen_k(const vec_ops_t *ops, kv_src_t *s, int n, float *dst)
{
    const int BS = s->kbs, HS = s->HS;
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        const uint16_t *kb = (const uint16_t *)(s->k + src_kblock(s, b));
        for (int c0 = 0; c0 < BS && j0 + c0 < n; c0 += 16) {
            float *o = dst + (size_t)(j0 + c0) * HS;
            if (BS == 16)
                ops->from_f16(o, kb, 16 * HS);
            else
                for (int d = 0; d < HS; d++)
                    ops->from_f16(o + (size_t)d * 16, kb + (size_t)d * BS + c0, 16);
        }
    }
    s->k = (const char *)dst;
    s->kbstride = (size_t)16 * HS * sizeof(float);
    s->ktable = NULL;
    s->kbs = 16;
    s->f16 = 0;
}

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
#define ATTN_CHUNK 64
static void attend_row_generic(const vec_ops_t *ops, float *out, const float *q, const kv_src_t *s,
                               int n, float *scores)
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
#define VEC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VEC_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define VEC_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))
#define VEC_AVX512_INLINE                                                                          \
    static inline __attribute__((always_inline, target("avx512f,avx512vl,avx2,fma,f16c")))

/* Eight values of a row from element i on, as floats (f16: the row holds F16). */
VEC_AVX2_INLINE __m256 load8(const char *row, int i, int f16)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

/* Asks for the lines of bytes [p, p + n) to be brought to the caches. */
VEC_AVX2_INLINE void prefetch_span(const void *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* SCORE TILES. A group is up to 16 consecutive keys of one block's panel: its row d is 16
 * values at k + d * kst bytes (kst = BS values), the group's first key at position j, cnt of
 * its keys wanted (cnt < 16 at the end of a block or of the context: the other lanes read on
 * into the panel's next row, or past the panel's last row into the next KV head's panel or
 * the block's values, memory of the same block, and are dropped; cnt = 0: a group repeated to
 * fill a tile, nothing stored). A tile is R rows (row r's query at q + r qs, its scores at
 * sc + r ld) against NG groups: R x NG x 16 chains, each from +0 over d in order, one FMA per d;
 * then scaled by 1 / sqrt(HS). pf (or NULL): the next tile's groups, a line of them asked for
 * per row of the panels read. */
typedef struct score_tile {
    const float *q;
    size_t qs;
    float *sc;
    size_t ld;
    size_t kst;
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
        if (pf)
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++)
                if (pf[g])
                    _mm_prefetch(pf[g] + at, _MM_HINT_T0);
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

/* Sixteen values from p on as floats (f16: p holds F16). */
VEC_AVX512_INLINE __m512 load16(const char *p, int f16)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_loadu_ps((const float *)p);
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
        if (pf)
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++)
                if (pf[g])
                    _mm_prefetch(pf[g] + at, _MM_HINT_T0);
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
 * head 0's panels:
 * k, j, cnt as score_tile_t describes (groups past ng repeat the first, cnt 0); pf: the next
 * tile's groups when stream, else NULL. */
static inline void tile_groups(const kv_src_t *s, size_t es, int n, int ng, int g0, int NG,
                               int stream, const char **k, const char **pf, int *j, int *cnt)
{
    const int BS = s->kbs, gpb = (BS + 15) / 16;
    for (int g = 0; g < NG + NG; g++) {
        /* (No division for blocks of up to 16 keys: this runs once per tile.) */
        const int gi = g0 + g, b = gpb == 1 ? gi : gi / gpb, c0 = gpb == 1 ? 0 : gi % gpb * 16;
        const char *p = gi < ng ? s->k + src_kblock(s, b) + (size_t)c0 * es : NULL;
        if (g >= NG) {
            pf[g - NG] = stream ? p : NULL;
        } else if (p) {
            const int left = BS - c0 < n - b * BS ? BS - c0 : n - b * BS;
            k[g] = p;
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

/* The scores of nq rows of each of nh KV heads (row r of head i: its query at
 * q + (i nq + r) qs, its scores into sc + (i nq + r) ld) against keys [0, n) of s (head i's
 * panels hk bytes after head 0's in each block): tiles of up to RM rows by NG groups, the
 * groups [g0, g0 + NG) of every head before the next NG, so a decode token reads the keys of
 * its heads block by block, each block's heads one run. stream: the rows read this context
 * once (a decode token): ask for the next groups' keys of a head while a tile is computed. */
typedef struct score_rows {
    const kv_src_t *s;
    size_t hk;
    int n, nq, nh;
    const float *q;
    size_t qs;
    float *sc;
    size_t ld;
    int stream;
} score_rows_t;

VEC_AVX2_INLINE void scores_t_avx2(const int RM, const int NG, const int f16, const score_rows_t *w)
{
    const kv_src_t *s = w->s;
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    const int ng = score_groups(s->kbs, w->n);
    score_tile_t t = {.qs = w->qs,
                      .ld = w->ld,
                      .kst = (size_t)s->kbs * es,
                      .HS = s->HS,
                      .scale = 1.0f / sqrtf((float)s->HS)};
    for (int g0 = 0; g0 < ng; g0 += NG) {
        const char *k0[8] = {0}, *pf0[8] = {0};
        int j[8] = {0}, cnt[8] = {0};
        tile_groups(s, es, w->n, ng, g0, NG, w->stream, k0, pf0, j, cnt);
        for (int i = 0; i < w->nh; i++) {
            const char *k[8], *pf[8];
            for (int g = 0; g < NG; g++) {
                k[g] = k0[g] + (size_t)i * w->hk;
                pf[g] = pf0[g] ? pf0[g] + (size_t)i * w->hk : NULL;
            }
            for (int r0 = 0; r0 < w->nq; r0 += RM) {
                const int R = w->nq - r0 < RM ? w->nq - r0 : RM;
                const char *const *p = w->stream && r0 == 0 ? pf : NULL;
                t.q = w->q + (size_t)(i * w->nq + r0) * w->qs;
                t.sc = w->sc + (size_t)(i * w->nq + r0) * w->ld;
                if (R == RM)
                    tile_avx2(RM, NG, &t, f16, k, p, j, cnt);
                else if (R == 1)
                    tile_avx2(1, NG, &t, f16, k, p, j, cnt);
                else if (RM > 2 && R == 2)
                    tile_avx2(2, NG, &t, f16, k, p, j, cnt);
                else if (RM > 3)
                    tile_avx2(3, NG, &t, f16, k, p, j, cnt);
            }
        }
    }
}

VEC_AVX512_INLINE void scores_t_avx512(const int RM, const int NG, const int f16,
                                       const score_rows_t *w)
{
    const kv_src_t *s = w->s;
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    const int ng = score_groups(s->kbs, w->n);
    score_tile_t t = {.qs = w->qs,
                      .ld = w->ld,
                      .kst = (size_t)s->kbs * es,
                      .HS = s->HS,
                      .scale = 1.0f / sqrtf((float)s->HS)};
    for (int g0 = 0; g0 < ng; g0 += NG) {
        const char *k0[8] = {0}, *pf0[8] = {0};
        int j[8] = {0}, cnt[8] = {0};
        tile_groups(s, es, w->n, ng, g0, NG, w->stream, k0, pf0, j, cnt);
        for (int i = 0; i < w->nh; i++) {
            const char *k[8], *pf[8];
            for (int g = 0; g < NG; g++) {
                k[g] = k0[g] + (size_t)i * w->hk;
                pf[g] = pf0[g] ? pf0[g] + (size_t)i * w->hk : NULL;
            }
            for (int r0 = 0; r0 < w->nq; r0 += RM) {
                const int R = w->nq - r0 < RM ? w->nq - r0 : RM;
                const char *const *p = w->stream && r0 == 0 ? pf : NULL;
                t.q = w->q + (size_t)(i * w->nq + r0) * w->qs;
                t.sc = w->sc + (size_t)(i * w->nq + r0) * w->ld;
                if (R == RM)
                    tile_avx512(RM, NG, &t, f16, k, p, j, cnt);
                else if (R == 1)
                    tile_avx512(1, NG, &t, f16, k, p, j, cnt);
                else if (RM > 2 && R == 2)
                    tile_avx512(2, NG, &t, f16, k, p, j, cnt);
                else if (RM > 3)
                    tile_avx512(3, NG, &t, f16, k, p, j, cnt);
            }
        }
    }
}

/* The tile shapes. AVX2 (16 registers): 2 x R x NG accumulators of eight lanes, at most 12:
 * one row takes four groups, two rows three, three rows two, four rows one. AVX-512 (32
 * registers, a group in one register): one row takes eight groups (the loads, not the FMAs,
 * bound it), two six, three five, four four. */
VEC_AVX2 __attribute__((noinline)) static void scores_avx2(const score_rows_t *w)
{
    const int RM = w->nq < 4 ? w->nq : 4;
    switch (RM * 2 + w->s->f16) {
    case 2:
        scores_t_avx2(1, 4, 0, w);
        break;
    case 3:
        scores_t_avx2(1, 4, 1, w);
        break;
    case 4:
        scores_t_avx2(2, 3, 0, w);
        break;
    case 5:
        scores_t_avx2(2, 3, 1, w);
        break;
    case 6:
        scores_t_avx2(3, 2, 0, w);
        break;
    case 7:
        scores_t_avx2(3, 2, 1, w);
        break;
    case 8:
        scores_t_avx2(4, 1, 0, w);
        break;
    default:
        scores_t_avx2(4, 1, 1, w);
        break;
    }
}

VEC_AVX512 __attribute__((noinline)) static void scores_avx512(const score_rows_t *w)
{
    const int RM = w->nq < 4 ? w->nq : 4;
    switch (RM * 2 + w->s->f16) {
    case 2:
        scores_t_avx512(1, 8, 0, w);
        break;
    case 3:
        scores_t_avx512(1, 8, 1, w);
        break;
    case 4:
        scores_t_avx512(2, 6, 0, w);
        break;
    case 5:
        scores_t_avx512(2, 6, 1, w);
        break;
    case 6:
        scores_t_avx512(3, 5, 0, w);
        break;
    case 7:
        scores_t_avx512(3, 5, 1, w);
        break;
    case 8:
        scores_t_avx512(4, 4, 0, w);
        break;
    default:
        scores_t_avx512(4, 4, 1, w);
        break;
    }
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

/* Consecutive rows of a prefill chunk of one query head, attended together: row r's query at
 * q + r qs, its output at o + r os, its scores at sc + r ld (room for the largest n), its
 * context n[r] positions. */
typedef struct attn_rows {
    int nr;
    const float *q;
    float *o, *sc;
    size_t qs, os, ld;
    int n[ATTN_ROWS];
} attn_rows_t;

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

/* Columns [c0, c0 + 8 nv) of o[r] += sum_j p[r][j] v_j over the `rows` rows of one block of V
 * (v: its first row, `row` bytes apart), nr rows sharing each load: the chains of pv_pass
 * carried from block to block through o (a float stored and loaded back is the same float).
 * pf: lines to ask for meanwhile (the next block's), one row of them per row of V read. */
VEC_AVX2_INLINE void pv_block(int nr, int nv, const float *const *p, const char *v, size_t row,
                              int rows, int c0, float *const *o, int f16, const char *pf, int split,
                              const char *pf2)
{
    __m256 a[ATTN_ROWS][8];
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++)
            a[r][u] = r < nr && u < nv ? _mm256_loadu_ps(o[r] + c0 + 8 * u) : _mm256_setzero_ps();
    for (int jr = 0; jr < rows; jr++, v += row) {
        if (jr < split)
            prefetch_span(pf + (size_t)jr * row, row);
        else if (pf2)
            prefetch_span(pf2 + (size_t)(jr - split) * row, row);
        __m256 x[8];
#pragma GCC unroll 8
        for (int u = 0; u < nv; u++)
            x[u] = load8(v, c0 + 8 * u, f16);
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_ROWS; r++)
            if (r < nr) {
                __m256 pr = _mm256_broadcast_ss(p[r] + jr);
#pragma GCC unroll 8
                for (int u = 0; u < nv; u++)
                    a[r][u] = _mm256_fmadd_ps(pr, x[u], a[r][u]);
            }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
        if (r < nr)
#pragma GCC unroll 8
            for (int u = 0; u < nv; u++)
                _mm256_storeu_ps(o[r] + c0 + 8 * u, a[r][u]);
}

/* A decode token of one sequence over KV heads [0, w->nkv) of s (head i's panel and rows
 * hstride bytes after head 0's in every block): the same arithmetic as attend_rows_t for each
 * query head. The scores go a few blocks at a time over all the heads, each head's query heads
 * together as the rows of the score tiles (see score_rows_t); the chains of V go block by
 * block over all the heads, so each pass reads one run of nkv x BS rows per
 * block (V of the heads are adjacent in a block) while the next block's run is asked for, a
 * line for each line read. */
#ifndef ATTN_AHEAD
#define ATTN_AHEAD 4096
#endif
typedef struct attn_dec {
    int nkv, group, n;
    size_t hstride;
    const float *q; /* query head i * group + r at q + (i * group + r) * HS */
    float *o;       /* its output likewise */
    float *sc;      /* its scores at sc + (i * group + r) * ld */
    size_t ld;
} attn_dec_t;

VEC_AVX2_INLINE void attend_dec_t(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s,
                                  const int f16, const int regs32)
{
    const int BS = s->BS, HS = s->HS, n = d->n, nq = d->nkv * d->group;
    const size_t row = (size_t)HS * (f16 ? sizeof(uint16_t) : sizeof(float));
    const int nb = (n + BS - 1) / BS;
    const size_t run = (size_t)d->nkv * d->hstride;
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
    for (int b = 0; b < nb; b++) {
        const int j0 = b * BS, rows = n - j0 < BS ? n - j0 : BS;
        const char *vb = s->v + src_vblock(s, b);
        const char *pb = b + 1 < nb ? s->v + src_vblock(s, b + 1) : NULL;
        for (int i = 0; i < d->nkv; i++) {
            const char *vh = vb + (size_t)i * d->hstride;
            /* Rows [0, split) of the lines ATTN_AHEAD bytes ahead are this block's, the
             * rest the next block's. */
            const size_t at = (size_t)i * d->hstride + ATTN_AHEAD;
            const int split = at < run ? (int)((run - at) / row) : 0;
            const char *ph = vb + at, *ph2 = pb ? pb + (at < run ? 0 : at - run) : NULL;
            for (int r0 = 0; r0 < d->group; r0 += ATTN_ROWS) {
                const int nr = d->group - r0 < ATTN_ROWS ? d->group - r0 : ATTN_ROWS;
                const float *p[ATTN_ROWS];
                float *o[ATTN_ROWS];
                for (int r = 0; r < nr; r++) {
                    p[r] = d->sc + (size_t)(i * d->group + r0 + r) * d->ld + j0;
                    o[r] = d->o + (size_t)(i * d->group + r0 + r) * HS;
                }
                for (int c0 = 0; c0 < HS;) {
                    const int left = HS - c0;
                    const int first = r0 == 0 && c0 == 0;
                    if (nr == 1 && left >= 64) {
                        pv_block(1, 8, p, vh, row, rows, c0, o, f16, ph, first ? split : 0,
                                 first ? ph2 : NULL);
                        c0 += 64;
                    } else if (left >= 32 && (nr <= 2 || regs32)) {
                        pv_block(nr, 4, p, vh, row, rows, c0, o, f16, ph, first ? split : 0,
                                 first ? ph2 : NULL);
                        c0 += 32;
                    } else {
                        pv_block(nr, 2, p, vh, row, rows, c0, o, f16, ph, first ? split : 0,
                                 first ? ph2 : NULL);
                        c0 += 16;
                    }
                }
            }
        }
    }
}

VEC_AVX2 static void attend_dec_avx2(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s)
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

VEC_AVX2 static void attend_rows_avx2(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s)
{
    attend_rows_any(ops, w, s, 0);
}

VEC_AVX512 static void attend_rows_avx512(const vec_ops_t *ops, const attn_rows_t *w,
                                          const kv_src_t *s)
{
    attend_rows_any(ops, w, s, 1);
}

VEC_AVX512 static void attend_dec_avx512(const vec_ops_t *ops, const attn_dec_t *d,
                                         const kv_src_t *s)
{
    if (s->vf16)
        attend_dec_t(ops, d, s, 1, 1);
    else
        attend_dec_t(ops, d, s, 0, 1);
}
#endif

/* Copies KV head g's K and V of rows [t0, t1) to the rows' slots of layer l, in the cache's
 * dtype: a key scattered into column r of its block's panel, a value as row r. */
static void kv_write_head(const vec_ops_t *ops, const kv_cache_t *kv, const attn_batch_t *b,
                          const attn_layer_t *a, int g, int t0, int t1)
{
    const int BS = kv->block_size, HS = a->HS;
    for (int t = t0; t < t1; t++) {
        const int32_t blk = b->slot[t] / BS, r = b->slot[t] % BS;
        const float *k = a->k + (size_t)t * a->ldkv + (size_t)g * HS;
        const float *v = a->v + (size_t)t * a->ldkv + (size_t)g * HS;
        const size_t kat = kv_at(kv, blk, a->l, 0, g) + (size_t)r;
        const size_t vat = kv_at(kv, blk, a->l, 1, g) + (size_t)r * HS;
        if (kv->dtype == ENG_DTYPE_F16) {
            uint16_t *kd = (uint16_t *)kv->data + kat, h[ATTN_CHUNK];
            for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
                const int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
                ops->to_f16(h, k + c0, w);
                for (int c = 0; c < w; c++)
                    kd[(size_t)(c0 + c) * BS] = h[c];
            }
            ops->to_f16((uint16_t *)kv->data + vat, v, HS);
        } else {
            float *kd = (float *)kv->data + kat;
            for (int c = 0; c < HS; c++)
                kd[(size_t)c * BS] = k[c];
            memcpy((float *)kv->data + vat, v, (size_t)HS * sizeof(float));
        }
    }
}

/* Attention of one step on the compute pool: the work items are (sequence, range of hg KV
 * heads), sequence-major (sequences with several rows first, up to ATTN_MAX_ORDER
 * sequences), spread over at most ATTN_MAX_PARTS parts of consecutive items. Each item is
 * computed whole by one thread with that thread's scratch, so the result does not depend on
 * the thread count. */
#define ATTN_MAX_PARTS 1024
#define ATTN_MAX_ORDER 1024

typedef struct attn_job {
    const kv_cache_t *kv;
    const attn_batch_t *b;
    const attn_layer_t *a;
    const vec_ops_t *ops;
    int avx2; /* the AVX2 rows (HS a multiple of 16 and a kernel other than the portable one):
               * 1, or 2 compiled for AVX-512's 32 registers */
    int items;
    int hg;               /* KV heads per item: an item is (sequence, heads [k hg, (k + 1) hg)) */
    const int32_t *order; /* the sequences in the order their items are taken, or NULL */
} attn_job_t;

/* Rows [t0, t1) of sequence s (consecutive positions), KV head g and its query heads. With
 * AVX2 up to ATTN_ROWS consecutive rows of one query head go together as the rows of the score
 * tiles and the chains of V; a chunk over an F16 cache reads the values (and keys) of its
 * context widened to F32 once. Every row keeps its own order (see above). */
static void attend_seq(const attn_job_t *j, int s, int g, float *scratch)
{
    const attn_batch_t *b = j->b;
    const attn_layer_t *a = j->a;
    const int HS = a->HS, group = a->NH / a->NKV;
    const int t0 = b->seq_start[s], t1 = b->seq_start[s + 1], n = b->ctx_len[s];
    const size_t ld = scratch_ld(a->max_ctx);
    float *wide = scratch + ATTN_ROWS * ld;
    kv_src_t src = src_cache(j->kv, b->block_table[s], a->l, g);
#ifdef HAVE_VEC_AVX2
    if (j->avx2) {
        /* Keys widened when their panels are whole groups of 16 (else converted as loaded). */
        if (src.f16 && src.BS % 16 == 0)
            src_widen_k(j->ops, &src, n, wide + (size_t)HS * ld);
        if (src.vf16)
            src_widen_v(j->ops, &src, n, wide);
        attn_rows_t w = {.sc = scratch, .ld = ld, .qs = a->ldq, .os = a->ldo};
        for (int h = g * group; h < (g + 1) * group; h++)
            for (int t = t0; t < t1; t += ATTN_ROWS) {
                w.nr = t1 - t < ATTN_ROWS ? t1 - t : ATTN_ROWS;
                w.q = a->q + (size_t)t * a->ldq + (size_t)h * HS;
                w.o = a->out + (size_t)t * a->ldo + (size_t)h * HS;
                for (int r = 0; r < w.nr; r++)
                    w.n[r] = b->pos[t + r] + 1;
                if (j->avx2 == 2)
                    attend_rows_avx512(j->ops, &w, &src);
                else
                    attend_rows_avx2(j->ops, &w, &src);
            }
        return;
    }
#endif
    (void)wide;
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int t = t0; t < t1; t++)
            attend_row_generic(j->ops, a->out + (size_t)t * a->ldo + (size_t)h * HS,
                               a->q + (size_t)t * a->ldq + (size_t)h * HS, &src, b->pos[t] + 1,
                               scratch);
}

/* The decode token of sequence s (one row) for KV heads [g0, g1) with the AVX2 code, all the
 * heads together (attend_dec_t). */
#ifdef HAVE_VEC_AVX2
static void attend_dec(const attn_job_t *j, int s, int g0, int g1, float *scratch)
{
    const attn_batch_t *b = j->b;
    const attn_layer_t *a = j->a;
    const int HS = a->HS, group = a->NH / a->NKV, t = b->seq_start[s];
    kv_src_t src = src_cache(j->kv, b->block_table[s], a->l, g0);
    attn_dec_t d = {.nkv = g1 - g0,
                    .group = group,
                    .n = b->pos[t] + 1,
                    .hstride = (size_t)src.BS * HS * kv_elem_size(j->kv->dtype),
                    .q = a->q + (size_t)t * a->ldq + (size_t)g0 * group * HS,
                    .o = a->out + (size_t)t * a->ldo + (size_t)g0 * group * HS,
                    .sc = scratch,
                    .ld = scratch_ld(a->max_ctx)};
    if (j->avx2 == 2)
        attend_dec_avx512(j->ops, &d, &src);
    else
        attend_dec_avx2(j->ops, &d, &src);
}
#endif

static void attn_part(void *arg, int part, int parts, int thread)
{
    const attn_job_t *j = arg;
    const attn_batch_t *b = j->b;
    const attn_layer_t *a = j->a;
    const int per_seq = (a->NKV + j->hg - 1) / j->hg;
    float *scratch = a->scratch + (size_t)thread * a->scratch_floats;
    int i0, i1;
    pool_split(j->items, parts, part, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        int s = j->order ? j->order[i / per_seq] : i / per_seq, g0 = i % per_seq * j->hg;
        int g1 = g0 + j->hg < a->NKV ? g0 + j->hg : a->NKV;
        int t = b->seq_start[s], rows = b->seq_start[s + 1] - t;
        /* This item is the only reader of KV heads [g0, g1) of sequence s's K/V in this step
         * (a block being written belongs to one sequence), so it writes that slice of its own
         * rows itself: no separate pass, no barrier before attention. */
        for (int g = g0; g < g1; g++)
            kv_write_head(j->ops, j->kv, b, a, g, t, t + rows);
#ifdef HAVE_VEC_AVX2
        if (rows == 1 && j->avx2) {
            attend_dec(j, s, g0, g1, scratch);
            continue;
        }
#endif
        if (rows > 0)
            for (int g = g0; g < g1; g++)
                attend_seq(j, s, g, scratch);
    }
}

void attn_forward(mm_t *mm, const kv_cache_t *kv, const attn_batch_t *b, const attn_layer_t *a)
{
    const int kernel = mm_get_kernel(mm);
    attn_job_t j = {
        .kv = kv, .b = b, .a = a, .ops = vec_ops_get(kernel), .avx2 = 0, .items = b->B * a->NKV};
#ifdef HAVE_VEC_AVX2
    /* 2: AVX-512 CPUs, the same code compiled for 32 registers. */
    j.avx2 = kernel == MM_KERNEL_GENERIC || a->HS % 16 ? 0 : kernel == MM_KERNEL_AVX2 ? 1 : 2;
#endif
    pool_t *pool = mm_pool(mm);
    /* With sequences enough to keep every thread busy, an item takes several KV heads of a
     * sequence (all of them with 16 sequences or more on two threads): a decode token then
     * reads each block's keys (values) of its heads as one run. Its scores need room in the
     * scratch: scratch_rows(HS) rows of max_ctx floats. A lone prompt keeps one KV head per
     * item, so its heads spread over the threads. Sequences with several rows (prompt chunks)
     * weigh more than a decode token's: their items are taken first, so no thread is left
     * with one at the end while the others wait. The order of the items changes no row's
     * arithmetic. */
    j.hg = 1;
    int32_t order[ATTN_MAX_ORDER];
    if (j.avx2) {
        const int group = a->NH / a->NKV, room = scratch_rows(a->HS) / group;
        const int want = 8 * pool_threads(pool);
        int per_seq = 1;
        while (per_seq < a->NKV &&
               (b->B * per_seq < want || (a->NKV + per_seq - 1) / per_seq > room))
            per_seq++;
        j.hg = (a->NKV + per_seq - 1) / per_seq;
        j.items = b->B * ((a->NKV + j.hg - 1) / j.hg);
        if (j.hg > 1 && b->T > b->B && b->B <= ATTN_MAX_ORDER) {
            int n = 0;
            for (int s = 0; s < b->B; s++)
                if (b->seq_start[s + 1] - b->seq_start[s] > 1)
                    order[n++] = s;
            for (int s = 0; s < b->B; s++)
                if (b->seq_start[s + 1] - b->seq_start[s] <= 1)
                    order[n++] = s;
            j.order = order;
        }
    }
    int parts = j.items < ATTN_MAX_PARTS ? j.items : ATTN_MAX_PARTS;
    /* Scratch exists for a->threads threads (the model keeps it in step with the pool). */
    pool_run_parts_thread(a->threads >= pool_threads(pool) ? pool : NULL, parts, attn_part, &j);
}
