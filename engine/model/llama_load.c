/* llama_load.c - config.json and the weights of a Llama-family checkpoint in Hugging Face's
 * names (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...,
 * model.norm.weight, lm_head.weight). The loading itself (conversion, shape checks,
 * packing) is model.c's; this file says which tensors each variant has, how RoPE's
 * frequencies are scaled and how the products are packed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model/llama_model.h"

/* A boolean field; absent or null keeps *v. */
static int cfg_bool(json_t *root, const char *key, int *v, char *err, size_t errlen)
{
    json_t *j = json_object_get(root, key);
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_boolean(j))
        return st_fail(err, errlen, -EINVAL, "config.json: %s is not true or false", key);
    *v = json_is_true(j);
    return 0;
}

/* rope_scaling: null, type "default" (none) or "llama3" with its four numbers. */
static int parse_rope_scaling(json_t *root, llama_config_t *c, char *err, size_t errlen)
{
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs))
        return st_fail(err, errlen, -EINVAL, "config.json: rope_scaling is not an object");
    json_t *t = json_object_get(rs, "rope_type");
    if (!t)
        t = json_object_get(rs, "type");
    const char *type = json_string_value(t);
    if (type && strcmp(type, "default") == 0)
        return 0;
    if (!type || strcmp(type, "llama3") != 0)
        return st_fail(err, errlen, -EINVAL,
                       "config.json: rope_scaling type \"%s\" is not supported (llama3 and "
                       "default are)",
                       type ? type : "?");
    float factor = 8, low = 1, high = 4;
    int orig = 8192;
    int rc = model_cfg_float(rs, "factor", 0, 1e6, &factor, err, errlen);
    rc = rc ? rc : model_cfg_float(rs, "low_freq_factor", 0, 1e6, &low, err, errlen);
    rc = rc ? rc : model_cfg_float(rs, "high_freq_factor", 0, 1e6, &high, err, errlen);
    rc = rc ? rc
            : model_cfg_int(rs, "original_max_position_embeddings", 1, 1 << 24, &orig, err, errlen);
    if (rc)
        return rc;
    if (!(high > low))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: rope_scaling high_freq_factor %g must exceed "
                       "low_freq_factor %g",
                       (double)high, (double)low);
    c->rope_factor = factor;
    c->rope_low = low;
    c->rope_high = high;
    c->rope_orig_max = orig;
    return 0;
}

static int parse_config(json_t *root, const char *arch, llama_config_t *c, char *err, size_t errlen)
{
    const int qwen2 = strcmp(arch, "Qwen2ForCausalLM") == 0;
    const int qwen3 = strcmp(arch, "Qwen3ForCausalLM") == 0;
    /* Hugging Face's LlamaConfig defaults (Qwen2Config's and Qwen3Config's where they
     * differ), used for absent fields as transformers does. */
    *c = (llama_config_t){.n_layer = 32,
                          .n_head = 32,
                          .n_embd = 4096,
                          .n_inter = 11008,
                          .vocab_size = 32000,
                          .max_pos = 2048,
                          .rms_eps = 1e-6f,
                          .rope_theta = 10000,
                          .tied = 0};
    if (qwen2 || qwen3) {
        c->vocab_size = 151936;
        c->max_pos = 32768;
        c->n_inter = 22016;
    }
    int rc = 0, kv = -1, hd = -1, bias = 0;
    float theta = 10000;
    rc = rc ? rc : model_cfg_int(root, "num_hidden_layers", 1, 1024, &c->n_layer, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "num_attention_heads", 1, 1024, &c->n_head, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "num_key_value_heads", 1, 1024, &kv, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "hidden_size", 1, 65536, &c->n_embd, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "head_dim", 2, 1024, &hd, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "intermediate_size", 1, 1 << 20, &c->n_inter, err, errlen);
    rc = rc ? rc : model_cfg_int(root, "vocab_size", 1, 1 << 24, &c->vocab_size, err, errlen);
    rc = rc ? rc
            : model_cfg_int(root, "max_position_embeddings", 1, 1 << 24, &c->max_pos, err, errlen);
    rc = rc ? rc : model_cfg_float(root, "rms_norm_eps", 0, 1, &c->rms_eps, err, errlen);
    rc = rc ? rc : model_cfg_float(root, "rope_theta", 0, 1e12, &theta, err, errlen);
    rc = rc ? rc : cfg_bool(root, "attention_bias", &bias, err, errlen);
    rc = rc ? rc : cfg_bool(root, "mlp_bias", &c->mlp_bias, err, errlen);
    rc = rc ? rc : cfg_bool(root, "tie_word_embeddings", &c->tied, err, errlen);
    rc = rc ? rc : parse_rope_scaling(root, c, err, errlen);
    if (rc)
        return rc;
    c->rope_theta = theta;
    c->n_kv_head = kv > 0 ? kv : c->n_head;
    if (hd > 0) {
        c->head_dim = hd;
    } else if (c->n_embd % c->n_head != 0) {
        return st_fail(err, errlen, -EINVAL,
                       "config.json: hidden_size %d is not divisible by num_attention_heads %d",
                       c->n_embd, c->n_head);
    } else {
        c->head_dim = c->n_embd / c->n_head;
    }
    if (c->head_dim % 2)
        return st_fail(err, errlen, -EINVAL,
                       "config.json: head size %d is odd (the rotation works on pairs)",
                       c->head_dim);
    if (c->n_head % c->n_kv_head != 0)
        return st_fail(err, errlen, -EINVAL,
                       "config.json: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d",
                       c->n_head, c->n_kv_head);
    if (c->rms_eps < 1e-30f)
        return st_fail(err, errlen, -EINVAL, "config.json: rms_norm_eps %g is too small",
                       (double)c->rms_eps);
    /* Qwen2 always has q, k, v biases and no o_proj bias; Llama's attention_bias puts them
     * on all four; Qwen3's on q, k, v and o as Llama's. */
    c->qkv_bias = qwen2 || bias;
    c->o_bias = !qwen2 && bias;
    c->qk_norm = qwen3;
    json_t *j = json_object_get(root, "hidden_act");
    if (j && (!json_is_string(j) || strcmp(json_string_value(j), "silu") != 0))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: hidden_act \"%s\" is not supported (silu is)",
                       json_is_string(j) ? json_string_value(j) : "?");
    j = json_object_get(root, "use_sliding_window");
    if (j && json_is_true(j))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: use_sliding_window true is not supported");
    return 0;
}

/* RoPE's frequencies, theta^(-2i/HS), with Llama 3's scaling when configured (Hugging Face
 * _compute_llama3_parameters): long wavelengths divided by factor, short ones kept, the
 * band between blended smoothly. */
static void rope_freqs(const llama_config_t *c, double *inv_freq)
{
    const int HS = c->head_dim;
    for (int i = 0; i < HS / 2; i++) {
        double f = 1.0 / pow(c->rope_theta, (double)(2 * i) / HS);
        if (c->rope_factor > 0) {
            double orig = c->rope_orig_max, wavelen = 2 * M_PI / f;
            double low_wavelen = orig / c->rope_low, high_wavelen = orig / c->rope_high;
            if (wavelen > low_wavelen) {
                f /= c->rope_factor;
            } else if (!(wavelen < high_wavelen)) {
                double smooth = (orig / wavelen - c->rope_low) / (c->rope_high - c->rope_low);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

/* The per-layer tensors, model.layers.N.<name>. */
enum {
    T_IN_NORM,
    T_Q,
    T_K,
    T_V,
    T_QB,
    T_KB,
    T_VB,
    T_QN,
    T_KN,
    T_O,
    T_OB,
    T_POST_NORM,
    T_GATE,
    T_UP,
    T_GATE_B,
    T_UP_B,
    T_DOWN,
    T_DOWN_B,
    N_LAYER_T
};
static const char *const layer_names[N_LAYER_T] = {
    "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.q_proj.bias",   "self_attn.k_proj.bias",
    "self_attn.v_proj.bias",   "self_attn.q_norm.weight", "self_attn.k_norm.weight",
    "self_attn.o_proj.weight", "self_attn.o_proj.bias",   "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.gate_proj.bias",
    "mlp.up_proj.bias",        "mlp.down_proj.weight",    "mlp.down_proj.bias",
};

/* Whether layer tensor i exists in this configuration. */
static int layer_has(const llama_config_t *c, int i)
{
    switch (i) {
    case T_QB:
    case T_KB:
    case T_VB:
        return c->qkv_bias;
    case T_QN:
    case T_KN:
        return c->qk_norm;
    case T_OB:
        return c->o_bias;
    case T_GATE_B:
    case T_UP_B:
    case T_DOWN_B:
        return c->mlp_bias;
    default:
        return 1;
    }
}

static int get_layer(model_loader_t *ld, int l, llama_layer_t *w)
{
    const llama_config_t *c = &((llama_t *)ld->m)->cfg;
    const int64_t C = c->n_embd, HS = c->head_dim, Q = (int64_t)c->n_head * HS;
    const int64_t KV = (int64_t)c->n_kv_head * HS, I = c->n_inter;
    const int64_t shape[N_LAYER_T][2] = {
        [T_IN_NORM] = {C, 0}, [T_Q] = {Q, C},      [T_K] = {KV, C},     [T_V] = {KV, C},
        [T_QB] = {Q, 0},      [T_KB] = {KV, 0},    [T_VB] = {KV, 0},    [T_QN] = {HS, 0},
        [T_KN] = {HS, 0},     [T_O] = {C, Q},      [T_OB] = {C, 0},     [T_POST_NORM] = {C, 0},
        [T_GATE] = {I, C},    [T_UP] = {I, C},     [T_GATE_B] = {I, 0}, [T_UP_B] = {I, 0},
        [T_DOWN] = {C, I},    [T_DOWN_B] = {C, 0},
    };
    const float **dst[N_LAYER_T] = {
        [T_IN_NORM] = &w->in_norm, [T_Q] = &w->q_w,       [T_K] = &w->k_w,
        [T_V] = &w->v_w,           [T_QB] = &w->q_b,      [T_KB] = &w->k_b,
        [T_VB] = &w->v_b,          [T_QN] = &w->q_norm,   [T_KN] = &w->k_norm,
        [T_O] = &w->o_w,           [T_OB] = &w->o_b,      [T_POST_NORM] = &w->post_norm,
        [T_GATE] = &w->gate_w,     [T_UP] = &w->up_w,     [T_GATE_B] = &w->gate_b,
        [T_UP_B] = &w->up_b,       [T_DOWN] = &w->down_w, [T_DOWN_B] = &w->down_b,
    };
    for (int i = 0; i < N_LAYER_T; i++) {
        if (!layer_has(c, i))
            continue;
        char name[96];
        snprintf(name, sizeof(name), "model.layers.%d.%s", l, layer_names[i]);
        int rc = model_get(ld, name, shape[i][0], shape[i][1], dst[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* Parses "model.layers.N.rest" with N a plain decimal; returns rest or NULL. */
static const char *layer_index(const char *name, long *n)
{
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    const char *p = name + sizeof(prefix) - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
        return NULL;
    long v = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((v = v * 10 + (*p - '0')) > 1L << 30)
            return NULL;
    if (*p != '.')
        return NULL;
    *n = v;
    return p + 1;
}

/* Refuses tensors config.json has no place for (layers at or beyond num_hidden_layers,
 * biases or norms this configuration does not have, names that are not the architecture's),
 * as vLLM does. The rotary buffer some checkpoints carry (rotary_emb.inv_freq) is ignored:
 * the frequencies come from config.json. */
static int check_unused(const llama_t *m, char *err, size_t errlen)
{
    const st_set_t *st = &m->base.st;
    const llama_config_t *c = &m->cfg;
    for (int i = 0; i < st->n_tensors; i++) {
        const st_tensor_t *t = &st->tensors[i];
        const char *file = st->files[t->file].name, *rest;
        long l;
        if (strcmp(t->name, "model.embed_tokens.weight") == 0 ||
            strcmp(t->name, "model.norm.weight") == 0 ||
            (!c->tied && strcmp(t->name, "lm_head.weight") == 0))
            continue;
        if ((rest = layer_index(t->name, &l)) != NULL) {
            if (strcmp(rest, "self_attn.rotary_emb.inv_freq") == 0)
                continue;
            int known = -1;
            for (int k = 0; k < N_LAYER_T; k++)
                if (strcmp(rest, layer_names[k]) == 0)
                    known = k;
            if (known >= 0 && l >= c->n_layer)
                return st_fail(err, errlen, -EINVAL,
                               "%s: tensor %s is beyond num_hidden_layers = %d of config.json",
                               file, t->name, c->n_layer);
            if (known >= 0 && layer_has(c, known))
                continue;
        }
        return st_fail(err, errlen, -EINVAL,
                       "%s: tensor %s is not a weight of %s with this config.json", file, t->name,
                       m->base.desc.arch);
    }
    return 0;
}

static int get_all(model_loader_t *ld)
{
    llama_t *m = (llama_t *)ld->m;
    const llama_config_t *c = &m->cfg;
    const int64_t C = c->n_embd, V = c->vocab_size;
    int rc = model_get(ld, "model.embed_tokens.weight", V, C, &m->embed);
    for (int l = 0; l < c->n_layer && !rc; l++)
        rc = get_layer(ld, l, &m->layers[l]);
    rc = rc ? rc : model_get(ld, "model.norm.weight", C, 0, &m->norm);
    if (!rc && !c->tied)
        rc = model_get(ld, "lm_head.weight", V, C, &m->lm_head);
    else if (!rc && ld->filling)
        m->lm_head = m->embed;
    if (!rc && !ld->filling)
        rc = check_unused(m, ld->err, ld->errlen);
    return rc;
}

/* Packs parts (each rows[i] x K, [out, in] as Hugging Face stores them) as one product
 * W (K, sum rows): their outputs side by side. buf has room for K x sum rows floats. */
static int pack_cat(llama_t *m, mm_weight_t *w, const float *const *parts, const int *rows, int n,
                    int K, float *buf)
{
    size_t at = 0;
    int N = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + at, parts[i], (size_t)rows[i] * (size_t)K * sizeof(float));
        at += (size_t)rows[i] * (size_t)K;
        N += rows[i];
    }
    int rc = mm_weight_init_mt(m->base.mm, w, buf, K, N, (size_t)K, 1, m->base.dtype);
    if (!rc) {
        for (int i = 0; i < n; i++)
            model_drop(&m->base, parts[i], (size_t)rows[i] * (size_t)K);
        model_count_packed(&m->base, w);
    }
    return rc;
}

/* Concatenates n bias vectors (or NULL when the first is NULL) into an owned vector. */
static int cat_bias(float **out, const float *const *parts, const int *rows, int n)
{
    *out = NULL;
    if (!parts[0])
        return 0;
    size_t N = 0;
    for (int i = 0; i < n; i++)
        N += (size_t)rows[i];
    float *b = malloc(N * sizeof(float));
    if (!b)
        return -ENOMEM;
    for (int i = 0, at = 0; i < n; at += rows[i], i++)
        memcpy(b + at, parts[i], (size_t)rows[i] * sizeof(float));
    *out = b;
    return 0;
}

/* Packs every product (see engine/kernels/matmul.h): per layer QKV, O, gate+up, down, and
 * the LM head. */
static int pack_weights(llama_t *m, char *err, size_t errlen)
{
    const llama_config_t *c = &m->cfg;
    const int C = c->n_embd, HS = c->head_dim, I = c->n_inter, V = c->vocab_size;
    const int Q = c->n_head * HS, KV = c->n_kv_head * HS;
    size_t most = (size_t)C * (size_t)(Q + 2 * KV) > (size_t)C * 2 * (size_t)I
                      ? (size_t)C * (size_t)(Q + 2 * KV)
                      : (size_t)C * 2 * (size_t)I;
    float *buf = malloc(most * sizeof(float));
    int rc = buf ? 0 : -ENOMEM;
    for (int l = 0; l < c->n_layer && !rc; l++) {
        llama_layer_t *w = &m->layers[l];
        const float *qkv[3] = {w->q_w, w->k_w, w->v_w}, *qkv_b[3] = {w->q_b, w->k_b, w->v_b};
        const float *gu[2] = {w->gate_w, w->up_w}, *gu_b[2] = {w->gate_b, w->up_b};
        const int qkv_rows[3] = {Q, KV, KV}, gu_rows[2] = {I, I};
        rc = pack_cat(m, &w->qkv_p, qkv, qkv_rows, 3, C, buf);
        rc = rc ? rc : cat_bias(&w->qkv_b, qkv_b, qkv_rows, 3);
        rc = rc ? rc : model_pack(&m->base, &w->o_p, w->o_w, Q, C, 1);
        rc = rc ? rc : pack_cat(m, &w->gate_up_p, gu, gu_rows, 2, C, buf);
        rc = rc ? rc : cat_bias(&w->gate_up_b, gu_b, gu_rows, 2);
        rc = rc ? rc : model_pack(&m->base, &w->down_p, w->down_w, I, C, 1);
    }
    free(buf);
    if (!rc) {
        rc = model_pack(&m->base, &m->lm_head_p, m->lm_head, C, V, 1);
        m->embed_packed = !rc && m->lm_head == m->embed;
    }
    if (rc)
        return st_fail(err, errlen, rc, "%s: out of memory packing the weights as %s",
                       m->base.st.source ? m->base.st.source : "model",
                       model_dtype_name(m->base.dtype));
    return 0;
}

static void llama_free(model_t *base)
{
    llama_t *m = (llama_t *)base;
    free(m->s.mem);
    for (int l = 0; m->layers && l < m->cfg.n_layer; l++) {
        llama_layer_t *w = &m->layers[l];
        mm_weight_free(&w->qkv_p);
        mm_weight_free(&w->o_p);
        mm_weight_free(&w->gate_up_p);
        mm_weight_free(&w->down_p);
        free(w->qkv_b);
        free(w->gate_up_b);
    }
    mm_weight_free(&m->lm_head_p);
    free(m->layers);
    free(m->inv_freq);
}

static const model_ops_t llama_ops = {llama_reserve, llama_forward, llama_free};

int llama_load(model_t **out, const char *dir, json_t *root, const char *arch, int dtype,
               const char *kernel, char *err, size_t errlen)
{
    llama_t *m = calloc(1, sizeof(*m));
    *out = m ? &m->base : NULL;
    if (!m)
        return st_fail(err, errlen, -ENOMEM, "out of memory");
    m->base.ops = &llama_ops;
    int rc = parse_config(root, arch, &m->cfg, err, errlen);
    if (rc)
        return rc;
    const llama_config_t *c = &m->cfg;
    m->base.desc = (model_desc_t){.arch = arch,
                                  .n_layer = c->n_layer,
                                  .n_head = c->n_head,
                                  .n_kv_head = c->n_kv_head,
                                  .head_size = c->head_dim,
                                  .n_embd = c->n_embd,
                                  .vocab_size = c->vocab_size,
                                  .max_pos = c->max_pos};
    rc = model_cfg_eos(root, "config.json", &m->base.desc, err, errlen);
    if (rc)
        return rc;
    m->layers = calloc((size_t)c->n_layer, sizeof(*m->layers));
    m->inv_freq = malloc((size_t)(c->head_dim / 2) * sizeof(double));
    if (!m->layers || !m->inv_freq)
        return st_fail(err, errlen, -ENOMEM, "out of memory");
    rope_freqs(c, m->inv_freq);
    model_loader_t ld = {
        .m = &m->base, .layer_prefix = "model.layers.", .err = err, .errlen = errlen};
    rc = model_load_weights(&m->base, dir, &ld, get_all);
    rc = rc ? rc : model_kernel_init(&m->base, dtype, ld.matrix_dtype, kernel, err, errlen);
    rc = rc ? rc : pack_weights(m, err, errlen);
    if (!rc)
        model_load_done(&m->base, &ld);
    return rc;
}
