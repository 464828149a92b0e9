/* model.h - private to engine/: the model interface every architecture implements. The
 * scheduler, engine.c and the KV pool use only this (and engine/kernels/attention.h for the
 * pool's memory); nothing outside engine/model/ names an architecture.
 *
 * Only the scheduler thread (or a test/bench driving the engine directly) calls these.
 * Dimensions: B sequences, T rows (tokens) in a step, C channels, NH query heads, NKV KV
 * heads, HS head size, L layers, V vocabulary, BS tokens per KV block.
 */
#ifndef NANO_VLLM_MODEL_H
#define NANO_VLLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kernels/attention.h"

#define MODEL_MAX_EOS 8

/* What a loaded model is, as the engine and the KV pool need it. */
typedef struct model_desc {
    const char *arch; /* config.json's architecture: "GPT2LMHeadModel", "LlamaForCausalLM" */
    int n_layer;      /* L */
    int n_head;       /* NH */
    int n_kv_head;    /* NKV (NH without grouped-query attention) */
    int head_size;    /* HS */
    int n_embd;       /* C */
    int vocab_size;   /* V */
    int max_pos;      /* positions the model was trained for (n_positions,
                       * max_position_embeddings) */
    int n_eos;        /* end-of-sequence ids of config.json and generation_config.json */
    int32_t eos[MODEL_MAX_EOS];
} model_desc_t;

typedef struct model model_t;

/* Loads the checkpoint in dir: config.json's `architectures` (else `model_type`) picks the
 * architecture; an unknown one fails with one line naming it and listing the supported ones.
 * Weights are model.safetensors or the shards of model.safetensors.index.json, F32, F16 or
 * BF16. dtype (enum eng_dtype) says how the matrices are kept (ENG_DTYPE_AUTO keeps the
 * file's); kernel names the matrix kernel (mm_init_kernel: NULL = NANO_VLLM_KERNEL, else the
 * CPU's best). Errors name the file and the tensor: "model.safetensors:
 * h.3.attn.c_attn.weight: shape [64,190] disagrees with config.json (expected [64,192])".
 * Returns 0 or a negative errno with one line in err; *out is NULL on failure. */
int model_load(model_t **out, const char *dir, int dtype, const char *kernel, char *err,
               size_t errlen);
/* Called on the loading thread as the weights are read: bytes of the checkpoint's tensors in
 * use done so far (never decreasing) and their total; the last call of a load that succeeds
 * has done == total. */
typedef void (*model_progress_fn)(void *arg, uint64_t done, uint64_t total);
/* model_load reporting its progress to fn(arg) (fn NULL: none). */
int model_load_progress(model_t **out, const char *dir, int dtype, const char *kernel,
                        model_progress_fn fn, void *arg, char *err, size_t errlen);
/* model_free(NULL) is a no-op. */
void model_free(model_t *m);
const model_desc_t *model_describe(const model_t *m);
/* The architectures model_load knows, comma separated. */
const char *model_supported(void);

/* Scratch is sized once for at most max_tokens rows and max_logits logit rows.
 * Returns 0, -EINVAL (max_ctx beyond max_pos, max_logits > max_tokens) or -ENOMEM. */
int model_reserve(model_t *m, int max_tokens, int max_logits, int max_ctx);

/* One step over a flattened batch. Rows of sequence b are [seq_start[b], seq_start[b+1]),
 * with consecutive positions ending at ctx_len[b]-1: a prefill chunk (possibly continuing a
 * cached prefix) or one decode token. Every row's K/V is written to slot[row] before
 * attention, and attention for sequence b reads positions [0, ctx_len[b]) through
 * block_table[b]. Logits (n_logits, V) are written for the rows listed in logit_rows. */
typedef struct model_batch {
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
} model_batch_t;

/* Returns 0, or -EINVAL without touching the cache when the batch does not fit the
 * reservation or the pool, has a token id outside [0, V), or a row whose positions or slot
 * disagree with the description above. Allocates nothing. */
int model_forward(model_t *m, kv_cache_t *kv, const model_batch_t *b);

/* A KV pool shaped for m (L, NKV, HS): kv_cache_init's codes. */
int model_kv_init(const model_t *m, kv_cache_t *kv, int block_size, int num_blocks, int dtype);
size_t model_kv_block_bytes(const model_t *m, int block_size, int dtype);
/* The K/V dtype kv_cache_dtype "auto" means for weights kept in `weights` (an enum eng_dtype):
 * F32 with F32 or BF16X3 weights, else F16. */
int model_kv_dtype_auto(int weights);

/* Runs the matrix products on `threads` threads from now on (0 = one per online CPU; the
 * default after model_load). Returns 0, or -EINVAL/-ENOMEM/-EAGAIN leaving the old pool. */
int model_set_threads(model_t *m, int threads);
int model_threads(const model_t *m);
/* The matrix kernel the products run on ("generic", "avx2", "avx512" or "amx"). */
const char *model_kernel_name(const model_t *m);
/* The enum eng_dtype the weight matrices are kept in (never ENG_DTYPE_AUTO). */
int model_dtype(const model_t *m);
/* An enum eng_dtype's name as the settings spell it: "f16", "bf16", "int8" (W8A8), "int8w"
 * (I8, weight-only), "bf16x3", else "f32". */
const char *model_dtype_name(int dtype);
/* Bytes of weights as used (values in the dtype they are kept in, a tied head once). */
size_t model_weight_bytes(const model_t *m);
/* What the packed matrices cost a step (a roofline's weight terms): the bytes a step streams
 * from them (every panel once, int8's column scales too), the multiply-adds of one row
 * through the layers and those of one logit row through the LM head (C x V). */
void model_matrix_cost(const model_t *m, double *read_bytes, double *macs_per_row,
                       double *macs_per_logit);

/* Where the load's time went, in seconds of the loading thread's clock: mapping the
 * checkpoint and checking its headers and shapes (map), faulting in the packed weights'
 * fresh memory (fault) and packing or converting the weights into it (pack). */
typedef struct model_load_times {
    double map_s, fault_s, pack_s;
} model_load_times_t;
void model_load_times(const model_t *m, model_load_times_t *t);

#endif
