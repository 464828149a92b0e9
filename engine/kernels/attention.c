/* attention.c - the paged KV cache memory and causal self-attention through block tables
 * (see attention.h). Every row, a decode token or a row of a prefill chunk, is attended by the
 * same per-row arithmetic (the order is spelled out above attend_row_generic), reading K and V
 * block by block in place; up to four rows go together to share the loads (a chunk's
 * consecutive rows, or a decode token's query heads of one KV head), and a decode token
 * walks all the KV heads of its item block by block (attend_dec_t). Grouped-query
 * attention: one work item is a sequence and a range of its KV heads and serves the NH/NKV
 * query heads that read each of them, so each KV head's keys and values are written and
 * read by one thread.
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
 * first the scores of ATTN_ROWS rows, then one KV head's keys and values widened from F16 (a
 * prefill chunk over an F16 cache). A decode token of several KV heads (attend_dec) uses
 * every row for scores. */
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

/* Index (in elements of kv->dtype) of KV head g's first row of K (v = 0) or V (v = 1) of
 * layer l in block blk: the head's BS rows of HS follow contiguously. */
static size_t kv_at(const kv_cache_t *kv, int32_t blk, int l, int v, int g)
{
    const size_t BS = (size_t)kv->block_size, HS = (size_t)kv->head_size;
    const size_t C = (size_t)kv->n_kv_head * HS;
    return (((size_t)blk * (size_t)kv->n_layer + (size_t)l) * 2 + (size_t)v) * BS * C +
           (size_t)g * BS * HS;
}

/* Where one KV head's keys and values of one layer are for a sequence: block b of its context
 * starts at k (v) + blk * bstride bytes, blk = table[b], or b itself when table is NULL (a
 * copy laid out block after block); each block holds BS rows of HS values, F16 when f16,
 * else F32. */
typedef struct kv_src {
    const char *k, *v;
    size_t bstride;
    const int32_t *table; /* (blocks) or NULL */
    int BS, HS, f16;
} kv_src_t;

static inline size_t src_block(const kv_src_t *s, int b)
{
    return (size_t)(s->table ? s->table[b] : b) * s->bstride;
}

/* The cache itself as a kv_src_t for KV head g of layer l of a sequence. */
static kv_src_t src_cache(const kv_cache_t *kv, const int32_t *table, int l, int g)
{
    const size_t es = kv_elem_size(kv->dtype);
    return (kv_src_t){.k = (const char *)kv->data + kv_at(kv, 0, l, 0, g) * es,
                      .v = (const char *)kv->data + kv_at(kv, 0, l, 1, g) * es,
                      .bstride = kv_block_bytes(kv),
                      .table = table,
                      .BS = kv->block_size,
                      .HS = kv->head_size,
                      .f16 = kv->dtype == ENG_DTYPE_F16};
}

/* Keys and values of positions [0, n) of src, widened to F32 into dst (2 n HS floats, keys
 * then values, block after block): the same values the cache holds, read once by a prefill
 * chunk's rows instead of converted by each. */
static kv_src_t src_widen(const vec_ops_t *ops, const kv_src_t *s, int n, float *dst)
{
    const int BS = s->BS, HS = s->HS;
    float *kd = dst, *vd = dst + (size_t)n * HS;
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        int rows = n - j0 < BS ? n - j0 : BS;
        ops->from_f16(kd + (size_t)j0 * HS, (const uint16_t *)(s->k + src_block(s, b)), rows * HS);
        ops->from_f16(vd + (size_t)j0 * HS, (const uint16_t *)(s->v + src_block(s, b)), rows * HS);
    }
    return (kv_src_t){.k = (const char *)kd,
                      .v = (const char *)vd,
                      .bstride = (size_t)BS * HS * sizeof(float),
                      .table = NULL,
                      .BS = BS,
                      .HS = HS,
                      .f16 = 0};
}

/* Row r of block b (keys when v = 0, values when v = 1) as w floats from column c0: in place
 * for F32, else converted into buf. */
static const float *src_row(const vec_ops_t *ops, const kv_src_t *s, int v, int b, int r, int c0,
                            int w, float *buf)
{
    const size_t es = s->f16 ? sizeof(uint16_t) : sizeof(float);
    const char *p = (v ? s->v : s->k) + src_block(s, b) + ((size_t)r * s->HS + (size_t)c0) * es;
    if (!s->f16)
        return (const float *)p;
    ops->from_f16(buf, (const uint16_t *)p, w);
    return buf;
}

/* THE ORDER OF A ROW'S SUMS. Every row of every step, a decode token or a row inside a prefill
 * chunk of any size, goes through the same per-row arithmetic, fixed by the row's position and
 * its context only:
 *   score[j] = dot(q, k_j) * (1 / sqrt(HS)) for j = 0..pos, each dot in one fixed order;
 *   p = softmax(score[0..pos]) (ops->softmax over exactly pos + 1 values);
 *   out[c] = sum over j = 0..pos of p[j] v_j[c], one chain in order of j from +0.
 * A kernel may compute several rows together (sharing the loads of K and V) and keys past a
 * row's own position (they are dropped, or multiplied by an exact 0 that leaves a chain from +0
 * unchanged for finite V), but never changes a single element's order. So a row's bits do not
 * depend on how the prompt was chunked, on the other rows of its chunk, on whether its prefix
 * was computed in this step, an earlier one or came from the prefix cache, or on the thread. */

/* One row and query head over positions [0, n) (portable): out = softmax(q . K^T / sqrt(HS)) V.
 * Each dot is vec_dot over ATTN_CHUNK columns at a time, added in order; out accumulates
 * p_j v_j in order of j (vec_axpy). scores has room for n floats. */
#define ATTN_CHUNK 64
static void attend_row_generic(const vec_ops_t *ops, float *out, const float *q, const kv_src_t *s,
                               int n, float *scores)
{
    const int BS = s->BS, HS = s->HS;
    const float scale = 1.0f / sqrtf((float)HS);
    float buf[ATTN_CHUNK];
    for (int j = 0; j < n; j++) {
        float dot = 0;
        for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
            int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
            dot += vec_dot(q + c0, src_row(ops, s, 0, j / BS, j % BS, c0, w, buf), w);
        }
        scores[j] = dot * scale;
    }
    ops->softmax(scores, n);
    memset(out, 0, (size_t)HS * sizeof(float));
    for (int j = 0; j < n; j++)
        for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
            int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
            vec_axpy(out + c0, scores[j], src_row(ops, s, 1, j / BS, j % BS, c0, w, buf), w);
        }
}

#ifdef HAVE_VEC_AVX2
#define VEC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VEC_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

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

/* The AVX2 order (HS a multiple of 16: 64 in every GPT-2, 64 or 128 in the Llama family, 16
 * in the GPT-2 test model). A dot is eight lane sums, lane i over d = i mod 8 in order of d (one
 * FMA chain each), reduced as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then scaled.
 * scoreg computes it for NK keys (4, or 2) and nr (1..ATTN_ROWS) query rows, sharing each
 * load of a key between the rows; the keys' lanes are reduced together by one horizontal-add
 * tree, which does the same additions for each key (with two keys the tree's second half
 * repeats the first); the first cnt scores of row r are stored at s[r]. Keys past cnt repeat
 * k[0]. The same code runs on AVX-512 CPUs compiled for 32 registers (attend_rows_avx512),
 * where four rows of four keys keep their 16 accumulators in registers; the arithmetic of an
 * element is the same either way. */
VEC_AVX2_INLINE void scoreg(const int NK, int nr, const float *const *q, const char *const *k,
                            int HS, int f16, __m256 scale, float *const *s, int j, int cnt)
{
    __m256 a[ATTN_ROWS][4];
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
#pragma GCC unroll 8
        for (int u = 0; u < 4; u++)
            a[r][u] = _mm256_setzero_ps();
    for (int i = 0; i < HS; i += 8) {
        __m256 x[4];
#pragma GCC unroll 8
        for (int u = 0; u < NK; u++)
            x[u] = load8(k[u], i, f16);
#pragma GCC unroll 8
        for (int r = 0; r < ATTN_ROWS; r++)
            if (r < nr) {
                __m256 qv = _mm256_loadu_ps(q[r] + i);
#pragma GCC unroll 8
                for (int u = 0; u < NK; u++)
                    a[r][u] = _mm256_fmadd_ps(qv, x[u], a[r][u]);
            }
    }
#pragma GCC unroll 8
    for (int r = 0; r < ATTN_ROWS; r++)
        if (r < nr) {
            /* hadd(hadd(a0, a1), hadd(a2, a3)) holds each key's sums of lanes 0-3 and 4-7 in
             * lanes u and u + 4; adding the halves gives the dots. */
            __m256 h01 = _mm256_hadd_ps(a[r][0], a[r][1]);
            __m256 t = _mm256_hadd_ps(h01, NK == 4 ? _mm256_hadd_ps(a[r][2], a[r][3]) : h01);
            __m128 d = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            d = _mm_mul_ps(d, _mm256_castps256_ps128(scale));
            if (cnt == 4) {
                _mm_storeu_ps(s[r] + j, d);
            } else {
                float tmp[4];
                _mm_storeu_ps(tmp, d);
                memcpy(s[r] + j, tmp, (size_t)cnt * sizeof(float));
            }
        }
}

/* Scores of keys [0, n) for nr rows (scoreg). stream: the rows read this context once (a
 * decode token): prefetch the next block's keys and this block's values. */
VEC_AVX2_INLINE void scores_rows(const int NK, int nr, const float *const *q, const kv_src_t *s,
                                 int n, float *const *sc, int f16, int stream)
{
    const int BS = s->BS, HS = s->HS;
    const size_t row = (size_t)HS * (f16 ? sizeof(uint16_t) : sizeof(float));
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)HS));
    for (int j0 = 0, b = 0; j0 < n; j0 += BS, b++) {
        const char *kb = s->k + src_block(s, b);
        int rows = n - j0 < BS ? n - j0 : BS;
        /* A decode row reads the context once: while this block is scored, the next
         * block's keys and this block's values come. (A chunk's rows read it again and again
         * from the caches; the prefetches would only cost instructions.) */
        if (stream) {
            if (j0 + BS < n)
                prefetch_span(s->k + src_block(s, b + 1), (size_t)BS * row);
            prefetch_span(s->v + src_block(s, b), (size_t)rows * row);
        }
        for (int r = 0; r < rows; r += NK) {
            int cnt = rows - r < NK ? rows - r : NK;
            const char *k[4];
#pragma GCC unroll 8
            for (int u = 0; u < NK; u++)
                k[u] = kb + (size_t)(r + (u < cnt ? u : 0)) * row;
            scoreg(NK, nr, q, k, HS, f16, scale, sc, j0 + r, cnt);
        }
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
        const char *v = s->v + src_block(s, b) + (size_t)c0 * es;
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

/* Rows of one KV head attended together: queries q[r], outputs o[r], scores sc[r] (room for
 * the largest n), each row over its own n[r] positions of context. */
typedef struct attn_rows {
    int nr;
    const float *q[ATTN_ROWS];
    float *o[ATTN_ROWS];
    float *sc[ATTN_ROWS];
    int n[ATTN_ROWS];
} attn_rows_t;

/* The rows with NR (a constant) of them. regs32: compiled for 32 vector registers (four keys
 * and four columns of eight for up to four rows); else two rows take four keys and 32
 * columns, more rows two keys and 16 columns, as 16 registers hold. stream as in
 * scores_rows. */
VEC_AVX2_INLINE void attend_rows_t(const vec_ops_t *ops, const int NR, const attn_rows_t *w,
                                   const kv_src_t *s, int f16, int stream, const int regs32)
{
    const int HS = s->HS;
    int n = 0;
    for (int r = 0; r < NR; r++)
        n = w->n[r] > n ? w->n[r] : n;
    scores_rows(NR <= 2 || regs32 ? 4 : 2, NR, w->q, s, n, w->sc, f16, stream);
    for (int r = 0; r < NR; r++) {
        ops->softmax(w->sc[r], w->n[r]);
        if (w->n[r] < n) /* exact zeros: no-ops in the chains of V */
            memset(w->sc[r] + w->n[r], 0, (size_t)(n - w->n[r]) * sizeof(float));
    }
    for (int c0 = 0; c0 < HS;) {
        int left = HS - c0;
        if (NR == 1 && left >= 64) {
            pv_pass(1, 8, w->sc, s, n, c0, w->o, f16);
            c0 += 64;
        } else if (left >= 32 && (NR <= 2 || regs32)) {
            pv_pass(NR, 4, w->sc, s, n, c0, w->o, f16);
            c0 += 32;
        } else {
            pv_pass(NR, 2, w->sc, s, n, c0, w->o, f16);
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

/* A decode token of one sequence over KV heads [0, w->nkv) of s (head i's rows hstride bytes
 * after head 0's in every block): the same arithmetic as attend_rows_t for each query head
 * (scores of keys in groups of NK, softmax, the chains of V from +0 in order of position), in
 * another order of work: block by block over all the heads, so each pass reads one run of
 * nkv x BS rows per block (K of the heads are adjacent in a block, V too) while the next
 * block's run is asked for, a line for each line read. */
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

VEC_AVX2_INLINE void attend_dec_t(const vec_ops_t *ops, const int NK, const attn_dec_t *d,
                                  const kv_src_t *s, const int f16, const int regs32)
{
    const int BS = s->BS, HS = s->HS, n = d->n, nq = d->nkv * d->group;
    const size_t row = (size_t)HS * (f16 ? sizeof(uint16_t) : sizeof(float));
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)HS));
    const int nb = (n + BS - 1) / BS;
    const size_t run = (size_t)d->nkv * d->hstride;
    for (int b = 0; b < nb; b++) {
        const int j0 = b * BS, rows = n - j0 < BS ? n - j0 : BS;
        const char *kb = s->k + src_block(s, b);
        /* The next block's keys, after the last block the first block's values. */
        const char *pb = b + 1 < nb ? s->k + src_block(s, b + 1) : s->v + src_block(s, 0);
        for (int i = 0; i < d->nkv; i++) {
            const char *kh = kb + (size_t)i * d->hstride;
            for (int r0 = 0; r0 < d->group; r0 += ATTN_ROWS) {
                const int nr = d->group - r0 < ATTN_ROWS ? d->group - r0 : ATTN_ROWS;
                const float *q[ATTN_ROWS];
                float *sc[ATTN_ROWS];
                for (int r = 0; r < nr; r++) {
                    q[r] = d->q + (size_t)(i * d->group + r0 + r) * HS;
                    sc[r] = d->sc + (size_t)(i * d->group + r0 + r) * d->ld;
                }
                for (int r = 0; r < rows; r += NK) {
                    const int cnt = rows - r < NK ? rows - r : NK;
                    const char *k[4];
#pragma GCC unroll 8
                    for (int u = 0; u < NK; u++)
                        k[u] = kh + (size_t)(r + (u < cnt ? u : 0)) * row;
                    if (r0 == 0) {
                        size_t at = (size_t)i * d->hstride + (size_t)r * row + ATTN_AHEAD;
                        prefetch_span(at < run ? kb + at : pb + (at - run), (size_t)cnt * row);
                    }
                    scoreg(NK, nr, q, k, HS, f16, scale, sc, j0 + r, cnt);
                }
            }
        }
    }
    for (int h = 0; h < nq; h++) {
        ops->softmax(d->sc + (size_t)h * d->ld, n);
        memset(d->o + (size_t)h * HS, 0, (size_t)HS * sizeof(float));
    }
    for (int b = 0; b < nb; b++) {
        const int j0 = b * BS, rows = n - j0 < BS ? n - j0 : BS;
        const char *vb = s->v + src_block(s, b);
        const char *pb = b + 1 < nb ? s->v + src_block(s, b + 1) : NULL;
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
    if (d->group <= 2) {
        if (s->f16)
            attend_dec_t(ops, 4, d, s, 1, 0);
        else
            attend_dec_t(ops, 4, d, s, 0, 0);
    } else {
        if (s->f16)
            attend_dec_t(ops, 2, d, s, 1, 0);
        else
            attend_dec_t(ops, 2, d, s, 0, 0);
    }
}

/* attend_rows_t for w's row count and s's dtype. */
VEC_AVX2_INLINE void attend_rows_any(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s,
                                     int stream, const int regs32)
{
    switch (w->nr * 2 + s->f16) {
    case 2:
        attend_rows_t(ops, 1, w, s, 0, stream, regs32);
        break;
    case 3:
        attend_rows_t(ops, 1, w, s, 1, stream, regs32);
        break;
    case 4:
        attend_rows_t(ops, 2, w, s, 0, stream, regs32);
        break;
    case 5:
        attend_rows_t(ops, 2, w, s, 1, stream, regs32);
        break;
    case 6:
        attend_rows_t(ops, 3, w, s, 0, stream, regs32);
        break;
    case 7:
        attend_rows_t(ops, 3, w, s, 1, stream, regs32);
        break;
    case 8:
        attend_rows_t(ops, 4, w, s, 0, stream, regs32);
        break;
    default:
        attend_rows_t(ops, 4, w, s, 1, stream, regs32);
        break;
    }
}

VEC_AVX2 static void attend_rows_avx2(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s,
                                      int stream)
{
    attend_rows_any(ops, w, s, stream, 0);
}

#define VEC_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma,f16c")))
VEC_AVX512 static void attend_rows_avx512(const vec_ops_t *ops, const attn_rows_t *w,
                                          const kv_src_t *s, int stream)
{
    attend_rows_any(ops, w, s, stream, 1);
}

VEC_AVX512 static void attend_dec_avx512(const vec_ops_t *ops, const attn_dec_t *d,
                                         const kv_src_t *s)
{
    if (s->f16)
        attend_dec_t(ops, 4, d, s, 1, 1);
    else
        attend_dec_t(ops, 4, d, s, 0, 1);
}
#endif

/* Copies KV head g's K and V of rows [t0, t1) to the rows' slots of layer l, in the cache's
 * dtype. */
static void kv_write_head(const vec_ops_t *ops, const kv_cache_t *kv, const attn_batch_t *b,
                          const attn_layer_t *a, int g, int t0, int t1)
{
    const int BS = kv->block_size, HS = a->HS;
    for (int t = t0; t < t1; t++) {
        int32_t blk = b->slot[t] / BS, r = b->slot[t] % BS;
        for (int v = 0; v < 2; v++) {
            const float *src = (v ? a->v : a->k) + (size_t)t * a->ldkv + (size_t)g * HS;
            size_t at = kv_at(kv, blk, a->l, v, g) + (size_t)r * HS;
            if (kv->dtype == ENG_DTYPE_F16)
                ops->to_f16((uint16_t *)kv->data + at, src, HS);
            else
                memcpy((float *)kv->data + at, src, (size_t)HS * sizeof(float));
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
 * AVX2 up to ATTN_ROWS rows go together, sharing each load of K and V: a decode token's query
 * heads of this KV head, or consecutive rows of a prefill chunk of one query head; a prefill
 * chunk over an F16 cache reads the context widened to F32 once. Every row keeps its own
 * order (see above). */
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
        if (src.f16 && t1 - t0 > 1)
            src = src_widen(j->ops, &src, n, wide);
        const int decode = t1 - t0 == 1;
        attn_rows_t w;
        for (int r = 0; r < ATTN_ROWS; r++)
            w.sc[r] = scratch + (size_t)r * ld;
        /* Rows in order of (head, token): a decode groups heads, a chunk groups tokens. */
        for (int h = g * group, t = t0; h < (g + 1) * group;) {
            w.nr = 0;
            while (w.nr < ATTN_ROWS && h < (g + 1) * group) {
                w.q[w.nr] = a->q + (size_t)t * a->ldq + (size_t)h * HS;
                w.o[w.nr] = a->out + (size_t)t * a->ldo + (size_t)h * HS;
                w.n[w.nr++] = b->pos[t] + 1;
                if (++t == t1) {
                    t = t0;
                    h++;
                    if (!decode)
                        break; /* a chunk's groups stay within one head */
                }
            }
            if (j->avx2 == 2)
                attend_rows_avx512(j->ops, &w, &src, decode);
            else
                attend_rows_avx2(j->ops, &w, &src, decode);
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
