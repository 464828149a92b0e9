/* gpt2.h - private to engine/: GPT-2 weights, the KV block pool memory and the forward pass.
 *
 * Only the scheduler thread (or a test/bench driving the engine directly) calls these.
 * Dimensions: B sequences, T rows (tokens) in a step, C channels, NH heads, HS head size,
 * L layers, V vocabulary, BS tokens per KV block.
 */
#ifndef NANO_VLLM_GPT2_H
#define NANO_VLLM_GPT2_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct gpt2_config {
    int n_layer;    /* L */
    int n_head;     /* NH */
    int n_embd;     /* C */
    int n_ctx;      /* n_positions */
    int vocab_size; /* V */
    float ln_eps;   /* layer_norm_epsilon */
} gpt2_config_t;

typedef struct gpt2 gpt2_t;

/* Loads config.json and model.safetensors (or the sharded set with its index) from dir.
 * dtype (enum eng_dtype) says how weights are kept; F32 files are used in place from mmap.
 * Errors name the file and the tensor: "model.safetensors: h.3.attn.c_attn.weight: shape
 * [64,190] disagrees with config.json (expected [64,192])". */
int gpt2_load(gpt2_t **out, const char *dir, int dtype, char *err, size_t errlen);
/* gpt2_load on the matrix kernel `kernel` names (mm_init_kernel: NULL = NANO_VLLM_KERNEL,
 * else the CPU's best). */
int gpt2_load_kernel(gpt2_t **out, const char *dir, int dtype, const char *kernel, char *err,
                     size_t errlen);
void gpt2_free(gpt2_t *m);
/* Runs the matrix products on `threads` threads from now on (0 = one per online CPU; the
 * default after gpt2_load). Returns 0, or -EINVAL/-ENOMEM/-EAGAIN leaving the old pool. */
int gpt2_set_threads(gpt2_t *m, int threads);
const gpt2_config_t *gpt2_get_config(const gpt2_t *m);
/* The enum eng_dtype the weight matrices are kept in (never ENG_DTYPE_AUTO). */
int gpt2_get_dtype(const gpt2_t *m);
/* An enum eng_dtype's name as the settings spell it: "f16", "bf16", "int8", else "f32". */
const char *gpt2_dtype_name(int dtype);
size_t gpt2_weight_bytes(const gpt2_t *m);
/* The matrix kernel the products run on ("generic", "avx2", "avx512" or "amx"; matmul.h) and
 * the number of compute threads. */
const char *gpt2_kernel_name(const gpt2_t *m);
int gpt2_threads(const gpt2_t *m);

/* The KV pool: num_blocks blocks, each holding K and V of BS tokens for all L layers.
 * Layout: pool[block][layer][k=0|v=1][head][BS][HS], so what one head of one sequence reads
 * in a block is BS x HS contiguous values; slot s means block s/BS, row s%BS.
 * dtype (enum eng_dtype) is how K and V are stored: ENG_DTYPE_F32 or ENG_DTYPE_F16 (half
 * the memory and traffic; values rounded to nearest even). */
typedef struct kv_cache {
    void *data; /* owned, page aligned; (num_blocks, L, 2, NH, BS, HS) */
    int num_blocks, block_size, n_layer, n_embd, n_head, dtype;
} kv_cache_t;

/* Returns 0, -EINVAL (block size, block count or dtype out of range) or -ENOMEM. */
int kv_cache_init(kv_cache_t *kv, const gpt2_config_t *cfg, int block_size, int num_blocks,
                  int dtype);
void kv_cache_free(kv_cache_t *kv);
size_t kv_cache_block_bytes(const gpt2_config_t *cfg, int block_size, int dtype);
/* Copies block src's K and V of every layer into block dst (copy-on-write of a shared,
 * partly filled block). */
void kv_cache_copy_block(kv_cache_t *kv, int32_t dst, int32_t src);

/* One step over a flattened batch. Rows of sequence b are [seq_start[b], seq_start[b+1]),
 * with consecutive positions ending at ctx_len[b]-1: a prefill chunk (possibly continuing a
 * cached prefix) or one decode token. Every row's K/V is written to slot[row] before
 * attention, and attention for sequence b reads positions [0, ctx_len[b]) through
 * block_table[b]. Logits (n_logits, V) are written for the rows listed in logit_rows. */
typedef struct gpt2_batch {
    int T;
    const int32_t *tokens; /* (T) */
    const int32_t *pos;    /* (T) absolute positions */
    const int32_t *slot;   /* (T) KV slot of each row */
    int B;
    const int32_t *seq_start;          /* (B+1) */
    const int32_t *ctx_len;            /* (B) */
    const int32_t *const *block_table; /* (B) each covers ctx_len[b] tokens */
    int n_logits;
    const int32_t *logit_rows; /* (n_logits) ascending */
    float *logits;             /* (n_logits, V) output, owned by the caller */
} gpt2_batch_t;

/* Scratch is sized once for at most max_tokens rows and max_logits logit rows.
 * Returns 0, -EINVAL (max_ctx beyond n_ctx, max_logits > max_tokens) or -ENOMEM. */
int gpt2_reserve(gpt2_t *m, int max_tokens, int max_logits, int max_ctx);
/* Returns 0, or -EINVAL without touching the cache when the batch does not fit the
 * reservation or the pool, has a token id outside [0, V), or a row whose positions or slot
 * disagree with the description above. Allocates nothing. */
int gpt2_forward(gpt2_t *m, kv_cache_t *kv, const gpt2_batch_t *b);

#endif
