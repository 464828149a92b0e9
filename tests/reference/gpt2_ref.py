#!/usr/bin/python3
"""GPT-2 reference forward pass in PyTorch, written from the public architecture.

Independent of the C code and of the transformers library. Reads a Hugging Face GPT-2
directory (config.json + model.safetensors, or shards + model.safetensors.index.json;
names with or without "transformer."; tied or separate lm_head; F32, F16 or BF16) and
computes in float64: the file's values are widened exactly, so the only rounding is
float64's, and the result is the exact answer for the stored weights to ~1e-12.

CLI (what the C and server tests call):
    gpt2_ref.py MODEL_DIR --tokens 464,2068,... [--all-logits] [--greedy N]
                [--logprobs K] [--logits-f32 FILE] --out FILE.json
writes a JSON object:
    "tokens":       the input ids
    "logits":       last position's logits, V floats (or "all_logits": T rows of V)
    "greedy":       N ids, each the argmax after the input and the ids before it
    "logprobs":     with --logprobs K, over tokens = input + greedy, in OpenAI's echo shape:
                    {"tokens", "token_logprobs", "top_logprobs", "next_top_logprobs"}
                    token_logprobs[i] = log p(tokens[i] | tokens[:i]) (null for i = 0),
                    top_logprobs[i]   = the K most likely [id, logprob] at position i (null for
                                        i = 0), next_top_logprobs = the K most likely after the
                                        last token; ties broken by the lower id.
--logits-f32 FILE also writes the same logits as raw little-endian float32, rows of V.

The model (B = 1 sequence, T tokens, C channels, NH heads, HS = C / NH, V vocab):
    x      = wte[tokens] + wpe[0..T-1]                                    (T, C)
    per layer:
      h    = LN(x; ln_1)          LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * w + b
                                  (mean and biased variance over C; eps from config.json)
      q,k,v = split(h @ c_attn.weight + c_attn.bias)                      3 x (T, C)
      per head: A = softmax(q k^T / sqrt(HS) + M), M[i][j] = -inf for j > i,  y = A v
      x    = x + y @ attn.c_proj.weight + attn.c_proj.bias
      h    = LN(x; ln_2)
      x    = x + gelu_new(h @ c_fc.weight + c_fc.bias) @ mlp.c_proj.weight + mlp.c_proj.bias
             gelu_new(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3)))
    logits = LN(x; ln_f) @ lm_head^T        lm_head = lm_head.weight if present, else wte
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

DTYPE = torch.float64  # compute dtype for everything below


# ---- loading -----------------------------------------------------------------------------

def read_safetensors(path):
    """Parses one safetensors file: u64 LE header size N, N bytes of JSON header
    {name: {dtype, shape, data_offsets: [begin, end]}}, then the data block the offsets are
    relative to. Returns {name: float32 or float64 numpy array}."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        shape = tuple(info["shape"])
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F64":
            a = np.frombuffer(raw, dtype="<f8")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            # bfloat16 is the top half of a float32: shift the 16 bits into place.
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("%s: tensor %s has %d values for shape %s"
                             % (path, name, a.size, shape))
        out[name] = a.reshape(shape)
    return out


def read_weights(model_dir):
    """All tensors of the directory, names without the "transformer." prefix."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    raw = {}
    for fname in files:
        raw.update(read_safetensors(os.path.join(model_dir, fname)))
    out = {}
    for name, a in raw.items():
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        out[name] = a
    return out


class GPT2:
    """The weights as float64 torch tensors and the shape from config.json."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.L = cfg["n_layer"]
        self.C = cfg["n_embd"]
        self.NH = cfg["n_head"]
        self.P = cfg["n_positions"]
        self.V = cfg["vocab_size"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.np_weights = read_weights(model_dir)  # file values (float32 / float64 numpy)
        w = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in
             self.np_weights.items()}
        self.w = w
        self.lm_head = w["lm_head.weight"] if "lm_head.weight" in w else w["wte.weight"]
        C, V, P = self.C, self.V, self.P
        expect = {"wte.weight": (V, C), "wpe.weight": (P, C), "ln_f.weight": (C,)}
        for i in range(self.L):
            expect["h.%d.attn.c_attn.weight" % i] = (C, 3 * C)
            expect["h.%d.mlp.c_proj.weight" % i] = (4 * C, C)
        for k, shape in expect.items():
            if tuple(w[k].shape) != shape:
                raise ValueError("%s: %s has shape %s, expected %s"
                                 % (model_dir, k, tuple(w[k].shape), shape))

    def forward(self, tokens):
        """Logits (T, V) for every position of one sequence."""
        T = len(tokens)
        if T == 0 or T > self.P:
            raise ValueError("%d tokens; the model takes 1..%d" % (T, self.P))
        w, C, NH = self.w, self.C, self.NH
        HS = C // NH
        ids = torch.tensor(tokens, dtype=torch.long)
        x = w["wte.weight"][ids] + w["wpe.weight"][:T]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # j > i
        for i in range(self.L):
            p = "h.%d." % i
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], self.eps)
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = qkv.split(C, dim=1)
            q = q.view(T, NH, HS).transpose(0, 1)  # (NH, T, HS)
            k = k.view(T, NH, HS).transpose(0, 1)
            v = v.view(T, NH, HS).transpose(0, 1)
            att = (q @ k.transpose(1, 2)) / math.sqrt(HS)  # (NH, T, T)
            att = att.masked_fill(mask, float("-inf"))
            att = torch.softmax(att, dim=-1)
            y = (att @ v).transpose(0, 1).reshape(T, C)
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], self.eps)
            u = gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + u @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], self.eps)
        return x @ self.lm_head.T

    def greedy(self, tokens, n):
        """n ids, each the argmax of the logits after tokens + the ids before it (ties: the
        lower id, as torch.argmax returns the first maximum)."""
        seq = list(tokens)
        for _ in range(n):
            seq.append(int(torch.argmax(self.forward(seq)[-1])))
        return seq[len(tokens):]


def layer_norm(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_new(u):
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u ** 3)))


def top_k(logprobs_row, k):
    """The k most likely [id, logprob], ties broken by the lower id."""
    vals = logprobs_row.numpy()
    order = np.lexsort((np.arange(len(vals)), -vals))[:k]  # last key is the primary one
    return [[int(j), float(vals[j])] for j in order]


def logprobs(model, tokens, k):
    """OpenAI echo-shaped logprobs over tokens (see the module docstring)."""
    lp = torch.log_softmax(model.forward(tokens), dim=-1)  # (T, V)
    token_lp, tops = [None], [None]
    for i in range(1, len(tokens)):
        token_lp.append(float(lp[i - 1, tokens[i]]))
        tops.append(top_k(lp[i - 1], k))
    return {"tokens": list(tokens), "token_logprobs": token_lp, "top_logprobs": tops,
            "next_top_logprobs": top_k(lp[-1], k)}


# ---- CLI ---------------------------------------------------------------------------------

def main(argv):
    ap = argparse.ArgumentParser(description="GPT-2 reference logits (PyTorch, float64).")
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--all-logits", action="store_true", help="logits at every position")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="greedy continuation of N tokens")
    ap.add_argument("--logprobs", type=int, default=None, metavar="K",
                    help="top-K log-softmax per position of tokens + greedy continuation")
    ap.add_argument("--logits-f32", metavar="FILE", help="also write the logits as raw f32")
    ap.add_argument("--out", required=True, help="JSON output file ('-' = stdout)")
    a = ap.parse_args(argv)

    try:
        tokens = [int(t) for t in a.tokens.split(",") if t.strip() != ""]
        model = GPT2(a.model_dir)
        if any(t < 0 or t >= model.V for t in tokens):
            raise ValueError("token id out of range 0..%d" % (model.V - 1))
        if a.greedy < 0 or (a.logprobs is not None and a.logprobs < 0):
            raise ValueError("--greedy and --logprobs take a count >= 0")
    except (ValueError, OSError, KeyError) as e:
        print("gpt2_ref.py: %s" % e, file=sys.stderr)
        return 1

    with torch.no_grad():
        logits = model.forward(tokens)
        result = {"tokens": tokens}
        rows = logits if a.all_logits else logits[-1:]
        if a.all_logits:
            result["all_logits"] = rows.tolist()
        else:
            result["logits"] = rows[0].tolist()
        if a.logits_f32:
            rows.to(torch.float32).numpy().astype("<f4").tofile(a.logits_f32)
        if a.greedy:
            result["greedy"] = model.greedy(tokens, a.greedy)
        if a.logprobs is not None:
            result["logprobs"] = logprobs(model, tokens + result.get("greedy", []), a.logprobs)

    text = json.dumps(result, separators=(",", ":"))
    if a.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
