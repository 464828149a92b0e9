/* test_safetensors.c - the loader on good and malformed checkpoints.
 *
 * Builds a small GPT-2 checkpoint (1 layer, 8 channels, 11 tokens) in memory, breaks it one
 * way per case (and a Llama-family one the same way: test_llama), writes it to its own temp
 * directory and checks that model_load returns the right code with one error line naming the file
 * and the tensor. Ends with random header corruption, which must never crash (this suite also runs
 * under ASan+UBSan).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/model/gpt2_model.h"
#include "engine/sched/sampler.h"
#include "tests/check.h"

enum { L = 1, C = 8, NH = 2, V = 11, P = 16 };

static char tmp_root[4096];
static int case_no;

typedef struct ckpt {
    json_t *config; /* config.json */
    json_t *header; /* safetensors header: name -> {dtype, shape, data_offsets} */
    uint8_t *data;  /* (data_size) */
    size_t data_size;
} ckpt_t;

static void add_tensor(ckpt_t *c, const char *name, const char *dtype, int64_t d0, int64_t d1,
                       smp_rng_t *r)
{
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1), es = strcmp(dtype, "F32") ? 2 : 4;
    c->data = realloc(c->data, c->data_size + n * es);
    for (size_t i = 0; i < n; i++) {
        float f = (float)(smp_rng_uniform(r) * 2 - 1);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        if (es == 4) {
            memcpy(c->data + c->data_size + 4 * i, &bits, 4);
        } else { /* BF16 by truncation; F16 tests set their own bits */
            uint16_t h = (uint16_t)(bits >> 16);
            memcpy(c->data + c->data_size + 2 * i, &h, 2);
        }
    }
    json_t *shape =
        d1 ? json_pack("[II]", (json_int_t)d0, (json_int_t)d1) : json_pack("[I]", (json_int_t)d0);
    json_object_set_new(c->header, name,
                        json_pack("{s:s, s:o, s:[II]}", "dtype", dtype, "shape", shape,
                                  "data_offsets", (json_int_t)c->data_size,
                                  (json_int_t)(c->data_size + n * es)));
    c->data_size += n * es;
}

/* A valid checkpoint; prefix "transformer." and lm_head as the Hugging Face variants. */
static void ckpt_make(ckpt_t *c, const char *prefix, int lm_head, const char *dtype)
{
    smp_rng_t r;
    smp_rng_seed(&r, 11);
    memset(c, 0, sizeof(*c));
    c->config = json_pack("{s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:n}", "n_layer", L, "n_head", NH,
                          "n_embd", C, "n_positions", P, "vocab_size", V, "layer_norm_epsilon",
                          1e-5, "activation_function", "gelu_new", "n_inner");
    c->header = json_object();
    json_object_set_new(c->header, "__metadata__", json_pack("{s:s}", "format", "pt"));
    char name[128];
#define T(n, d0, d1)                                                                               \
    do {                                                                                           \
        snprintf(name, sizeof(name), "%s%s", prefix, n);                                           \
        add_tensor(c, name, dtype, d0, d1, &r);                                                    \
    } while (0)
    T("wte.weight", V, C);
    T("wpe.weight", P, C);
    for (int l = 0; l < L; l++) {
        char n[64];
#define TL(s, d0, d1)                                                                              \
    do {                                                                                           \
        snprintf(n, sizeof(n), "h.%d.%s", l, s);                                                   \
        T(n, d0, d1);                                                                              \
    } while (0)
        TL("ln_1.weight", C, 0);
        TL("ln_1.bias", C, 0);
        TL("attn.c_attn.weight", C, 3 * C);
        TL("attn.c_attn.bias", 3 * C, 0);
        TL("attn.c_proj.weight", C, C);
        TL("attn.c_proj.bias", C, 0);
        TL("ln_2.weight", C, 0);
        TL("ln_2.bias", C, 0);
        TL("mlp.c_fc.weight", C, 4 * C);
        TL("mlp.c_fc.bias", 4 * C, 0);
        TL("mlp.c_proj.weight", 4 * C, C);
        TL("mlp.c_proj.bias", C, 0);
        TL("attn.bias", P, P); /* the causal-mask buffer, which the loader ignores */
#undef TL
    }
    T("ln_f.weight", C, 0);
    T("ln_f.bias", C, 0);
#undef T
    if (lm_head)
        add_tensor(c, "lm_head.weight", dtype, V, C, &r);
}

static void ckpt_free(ckpt_t *c)
{
    json_decref(c->config);
    json_decref(c->header);
    free(c->data);
}

static void write_bytes(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK_INT_EQ(fwrite(p, 1, n, f), n);
        fclose(f);
    }
}

/* The bytes of a safetensors file: length, header (space-padded to 8 bytes when align, as
 * the reference writer does), data. */
static uint8_t *st_bytes(const json_t *header, const uint8_t *data, size_t data_size, int align,
                         size_t *len)
{
    char *h = json_dumps(header, JSON_COMPACT);
    size_t hl = strlen(h), pad = align ? (8 - (8 + hl) % 8) % 8 : (8 + hl) % 4 ? 0 : 1;
    size_t n = 8 + hl + pad + data_size;
    uint8_t *b = malloc(n);
    uint64_t hlen = hl + pad;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, h, hl);
    memset(b + 8 + hl, ' ', pad);
    memcpy(b + 8 + hl + pad, data, data_size);
    free(h);
    *len = n;
    return b;
}

static void new_case_dir(char *dir, size_t len)
{
    snprintf(dir, len, "%s/case-%02d", tmp_root, ++case_no);
    CHECK_INT_EQ(mkdir(dir, 0700), 0);
}

static void write_config(const char *dir, const json_t *config)
{
    char *s = json_dumps(config, JSON_INDENT(2));
    write_bytes(dir, "config.json", s, strlen(s));
    free(s);
}

/* Writes c into a new case directory (align: whether F32 data is 4-byte aligned). */
static void ckpt_write(const ckpt_t *c, char *dir, size_t len, int align)
{
    new_case_dir(dir, len);
    write_config(dir, c->config);
    size_t n;
    uint8_t *b = st_bytes(c->header, c->data, c->data_size, align, &n);
    write_bytes(dir, "model.safetensors", b, n);
    free(b);
}

/* model_load, as the GPT-2 inside it (the checkpoints of every test but test_llama). */
static int gpt2_open(gpt2_t **m, const char *dir, int dtype, char *err, size_t errlen)
{
    model_t *b = NULL;
    int rc = model_load(&b, dir, dtype, NULL, err, errlen);
    *m = (gpt2_t *)b;
    return rc;
}

/* Loads dir and checks the code and that the error names each of the given strings. */
static gpt2_t *expect_load(const char *dir, int want_rc, const char *what1, const char *what2)
{
    char err[512] = "";
    gpt2_t *m = NULL;
    int rc = gpt2_open(&m, dir, 0, err, sizeof(err));
    CHECK_INT_EQ(rc, want_rc);
    if (want_rc) {
        printf("case %02d: %s\n", case_no, err);
        CHECK(m == NULL);
        CHECK(strchr(err, '\n') == NULL);
        if (what1)
            CHECK_CONTAINS(err, what1);
        if (what2)
            CHECK_CONTAINS(err, what2);
    } else if (rc) {
        fprintf(stderr, "case %02d: unexpected error: %s\n", case_no, err);
    }
    return m;
}

/* Last-token logits for a fixed 5-token prompt. */
static void logits_of(gpt2_t *m, float *out)
{
    kv_cache_t kv;
    CHECK_INT_EQ(model_kv_init((model_t *)m, &kv, 4, 4, ENG_DTYPE_F32), 0);
    CHECK_INT_EQ(model_reserve((model_t *)m, 8, 1, P), 0);
    int32_t tokens[5] = {3, 1, 4, 1, 5}, pos[5] = {0, 1, 2, 3, 4}, slot[5];
    int32_t table[2] = {2, 0}, seq_start[2] = {0, 5}, ctx[1] = {5}, last = 4;
    for (int i = 0; i < 5; i++)
        slot[i] = table[i / 4] * 4 + i % 4;
    const int32_t *tables[1] = {table};
    model_batch_t b = {.T = 5,
                       .tokens = tokens,
                       .pos = pos,
                       .slot = slot,
                       .B = 1,
                       .seq_start = seq_start,
                       .ctx_len = ctx,
                       .block_table = tables,
                       .n_logits = 1,
                       .logit_rows = &last,
                       .logits = out};
    CHECK_INT_EQ(model_forward((model_t *)m, &kv, &b), 0);
    kv_cache_free(&kv);
}

/* The valid variants load and compute the same logits as the plain aligned F32 file. */
static void test_valid(void)
{
    char dir[4200];
    float want[V], got[V];
    ckpt_t c;
    ckpt_make(&c, "", 0, "F32");
    ckpt_write(&c, dir, sizeof(dir), 1);
    gpt2_t *m = expect_load(dir, 0, NULL, NULL);
    if (!m)
        return;
    CHECK((const uint8_t *)m->wte >= (const uint8_t *)m->base.st.files[0].map); /* in place */
    CHECK(m->base.converted == NULL);
    CHECK(m->lm_head == m->wte);
    CHECK_INT_EQ(model_weight_bytes((model_t *)m), c.data_size - (size_t)P * P * 4);
    logits_of(m, want);
    model_free((model_t *)m);

    /* Int8 weights count one byte per matrix value and a 4-byte scale per output column
     * (per layer qkv C x 3C, proj C x C, fc C x 4C, proj 4C x C; the tied head C x V). */
    char err[512] = "";
    CHECK_INT_EQ(gpt2_open(&m, dir, ENG_DTYPE_I8, err, sizeof(err)), 0);
    if (m) {
        size_t kn = (size_t)L * 12 * C * C + (size_t)C * V, cols = (size_t)L * 9 * C + V;
        CHECK_INT_EQ(model_dtype((model_t *)m), ENG_DTYPE_I8);
        CHECK_INT_EQ(model_weight_bytes((model_t *)m),
                     c.data_size - (size_t)P * P * 4 - 3 * kn + 4 * cols);
        model_free((model_t *)m);
    }
    CHECK_INT_EQ(gpt2_open(&m, dir, 42, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "weight dtype 42");

    /* Misaligned F32 data is copied, with the same result. */
    ckpt_write(&c, dir, sizeof(dir), 0);
    m = expect_load(dir, 0, NULL, NULL);
    if (m) {
        CHECK(m->base.converted != NULL);
        logits_of(m, got);
        CHECK(memcmp(want, got, sizeof(want)) == 0);
        model_free((model_t *)m);
    }
    ckpt_free(&c);

    /* transformer. names, an lm_head.weight of its own and the masked_bias buffer. */
    ckpt_make(&c, "transformer.", 1, "F32");
    smp_rng_t r;
    smp_rng_seed(&r, 2);
    add_tensor(&c, "transformer.h.0.attn.masked_bias", "F32", 1, 0, &r);
    ckpt_write(&c, dir, sizeof(dir), 1);
    m = expect_load(dir, 0, NULL, NULL);
    if (m) {
        CHECK(m->lm_head != m->wte);
        model_free((model_t *)m);
    }
    ckpt_free(&c);
}

/* F16 and BF16 values, including the edge cases, are converted exactly. */
static void test_convert(void)
{
    static const uint16_t f16[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x7c00, 0x3555};
    static const float f16_want[] = {1.0f,     -2.0f, 0x1p-24f, 0x3ffp-24f,
                                     65504.0f, -0.0f, INFINITY, 0.333251953125f};
    static const uint16_t bf16[] = {0x3f80, 0xc040, 0x0001, 0x7f7f, 0x8000, 0xff80, 0x3eab, 0};
    static const float bf16_want[] = {1.0f,  -3.0f,     0x1p-133f,    0x1.fep127f,
                                      -0.0f, -INFINITY, 0.333984375f, 0.0f};
    for (int k = 0; k < 2; k++) {
        char dir[4200];
        ckpt_t c;
        ckpt_make(&c, "", 0, k ? "BF16" : "F16");
        memcpy(c.data, k ? bf16 : f16, sizeof(f16)); /* the first values of wte */
        ckpt_write(&c, dir, sizeof(dir), 1);
        gpt2_t *m = expect_load(dir, 0, NULL, NULL);
        if (m) {
            const float *want = k ? bf16_want : f16_want;
            for (int i = 0; i < 8; i++) {
                CHECK(m->wte[i] == want[i] || (isinf(m->wte[i]) && isinf(want[i])));
                CHECK_INT_EQ(signbit(m->wte[i]) != 0, signbit(want[i]) != 0);
            }
            CHECK(m->base.converted != NULL);
            CHECK_INT_EQ(m->base.st.n_files, 0); /* nothing left in use in the file */
            model_free((model_t *)m);
        }
        ckpt_free(&c);
    }
}

static json_t *entry(ckpt_t *c, const char *name)
{
    return json_object_get(c->header, name);
}

static void set_offsets(ckpt_t *c, const char *name, json_int_t b, json_int_t e)
{
    json_object_set_new(entry(c, name), "data_offsets", json_pack("[II]", b, e));
}

static json_int_t offset(ckpt_t *c, const char *name, int i)
{
    return json_integer_value(json_array_get(json_object_get(entry(c, name), "data_offsets"), i));
}

/* Each malformed header, one case each. */
static void test_bad_headers(void)
{
    char dir[4200];
    ckpt_t c;
#define BAD_CASE(mutation, rc, what1, what2)                                                       \
    do {                                                                                           \
        ckpt_make(&c, "", 0, "F32");                                                               \
        mutation;                                                                                  \
        ckpt_write(&c, dir, sizeof(dir), 1);                                                       \
        expect_load(dir, rc, what1, what2);                                                        \
        ckpt_free(&c);                                                                             \
    } while (0)

    BAD_CASE(set_offsets(&c, "h.0.ln_1.bias", (json_int_t)c.data_size - 16,
                         (json_int_t)c.data_size + 16),
             -EINVAL, "model.safetensors: h.0.ln_1.bias", "out of range");
    BAD_CASE(set_offsets(&c, "h.0.ln_1.bias", offset(&c, "h.0.ln_1.weight", 0),
                         offset(&c, "h.0.ln_1.weight", 1)),
             -EINVAL, "model.safetensors: h.0.ln_1.", "overlaps");
    BAD_CASE(json_object_set_new(entry(&c, "wpe.weight"), "shape", json_pack("[ii]", P, C + 1)),
             -EINVAL, "model.safetensors: wpe.weight", "needs");
    BAD_CASE(
        set_offsets(&c, "ln_f.bias", offset(&c, "ln_f.bias", 0), offset(&c, "ln_f.bias", 1) - 4),
        -EINVAL, "model.safetensors: ln_f.bias", "needs");
    BAD_CASE(json_object_set_new(entry(&c, "ln_f.weight"), "dtype", json_string("F33")), -EINVAL,
             "model.safetensors: ln_f.weight", "unknown dtype \"F33\"");
    BAD_CASE(json_object_set_new(entry(&c, "ln_f.weight"), "dtype", json_string("I32")), -EINVAL,
             "model.safetensors: ln_f.weight", "dtype I32 is not F32");
    BAD_CASE(json_object_del(c.header, "h.0.mlp.c_fc.bias"), -EINVAL, "model.safetensors",
             "missing tensor h.0.mlp.c_fc.bias");
    BAD_CASE(json_object_set_new(entry(&c, "h.0.attn.c_attn.weight"), "shape",
                                 json_pack("[ii]", 3 * C, C)),
             -EINVAL, "model.safetensors: h.0.attn.c_attn.weight: shape [24,8]",
             "disagrees with config.json (expected [8,24])");
    BAD_CASE(json_object_set_new(c.config, "n_positions", json_integer(2 * P)), -EINVAL,
             "model.safetensors: wpe.weight: shape [16,8]", "(expected [32,8])");
    BAD_CASE(json_object_set_new(c.config, "vocab_size", json_integer(V + 1)), -EINVAL,
             "wte.weight", "expected [12,8]");
    BAD_CASE(json_object_set_new(entry(&c, "wte.weight"), "shape", json_pack("[i,i]", -V, C)),
             -EINVAL, "model.safetensors: wte.weight", "shape[0] is not a non-negative");
    BAD_CASE(set_offsets(&c, "wte.weight", 8, 4), -EINVAL, "model.safetensors: wte.weight",
             "data_offsets must be");
    BAD_CASE(json_object_set_new(entry(&c, "wte.weight"), "data_offsets", json_string("0-4")),
             -EINVAL, "model.safetensors: wte.weight", "data_offsets");
    BAD_CASE(json_object_set_new(c.header, "ln_f.weight", json_integer(3)), -EINVAL,
             "model.safetensors: ln_f.weight", "entry needs dtype");
    /* config.json problems */
    BAD_CASE(json_object_set_new(c.config, "n_embd", json_integer(9)), -EINVAL,
             "config.json: n_embd 9 is not divisible by n_head 2", NULL);
    BAD_CASE(json_object_set_new(c.config, "n_layer", json_string("one")), -EINVAL,
             "config.json: n_layer is not an integer", NULL);
    BAD_CASE(json_object_set_new(c.config, "n_head", json_integer(0)), -EINVAL,
             "config.json: n_head 0", NULL);
    /* Positive as a double, 0 as the float layer norm uses. */
    BAD_CASE(json_object_set_new(c.config, "layer_norm_epsilon", json_real(1e-75)), -EINVAL,
             "config.json: layer_norm_epsilon must be in (0, 1)", NULL);
    BAD_CASE(json_object_set_new(c.config, "activation_function", json_string("relu")), -EINVAL,
             "config.json: activation_function \"relu\"", NULL);
    BAD_CASE(json_object_set_new(c.config, "n_inner", json_integer(5)), -EINVAL,
             "config.json: n_inner", NULL);
    /* Tensors config.json has no place for: refused, not silently ignored. */
    smp_rng_t r;
    smp_rng_seed(&r, 3);
    BAD_CASE(add_tensor(&c, "h.1.attn.c_attn.weight", "F32", C, 3 * C, &r), -EINVAL,
             "model.safetensors: tensor h.1.attn.c_attn.weight is beyond n_layer = 1 of "
             "config.json",
             NULL);
    BAD_CASE(add_tensor(&c, "h.1.attn.bias", "F32", P, P, &r), -EINVAL,
             "model.safetensors: tensor h.1.attn.bias is beyond n_layer = 1", NULL);
    BAD_CASE(add_tensor(&c, "h.0.mlp.c_fc.weight_scale", "F32", 1, 0, &r), -EINVAL,
             "model.safetensors: tensor h.0.mlp.c_fc.weight_scale is not a GPT-2 weight", NULL);
    BAD_CASE(add_tensor(&c, "score.weight", "F32", 2, C, &r), -EINVAL,
             "model.safetensors: tensor score.weight is not a GPT-2 weight", NULL);
    BAD_CASE(add_tensor(&c, "h.00.ln_1.weight", "F32", C, 0, &r), -EINVAL,
             "model.safetensors: tensor h.00.ln_1.weight is not a GPT-2 weight", NULL);
    BAD_CASE(add_tensor(&c, "transformer.lm_head.weight", "F32", V, C, &r), -EINVAL,
             "tensor transformer.lm_head.weight is not a GPT-2 weight", NULL);
    BAD_CASE(add_tensor(&c, "transformer.ln_f.bias", "F32", C, 0, &r), -EINVAL,
             "model.safetensors: tensor transformer.ln_f.bias is also present as ln_f.bias", NULL);
    /* More layers in config.json than in the weights. */
    BAD_CASE(json_object_set_new(c.config, "n_layer", json_integer(2)), -EINVAL,
             "model.safetensors: missing tensor h.1.ln_1.weight (n_layer = 2 in config.json)",
             NULL);
#undef BAD_CASE
}

/* Broken bytes rather than broken fields. */
static void test_bad_files(void)
{
    char dir[4200];
    ckpt_t c;
    ckpt_make(&c, "", 0, "F32");
    size_t n;
    uint8_t *good = st_bytes(c.header, c.data, c.data_size, 1, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | good[i];

    new_case_dir(dir, sizeof(dir)); /* shorter than the length field */
    write_config(dir, c.config);
    write_bytes(dir, "model.safetensors", good, 5);
    expect_load(dir, -EINVAL, "model.safetensors: truncated file: 5 bytes", NULL);

    new_case_dir(dir, sizeof(dir)); /* cut inside the header */
    write_config(dir, c.config);
    write_bytes(dir, "model.safetensors", good, 8 + hlen / 2);
    expect_load(dir, -EINVAL, "model.safetensors: header length", "beyond the file");

    new_case_dir(dir, sizeof(dir)); /* cut inside the data: the last tensor is out of range */
    write_config(dir, c.config);
    write_bytes(dir, "model.safetensors", good, n - 8);
    expect_load(dir, -EINVAL, "model.safetensors: ln_f.bias", "out of range");

    new_case_dir(dir, sizeof(dir)); /* a length beyond the file */
    write_config(dir, c.config);
    uint8_t *bad = malloc(n);
    memcpy(bad, good, n);
    bad[5] = 1;
    write_bytes(dir, "model.safetensors", bad, n);
    expect_load(dir, -EINVAL, "model.safetensors: header length 10995", "beyond the file");

    new_case_dir(dir, sizeof(dir)); /* a zero length */
    write_config(dir, c.config);
    memset(bad, 0, 8);
    write_bytes(dir, "model.safetensors", bad, n);
    expect_load(dir, -EINVAL, "model.safetensors: header length 0", NULL);

    new_case_dir(dir, sizeof(dir)); /* invalid JSON */
    write_config(dir, c.config);
    memcpy(bad, good, n);
    memcpy(bad + 8 + hlen / 2, "}}}", 3);
    write_bytes(dir, "model.safetensors", bad, n);
    expect_load(dir, -EINVAL, "model.safetensors: invalid JSON header", NULL);

    new_case_dir(dir, sizeof(dir)); /* a duplicate key */
    write_config(dir, c.config);
    const char dup[] = "{\"a\":{},\"a\":{}}       ";
    uint8_t head[8 + sizeof(dup) - 1] = {sizeof(dup) - 1};
    memcpy(head + 8, dup, sizeof(dup) - 1);
    write_bytes(dir, "model.safetensors", head, sizeof(head));
    expect_load(dir, -EINVAL, "model.safetensors: invalid JSON header", "duplicate");

    new_case_dir(dir, sizeof(dir)); /* not an object */
    write_config(dir, c.config);
    memset(head + 8, ' ', sizeof(dup) - 1);
    memcpy(head + 8, "[1, 2, 3]", 9);
    write_bytes(dir, "model.safetensors", head, sizeof(head));
    expect_load(dir, -EINVAL, "model.safetensors: JSON header is not an object", NULL);

    new_case_dir(dir, sizeof(dir)); /* no config.json */
    write_bytes(dir, "model.safetensors", good, n);
    expect_load(dir, -ENOENT, "config.json: not found", NULL);

    new_case_dir(dir, sizeof(dir)); /* config.json that is not JSON */
    write_bytes(dir, "config.json", "{\"n_layer\": 1,", 14);
    write_bytes(dir, "model.safetensors", good, n);
    expect_load(dir, -EINVAL, "config.json: invalid JSON", NULL);

    new_case_dir(dir, sizeof(dir)); /* no weights at all */
    write_config(dir, c.config);
    expect_load(dir, -ENOENT, "model.safetensors: not found", NULL);

    free(bad);
    free(good);
    ckpt_free(&c);
}

/* Two shards and an index: good, then each way the index can be wrong. */
static void write_sharded(const ckpt_t *c, const char *dir, const char *index_text)
{
    write_config(dir, c->config);
    /* Shard 1 holds wte and wpe, shard 2 the rest, each with its own offsets. */
    json_t *h[2] = {json_object(), json_object()};
    uint8_t *d[2] = {malloc(c->data_size), malloc(c->data_size)};
    size_t used[2] = {0, 0};
    const char *name;
    json_t *v;
    json_object_foreach(c->header, name, v)
    {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        int s = strcmp(name, "wte.weight") && strcmp(name, "wpe.weight");
        json_int_t b = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
        json_int_t e = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 1));
        memcpy(d[s] + used[s], c->data + b, (size_t)(e - b));
        json_t *nv = json_deep_copy(v);
        json_object_set_new(nv, "data_offsets",
                            json_pack("[II]", (json_int_t)used[s], (json_int_t)used[s] + e - b));
        json_object_set_new(h[s], name, nv);
        used[s] += (size_t)(e - b);
    }
    for (int s = 0; s < 2; s++) {
        size_t n;
        uint8_t *b = st_bytes(h[s], d[s], used[s], 1, &n);
        char fname[64];
        snprintf(fname, sizeof(fname), "model-%05d-of-00002.safetensors", s + 1);
        write_bytes(dir, fname, b, n);
        free(b);
        free(d[s]);
        json_decref(h[s]);
    }
    write_bytes(dir, "model.safetensors.index.json", index_text, strlen(index_text));
}

static void test_sharded(void)
{
    char dir[4200];
    ckpt_t c;
    ckpt_make(&c, "", 0, "F32");
    json_t *map = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(c.header, name, v)
    {
        if (strcmp(name, "__metadata__") != 0)
            json_object_set_new(map, name,
                                json_string(strcmp(name, "wte.weight") && strcmp(name, "wpe.weight")
                                                ? "model-00002-of-00002.safetensors"
                                                : "model-00001-of-00002.safetensors"));
    }
    json_t *index =
        json_pack("{s:{s:i}, s:o}", "metadata", "total_size", (int)c.data_size, "weight_map", map);
    char *good = json_dumps(index, JSON_INDENT(2));

    float want[V], got[V];
    ckpt_write(&c, dir, sizeof(dir), 1);
    gpt2_t *m = expect_load(dir, 0, NULL, NULL);
    if (m) {
        logits_of(m, want);
        model_free((model_t *)m);
    }
    new_case_dir(dir, sizeof(dir));
    write_sharded(&c, dir, good);
    m = expect_load(dir, 0, NULL, NULL);
    if (m) {
        CHECK_INT_EQ(m->base.st.n_files, 2);
        logits_of(m, got);
        CHECK(memcmp(want, got, sizeof(want)) == 0);
        model_free((model_t *)m);
    }

    json_t *bad = json_deep_copy(index); /* a tensor said to be in the wrong shard */
    json_object_set_new(json_object_get(bad, "weight_map"), "ln_f.bias",
                        json_string("model-00001-of-00002.safetensors"));
    char *text = json_dumps(bad, 0);
    new_case_dir(dir, sizeof(dir));
    write_sharded(&c, dir, text);
    expect_load(dir, -EINVAL, "model.safetensors.index.json: ln_f.bias",
                "listed in model-00001-of-00002.safetensors but not found there");
    free(text);
    json_decref(bad);

    bad = json_deep_copy(index); /* a shard that does not exist */
    json_object_set_new(json_object_get(bad, "weight_map"), "ln_f.bias",
                        json_string("model-00003-of-00003.safetensors"));
    text = json_dumps(bad, 0);
    new_case_dir(dir, sizeof(dir));
    write_sharded(&c, dir, text);
    expect_load(dir, -ENOENT, "model-00003-of-00003.safetensors: cannot open", NULL);
    free(text);
    json_decref(bad);

    bad = json_deep_copy(index); /* a shard outside the directory */
    json_object_set_new(json_object_get(bad, "weight_map"), "ln_f.bias",
                        json_string("../model-00001-of-00002.safetensors"));
    text = json_dumps(bad, 0);
    new_case_dir(dir, sizeof(dir));
    write_sharded(&c, dir, text);
    expect_load(dir, -EINVAL, "model.safetensors.index.json: ln_f.bias", "file name");
    free(text);
    json_decref(bad);

    new_case_dir(dir, sizeof(dir)); /* an index that is not JSON */
    write_sharded(&c, dir, "{\"weight_map\": ");
    expect_load(dir, -EINVAL, "model.safetensors.index.json: invalid JSON", NULL);

    new_case_dir(dir, sizeof(dir)); /* an index without a map */
    write_sharded(&c, dir, "{\"metadata\": {}}");
    expect_load(dir, -EINVAL, "model.safetensors.index.json: no weight_map", NULL);

    /* A shard that lacks a tensor nobody listed: the model's own check names it. */
    json_object_del(c.header, "h.0.ln_2.bias");
    json_object_del(map, "h.0.ln_2.bias");
    free(good);
    good = json_dumps(index, 0);
    new_case_dir(dir, sizeof(dir));
    write_sharded(&c, dir, good);
    expect_load(dir, -EINVAL, "model.safetensors.index.json", "missing tensor h.0.ln_2.bias");

    free(good);
    json_decref(index);
    ckpt_free(&c);
}

/* Random corruption of the length and header bytes: every load either succeeds or fails
 * with a message, and nothing crashes or reads outside the file. */
static void test_fuzz(void)
{
    char dir[4200];
    ckpt_t c;
    ckpt_make(&c, "", 0, "F32");
    size_t n;
    uint8_t *good = st_bytes(c.header, c.data, c.data_size, 1, &n);
    uint8_t *b = malloc(n);
    size_t hl = 8 + (size_t)good[0] + ((size_t)good[1] << 8);
    smp_rng_t r;
    smp_rng_seed(&r, 5);
    new_case_dir(dir, sizeof(dir));
    write_config(dir, c.config);
    int loaded = 0, refused = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(b, good, n);
        int flips = 1 + (int)(smp_rng_next(&r) % 4);
        for (int k = 0; k < flips; k++)
            b[smp_rng_next(&r) % hl] = (uint8_t)smp_rng_next(&r);
        size_t len = smp_rng_next(&r) % 8 ? n : (size_t)(smp_rng_next(&r) % n);
        write_bytes(dir, "model.safetensors", b, len);
        char err[512] = "";
        gpt2_t *m = NULL;
        int rc = gpt2_open(&m, dir, 0, err, sizeof(err));
        if (rc == 0) {
            loaded++;
            model_free((model_t *)m);
        } else {
            refused++;
            CHECK(rc < 0 && err[0] != '\0' && m == NULL);
        }
    }
    printf("fuzz: 300 corrupted headers, %d loaded, %d refused with a message\n", loaded, refused);
    free(b);
    free(good);
    ckpt_free(&c);
}

/* A Llama-family checkpoint: 1 layer, C = 8, NH = 2, NKV = 1, head_dim 4 (not C / NH), an
 * MLP of 12, the vocabulary and positions of the GPT-2 one; qwen3 adds q_norm/k_norm. */
enum { LHS = 4, LI = 12 };

static void llama_make(ckpt_t *c, const char *arch, int lm_head)
{
    smp_rng_t r;
    smp_rng_seed(&r, 12);
    memset(c, 0, sizeof(*c));
    c->config = json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:n, "
                          "s:s, s:[ii]}",
                          "architectures", arch, "num_hidden_layers", L, "hidden_size", C,
                          "num_attention_heads", NH, "num_key_value_heads", 1, "head_dim", LHS,
                          "intermediate_size", LI, "vocab_size", V, "max_position_embeddings", P,
                          "rms_norm_eps", 1e-6, "rope_theta", 10000.0, "tie_word_embeddings",
                          !lm_head, "rope_scaling", "hidden_act", "silu", "eos_token_id", 2, 3);
    c->header = json_object();
    json_object_set_new(c->header, "__metadata__", json_pack("{s:s}", "format", "pt"));
    add_tensor(c, "model.embed_tokens.weight", "F32", V, C, &r);
    const struct {
        const char *name;
        int64_t d0, d1;
    } layer[] = {
        {"input_layernorm.weight", C, 0},         {"self_attn.q_proj.weight", NH * LHS, C},
        {"self_attn.k_proj.weight", LHS, C},      {"self_attn.v_proj.weight", LHS, C},
        {"self_attn.o_proj.weight", C, NH * LHS}, {"post_attention_layernorm.weight", C, 0},
        {"mlp.gate_proj.weight", LI, C},          {"mlp.up_proj.weight", LI, C},
        {"mlp.down_proj.weight", C, LI},
    };
    char name[128];
    for (int l = 0; l < L; l++) {
        for (size_t i = 0; i < sizeof(layer) / sizeof(layer[0]); i++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, layer[i].name);
            add_tensor(c, name, "F32", layer[i].d0, layer[i].d1, &r);
        }
        if (strcmp(arch, "Qwen3ForCausalLM") == 0)
            for (int k = 0; k < 2; k++) {
                snprintf(name, sizeof(name), "model.layers.%d.self_attn.%s_norm.weight", l,
                         k ? "k" : "q");
                add_tensor(c, name, "F32", LHS, 0, &r);
            }
    }
    add_tensor(c, "model.norm.weight", "F32", C, 0, &r);
    if (lm_head)
        add_tensor(c, "lm_head.weight", "F32", V, C, &r);
}

/* Loads dir as the Llama family and checks the code and the error line. */
static model_t *expect_llama(const char *dir, int want_rc, const char *what1, const char *what2)
{
    char err[512] = "";
    model_t *m = (model_t *)(uintptr_t)1;
    int rc = model_load(&m, dir, 0, NULL, err, sizeof(err));
    CHECK_INT_EQ(rc, want_rc);
    if (want_rc) {
        printf("case %02d: %s\n", case_no, err);
        CHECK(m == NULL);
        CHECK(strchr(err, '\n') == NULL);
        if (what1)
            CHECK_CONTAINS(err, what1);
        if (what2)
            CHECK_CONTAINS(err, what2);
    } else if (rc) {
        fprintf(stderr, "case %02d: unexpected error: %s\n", case_no, err);
    }
    return rc ? NULL : m;
}

/* Writes c with one config.json key replaced (value NULL: removed). */
static void llama_write_with(const ckpt_t *c, char *dir, size_t len, const char *key, json_t *value)
{
    json_t *saved = json_deep_copy(c->config);
    if (value)
        json_object_set_new(c->config, key, value);
    else
        json_object_del(c->config, key);
    ckpt_write(c, dir, len, 1);
    json_object_clear(c->config);
    json_object_update(c->config, saved);
    json_decref(saved);
}

/* Writes c with tensor name's shape replaced (d0 < 0: the tensor removed). */
static void llama_write_tensor(ckpt_t *c, char *dir, size_t len, const char *name, int64_t d0,
                               int64_t d1)
{
    json_t *saved = json_deep_copy(c->header);
    json_t *t = json_object_get(c->header, name);
    CHECK(t != NULL);
    if (t && d0 < 0) {
        json_object_del(c->header, name);
    } else if (t) {
        /* The same bytes under another shape of as many values keeps the file valid. */
        json_object_set_new(t, "shape",
                            d1 ? json_pack("[II]", (json_int_t)d0, (json_int_t)d1)
                               : json_pack("[I]", (json_int_t)d0));
    }
    ckpt_write(c, dir, len, 1);
    json_object_clear(c->header);
    json_object_update(c->header, saved);
    json_decref(saved);
}

static void test_llama(void)
{
    char dir[4200];
    ckpt_t c;
    llama_make(&c, "LlamaForCausalLM", 0);
    ckpt_write(&c, dir, sizeof(dir), 1);
    /* generation_config.json's EOS ids join config.json's, each once. */
    write_bytes(dir, "generation_config.json", "{\"eos_token_id\": [3, 7]}", 24);
    model_t *m = expect_llama(dir, 0, NULL, NULL);
    if (m) {
        const model_desc_t *d = model_describe(m);
        CHECK(strcmp(d->arch, "LlamaForCausalLM") == 0);
        CHECK_INT_EQ(d->n_kv_head, 1);
        CHECK_INT_EQ(d->head_size, LHS);
        CHECK_INT_EQ(d->max_pos, P);
        CHECK_INT_EQ(d->n_eos, 3);
        CHECK_INT_EQ(d->eos[0], 2);
        CHECK_INT_EQ(d->eos[1], 3);
        CHECK_INT_EQ(d->eos[2], 7);
        /* The KV pool is sized from NKV x HS: 1 x 4 values of K and V per layer and token. */
        CHECK_INT_EQ(model_kv_block_bytes(m, 4, ENG_DTYPE_F32), (size_t)L * 2 * 4 * LHS * 4);
        model_free(m);
    }

    /* Architectures, settings and shapes the loader refuses, each with one line. */
    llama_write_with(&c, dir, sizeof(dir), "architectures", json_pack("[s]", "MistralForCausalLM"));
    expect_llama(dir, -EINVAL, "MistralForCausalLM", "LlamaForCausalLM, Qwen2ForCausalLM");
    llama_write_with(&c, dir, sizeof(dir), "architectures", NULL);
    expect_llama(dir, -EINVAL, "missing tensor wte.weight", NULL); /* neither field: GPT-2 */
    llama_write_with(&c, dir, sizeof(dir), "rope_scaling",
                     json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0));
    expect_llama(dir, -EINVAL, "rope_scaling type \"yarn\"", "llama3");
    llama_write_with(&c, dir, sizeof(dir), "num_key_value_heads", json_integer(3));
    expect_llama(dir, -EINVAL, "num_attention_heads 2", "num_key_value_heads 3");
    llama_write_with(&c, dir, sizeof(dir), "hidden_act", json_string("gelu"));
    expect_llama(dir, -EINVAL, "hidden_act \"gelu\"", NULL);
    llama_write_with(&c, dir, sizeof(dir), "head_dim", json_integer(3));
    expect_llama(dir, -EINVAL, "head size 3 is odd", NULL);
    llama_write_with(&c, dir, sizeof(dir), "num_hidden_layers", json_integer(2));
    expect_llama(dir, -EINVAL, "missing tensor model.layers.1.input_layernorm.weight",
                 "num_hidden_layers = 2");
    llama_write_with(&c, dir, sizeof(dir), "tie_word_embeddings", json_false());
    expect_llama(dir, -EINVAL, "missing tensor lm_head.weight", NULL);
    llama_write_with(&c, dir, sizeof(dir), "attention_bias", json_true());
    expect_llama(dir, -EINVAL, "missing tensor model.layers.0.self_attn.q_proj.bias", NULL);
    llama_write_with(&c, dir, sizeof(dir), "architectures", json_pack("[s]", "Qwen3ForCausalLM"));
    expect_llama(dir, -EINVAL, "missing tensor model.layers.0.self_attn.q_norm.weight", NULL);
    llama_write_tensor(&c, dir, sizeof(dir), "model.layers.0.self_attn.k_proj.weight", C, LHS);
    expect_llama(dir, -EINVAL, "model.safetensors: model.layers.0.self_attn.k_proj.weight",
                 "shape [8,4] disagrees with config.json (expected [4,8])");
    llama_write_tensor(&c, dir, sizeof(dir), "model.layers.0.mlp.down_proj.weight", -1, 0);
    expect_llama(dir, -EINVAL, "missing tensor model.layers.0.mlp.down_proj.weight",
                 "num_hidden_layers = 1");

    /* Tensors config.json has no place for. */
    smp_rng_t r;
    smp_rng_seed(&r, 13);
    ckpt_t extra;
    llama_make(&extra, "LlamaForCausalLM", 0);
    add_tensor(&extra, "model.layers.1.mlp.up_proj.weight", "F32", LI, C, &r);
    ckpt_write(&extra, dir, sizeof(dir), 1);
    expect_llama(dir, -EINVAL, "model.layers.1.mlp.up_proj.weight", "beyond num_hidden_layers = 1");
    ckpt_free(&extra);
    llama_make(&extra, "LlamaForCausalLM", 0);
    add_tensor(&extra, "model.layers.0.self_attn.o_proj.bias", "F32", C, 0, &r);
    ckpt_write(&extra, dir, sizeof(dir), 1);
    expect_llama(dir, -EINVAL, "model.layers.0.self_attn.o_proj.bias",
                 "not a weight of LlamaForCausalLM");
    ckpt_free(&extra);
    /* The rotary buffer older checkpoints carry is ignored; Qwen3 with its norms loads. */
    llama_make(&extra, "Qwen3ForCausalLM", 1);
    add_tensor(&extra, "model.layers.0.self_attn.rotary_emb.inv_freq", "F32", LHS / 2, 0, &r);
    ckpt_write(&extra, dir, sizeof(dir), 1);
    model_free(expect_llama(dir, 0, NULL, NULL));
    ckpt_free(&extra);

    /* A truncated file names the file and the tensor that no longer fits. */
    size_t n;
    uint8_t *good = st_bytes(c.header, c.data, c.data_size, 1, &n);
    new_case_dir(dir, sizeof(dir));
    write_config(dir, c.config);
    write_bytes(dir, "model.safetensors", good, n - 8);
    expect_llama(dir, -EINVAL, "model.safetensors: model.norm.weight", "out of range");
    free(good);
    ckpt_free(&c);
}

static void remove_tree(const char *root)
{
    static const char *const names[] = {"config.json",
                                        "generation_config.json",
                                        "model.safetensors",
                                        "model.safetensors.index.json",
                                        "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors"};
    for (int i = 1; i <= case_no; i++) {
        char dir[4200], path[4400];
        snprintf(dir, sizeof(dir), "%s/case-%02d", root, i);
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
            unlink(path);
        }
        rmdir(dir);
    }
    rmdir(root);
}

int main(void)
{
    const char *tmpdir = getenv("TMPDIR");
    snprintf(tmp_root, sizeof(tmp_root), "%s/test_safetensors.XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_valid();
    test_convert();
    test_bad_headers();
    test_bad_files();
    test_sharded();
    test_llama();
    test_fuzz();
    remove_tree(tmp_root);
    if (check_failures()) {
        fprintf(stderr, "test_safetensors: %d check(s) failed\n", check_failures());
        return 1;
    }
    printf("test_safetensors: all checks passed\n");
    return 0;
}
