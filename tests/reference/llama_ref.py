#!/usr/bin/python3
"""Llama-family reference forward pass in PyTorch, written from the published architecture.

Independent of the C code and of the transformers library. Reads a Hugging Face directory
of LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM (config.json + model.safetensors,
or shards + model.safetensors.index.json, through gpt2_ref.py's safetensors reader; F32,
F16 or BF16) and computes in float64 from the file's values, widened exactly.

CLI: as gpt2_ref.py (llama_ref.py MODEL_DIR --tokens ... [--all-logits] [--greedy N]
[--logits-f32 FILE] --out FILE.json).

The model (one sequence of T tokens, C channels, NH query heads, NKV key/value heads, HS
head size = head_dim or C / NH, I intermediate size, V vocab):
    x = embed_tokens[tokens]                                               (T, C)
    per layer:
      h = RMSNorm(x; input_layernorm)     RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w
      q = h Wq^T (+ bq), k = h Wk^T (+ bk), v = h Wv^T (+ bv)   (T, NH HS), (T, NKV HS) x 2
        bias: Qwen2 always on q, k, v; Llama/Qwen3 when attention_bias (then also on o)
      Qwen3: q, k = RMSNorm of each head's HS values (q_norm, k_norm)
      q, k = RoPE(q, pos), RoPE(k, pos): for i < HS/2, with f_i = theta^(-2i/HS) (scaled as
             Llama 3 does when rope_scaling.rope_type is llama3) and a = pos f_i,
             (x_i, x_{i+HS/2}) -> (x_i cos a - x_{i+HS/2} sin a, x_{i+HS/2} cos a + x_i sin a)
      query head j reads key/value head j // (NH / NKV) (grouped-query attention):
      A = softmax(q k^T / sqrt(HS) + causal mask), y = A v                  (T, NH HS)
      x = x + y Wo^T (+ bo)
      h = RMSNorm(x; post_attention_layernorm)
      x = x + (silu(h Wgate^T) * (h Wup^T)) Wdown^T      (+ biases when mlp_bias)
    logits = RMSNorm(x; norm) lm_head^T      lm_head = lm_head.weight, or embed_tokens when
                                             tie_word_embeddings
Llama 3's frequency scaling (factor s, low l, high h, original context N):
    wavelen = 2 pi / f;  wavelen > N / l: f / s;  wavelen < N / h: f;
    between: (1 - m) f / s + m f,  m = (N / wavelen - l) / (h - l)
"""

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref  # noqa: E402  (its safetensors reader and the CLI)

DTYPE = torch.float64


class Llama:
    """The weights as float64 torch tensors and the shape from config.json."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        arch = (cfg.get("architectures") or [None])[0]
        if arch not in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
            raise ValueError("%s: architecture %s is not of the Llama family" % (model_dir, arch))
        self.arch = arch
        self.L = cfg["num_hidden_layers"]
        self.C = cfg["hidden_size"]
        self.NH = cfg["num_attention_heads"]
        self.NKV = cfg.get("num_key_value_heads") or self.NH
        self.HS = cfg.get("head_dim") or self.C // self.NH
        self.P = cfg["max_position_embeddings"]
        self.V = cfg["vocab_size"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.scaling = cfg.get("rope_scaling")
        bias = bool(cfg.get("attention_bias", False))
        self.qkv_bias = arch == "Qwen2ForCausalLM" or bias
        self.o_bias = arch != "Qwen2ForCausalLM" and bias
        self.mlp_bias = bool(cfg.get("mlp_bias", False))
        self.qk_norm = arch == "Qwen3ForCausalLM"
        tied = cfg.get("tie_word_embeddings", False)
        self.np_weights = gpt2_ref.read_weights(model_dir)
        w = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in
             self.np_weights.items()}
        self.w = w
        self.lm_head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
        self.inv_freq = self.frequencies()

    def frequencies(self):
        HS = self.HS
        f = [1.0 / self.theta ** (2 * i / HS) for i in range(HS // 2)]
        s = self.scaling
        if s and (s.get("rope_type") or s.get("type")) == "llama3":
            factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
            n = s["original_max_position_embeddings"]
            out = []
            for fi in f:
                wavelen = 2 * math.pi / fi
                if wavelen > n / low:
                    out.append(fi / factor)
                elif wavelen < n / high:
                    out.append(fi)
                else:
                    m = (n / wavelen - low) / (high - low)
                    out.append((1 - m) * fi / factor + m * fi)
            f = out
        return torch.tensor(f, dtype=DTYPE)

    def rope(self, x, T):
        """x (heads, T, HS) rotated by position (rotate-half pairs i, i + HS/2)."""
        half = self.HS // 2
        a = torch.arange(T, dtype=DTYPE)[:, None] * self.inv_freq[None, :]  # (T, HS/2)
        cos, sin = torch.cos(a), torch.sin(a)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def linear(self, x, name, bias):
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if bias else y

    def forward(self, tokens):
        """Logits (T, V) for every position of one sequence."""
        T = len(tokens)
        if T == 0 or T > self.P:
            raise ValueError("%d tokens; the model takes 1..%d" % (T, self.P))
        w, NH, NKV, HS = self.w, self.NH, self.NKV, self.HS
        x = w["model.embed_tokens.weight"][torch.tensor(tokens, dtype=torch.long)]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        for i in range(self.L):
            p = "model.layers.%d." % i
            h = rms_norm(x, w[p + "input_layernorm.weight"], self.eps)
            q = self.linear(h, p + "self_attn.q_proj", self.qkv_bias).view(T, NH, HS)
            k = self.linear(h, p + "self_attn.k_proj", self.qkv_bias).view(T, NKV, HS)
            v = self.linear(h, p + "self_attn.v_proj", self.qkv_bias).view(T, NKV, HS)
            if self.qk_norm:
                q = rms_norm(q, w[p + "self_attn.q_norm.weight"], self.eps)
                k = rms_norm(k, w[p + "self_attn.k_norm.weight"], self.eps)
            q = self.rope(q.transpose(0, 1), T)  # (NH, T, HS)
            k = self.rope(k.transpose(0, 1), T)  # (NKV, T, HS)
            v = v.transpose(0, 1)
            group = NH // NKV
            k = k.repeat_interleave(group, dim=0)  # query head j reads KV head j // group
            v = v.repeat_interleave(group, dim=0)
            att = (q @ k.transpose(1, 2)) / math.sqrt(HS)
            att = torch.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
            y = (att @ v).transpose(0, 1).reshape(T, NH * HS)
            x = x + self.linear(y, p + "self_attn.o_proj", self.o_bias)
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            g = self.linear(h, p + "mlp.gate_proj", self.mlp_bias)
            u = self.linear(h, p + "mlp.up_proj", self.mlp_bias)
            x = x + self.linear(g * torch.sigmoid(g) * u, p + "mlp.down_proj", self.mlp_bias)
        x = rms_norm(x, w["model.norm.weight"], self.eps)
        return x @ self.lm_head.T

    def greedy(self, tokens, n):
        seq = list(tokens)
        for _ in range(n):
            seq.append(int(torch.argmax(self.forward(seq)[-1])))
        return seq[len(tokens):]


def rms_norm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


# ref_rows.py and the CLI build the reference model through this name.
Model = Llama

if __name__ == "__main__":
    gpt2_ref.GPT2 = Llama  # the same CLI, this model
    sys.exit(gpt2_ref.main(sys.argv[1:]))
