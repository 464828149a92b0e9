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


def main(argv):
    script, out_dir, stamp = argv
    # make-checkpoint has no .py suffix, so load it by path.
    loader = importlib.machinery.SourceFileLoader("make_checkpoint", script)
    spec = importlib.util.spec_from_loader("make_checkpoint", loader)
    mc = importlib.util.module_from_spec(spec)
    loader.exec_module(mc)
    for name, opts in CHECKPOINTS.items():
        mc.make_checkpoint(os.path.join(out_dir, name), seed=SEED, shape="tiny", **opts)
    with open(stamp, "w") as f:
        f.write("seed %d: %s\n" % (SEED, " ".join(CHECKPOINTS)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
