/* gpt2.c - the GPT-2 forward pass over a flattened batch with paged KV (Radford et al. 2019;
 * Hugging Face GPT2LMHeadModel): token and position embeddings, then per layer
 * x += proj(attention(layernorm_1(x))) and x += mlp_proj(gelu(fc(layernorm_2(x)))), then the
 * final layer norm and the LM head.
 *
 * One step runs every row (prefill chunks and decode tokens of several sequences) through
 * each layer together: the linear layers are one matrix product over all rows, attention
 * (engine/kernels/attention.c) reads each sequence's K/V through its block table. Scratch is
 * allocated by gpt2_reserve; a step allocates nothing. Everything runs on the model's compute
 * pool (mm_pool): the matrix products split over output columns (the FC's GELU and both
 * residual adds happen as their products store Y), attention over (sequence, head) items,
 * the embedding and layer norms over row ranges: seven pool dispatches per layer (four
 * products, attention, two layer norms). Each output element is computed by the same code
 * whatever thread runs it, so the logits do not depend on the thread count.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/kernels/vec.h"
#include "engine/model/gpt2_model.h"

int gpt2_reserve(model_t *base, int max_tokens, int max_logits, int max_ctx)
{
    gpt2_t *m = (gpt2_t *)base;
    const size_t C = (size_t)m->cfg.n_embd, HS = C / (size_t)m->cfg.n_head;
    const int threads = pool_threads(mm_pool(base->mm));
    if ((size_t)max_tokens > SIZE_MAX / (16 * C * sizeof(float)))
        return -EINVAL;
    /* x, ln, qkv (3C), att, fch (4C, padded): 10 C per row; per compute thread the attention
     * scratch (one head's packed K and V, a tile of queries and its scores). */
    size_t T = (size_t)max_tokens;
    size_t per_thread = attn_scratch_floats((int)HS, max_ctx);
    /* fch's rows are 4C = 3072 floats = 12 KiB apart in GPT-2: a multiple of 4 KiB, so
     * every row of a tile of X in the MLP projection would fall in the same L1 set. One
     * cache line more per row breaks that, and the projection runs markedly faster. */
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
    s->x = mem;
    s->ln = s->x + T * C;
    s->qkv = s->ln + T * C;
    s->att = s->qkv + T * 3 * C;
    s->fch = s->att + T * C;
    s->ld_fch = ld_fch;
    s->lnf = s->fch + T * ld_fch;
    s->attn = mem + attn_at;
    s->attn_floats = per_thread;
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
    mm_matmul(m->base.mm, T, in, ldi, w, bias, out, ldo, accumulate, epi);
}

/* matmul_ld with packed rows: out's N and in's K floats apart. */
static void matmul(gpt2_t *m, float *out, const float *in, const mm_weight_t *w, const float *bias,
                   int T, int accumulate, int epi)
{
    matmul_ld(m, out, (size_t)w->N, in, (size_t)w->K, w, bias, T, accumulate, epi);
}

/* Causal self-attention of every row of layer l (engine/kernels/attention.c), which also
 * writes the rows' K/V to the cache. */
static void attention(gpt2_t *m, const kv_cache_t *kv, const model_batch_t *b, int l)
{
    const int C = m->cfg.n_embd, NH = m->cfg.n_head;
    const gpt2_scratch_t *s = &m->s;
    attn_batch_t ab = model_attn_batch(b);
    attn_layer_t a = {.q = s->qkv,
                      .k = s->qkv + C,
                      .v = s->qkv + 2 * C,
                      .ldq = 3 * (size_t)C,
                      .ldkv = 3 * (size_t)C,
                      .out = s->att,
                      .ldo = (size_t)C,
                      .NH = NH,
                      .NKV = NH,
                      .HS = C / NH,
                      .l = l,
                      .scratch = s->attn,
                      .scratch_floats = s->attn_floats,
                      .threads = m->base.scratch_threads,
                      .max_ctx = m->base.max_ctx};
    attn_forward(m->base.mm, kv, &ab, &a);
}

/* The per-row work between the matrix products, over ranges of rows on the compute pool.
 * Each row is computed by the same code whatever thread runs it, so the split does not
 * change the result. */
enum row_op {
    ROW_EMBED_LN, /* x = wte[token] + wpe[pos]; ln = layernorm(x) with (w, bias) */
    ROW_LN,       /* ln = layernorm(x) with (w, bias) */
};

/* Fewest rows worth a part of their own, per op: one row of layer norm costs several times
 * what handing a part to a (still spinning) worker does, so it splits from 2 rows on. */
static const int ROW_MIN[] = {[ROW_EMBED_LN] = 1, [ROW_LN] = 1};

typedef struct rows_job {
    const gpt2_t *m;
    const model_batch_t *b;
    const vec_ops_t *ops;
    enum row_op op;
    const float *w, *bias;
} rows_job_t;

static void embed_row(const gpt2_t *m, const model_batch_t *b, int t, float *x)
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

static void run_rows(gpt2_t *m, const model_batch_t *b, enum row_op op, const float *w,
                     const float *bias)
{
    rows_job_t j = {.m = m,
                    .b = b,
                    .ops = vec_ops_get(mm_get_kernel(m->base.mm)),
                    .op = op,
                    .w = w,
                    .bias = bias};
    pool_t *pool = mm_pool(m->base.mm);
    pool_run_parts(pool, model_row_parts(pool, b->T / ROW_MIN[op]), rows_part, &j);
}

/* Layer l, entered with ln = layernorm_1(x) of this layer; leaves x with both residual adds
 * done (by the projections, which accumulate into x) and, unless it is the last layer,
 * ln = layernorm_1(x) of the next layer. */
static void layer_forward(gpt2_t *m, const kv_cache_t *kv, const model_batch_t *b, int l)
{
    const gpt2_layer_t *w = &m->layers[l];
    const gpt2_layer_t *next = l + 1 < m->cfg.n_layer ? &m->layers[l + 1] : NULL;
    const gpt2_scratch_t *s = &m->s;
    const int T = b->T;

    matmul(m, s->qkv, s->ln, &w->qkv_p, w->qkv_b, T, 0, MM_EPI_NONE);
    attention(m, kv, b, l); /* also writes the rows' K/V to the cache */
    matmul(m, s->x, s->att, &w->attn_proj_p, w->attn_proj_b, T, 1, MM_EPI_NONE);
    run_rows(m, b, ROW_LN, w->ln2_w, w->ln2_b);
    matmul_ld(m, s->fch, s->ld_fch, s->ln, (size_t)w->fc_p.K, &w->fc_p, w->fc_b, T, 0, MM_EPI_GELU);
    matmul_ld(m, s->x, (size_t)w->mlp_proj_p.N, s->fch, s->ld_fch, &w->mlp_proj_p, w->mlp_proj_b, T,
              1, MM_EPI_NONE);
    if (next)
        run_rows(m, b, ROW_LN, next->ln1_w, next->ln1_b);
}

/* The batch was checked by model_forward (model.c). */
int gpt2_forward(model_t *base, kv_cache_t *kv, const model_batch_t *b)
{
    gpt2_t *m = (gpt2_t *)base;
    const int C = m->cfg.n_embd;
    const gpt2_scratch_t *s = &m->s;

    run_rows(m, b, ROW_EMBED_LN, m->layers[0].ln1_w, m->layers[0].ln1_b);
    for (int l = 0; l < m->cfg.n_layer; l++)
        layer_forward(m, kv, b, l);

    /* The final layer norm and the LM head only for the rows that are sampled. */
    const vec_ops_t *ops = vec_ops_get(mm_get_kernel(base->mm));
    for (int i = 0; i < b->n_logits; i++)
        ops->layernorm(s->lnf + (size_t)i * C, s->x + (size_t)b->logit_rows[i] * C, m->lnf_w,
                       m->lnf_b, C, m->cfg.ln_eps);
    if (b->n_logits)
        matmul(m, b->logits, s->lnf, &m->lm_head_p, NULL, b->n_logits, 0, MM_EPI_NONE);
    return 0;
}
