"""An independent float64 forward pass of a GGUF Llama model in NumPy (dense causal attention).

Used by make-golden.py to record exact-arithmetic logits: lserve's f32 CPU backend must match
them to ~1e-4, while llama.cpp (quantized activations, f16 KV cache) differs by ~0.15 on average.
"""
import gguf
import numpy as np


class ReferenceLlama:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.t = {t.name: t for t in r.tensors}
        f = {k: v for k, v in r.fields.items()}
        arch = bytes(f["general.architecture"].parts[-1]).decode()

        def val(key, default=None):
            k = f"{arch}.{key}"
            return f[k].parts[-1][0].item() if k in f else default

        self.n_layers = val("block_count")
        self.n_heads = val("attention.head_count")
        self.n_kv = val("attention.head_count_kv", self.n_heads)
        self.d = val("embedding_length")
        self.hd = self.d // self.n_heads
        self.eps = val("attention.layer_norm_rms_epsilon")
        self.theta = val("rope.freq_base", 10000.0)
        self.adjacent_pairs = arch in ("llama", "mistral")
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.t[name]
            a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64)
            self.cache[name] = a.reshape([int(x) for x in reversed(t.shape)])
        return self.cache[name]

    def rope(self, x, pos):
        inv = self.theta ** (-np.arange(0, self.hd, 2) / self.hd)
        ang = pos[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if self.adjacent_pairs:
            x0, x1 = x[..., 0::2], x[..., 1::2]
        else:
            x0, x1 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        y0, y1 = x0 * cos - x1 * sin, x0 * sin + x1 * cos
        y = np.empty_like(x)
        if self.adjacent_pairs:
            y[..., 0::2], y[..., 1::2] = y0, y1
        else:
            y[..., : self.hd // 2], y[..., self.hd // 2:] = y0, y1
        return y

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def logits(self, tokens):
        n, hd, g = len(tokens), self.hd, self.n_heads // self.n_kv
        emb = self.w("token_embd.weight")
        x = emb[tokens]
        pos = np.arange(n, dtype=np.float64)
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for l in range(self.n_layers):
            b = f"blk.{l}."
            h = self.rms(x, self.w(b + "attn_norm.weight"))
            q = self.rope((h @ self.w(b + "attn_q.weight").T).reshape(n, self.n_heads, hd), pos)
            k = self.rope((h @ self.w(b + "attn_k.weight").T).reshape(n, self.n_kv, hd), pos)
            v = (h @ self.w(b + "attn_v.weight").T).reshape(n, self.n_kv, hd)
            out = np.zeros((n, self.n_heads, hd))
            for qh in range(self.n_heads):
                s = q[:, qh] @ k[:, qh // g].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                out[:, qh] = (s / s.sum(-1, keepdims=True)) @ v[:, qh // g]
            x = x + out.reshape(n, -1) @ self.w(b + "attn_output.weight").T
            h = self.rms(x, self.w(b + "ffn_norm.weight"))
            gate = h @ self.w(b + "ffn_gate.weight").T
            up = h @ self.w(b + "ffn_up.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.w(b + "ffn_down.weight").T
        out_w = self.w("output.weight") if "output.weight" in self.t else emb
        return self.rms(x, self.w("output_norm.weight")) @ out_w.T
