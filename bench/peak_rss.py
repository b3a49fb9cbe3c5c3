"""Peak resident memory of lowbit and llama.cpp (llama-cpp-python) generating from one file.

A benchmark, not a test.  Each runtime runs in a fresh Python process that loads the
model, evaluates a prompt and generates N tokens greedily, then reports the kernel's
high-water mark of its resident set (VmHWM).  The same process also measures the
baseline of an interpreter that imported the runtime but loaded no model, so the
table shows both the total and what the model run itself added.

    PYTHONPATH=python:<build>/py python bench/peak_rss.py -m model.gguf -t 2 -c 2048 -n 128
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, os, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

def hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0

runtime, path, threads, n_ctx, n_gen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prompt = "The history of the city begins in the early Middle Ages, when"
if runtime == "lowbit":
    import lowbit
    base = hwm_kib()
    llm = lowbit.LLM(path, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=0)
    ids = llm.generate_tokens(prompt, max_tokens=n_gen, temperature=0.0, ignore_eos=True)
else:
    import llama_cpp
    base = hwm_kib()
    llm = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
                          verbose=False, seed=0)
    toks = llm.tokenize(prompt.encode())
    ids = []
    for t in llm.generate(toks, temp=0.0, top_k=1):
        ids.append(t)
        if len(ids) >= n_gen:
            break
print(json.dumps({"base_kib": base, "peak_kib": hwm_kib(), "n": len(ids)}))
"""


def measure(runtime: str, path: str, threads: int, n_ctx: int, n_gen: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, runtime, path, str(threads), str(n_ctx), str(n_gen)],
                         capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{runtime} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", nargs="+", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx-size", type=int, default=2048)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    a = ap.parse_args(argv)
    print(f"| model | runtime | peak RSS MiB | after import MiB | model run added MiB | tokens |")
    print(f"|---|---|---:|---:|---:|---:|")
    for path in a.model:
        for runtime in ("lowbit", "llama.cpp"):
            r = measure(runtime, path, a.threads, a.ctx_size, a.n_gen)
            print(f"| {os.path.basename(path)} | {runtime} | {r['peak_kib'] / 1024:.1f} | {r['base_kib'] / 1024:.1f} | "
                  f"{(r['peak_kib'] - r['base_kib']) / 1024:.1f} | {r['n']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
