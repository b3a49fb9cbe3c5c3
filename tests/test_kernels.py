"""SIMD dot kernels against the scalar reference, format by format and ISA by ISA.

Every run draws fresh random inputs; the seed is printed (and named in every failure)
and LOWBIT_TEST_SEED=<n> replays a run.  ISAs above what this CPU supports are skipped.

What "matches" means.  Quantized dots: each block's integer dot is exact in both paths,
only the float combination sum_b float(sumi_b) * d_b (+ min terms) is added up in a
different order (lanes, FMA).  Float dots: the reference adds float products in double,
the SIMD kernels add in float lanes.  For m float additions the error of either order
is at most about m * 2^-24 * S with S = sum of the absolute values of the terms (Higham,
Accuracy and Stability of Numerical Algorithms, 4.2), so we allow
    |simd - scalar| <= (m + 16) * 2^-23 * S  (+ n * 2^-148 for products in the float
                                               subnormal range, which the reference
                                               rounds before adding and FMA does not)
where S is bounded from the dequantized rows: S <= sum_i (|w_i| + max_block |w|) * |a_i|
(the max term covers the per-block offsets of Q4_1/Q5_1/K-quant mins, whose integer and
min parts are summed separately).  m is n for float types (8 lanes at least, so that is
generous) and n / 16 + 16 for block formats (at most one float term per 16 elements).
A wrong nibble, a lost block or a saturated i16 moves the result by ~S / n_blocks, far
outside this bound for the sizes tested; integer-valued float inputs are also checked
for exact equality.
"""
import os
import random
import subprocess
import sys

import numpy as np
import pytest


from lowbit import _core

SEED = int(os.environ.get("LOWBIT_TEST_SEED", random.SystemRandom().randrange(2**31)))
print(f"\ntest_kernels: LOWBIT_TEST_SEED={SEED}")

ISA_ORDER = ["scalar", "avx2", "avx512", "amx"]
SIMD_ISAS = ["avx2", "avx512", "amx"]
DETECTED = _core.detected_isa()

FLOAT_TYPES = ["F32", "F16", "BF16"]
LEGACY_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
LATER_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"]
ALL_TYPES = FLOAT_TYPES + LEGACY_TYPES + LATER_TYPES
# Every format must have its own kernel on every SIMD ISA the CPU has.
REQUIRED_SIMD = ALL_TYPES


def _known(t):
    return t in _core.type_names()


def _skip_unless_runnable(t, isa):
    if ISA_ORDER.index(isa) > ISA_ORDER.index(DETECTED):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    if not _known(t):
        pytest.skip(f"{t} is not in the registry yet")
    info = _core.type_info(t)
    if not info["can_quantize"] or not _core.type_info(info["vec_dot_type"])["can_quantize"]:
        pytest.skip(f"{t} or its activation type {info['vec_dot_type']} cannot be quantized")
    if "scalar" not in info["kernels"]:
        pytest.skip(f"{t} has no scalar reference kernel")
    return info


def _sizes(bs):
    if bs == 1:
        return [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 1000, 4096, 4099]
    if bs == 32:
        # 1..8 blocks (all tail / one group), 9 (group + tail), long rows
        return [32 * k for k in (1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 128, 133)] + [11008]
    return [bs * k for k in (1, 2, 3, 5, 8, 9, 16, 17)]


def _cases(rng, n, bs):
    """(name, weights, activations) with a range of shapes and extremes."""
    nb = n // bs
    blk = lambda v: np.repeat(v, bs)[:n]  # noqa: E731
    g = lambda: rng.standard_normal(n)  # noqa: E731
    out = [
        ("normal", g(), g()),
        ("uniform", rng.uniform(-1, 1, n), rng.uniform(-3, 1, n)),
        ("positive", rng.uniform(0, 2, n), rng.uniform(0, 2, n)),
        ("per-block scales 1e-3..1e3", g() * blk(10 ** rng.uniform(-3, 3, nb)), g() * blk(10 ** rng.uniform(-3, 3, nb))),
        ("outliers", g() * np.where(rng.random(n) < 0.02, 100.0, 1.0), g()),
        # every element at +-amax: codes at the ends of their ranges (i16 saturation stress)
        ("all +-max", rng.choice([-1.0, 1.0], n), rng.choice([-1.0, 1.0], n)),
        ("all +max", np.ones(n), np.ones(n)),
        ("all -max", -np.ones(n), np.ones(n)),
        ("w +max, a -max", np.ones(n), -np.ones(n)),
        ("zeros", np.zeros(n), g()),
        ("zero activations", g(), np.zeros(n)),
        ("constant block", blk(rng.standard_normal(nb)), g()),
        ("large 1e4", g() * 1e4, g() * 1e4),
        ("tiny 1e-5 (fp16 subnormal scales)", g() * 1e-5, g() * 1e-5),
    ]
    spike = np.zeros(n)
    spike[rng.integers(n)] = 5.0
    out.append(("one-hot", spike, g()))
    return out


def _s_bound(w, a, bs):
    """Upper bound on the sum of |float terms| from the dequantized rows (float64)."""
    w = np.abs(w.astype(np.float64))
    a = np.abs(a.astype(np.float64))
    if bs == 1:
        return 2.0 * float(np.sum(w * a))
    wb, ab = w.reshape(-1, bs), a.reshape(-1, bs)
    return float(np.sum(wb * ab) + 2.0 * np.sum(wb.max(axis=1) * ab.sum(axis=1)))


def _check(t, isa, info, n, name, w, a):
    bs = info["block_size"]
    wq = _core.quantize(t, w.astype(np.float32).reshape(1, -1)).tobytes()
    aq = _core.quantize(info["vec_dot_type"], a.astype(np.float32).reshape(1, -1)).tobytes()
    ref = _core.vec_dot(t, "scalar", wq, aq, n)
    got = _core.vec_dot(t, isa, wq, aq, n)
    where = f"{t} {isa} n={n} case '{name}' (LOWBIT_TEST_SEED={SEED})"
    if not np.isfinite(ref) or not np.isfinite(got):
        same = (np.isnan(ref) and np.isnan(got)) or ref == got
        assert same, f"{where}: scalar {ref!r} vs {got!r}"
        return
    wd = _core.dequantize(t, np.frombuffer(wq, np.uint8), n)
    ad = _core.dequantize(info["vec_dot_type"], np.frombuffer(aq, np.uint8), n)
    s = _s_bound(wd, ad, bs)
    m = n if bs == 1 else n // 16 + 16
    tol = (m + 16) * 2.0**-23 * s + n * 2.0**-148
    assert abs(got - ref) <= tol, f"{where}: scalar {ref!r} vs {got!r}, |diff| {abs(got - ref):.3g} > bound {tol:.3g}"


def _check_all(t, isa, seed=SEED):
    info = _skip_unless_runnable(t, isa)
    rng = np.random.default_rng([seed, ALL_TYPES.index(t), ISA_ORDER.index(isa)])
    for n in _sizes(info["block_size"]):
        for name, w, a in _cases(rng, n, info["block_size"]):
            _check(t, isa, info, n, name, w, a)


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("t", ALL_TYPES)
def test_simd_matches_scalar(t, isa):
    _check_all(t, isa)


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("t", ALL_TYPES)
def test_fast_dequantizers_match_reference(t, isa):
    """An ISA's dequantizer (the AMX tiles dequantize whole rows with it) gives the
    reference's floats bit for bit, on quantized rows and on random block bytes (every
    code, scale and min; where a random fp16 scale is NaN, NaN at the same places)."""
    if ISA_ORDER.index(isa) > ISA_ORDER.index(DETECTED):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    if not _known(t):
        pytest.skip(f"{t} is not in the registry yet")
    info = _core.type_info(t)
    if not info["is_quantized"]:
        pytest.skip("float formats convert, they have no dequantizer of their own")
    rng = np.random.default_rng([SEED, ALL_TYPES.index(t), ISA_ORDER.index(isa)])
    n = info["block_size"] * 64
    rows = [_core.quantize(t, (rng.standard_normal((4, n)) * 10.0 ** rng.uniform(-3, 2)).astype(np.float32))]
    rows.append(rng.integers(0, 256, 4 * n // info["block_size"] * info["type_size"], dtype=np.uint8))
    for raw in rows:
        count = raw.size // info["type_size"] * info["block_size"]
        ref = _core.dequantize(t, raw, count)
        got = _core.dequantize(t, raw, count, isa=isa)
        nan = np.isnan(ref)
        assert np.array_equal(nan, np.isnan(got))
        bad = np.flatnonzero(ref.view(np.uint32)[~nan] != got.view(np.uint32)[~nan])
        assert bad.size == 0, f"{bad.size} of {count} values differ, first at {bad[0]}"


def test_avx512_has_the_amx_formats_dequantizers():
    """The common formats dequantize with AVX-512 code on the AMX path (the scalar
    references cost 0.3-1.2 ns per weight, as much as the tile products)."""
    if ISA_ORDER.index(DETECTED) < ISA_ORDER.index("avx512"):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K"]:
        assert "avx512" in _core.type_info(t)["dequantizers"], t


def test_avx512_scale_loads_without_gathers():
    """The AVX-512 block kernels fetch per-block scales with vpgatherdd, or through a stack
    buffer on CPUs with the slow (GDS-mitigated) gathers; run the latter variant too."""
    if ISA_ORDER.index(DETECTED) < ISA_ORDER.index("avx512"):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import sys; sys.path.insert(0, %r); import test_kernels as T\n"
        "for t in T.LEGACY_TYPES + ['IQ4_NL', 'MXFP4']:\n"
        "    if T._known(t): T._check_all(t, 'avx512')\n" % here
    )
    env = dict(os.environ, LOWBIT_AVX512_GATHER="0", LOWBIT_TEST_SEED=str(SEED))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("t", FLOAT_TYPES)
def test_float_dots_exact_on_integers(t, isa):
    """Small integers: every partial sum is exact, so any order gives the same float."""
    info = _skip_unless_runnable(t, isa)
    rng = np.random.default_rng([SEED, 99, ALL_TYPES.index(t), ISA_ORDER.index(isa)])
    for n in _sizes(1):
        w = rng.integers(-16, 17, n).astype(np.float32)
        a = rng.integers(-16, 17, n).astype(np.float32)
        wq = _core.quantize(t, w.reshape(1, -1)).tobytes()
        aq = _core.quantize(t, a.reshape(1, -1)).tobytes()
        exact = float(np.dot(w.astype(np.float64), a.astype(np.float64)))
        got = _core.vec_dot(t, isa, wq, aq, n)
        assert got == exact, f"{t} {isa} n={n}: {got} != {exact} (LOWBIT_TEST_SEED={SEED})"


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("t", FLOAT_TYPES)
def test_float_dots_wide_range(t, isa):
    """Magnitudes from 1e-20 to 1e15 (float products down in the subnormals)."""
    info = _skip_unless_runnable(t, isa)
    rng = np.random.default_rng([SEED, 7, ALL_TYPES.index(t), ISA_ORDER.index(isa)])
    lo, hi = (-20, 15) if t != "F16" else (-7, 4)
    for n in (17, 255, 4096):
        w = rng.choice([-1, 1], n) * 10 ** rng.uniform(lo, hi, n)
        a = rng.choice([-1, 1], n) * 10 ** rng.uniform(lo, hi, n)
        _check(t, isa, info, n, "wide range", w, a)


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_mxfp4_exponent_range(isa):
    """E8M0 scales across the range, the subnormal 2^-128 and 2^-127 (e = 0, 1) included."""
    info = _skip_unless_runnable("MXFP4", isa)
    rng = np.random.default_rng([SEED, 11, ISA_ORDER.index(isa)])
    n = 32 * 37
    w = bytearray(_core.quantize("MXFP4", rng.standard_normal((1, n)).astype(np.float32)).tobytes())
    w[0::17] = bytes(rng.choice([0, 1, 2, 3, 64, 120, 127, 130, 180, 200], n // 32).astype(np.uint8))
    w = bytes(w)
    for name, a in [("normal", rng.standard_normal(n)), ("tiny", rng.standard_normal(n) * 1e-4)]:
        aq = _core.quantize("Q8_0", a.astype(np.float32).reshape(1, -1)).tobytes()
        ref = _core.vec_dot("MXFP4", "scalar", w, aq, n)
        got = _core.vec_dot("MXFP4", isa, w, aq, n)
        wd = _core.dequantize("MXFP4", np.frombuffer(w, np.uint8), n)
        ad = _core.dequantize("Q8_0", np.frombuffer(aq, np.uint8), n)
        tol = (n // 16 + 32) * 2.0**-23 * _s_bound(wd, ad, 32) + n * 2.0**-148
        assert abs(got - ref) <= tol, f"MXFP4 {isa} '{name}': {ref!r} vs {got!r} (LOWBIT_TEST_SEED={SEED})"


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_required_formats_have_simd_kernels(isa):
    if ISA_ORDER.index(isa) > ISA_ORDER.index(DETECTED):
        pytest.skip(f"this CPU supports at most {DETECTED}")
    want = isa if isa != "amx" else "avx512"  # AMX adds GEMM, not dots; avx512 dots serve it
    missing = [t for t in REQUIRED_SIMD if _known(t) and want not in _core.type_info(t)["kernels"]]
    assert not missing, f"no {want} dot kernel for {missing}"


def test_isas_above_cpu_are_refused():
    above = ISA_ORDER[ISA_ORDER.index(DETECTED) + 1 :]
    if not above:
        pytest.skip("this CPU supports every ISA lowbit knows")
    w = _core.quantize("Q8_0", np.ones((1, 32), np.float32)).tobytes()
    for isa in above:
        with pytest.raises(Exception):
            _core.vec_dot("Q8_0", isa, w, w, 32)
        assert isa not in _core.type_info("Q8_0")["kernels"], f"{isa} kernels registered on a CPU without {isa}"


AMX_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS",
             "TQ1_0", "TQ2_0", "MXFP4", "BF16"]


@pytest.mark.parametrize("t", AMX_TYPES)
def test_amx_matmul_matches_float64(t):
    """Prompt products on AMX tiles (weights dequantized and rounded to bf16, activations
    rounded to bf16, fp32 accumulation) agree with the float64 product of the dequantized
    weights, ragged tile edges and several 128-row slabs included.  Bound: two bf16
    roundings per term (unit roundoff 2^-8 each, so 2^-7 for the product; a format's shared
    scale rounds the same way for a whole block, so the errors need not cancel) plus fp32
    accumulation, times sum |w x|."""
    if DETECTED != "amx":
        pytest.skip(f"this CPU supports at most {DETECTED}")
    info = _core.type_info(t)
    bs = info["block_size"]
    unit = max(bs, 32)
    rng = np.random.default_rng([SEED, AMX_TYPES.index(t)])
    for k, nrows, ntok in [(1, 1, 1), (2, 16, 16), (4, 17, 33), (3, 40, 5), (6, 300, 48), (8, 31, 130)]:
        n = k * unit if unit >= 256 else k * 256
        w = rng.standard_normal((nrows, n)).astype(np.float32) * 10 ** rng.uniform(-2, 2, (nrows, 1)).astype(np.float32)
        x = rng.standard_normal((ntok, n)).astype(np.float32) * 10 ** rng.uniform(-1, 1, (ntok, 1)).astype(np.float32)
        wq = _core.quantize(t, w)
        got = _core.amx_matmul(t, wq.tobytes(), x, nrows)
        wd = _core.dequantize(t, wq, n * nrows).reshape(nrows, n).astype(np.float64)
        ref = x.astype(np.float64) @ wd.T
        bound = np.abs(x.astype(np.float64)) @ np.abs(wd).T * (2.0**-7 + (n / 16 + 32) * 2.0**-23) + 1e-30
        assert np.isfinite(got).all(), f"{t} {n}x{nrows}x{ntok}: unwritten outputs (seed {SEED})"
        worst = np.max(np.abs(got - ref) / bound)
        assert worst <= 1.0, f"{t} n={n} rows={nrows} tokens={ntok}: error {worst:.2f}x the bound (seed {SEED})"


def test_amx_matmul_rejects_bad_shapes():
    if DETECTED != "amx":
        pytest.skip(f"this CPU supports at most {DETECTED}")
    wq = _core.quantize("Q8_0", np.ones((2, 64), np.float32))
    with pytest.raises(Exception):
        _core.amx_matmul("Q8_0", wq.tobytes(), np.ones((3, 64), np.float32), 3)   # 2 rows given
    with pytest.raises(Exception):
        _core.amx_matmul("Q8_0", wq.tobytes(), np.ones((3, 48), np.float32), 2)   # not whole blocks


def _amx_model(t, tmp_path, seed):
    """A small random model of type t on the CPU, and a 160-token prompt (long enough for
    the AMX tiles); skips unless this CPU has AMX."""
    if DETECTED != "amx":
        pytest.skip(f"this CPU supports at most {DETECTED}")
    import lowbit
    from lowbit.tools import random_model

    path = str(tmp_path / f"small-{t}.gguf")
    random_model.make(path, "small", t, seed=seed)
    llm = lowbit.LLM(path, n_ctx=256, n_threads=4, n_gpu_layers=0)
    return llm, np.random.default_rng(SEED).integers(0, llm.n_vocab, 160).tolist()


@pytest.mark.parametrize("t", ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "Q5_K", "IQ4_XS"])
def test_amx_prompt_logits_match_avx512(t, tmp_path):
    """Whole-model prompt processing through AMX tiles (batches of >= 128 tokens) agrees
    with the AVX-512 path."""
    llm, tokens = _amx_model(t, tmp_path, seed=1)
    _core.set_isa("amx")
    amx = np.array(llm.logits(tokens))
    _core.set_isa("avx512")
    try:
        ref = np.array(llm.logits(tokens))
    finally:
        _core.set_isa(DETECTED)
    # bf16 against int8 activations on a random model with many near-ties: measured on the
    # device, top-1 0.92-0.975 and max |diff| 0.17-0.19 of a logit range of ~8.7
    assert np.mean(amx.argmax(1) == ref.argmax(1)) >= 0.85
    assert np.abs(amx - ref).max() < 0.05 * (ref.max() - ref.min())


@pytest.mark.parametrize("t", ["Q4_0", "Q4_K"])
def test_amx_prompt_reads_packed_copy_exactly(t, tmp_path):
    """Once decoding has packed the weights (and released their mapped pages), AMX prompts
    dequantize the packed copy instead of faulting the mapped pages back in: the model stays
    resident once, and the logits are bit-identical to those read from the mapped rows."""
    llm, tokens = _amx_model(t, tmp_path, seed=2)
    from_mapped = np.array(llm.logits(tokens))
    llm.logits(tokens[:1])   # one token: the decode kernels pack every matrix
    from_packed = np.array(llm.logits(tokens))
    assert from_mapped.tobytes() == from_packed.tobytes()
