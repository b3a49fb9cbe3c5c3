"""`lowbit quantize` against llama.cpp's llama_model_quantize (llama-cpp-python's bundled
llama.cpp), on the default model (SmolLM2-135M-Instruct) requantized to F16, and on small
random models.

For each format:
  * the same type for every tensor, the same tensor order and the same metadata as
    llama.cpp's file; tensors in formats where lowbit uses ggml's reference rounding are
    byte-identical (whole files, for mixes made only of such formats), and tensors in
    formats with lowbit's quality quantizer (K-quants, IQ4) have an RMSE against the F16
    source no larger than llama.cpp's, weighted the way llama.cpp's quantizer weights the
    format's error (lowbit.quantize.error_weights);
  * lowbit's file loads and generates in llama.cpp and in lowbit;
  * on lowbit's file the two runtimes agree: top-1 of the logits of a 128-token WikiText
    chunk >= 0.9 (both quantize activations to 8 bits, which flips near-ties), and
    perplexity over N_RUNTIME chunks of 128 (every position scored) within 0.5%, or within
    3 standard errors where the activation-rounding noise is larger than that (about 1.5%
    per chunk for quantized weights, in both directions);
  * in llama.cpp, over N_CHUNKS (slow formats: N_CHUNKS_SLOW) chunks, lowbit's file's
    perplexity is within 1% of (or below) llama.cpp's file's, and its KL divergence from
    the F16 model within 2% (both up to 3 standard errors).

The default run covers a few formats (about 3 minutes on 2 cores); the rest are marked
slow.  Each test prints a line of numbers (-s shows them); LOWBIT_QUANTIZE_CHUNKS sets
N_CHUNKS and N_CHUNKS_SLOW (default 16 and 32).
"""
import os

import numpy as np
import pytest

# llama.cpp's CPU backend uses OpenMP; busy-waiting threads crawl (10-20x) on a machine
# with 2 shared cores.  Passive waiting only helps if set before libgomp starts.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
llama_cpp = pytest.importorskip("llama_cpp")

import gguf  # noqa: E402

from lowbit import LLM, _core  # noqa: E402
from lowbit import quantize as Q  # noqa: E402
from lowbit.models import default_model_path  # noqa: E402
from lowbit.tools import random_model  # noqa: E402

N_CTX = 128
# chunks of N_CTX WikiText-2 tokens for comparing the two files in llama.cpp (3 cheap
# evaluations a chunk; default and slow formats), and the first N_RUNTIME of them for
# lowbit against llama.cpp
_CHUNKS = os.environ.get("LOWBIT_QUANTIZE_CHUNKS")
N_CHUNKS, N_CHUNKS_SLOW = (int(_CHUNKS), int(_CHUNKS)) if _CHUNKS else (16, 32)
N_RUNTIME = 8
THREADS = 2
FAST = ["Q8_0", "Q4_0", "Q4_K_M"]
# (on SmolLM2, Q3_K_S makes the same file as Q2_K, TQ2_0 the same values as TQ1_0 and
# MXFP4_MOE the same file as Q8_0; they are still run, as slow ones)
SLOW = ["Q6_K", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q5_K_S", "Q5_K_M",
        "IQ4_NL", "IQ4_XS", "TQ1_0", "BF16", "Q3_K_S", "TQ2_0", "MXFP4_MOE"]
QUALITY = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}   # lowbit's own quantizers
# SmolLM2 is not a ternary model: its TQ files are noise (perplexity ~1e7) whose logits
# both runtimes compute about equally far from exact arithmetic but not alike (top-1 ~0.6).
# For these the runtimes are compared with a float64 forward pass instead of each other.
CHAOTIC = {"TQ1_0", "TQ2_0"}
def ftype(mix: str) -> int:
    return Q.FTYPES[mix][0]


def llamacpp_quantize(src: str, dst: str, mix: str, allow_requantize: bool = False, pure: bool = False,
                      output_type: str | None = None, token_embedding_type: str | None = None) -> None:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype(mix)
    p.nthread = THREADS
    p.allow_requantize = allow_requantize
    p.pure = pure
    if output_type:
        p.output_tensor_type = Q.GGML_TYPES[output_type]
    if token_embedding_type:
        p.token_embedding_type = Q.GGML_TYPES[token_embedding_type]
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p) == 0, f"llama.cpp failed to quantize {mix}"


class File:
    """A GGUF file's raw key/value pairs and tensors (lowbit.quantize's header parser;
    gguf-py's reader takes seconds on a 49k-token vocabulary)."""

    def __init__(self, path: str):
        self.idx = Q.GGUFIndex(path)
        self.kv = self.idx.kv
        self.tensors = self.idx.tensors
        self.by_name = {t.desc.name: t for t in self.tensors}

    def raw(self, t) -> np.ndarray:
        return self.idx.data[t.offset:t.offset + t.nbytes]

    def f32(self, t) -> np.ndarray:
        n = int(np.prod(t.desc.ne))
        return _core.dequantize(t.desc.type, np.ascontiguousarray(self.raw(t)), n)

    def types(self) -> list:
        return [(t.desc.name, t.desc.type) for t in self.tensors]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def f16_model(workdir):
    """The default model (Q4_1 / Q8_0) requantized to F16 by lowbit: byte-identical to
    llama.cpp's own F16 requantization."""
    ours, theirs = str(workdir / "smollm2-f16.gguf"), str(workdir / "smollm2-f16-llamacpp.gguf")
    assert Q.main(["-q", "-t", str(THREADS), "--allow-requantize", default_model_path(), ours, "F16"]) == 0
    llamacpp_quantize(default_model_path(), theirs, "F16", allow_requantize=True)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read(), "lowbit's F16 file differs from llama.cpp's"
    os.remove(theirs)
    return ours


@pytest.fixture(scope="module")
def text_tokens(f16_model, wikitext_test):
    llm = LLM(f16_model, vocab_only=True)
    return llm.tokenize(wikitext_test[:60000], add_bos=True)


def test_f16_requantization_identical_to_llamacpp(f16_model):
    assert os.path.getsize(f16_model) > 200e6


# ------------------------------------------------------------------ type choices on random models
SHAPES = {
    # 8 layers for the "more bits" layers; GQA 4 / 2; dims fit every block size
    "r256-gqa4": dict(dim=256, layers=8, heads=4, kv_heads=1, ffn=512, vocab=320, rope=10000.0, ctx=256),
    "r256-gqa2-16l": dict(dim=256, layers=16, heads=4, kv_heads=2, ffn=256, vocab=320, rope=10000.0, ctx=256),
    # rows of 576 and 1536 as SmolLM2's, rows of 96 for fallbacks to 32-value types
    "r576": dict(dim=576, layers=2, heads=9, kv_heads=3, ffn=1536, vocab=320, rope=10000.0, ctx=256),
    "r96": dict(dim=96, layers=2, heads=3, kv_heads=1, ffn=256, vocab=320, rope=10000.0, ctx=256),
}
ALL_MIXES = [m for m in Q.FTYPES]


@pytest.fixture(scope="module")
def random_models(workdir):
    out = {}
    for name, shape in SHAPES.items():
        random_model.SHAPES[name] = shape
        try:
            path = str(workdir / f"{name}.gguf")
            random_model.make(path, name, "F16", seed=1)
            out[name] = path
        finally:
            del random_model.SHAPES[name]
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_type_choices_match_llamacpp(random_models, workdir, shape):
    """For every mix lowbit offers (and --pure, --output-type, --token-embedding-type):
    lowbit's plan gives every tensor llama.cpp's type, in llama.cpp's order."""
    src = random_models[shape]
    idx, hp = Q.read_input(src)
    descs = [t.desc for t in idx.tensors]
    idx.close()
    dst = str(workdir / f"{shape}-llamacpp.gguf")
    options = [(m, {}) for m in ALL_MIXES] + [
        ("Q4_K_M", dict(pure=True)), ("Q3_K_M", dict(output_type="Q5_K", token_embedding_type="Q4_0")),
        ("IQ4_XS", dict(pure=True)), ("Q6_K", dict(output_type="Q8_0"))]
    mismatches = []
    for mix, kw in options:
        if shape in ("r576", "r96") and kw.get("output_type") == "Q5_K":
            continue   # llama.cpp applies no fallback to an explicit type and fails on misfit rows
        if shape == "r96" and kw.get("pure") and mix == "IQ4_XS":
            continue
        llamacpp_quantize(src, dst, mix, **kw)
        theirs = File(dst).types()
        ours = [(p.desc.name, p.target) for p in Q.plan_types(descs, hp, mix, **kw)]
        if ours != theirs:
            diff = [(a, b) for a, b in zip(ours, theirs) if a != b][:5]
            mismatches.append(f"{mix} {kw}: {diff}")
    os.remove(dst)
    assert not mismatches, "\n".join(mismatches)


def test_random_model_files_match_llamacpp(random_models, workdir):
    """A whole Q4_K_M file of a random model: metadata and layout as llama.cpp's; the
    Q5_0/Q8_0 fallback tensors byte-identical."""
    src = random_models["r576"]
    ours, theirs = str(workdir / "r576-ours.gguf"), str(workdir / "r576-theirs.gguf")
    Q.quantize_file(src, ours, "Q4_K_M", threads=THREADS)
    llamacpp_quantize(src, theirs, "Q4_K_M")
    a, b = File(ours), File(theirs)
    assert a.kv == b.kv
    assert [(t.desc, t.offset) for t in a.tensors] == [(t.desc, t.offset) for t in b.tensors]
    for x, y in zip(a.tensors, b.tensors):
        if x.desc.type not in QUALITY:
            assert np.array_equal(a.raw(x), b.raw(y)), x.desc.name
    # and gguf-py reads it
    assert [t.name for t in gguf.GGUFReader(ours).tensors] == [t.desc.name for t in a.tensors]


def test_random_model_runs_in_llamacpp(workdir):
    """The benchmark models (lowbit.tools.random_model) load and run in llama.cpp, which
    tokenizes them as lowbit does and computes the same logits."""
    path = str(workdir / "random-tiny-q8.gguf")
    random_model.make(path, "tiny", "Q8_0", seed=3)
    peer = open_llamacpp(path)
    llm = LLM(path, n_ctx=N_CTX, n_threads=THREADS, seed=0)
    text = "Random weights, real vocabulary:  tabs\tand spaces."
    tokens = llm.tokenize(text, add_bos=False)
    assert peer.tokenize(text.encode(), add_bos=False) == tokens
    ours, theirs = np.array(llm.logits(tokens)), llamacpp_logits(peer, tokens)
    assert np.abs(ours - theirs).max() <= 0.02 * (theirs.max() - theirs.min())
    os.remove(path)


# ------------------------------------------------------------------ the default model, per format
def log_probs(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True, dtype=np.float64)).astype(np.float32)


def nll(lp: np.ndarray, chunk: list) -> np.ndarray:
    """Negative log-likelihood of every token after the first (all 127 positions of a
    chunk: twice the tokens llama-perplexity's second-half scoring uses, for less noise)."""
    return -lp[np.arange(len(chunk) - 1), np.asarray(chunk[1:])].astype(np.float64)


def chunks(tokens: list, bos: int | None, n: int) -> list:
    out = []
    for i in range(n):
        c = list(tokens[i * N_CTX:(i + 1) * N_CTX])
        assert len(c) == N_CTX, "not enough text"
        if bos is not None:
            c[0] = bos
        out.append(c)
    return out


def llamacpp_logits(peer, chunk: list) -> np.ndarray:
    peer.reset()
    peer.eval(chunk)
    return np.array(peer.scores[:len(chunk)], dtype=np.float32)


def open_llamacpp(path: str):
    return llama_cpp.Llama(path, n_ctx=N_CTX, n_batch=N_CTX, n_threads=THREADS, logits_all=True, verbose=False,
                           seed=0)


def mean_and_se(per_chunk: list) -> tuple[float, float]:
    """Mean over all tokens, and its standard error from the spread of the chunk means
    (tokens of a chunk are not independent)."""
    means = np.array([c.mean() for c in per_chunk])
    return float(np.concatenate(per_chunk).mean()), float(means.std(ddof=1) / np.sqrt(len(means)))


def rmse_against(src: File, f: File) -> dict:
    """Per tensor, the RMSE weighted the way llama.cpp's quantizer weights the type's error."""
    out = {}
    for t in f.tensors:
        if t.desc.type in QUALITY:
            x = src.f32(src.by_name[t.desc.name]).astype(np.float64).reshape(-1, t.desc.ne[0])
            y = f.f32(t).reshape(x.shape)
            out[t.desc.name] = Q.weighted_rmse(x, y, Q.error_weights(t.desc.type, x))
    return out


@pytest.fixture(scope="module")
def f16_peer(f16_model):
    return open_llamacpp(f16_model)


def check_format(mix: str, f16_model: str, f16_peer, text_tokens: list, workdir, n_chunks: int) -> None:
    ours, theirs = str(workdir / f"ours-{mix}.gguf"), str(workdir / f"theirs-{mix}.gguf")
    try:
        res = Q.quantize_file(f16_model, ours, mix, threads=THREADS)
        llamacpp_quantize(f16_model, theirs, mix)
        _check_format(mix, res, f16_model, f16_peer, ours, theirs, text_tokens, n_chunks)
    finally:
        for p in (ours, theirs):
            if os.path.exists(p):
                os.remove(p)


def _check_format(mix, res, f16_model, f16_peer, ours, theirs, text_tokens, n_chunks) -> None:
    # -- the files: same choices, same metadata, same bytes where the rounding is ggml's
    a, b = File(ours), File(theirs)
    assert a.kv == b.kv
    assert a.types() == b.types()
    differ = [x.desc.name for x, y in zip(a.tensors, b.tensors)
              if x.desc.type not in QUALITY and not np.array_equal(a.raw(x), b.raw(y))]
    assert not differ, f"tensors in ggml-rounded formats differ from llama.cpp's: {differ[:5]}"
    identical = all(np.array_equal(a.raw(x), b.raw(y)) for x, y in zip(a.tensors, b.tensors))
    src = File(f16_model)
    r_ours, r_theirs = rmse_against(src, a), rmse_against(src, b)
    worse = [n for n in r_ours if r_ours[n] > r_theirs[n] * (1 + 1e-6)]
    assert not worse, f"lowbit's RMSE is larger than llama.cpp's for {worse[:5]}"
    rmse_ratio = (np.sqrt(np.mean(np.square(list(r_ours.values())))) /
                  np.sqrt(np.mean(np.square(list(r_theirs.values()))))) if r_ours else 1.0

    kernels_missing = sorted({t.desc.type for t in a.tensors if not _core.type_info(t.desc.type)["kernels"]})
    if kernels_missing:
        pytest.skip(f"{mix}: lowbit has no dot kernel for {kernels_missing} yet")

    # -- both runtimes run lowbit's file
    llm = LLM(ours, n_ctx=N_CTX, n_threads=THREADS, seed=0)
    peer = open_llamacpp(ours)
    prompt = llm.tokenize("The capital of France is")
    gen = [t for t, _ in zip(peer.generate(prompt, temp=0.0, top_k=1, reset=True), range(8))]
    assert len(gen) == 8
    assert len(llm.generate_tokens(prompt, max_tokens=8, temperature=0)) > 0

    # -- lowbit and llama.cpp on lowbit's file
    bos = llm.model.bos if llm.model.add_bos else None
    cs = chunks(text_tokens, bos, max(N_RUNTIME, n_chunks))
    nll_lb, nll_ll, lp_ll_first = [], [], []
    for c in cs[:N_RUNTIME]:
        lp_lb = log_probs(llm.logits(c))
        lp_ll = log_probs(llamacpp_logits(peer, c))
        if not nll_lb:
            top1 = float(np.mean(lp_lb.argmax(1) == lp_ll.argmax(1)))
            f64_err = float64_errors(ours, c[:64], llm, peer) if mix in CHAOTIC else None
        nll_lb.append(nll(lp_lb, c))
        nll_ll.append(nll(lp_ll, c))
    del llm
    rt, rt_se = mean_and_se([x - y for x, y in zip(nll_lb, nll_ll)])           # log PPL ratio, runtimes
    ppl_lb, ppl_rt = (float(np.exp(np.concatenate(x).mean())) for x in (nll_lb, nll_ll))

    # -- lowbit's file against llama.cpp's, both in llama.cpp, with the F16 model's
    #    distribution for the KL divergences (nothing to compare when the files are equal)
    peer_theirs = open_llamacpp(theirs)
    nll_ours, nll_theirs, kld_ours, kld_theirs = [], [], [], []
    for c in cs[:2 if identical else n_chunks]:
        lp_f16 = log_probs(llamacpp_logits(f16_peer, c))
        lp_o = log_probs(llamacpp_logits(peer, c))
        lp_t = log_probs(llamacpp_logits(peer_theirs, c))
        nll_ours.append(nll(lp_o, c))
        nll_theirs.append(nll(lp_t, c))
        p = np.exp(lp_f16)
        kld_ours.append((p * (lp_f16 - lp_o)).sum(1, dtype=np.float64))
        kld_theirs.append((p * (lp_f16 - lp_t)).sum(1, dtype=np.float64))
    del peer, peer_theirs
    fl, fl_se = mean_and_se([x - y for x, y in zip(nll_ours, nll_theirs)])     # log PPL ratio, files
    kd, kd_se = mean_and_se([x - y for x, y in zip(kld_ours, kld_theirs)])     # KLD difference, files
    ppl_o, ppl_t = (float(np.exp(np.concatenate(x).mean())) for x in (nll_ours, nll_theirs))
    k_o, k_t = float(np.concatenate(kld_ours).mean()), float(np.concatenate(kld_theirs).mean())
    print(f"\n{mix:9s} {res.bits_per_weight:5.2f} bpw | lowbit's file, {N_RUNTIME} chunks: PPL lowbit {ppl_lb:.4f} / "
          f"llama.cpp {ppl_rt:.4f} ({np.expm1(rt):+.2%} +- {rt_se:.2%}), top-1 {top1:.3f}"
          + (f", mean |logit error| vs float64 lowbit {f64_err[0]:.3f} / llama.cpp {f64_err[1]:.3f}" if f64_err else "")
          + f" | in llama.cpp, {len(nll_ours)} chunks{' (identical files)' if identical else ''}: PPL lowbit's file {ppl_o:.4f} / llama.cpp's {ppl_t:.4f} "
          f"({np.expm1(fl):+.2%} +- {fl_se:.2%}), KLD vs F16 {k_o:.5f} / {k_t:.5f} ({kd / max(k_t, 1e-12):+.1%} +- "
          f"{kd_se / max(k_t, 1e-12):.1%}) | weight RMSE lowbit/llama.cpp {rmse_ratio:.4f} ({len(r_ours)} tensors)")
    if mix in CHAOTIC:
        assert f64_err[0] <= 1.25 * f64_err[1], "lowbit strays further from exact arithmetic than llama.cpp"
    else:
        assert top1 >= 0.9
        # 8-bit activations make the runtimes differ by ~1.5% per 128-token chunk, both
        # ways (test_llamacpp_model.py): within 0.5%, or 3 standard errors of that noise
        assert abs(rt) <= max(0.005, 3 * rt_se) and abs(rt) < 0.02
    # lowbit's file no worse than llama.cpp's, beyond 1% (2% for the KLD) or the noise
    assert fl <= max(0.01, 3 * fl_se), "lowbit's file has a higher perplexity than llama.cpp's"
    assert kd <= max(0.02 * k_t, 3 * kd_se), "lowbit's file is further from the F16 model than llama.cpp's"


def float64_errors(path: str, tokens: list, llm, peer) -> tuple[float, float]:
    """Mean |logit - float64 logit| of lowbit and of llama.cpp on tokens."""
    from .reference_llama import forward, load_weights

    ref = forward(*load_weights(path), tokens)
    ours = np.array(llm.logits(tokens))
    theirs = llamacpp_logits(peer, tokens)
    return float(np.abs(ours - ref).mean()), float(np.abs(theirs - ref).mean())


@pytest.mark.parametrize("mix", FAST)
def test_format(mix, f16_model, f16_peer, text_tokens, workdir):
    check_format(mix, f16_model, f16_peer, text_tokens, workdir, N_CHUNKS)


@pytest.mark.slow
@pytest.mark.parametrize("mix", SLOW)
def test_format_slow(mix, f16_model, f16_peer, text_tokens, workdir):
    check_format(mix, f16_model, f16_peer, text_tokens, workdir, N_CHUNKS_SLOW)
