"""Random-weight llama models in GGUF, shaped like real ones, for benchmarks.

    python -m lowbit.tools.random_model --shape llama3.2-1b --type Q8_0 out.gguf

Weights are Gaussian with a per-tensor scale like a trained model's; the vocabulary is
byte tokens plus filler, so tokenization works but text is meaningless.  Tensors are
quantized with lowbit's quantizers and streamed to disk one at a time, so an 8B model
needs little memory.
"""
from __future__ import annotations

import argparse
import sys

import gguf
import numpy as np

from .. import _core
from .. import quantize as Q

# dim, layers, heads, kv heads, ffn, vocab, rope base, context
SHAPES = {
    "smollm2-135m": dict(dim=576, layers=30, heads=9, kv_heads=3, ffn=1536, vocab=49152, rope=100000.0, ctx=8192),
    "llama3.2-1b": dict(dim=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256, rope=500000.0, ctx=131072),
    "llama3.2-3b": dict(dim=3072, layers=28, heads=24, kv_heads=8, ffn=8192, vocab=128256, rope=500000.0, ctx=131072),
    "llama3-8b": dict(dim=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256, rope=500000.0, ctx=8192),
    "small": dict(dim=256, layers=2, heads=4, kv_heads=2, ffn=512, vocab=1024, rope=10000.0, ctx=512),
    "tiny": dict(dim=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=512, rope=10000.0, ctx=256),
}


# llama.cpp refuses a BPE vocabulary without merges: one merge of two spaces, whose result
# follows the byte tokens.
MERGES = ["\u0120 \u0120"]


def byte_vocab(n_vocab: int) -> list[str]:
    """GPT-2 byte characters first (so any text tokenizes), the merged token, then fillers."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    tokens = [chr(c) for c in cs] + [m.replace(" ", "") for m in MERGES]
    tokens += [f"<|tok{i}|>" for i in range(n_vocab - len(tokens))]
    return tokens[:n_vocab]


def tensor_plan(s: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape (rows, cols), is_matrix) for every tensor of the model."""
    d, f, hd = s["dim"], s["ffn"], s["dim"] // s["heads"]
    kv = s["kv_heads"] * hd
    plan = [("token_embd.weight", (s["vocab"], d), True), ("output_norm.weight", (d,), False),
            ("output.weight", (s["vocab"], d), True)]
    for i in range(s["layers"]):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", (d,), False), (p + "attn_q.weight", (d, d), True),
                 (p + "attn_k.weight", (kv, d), True), (p + "attn_v.weight", (kv, d), True),
                 (p + "attn_output.weight", (d, d), True), (p + "ffn_norm.weight", (d,), False),
                 (p + "ffn_gate.weight", (f, d), True), (p + "ffn_up.weight", (f, d), True),
                 (p + "ffn_down.weight", (d, f), True)]
    return plan


def matrix_types(s: dict, type_name: str) -> dict:
    """The type of every matrix: type_name itself (Q8_0, Q4_K, ...), or, for the name of one
    of llama.cpp's mixes (Q4_K_M, Q5_K_S, ...), the types llama.cpp's quantizer picks."""
    matrices = [(name, shp) for name, shp, is_matrix in tensor_plan(s) if is_matrix]
    if type_name in _core.type_names():
        if not _core.type_info(type_name)["can_quantize"]:
            raise ValueError(f"lowbit cannot quantize to {type_name}")
        return {name: type_name for name, _ in matrices}
    descs = [Q.TensorDesc(name, "F32", tuple(reversed(shp))) for name, shp in matrices]
    hp = Q.HParams(arch="llama", n_layer=s["layers"], n_head=s["heads"], n_head_kv=s["kv_heads"])
    try:
        return {p.desc.name: p.target for p in Q.plan_types(descs, hp, type_name)}
    except Q.QuantizeError as e:
        raise ValueError(str(e)) from None


def make(path: str, shape: str, type_name: str, seed: int = 0, distinct_rows: int | None = None) -> None:
    """Writes the model.  distinct_rows limits how many different random rows each matrix
    gets (the rest repeat them): for speed benchmarks of large shapes, where values don't
    matter and quantizing billions of weights would take minutes."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    s = SHAPES[shape]
    types = matrix_types(s, type_name)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"random {shape} {type_name}")
    w.add_block_count(s["layers"])
    w.add_context_length(s["ctx"])
    w.add_embedding_length(s["dim"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_freq_base(s["rope"])
    w.add_rope_dimension_count(s["dim"] // s["heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(byte_vocab(s["vocab"]))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(s["vocab"] - 2)
    w.add_eos_token_id(s["vocab"] - 1)
    if type_name not in _core.type_names():
        w.add_file_type(Q.resolve_ftype(type_name)[1])
    plan = tensor_plan(s)
    for name, shp, is_matrix in plan:
        if is_matrix:
            info = _core.type_info(types[name])
            nbytes = shp[0] * (shp[1] // info["block_size"]) * info["type_size"]
            w.add_tensor_info(name, (shp[0], nbytes // shp[0]), np.dtype(np.uint8), nbytes,
                              raw_dtype=gguf.GGMLQuantizationType(info["id"]))
        else:
            w.add_tensor_info(name, shp, np.dtype(np.float32), shp[0] * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shp, is_matrix in plan:
        if not is_matrix:
            w.write_tensor_data(np.ones(shp, dtype=np.float32))
            continue
        n_rows = shp[0] if distinct_rows is None else min(shp[0], distinct_rows)
        rows_per_chunk = max(1, (1 << 24) // shp[1])
        chunks = []
        for r0 in range(0, n_rows, rows_per_chunk):
            r1 = min(n_rows, r0 + rows_per_chunk)
            x = rng.standard_normal((r1 - r0, shp[1]), dtype=np.float32) * (1.0 / np.sqrt(shp[1]))
            chunks.append(_core.quantize(types[name], x))
        data = np.concatenate(chunks).reshape(n_rows, -1)
        if n_rows < shp[0]:
            data = np.tile(data, (-(-shp[0] // n_rows), 1))[: shp[0]]
        w.write_tensor_data(data)
    w.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowbit.tools.random_model", description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--shape", default="llama3.2-1b", choices=sorted(SHAPES))
    p.add_argument("--type", default="Q8_0",
                   help="tensor type (F16, Q8_0, Q4_0, Q4_K, ...) or llama.cpp mix (Q4_K_M, Q5_K_S, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distinct-rows", type=int, default=None,
                   help="random rows per matrix, repeated to fill it (fast files for speed tests)")
    a = p.parse_args(argv)
    try:
        make(a.out, a.shape, a.type, a.seed, a.distinct_rows)
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
