/* gpt2_model.h - private to engine/model/: the inside of a GPT-2 model, shared by the loader
 * (gpt2_load.c) and the forward pass (gpt2.c). Everything else uses engine/model/model.h.
 */
#ifndef NANO_VLLM_GPT2_MODEL_H
#define NANO_VLLM_GPT2_MODEL_H

#include "engine/model/arch.h"

typedef struct gpt2_config {
    int n_layer;    /* L */
    int n_head;     /* NH */
    int n_embd;     /* C */
    int n_ctx;      /* n_positions */
    int vocab_size; /* V */
    float ln_eps;   /* layer_norm_epsilon */
} gpt2_config_t;

/* One transformer block. GPT-2's Conv1D weights are stored [in, out], so y = x.W + b. */
typedef struct gpt2_layer {
    const float *ln1_w, *ln1_b; /* (C) */
    const float *qkv_w;         /* (C, 3C): columns are Q, K, V, each head-major */
    const float *qkv_b;         /* (3C) */
    const float *attn_proj_w;   /* (C, C) */
    const float *attn_proj_b;   /* (C) */
    const float *ln2_w, *ln2_b; /* (C) */
    const float *fc_w;          /* (C, 4C) */
    const float *fc_b;          /* (4C) */
    const float *mlp_proj_w;    /* (4C, C) */
    const float *mlp_proj_b;    /* (C) */
    /* The four matrices above packed for engine/kernels/matmul.c in the kept dtype (owned); the
     * forward pass reads only these. */
    mm_weight_t qkv_p, attn_proj_p, fc_p, mlp_proj_p;
} gpt2_layer_t;

/* Forward-pass scratch, carved from one allocation by gpt2_reserve. */
typedef struct gpt2_scratch {
    float *mem;   /* owned: everything below points into it */
    size_t bytes; /* size of mem */
    float *x;     /* (T, C) residual stream */
    float *ln;    /* (T, C) layer-norm output (sublayer outputs accumulate into x) */
    float *qkv;   /* (T, 3C) */
    float *att;   /* (T, C) attention output, heads concatenated */
    float *fch;   /* (T, 4C) MLP hidden, rows ld_fch floats apart */
    size_t ld_fch;
    float *lnf;  /* (max_logits, C) final layer norm of the logit rows */
    float *attn; /* attention scratch: per compute thread attn_floats (attention.h) */
    size_t attn_floats;
} gpt2_scratch_t;

typedef struct gpt2 {
    model_t base; /* first: a gpt2_t is a model_t */
    gpt2_config_t cfg;
    const float *wte;           /* (V, C) token embeddings */
    const float *wpe;           /* (n_ctx, C) position embeddings */
    const float *lm_head;       /* (V, C): lm_head.weight, or wte when tied */
    const float *lnf_w, *lnf_b; /* (C) */
    gpt2_layer_t *layers;       /* owned (L) */
    gpt2_scratch_t s;
    mm_weight_t lm_head_p; /* owned: lm_headᵀ (C, V) packed */
    int embed_packed;      /* 1: embeddings come from lm_head_p (tied head, wte dropped) */
} gpt2_t;

int gpt2_reserve(model_t *m, int max_tokens, int max_logits, int max_ctx);
int gpt2_forward(model_t *m, kv_cache_t *kv, const model_batch_t *b);

#endif
