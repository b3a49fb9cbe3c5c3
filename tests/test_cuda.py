"""The CUDA backend: kernels against the CPU formats, and whole-model agreement.

Skips unless lowbit was built with -DLOWBIT_CUDA=ON and a GPU is present.  On the GPU
machine: `LOWBIT_TEST_MODEL=<gguf>` picks the model (default: the default model), and
`LOWBIT_TEST_TEXT=<file>` the text the perplexity is taken on (default: wikitext-2 test
beside the repository, else a built-in paragraph).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from lowbit import _core

pytestmark = pytest.mark.skipif(
    not (hasattr(_core, "cuda_available") and _core.cuda_available()),
    reason="lowbit was built without CUDA, or no GPU is present",
)

FLOAT_TYPES = ["F16", "BF16", "F32"]
BLOCK_TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "Q5_K", "Q2_K", "Q3_K", "Q5_0", "Q5_1", "IQ4_NL"]

# ||y - W x_used|| / ||W x_used||: the kernel's own arithmetic (fp32 sums) against float64.
BOUND_USED = 1e-5
# ||y - W x|| / ||W x||: adds the rounding of int8 activations (block formats only).
BOUND_EXACT_Q8 = 2e-2
BOUND_EXACT_FLOAT = 1e-5


# The tensor-core path (prefill): F16 operands, fp32 sums.  The weights are rounded to F16
# on the way (relative 2^-11 each), so against the exact weights the product is off by
# ~3e-4; against x itself, the F16 rounding of x adds about as much.
BOUND_USED_MMA = 2e-3
BOUND_EXACT_MMA = 3e-3


def _gemv_case(type_name: str, rows: int, cols: int, ntok: int, seed: int, path: str = "gemv"):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    x = rng.standard_normal((ntok, cols), dtype=np.float32)
    raw = _core.quantize(type_name, w)
    wd = np.asarray(_core.dequantize(type_name, raw, rows * cols), dtype=np.float64).reshape(rows, cols)
    y, x_used = _core.cuda_gemv(type_name, raw, rows, cols, x, path=path)
    assert np.isfinite(y).all(), "unwritten or non-finite outputs"
    ref_used = x_used.astype(np.float64) @ wd.T
    ref_exact = x.astype(np.float64) @ wd.T
    err_used = np.linalg.norm(y - ref_used) / np.linalg.norm(ref_used)
    err_exact = np.linalg.norm(y - ref_exact) / np.linalg.norm(ref_exact)
    return err_used, err_exact


@pytest.mark.parametrize("type_name", BLOCK_TYPES + FLOAT_TYPES)
@pytest.mark.parametrize("ntok", [1, 3, 11])
def test_gemv_matches_cpu_formats(type_name, ntok):
    kquant = type_name.endswith("_K")
    shapes = [(97, 1024), (40, 2304)] if kquant else [(97, 1024), (40, 576)]
    # rows of several whole chunks of the shared-memory kernel and a partial last one
    # (37 blocks of 256: 16 + 16 + 5; 296 of 32: 9 x 32 + 8)
    shapes.append((33, 9472))
    if type_name in FLOAT_TYPES:
        shapes.append((33, 100))   # scalar tail
    for i, (rows, cols) in enumerate(shapes):
        err_used, err_exact = _gemv_case(type_name, rows, cols, ntok, seed=1000 * ntok + i)
        assert err_used < BOUND_USED, (type_name, rows, cols, err_used)
        bound = BOUND_EXACT_FLOAT if type_name in FLOAT_TYPES else BOUND_EXACT_Q8
        assert err_exact < bound, (type_name, rows, cols, err_exact)


@pytest.mark.parametrize("type_name", BLOCK_TYPES + ["F16"])
def test_mma_matches_cpu_formats(type_name):
    """The tensor-core path on fresh random data: row counts that are not multiples of
    the 64/128-row tiles, token counts across several 128-token tiles, K of 18 to 72
    32-wide slices."""
    kquant = type_name.endswith("_K")
    cases = [(97, 1024, 40), (300, 512 if not kquant else 768, 200), (130, 2304, 77)]
    if not kquant:
        cases.append((70, 576, 130))   # SmolLM2's width
    assert _core.cuda_mma_supported(type_name, cases[0][1])
    for i, (rows, cols, ntok) in enumerate(cases):
        err_used, err_exact = _gemv_case(type_name, rows, cols, ntok, seed=7000 + i, path="mma")
        print(f"\n[mma {type_name} {rows}x{cols}x{ntok}] err_used={err_used:.2e} err_exact={err_exact:.2e}")
        assert err_used < BOUND_USED_MMA, (type_name, rows, cols, ntok, err_used)
        assert err_exact < BOUND_EXACT_MMA, (type_name, rows, cols, ntok, err_exact)


def test_mma_own_kernel_without_cublas():
    """LOWBIT_CUDA_CUBLAS=0: the prefill products run on lowbit's own tensor-core kernel
    (the path of builds without cuBLAS), within the same bounds; the default (cuBLAS when
    built with it) is what test_mma_matches_cpu_formats checks."""
    code = (
        "import sys; sys.path.insert(0, %r); import test_cuda as T\n"
        "for t in ['Q4_0', 'Q6_K', 'F16']:\n"
        "    for i, (r, c, n) in enumerate([(97, 1024, 40), (257, 2304, 130)]):\n"
        "        u, e = T._gemv_case(t, r, c, n, seed=7100 + i, path='mma')\n"
        "        assert u < T.BOUND_USED_MMA and e < T.BOUND_EXACT_MMA, (t, r, c, n, u, e)\n"
        "print('checked')\n" % os.path.dirname(os.path.abspath(__file__))
    )
    env = dict(os.environ, LOWBIT_CUDA_CUBLAS="0")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "checked" in r.stdout, r.stdout + r.stderr


def test_mma_is_used_from_its_threshold():
    for t in BLOCK_TYPES + ["F16"]:
        assert 8 < _core.cuda_mma_min_tokens(t) <= 64
    assert not _core.cuda_mma_supported("F32", 1024) and not _core.cuda_mma_supported("BF16", 1024)
    assert not _core.cuda_mma_supported("F16", 100)   # rows must be a multiple of 32 values
    # "auto" follows the threshold: below it the int8 GEMV (x_used on the int8 grid), from it F16
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 256), dtype=np.float32)
    raw = _core.quantize("Q8_0", w)
    n = _core.cuda_mma_min_tokens("Q8_0")
    x = rng.standard_normal((n, 256), dtype=np.float32)
    _, used_hi = _core.cuda_gemv("Q8_0", raw, 64, 256, x, path="auto")
    _, used_lo = _core.cuda_gemv("Q8_0", raw, 64, 256, x[: n - 1], path="auto")
    assert np.array_equal(used_hi, x.astype(np.float16).astype(np.float32))
    assert not np.array_equal(used_lo, x[: n - 1].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("type_name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_NL"])
def test_gemv_tall_matrix(type_name):
    """More blocks of rows than fit on the device at once (several waves)."""
    err_used, err_exact = _gemv_case(type_name, 9001, 512, 1, seed=31)
    assert err_used < BOUND_USED, (type_name, err_used)
    assert err_exact < BOUND_EXACT_Q8, (type_name, err_exact)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "Q5_0", "F16"])
@pytest.mark.parametrize("ntok", [1, 5])
def test_gemv_accumulates_into_y0(type_name, ntok):
    """The residual products (attention output, down projection) add to the stream:
    y = y0 + W x, on every kernel family (planar, shared-memory, float; one token and tiles),
    over rows of whole chunks and a partial last one (37 blocks of 256, 296 of 32)."""
    rows, cols = 300, 9472
    rng = np.random.default_rng(90 + ntok)
    w = rng.standard_normal((rows, cols), dtype=np.float32)
    x = rng.standard_normal((ntok, cols), dtype=np.float32)
    y0 = (10.0 * rng.standard_normal((ntok, rows))).astype(np.float32)
    raw = _core.quantize(type_name, w)
    wd = np.asarray(_core.dequantize(type_name, raw, rows * cols), dtype=np.float64).reshape(rows, cols)
    y, x_used = _core.cuda_gemv(type_name, raw, rows, cols, x, y0=y0)
    prod = x_used.astype(np.float64) @ wd.T
    err = np.linalg.norm(y - y0 - prod) / np.linalg.norm(prod)
    assert err < BOUND_USED * 4, (type_name, ntok, err)   # y - y0 loses a little to |y0|'s rounding
    assert np.abs(y - (y0 + prod)).max() < 1e-3 * np.abs(y0 + prod).max()


def test_gemv_rejects_bad_input():
    with pytest.raises(Exception):
        _core.cuda_gemv("Q4_0", np.zeros(10, np.uint8), 1, 32, np.zeros((1, 32), np.float32))
    with pytest.raises(Exception):
        _core.cuda_gemv("NOPE", np.zeros(18, np.uint8), 1, 32, np.zeros((1, 32), np.float32))


def test_unsupported_weight_names_the_first_one(tmp_path):
    """cuda_unsupported_weight: "" for a model the GPU runs, else the first weight whose
    type has no GPU kernel (the default -ngl then chooses the CPU: tests/test_api.py)."""
    from lowbit.tools import random_model

    ok, bad = str(tmp_path / "q4_0.gguf"), str(tmp_path / "iq4_xs.gguf")
    random_model.make(ok, "small", "Q4_0", seed=1)
    random_model.make(bad, "small", "IQ4_XS", seed=1)
    assert _core.cuda_unsupported_weight(_core.Model(ok)) == ""
    assert _core.cuda_unsupported_weight(_core.Model(bad)) == "token_embd.weight"


def test_context_logits_switch_between_batches_and_steps(tmp_path):
    """A GPU context returns a one-token step's logits through the backend's pinned row and
    a batch's (all_logits) through its own buffer: after any mix of the two, logits() is
    the last eval's, the same as a context that only ever took one-token steps."""
    from lowbit.tools import random_model

    def close(x, ref):
        return np.abs(x - ref).max() < 1e-2 * (ref.max() - ref.min())

    path = str(tmp_path / "m.gguf")
    random_model.make(path, "small", "Q4_0", seed=4)
    model = _core.Model(path)
    a = _core.Context(model, n_ctx=64, n_threads=0, n_gpu_layers=99)
    b = _core.Context(model, n_ctx=64, n_threads=0, n_gpu_layers=99)
    assert a.on_gpu and b.on_gpu
    last = None
    for chunk in ([1, 5, 9, 13, 17], [21], [25], [29, 33], [37]):
        a.eval(chunk, all_logits=len(chunk) > 1)
        for t in chunk:
            b.eval([t])
        rows = np.array(a.logits(), copy=True)
        assert rows.shape == (len(chunk), model.n_vocab) and b.logits().shape == (1, model.n_vocab)
        if last is not None:
            assert not np.array_equal(rows[-1], last)   # a new row, not the previous eval's
        last = np.array(b.logits()[0], copy=True)
        assert close(rows[-1], last)


def test_mixed_type_attention_matrices_decode(tmp_path):
    """llama.cpp's Q4_K_M mix stores attn_v in Q6_K in some layers (here layer 1) while q and
    k stay Q4_K: one-token steps then run q+k and v as one launch of two formats
    (gemv_pair).  The decode logits must track float64 as closely as the CPU path's do."""
    import gguf
    from lowbit.tools import random_model

    path = str(tmp_path / "q4_k_m.gguf")
    random_model.make(path, "small", "Q4_K_M", seed=3)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.1.attn_v.weight"] == "Q6_K" and types["blk.1.attn_q.weight"] == "Q4_K"
    model = _core.Model(path)
    toks = [int(t) for t in np.random.default_rng(0).integers(1, 1000, 24)]
    g = _core.CudaLlama(model, n_ctx=256)
    gpu = np.concatenate([g.forward([t], i, 1) for i, t in enumerate(toks)])
    ctx = _core.Context(model, n_ctx=256, n_threads=0, n_batch=1)
    cpu = []
    for t in toks:
        ctx.eval([t])
        cpu.append(np.array(ctx.logits(), copy=True).reshape(1, -1))
    cpu = np.concatenate(cpu)
    ref = reference_forward(path, toks)

    def rel(a):
        return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))

    assert np.isfinite(gpu).all()
    assert rel(gpu) < 0.05, (rel(gpu), rel(cpu))
    assert rel(gpu) <= 2.0 * rel(cpu) + 1e-3, (rel(gpu), rel(cpu))


# ---- whole model -------------------------------------------------------------------------

FALLBACK_TEXT = (
    "The history of the city begins in the early Middle Ages, when a small settlement grew up "
    "around a river crossing. Over the following centuries it became a market town, then a "
    "centre of the wool trade, and by the eighteenth century one of the largest ports of the "
    "country. Its population rose quickly during the industrial revolution, when mills and "
    "railways were built along the valley, and fell again in the twentieth century as heavy "
    "industry declined. Today the city is known for its university, its museums and its parks, "
    "and for the festival of music that is held there every summer. "
) * 8

N_TOKENS = 600   # more than one 512-token chunk on both paths


def _model_path() -> str:
    p = os.environ.get("LOWBIT_TEST_MODEL")
    if p:
        return p
    from lowbit.models import default_model_path

    try:
        return default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def _text() -> str:
    candidates = [os.environ.get("LOWBIT_TEST_TEXT", ""),
                  os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "wikitext-2", "test.txt")]
    for p in candidates:
        if p and os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                return f.read(200_000)
    return FALLBACK_TEXT


def _ppl(logits: np.ndarray, toks) -> float:
    lg = logits[:-1].astype(np.float64)
    tgt = np.asarray(toks[1:])
    mx = lg.max(axis=1)
    lse = mx + np.log(np.exp(lg - mx[:, None]).sum(axis=1))
    return float(np.exp(np.mean(lse - lg[np.arange(len(tgt)), tgt])))


def reference_forward(path: str, tokens) -> np.ndarray:
    """Float64 llama forward (tests/conformance/reference_llama.py) on weights dequantized
    by lowbit's scalar code (gguf-py may be absent on the GPU machine)."""
    from conformance.reference_llama import forward, hparams

    g = _core.read_gguf(path)
    meta = {k.decode(): v for k, _, _, v in g["metadata"]}
    w = {}
    for t in g["tensors"]:
        n = int(np.prod(t["shape"]))
        a = np.asarray(_core.dequantize(t["type_name"], np.frombuffer(t["data"], np.uint8), n), np.float64)
        w[t["name"].decode()] = a.reshape(list(reversed(t["shape"])))
    return forward(hparams(meta), w, tokens)


N_REF = 256   # tokens the float64 reference covers


@pytest.fixture(scope="module")
def runs():
    path = _model_path()
    model = _core.Model(path)
    toks = model.tokenize(_text())[:N_TOKENS]
    assert len(toks) == N_TOKENS
    # The CPU reference is the 8-bit-activation path that the GPU's int8 kernels are held
    # to; on an AMX CPU its prompts would run on bf16 tiles instead, a different reference,
    # closer to float64 (mean |err| 0.041 on the H100 machine's Xeon, session 4).
    isa = _core.active_isa()
    if isa == "amx":
        _core.set_isa("avx512")
    try:
        ctx = _core.Context(model, n_ctx=1024, n_threads=0, n_batch=512)
        ctx.eval(toks, all_logits=True)
        cpu = np.array(ctx.logits(), copy=True)
    finally:
        _core.set_isa(isa)
    ref = reference_forward(path, toks[:N_REF])
    return model, toks, cpu, ref


def _agreement(name, gpu, cpu, ref, toks):
    """Figures of the GPU logits against the CPU path and, on the first len(ref) tokens,
    both against float64."""
    assert gpu.shape == cpu.shape
    assert np.isfinite(gpu).all()
    top1 = float(np.mean(gpu.argmax(axis=1) == cpu.argmax(axis=1)))
    ppl_cpu, ppl_gpu = _ppl(cpu, toks), _ppl(gpu, toks)
    rel = abs(ppl_gpu - ppl_cpu) / ppl_cpu
    m = min(len(ref), len(gpu))
    err_gpu = float(np.abs(gpu[:m] - ref[:m]).mean())
    err_cpu = float(np.abs(cpu[:m] - ref[:m]).mean())
    top1_ref_gpu = float(np.mean(gpu[:m].argmax(1) == ref[:m].argmax(1)))
    top1_ref_cpu = float(np.mean(cpu[:m].argmax(1) == ref[:m].argmax(1)))
    # perplexity on the first m tokens, each path's distance from the float64 one
    ppl_ref_m = _ppl(ref[:m], toks[:m])
    dev_gpu = abs(_ppl(gpu[:m], toks[:m]) - ppl_ref_m) / ppl_ref_m
    dev_cpu = abs(_ppl(cpu[:m], toks[:m]) - ppl_ref_m) / ppl_ref_m
    print(f"\n[{name}] tokens={len(toks)} top1(gpu,cpu)={top1:.4f} ppl cpu={ppl_cpu:.4f} gpu={ppl_gpu:.4f} "
          f"rel={rel:.2e} max|gpu-cpu|={float(np.max(np.abs(gpu - cpu))):.3f}; first {m} vs float64: "
          f"mean|err| gpu={err_gpu:.4f} cpu={err_cpu:.4f}, top1 gpu={top1_ref_gpu:.4f} cpu={top1_ref_cpu:.4f}, "
          f"ppl off by gpu={dev_gpu:.2e} cpu={dev_cpu:.2e}")
    return dict(top1=top1, rel=rel, err_gpu=err_gpu, err_cpu=err_cpu, top1_ref_gpu=top1_ref_gpu, dev_gpu=dev_gpu,
                dev_cpu=dev_cpu)


def _assert_agreement(a):
    # 8-bit activations flip near-ties: llama.cpp agrees with itself on only 96-97% of
    # top-1 choices on this model (tests/conformance/test_llamacpp_model.py), so the GPU
    # is held to that against the CPU, and to exactness against float64.
    # Perplexity: within 0.5% of the CPU's, or else closer to the float64 perplexity than
    # the CPU's is (the CPU path is itself ~0.6% off float64 on the first 200 tokens; a
    # prefill on the tensor cores, F16 instead of int8 activations, lands on the other
    # side of it: 2026-11-25, decode test, ppl float64 34.146, CPU 34.334, GPU 34.050).
    assert a["rel"] <= 0.01
    assert a["rel"] <= 0.005 or a["dev_gpu"] <= a["dev_cpu"], "perplexity strays from both CPU and float64"
    assert a["top1"] >= 0.95
    assert a["err_gpu"] <= 1.25 * a["err_cpu"], "the GPU strays further from exact arithmetic than the CPU"
    assert a["top1_ref_gpu"] >= 0.92


def test_model_prefill_matches_cpu(runs):
    """600 tokens = chunks of 512 and 88: both on the tensor cores (F16), and again on the
    int8 GEMV tiles."""
    model, toks, cpu, ref = runs
    g = _core.CudaLlama(model, n_ctx=1024)
    g.set_options(mma=True)
    gpu = g.forward(toks, 0, len(toks))
    a = _agreement("prefill, tensor cores", gpu, cpu, ref, toks)
    _assert_agreement(a)
    g.set_options(mma=False)
    gpu8 = g.forward(toks, 0, len(toks))
    b = _agreement("prefill, int8 GEMV", gpu8, cpu, ref, toks)
    _assert_agreement(b)
    # F16 operands round less than int8 activations: no further from float64
    assert a["err_gpu"] <= 1.05 * b["err_gpu"]


def test_model_decode_graph_is_exact(runs):
    """The decode step replayed as a CUDA graph (with and without programmatic dependent
    launch) computes bit for bit what the same kernels launched one by one compute."""
    model, toks = runs[0], runs[1]
    g = _core.CudaLlama(model, n_ctx=1024)
    n0, n1 = 30, 300   # crosses the 256-position bucket of the graphs
    out = {}
    for graphs, pdl in ((False, False), (True, True), (True, False), (False, True)):
        g.set_options(graphs=graphs, pdl=pdl, mma=False)
        g.forward(toks[:n0], 0, 1)
        out[(graphs, pdl)] = np.concatenate([g.forward([toks[i]], i, 1) for i in range(n0, n1)])
    base = out[(False, False)]
    assert np.isfinite(base).all()
    for k, v in out.items():
        assert np.array_equal(v, base), (k, float(np.abs(v - base).max()))


def test_model_decode_matches_cpu(runs):
    model, toks, cpu, ref = runs
    g = _core.CudaLlama(model, n_ctx=1024)
    n0, n1 = 40, 200
    rows = [g.forward(toks[:n0], 0, n0)]
    for i in range(n0, n1):
        rows.append(g.forward([toks[i]], i, 1))
    gpu = np.concatenate(rows)
    _assert_agreement(_agreement("decode", gpu, cpu[:n1], ref, toks[:n1]))


def test_model_graph_tracks_float64_with_f32_weights(runs):
    """With every matrix dequantized to F32 on the device, only the F16 KV cache (and the
    F16-rounded queries) separate the GPU from float64: the error must fall far below
    the 8-bit paths' (~0.15 mean |logit error| on this model), which checks RoPE,
    attention, norms and residuals apart from int8 rounding noise."""
    model, toks, cpu, ref = runs
    g = _core.CudaLlama(model, n_ctx=1024, f32_weights=True)
    gpu = g.forward(toks[:N_REF], 0, N_REF)
    err = float(np.abs(gpu - ref).mean())
    err_cpu = float(np.abs(cpu[:N_REF] - ref).mean())
    top1 = float(np.mean(gpu.argmax(1) == ref.argmax(1)))
    print(f"\n[f32 weights] first {N_REF} vs float64: mean|err| {err:.4f} (8-bit CPU path {err_cpu:.4f}), "
          f"max|err| {float(np.abs(gpu - ref).max()):.4f}, top1 {top1:.4f}")
    assert top1 >= 0.99
    assert err < 0.35 * err_cpu


def test_model_rejects_bad_calls(runs):
    model, toks = runs[0], runs[1]
    g = _core.CudaLlama(model, n_ctx=64)
    with pytest.raises(Exception):
        g.forward(toks[:65], 0, 1)            # past the context
    with pytest.raises(Exception):
        g.forward([model.n_vocab + 5], 0, 1)  # token out of range
