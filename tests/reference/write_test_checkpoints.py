#!/usr/bin/python3
"""Writes the tiny checkpoints the test suites use, then a stamp file (build step).

    write_test_checkpoints.py MAKE_CHECKPOINT OUT_DIR STAMP

All five share one seed, so they hold the same float32 values (rounded in the F16 and BF16
ones) and tests can compare them with each other:
    tiny-f32      model.safetensors, F32, tied LM head
    tiny-f16      the same in F16
    tiny-bf16     the same in BF16
    tiny-prefix   F32, "transformer." names, a separate lm_head.weight, attn buffers
    tiny-sharded  F32 in 3 shards + model.safetensors.index.json
and the Llama family's (make-checkpoint --arch, tiny shape: 2 layers, C = 64, V = 512,
256 positions), chosen so that together they cover grouped-query groups of 1, 3, 4 and 8,
head sizes 64 and 128, tied and separate LM heads, llama3 rope scaling on and off, F32, F16
and BF16 files and each architecture:
    llama-f32     LlamaForCausalLM, NH 6 / NKV 2 (group 3), HS 64, tied, llama3 scaling
    llama-f16     the same in F16
    llama-bf16    the same in BF16
    llama-g8      NH 8 / NKV 1 (group 8), HS 128, separate lm_head, no scaling, attention
                  and MLP biases
    qwen2-bf16    Qwen2ForCausalLM, C 256, NH 4 / NKV 1 (group 4), HS 64, tied, q/k/v biases
    qwen3-f32     Qwen3ForCausalLM, NH 4 / NKV 4 (group 1), head_dim 128 (twice C / NH),
                  q_norm and k_norm, separate lm_head
"""

import importlib.machinery
import importlib.util
import os
import sys

SEED = 1234
CHECKPOINTS = {
    "tiny-f32": {},
    "tiny-f16": {"dtype": "f16"},
    "tiny-bf16": {"dtype": "bf16"},
    "tiny-prefix": {"prefix": True, "lm_head": True, "with_buffers": True},
    "tiny-sharded": {"shards": 3},
}
LLAMA_CHECKPOINTS = {
    "llama-f32": {"arch": "llama"},
    "llama-f16": {"arch": "llama", "dtype": "f16"},
    "llama-bf16": {"arch": "llama", "dtype": "bf16"},
    "llama-g8": {"arch": "llama", "n_head": 8, "kv_heads": 1, "head_dim": 128,
                 "lm_head": True, "rope_scaling": "none", "bias": True},
    "qwen2-bf16": {"arch": "qwen2", "n_embd": 256, "n_head": 4, "kv_heads": 1,
                   "head_dim": 64, "rope_scaling": "none", "dtype": "bf16"},
    "qwen3-f32": {"arch": "qwen3", "n_head": 4, "kv_heads": 4, "head_dim": 128,
                  "lm_head": True, "rope_scaling": "none"},
}


def main(argv):
    script, out_dir, stamp = argv
    # make-checkpoint has no .py suffix, so load it by path.
    loader = importlib.machinery.SourceFileLoader("make_checkpoint", script)
    spec = importlib.util.spec_from_loader("make_checkpoint", loader)
    mc = importlib.util.module_from_spec(spec)
    loader.exec_module(mc)
    for name, opts in CHECKPOINTS.items():
        mc.make_checkpoint(os.path.join(out_dir, name), seed=SEED, shape="tiny", **opts)
    for name, opts in LLAMA_CHECKPOINTS.items():
        mc.make_llama_checkpoint(os.path.join(out_dir, name), seed=SEED, shape="tiny", **opts)
    with open(stamp, "w") as f:
        f.write("seed %d: %s %s\n" % (SEED, " ".join(CHECKPOINTS), " ".join(LLAMA_CHECKPOINTS)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
