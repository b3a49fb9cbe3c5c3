"""`lowbit quantize` (lowbit/quantize.py): llama.cpp's per-tensor type choices, the
fallbacks for rows that do not fit a block size, metadata, accuracy per format, and errors.

Small random models only (lowbit.tools.random_model); tests/conformance/
test_quantize_conformance.py compares with llama.cpp itself on the default model.
"""
import os

import gguf
import numpy as np
import pytest

from lowbit import _core
from lowbit import quantize as Q
from lowbit.tools import random_model

# dims are multiples of 256 so K-quants fit; 8 layers so the "more bits" layers show;
# 4 heads sharing 1 KV head: GQA 4
S256 = dict(dim=256, layers=8, heads=4, kv_heads=1, ffn=512, vocab=320, rope=10000.0, ctx=256)
S256_SMALL = dict(S256, layers=2)
# SmolLM2's widths: rows of 576 fit no 256-value block
S576 = dict(dim=576, layers=2, heads=9, kv_heads=3, ffn=1536, vocab=320, rope=10000.0, ctx=256)


def make_model(path, shape: dict, type_name: str, seed: int = 0) -> str:
    key = f"test-{shape['dim']}-{shape['layers']}-{shape['kv_heads']}"
    random_model.SHAPES[key] = shape
    try:
        random_model.make(str(path), key, type_name, seed)
    finally:
        del random_model.SHAPES[key]
    return str(path)


def descs(shape: dict, tied: bool = False) -> list:
    """TensorDescs of a random_model-shaped model (ggml order ne: row length first)."""
    out = []
    for name, shp, _ in random_model.tensor_plan(shape):
        if tied and name == "output.weight":
            continue
        out.append(Q.TensorDesc(name, "F32", tuple(reversed(shp))))
    return out


def hparams(shape: dict, **kw) -> Q.HParams:
    return Q.HParams(**{**dict(arch="llama", n_layer=shape["layers"], n_head=shape["heads"],
                               n_head_kv=shape["kv_heads"]), **kw})


def types_of(plan) -> dict:
    return {p.desc.name: p.target for p in plan}


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_mix(mix: str, shape: dict, tied: bool = False, gqa4: bool = True) -> dict:
    """llama.cpp's choices (src/llama-quant.cpp) for a llama model with rows that fit
    every block size, restated per mix."""
    n = shape["layers"]
    base = Q.FTYPES[mix][1]
    exp = {"output_norm.weight": "F32"}
    quantized = base not in ("F16", "BF16", "F32")
    out_t = base if not quantized else ("Q8_0" if mix in ("Q8_0", "MXFP4_MOE") else "Q6_K")
    emb = {"TQ1_0": "Q4_K", "TQ2_0": "Q4_K", "MXFP4_MOE": "Q8_0"}.get(mix, base)
    if tied:
        exp["token_embd.weight"] = out_t
    else:
        exp["token_embd.weight"] = emb
        exp["output.weight"] = out_t
    for i in range(n):
        p = f"blk.{i}."
        t = {k: ("Q8_0" if mix == "MXFP4_MOE" else base) for k in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                                    "ffn_gate", "ffn_up", "ffn_down")}
        more = use_more_bits(i, n)
        if mix == "Q2_K":
            t["attn_v"] = "Q4_K" if gqa4 else "Q3_K"
            t["ffn_down"] = t["attn_output"] = "Q3_K"
        elif mix == "Q3_K_M":
            t["attn_v"] = "Q5_K" if i < 2 else "Q4_K"
            t["ffn_down"] = "Q5_K" if i < n // 16 else "Q4_K"
            t["attn_output"] = "Q4_K"
        elif mix == "Q3_K_L":
            t["attn_v"] = t["ffn_down"] = t["attn_output"] = "Q5_K"
        elif mix in ("Q4_K_M", "Q5_K_M"):
            if more:
                t["attn_v"] = t["ffn_down"] = "Q6_K"
        elif mix == "Q4_K_S":
            if i < 4:
                t["attn_v"] = "Q5_K"
            if i < n // 8:
                t["ffn_down"] = "Q5_K"
        elif mix in ("IQ4_NL", "IQ4_XS"):
            if gqa4:
                t["attn_v"] = "Q5_K"
            if i < n // 8:
                t["ffn_down"] = "Q5_K"
        exp.update({p + k + ".weight": v for k, v in t.items()})
        exp[p + "attn_norm.weight"] = exp[p + "ffn_norm.weight"] = "F32"
    return exp


MIXES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
         "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE"]


# ------------------------------------------------------------------ type selection (no files)
@pytest.mark.parametrize("mix", MIXES)
def test_mix_types(mix):
    plan = Q.plan_types(descs(S256), hparams(S256), mix)
    assert types_of(plan) == expected_mix(mix, S256)
    assert not any(p.fallback for p in plan)


@pytest.mark.parametrize("mix", ["Q2_K", "Q4_K_M", "IQ4_XS", "Q4_0"])
def test_mix_types_tied_embeddings_and_gqa(mix):
    """Without output.weight the token embedding takes the output's type; below GQA 4
    Q2_K's and IQ4's attn_v get fewer bits."""
    shape = dict(S256, kv_heads=2)
    plan = Q.plan_types(descs(shape, tied=True), hparams(shape), mix)
    assert types_of(plan) == expected_mix(mix, shape, tied=True, gqa4=False)


def test_layer_counters_follow_llamacpp_order():
    """llama.cpp counts attn_v / ffn_down in its loader's order (by layer number, then
    name), not in file order: shuffled input gives the same choices, output in that order."""
    shape = dict(S256, layers=16)
    d = descs(shape)
    rng = np.random.default_rng(0)
    shuffled = [d[i] for i in rng.permutation(len(d))]
    a = Q.plan_types(d, hparams(shape), "Q4_K_M")
    b = Q.plan_types(shuffled, hparams(shape), "Q4_K_M")
    assert [(p.desc.name, p.target) for p in a] == [(p.desc.name, p.target) for p in b]
    names = [p.desc.name for p in a]
    assert names[:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
    assert names.index("blk.2.attn_k.weight") < names.index("blk.10.attn_k.weight")
    # 16 layers: Q3_K_M gives layer 0's ffn_down Q5_K (i < n/16)
    t = types_of(Q.plan_types(d, hparams(shape), "Q3_K_M"))
    assert t["blk.0.ffn_down.weight"] == "Q5_K" and t["blk.1.ffn_down.weight"] == "Q4_K"


def test_pure_and_overrides():
    plan = types_of(Q.plan_types(descs(S256), hparams(S256), "Q4_K_M", pure=True))
    assert {v for k, v in plan.items() if not k.endswith("norm.weight")} == {"Q4_K"}
    plan = types_of(Q.plan_types(descs(S256), hparams(S256), "Q4_K_M", output_type="Q8_0",
                                 token_embedding_type="Q5_K"))
    assert plan["output.weight"] == "Q8_0" and plan["token_embd.weight"] == "Q5_K"
    assert plan["blk.0.attn_v.weight"] == "Q6_K"
    # aliases, as llama-quantize's
    assert types_of(Q.plan_types(descs(S256), hparams(S256), "q4_k")) == expected_mix("Q4_K_M", S256)


def test_expert_and_70b_rules():
    d = [Q.TensorDesc(f"blk.{i}.attn_v.weight", "F16", (8192, 1024)) for i in range(80)]
    d += [Q.TensorDesc(f"blk.{i}.attn_k.weight", "F16", (8192, 1024)) for i in range(80)]
    t = types_of(Q.plan_types(d, Q.HParams("llama", 80, 64, 8), "Q3_K_S"))
    assert t["blk.5.attn_v.weight"] == "Q5_K"        # 70B: attn_v Q3_K -> Q5_K
    assert t["blk.5.attn_k.weight"] == "Q3_K"
    t = types_of(Q.plan_types(d, Q.HParams("llama", 80, 64, 8, n_expert=8), "Q3_K_S"))
    assert t["blk.5.attn_v.weight"] == "Q8_0" and t["blk.5.attn_k.weight"] == "Q8_0"
    # MXFP4_MOE: experts (3-D) MXFP4, the rest Q8_0
    d = [Q.TensorDesc("blk.0.ffn_up_exps.weight", "F16", (256, 512, 8)),
         Q.TensorDesc("blk.0.attn_q.weight", "F16", (256, 256))]
    t = types_of(Q.plan_types(d, Q.HParams("llama", 1, 4, 4, n_expert=8), "MXFP4_MOE"))
    assert t == {"blk.0.ffn_up_exps.weight": "MXFP4", "blk.0.attn_q.weight": "Q8_0"}


def test_what_is_not_quantized():
    d = [Q.TensorDesc("blk.0.attn_norm.weight", "F32", (256,)), Q.TensorDesc("rope_freqs.weight", "F32", (32,)),
         Q.TensorDesc("blk.0.ffn_gate_inp.weight", "F32", (256, 8)),
         Q.TensorDesc("blk.0.attn_q.bias", "F32", (256, 4)), Q.TensorDesc("blk.0.attn_q.weight", "F16", (256, 1)),
         Q.TensorDesc("blk.0.attn_k.weight", "F16", (256, 256))]
    t = types_of(Q.plan_types(d, Q.HParams("llama", 1, 4, 4), "Q4_0"))
    assert t == {"blk.0.attn_norm.weight": "F32", "rope_freqs.weight": "F32", "blk.0.ffn_gate_inp.weight": "F32",
                 "blk.0.attn_q.bias": "F32", "blk.0.attn_q.weight": "F16", "blk.0.attn_k.weight": "Q4_0"}


# ------------------------------------------------------------------ fallbacks
@pytest.mark.parametrize("base, fallback", [("Q2_K", "Q4_0"), ("Q3_K", "Q4_0"), ("Q4_K", "Q5_0"), ("Q5_K", "Q5_1"),
                                            ("Q6_K", "Q8_0"), ("IQ4_XS", "IQ4_NL"), ("TQ1_0", "Q4_0"),
                                            ("TQ2_0", "Q4_0")])
def test_fallback_table(base, fallback):
    mix = {"Q3_K": "Q3_K_S", "Q4_K": "Q4_K_S", "Q5_K": "Q5_K_S"}.get(base, base)
    d = [Q.TensorDesc("blk.0.attn_q.weight", "F16", (576, 64)), Q.TensorDesc("blk.0.attn_k.weight", "F16", (48, 64)),
         Q.TensorDesc("blk.0.ffn_up.weight", "F16", (512, 64))]
    plan = {p.desc.name: p for p in Q.plan_types(d, Q.HParams("llama", 1, 4, 4), mix, pure=True)}
    assert (plan["blk.0.attn_q.weight"].target, plan["blk.0.attn_q.weight"].fallback) == (fallback, True)
    assert plan["blk.0.attn_k.weight"].target == "F16"          # 48 fits no 32-value block either
    assert (plan["blk.0.ffn_up.weight"].target, plan["blk.0.ffn_up.weight"].fallback) == (base, False)


def test_no_fallback_for_32_blocks():
    d = [Q.TensorDesc("blk.0.attn_q.weight", "F16", (48, 64))]
    with pytest.raises(Q.QuantizeError, match="no fallback"):
        Q.plan_types(d, Q.HParams("llama", 1, 4, 4), "Q8_0")


@pytest.fixture(scope="module")
def m576(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("q") / "m576-f16.gguf", S576, "F16")


def test_fallbacks_576_wide_model(m576, tmp_path):
    """SmolLM2's widths: 576-wide rows fall back, 1536-wide ffn_down rows keep K-quants."""
    out = str(tmp_path / "q4km.gguf")
    res = Q.quantize_file(m576, out, "Q4_K_M", threads=2)
    r = gguf.GGUFReader(out)
    t = {x.name: x.tensor_type.name for x in r.tensors}
    assert t["blk.0.attn_q.weight"] == "Q5_0"       # Q4_K -> Q5_0
    assert t["blk.0.attn_v.weight"] == "Q5_0"
    assert t["blk.1.attn_v.weight"] == "Q8_0"       # use_more_bits: Q6_K -> Q8_0
    assert t["blk.0.ffn_down.weight"] == "Q4_K"     # 1536 = 6 x 256
    assert t["blk.1.ffn_down.weight"] == "Q6_K"
    assert t["output.weight"] == "Q8_0"             # 576 % 256: Q8_0, as llama.cpp
    assert t["token_embd.weight"] == "Q5_0"
    assert t["output_norm.weight"] == "F32"
    assert res.n_fallback == sum(p.fallback for p in res.tensors) == 1 + 2 * 6
    idx, hp = Q.read_input(m576)
    d = [x.desc for x in idx.tensors]
    idx.close()
    for mix, want in [("Q2_K", "Q4_0"), ("Q6_K", "Q8_0"), ("IQ4_XS", "IQ4_NL"), ("Q5_K_S", "Q5_1"), ("TQ2_0", "Q4_0")]:
        plan = types_of(Q.plan_types(d, hp, mix))
        assert plan["blk.0.ffn_gate.weight"] == want, mix


# ------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def m256(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("q") / "m256-f32.gguf", S256_SMALL, "F32", seed=3)


def fields(path):
    r = gguf.GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        out[k] = (f.types, [bytes(f.parts[i]) for i in f.data])
    return out


def test_metadata_preserved(m256, tmp_path):
    out = str(tmp_path / "o.gguf")
    Q.main(["-q", "-t", "2", m256, out, "Q4_K_M"])
    a, b = fields(m256), fields(out)
    assert b.pop("general.file_type")[1] == [np.uint32(15).tobytes()]
    assert b.pop("general.quantization_version")[1] == [np.uint32(2).tobytes()]
    a.pop("general.file_type", None)
    a.pop("general.quantization_version", None)
    assert a == b
    ra, rb = gguf.GGUFReader(m256), gguf.GGUFReader(out)
    assert sorted((t.name, list(t.shape)) for t in ra.tensors) == sorted((t.name, list(t.shape)) for t in rb.tensors)
    # lowbit loads and runs it
    from lowbit import LLM
    llm = LLM(out, n_ctx=64, n_threads=1, seed=0)
    assert len(llm.generate_tokens([1, 2, 3], max_tokens=3, temperature=0)) <= 3


# relative RMSE bound per format on the Gaussian weights of the seed-3 model (measured
# worst tensor: 0.75-0.9x these).  Ternary formats fit Gaussian weights badly (~0.81); the
# bound still catches a wrong layout or scale (>= 1).
BOUNDS = {"F32": 0.0, "F16": 3e-4, "BF16": 2.2e-3, "Q8_0": 0.0065, "Q6_K": 0.02, "Q5_K": 0.04, "Q5_1": 0.045,
          "Q5_0": 0.05, "Q4_K": 0.08, "Q4_1": 0.09, "Q4_0": 0.1, "IQ4_NL": 0.088, "IQ4_XS": 0.088, "MXFP4": 0.13,
          "Q3_K": 0.17, "Q2_K": 0.3, "TQ2_0": 0.86, "TQ1_0": 0.86}


def dequantize(t) -> np.ndarray:
    try:
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
    except NotImplementedError:
        raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        return _core.dequantize(t.tensor_type.name, raw, int(t.n_elements)).astype(np.float64)


@pytest.mark.parametrize("type_name", list(BOUNDS))
def test_values_close_to_source(m256, tmp_path, type_name):
    """--pure: every matrix in one format; each tensor dequantizes (with gguf-py) to within
    the format's error bound of the source."""
    out = str(tmp_path / f"{type_name}.gguf")
    Q.quantize_file(m256, out, type_name, threads=2, pure=True)
    src = {t.name: t for t in gguf.GGUFReader(m256).tensors}
    r = gguf.GGUFReader(out)
    for t in r.tensors:
        x = dequantize(src[t.name]).reshape(-1)
        y = dequantize(t).reshape(-1)
        if len(t.shape) == 1:
            assert t.tensor_type.name == "F32" and np.array_equal(x, y)
            continue
        assert t.tensor_type.name == type_name, t.name
        rel = np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2))
        assert rel <= BOUNDS[type_name], f"{t.name}: relative RMSE {rel:.4f}"


def test_threads_and_chunks_do_not_change_the_output(m256, tmp_path):
    a, b = str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf")
    Q.quantize_file(m256, a, "Q3_K_M", threads=1)
    Q.quantize_file(m256, b, "Q3_K_M", threads=2, chunk_values=1000)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


def test_requantize(tmp_path):
    src = make_model(tmp_path / "q8.gguf", S256_SMALL, "Q8_0")
    # every tensor already Q8_0: a copy, no requantization needed (as in llama.cpp)
    same = str(tmp_path / "same.gguf")
    assert Q.main(["-q", src, same, "Q8_0"]) == 0
    ra, rb = gguf.GGUFReader(src), gguf.GGUFReader(same)
    da = {t.name: bytes(t.data) for t in ra.tensors}
    assert all(bytes(t.data) == da[t.name] for t in rb.tensors)
    out = str(tmp_path / "q4.gguf")
    assert Q.main(["-q", src, out, "Q4_0"]) == 1
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")
    assert Q.main(["-q", "--allow-requantize", src, out, "Q4_0"]) == 0
    t = {x.name: x.tensor_type.name for x in gguf.GGUFReader(out).tensors}
    assert t["blk.0.attn_q.weight"] == "Q4_0" and t["output.weight"] == "Q6_K"


# ------------------------------------------------------------------ errors
def test_errors(m256, tmp_path, capsys):
    out = str(tmp_path / "o.gguf")
    cases = [
        ([str(tmp_path / "missing.gguf"), out, "Q4_0"], "not found"),
        ([str(tmp_path), out, "Q4_0"], "directory"),
        ([m256, out, "Q9_K"], "unknown quantization type"),
        ([m256, out, "Q2_K_S"], "importance matrix"),
        ([m256, out, "IQ2_XXS"], "IQ1/IQ2/IQ3"),
        ([m256, m256, "Q4_0"], "must not be the input"),
        ([m256, out, "Q4_0", "--output-type", "Q7"], "unknown tensor type"),
        ([m256, out, "Q4_0", "--token-embedding-type", "IQ2_XXS"], "cannot quantize"),
        ([m256, out, "Q4_0", "-t", "0"], "--threads"),
    ]
    notgguf = tmp_path / "not.gguf"
    notgguf.write_bytes(b"hello world, not a model" * 10)
    cases.append(([str(notgguf), out, "Q4_0"], "not a GGUF file"))
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(open(m256, "rb").read()[:5000])
    cases.append(([str(trunc), out, "Q4_0"], "truncated"))
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    cases.append(([str(empty), out, "Q4_0"], "not a GGUF file"))
    for argv, msg in cases:
        assert Q.main(["-q"] + argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("lowbit quantize: error:") and msg in err, (argv, err)
        assert not os.path.exists(out)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        Q.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "lowbit quantize" in text and "Q4_K_M" in text and "--allow-requantize" in text
