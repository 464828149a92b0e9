/* llama_model.h - private to engine/model/: the inside of a Llama-family model
 * (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM), shared by the loader (llama_load.c)
 * and the forward pass (llama.c). Everything else uses engine/model/model.h.
 *
 * Dimensions: C hidden size, NH query heads, NKV KV heads, HS head size (head_dim, not
 * necessarily C / NH), I intermediate size, V vocabulary, L layers, QKV = (NH + 2 NKV) HS.
 */
#ifndef NANO_VLLM_LLAMA_MODEL_H
#define NANO_VLLM_LLAMA_MODEL_H

#include "engine/model/arch.h"

typedef struct llama_config {
    int n_layer;    /* L: num_hidden_layers */
    int n_head;     /* NH: num_attention_heads */
    int n_kv_head;  /* NKV: num_key_value_heads */
    int n_embd;     /* C: hidden_size */
    int head_dim;   /* HS: head_dim, else C / NH */
    int n_inter;    /* I: intermediate_size */
    int vocab_size; /* V */
    int max_pos;    /* max_position_embeddings */
    float rms_eps;  /* rms_norm_eps */
    double rope_theta;
    /* rope_scaling of type llama3 (Llama 3.1/3.2); factor 0 = none. */
    double rope_factor, rope_low, rope_high;
    int rope_orig_max; /* original_max_position_embeddings */
    int qkv_bias;      /* bias on q, k, v (Qwen2; attention_bias) */
    int o_bias;        /* bias on o_proj (attention_bias) */
    int mlp_bias;      /* bias on gate, up, down (mlp_bias) */
    int qk_norm;       /* per-head RMSNorm of q and k before the rotation (Qwen3) */
    int tied;          /* tie_word_embeddings: lm_head is embed_tokens */
} llama_config_t;

/* One decoder layer. Hugging Face Linear weights are stored [out, in]: y = x Wᵀ + b. */
typedef struct llama_layer {
    const float *in_norm;         /* (C) input_layernorm */
    const float *q_w, *k_w, *v_w; /* (NH HS, C), (NKV HS, C), (NKV HS, C) */
    const float *q_b, *k_b, *v_b; /* (NH HS), (NKV HS), (NKV HS) or NULL */
    const float *q_norm, *k_norm; /* (HS) or NULL */
    const float *o_w;             /* (C, NH HS) */
    const float *o_b;             /* (C) or NULL */
    const float *post_norm;       /* (C) post_attention_layernorm */
    const float *gate_w, *up_w;   /* (I, C) */
    const float *gate_b, *up_b;   /* (I) or NULL */
    const float *down_w;          /* (C, I) */
    const float *down_b;          /* (C) or NULL */
    /* Packed for engine/kernels/matmul.c (owned): q, k, v as one product (QKV columns: the
     * NH query heads, then the NKV key heads, then the NKV value heads) and gate, up as one
     * (2I columns: gate, then up). The forward pass reads only these. */
    mm_weight_t qkv_p, o_p, gate_up_p, down_p;
    float *qkv_b;     /* owned (QKV) or NULL */
    float *gate_up_b; /* owned (2I) or NULL */
} llama_layer_t;

/* Forward-pass scratch, carved from one allocation by llama_reserve. */
typedef struct llama_scratch {
    float *mem;  /* owned: everything below points into it */
    float *x;    /* (T, C) residual stream */
    float *ln;   /* (T, C) RMSNorm output */
    float *qkv;  /* (T, QKV) */
    float *att;  /* (T, NH HS) attention output, heads concatenated */
    float *gu;   /* (T, 2I) gate and up; silu(gate) * up is written over gate */
    float *lnf;  /* (max_logits, C) final norm of the logit rows */
    float *rope; /* (max_ctx, HS/2, 2) cos and sin of each position and frequency */
    float *attn; /* attention scratch: per compute thread attn_floats (attention.h) */
    size_t attn_floats;
} llama_scratch_t;

typedef struct llama {
    model_t base; /* first: a llama_t is a model_t */
    llama_config_t cfg;
    const float *embed;    /* (V, C) model.embed_tokens.weight */
    const float *lm_head;  /* (V, C) lm_head.weight, or embed when tied */
    const float *norm;     /* (C) model.norm.weight */
    llama_layer_t *layers; /* owned (L) */
    llama_scratch_t s;
    mm_weight_t lm_head_p; /* owned: lm_headᵀ (C, V) packed */
    int embed_packed;      /* 1: embeddings come from lm_head_p (tied head) */
    double *inv_freq;      /* owned (HS/2): RoPE frequencies, llama3 scaling applied */
} llama_t;

int llama_load(model_t **out, const char *dir, json_t *root, const char *arch, int dtype,
               const char *kernel, char *err, size_t errlen);
int llama_reserve(model_t *m, int max_tokens, int max_logits, int max_ctx);
int llama_forward(model_t *m, kv_cache_t *kv, const model_batch_t *b);

#endif
