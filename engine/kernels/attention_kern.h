/* attention_kern.h - private to the attention files: what the driver (attention.c: the KV cache,
 * the work items, the scratch) hands the per-row arithmetic (attention_tiles.c: the portable
 * row, softmax and the chains of V of the AVX2 and AVX-512 code; attention_scores.c: their
 * score tiles). A KV head's keys and values are read through a kv_src_t, a prefill chunk's rows
 * of one query head come as an attn_rows_t, a decode token's query heads as an attn_dec_t. The
 * driver calls an entry point once per row (portable) or per group of rows, never per key: the
 * loops over keys and values stay inside attention_tiles.c and attention_scores.c, which share
 * the target attributes, the vector loads and score_rows_t below.
 */
#ifndef NANO_VLLM_ATTENTION_KERN_H
#define NANO_VLLM_ATTENTION_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels/vec.h"

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_VEC_AVX2 1
#include <immintrin.h>
#endif

/* Rows attended together, sharing each load of K and V (the AVX2 code). */
#define ATTN_ROWS 4

/* Values a portable loop takes at a time on the stack: the keys of a score chunk, a piece of
 * a row of K or V converted from F16. */
#define ATTN_CHUNK 64

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

/* A decode token of one sequence over KV heads [0, nkv) of a kv_src_t, n positions (head i's
 * panel and rows hstride bytes after head 0's in every block), group query heads per KV
 * head. */
typedef struct attn_dec {
    int nkv, group, n;
    size_t hstride;
    const float *q; /* query head i * group + r at q + (i * group + r) * HS */
    float *o;       /* its output likewise */
    float *sc;      /* its scores at sc + (i * group + r) * ld */
    size_t ld;
} attn_dec_t;

/* out = softmax(q . K^T / sqrt(HS)) V for one row and query head over positions [0, n) of s,
 * the portable arithmetic; scores has room for n floats. */
void attn_row_generic(const vec_ops_t *ops, float *out, const float *q, const kv_src_t *s, int n,
                      float *scores);

#ifdef HAVE_VEC_AVX2
/* The AVX2 code, for HS a multiple of 16, called only after the CPU check (the _avx512 ones:
 * the same code compiled for AVX-512's 32 registers). attn_rows_*: the 1..ATTN_ROWS rows of w
 * (V in F32: a chunk over an F16 cache passes it widened). attn_dec_*: all the query heads of
 * d's KV heads of a decode token. */
void attn_rows_avx2(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s);
void attn_rows_avx512(const vec_ops_t *ops, const attn_rows_t *w, const kv_src_t *s);
void attn_dec_avx2(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s);
void attn_dec_avx512(const vec_ops_t *ops, const attn_dec_t *d, const kv_src_t *s);

/* Target attributes of the AVX2 and AVX-512 code, and the loads both attention files use. */
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

/* Sixteen values from p on as floats (f16: p holds F16). */
VEC_AVX512_INLINE __m512 load16(const char *p, int f16)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_loadu_ps((const float *)p);
}

/* The scores of nq rows of each of nh KV heads (row r of head i: its query at
 * q + (i nq + r) qs, its scores into sc + (i nq + r) ld) against keys [0, n) of s (head i's
 * panels hk bytes after head 0's in each block): tiles of up to RM rows by NG groups, the
 * groups [g0, g0 + NG) of every head before the next NG, so a decode token reads the keys of
 * its heads block by block, each block's heads one run, NG blocks side by side: streams the
 * hardware prefetcher follows. stream: the rows read this context once (a decode token, over
 * the cache itself: head i's values also hk bytes after head 0's): while a tile is computed,
 * ask for the values of its groups (the same blocks and head) to be brought to L2, so the
 * reads of V are in flight with those of K. (Asking instead for the keys of the tile computed
 * next, as this did before, was slower: see docs/performance.md.) */
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

/* The scores of w's rows (attention_scores.c), tiles shaped for AVX2's 16 registers or
 * AVX-512's 32. */
void scores_avx2(const score_rows_t *w);
void scores_avx512(const score_rows_t *w);
#endif

#endif
