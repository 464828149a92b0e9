#!/usr/bin/python3
"""Checks of the reference itself and of the test checkpoints (suite 'engine').

    test_gpt2_ref.py CKPT_DIR

CKPT_DIR holds the tiny-* checkpoints written at build time (tests/reference/meson.build).
Checks that: F16/BF16/sharded/prefixed files load to the F32 file's values (rounded, for
F16 and BF16, by torch's own conversion); logits are causal and depend on positions; a
second formulation (token by token through a K/V cache, torch.nn.functional layer norm and
tanh GELU) gives the same logits; the CLI writes what it promises; and the checkpoints give
logits with a spread and greedy continuations that move. Exits 1 on the first failure.
"""

import inspect
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gpt2_ref  # noqa: E402

PROMPT = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]  # 10 ids


def fail(msg):
    caller = next(f for f in inspect.stack()[1:]
                  if f.function not in ("fail", "check", "check_close"))
    print("FAIL %s:%d: %s" % (os.path.basename(caller.filename), caller.lineno, msg))
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def check_close(a, b, tol, what):
    """Max |a - b| <= tol; prints the max difference either way."""
    d = float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())
    print("  %-52s max |diff| %.3g (tolerance %.3g)" % (what, d, tol))
    if not d <= tol:
        fail("%s: max |diff| %.6g > %.3g" % (what, d, tol))


def test_loading(ck):
    f32 = gpt2_ref.read_weights(os.path.join(ck, "tiny-f32"))
    names = set(f32)
    check("lm_head.weight" not in names, "tiny-f32 should have a tied LM head")
    for dtype, torch_dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        other = gpt2_ref.read_weights(os.path.join(ck, "tiny-" + dtype))
        check(set(other) == names, "tiny-%s tensor names %s != %s" % (dtype, sorted(other),
                                                                      sorted(names)))
        for n in names:
            want = torch.from_numpy(f32[n].copy()).to(torch_dtype).to(torch.float32).numpy()
            got = other[n]
            if not np.array_equal(got, want):
                i = np.argmax(got.ravel() != want.ravel())
                fail("tiny-%s %s[%d] = %r, f32 value rounded = %r"
                     % (dtype, n, i, got.ravel()[i], want.ravel()[i]))
            if n == "wte.weight":
                check(not np.array_equal(got, f32[n]), "tiny-%s %s was not rounded" % (dtype, n))
    print("  f16 and bf16 tensors equal the f32 ones rounded (%d tensors)" % len(names))

    sharded_dir = os.path.join(ck, "tiny-sharded")
    shards = [f for f in os.listdir(sharded_dir) if f.endswith(".safetensors")]
    check(len(shards) == 3, "tiny-sharded has %d shards, expected 3" % len(shards))
    sharded = gpt2_ref.read_weights(sharded_dir)
    check(set(sharded) == names, "tiny-sharded tensor names differ from tiny-f32")
    for n in names:
        check(np.array_equal(sharded[n], f32[n]), "tiny-sharded %s differs from tiny-f32" % n)

    prefix_dir = os.path.join(ck, "tiny-prefix")
    with open(os.path.join(prefix_dir, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    raw = [n for n in header if n != "__metadata__"]
    check(all(n.startswith("transformer.") or n == "lm_head.weight" for n in raw),
          "tiny-prefix has unprefixed names")
    check(header["transformer.h.0.attn.masked_bias"]["shape"] == [],
          "tiny-prefix masked_bias shape %s" % header["transformer.h.0.attn.masked_bias"])
    prefixed = gpt2_ref.read_weights(prefix_dir)
    for n in names:
        check(np.array_equal(prefixed[n], f32[n]), "tiny-prefix %s differs from tiny-f32" % n)
    check("lm_head.weight" in prefixed and "h.1.attn.bias" in prefixed,
          "tiny-prefix lacks lm_head.weight or the attn buffers")
    check(not np.array_equal(prefixed["lm_head.weight"], f32["wte.weight"]),
          "tiny-prefix lm_head.weight equals wte: an untied head would go unnoticed")
    print("  sharded and prefixed checkpoints hold the f32 tensors")


def test_causal_and_positions(m):
    full = m.forward(PROMPT)
    for i in (0, 4, 8):
        changed = PROMPT[:i + 1] + [(t + 1000) % m.V for t in PROMPT[i + 1:]]
        other = m.forward(changed)
        check_close(other[:i + 1], full[:i + 1], 1e-9, "positions 0..%d with later ids changed" % i)
        d = float((other[i + 1:] - full[i + 1:]).abs().max())
        check(d > 1e-2, "positions after %d did not change (max diff %g)" % (i, d))
    # Same multiset of tokens in another order: the last logits must differ.
    d = float((m.forward(PROMPT[::-1])[-1] - full[-1]).abs().max())
    check(d > 1e-2, "reversing the prompt changed the last logits by only %g" % d)


def cached_logits(m, tokens):
    """Second formulation: one token at a time, keys and values kept per layer, with
    torch.nn.functional's layer norm and tanh GELU instead of the reference's own."""
    w, C, NH = m.w, m.C, m.NH
    HS = C // NH
    cache = [([], []) for _ in range(m.L)]
    out = []
    for pos, tok in enumerate(tokens):
        x = w["wte.weight"][tok] + w["wpe.weight"][pos]  # (C,)
        for i in range(m.L):
            p = "h.%d." % i
            h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], m.eps)
            q, k, v = (h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]).split(C)
            cache[i][0].append(k.view(NH, HS))
            cache[i][1].append(v.view(NH, HS))
            K = torch.stack(cache[i][0], dim=1)  # (NH, pos+1, HS)
            V = torch.stack(cache[i][1], dim=1)
            s = torch.einsum("nh,nth->nt", q.view(NH, HS), K) / math.sqrt(HS)
            y = torch.einsum("nt,nth->nh", torch.softmax(s, dim=-1), V).reshape(C)
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], m.eps)
            u = F.gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")
            x = x + u @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], m.eps)
        out.append(x @ m.lm_head.T)
    return torch.stack(out)


def test_second_formulation(m, m_prefix):
    check_close(cached_logits(m, PROMPT), m.forward(PROMPT), 1e-9,
                "token-by-token cached vs full forward (tiny-f32)")
    check_close(cached_logits(m_prefix, PROMPT), m_prefix.forward(PROMPT), 1e-9,
                "token-by-token cached vs full forward (tiny-prefix)")


def test_checkpoint_quality(m, m_f16, m_bf16, m_prefix):
    last = m.forward(PROMPT)[-1]
    std = float(last.std())
    print("  tiny-f32 last-position logits: std %.3f, range %.3f..%.3f"
          % (std, float(last.min()), float(last.max())))
    check(0.5 < std < 5, "logit std %g outside 0.5..5" % std)
    for prompt in (PROMPT, [50256], [40]):
        g = m.greedy(prompt, 24)
        changes = sum(1 for a, b in zip(g, g[1:]) if a != b)
        print("  greedy after %d tokens: %d changes in 24 tokens" % (len(prompt), changes))
        check(changes >= 8, "greedy continuation %s barely moves" % g)
    # How far the rounded weights move the logits: the budget for the engine's F16/BF16
    # tolerance (the engine widens them exactly, so its error on top is float32's alone).
    for name, other in (("f16", m_f16), ("bf16", m_bf16)):
        d = float((other.forward(PROMPT) - m.forward(PROMPT)).abs().max())
        print("  tiny-%s vs tiny-f32 logits: max |diff| %.3g" % (name, d))
        check(0 < d < 1.0, "tiny-%s logits differ from f32 by %g" % (name, d))
    d = float((m_prefix.forward(PROMPT) - m.forward(PROMPT)).abs().max())
    check(d > 0.1, "separate lm_head changed the logits by only %g" % d)


def test_cli(m, ck):
    model_dir = os.path.join(ck, "tiny-f32")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        raw = os.path.join(tmp, "logits.f32")
        toks = ",".join(map(str, PROMPT[:5]))
        r = subprocess.run([sys.executable, os.path.join(HERE, "gpt2_ref.py"), model_dir,
                            "--tokens", toks, "--all-logits", "--greedy", "4", "--logprobs",
                            "3", "--logits-f32", raw, "--out", out])
        check(r.returncode == 0, "gpt2_ref.py exited %d" % r.returncode)
        with open(out) as f:
            res = json.load(f)
        ref = m.forward(PROMPT[:5])
        check_close(torch.tensor(res["all_logits"], dtype=torch.float64), ref, 1e-12, "CLI all_logits vs forward")
        f32 = np.fromfile(raw, dtype="<f4").reshape(5, m.V)
        check_close(torch.from_numpy(f32.astype(np.float64)), ref, 1e-5, "CLI --logits-f32")
        greedy = m.greedy(PROMPT[:5], 4)
        check(res["greedy"] == greedy, "CLI greedy %s != %s" % (res["greedy"], greedy))
        lp = res["logprobs"]
        seq = PROMPT[:5] + greedy
        check(lp["tokens"] == seq, "logprobs tokens %s != %s" % (lp["tokens"], seq))
        check(lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None,
              "first token has logprobs")
        full = torch.log_softmax(m.forward(seq), dim=-1)
        for i in range(1, len(seq)):
            want = float(full[i - 1, seq[i]])
            check(abs(lp["token_logprobs"][i] - want) < 1e-12,
                  "token_logprobs[%d] %r != %r" % (i, lp["token_logprobs"][i], want))
            top = lp["top_logprobs"][i]
            check(len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1],
                  "top_logprobs[%d] = %s" % (i, top))
            check(abs(top[0][1] - float(full[i - 1].max())) < 1e-12, "top_logprobs[%d][0]" % i)
            if i >= 5:  # greedy tokens are the most likely ones
                check(top[0][0] == seq[i], "greedy token %d is not the top one" % i)
        check(lp["next_top_logprobs"][0][0] == int(full[-1].argmax()), "next_top_logprobs")

        r = subprocess.run([sys.executable, os.path.join(HERE, "gpt2_ref.py"), model_dir,
                            "--tokens", "50257", "--out", out], stderr=subprocess.PIPE)
        check(r.returncode == 1 and b"out of range" in r.stderr,
              "bad token id: exit %d, stderr %r" % (r.returncode, r.stderr))
    print("  CLI output matches the module")


def main(argv):
    if len(argv) != 1:
        print("usage: test_gpt2_ref.py CKPT_DIR", file=sys.stderr)
        return 2
    ck = argv[0]
    torch.set_num_threads(1)
    with torch.no_grad():
        print("loading")
        test_loading(ck)
        m = gpt2_ref.GPT2(os.path.join(ck, "tiny-f32"))
        m_f16 = gpt2_ref.GPT2(os.path.join(ck, "tiny-f16"))
        m_bf16 = gpt2_ref.GPT2(os.path.join(ck, "tiny-bf16"))
        m_prefix = gpt2_ref.GPT2(os.path.join(ck, "tiny-prefix"))
        print("causality and positions")
        test_causal_and_positions(m)
        print("second formulation")
        test_second_formulation(m, m_prefix)
        print("checkpoint quality")
        test_checkpoint_quality(m, m_f16, m_bf16, m_prefix)
        print("CLI")
        test_cli(m, ck)
    print("all reference checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
