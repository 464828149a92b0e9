/* gpt2_model.h - private to engine/: the inside of gpt2_t, shared by the loader
 * (gpt2_load.c) and the forward pass (gpt2.c). Everything else uses engine/model/gpt2.h.
 */
#ifndef NANO_VLLM_GPT2_MODEL_H
#define NANO_VLLM_GPT2_MODEL_H

#include "engine/model/gpt2.h"
#include "engine/kernels/matmul.h"
#include "engine/model/safetensors.h"

/* One transformer block. GPT-2's Conv1D weights are stored [in, out], so y = x.W + b. */
typedef struct gpt2_layer {
    const float *ln1_w, *ln1_b;     /* (C) */
    const float *qkv_w;             /* (C, 3C): columns are Q, K, V, each head-major */
    const float *qkv_b;             /* (3C) */
    const float *attn_proj_w;       /* (C, C) */
    const float *attn_proj_b;       /* (C) */
    const float *ln2_w, *ln2_b;     /* (C) */
    const float *fc_w;              /* (C, 4C) */
    const float *fc_b;              /* (4C) */
    const float *mlp_proj_w;        /* (4C, C) */
    const float *mlp_proj_b;        /* (C) */
    /* The four matrices above packed for engine/kernels/matmul.c in the kept dtype (owned); the
     * forward pass reads only these. */
    mm_weight_t qkv_p, attn_proj_p, fc_p, mlp_proj_p;
} gpt2_layer_t;

/* Forward-pass scratch, carved from one allocation by gpt2_reserve. */
typedef struct gpt2_scratch {
    float *mem;       /* owned: everything below points into it */
    size_t bytes;     /* size of mem */
    int max_tokens;   /* rows per step */
    int max_logits;   /* logit rows per step */
    int max_ctx;      /* longest context attended */
    float *x;         /* (T, C) residual stream */
    float *ln;        /* (T, C) layer-norm output (sublayer outputs accumulate into x) */
    float *qkv;       /* (T, 3C) */
    float *att;       /* (T, C) attention output, heads concatenated */
    float *fch;       /* (T, 4C) MLP hidden, rows ld_fch floats apart */
    size_t ld_fch;
    float *lnf;       /* (max_logits, C) final layer norm of the logit rows */
    /* Attention scratch of each compute thread (threads of them, attn_floats apart): one
     * head's K and V packed from the blocks as matmul panels, a tile of scaled queries
     * (ATTN_TILE, HS) and its attention weights (ATTN_TILE, max_ctx); see gpt2_reserve. */
    float *attn;
    size_t attn_floats;
    int threads;      /* compute threads the attention scratch was sized for */
} gpt2_scratch_t;

struct gpt2 {
    gpt2_config_t cfg;
    st_set_t st;            /* owned: the mapped checkpoint; F32 tensors point into it
                             * (closed after loading when every weight was converted) */
    float *converted;       /* owned: F16/BF16 (and misaligned F32) weights as F32 */
    size_t n_converted;     /* floats in converted */
    size_t weight_bytes;    /* bytes of weights as used, the tied LM head counted once */
    const float *wte;       /* (V, C) token embeddings */
    const float *wpe;       /* (n_ctx, C) position embeddings */
    const float *lm_head;   /* (V, C): lm_head.weight, or wte when tied */
    const float *lnf_w, *lnf_b; /* (C) */
    gpt2_layer_t *layers;   /* owned (L) */
    gpt2_scratch_t s;
    mm_t *mm;               /* owned: matmul kernels and the compute thread pool */
    mm_weight_t lm_head_p;  /* owned: lm_headᵀ (C, V) packed */
    int dtype;              /* enum eng_dtype the matrices are kept in */
    int embed_packed;       /* 1: embeddings come from lm_head_p (tied head, wte dropped) */
};

#endif
