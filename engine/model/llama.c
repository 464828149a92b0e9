/* llama.c - the Llama-family forward pass over a flattened batch with paged KV (Touvron et
 * al. 2023; Hugging Face LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM): token
 * embeddings, then per layer
 *   h = rmsnorm(x);  q, k, v = h Wq (+bq), h Wk (+bk), h Wv (+bv)
 *   [Qwen3: q, k = rmsnorm of each head];  q, k = rope(q, pos), rope(k, pos)
 *   x += attention(q, k, v) Wo (+bo)        (grouped-query: NH/NKV query heads per KV head)
 *   h = rmsnorm(x);  x += (silu(h Wgate) * (h Wup)) Wdown
 * then the final RMSNorm and the LM head.
 *
 * As in gpt2.c: every linear layer is one matrix product over all rows on the compute pool
 * (q, k, v fused into one, gate and up into one; both residual adds happen as their
 * products store Y), attention is engine/kernels/attention.c's, and the per-row work (norms,
 * rotation, the SiLU gate) runs over row ranges. Each output element is computed by the
 * same code whatever thread runs it.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels/vec.h"
#include "engine/model/llama_model.h"

int llama_reserve(model_t *base, int max_tokens, int max_logits, int max_ctx)
{
    llama_t *m = (llama_t *)base;
    const llama_config_t *c = &m->cfg;
    const size_t C = (size_t)c->n_embd, HS = (size_t)c->head_dim, I = (size_t)c->n_inter;
    const size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * HS, A = (size_t)c->n_head * HS;
    const int threads = pool_threads(mm_pool(base->mm));
    size_t row = 2 * C + QKV + A + 2 * I;
    if ((size_t)max_tokens > SIZE_MAX / 2 / (row * sizeof(float)))
        return -EINVAL;
    size_t T = (size_t)max_tokens;
    size_t per_thread = attn_scratch_floats((int)HS, max_ctx);
    size_t rope = (size_t)max_ctx * HS;
    size_t attn_at = (T * row + (size_t)max_logits * C + rope + 15) / 16 * 16;
    size_t n = attn_at + (size_t)threads * per_thread;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)))
        return -ENOMEM;
    float *mem = p;
    free(m->s.mem);
    llama_scratch_t *s = &m->s;
    s->mem = mem;
    s->x = mem;
    s->ln = s->x + T * C;
    s->qkv = s->ln + T * C;
    s->att = s->qkv + T * QKV;
    s->gu = s->att + T * A;
    s->lnf = s->gu + T * 2 * I;
    s->rope = s->lnf + (size_t)max_logits * C;
    s->attn = mem + attn_at;
    s->attn_floats = per_thread;
    /* cos and sin of pos * inv_freq[i], computed in double once for every position. */
    for (size_t t = 0; t < (size_t)max_ctx; t++)
        for (size_t i = 0; i < HS / 2; i++) {
            double a = (double)t * m->inv_freq[i];
            s->rope[(t * (HS / 2) + i) * 2] = (float)cos(a);
            s->rope[(t * (HS / 2) + i) * 2 + 1] = (float)sin(a);
        }
    return 0;
}

/* out (T, N) = in (T, K) . w (+ bias) (+ out when accumulate); rows ldo and ldi apart. */
static void matmul(llama_t *m, float *out, size_t ldo, const float *in, size_t ldi,
                   const mm_weight_t *w, const float *bias, int T, int accumulate)
{
    mm_matmul(m->base.mm, T, in, ldi, w, bias, out, ldo, accumulate, MM_EPI_NONE);
}

/* Rotates each pair (x[i], x[i + HS/2]) of one head by the position's angles (Hugging
 * Face's rotate_half layout): x[i] cos - x[i + HS/2] sin, x[i + HS/2] cos + x[i] sin. */
static void rope_head(float *x, const float *cs, int HS)
{
    const int half = HS / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1], a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

/* The per-row work between the matrix products, over ranges of rows on the compute pool. */
enum row_op {
    ROW_EMBED_NORM, /* x = embed[token]; ln = rmsnorm(x) with w */
    ROW_NORM,       /* ln = rmsnorm(x) with w */
    ROW_QK,         /* q and k heads of qkv: (Qwen3) rmsnorm per head, then the rotation */
    ROW_SILU,       /* gate = silu(gate) * up over gu */
};

typedef struct rows_job {
    llama_t *m;
    const model_batch_t *b;
    const vec_ops_t *ops;
    enum row_op op;
    const float *w;
    const llama_layer_t *layer;
} rows_job_t;

static void embed_row(const llama_t *m, int32_t token, float *x)
{
    const int C = m->cfg.n_embd;
    /* With a tied LM head the embedding is read from its packed copy (column `token` of
     * lm_headᵀ), so only one copy of it stays in memory. */
    if (m->embed_packed)
        mm_weight_column(&m->lm_head_p, token, x);
    else
        memcpy(x, m->embed + (size_t)token * C, (size_t)C * sizeof(float));
}

static void qk_row(const llama_t *m, const vec_ops_t *ops, const llama_layer_t *w, float *qkv,
                   int pos)
{
    const llama_config_t *c = &m->cfg;
    const int HS = c->head_dim, heads = c->n_head + c->n_kv_head;
    const float *cs = m->s.rope + (size_t)pos * (size_t)HS;
    /* The query heads come first, then the key heads; values are not rotated. */
    for (int h = 0; h < heads; h++) {
        float *x = qkv + (size_t)h * HS;
        if (c->qk_norm)
            ops->rmsnorm(x, x, h < c->n_head ? w->q_norm : w->k_norm, HS, c->rms_eps);
        rope_head(x, cs, HS);
    }
}

static void rows_part(void *arg, int part, int parts)
{
    const rows_job_t *j = arg;
    const llama_t *m = j->m;
    const llama_scratch_t *s = &m->s;
    const llama_config_t *c = &m->cfg;
    const int C = c->n_embd, I = c->n_inter;
    const size_t QKV = (size_t)(c->n_head + 2 * c->n_kv_head) * (size_t)c->head_dim;
    int t0, t1;
    pool_split(j->b->T, parts, part, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        float *x = s->x + (size_t)t * C, *ln = s->ln + (size_t)t * C;
        switch (j->op) {
        case ROW_EMBED_NORM:
            embed_row(m, j->b->tokens[t], x);
            j->ops->rmsnorm(ln, x, j->w, C, c->rms_eps);
            break;
        case ROW_NORM:
            j->ops->rmsnorm(ln, x, j->w, C, c->rms_eps);
            break;
        case ROW_QK:
            qk_row(m, j->ops, j->layer, s->qkv + (size_t)t * QKV, j->b->pos[t]);
            break;
        case ROW_SILU: {
            float *g = s->gu + (size_t)t * 2 * (size_t)I;
            j->ops->silu_mul(g, g, g + I, I);
            break;
        }
        }
    }
}

static void run_rows(llama_t *m, const model_batch_t *b, enum row_op op, const float *w,
                     const llama_layer_t *layer)
{
    rows_job_t j = {.m = m,
                    .b = b,
                    .ops = vec_ops_get(mm_get_kernel(m->base.mm)),
                    .op = op,
                    .w = w,
                    .layer = layer};
    pool_t *pool = mm_pool(m->base.mm);
    pool_run_parts(pool, model_row_parts(pool, b->T), rows_part, &j);
}

/* Causal self-attention of every row of layer l (engine/kernels/attention.c), which also
 * writes the rows' K/V to the cache. */
static void attention(llama_t *m, const kv_cache_t *kv, const model_batch_t *b, int l)
{
    const llama_config_t *c = &m->cfg;
    const int HS = c->head_dim, NH = c->n_head, NKV = c->n_kv_head;
    const size_t QKV = (size_t)(NH + 2 * NKV) * (size_t)HS;
    const llama_scratch_t *s = &m->s;
    attn_batch_t ab = model_attn_batch(b);
    attn_layer_t a = {.q = s->qkv,
                      .k = s->qkv + (size_t)NH * HS,
                      .v = s->qkv + (size_t)(NH + NKV) * HS,
                      .ldq = QKV,
                      .ldkv = QKV,
                      .out = s->att,
                      .ldo = (size_t)NH * HS,
                      .NH = NH,
                      .NKV = NKV,
                      .HS = HS,
                      .l = l,
                      .scratch = s->attn,
                      .scratch_floats = s->attn_floats,
                      .threads = m->base.scratch_threads,
                      .max_ctx = m->base.max_ctx};
    attn_forward(m->base.mm, kv, &ab, &a);
}

/* Layer l, entered with ln = rmsnorm_in(x) of this layer; leaves x with both residual adds
 * done and, unless it is the last layer, ln = rmsnorm_in(x) of the next layer. */
static void layer_forward(llama_t *m, const kv_cache_t *kv, const model_batch_t *b, int l)
{
    const llama_config_t *c = &m->cfg;
    const llama_layer_t *w = &m->layers[l];
    const llama_layer_t *next = l + 1 < c->n_layer ? &m->layers[l + 1] : NULL;
    const llama_scratch_t *s = &m->s;
    const int T = b->T, C = c->n_embd, I = c->n_inter;

    matmul(m, s->qkv, (size_t)w->qkv_p.N, s->ln, (size_t)C, &w->qkv_p, w->qkv_b, T, 0);
    run_rows(m, b, ROW_QK, NULL, w);
    attention(m, kv, b, l);
    matmul(m, s->x, (size_t)C, s->att, (size_t)w->o_p.K, &w->o_p, w->o_b, T, 1);
    run_rows(m, b, ROW_NORM, w->post_norm, NULL);
    matmul(m, s->gu, 2 * (size_t)I, s->ln, (size_t)C, &w->gate_up_p, w->gate_up_b, T, 0);
    run_rows(m, b, ROW_SILU, NULL, NULL);
    matmul(m, s->x, (size_t)C, s->gu, 2 * (size_t)I, &w->down_p, w->down_b, T, 1);
    if (next)
        run_rows(m, b, ROW_NORM, next->in_norm, NULL);
}

/* The batch was checked by model_forward (model.c). */
int llama_forward(model_t *base, kv_cache_t *kv, const model_batch_t *b)
{
    llama_t *m = (llama_t *)base;
    const int C = m->cfg.n_embd;
    const llama_scratch_t *s = &m->s;

    run_rows(m, b, ROW_EMBED_NORM, m->layers[0].in_norm, NULL);
    for (int l = 0; l < m->cfg.n_layer; l++)
        layer_forward(m, kv, b, l);

    /* The final norm and the LM head only for the rows that are sampled. */
    const vec_ops_t *ops = vec_ops_get(mm_get_kernel(base->mm));
    for (int i = 0; i < b->n_logits; i++)
        ops->rmsnorm(s->lnf + (size_t)i * C, s->x + (size_t)b->logit_rows[i] * C, m->norm, C,
                     m->cfg.rms_eps);
    if (b->n_logits)
        matmul(m, b->logits, (size_t)m->lm_head_p.N, s->lnf, (size_t)C, &m->lm_head_p, NULL,
               b->n_logits, 0);
    return 0;
}
