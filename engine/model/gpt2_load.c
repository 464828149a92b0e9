/* gpt2_load.c - config.json and the GPT-2 weights of a Hugging Face directory.
 *
 * F32 tensors are used in place from the read-only mapping. F16 and BF16 tensors (and F32
 * ones the file leaves misaligned) are converted once into one owned F32 buffer, carved in
 * order. Every tensor's shape is checked against config.json before anything is used.
 * The five matrices of each product (per layer QKV, proj, fc, MLP proj; the LM head) are
 * then packed once for engine/kernels/matmul.c in the dtype asked for (F32, F16, BF16, or int8 with
 * a scale per output column), and the mapped originals'
 * pages are handed back to the kernel (they reload from the file if anything reads them).
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

const char *gpt2_dtype_name(int dtype)
{
    return dtype == ENG_DTYPE_F16      ? "f16"
           : dtype == ENG_DTYPE_BF16   ? "bf16"
           : dtype == ENG_DTYPE_I8     ? "int8"
           : dtype == ENG_DTYPE_BF16X3 ? "bf16x3"
                                       : "f32";
}

/* Reads an integer field; absent fields keep *v (the Hugging Face default). */
static int cfg_int(json_t *root, const char *key, int lo, int hi, int *v, char *err,
                   size_t errlen)
{
    json_t *j = json_object_get(root, key);
    if (!j)
        return 0;
    if (!json_is_integer(j))
        return st_fail(err, errlen, -EINVAL, "config.json: %s is not an integer", key);
    json_int_t x = json_integer_value(j);
    if (x < lo || x > hi)
        return st_fail(err, errlen, -EINVAL, "config.json: %s %lld is not in [%d, %d]", key,
                    (long long)x, lo, hi);
    *v = (int)x;
    return 0;
}

/* The activations that are exactly GPT-2's tanh-form GELU (Hugging Face names). */
static int activation_ok(const char *a)
{
    return strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 ||
           strcmp(a, "gelu_fast") == 0;
}

static int parse_config(json_t *root, gpt2_config_t *c, char *err, size_t errlen)
{
    /* Hugging Face GPT2Config defaults, used for absent fields as transformers does. */
    *c = (gpt2_config_t){.n_layer = 12, .n_head = 12, .n_embd = 768, .n_ctx = 1024,
                         .vocab_size = 50257, .ln_eps = 1e-5f};
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
                           "(the smallest normal float)", (double)FLT_MIN);
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
        return st_fail(err, errlen, -EINVAL, "config.json: scale_attn_weights false is not supported");
    j = json_object_get(root, "scale_attn_by_inverse_layer_idx");
    if (j && json_is_true(j))
        return st_fail(err, errlen, -EINVAL,
                    "config.json: scale_attn_by_inverse_layer_idx true is not supported");
    return 0;
}

static int load_config(const char *dir, gpt2_config_t *c, char *err, size_t errlen)
{
    size_t plen = strlen(dir) + sizeof("/config.json");
    char *path = malloc(plen);
    if (!path)
        return st_fail(err, errlen, -ENOMEM, "config.json: out of memory");
    snprintf(path, plen, "%s/config.json", dir);
    if (access(path, F_OK) != 0) {
        free(path);
        return st_fail(err, errlen, -ENOENT, "config.json: not found in %s", dir);
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    free(path);
    if (!root)
        return st_fail(err, errlen, -EINVAL, "config.json: invalid JSON: %s (line %d, column %d)",
                    jerr.text, jerr.line, jerr.column);
    int rc = json_is_object(root) ? parse_config(root, c, err, errlen)
                                  : st_fail(err, errlen, -EINVAL, "config.json: not a JSON object");
    json_decref(root);
    return rc;
}

/* Weight loading runs twice over the same calls: first to validate and count the floats
 * that need a converted copy, then to fill that copy and the pointers. */
typedef struct loader {
    gpt2_t *m;
    int filling;       /* 0: the counting pass; 1: the filling pass */
    float *dst;        /* filling pass: the next free float of converted */
    size_t n_convert;  /* floats needing conversion (counting pass) */
    size_t n_floats;   /* floats of all weights used */
    int matrix_dtype;  /* enum eng_dtype of the first matrix read (what "auto" keeps) */
    char *err;
    size_t errlen;
} loader_t;

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) { /* inf or nan */
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) { /* normal */
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man == 0) { /* signed zero */
        bits = sign;
    } else { /* subnormal: value is man * 2^-24, exact in F32 */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static void convert(float *dst, const st_tensor_t *t, size_t n)
{
    const uint8_t *src = t->data;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        uint32_t bits;
        switch (t->dtype) {
        case ST_F16:
            memcpy(&h, src + 2 * i, 2);
            dst[i] = f16_to_f32(h);
            break;
        case ST_BF16:
            memcpy(&h, src + 2 * i, 2);
            bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
            break;
        default: /* F32 that is not 4-byte aligned in the file */
            memcpy(&dst[i], src + 4 * i, 4);
            break;
        }
    }
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

static const st_tensor_t *find(const st_set_t *st, const char *name)
{
    const st_tensor_t *t = st_find(st, name);
    if (!t) {
        char full[256];
        snprintf(full, sizeof(full), "transformer.%s", name);
        t = st_find(st, full);
    }
    return t;
}

/* Points *out at tensor name of shape [d0] or [d0, d1] (d1 = 0 for a vector), as F32. */
static int get(loader_t *ld, const char *name, int64_t d0, int64_t d1, const float **out)
{
    const st_set_t *st = &ld->m->st;
    const st_tensor_t *t = find(st, name);
    if (!t)
        return strncmp(name, "h.", 2) == 0
                   ? st_fail(ld->err, ld->errlen, -EINVAL,
                             "%s: missing tensor %s (n_layer = %d in config.json)", st->source,
                             name, ld->m->cfg.n_layer)
                   : st_fail(ld->err, ld->errlen, -EINVAL, "%s: missing tensor %s", st->source,
                             name);
    const char *file = st->files[t->file].name;
    int64_t want[2] = {d0, d1};
    int ndim = d1 ? 2 : 1;
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char got[128], exp[64];
        format_shape(got, sizeof(got), t->ndim, t->shape);
        format_shape(exp, sizeof(exp), ndim, want);
        return st_fail(ld->err, ld->errlen, -EINVAL,
                    "%s: %s: shape %s disagrees with config.json (expected %s)", file, t->name, got,
                    exp);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return st_fail(ld->err, ld->errlen, -EINVAL, "%s: %s: dtype %s is not F32, F16 or BF16",
                    file, t->name, st_dtype_name(t->dtype));
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (d1 && !ld->matrix_dtype)
        ld->matrix_dtype = t->dtype == ST_F16    ? ENG_DTYPE_F16
                           : t->dtype == ST_BF16 ? ENG_DTYPE_BF16
                                                 : ENG_DTYPE_F32;
    int in_place = t->dtype == ST_F32 && (uintptr_t)t->data % sizeof(float) == 0;
    if (!ld->filling) {
        ld->n_floats += n;
        ld->n_convert += in_place ? 0 : n;
        return 0;
    }
    if (in_place) {
        *out = t->data;
    } else {
        convert(ld->dst, t, n);
        *out = ld->dst;
        ld->dst += n;
    }
    return 0;
}

/* The per-layer weights, h.N.<name>, in the order of gpt2_layer_t. */
static const char *const layer_names[12] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};

static int get_layer(loader_t *ld, int l, gpt2_layer_t *w)
{
    const int64_t C = ld->m->cfg.n_embd;
    const int64_t shape[12][2] = {{C, 0},     {C, 0},     {C, 3 * C}, {3 * C, 0},
                                  {C, C},     {C, 0},     {C, 0},     {C, 0},
                                  {C, 4 * C}, {4 * C, 0}, {4 * C, C}, {C, 0}};
    const float **dst[12] = {&w->ln1_w,       &w->ln1_b,       &w->qkv_w, &w->qkv_b,
                             &w->attn_proj_w, &w->attn_proj_b, &w->ln2_w, &w->ln2_b,
                             &w->fc_w,        &w->fc_b,        &w->mlp_proj_w, &w->mlp_proj_b};
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof(name), "h.%d.%s", l, layer_names[i]);
        int rc = get(ld, name, shape[i][0], shape[i][1], dst[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static int get_all(loader_t *ld)
{
    gpt2_t *m = ld->m;
    const int64_t C = m->cfg.n_embd, V = m->cfg.vocab_size;
    int rc = get(ld, "wte.weight", V, C, &m->wte);
    rc = rc ? rc : get(ld, "wpe.weight", m->cfg.n_ctx, C, &m->wpe);
    for (int l = 0; l < m->cfg.n_layer && !rc; l++)
        rc = get_layer(ld, l, &m->layers[l]);
    rc = rc ? rc : get(ld, "ln_f.weight", C, 0, &m->lnf_w);
    rc = rc ? rc : get(ld, "ln_f.bias", C, 0, &m->lnf_b);
    /* The LM head is tied to wte unless the checkpoint carries its own. */
    if (!rc && st_find(&m->st, "lm_head.weight"))
        rc = get(ld, "lm_head.weight", V, C, &m->lm_head);
    else if (!rc && ld->filling)
        m->lm_head = m->wte;
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
    const st_set_t *st = &m->st;
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
                               "%s: tensor %s is beyond n_layer = %d of config.json", file,
                               t->name, m->cfg.n_layer);
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

/* Drops the resident pages of a read-only file mapping range (whole pages inside it only);
 * a later read faults them back in from the file, so nothing that still reads them breaks. */
static void drop_mapped(const gpt2_t *m, const float *p, size_t n)
{
    const float *conv = m->converted;
    if (conv && p >= conv && p < conv + m->n_converted)
        return; /* an owned copy: its pages are the only copy of the data */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page;
    uintptr_t hi = ((uintptr_t)(p + n)) / page * page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: failure changes nothing */
}

static int pack_one(gpt2_t *m, mm_weight_t *w, const float *src, int K, int N, int trans,
                    int dtype)
{
    int rc = mm_weight_init_mt(m->mm, w, src, K, N, trans ? (size_t)K : (size_t)N, trans, dtype);
    if (!rc) {
        drop_mapped(m, src, (size_t)K * (size_t)N);
        /* weight_bytes counts values in the dtype they are kept in (padding not counted),
         * and int8's column scales. */
        if (w->dtype == ENG_DTYPE_I8)
            m->weight_bytes =
                m->weight_bytes - (size_t)K * (size_t)N * 3 + (size_t)N * sizeof(float);
        else if (w->dtype == ENG_DTYPE_F16 || w->dtype == ENG_DTYPE_BF16)
            m->weight_bytes -= (size_t)K * (size_t)N * 2;
    }
    return rc;
}

/* Packs every matrix product's weights (see engine/kernels/matmul.h) in dtype. */
static int pack_weights(gpt2_t *m, int dtype, const char *kernel, char *err, size_t errlen)
{
    char e[256];
    int rc = mm_init_kernel(&m->mm, 0, kernel, e, sizeof(e));
    if (rc)
        return st_fail(err, errlen, rc, "%s", e);
    m->dtype = dtype == ENG_DTYPE_AUTO ? ENG_DTYPE_F32 : dtype;
    /* BF16X3 pays only on AMX (three tile products for one); elsewhere F32 is as fast and
     * exact. */
    if (m->dtype == ENG_DTYPE_BF16X3 && mm_get_kernel(m->mm) != MM_KERNEL_AMX)
        m->dtype = ENG_DTYPE_F32;
    const int C = m->cfg.n_embd, V = m->cfg.vocab_size;
    for (int l = 0; l < m->cfg.n_layer && !rc; l++) {
        gpt2_layer_t *w = &m->layers[l];
        rc = pack_one(m, &w->qkv_p, w->qkv_w, C, 3 * C, 0, m->dtype);
        rc = rc ? rc : pack_one(m, &w->attn_proj_p, w->attn_proj_w, C, C, 0, m->dtype);
        rc = rc ? rc : pack_one(m, &w->fc_p, w->fc_w, C, 4 * C, 0, m->dtype);
        rc = rc ? rc : pack_one(m, &w->mlp_proj_p, w->mlp_proj_w, 4 * C, C, 0, m->dtype);
    }
    /* Tied or not, the LM head is lm_headᵀ: x (T, C) . W (C, V). */
    if (!rc) {
        rc = pack_one(m, &m->lm_head_p, m->lm_head, C, V, 1, m->dtype);
        /* Tied: the embedding lookup reads the packed copy too (see gpt2_forward). */
        m->embed_packed = !rc && m->lm_head == m->wte;
    }
    if (rc)
        return st_fail(err, errlen, rc, "%s: out of memory packing the weights as %s",
                    m->st.source ? m->st.source : "model", gpt2_dtype_name(m->dtype));
    return 0;
}

const char *gpt2_kernel_name(const gpt2_t *m)
{
    return mm_kernel_name(mm_get_kernel(m->mm));
}

int gpt2_threads(const gpt2_t *m)
{
    return pool_threads(mm_pool(m->mm));
}

int gpt2_set_threads(gpt2_t *m, int threads)
{
    if (threads < 0 || threads > POOL_MAX_THREADS)
        return -EINVAL;
    char e[256];
    mm_t *mm = NULL;
    /* The same kernel as before (it passed the check, and the weights are packed for it). */
    int rc = mm_init_kernel(&mm, threads, mm_kernel_name(mm_get_kernel(m->mm)), e, sizeof(e));
    if (rc)
        return rc;
    mm_t *old = m->mm;
    m->mm = mm;
    /* The attention scratch is per compute thread: size it again for the new count. */
    if (m->s.mem && m->s.threads != pool_threads(mm_pool(mm))) {
        rc = gpt2_reserve(m, m->s.max_tokens, m->s.max_logits, m->s.max_ctx);
        if (rc) {
            m->mm = old;
            mm_free(mm);
            return rc;
        }
    }
    mm_free(old);
    return 0;
}

int gpt2_load(gpt2_t **out, const char *dir, int dtype, char *err, size_t errlen)
{
    return gpt2_load_kernel(out, dir, dtype, NULL, err, errlen);
}

int gpt2_load_kernel(gpt2_t **out, const char *dir, int dtype, const char *kernel, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (dtype != ENG_DTYPE_AUTO && dtype != ENG_DTYPE_F32 && dtype != ENG_DTYPE_F16 &&
        dtype != ENG_DTYPE_BF16 && dtype != ENG_DTYPE_I8 && dtype != ENG_DTYPE_BF16X3)
        return st_fail(err, errlen, -EINVAL,
                       "weight dtype %d is not auto, f32, f16, bf16, int8 or bf16x3", dtype);
    gpt2_t *m = calloc(1, sizeof(*m));
    if (!m)
        return st_fail(err, errlen, -ENOMEM, "out of memory");
    int rc = load_config(dir, &m->cfg, err, errlen);
    if (rc)
        goto fail;
    rc = st_open(&m->st, dir, err, errlen);
    if (rc)
        goto fail;
    m->layers = calloc((size_t)m->cfg.n_layer, sizeof(*m->layers));
    if (!m->layers) {
        rc = st_fail(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }

    loader_t ld = {.m = m, .err = err, .errlen = errlen};
    rc = get_all(&ld);
    rc = rc ? rc : check_unused(m, err, errlen);
    if (rc)
        goto fail;
    if (ld.n_convert) {
        m->converted = malloc(ld.n_convert * sizeof(float));
        if (!m->converted) {
            rc = st_fail(err, errlen, -ENOMEM, "%s: out of memory for %zu converted weights",
                      m->st.source, ld.n_convert);
            goto fail;
        }
    }
    m->weight_bytes = ld.n_floats * sizeof(float);
    m->n_converted = ld.n_convert;
    ld.filling = 1;
    ld.dst = m->converted;
    rc = get_all(&ld);
    if (rc)
        goto fail;
    rc = pack_weights(m, dtype == ENG_DTYPE_AUTO ? ld.matrix_dtype : dtype, kernel, err, errlen);
    if (rc)
        goto fail;
    /* When every weight was converted nothing points into the files any more: unmap them
     * rather than keep the 16-bit copy resident next to the F32 one. */
    if (ld.n_convert == ld.n_floats)
        st_close(&m->st);
    *out = m;
    return 0;
fail:
    gpt2_free(m);
    return rc;
}

void gpt2_free(gpt2_t *m)
{
    if (!m)
        return;
    free(m->s.mem);
    free(m->converted);
    for (int l = 0; m->layers && l < m->cfg.n_layer; l++) {
        gpt2_layer_t *w = &m->layers[l];
        mm_weight_free(&w->qkv_p);
        mm_weight_free(&w->attn_proj_p);
        mm_weight_free(&w->fc_p);
        mm_weight_free(&w->mlp_proj_p);
    }
    mm_weight_free(&m->lm_head_p);
    mm_free(m->mm);
    free(m->layers);
    st_close(&m->st);
    free(m);
}

const gpt2_config_t *gpt2_get_config(const gpt2_t *m)
{
    return &m->cfg;
}

int gpt2_get_dtype(const gpt2_t *m)
{
    return m->dtype;
}

size_t gpt2_weight_bytes(const gpt2_t *m)
{
    return m->weight_bytes;
}
