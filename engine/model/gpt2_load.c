/* gpt2_load.c - GPT-2's config.json and weights (Hugging Face GPT2LMHeadModel names, with
 * or without the "transformer." prefix). The loading itself (conversion, shape checks,
 * packing) is model.c's; this file says which tensors GPT-2 has and how they are packed.
 */
#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model/gpt2_model.h"

/* Reads an integer field; absent fields keep *v (the Hugging Face default). */
#define cfg_int model_cfg_int

/* The activations that are exactly GPT-2's tanh-form GELU (Hugging Face names). */
static int activation_ok(const char *a)
{
    return strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 ||
           strcmp(a, "gelu_fast") == 0;
}

static int parse_config(json_t *root, gpt2_config_t *c, char *err, size_t errlen)
{
    /* Hugging Face GPT2Config defaults, used for absent fields as transformers does. */
    *c = (gpt2_config_t){.n_layer = 12,
                         .n_head = 12,
                         .n_embd = 768,
                         .n_ctx = 1024,
                         .vocab_size = 50257,
                         .ln_eps = 1e-5f};
    int rc = 0;
    rc = rc ? rc : cfg_int(root, "n_layer", 1, 1024, &c->n_layer, err, errlen);
    rc = rc ? rc : cfg_int(root, "n_head", 1, 1024, &c->n_head, err, errlen);
    rc = rc ? rc : cfg_int(root, "n_embd", 1, 65536, &c->n_embd, err, errlen);
    rc = rc ? rc : cfg_int(root, "n_ctx", 1, 1 << 20, &c->n_ctx, err, errlen);
    rc = rc ? rc : cfg_int(root, "n_positions", 1, 1 << 20, &c->n_ctx, err, errlen);
    rc = rc ? rc : cfg_int(root, "vocab_size", 1, 1 << 24, &c->vocab_size, err, errlen);
    if (rc)
        return rc;
    if (c->n_embd % c->n_head != 0)
        return st_fail(err, errlen, -EINVAL, "config.json: n_embd %d is not divisible by n_head %d",
                       c->n_embd, c->n_head);
    json_t *j = json_object_get(root, "layer_norm_epsilon");
    if (j) {
        double e = json_number_value(j);
        /* Kept as a float: below FLT_MIN it would round to 0 (or a subnormal), and a
         * constant row would then divide by zero. */
        if (!json_is_number(j) || !(e >= FLT_MIN && e < 1))
            return st_fail(err, errlen, -EINVAL,
                           "config.json: layer_norm_epsilon must be in (0, 1) and at least %g "
                           "(the smallest normal float)",
                           (double)FLT_MIN);
        c->ln_eps = (float)e;
    }
    j = json_object_get(root, "activation_function");
    if (j && (!json_is_string(j) || !activation_ok(json_string_value(j))))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: activation_function \"%s\" is not supported (gelu_new is)",
                       json_is_string(j) ? json_string_value(j) : "?");
    /* Variants of GPT-2 this engine does not implement. */
    j = json_object_get(root, "n_inner");
    if (j && !json_is_null(j) && !(json_is_integer(j) && json_integer_value(j) == 4 * c->n_embd))
        return st_fail(err, errlen, -EINVAL, "config.json: n_inner must be null or 4 * n_embd (%d)",
                       4 * c->n_embd);
    j = json_object_get(root, "scale_attn_weights");
    if (j && !json_is_true(j))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: scale_attn_weights false is not supported");
    j = json_object_get(root, "scale_attn_by_inverse_layer_idx");
    if (j && json_is_true(j))
        return st_fail(err, errlen, -EINVAL,
                       "config.json: scale_attn_by_inverse_layer_idx true is not supported");
    return 0;
}

/* The per-layer weights, h.N.<name>, in the order of gpt2_layer_t. */
static const char *const layer_names[12] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};

static int get_layer(model_loader_t *ld, int l, gpt2_layer_t *w)
{
    const int64_t C = ((gpt2_t *)ld->m)->cfg.n_embd;
    const int64_t shape[12][2] = {{C, 0}, {C, 0}, {C, 3 * C}, {3 * C, 0}, {C, C},     {C, 0},
                                  {C, 0}, {C, 0}, {C, 4 * C}, {4 * C, 0}, {4 * C, C}, {C, 0}};
    const float **dst[12] = {&w->ln1_w,       &w->ln1_b,       &w->qkv_w,      &w->qkv_b,
                             &w->attn_proj_w, &w->attn_proj_b, &w->ln2_w,      &w->ln2_b,
                             &w->fc_w,        &w->fc_b,        &w->mlp_proj_w, &w->mlp_proj_b};
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof(name), "h.%d.%s", l, layer_names[i]);
        int rc = model_get(ld, name, shape[i][0], shape[i][1], dst[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_unused(const gpt2_t *m, char *err, size_t errlen);

static int get_all(model_loader_t *ld)
{
    gpt2_t *m = (gpt2_t *)ld->m;
    const int64_t C = m->cfg.n_embd, V = m->cfg.vocab_size;
    int rc = model_get(ld, "wte.weight", V, C, &m->wte);
    rc = rc ? rc : model_get(ld, "wpe.weight", m->cfg.n_ctx, C, &m->wpe);
    for (int l = 0; l < m->cfg.n_layer && !rc; l++)
        rc = get_layer(ld, l, &m->layers[l]);
    rc = rc ? rc : model_get(ld, "ln_f.weight", C, 0, &m->lnf_w);
    rc = rc ? rc : model_get(ld, "ln_f.bias", C, 0, &m->lnf_b);
    /* The LM head is tied to wte unless the checkpoint carries its own. */
    if (!rc && st_find(&m->base.st, "lm_head.weight"))
        rc = model_get(ld, "lm_head.weight", V, C, &m->lm_head);
    else if (!rc && ld->filling)
        m->lm_head = m->wte;
    /* Tensors config.json has no place for fail before anything is converted. */
    if (!rc && !ld->filling)
        rc = check_unused(m, ld->err, ld->errlen);
    return rc;
}

/* Parses "h.N.rest" with N a plain decimal (no sign, no leading zero); returns rest or NULL. */
static const char *layer_index(const char *name, long *n)
{
    if (strncmp(name, "h.", 2) != 0 || name[2] < '0' || name[2] > '9' ||
        (name[2] == '0' && name[3] != '.'))
        return NULL;
    long v = 0;
    const char *p = name + 2;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((v = v * 10 + (*p - '0')) > 1L << 30)
            return NULL;
    if (*p != '.')
        return NULL;
    *n = v;
    return p + 1;
}

/* Whether rest (what follows "h.N.") names a layer tensor of the GPT-2 layout: one of the
 * twelve weights, or a buffer Hugging Face checkpoints carry along (the causal mask attn.bias,
 * the constant attn.masked_bias), which the engine does not read. */
static int layer_tensor_name(const char *rest)
{
    if (strcmp(rest, "attn.bias") == 0 || strcmp(rest, "attn.masked_bias") == 0)
        return 1;
    for (int i = 0; i < 12; i++)
        if (strcmp(rest, layer_names[i]) == 0)
            return 1;
    return 0;
}

/* Refuses a checkpoint with tensors config.json has no place for, as vLLM does: layers at or
 * beyond n_layer (a config.json that says fewer layers than the weights hold), names that are
 * not GPT-2's, and a weight present both with and without the "transformer." prefix (only one
 * of the two would be used). Runs after get_all has found every tensor it needs. */
static int check_unused(const gpt2_t *m, char *err, size_t errlen)
{
    static const char prefix[] = "transformer.";
    const st_set_t *st = &m->base.st;
    for (int i = 0; i < st->n_tensors; i++) {
        const st_tensor_t *t = &st->tensors[i];
        const char *file = st->files[t->file].name, *base = t->name, *rest;
        int prefixed = strncmp(base, prefix, sizeof(prefix) - 1) == 0;
        if (prefixed)
            base += sizeof(prefix) - 1;
        long l;
        if (!prefixed && strcmp(base, "lm_head.weight") == 0)
            continue;
        if ((rest = layer_index(base, &l)) != NULL && layer_tensor_name(rest)) {
            if (l >= m->cfg.n_layer)
                return st_fail(err, errlen, -EINVAL,
                               "%s: tensor %s is beyond n_layer = %d of config.json", file, t->name,
                               m->cfg.n_layer);
        } else if (strcmp(base, "wte.weight") != 0 && strcmp(base, "wpe.weight") != 0 &&
                   strcmp(base, "ln_f.weight") != 0 && strcmp(base, "ln_f.bias") != 0) {
            return st_fail(err, errlen, -EINVAL, "%s: tensor %s is not a GPT-2 weight", file,
                           t->name);
        }
        if (prefixed && st_find(st, base))
            return st_fail(err, errlen, -EINVAL, "%s: tensor %s is also present as %s", file,
                           t->name, base);
    }
    return 0;
}

/* Packs every matrix product's weights (see engine/kernels/matmul.h). */
static int pack_weights(gpt2_t *m, char *err, size_t errlen)
{
    model_t *b = &m->base;
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size;
    int rc = 0;
    for (int l = 0; l < m->cfg.n_layer && !rc; l++) {
        gpt2_layer_t *w = &m->layers[l];
        rc = model_pack(b, &w->qkv_p, w->qkv_w, C, 3 * C, 0);
        rc = rc ? rc : model_pack(b, &w->attn_proj_p, w->attn_proj_w, C, C, 0);
        rc = rc ? rc : model_pack(b, &w->fc_p, w->fc_w, C, 4 * C, 0);
        rc = rc ? rc : model_pack(b, &w->mlp_proj_p, w->mlp_proj_w, 4 * C, C, 0);
    }
    /* Tied or not, the LM head is lm_headᵀ: x (T, C) . W (C, V). */
    if (!rc) {
        rc = model_pack(b, &m->lm_head_p, m->lm_head, C, V, 1);
        /* Tied: the embedding lookup reads the packed copy too (see gpt2_forward). */
        m->embed_packed = !rc && m->lm_head == m->wte;
    }
    if (rc)
        return st_fail(err, errlen, rc, "%s: out of memory packing the weights as %s",
                       b->st.source ? b->st.source : "model", model_dtype_name(b->dtype));
    return 0;
}

static void gpt2_free(model_t *base)
{
    gpt2_t *m = (gpt2_t *)base;
    free(m->s.mem);
    for (int l = 0; m->layers && l < m->cfg.n_layer; l++) {
        gpt2_layer_t *w = &m->layers[l];
        mm_weight_free(&w->qkv_p);
        mm_weight_free(&w->attn_proj_p);
        mm_weight_free(&w->fc_p);
        mm_weight_free(&w->mlp_proj_p);
    }
    mm_weight_free(&m->lm_head_p);
    free(m->layers);
}

static const model_ops_t gpt2_ops = {gpt2_reserve, gpt2_forward, gpt2_free};

int gpt2_load(model_t **out, const char *dir, json_t *root, const char *arch, int dtype,
              const char *kernel, char *err, size_t errlen)
{
    (void)arch;
    gpt2_t *m = calloc(1, sizeof(*m));
    *out = m ? &m->base : NULL;
    if (!m)
        return st_fail(err, errlen, -ENOMEM, "out of memory");
    m->base.ops = &gpt2_ops;
    int rc = parse_config(root, &m->cfg, err, errlen);
    if (rc)
        return rc;
    const gpt2_config_t *c = &m->cfg;
    m->base.desc = (model_desc_t){.arch = "GPT2LMHeadModel",
                                  .n_layer = c->n_layer,
                                  .n_head = c->n_head,
                                  .n_kv_head = c->n_head,
                                  .head_size = c->n_embd / c->n_head,
                                  .n_embd = c->n_embd,
                                  .vocab_size = c->vocab_size,
                                  .max_pos = c->n_ctx};
    rc = model_cfg_eos(root, "config.json", &m->base.desc, err, errlen);
    if (rc)
        return rc;
    m->layers = calloc((size_t)c->n_layer, sizeof(*m->layers));
    if (!m->layers)
        return st_fail(err, errlen, -ENOMEM, "out of memory");
    model_loader_t ld = {.m = &m->base,
                         .alt_prefix = "transformer.",
                         .layer_prefix = "h.",
                         .err = err,
                         .errlen = errlen};
    rc = model_load_weights(&m->base, dir, &ld, get_all);
    rc = rc ? rc : model_kernel_init(&m->base, dtype, ld.matrix_dtype, kernel, err, errlen);
    rc = rc ? rc : pack_weights(m, err, errlen);
    if (!rc)
        model_load_done(&m->base, &ld);
    return rc;
}
