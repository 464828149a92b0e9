/* attention.h - private to engine/: the paged KV cache memory and causal self-attention
 * through it, shared by every model (model/ may use everything declared here).
 *
 * Dimensions: T rows (tokens) of a step, B sequences, NH query heads, NKV key/value heads
 * (NH a multiple of NKV: grouped-query attention, query head h reads KV head h / (NH/NKV)),
 * HS head size, L layers, BS tokens per KV block.
 *
 * Determinism: every row, whether a decode token or a row inside a prefill chunk of any size,
 * is computed with one fixed order of sums that depends only on its position and its context
 * (attention_tiles.c): its bits do not depend on the chunking, the other rows and sequences of the
 * step, whether its prefix came from the prefix cache, or the thread count. Each item (a
 * sequence and some of its KV heads) is computed whole by one thread.
 */
#ifndef NANO_VLLM_ATTENTION_H
#define NANO_VLLM_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels/matmul.h"

/* The KV pool: num_blocks blocks, each holding K and V of BS tokens for all L layers.
 * Layout: pool[block][layer][k=0|v=1][kv head][BS x HS], so what one KV head of one sequence
 * reads in a block is BS x HS contiguous values; slot s means block s/BS, position s%BS. V
 * keeps a row of HS values per position ([BS][HS]); K is stored transposed, a panel of HS rows
 * of BS keys ([HS][BS]: row d holds dimension d of the block's keys).
 * dtype (enum eng_dtype) is how K and V are stored: ENG_DTYPE_F32 or ENG_DTYPE_F16 (half
 * the memory and traffic; values rounded to nearest even). */
typedef struct kv_cache {
    void *data; /* owned, page aligned; (num_blocks, L, 2, NKV, BS, HS) */
    int num_blocks, block_size, n_layer, n_kv_head, head_size, dtype;
} kv_cache_t;

/* Returns 0, -EINVAL (a dimension, block size, block count or dtype out of range) or
 * -ENOMEM. */
int kv_cache_init(kv_cache_t *kv, int n_layer, int n_kv_head, int head_size, int block_size,
                  int num_blocks, int dtype);
void kv_cache_free(kv_cache_t *kv);
/* Bytes of one block: L x 2 x NKV x BS x HS values of dtype. */
size_t kv_cache_block_bytes(int n_layer, int n_kv_head, int head_size, int block_size, int dtype);
/* Copies block src's K and V of every layer into block dst (copy-on-write of a shared,
 * partly filled block). */
void kv_cache_copy_block(kv_cache_t *kv, int32_t dst, int32_t src);

/* A step's rows as attention sees them (a view of the model's flattened batch): rows of
 * sequence b are [seq_start[b], seq_start[b+1]), consecutive positions ending at
 * ctx_len[b]-1, row t's K/V goes to slot[t], and sequence b reads positions [0, ctx_len[b])
 * through block_table[b]. The model checked all of it against the pool. */
typedef struct attn_batch {
    int T, B;
    const int32_t *pos, *slot;         /* (T) */
    const int32_t *seq_start;          /* (B+1) */
    const int32_t *ctx_len;            /* (B) */
    const int32_t *const *block_table; /* (B) */
} attn_batch_t;

/* Where one layer's Q, K, V and output live: query head h of row t at q + t*ldq + h*HS,
 * KV head g's key at k + t*ldkv + g*HS and value at v + t*ldkv + g*HS, the output of head h
 * at out + t*ldo + h*HS. scratch holds `threads` shares of attn_scratch_floats(HS, max_ctx)
 * floats, 64-byte aligned, one per compute thread. */
typedef struct attn_layer {
    const float *q, *k, *v;
    size_t ldq, ldkv;
    float *out;
    size_t ldo;
    int NH, NKV, HS, l;
    float *scratch;
    size_t scratch_floats; /* per thread */
    int threads;           /* threads the scratch has room for */
    int max_ctx;           /* longest context the scratch has room for */
} attn_layer_t;

/* Floats of attention scratch one compute thread needs for contexts up to max_ctx (a
 * multiple of 16, so each thread's share stays 64-byte aligned). */
size_t attn_scratch_floats(int HS, int max_ctx);

/* Writes every row's K and V of layer a->l to its slot, then out = softmax(q kᵀ / sqrt(HS)) v
 * over each row's causal context, on mm's pool: the work items are a sequence and a range
 * of its KV heads (all of them when the sequences alone keep the threads busy), each done
 * whole by one thread with that thread's scratch. */
void attn_forward(mm_t *mm, const kv_cache_t *kv, const attn_batch_t *b, const attn_layer_t *a);

#endif
