/* fuzz_model_config.c - libFuzzer harness for a checkpoint's config.json (model_load).
 *
 * The input is the config.json file. The directory also holds model.safetensors of a tiny
 * test checkpoint (a link, not a copy): the Llama family's llama-f32 (NV_LLAMA_DIR) when the
 * input names Llama or Qwen anywhere, else GPT-2's tiny-f32 (NV_CKPT_DIR), so a config that
 * parses goes on to have every tensor's shape checked against it. Checks, beyond "no crash,
 * no leak": a failure leaves one printable error line and no model; a success loads only a
 * config that agrees with the weights (the tiny shape, every layer of the file).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/model/model.h"
#include "fuzz_tmpdir.h"

#if !defined(NV_CKPT_DIR) || !defined(NV_LLAMA_DIR)
#error "NV_CKPT_DIR and NV_LLAMA_DIR must name the tiny test checkpoints"
#endif

static int mentions(const uint8_t *data, size_t size, const char *word)
{
    return memmem(data, size, word, strlen(word)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int linked; /* 1: GPT-2's weights, 2: the Llama family's */
    const int want = mentions(data, size, "lama") || mentions(data, size, "wen") ? 2 : 1;
    if (linked != want) {
        char p[512];
        snprintf(p, sizeof(p), "%s/model.safetensors", fuzz_dir());
        unlink(p);
        if (symlink(want == 2 ? NV_LLAMA_DIR "/model.safetensors"
                              : NV_CKPT_DIR "/model.safetensors",
                    p) != 0) {
            perror(p);
            abort();
        }
        linked = want;
    }
    fuzz_dir_put("config.json", data, size);
    model_t *m = (model_t *)(uintptr_t)1;
    char err[512] = "";
    int rc = model_load(&m, fuzz_dir(), 0, NULL, err, sizeof(err));
    fuzz_check_err(rc, err, "model_load");
    if (rc != 0) {
        if (m != NULL)
            abort();
        return 0;
    }
    const model_desc_t *c = model_describe(m);
    /* tests/reference's tiny shape: 2 layers, 64 channels, 256 positions. Fewer layers than
     * the file holds are refused (the extra tensors would go unused); the number of heads is
     * not in any tensor's shape. */
    /* llama-f32: q_proj [NH HS = 384, 64], k_proj and v_proj [NKV HS = 128, 64]; the
     * positions are in no tensor's shape. */
    const int llama = strcmp(c->arch, "GPT2LMHeadModel") != 0;
    if (llama ? c->n_layer != 2 || c->n_embd != 64 || c->vocab_size != 512 ||
                    c->n_head * c->head_size != 384 || c->n_kv_head * c->head_size != 128 ||
                    c->n_head % c->n_kv_head != 0 || c->max_pos < 1
              : c->n_layer != 2 || c->n_head <= 0 || c->n_embd != 64 ||
                    c->n_embd % c->n_head != 0 || c->max_pos != 256 || c->vocab_size != 50257 ||
                    c->n_kv_head != c->n_head || c->head_size * c->n_head != c->n_embd) {
        fprintf(stderr, "loaded a config that disagrees: L %d NH %d C %d ctx %d V %d\n", c->n_layer,
                c->n_head, c->n_embd, c->max_pos, c->vocab_size);
        abort();
    }
    model_free(m);
    return 0;
}
