/* attention.c - the paged KV cache memory and causal self-attention through block tables
 * (see attention.h): the cache's layout (kv_at), the scatter of a step's new keys and values
 * into their slots, and the driver that cuts a step into work items, runs them on the compute
 * pool with a scratch share per thread and hands each item's rows to the arithmetic
 * (attention_tiles.c, which spells out the order of a row's sums, and the score tiles of
 * attention_scores.c). Grouped-query attention: one work item is a sequence and a range of its
 * KV heads and serves the NH/NKV query heads that read each of them, so each KV head's keys and
 * values are written and read by one thread.
 */
#include "engine/kernels/attention.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/engine.h"
#include "engine/kernels/attention_kern.h"
#include "engine/kernels/vec.h"

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
 * converted by each (src_widen_k does the same for the keys). */
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
 * context widened to F32 once. Every row keeps its own order (attention_tiles.c). */
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
                    attn_rows_avx512(j->ops, &w, &src);
                else
                    attn_rows_avx2(j->ops, &w, &src);
            }
        return;
    }
#endif
    (void)wide;
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int t = t0; t < t1; t++)
            attn_row_generic(j->ops, a->out + (size_t)t * a->ldo + (size_t)h * HS,
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
        attn_dec_avx512(j->ops, &d, &src);
    else
        attn_dec_avx2(j->ops, &d, &src);
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
     * scratch: scratch_rows(HS) rows of max_ctx floats. A lone decode token is cut into one
     * item per thread, each a run of heads: reading its share of K/V as one run per block,
     * with its stream of prefetches, costs less than one KV head per item (GPT-2 124M, F16
     * K/V, 2 threads: attention 10.0 -> 6.5 us per layer at context 64, 33 -> 25 at 256,
     * AVX-512), and a thread that finds the other's item unclaimed still takes it. A lone
     * prompt keeps one KV head per item, so its heads spread over the threads. Sequences with
     * several rows (prompt chunks) weigh more than a decode token's: their items are taken
     * first, so no thread is left with one at the end while the others wait. The order of the
     * items changes no row's arithmetic. */
    j.hg = 1;
    int32_t order[ATTN_MAX_ORDER];
    if (j.avx2) {
        const int group = a->NH / a->NKV, room = scratch_rows(a->HS) / group;
        const int want = b->T == 1 ? pool_threads(pool) : 8 * pool_threads(pool);
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
