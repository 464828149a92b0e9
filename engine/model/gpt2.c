/* gpt2.c - the GPT-2 forward pass over a flattened batch and the paged KV cache memory.
 *
 * One step runs every row (prefill chunks and decode tokens of several sequences) through
 * each layer together: the linear layers are one matrix product over all rows, attention
 * reads each sequence's K/V through its block table. Scratch is allocated by gpt2_reserve;
 * a step allocates nothing. Everything runs on the model's compute pool (mm_pool): the
 * matrix products split over output columns (engine/kernels/matmul.c; the FC's GELU and both
 * residual adds happen as their products store Y), attention over (sequence, head) items
 * (each writes its own slice of the rows' K/V first), the embedding and layer norms over
 * row ranges: seven pool dispatches per layer (four products, attention, two layer norms).
 * Each output element is computed by the same code whatever thread runs it, so the logits
 * do not depend on the thread count.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/engine.h"
#include "engine/model/gpt2_model.h"
#include "engine/kernels/matmul_kern.h"
#include "engine/kernels/vecmath.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_VEC_AVX2 1
#endif

/* Rows of a prefill chunk whose attention scores are one matrix product: large enough for
 * sgemm to run well, small enough that the keys computed past each row's own position
 * (then masked) stay a small share. */
#define ATTN_TILE 64

static size_t kv_elem_size(int dtype)
{
    return dtype == ENG_DTYPE_F16 ? sizeof(uint16_t) : sizeof(float);
}

/* K and V of block_size tokens for all layers. */
static size_t block_bytes(int n_layer, int n_embd, int block_size, int dtype)
{
    return (size_t)n_layer * 2 * (size_t)block_size * (size_t)n_embd * kv_elem_size(dtype);
}

size_t kv_cache_block_bytes(const gpt2_config_t *cfg, int block_size, int dtype)
{
    return block_bytes(cfg->n_layer, cfg->n_embd, block_size, dtype);
}

static size_t kv_block_bytes(const kv_cache_t *kv)
{
    return block_bytes(kv->n_layer, kv->n_embd, kv->block_size, kv->dtype);
}

int kv_cache_init(kv_cache_t *kv, const gpt2_config_t *cfg, int block_size, int num_blocks,
                  int dtype)
{
    memset(kv, 0, sizeof(*kv));
    /* Slots (block * BS + row) are int32 in gpt2_batch_t. */
    if (block_size < 1 || block_size > 4096 || num_blocks < 1 ||
        (int64_t)num_blocks * block_size > INT32_MAX ||
        (dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16))
        return -EINVAL;
    size_t per_block = kv_cache_block_bytes(cfg, block_size, dtype);
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
    char *map = mmap(NULL, bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
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
    kv->n_layer = cfg->n_layer;
    kv->n_embd = cfg->n_embd;
    kv->n_head = cfg->n_head;
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

int gpt2_reserve(gpt2_t *m, int max_tokens, int max_logits, int max_ctx)
{
    const size_t C = (size_t)m->cfg.n_embd, HS = C / (size_t)m->cfg.n_head;
    const int threads = pool_threads(mm_pool(m->mm));
    if (max_tokens < 1 || max_logits < 0 || max_logits > max_tokens || max_ctx < 1 ||
        max_ctx > m->cfg.n_ctx || (size_t)max_tokens > SIZE_MAX / (16 * C * sizeof(float)))
        return -EINVAL;
    /* x, ln, qkv (3C), att, fch (4C, padded): 10 C per row; per compute thread one head's packed
     * K and V (attend_chunk: each padded to whole panels), a tile of scaled queries and the
     * tile's scores per context position. */
    size_t T = (size_t)max_tokens, ctx = (size_t)max_ctx;
    size_t ctx16 = (ctx + MM_NR - 1) / MM_NR * MM_NR, hs16 = (HS + MM_NR - 1) / MM_NR * MM_NR;
    size_t per_thread = ctx16 * HS + hs16 * ctx16 + ATTN_TILE * (HS + ctx);
    /* The packed K and V are read by the tiles with aligned loads: the attention scratch
     * and each thread's share start on 64 bytes (16 floats). */
    per_thread = (per_thread + 15) / 16 * 16;
    /* fch's rows are 4C = 3072 floats = 12 KiB apart in GPT-2: a multiple of 4 KiB, so
     * every row of a tile of X in the MLP projection would fall in the same L1 set. One
     * cache line more per row breaks that (mm-bench fcproj, M = 32: 72-76% -> 88-90%). */
    size_t ld_fch = 4 * C % 1024 == 0 ? 4 * C + 16 : 4 * C;
    size_t attn_at = (T * (6 * C + ld_fch) + (size_t)max_logits * C + 15) / 16 * 16;
    size_t n = attn_at + (size_t)threads * per_thread;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)))
        return -ENOMEM;
    float *mem = p;
    free(m->s.mem);
    gpt2_scratch_t *s = &m->s;
    s->mem = mem;
    s->bytes = n * sizeof(float);
    s->max_tokens = max_tokens;
    s->max_logits = max_logits;
    s->max_ctx = max_ctx;
    s->x = mem;
    s->ln = s->x + T * C;
    s->qkv = s->ln + T * C;
    s->att = s->qkv + T * 3 * C;
    s->fch = s->att + T * C;
    s->ld_fch = ld_fch;
    s->lnf = s->fch + T * ld_fch;
    s->attn = mem + attn_at;
    s->attn_floats = per_thread;
    s->threads = threads;
    return 0;
}

/* The one place matrix products against the weights happen:
 * out (T, N) = epi(in (T, K) . w (K, N) + bias (N) (+ out when accumulate)), with w packed
 * by the loader (see engine/kernels/matmul.h: a skinny-M kernel streaming the weights at the
 * bandwidth bound, split over the compute pool). accumulate is the residual add (out = x)
 * and epi the FC layer's GELU, both done by the tile as it stores, so neither costs a pass
 * over the rows of its own. The LM head is the same call with w = lm_headᵀ and no bias.
 * Rows of out are ldo floats apart, rows of in ldi. */
static void matmul_ld(gpt2_t *m, float *out, size_t ldo, const float *in, size_t ldi,
                      const mm_weight_t *w, const float *bias, int T, int accumulate, int epi)
{
    mm_matmul(m->mm, T, in, ldi, w, bias, out, ldo, accumulate, epi);
}

/* matmul_ld with packed rows: out's N and in's K floats apart. */
static void matmul(gpt2_t *m, float *out, const float *in, const mm_weight_t *w,
                   const float *bias, int T, int accumulate, int epi)
{
    matmul_ld(m, out, (size_t)w->N, in, (size_t)w->K, w, bias, T, accumulate, epi);
}

/* out = (x - mean) / sqrt(var + eps) * w + b over each row of C. */
static void layernorm_generic(float *out, const float *x, const float *w, const float *b, int C,
                      float eps)
{
    float mean = 0, var = 0;
    for (int i = 0; i < C; i++)
        mean += x[i];
    mean /= (float)C;
    for (int i = 0; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.0f / sqrtf(var / (float)C + eps);
    for (int i = 0; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* Index (in elements of kv->dtype) of head h's first row of K (v = 0) or V (v = 1) of layer
 * l in block blk: the head's BS rows of HS follow contiguously (see gpt2.h). */
static size_t kv_at(const kv_cache_t *kv, int32_t blk, int l, int v, int h)
{
    const size_t BS = (size_t)kv->block_size, C = (size_t)kv->n_embd;
    const size_t HS = C / (size_t)kv->n_head;
    return (((size_t)blk * (size_t)kv->n_layer + (size_t)l) * 2 + (size_t)v) * BS * C +
           (size_t)h * BS * HS;
}

/* Eight floats; loads and stores go through memcpy (no alignment or aliasing assumptions)
 * and compile to one vector move where the target has 32-byte vectors. */
typedef float v8f __attribute__((vector_size(32)));

/* The vector loops outside the matrix products: decode attention (dot products with the
 * keys, the weighted sum of the values), softmax and layer norm (GELU is the FC product's
 * epilogue). Each has a portable version (SSE2 on x86-64) and an AVX2+FMA one; a step picks
 * one set (vec_ops) with the same decision the matrix kernels made (mm_get_kernel), so
 * forcing the generic kernel forces these too. */
static float dot_generic(const float *a, const float *b, int n)
{
    v8f acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f x, y;
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        acc += x * y;
    }
    float s = 0;
    for (; i < n; i++)
        s += a[i] * b[i];
    for (int u = 0; u < 8; u++)
        s += acc[u];
    return s;
}

/* y += p * x */
static void axpy_generic(float *y, float p, const float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f a, b;
        memcpy(&a, y + i, sizeof(a));
        memcpy(&b, x + i, sizeof(b));
        a += p * b;
        memcpy(y + i, &a, sizeof(a));
    }
    for (; i < n; i++)
        y[i] += p * x[i];
}

/* softmax in place over n scores; returns nothing, the row sums to 1. */
static void softmax_generic(float *x, int n)
{
    float max = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        max = x[j] > max ? x[j] : max;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - max);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++)
        x[j] *= inv;
}

#ifdef HAVE_VEC_AVX2

__attribute__((target("avx2,fma"))) static float hsum_avx2(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

/* softmax_generic with eight-wide passes and exp_avx2. */
__attribute__((target("avx2,fma"))) static void softmax_avx2(float *x, int n)
{
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float max = _mm_cvtss_f32(h);
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    mv = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = vm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum_avx2(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++)
        x[i] *= 1.0f / sum;
}

/* layernorm_generic with eight-wide sums. */
__attribute__((target("avx2,fma"))) static void layernorm_avx2(float *out, const float *x,
                                                               const float *w, const float *b,
                                                               int C, float eps)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= C; i += 8)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float mean = hsum_avx2(acc);
    for (; i < C; i++)
        mean += x[i];
    mean /= (float)C;
    const __m256 mv = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= C; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float var = hsum_avx2(acc);
    for (; i < C; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.0f / sqrtf(var / (float)C + eps);
    const __m256 rv = _mm256_set1_ps(rstd);
    for (i = 0; i + 8 <= C; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(w + i),
                                                  _mm256_loadu_ps(b + i)));
    }
    for (; i < C; i++)
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}
#endif

/* F32 <-> F16 (round to nearest even, as the F16C instructions do), n values. */
static void to_f16_generic(uint16_t *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = mm_f32_to_f16(src[i]);
}

static void from_f16_generic(float *dst, const uint16_t *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = mm_f16_to_f32(src[i]);
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

/* One decode row and head over positions [0, n) of its sequence:
 * out = softmax(q . K^T / sqrt(HS)) . V, with K and V read block by block in place (an F16
 * cache is converted ATTN_CHUNK columns at a time). scores has room for n floats. */
#define ATTN_CHUNK 64
static void attend_row_generic(float *out, const float *q, const kv_cache_t *kv,
                               const int32_t *table, int n, int l, int h, int HS, float *scores)
{
    const int BS = kv->block_size;
    const float scale = 1.0f / sqrtf((float)HS);
    float buf[ATTN_CHUNK];
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t k = kv_at(kv, table[blk], l, 0, h);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++) {
            float dot = 0;
            for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
                int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
                const float *kr = kv_floats(kv, k + (size_t)r * HS + (size_t)c0, w, buf,
                                            from_f16_generic);
                dot += dot_generic(q + c0, kr, w);
            }
            scores[j0 + r] = dot * scale;
        }
    }
    softmax_generic(scores, n);
    memset(out, 0, (size_t)HS * sizeof(float));
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t v = kv_at(kv, table[blk], l, 1, h);
        int rows = n - j0 < BS ? n - j0 : BS;
        for (int r = 0; r < rows; r++)
            for (int c0 = 0; c0 < HS; c0 += ATTN_CHUNK) {
                int w = HS - c0 < ATTN_CHUNK ? HS - c0 : ATTN_CHUNK;
                axpy_generic(out + c0, scores[j0 + r],
                             kv_floats(kv, v + (size_t)r * HS + (size_t)c0, w, buf,
                                       from_f16_generic),
                             w);
            }
    }
}

#ifdef HAVE_VEC_AVX2
#define VEC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VEC_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

VEC_AVX2 static void to_f16_avx2(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = mm_f32_to_f16(src[i]);
}

VEC_AVX2 static void from_f16_avx2(float *dst, const uint16_t *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = mm_f16_to_f32(src[i]);
}

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

/* attend_row_generic for HS a multiple of 16 (64 in every GPT-2; 16 in the test models, so
 * the tests run this same code). Each block's slice of a head is BS x HS contiguous values:
 * while it is scored the next block's keys and this block's values are prefetched. Scores
 * four keys at a time (four dot products reduced by one horizontal-add tree); the output
 * stays in registers, 16 columns per pass over the values, with even and odd keys summed
 * in separate registers. */
VEC_AVX2_INLINE void attend_row_avx2_t(float *out, const float *q, const kv_cache_t *kv,
                                       const int32_t *table, int n, int l, int h, int HS,
                                       float *scores, int f16)
{
    const int BS = kv->block_size;
    const size_t es = f16 ? sizeof(uint16_t) : sizeof(float);
    const size_t slice = (size_t)BS * (size_t)HS * es;
    const char *data = kv->data;
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)HS));
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t k = kv_at(kv, table[blk], l, 0, h);
        int rows = n - j0 < BS ? n - j0 : BS, r = 0;
        if (j0 + BS < n)
            prefetch_span(data + kv_at(kv, table[blk + 1], l, 0, h) * es, slice);
        prefetch_span(data + kv_at(kv, table[blk], l, 1, h) * es, (size_t)rows * HS * es);
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
            scores[j0 + r] = hsum_avx2(a) * _mm256_cvtss_f32(scale);
        }
    }
    softmax_avx2(scores, n);
    for (int c0 = 0; c0 < HS; c0 += 16) {
        __m256 e0 = _mm256_setzero_ps(), e1 = e0, o0 = e0, o1 = e0;
        for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
            size_t v = kv_at(kv, table[blk], l, 1, h) + (size_t)c0;
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

VEC_AVX2 static void attend_row_avx2(float *out, const float *q, const kv_cache_t *kv,
                                     const int32_t *table, int n, int l, int h, int HS,
                                     float *scores)
{
    if (HS % 16)
        attend_row_generic(out, q, kv, table, n, l, h, HS, scores);
    else if (kv->dtype == ENG_DTYPE_F16)
        attend_row_avx2_t(out, q, kv, table, n, l, h, HS, scores, 1);
    else
        attend_row_avx2_t(out, q, kv, table, n, l, h, HS, scores, 0);
}
#endif

/* The vector loops one step uses. */
typedef struct vec_ops {
    void (*attend_row)(float *out, const float *q, const kv_cache_t *kv, const int32_t *table,
                       int n, int l, int h, int HS, float *scores);
    void (*softmax)(float *x, int n);
    void (*layernorm)(float *out, const float *x, const float *w, const float *b, int C,
                      float eps);
    void (*to_f16)(uint16_t *dst, const float *src, int n);
    void (*from_f16)(float *dst, const uint16_t *src, int n);
} vec_ops_t;

static const vec_ops_t vec_generic = {attend_row_generic, softmax_generic, layernorm_generic,
                                      to_f16_generic, from_f16_generic};
#ifdef HAVE_VEC_AVX2
static const vec_ops_t vec_avx2 = {attend_row_avx2, softmax_avx2, layernorm_avx2, to_f16_avx2,
                                   from_f16_avx2};
#endif

static const vec_ops_t *vec_ops(const gpt2_t *m)
{
#ifdef HAVE_VEC_AVX2
    /* Every kernel but the portable one implies AVX2; AVX-512 and AMX machines run the AVX2
     * vector ops too (they are memory bound). */
    if (mm_get_kernel(m->mm) != MM_KERNEL_GENERIC)
        return &vec_avx2;
#else
    (void)m;
#endif
    return &vec_generic;
}

/* Copies head h's K and V of rows [t0, t1) (slices of the second and third thirds of their
 * qkv) to the rows' slots of layer l, in the cache's dtype. */
static void kv_write_head(const vec_ops_t *ops, const kv_cache_t *kv, const float *qkv,
                          const gpt2_batch_t *b, int l, int h, int HS, int t0, int t1)
{
    const int C = kv->n_embd, BS = kv->block_size;
    for (int t = t0; t < t1; t++) {
        int32_t blk = b->slot[t] / BS, r = b->slot[t] % BS;
        const float *src = qkv + (size_t)t * 3 * C + (size_t)h * HS;
        for (int v = 0; v < 2; v++) {
            size_t at = kv_at(kv, blk, l, v, h) + (size_t)r * HS;
            if (kv->dtype == ENG_DTYPE_F16)
                ops->to_f16((uint16_t *)kv->data + at, src + (size_t)(v + 1) * C, HS);
            else
                memcpy((float *)kv->data + at, src + (size_t)(v + 1) * C,
                       (size_t)HS * sizeof(float));
        }
    }
}

static inline void prefetch(const float *p)
{
    __builtin_prefetch(p, 0, 3);
}

/* Head h's keys of positions [0, n) as the panels of Kᵀ (HS, n) for mm_matmul_panels:
 * panel p holds keys 16p..16p+15, one row of MM_NR per dimension; keys past n are zero.
 * buf has room for HS floats. */
static void pack_keys(const vec_ops_t *ops, float *kp, const kv_cache_t *kv,
                      const int32_t *table, int n, int l, int h, int HS, float *buf)
{
    const int BS = kv->block_size;
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t at = kv_at(kv, table[blk], l, 0, h);
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

/* Head h's values of positions [0, n) as the panels of V (n, HS): panel c holds dimensions
 * 16c..16c+15 of every key (n rows of MM_NR; dimensions past HS zero). buf has room for HS
 * floats. */
static void pack_values(const vec_ops_t *ops, float *vp, const kv_cache_t *kv,
                        const int32_t *table, int n, int l, int h, int HS, float *buf)
{
    const int BS = kv->block_size;
    for (int j0 = 0, blk = 0; j0 < n; j0 += BS, blk++) {
        size_t at = kv_at(kv, table[blk], l, 1, h);
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

/* A prefill chunk (rows t0..t1 of sequence s), head h: K and V of the whole context are
 * packed once into the thread's scratch as panels for the matmul tiles, then each tile of
 * ATTN_TILE rows is two products on this thread, S = (Q / sqrt(HS)) Kᵀ over the keys the
 * tile's last row sees, and O = softmax(S) V, with each row's scores beyond its own position
 * zeroed (the causal mask). The tiles are the weight products' own (mm_matmul_panels), which
 * at these shapes (K = HS = 64, or N = HS) run well above OpenBLAS's sgemm. */
static void attend_chunk(const vec_ops_t *ops, const gpt2_t *m, const kv_cache_t *kv,
                         const gpt2_batch_t *b, int s, int l, int h, float *scratch)
{
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, HS = C / NH, ld = m->s.max_ctx;
    const int t0 = b->seq_start[s], t1 = b->seq_start[s + 1], n = b->ctx_len[s];
    const float scale = 1.0f / sqrtf((float)HS);
    const gpt2_scratch_t *sc = &m->s;
    const size_t ctx16 = ((size_t)ld + MM_NR - 1) / MM_NR * MM_NR;
    const size_t hs16 = ((size_t)HS + MM_NR - 1) / MM_NR * MM_NR;
    float *kp = scratch, *vp = kp + ctx16 * HS, *qs = vp + hs16 * ctx16;
    float *scores = qs + (size_t)ATTN_TILE * HS;
    /* qs is free until the first tile: the packing's row buffer for an F16 cache. */
    pack_keys(ops, kp, kv, b->block_table[s], n, l, h, HS, qs);
    pack_values(ops, vp, kv, b->block_table[s], n, l, h, HS, qs);
    for (int r0 = t0; r0 < t1; r0 += ATTN_TILE) {
        int rows = t1 - r0 < ATTN_TILE ? t1 - r0 : ATTN_TILE;
        int keys = b->pos[r0 + rows - 1] + 1;
        /* The tile's queries are HS floats every 3C, in L3 since the QKV product: ask for all
         * of their lines first, so the misses overlap instead of coming one row at a time. */
        for (int r = 0; r < rows; r++)
            for (int d = 0; d < HS; d += 16)
                prefetch(sc->qkv + (size_t)(r0 + r) * 3 * C + (size_t)h * HS + d);
        for (int r = 0; r < rows; r++) {
            const float *q = sc->qkv + (size_t)(r0 + r) * 3 * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++)
                qs[(size_t)r * HS + d] = q[d] * scale;
        }
        mm_matmul_panels(m->mm, rows, qs, (size_t)HS, kp, HS, keys, HS, scores, (size_t)ld);
        for (int r = 0; r < rows; r++) {
            float *row = scores + (size_t)r * ld;
            int seen = b->pos[r0 + r] + 1;
            ops->softmax(row, seen);
            memset(row + seen, 0, (size_t)(keys - seen) * sizeof(float));
        }
        mm_matmul_panels(m->mm, rows, scores, (size_t)ld, vp, keys, HS, n,
                         sc->att + (size_t)r0 * C + (size_t)h * HS, (size_t)C);
    }
}

/* Attention of one step on the compute pool: the work items are (sequence, head) pairs,
 * sequence-major, spread over at most ATTN_MAX_PARTS parts of consecutive items. Each item
 * is computed whole by one thread with that thread's scratch, so the result does not
 * depend on the thread count. */
#define ATTN_MAX_PARTS 1024

typedef struct attn_job {
    const gpt2_t *m;
    const kv_cache_t *kv;
    const gpt2_batch_t *b;
    const vec_ops_t *ops;
    int l, items;
} attn_job_t;

static void attn_part(void *arg, int part, int parts, int thread)
{
    const attn_job_t *j = arg;
    const gpt2_t *m = j->m;
    const gpt2_batch_t *b = j->b;
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, HS = C / NH;
    float *scratch = m->s.attn + (size_t)thread * m->s.attn_floats;
    int i0, i1;
    pool_split(j->items, parts, part, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        int s = i / NH, h = i % NH, t = b->seq_start[s], rows = b->seq_start[s + 1] - t;
        /* This item is the only reader of head h of sequence s's K/V in this step (a block
         * being written belongs to one sequence), so it writes that slice of its own rows
         * itself: no separate pass, no barrier before attention. */
        kv_write_head(j->ops, j->kv, m->s.qkv, b, j->l, h, HS, t, t + rows);
        if (rows > 1)
            attend_chunk(j->ops, m, j->kv, b, s, j->l, h, scratch);
        else if (rows == 1)
            j->ops->attend_row(m->s.att + (size_t)t * C + (size_t)h * HS,
                       m->s.qkv + (size_t)t * 3 * C + (size_t)h * HS, j->kv, b->block_table[s],
                       b->pos[t] + 1, j->l, h, HS, scratch);
    }
}

/* Causal self-attention of every row. A decode row (the only row of its sequence) reads
 * the blocks in place; a prefill chunk goes through attend_chunk's matrix products. */
static void attention(gpt2_t *m, const kv_cache_t *kv, const gpt2_batch_t *b, int l)
{
    attn_job_t j = {.m = m, .kv = kv, .b = b, .ops = vec_ops(m), .l = l,
                    .items = b->B * m->cfg.n_head};
    int parts = j.items < ATTN_MAX_PARTS ? j.items : ATTN_MAX_PARTS;
    pool_t *pool = mm_pool(m->mm);
    /* Scratch exists for s.threads threads (gpt2_set_threads keeps it in step). */
    pool_run_parts_thread(m->s.threads >= pool_threads(pool) ? pool : NULL, parts, attn_part,
                          &j);
}

/* The per-row work between the matrix products, over ranges of rows on the compute pool.
 * Each row is computed by the same code whatever thread runs it, so the split does not
 * change the result. */
enum row_op {
    ROW_EMBED_LN, /* x = wte[token] + wpe[pos]; ln = layernorm(x) with (w, bias) */
    ROW_LN,       /* ln = layernorm(x) with (w, bias) */
};

/* Fewest rows worth a part of their own, per op, measured (best of 3000 runs, 2 threads,
 * workers still spinning as they are after a matrix product): one row of layer norm takes
 * ~2.2 us, while handing a part to the other thread costs well under 0.5 us, so it splits
 * from 2 rows on. */
static const int ROW_MIN[] = {[ROW_EMBED_LN] = 1, [ROW_LN] = 1};
#define ROW_PARTS_PER_THREAD 4

typedef struct rows_job {
    const gpt2_t *m;
    const gpt2_batch_t *b;
    const vec_ops_t *ops;
    enum row_op op;
    const float *w, *bias;
} rows_job_t;

static void embed_row(const gpt2_t *m, const gpt2_batch_t *b, int t, float *x)
{
    const int C = m->cfg.n_embd;
    const float *pe = m->wpe + (size_t)b->pos[t] * C;
    /* With a tied LM head wte is read from its packed copy (column `token` of wteᵀ), so
     * only one copy of it stays in memory. */
    if (m->embed_packed) {
        mm_weight_column(&m->lm_head_p, b->tokens[t], x);
        for (int i = 0; i < C; i++)
            x[i] += pe[i];
    } else {
        const float *te = m->wte + (size_t)b->tokens[t] * C;
        for (int i = 0; i < C; i++)
            x[i] = te[i] + pe[i];
    }
}

static void rows_part(void *arg, int part, int parts)
{
    const rows_job_t *j = arg;
    const gpt2_t *m = j->m;
    const gpt2_scratch_t *s = &m->s;
    const int C = m->cfg.n_embd;
    const float eps = m->cfg.ln_eps;
    int t0, t1;
    pool_split(j->b->T, parts, part, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        float *x = s->x + (size_t)t * C, *ln = s->ln + (size_t)t * C;
        switch (j->op) {
        case ROW_EMBED_LN:
            embed_row(m, j->b, t, x);
            j->ops->layernorm(ln, x, j->w, j->bias, C, eps);
            break;
        case ROW_LN:
            j->ops->layernorm(ln, x, j->w, j->bias, C, eps);
            break;
        }
    }
}

static void run_rows(gpt2_t *m, const gpt2_batch_t *b, enum row_op op, const float *w,
                     const float *bias)
{
    rows_job_t j = {.m = m, .b = b, .ops = vec_ops(m), .op = op, .w = w, .bias = bias};
    pool_t *pool = mm_pool(m->mm);
    int parts = b->T / ROW_MIN[op], most = pool_threads(pool) * ROW_PARTS_PER_THREAD;
    parts = parts < 1 ? 1 : parts > most ? most : parts;
    pool_run_parts(pool, parts, rows_part, &j);
}

/* Layer l, entered with ln = layernorm_1(x) of this layer; leaves x with both residual adds
 * done (by the projections, which accumulate into x) and, unless it is the last layer,
 * ln = layernorm_1(x) of the next layer. */
static void layer_forward(gpt2_t *m, const kv_cache_t *kv, const gpt2_batch_t *b, int l)
{
    const gpt2_layer_t *w = &m->layers[l];
    const gpt2_layer_t *next = l + 1 < m->cfg.n_layer ? &m->layers[l + 1] : NULL;
    const gpt2_scratch_t *s = &m->s;
    const int T = b->T;

    matmul(m, s->qkv, s->ln, &w->qkv_p, w->qkv_b, T, 0, MM_EPI_NONE);
    attention(m, kv, b, l); /* also writes the rows' K/V to the cache */
    matmul(m, s->x, s->att, &w->attn_proj_p, w->attn_proj_b, T, 1, MM_EPI_NONE);
    run_rows(m, b, ROW_LN, w->ln2_w, w->ln2_b);
    matmul_ld(m, s->fch, s->ld_fch, s->ln, (size_t)w->fc_p.K, &w->fc_p, w->fc_b, T, 0,
              MM_EPI_GELU);
    matmul_ld(m, s->x, (size_t)w->mlp_proj_p.N, s->fch, s->ld_fch, &w->mlp_proj_p,
              w->mlp_proj_b, T, 1, MM_EPI_NONE);
    if (next)
        run_rows(m, b, ROW_LN, next->ln1_w, next->ln1_b);
}

/* Rejects a batch that would read or write outside the model, the scratch or the pool,
 * or whose rows' slots are not where attention will look for them. */
static int check_batch(const gpt2_t *m, const kv_cache_t *kv, const gpt2_batch_t *b)
{
    const gpt2_config_t *c = &m->cfg;
    const int BS = kv->block_size;
    if (!m->s.mem || b->T < 0 || b->T > m->s.max_tokens || b->B < 0 || b->n_logits < 0 ||
        b->n_logits > m->s.max_logits || (b->n_logits && !b->logits) ||
        kv->n_layer != c->n_layer || kv->n_embd != c->n_embd || kv->n_head != c->n_head ||
        !kv->data)
        return -EINVAL;
    if (b->T == 0)
        return b->n_logits == 0 ? 0 : -EINVAL;
    if (b->B < 1 || b->seq_start[0] != 0 || b->seq_start[b->B] != b->T)
        return -EINVAL;
    for (int s = 0; s < b->B; s++) {
        int n = b->ctx_len[s];
        if (b->seq_start[s + 1] < b->seq_start[s] || n < 1 || n > c->n_ctx || n > m->s.max_ctx)
            return -EINVAL;
        const int32_t *table = b->block_table[s];
        for (int j = 0; j < (n + BS - 1) / BS; j++)
            if (table[j] < 0 || table[j] >= kv->num_blocks)
                return -EINVAL;
        /* Rows are consecutive positions ending at the context's last one. */
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t p = b->pos[t];
            if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab_size ||
                p != n - (b->seq_start[s + 1] - t) || b->slot[t] != table[p / BS] * BS + p % BS)
                return -EINVAL;
        }
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->T ||
            (i && b->logit_rows[i] <= b->logit_rows[i - 1]))
            return -EINVAL;
    return 0;
}

int gpt2_forward(gpt2_t *m, kv_cache_t *kv, const gpt2_batch_t *b)
{
    int rc = check_batch(m, kv, b);
    if (rc || b->T == 0)
        return rc;
    const int C = m->cfg.n_embd;
    const gpt2_scratch_t *s = &m->s;

    run_rows(m, b, ROW_EMBED_LN, m->layers[0].ln1_w, m->layers[0].ln1_b);
    for (int l = 0; l < m->cfg.n_layer; l++)
        layer_forward(m, kv, b, l);

    /* The final layer norm and the LM head only for the rows that are sampled. */
    const vec_ops_t *ops = vec_ops(m);
    for (int i = 0; i < b->n_logits; i++)
        ops->layernorm(s->lnf + (size_t)i * C, s->x + (size_t)b->logit_rows[i] * C,
                       m->lnf_w, m->lnf_b, C, m->cfg.ln_eps);
    if (b->n_logits)
        matmul(m, b->logits, s->lnf, &m->lm_head_p, NULL, b->n_logits, 0, MM_EPI_NONE);
    return 0;
}
