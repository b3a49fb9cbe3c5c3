"""lowbit against llama.cpp (through llama-cpp-python) on the same files, same threads.

A benchmark, not a test.  For every model: pp<P> (P tokens in one batch from an empty
cache) and tg<N> (N tokens one at a time from an empty cache), measured alternately
(lowbit, llama.cpp, lowbit, ...) so that both see the same background load, `reps`
times after one warm-up each.  Prints a table of median t/s and the ratio.

    PYTHONPATH=python:<build>/py python bench/compare_llamacpp.py -t 2 -r 5 [-m a.gguf b.gguf]

Where llama-cpp-python is not installed (the device machine), `--llama-bench PATH` runs
llama.cpp's own llama-bench binary instead (tools/build_llama_bench.sh builds it), one
repetition per call, still alternating with lowbit; `-ngl N` puts N layers on the GPU on
both sides.  llama-bench runs an untimed warm-up (the prompt for pp, one token for tg)
before its repetition in every call, and lowbit then does the same before each of its
samples.

Both sides pay one Python call per generated token (lowbit's Context.eval, llama-cpp-
python's Llama.eval, which only decodes: no sampling, no logits copy), so tg compares
like with like; llama-bench itself would be a few percent faster on tg.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# numpy's OpenBLAS threads would otherwise poll in the background of both runtimes
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _lowbit_runner(path, n_ctx, threads, n_batch, n_gpu_layers=0, warmup_each=False):
    """warmup_each: before every timed run, the untimed warm-up that llama-bench runs before
    its own (the whole prompt for pp, one token for tg), so that both sides' samples follow
    the same steps when llama-bench runs one repetition per call."""
    from lowbit import _core

    model = _core.Model(path)
    ctx = _core.Context(model, n_ctx=n_ctx, n_threads=threads, n_batch=n_batch, n_gpu_layers=n_gpu_layers)

    def pp(tokens):
        if warmup_each:
            ctx.rewind(0)
            ctx.eval(tokens)
        ctx.rewind(0)
        t0 = time.perf_counter()
        ctx.eval(tokens)
        return time.perf_counter() - t0

    def tg(tokens):
        if warmup_each:
            ctx.rewind(0)
            ctx.eval(tokens[:1])
        ctx.rewind(0)
        t0 = time.perf_counter()
        for t in tokens:
            ctx.eval([t])
        return time.perf_counter() - t0

    return model.n_vocab, pp, tg


def _llama_bench_runner(binary, path, threads, n_gpu_layers):
    """llama.cpp's llama-bench, one repetition per call; returns seconds for n tokens
    computed from its reported t/s (model loading is not timed, as in llama-bench)."""
    import json
    import subprocess

    def run(n_prompt, n_gen, n):
        out = subprocess.run([binary, "-m", path, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
                              "-ngl", str(n_gpu_layers), "-r", "1", "-o", "json"],
                             capture_output=True, text=True, check=True)
        return n / json.loads(out.stdout)[0]["avg_ts"]

    return None, (lambda tokens: run(len(tokens), 0, len(tokens))), (lambda tokens: run(0, len(tokens), len(tokens)))


def _llamacpp_runner(path, n_ctx, threads, n_batch, n_gpu_layers=0):
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                          n_threads_batch=threads, logits_all=False, verbose=False, seed=0,
                          n_gpu_layers=n_gpu_layers)

    def pp(tokens):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        return time.perf_counter() - t0

    def tg(tokens):
        llm.reset()
        t0 = time.perf_counter()
        for t in tokens:
            llm.eval([t])
        return time.perf_counter() - t0

    return llm.n_vocab(), pp, tg


def _type_name(path):
    from lowbit import _core
    from lowbit.bench import model_format

    return model_format(_core.Model(path, vocab_only=True), path)


def compare(path, threads, n_prompt, n_gen, reps, label=None, llama_bench=None, n_gpu_layers=0):
    n_ctx = max(256, -(-max(n_prompt, n_gen) // 256) * 256)
    n_batch = max(n_prompt, 1)
    sides = {
        "lowbit": _lowbit_runner(path, n_ctx, threads, n_batch, n_gpu_layers, warmup_each=bool(llama_bench)),
        "llama.cpp": (_llama_bench_runner(llama_bench, path, threads, n_gpu_layers) if llama_bench
                      else _llamacpp_runner(path, n_ctx, threads, n_batch, n_gpu_layers)),
    }
    n_vocab = sides["lowbit"][0]
    rng = np.random.default_rng(0)
    rows = []
    for test, n, which in (("pp", n_prompt, 1), ("tg", n_gen, 2)):
        if n == 0:
            continue
        tokens = rng.integers(0, n_vocab, size=n).tolist()
        for side in sides.values():
            side[which](tokens)   # warm-up
        samples = {k: [] for k in sides}
        for rep in range(reps):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            for k in order:
                samples[k].append(n / sides[k][which](tokens))
        lb, ll = statistics.median(samples["lowbit"]), statistics.median(samples["llama.cpp"])
        rows.append((label or os.path.basename(path), f"{test}{n}", lb, ll, lb / ll))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", nargs="*", help="GGUF files (default: the default model)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-ngl", "--gpu-layers", type=int, default=0, help="layers on the GPU, both runtimes")
    ap.add_argument("--llama-bench", default=None, help="llama.cpp's llama-bench binary instead of llama-cpp-python")
    args = ap.parse_args(argv)
    paths = args.model
    if not paths:
        from lowbit.models import default_model_path

        paths = [default_model_path()]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"threads {args.threads}, reps {args.reps} (median), load average at start {load:.2f}", flush=True)
    header = ("model", "format", "test", "lowbit t/s", "llama.cpp t/s", "ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|", flush=True)
    for p in paths:
        fmt = _type_name(p)
        for name, test, lb, ll, ratio in compare(p, args.threads, args.n_prompt, args.n_gen, args.reps,
                                                 llama_bench=args.llama_bench, n_gpu_layers=args.gpu_layers):
            print(f"| {name} | {fmt} | {test} | {lb:.1f} | {ll:.1f} | {ratio:.2f} |", flush=True)
    try:
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
