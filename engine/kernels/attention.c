/* attention.c - the paged KV cache memory and causal self-attention through block tables
 * (see attention.h). A decode row reads the blocks in place (attend_row); a prefill chunk
 * packs its context's K and V once as matmul panels and runs two tile products per tile of
 * rows (attend_chunk). Grouped-query attention: one work item is a (sequence, KV head)
 * pair and serves the NH/NKV query heads that read that KV head, so each KV head's keys and
 * values are written, packed and read by one thread.
 */
#include "engine/kernels/attention.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/engine.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vec.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_VEC_AVX2 1
#endif

/* Rows of a prefill chunk whose attention scores are one matrix product: large enough for
 * the tiles to run well, small enough that the keys computed past each row's own position
 * (then masked) stay a small share. */
#define ATTN_TILE 64

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

size_t attn_scratch_floats(int HS, int max_ctx)
{
    /* One KV head's packed K and V (each padded to whole panels), a tile of scaled queries
     * and the tile's scores per context position. */
    size_t ctx = (size_t)max_ctx, hs = (size_t)HS;
    size_t ctx16 = (ctx + MM_NR - 1) / MM_NR * MM_NR, hs16 = (hs + MM_NR - 1) / MM_NR * MM_NR;
    size_t per_thread = ctx16 * hs + hs16 * ctx16 + ATTN_TILE * (hs + ctx);
    /* The packed K and V are read by the tiles with aligned loads: each thread's share
     * starts on 64 bytes (16 floats). */
    return (per_thread + 15) / 16 * 16;
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

/* n values of the cache from element i on, as floats: in place for F32, else converted into
 * buf with from_f16. */
static const float *kv_floats(const kv_cache_t *kv, size_t i, int n, float *buf,
                              void (*from_f16)(float *dst, const uint16_t *src, int n))
{
    if (kv->dtype == ENG_DTYPE_F32)
        return (const float *)kv->data + i;
    from_f16(buf, (const uint16_t *)kv->data + i, n);
    return buf;
}

typedef void (*attend_row_fn)(const vec_ops_t *ops, float *out, const float *q,
                              const kv_cache_t *kv, const int32_t *table, int n, int l, int g,
                              float *scores);

/* One decode row and query head over positions [0, n) of its sequence, reading KV head g:
 * out = softmax(q . K^T / sqrt(HS)) . V, with K and V read block by block in place (an F16
 * cache is converted ATTN_CHUNK columns at a time). scores has room for n floats. */
#define ATTN_CHUNK 64
static void attend_row_generic(const vec_ops_t *ops, float *out, const float *q,
                               const kv_cache_t *kv, const int32_t *table, int n, int l, int g,
                               float *scores)
{
    const int BS = kv->block_size, HS = kv->head_size;
    const float scale = 1.0f / sqrtf((float)HS);
    float buf[ATTN_CHUNK];
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t k = kv_at(kv, table[blk], l, 0, g);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++) {
            float dot = 0;
            for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
                int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
                const float *kr =
                    kv_floats(kv, k + (size_t)r * HS + (size_t)c0, w, buf, ops->from_f16);
                dot += vec_dot(q + c0, kr, w);
            }
            scores[j0 + r] = dot * scale;
        }
    }
    ops->softmax(scores, n);
    memset(out, 0, (size_t)HS * sizeof(float));
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t v = kv_at(kv, table[blk], l, 1, g);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++)
            for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
                int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
                vec_axpy(out + c0, scores[j0 + r],
                         kv_floats(kv, v + (size_t)r * HS + (size_t)c0, w, buf, ops->from_f16), w);
            }
    }
}

#ifdef HAVE_VEC_AVX2
#define VEC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VEC_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Eight values of the cache from element i on, as floats (f16: the cache holds F16). */
VEC_AVX2_INLINE __m256 kv_load8(const void *base, size_t i, int f16)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    return _mm256_loadu_ps((const float *)base + i);
}

/* Asks for the lines of bytes [p, p + n) to be brought to the caches. */
VEC_AVX2_INLINE void prefetch_span(const void *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* attend_row_generic for HS a multiple of 16 (64 in every GPT-2, 64 or 128 in the Llama
 * family; 16 in the test models, so the tests run this same code). Each block's slice of a
 * head is BS x HS contiguous values: while it is scored the next block's keys and this
 * block's values are prefetched. Scores four keys at a time (four dot products reduced by one
 * horizontal-add tree); the output stays in registers, 16 columns per pass over the values,
 * with even and odd keys summed in separate registers. */
VEC_AVX2_INLINE void attend_row_avx2_t(const vec_ops_t *ops, float *out, const float *q,
                                       const kv_cache_t *kv, const int32_t *table, int n, int l,
                                       int g, float *scores, int f16)
{
    const int BS = kv->block_size, HS = kv->head_size;
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    const size_t slice = (size_t)BS * (size_t)HS * es;
    const char *data = kv->data;
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)HS));
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t k = kv_at(kv, table[blk], l, 0, g);
        int rows = n - j0 < BS ? n - j0 : BS, r = 0;
        if (j0 + BS < n)
            prefetch_span(data + kv_at(kv, table[blk + 1], l, 0, g) * es, slice);
        prefetch_span(data + kv_at(kv, table[blk], l, 1, g) * es, (size_t)rows * HS * es);
        for (; r + 4 <= rows; r += 4) {
            size_t k0 = k + (size_t)r * HS;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < HS; i += 8) {
                __m256 qv = _mm256_loadu_ps(q + i);
                a0 = _mm256_fmadd_ps(qv, kv_load8(data, k0 + i, f16), a0);
                a1 = _mm256_fmadd_ps(qv, kv_load8(data, k0 + HS + i, f16), a1);
                a2 = _mm256_fmadd_ps(qv, kv_load8(data, k0 + 2 * (size_t)HS + i, f16), a2);
                a3 = _mm256_fmadd_ps(qv, kv_load8(data, k0 + 3 * (size_t)HS + i, f16), a3);
            }
            /* hadd(hadd(a0, a1), hadd(a2, a3)) holds each key's partial sums of one
             * 128-bit half in lanes 0..3 and 4..7; adding the halves gives the 4 dots. */
            __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
            __m128 d = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            _mm_storeu_ps(scores + j0 + r, _mm_mul_ps(d, _mm256_castps256_ps128(scale)));
        }
        for (; r < rows; r++) {
            size_t kr = k + (size_t)r * HS;
            __m256 a = _mm256_setzero_ps();
            for (int i = 0; i < HS; i += 8)
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kv_load8(data, kr + i, f16), a);
            scores[j0 + r] = vm_hsum8(a) * _mm256_cvtss_f32(scale);
        }
    }
    ops->softmax(scores, n);
    for (int c0 = 0; c0 < HS; c0 += 16) {
        __m256 e0 = _mm256_setzero_ps(), e1 = e0, o0 = e0, o1 = e0;
        for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
            size_t v = kv_at(kv, table[blk], l, 1, g) + (size_t)c0;
            int rows = n - j0 < BS ? n - j0 : BS, r = 0;
            for (; r + 2 <= rows; r += 2, v += 2 * (size_t)HS) {
                __m256 p = _mm256_broadcast_ss(scores + j0 + r);
                __m256 p1 = _mm256_broadcast_ss(scores + j0 + r + 1);
                e0 = _mm256_fmadd_ps(p, kv_load8(data, v, f16), e0);
                e1 = _mm256_fmadd_ps(p, kv_load8(data, v + 8, f16), e1);
                o0 = _mm256_fmadd_ps(p1, kv_load8(data, v + HS, f16), o0);
                o1 = _mm256_fmadd_ps(p1, kv_load8(data, v + HS + 8, f16), o1);
            }
            if (r < rows) {
                __m256 p = _mm256_broadcast_ss(scores + j0 + r);
                e0 = _mm256_fmadd_ps(p, kv_load8(data, v, f16), e0);
                e1 = _mm256_fmadd_ps(p, kv_load8(data, v + 8, f16), e1);
            }
        }
        _mm256_storeu_ps(out + c0, _mm256_add_ps(e0, o0));
        _mm256_storeu_ps(out + c0 + 8, _mm256_add_ps(e1, o1));
    }
}

VEC_AVX2 static void attend_row_avx2(const vec_ops_t *ops, float *out, const float *q,
                                     const kv_cache_t *kv, const int32_t *table, int n, int l,
                                     int g, float *scores)
{
    if (kv->head_size % 16)
        attend_row_generic(ops, out, q, kv, table, n, l, g, scores);
    else if (kv->dtype == ENG_DTYPE_F16)
        attend_row_avx2_t(ops, out, q, kv, table, n, l, g, scores, 1);
    else
        attend_row_avx2_t(ops, out, q, kv, table, n, l, g, scores, 0);
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

static inline void prefetch(const float *p)
{
    __builtin_prefetch(p, 0, 3);
}

/* KV head g's keys of positions [0, n) as the panels of Kᵀ (HS, n) for mm_matmul_panels:
 * panel p holds keys 16p..16p+15, one row of MM_NR per dimension; keys past n are zero.
 * buf has room for HS floats. */
static void pack_keys(const vec_ops_t *ops, float *kp, const kv_cache_t *kv, const int32_t *table,
                      int n, int l, int g, float *buf)
{
    const int BS = kv->block_size, HS = kv->head_size;
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t at = kv_at(kv, table[blk], l, 0, g);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++) {
            int j = j0 + r;
            float *dst = kp + (size_t)(j / MM_NR) * HS * MM_NR + j % MM_NR;
            const float *k = kv_floats(kv, at + (size_t)r * HS, HS, buf, ops->from_f16);
            for (int d = 0; d < HS; d++)
                dst[(size_t)d * MM_NR] = k[d];
        }
    }
    for (int j = n; j % MM_NR; j++)
        for (int d = 0; d < HS; d++)
            kp[((size_t)(j / MM_NR) * HS + d) * MM_NR + j % MM_NR] = 0.0f;
}

/* KV head g's values of positions [0, n) as the panels of V (n, HS): panel c holds
 * dimensions 16c..16c+15 of every key (n rows of MM_NR; dimensions past HS zero). buf has
 * room for HS floats. */
static void pack_values(const vec_ops_t *ops, float *vp, const kv_cache_t *kv, const int32_t *table,
                        int n, int l, int g, float *buf)
{
    const int BS = kv->block_size, HS = kv->head_size;
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t at = kv_at(kv, table[blk], l, 1, g);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++) {
            const float *v = kv_floats(kv, at + (size_t)r * HS, HS, buf, ops->from_f16);
            for (int c = 0; c * MM_NR < HS; c++) {
                float *dst = vp + ((size_t)c * n + (size_t)(j0 + r)) * MM_NR;
                int w = HS - c * MM_NR < MM_NR ? HS - c * MM_NR : MM_NR;
                memcpy(dst, v + c * MM_NR, (size_t)w * sizeof(float));
                memset(dst + w, 0, (size_t)(MM_NR - w) * sizeof(float));
            }
        }
    }
}

/* A prefill chunk (rows t0..t1 of sequence s), KV head g and its query heads: K and V of the
 * whole context are packed once into the thread's scratch as panels for the matmul tiles,
 * then for each query head each tile of ATTN_TILE rows is two products on this thread,
 * S = (Q / sqrt(HS)) Kᵀ over the keys the tile's last row sees, and O = softmax(S) V, with
 * each row's scores beyond its own position zeroed (the causal mask). The tiles are the
 * weight products' own (mm_matmul_panels), which at these shapes (K = HS, or N = HS) run
 * well above OpenBLAS's sgemm. */
static void attend_chunk(const vec_ops_t *ops, const mm_t *mm, const kv_cache_t *kv,
                         const attn_batch_t *b, const attn_layer_t *a, int s, int g, float *scratch)
{
    const int HS = a->HS, ld = a->max_ctx, group = a->NH / a->NKV;
    const int t0 = b->seq_start[s], t1 = b->seq_start[s + 1], n = b->ctx_len[s];
    const float scale = 1.0f / sqrtf((float)HS);
    const size_t ctx16 = ((size_t)ld + MM_NR - 1) / MM_NR * MM_NR;
    const size_t hs16 = ((size_t)HS + MM_NR - 1) / MM_NR * MM_NR;
    float *kp = scratch, *vp = kp + ctx16 * HS, *qs = vp + hs16 * ctx16;
    float *scores = qs + (size_t)ATTN_TILE * HS;
    /* qs is free until the first tile: the packing's row buffer for an F16 cache. */
    pack_keys(ops, kp, kv, b->block_table[s], n, a->l, g, qs);
    pack_values(ops, vp, kv, b->block_table[s], n, a->l, g, qs);
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int r0 = t0; r0 < t1; r0 += ATTN_TILE) {
            int rows = t1 - r0 < ATTN_TILE ? t1 - r0 : ATTN_TILE;
            int keys = b->pos[r0 + rows - 1] + 1;
            const float *q0 = a->q + (size_t)r0 * a->ldq + (size_t)h * HS;
            /* The tile's queries are HS floats every ldq, in L3 since the QKV product: ask
             * for all of their lines first, so the misses overlap instead of coming one row
             * at a time. */
            for (int r = 0; r < rows; r++)
                for (int d = 0; d < HS; d += 16)
                    prefetch(q0 + (size_t)r * a->ldq + d);
            for (int r = 0; r < rows; r++) {
                const float *q = q0 + (size_t)r * a->ldq;
                for (int d = 0; d < HS; d++)
                    qs[(size_t)r * HS + d] = q[d] * scale;
            }
            mm_matmul_panels(mm, rows, qs, (size_t)HS, kp, HS, keys, HS, scores, (size_t)ld);
            for (int r = 0; r < rows; r++) {
                float *row = scores + (size_t)r * ld;
                int seen = b->pos[r0 + r] + 1;
                ops->softmax(row, seen);
                memset(row + seen, 0, (size_t)(keys - seen) * sizeof(float));
            }
            mm_matmul_panels(mm, rows, scores, (size_t)ld, vp, keys, HS, n,
                             a->out + (size_t)r0 * a->ldo + (size_t)h * HS, a->ldo);
        }
}

/* Attention of one step on the compute pool: the work items are (sequence, KV head) pairs,
 * sequence-major, spread over at most ATTN_MAX_PARTS parts of consecutive items. Each item
 * is computed whole by one thread with that thread's scratch, so the result does not
 * depend on the thread count. */
#define ATTN_MAX_PARTS 1024

typedef struct attn_job {
    const mm_t *mm;
    const kv_cache_t *kv;
    const attn_batch_t *b;
    const attn_layer_t *a;
    const vec_ops_t *ops;
    attend_row_fn attend_row;
    int items;
} attn_job_t;

static void attn_part(void *arg, int part, int parts, int thread)
{
    const attn_job_t *j = arg;
    const attn_batch_t *b = j->b;
    const attn_layer_t *a = j->a;
    const int HS = a->HS, NKV = a->NKV, group = a->NH / a->NKV;
    float *scratch = a->scratch + (size_t)thread * a->scratch_floats;
    int i0, i1;
    pool_split(j->items, parts, part, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        int s = i / NKV, g = i % NKV, t = b->seq_start[s], rows = b->seq_start[s + 1] - t;
        /* This item is the only reader of KV head g of sequence s's K/V in this step (a
         * block being written belongs to one sequence), so it writes that slice of its own
         * rows itself: no separate pass, no barrier before attention. */
        kv_write_head(j->ops, j->kv, b, a, g, t, t + rows);
        if (rows > 1)
            attend_chunk(j->ops, j->mm, j->kv, b, a, s, g, scratch);
        else if (rows == 1)
            for (int h = g * group; h < (g + 1) * group; h++)
                j->attend_row(j->ops, a->out + (size_t)t * a->ldo + (size_t)h * HS,
                              a->q + (size_t)t * a->ldq + (size_t)h * HS, j->kv, b->block_table[s],
                              b->pos[t] + 1, a->l, g, scratch);
    }
}

void attn_forward(mm_t *mm, const kv_cache_t *kv, const attn_batch_t *b, const attn_layer_t *a)
{
    const int kernel = mm_get_kernel(mm);
    attn_job_t j = {.mm = mm,
                    .kv = kv,
                    .b = b,
                    .a = a,
                    .ops = vec_ops_get(kernel),
                    .attend_row = attend_row_generic,
                    .items = b->B * a->NKV};
#ifdef HAVE_VEC_AVX2
    if (kernel != MM_KERNEL_GENERIC)
        j.attend_row = attend_row_avx2;
#endif
    int parts = j.items < ATTN_MAX_PARTS ? j.items : ATTN_MAX_PARTS;
    pool_t *pool = mm_pool(mm);
    /* Scratch exists for a->threads threads (the model keeps it in step with the pool). */
    pool_run_parts_thread(a->threads >= pool_threads(pool) ? pool : NULL, parts, attn_part, &j);
}
