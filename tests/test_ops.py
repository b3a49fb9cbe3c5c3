"""The fast paths of the forward pass against their references, on fresh random inputs.

Packed GEMM kernels (kernels/avx512/packed512.h): weights and activations are repacked so
that one vpdpbusd chain leaves each block's exact integer total in its own lane; the float
arithmetic that follows replays the AVX-512 vec_dot's operation for operation.  So every
product must be bit-identical to that vec_dot (and within the dot tolerance of the scalar
reference), for any number of rows and tokens, ragged tiles and partial block groups
included.  _core.gemm(type, "avx512", ...) runs them on packed copies of its operands.

Every run draws fresh inputs; LOWBIT_TEST_SEED=<n> replays one.
"""
import os
import random

import numpy as np
import pytest

from lowbit import _core

SEED = int(os.environ.get("LOWBIT_TEST_SEED", random.SystemRandom().randrange(2**31)))
print(f"\ntest_ops: LOWBIT_TEST_SEED={SEED}")

ISA_ORDER = ["scalar", "avx2", "avx512", "amx"]
DETECTED = _core.detected_isa()
PACKED_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "F16"]


def _packed_or_skip(t):
    if ISA_ORDER.index(DETECTED) < ISA_ORDER.index("avx512"):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    info = _core.type_info(t)
    if "avx512" not in info["gemm_kernels"]:
        pytest.skip(f"{t} has no packed avx512 kernel yet")
    return info


def _shapes(bs):
    # (n, nrows, ntok): single row/token, ragged row and token tiles, partial groups of
    # sixteen blocks, several groups, the 135M model's widths
    base = [(1, 1, 1), (1, 5, 3), (3, 7, 5), (8, 4, 4), (9, 9, 17), (16, 3, 2), (17, 5, 1), (18, 13, 6),
            (48, 6, 20), (64, 2, 33)]
    unit = max(bs, 32)   # float formats: whole 32-element pieces, plus ragged widths below
    shapes = [(k * unit, r, t) for k, r, t in base if k * unit <= 2048 * 4]
    if bs == 1:
        shapes += [(n, 3, 7) for n in (5, 63, 64, 65, 100, 129, 577, 1000)]
    return shapes


def _s_bound(wd, ad):
    """sum |w_i a_i| plus the per-block offset terms (see test_kernels.py)."""
    wd, ad = np.abs(wd.astype(np.float64)), np.abs(ad.astype(np.float64))
    return float(((wd + wd.max()) * ad).sum()) + 1e-30


@pytest.mark.parametrize("t", PACKED_TYPES)
def test_packed_gemm_bit_identical_to_vec_dot(t):
    info = _packed_or_skip(t)
    rng = np.random.default_rng([SEED, PACKED_TYPES.index(t)])
    bs = info["block_size"]
    for n, nrows, ntok in _shapes(bs):
        w = rng.standard_normal((nrows, n)).astype(np.float32) * 10 ** rng.uniform(-2, 2, (nrows, 1)).astype(np.float32)
        a = rng.standard_normal((ntok, n)).astype(np.float32) * 10 ** rng.uniform(-1, 1, (ntok, 1)).astype(np.float32)
        wq, aq = _core.quantize(t, w), _core.quantize(info["vec_dot_type"], a)
        got = _core.gemm(t, "avx512", wq.tobytes(), aq.tobytes(), n, nrows, ntok)
        wr, ar = wq.size // nrows, aq.size // ntok
        wds = [_core.dequantize(t, wq[r * wr:(r + 1) * wr], n) for r in range(nrows)]
        ads = [_core.dequantize(info["vec_dot_type"], aq[k * ar:(k + 1) * ar], n) for k in range(ntok)]
        for r in range(nrows):
            wrow = wq[r * wr:(r + 1) * wr].tobytes()
            for k in range(ntok):
                arow = aq[k * ar:(k + 1) * ar].tobytes()
                ref = np.float32(_core.vec_dot(t, "avx512", wrow, arow, n))
                assert got[k, r].tobytes() == ref.tobytes(), (
                    f"{t} n={n} rows={nrows} tokens={ntok}: row {r} token {k}: {got[k, r]!r} vs vec_dot {ref!r} "
                    f"(seed {SEED})")
                scalar = _core.vec_dot(t, "scalar", wrow, arow, n)
                tol = (n / 16 + 32) * 2.0**-23 * _s_bound(wds[r], ads[k])
                assert abs(float(got[k, r]) - scalar) <= tol, (
                    f"{t} n={n}: row {r} token {k}: {got[k, r]} vs scalar {scalar} (seed {SEED})")


@pytest.mark.parametrize("t", [t for t in PACKED_TYPES if t != "F16"])
def test_packed_rows_dequantize_exactly(t):
    """Dequantizing a packed row (unpack to the original blocks, then to_float: what AMX
    prompts read once decoding has packed a matrix) gives exactly the original row's
    floats, partial block groups, compact tails and rows too long for the stack included."""
    info = _packed_or_skip(t)
    rng = np.random.default_rng([SEED, 11, PACKED_TYPES.index(t)])
    unit = max(info["block_size"], 32)
    for k, nrows in [(1, 1), (2, 3), (3, 2), (17, 2), (18, 3), (40, 2), (1000, 1)]:   # last: rows past 32 KB
        n = k * unit
        w = rng.standard_normal((nrows, n)).astype(np.float32) * 10 ** rng.uniform(-3, 3, (nrows, 1)).astype(np.float32)
        wq = _core.quantize(t, w)
        got = _core.packed_to_float(t, wq.tobytes(), n, nrows)
        ref = _core.dequantize(t, wq, n * nrows).reshape(nrows, n)
        assert got.tobytes() == ref.tobytes(), f"{t} n={n}: packed rows dequantize differently (seed {SEED})"


@pytest.mark.parametrize("t", ["Q4_1", "Q8_0"])
def test_packed_gemm_extreme_codes(t):
    """All-maximal weights and activations: the integer totals are exact whatever the bytes."""
    info = _packed_or_skip(t)
    n, nrows, ntok = 32 * 18, 5, 3
    w = np.full((nrows, n), 7.0, np.float32)
    w[:, ::2] = -7.0
    a = np.full((ntok, n), -3.0, np.float32)
    wq, aq = _core.quantize(t, w), _core.quantize(info["vec_dot_type"], a)
    got = _core.gemm(t, "avx512", wq.tobytes(), aq.tobytes(), n, nrows, ntok)
    wr, ar = wq.size // nrows, aq.size // ntok
    for r in range(nrows):
        for k in range(ntok):
            ref = np.float32(_core.vec_dot(t, "avx512", wq[r * wr:(r + 1) * wr].tobytes(),
                                           aq[k * ar:(k + 1) * ar].tobytes(), n))
            assert got[k, r].tobytes() == ref.tobytes()


def _logits_run(llm_path, tokens, split, n_threads):
    """Prompt logits (all rows), then one-token decoding, then a second prompt batch."""
    ctx = _core.Context(_core.Model(llm_path), n_ctx=256, n_threads=n_threads, n_batch=64)
    out = []
    ctx.eval(tokens[:split], True)
    out.append(np.array(ctx.logits()))
    for t in tokens[split:split + 6]:
        ctx.eval([t])
        out.append(np.array(ctx.logits()))
    ctx.eval(tokens[split + 6:], True)
    out.append(np.array(ctx.logits()))
    return out


@pytest.mark.parametrize("t", ["Q4_1", "Q8_0", "Q4_K", "F16", "Q5_0"])
def test_forward_pass_bit_identical_to_reference_ops(t, tmp_path, monkeypatch):
    """The vectorized forward pass (AVX-512 attention, softmax/SiLU exp, RoPE, norms,
    activation quantizers) gives exactly the logits of the scalar reference operations
    (LOWBIT_REFERENCE_OPS=1), for prompts of several lengths and for decoding."""
    if ISA_ORDER.index(DETECTED) < ISA_ORDER.index("avx512"):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    from lowbit.tools import random_model

    path = str(tmp_path / f"small-{t}.gguf")
    random_model.make(path, "small", t, seed=SEED % 1000)
    rng = np.random.default_rng([SEED, 7])
    tokens = rng.integers(0, 1024, 90).tolist()
    split = int(rng.integers(1, 70))
    n_threads = int(rng.integers(1, 4))
    monkeypatch.setenv("LOWBIT_REFERENCE_OPS", "1")
    ref = _logits_run(path, tokens, split, n_threads)
    monkeypatch.delenv("LOWBIT_REFERENCE_OPS")
    fast = _logits_run(path, tokens, split, n_threads)
    for i, (a, b) in enumerate(zip(ref, fast)):
        assert a.tobytes() == b.tobytes(), (
            f"{t}: logits {i} differ (max {np.abs(a - b).max()}), split {split}, threads {n_threads} (seed {SEED})")
