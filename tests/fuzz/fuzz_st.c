/* fuzz_st.c - libFuzzer harness for the safetensors loader and the weights it hands out.
 *
 * The input is model.safetensors of a 1-layer model (8 channels, 2 heads, 16 positions,
 * 11 tokens; config.json is fixed). model_load either fails with a NULL model and one error
 * line, or gives a model whose forward pass runs over every weight without reading
 * outside the file (ASan checks the reads).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "fuzz_tmpdir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config[] = "{\"n_layer\": 1, \"n_embd\": 8, \"n_head\": 2, \"n_positions\": 16, "
                             "\"vocab_size\": 11, \"activation_function\": \"gelu_new\"}";

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "broken promise: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_dir_path[0]) /* first input: the directory and its fixed config.json */
        fuzz_dir_put("config.json", config, strlen(config));
    const char *dir = fuzz_dir();
    fuzz_dir_put("model.safetensors", data, size);
    char err[512] = "";
    model_t *m = NULL;
    int rc = model_load(&m, dir, 0, NULL, err, sizeof(err));
    if (rc) {
        check(rc < 0 && m == NULL, "a failed load returns a negative code and no model");
        check(err[0] != '\0' && strchr(err, '\n') == NULL, "a failed load says one line");
        return 0;
    }
    check(m != NULL, "a successful load returns a model");
    kv_cache_t kv;
    /* Either cache dtype: F16 rounds whatever the weights make of K and V (inf, NaN). */
    int kv_dtype = size % 2 ? ENG_DTYPE_F16 : ENG_DTYPE_F32;
    check(model_kv_init(m, &kv, 4, 2, kv_dtype) == 0, "a KV cache");
    check(model_reserve(m, 4, 1, 8) == 0, "scratch");
    int32_t tokens[3] = {10, 0, 5}, pos[3] = {0, 1, 2}, slot[3] = {4, 5, 6};
    int32_t table[1] = {1}, seq_start[2] = {0, 3}, ctx[1] = {3}, last = 2;
    const int32_t *tables[1] = {table};
    float logits[11];
    model_batch_t b = {.T = 3,
                       .tokens = tokens,
                       .pos = pos,
                       .slot = slot,
                       .B = 1,
                       .seq_start = seq_start,
                       .ctx_len = ctx,
                       .block_table = tables,
                       .n_logits = 1,
                       .logit_rows = &last,
                       .logits = logits};
    check(model_forward(m, &kv, &b) == 0, "a forward pass on a loaded model");
    kv_cache_free(&kv);
    model_free(m);
    return 0;
}
