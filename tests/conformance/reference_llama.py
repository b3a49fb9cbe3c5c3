"""A float64 NumPy llama forward pass: an oracle independent of both runtimes.

Weights are dequantized with gguf-py; every product is exact up to float64 rounding,
so it shows how far each runtime's 8-bit activation arithmetic takes it from the math.
"""
import numpy as np


def hparams(meta):
    """The hyperparameters forward() needs, from llama.* metadata {key: value}."""
    n_embd, n_head = meta["llama.embedding_length"], meta["llama.attention.head_count"]
    return dict(n_layer=meta["llama.block_count"], n_head=n_head, n_kv=meta["llama.attention.head_count_kv"],
                eps=meta["llama.attention.layer_norm_rms_epsilon"], base=meta.get("llama.rope.freq_base", 10000.0),
                n_rot=meta.get("llama.rope.dimension_count", n_embd // n_head))


def load_weights(path):
    """(hparams, {name: float64 array}) with gguf-py's dequantization."""
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(path)
    meta = {k: v.contents() for k, v in r.fields.items() if k.startswith("llama.")}
    w = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64) for t in r.tensors}
    return hparams(meta), w


def forward(hp, w, tokens):
    """Logits (len(tokens), n_vocab) in float64."""
    emb = w["token_embd.weight"]
    out_w = w.get("output.weight", emb)
    x = emb[np.asarray(tokens)]
    n, d = x.shape
    n_head, n_kv = hp["n_head"], hp["n_kv"]
    hd = d // n_head
    n_rot = hp["n_rot"]
    ang = np.arange(n)[:, None] * hp["base"] ** (-np.arange(0, n_rot, 2) / n_rot)[None, :]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(v):   # llama.cpp's "normal" RoPE: pairs (2i, 2i+1) of the first n_rot dims
        a, b = v[..., 0:n_rot:2], v[..., 1:n_rot:2]
        r = v.copy()
        r[..., 0:n_rot:2] = a * cos - b * sin
        r[..., 1:n_rot:2] = a * sin + b * cos
        return r

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + hp["eps"]) * g

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for layer in range(hp["n_layer"]):
        p = f"blk.{layer}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope((h @ w[p + "attn_q.weight"].T).reshape(n, n_head, hd))
        k = rope((h @ w[p + "attn_k.weight"].T).reshape(n, n_kv, hd))
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, n_kv, hd)
        att = np.empty((n, n_head, hd))
        for head in range(n_head):
            kv = head // (n_head // n_kv)
            s = q[:, head] @ k[:, kv].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(1, keepdims=True))
            att[:, head] = (s / s.sum(1, keepdims=True)) @ v[:, kv]
        x = x + att.reshape(n, d) @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g, u = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
    return rms(x, w["output_norm.weight"]) @ out_w.T
