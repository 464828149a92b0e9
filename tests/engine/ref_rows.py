#!/usr/bin/python3
"""Runs a PyTorch reference (tests/reference/gpt2_ref.py or llama_ref.py) for a list of jobs
in one process.

    ref_rows.py REF_PY JOBS OUT

The reference module's model class is its `Model` (llama_ref.py), else `GPT2`.

JOBS has one job per line: MODEL_DIR <tab> N_PROMPT <tab> comma-separated ids (the prompt
followed by the engine's greedy continuation). For each job, in order, OUT gets
    float32[V]                 the reference logits after the prompt (row N_PROMPT - 1)
    int32[T - N_PROMPT + 1]    the reference argmax after each prefix of at least N_PROMPT ids
so the engine's continuation equals the reference's greedy one exactly when every id it
chose is the reference argmax after the ids before it.
"""

import importlib.machinery
import importlib.util
import sys

import numpy as np
import torch


def main(argv):
    ref_path, jobs_path, out_path = argv
    name = "model_ref"
    loader = importlib.machinery.SourceFileLoader(name, ref_path)
    spec = importlib.util.spec_from_loader(name, loader)
    ref = importlib.util.module_from_spec(spec)
    loader.exec_module(ref)
    model_class = getattr(ref, "Model", None) or ref.GPT2
    models = {}
    with open(jobs_path) as f, open(out_path, "wb") as out, torch.no_grad():
        for line in f:
            model_dir, n_prompt, ids = line.rstrip("\n").split("\t")
            n_prompt = int(n_prompt)
            tokens = [int(t) for t in ids.split(",")]
            if model_dir not in models:
                models[model_dir] = model_class(model_dir)
            logits = models[model_dir].forward(tokens)  # (T, V) float64
            out.write(logits[n_prompt - 1].numpy().astype("<f4").tobytes())
            # torch.argmax returns the first maximum: ties go to the lower id.
            best = torch.argmax(logits[n_prompt - 1:], dim=1).numpy().astype("<i4")
            out.write(best.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
