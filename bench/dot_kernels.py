"""Micro-benchmark of the vec_dot kernels: GB/s of weight bytes, per format and ISA.

A set of 4096-wide weight rows is dotted with one activation row (the decode case: one
token, activations stay in L1 while the weights stream).  Two row sets:
  hot   about 1 MiB of weights, L2-resident: measures the kernel itself;
  cold  4096 rows (18-64 MiB): weights stream from L3/DRAM, as in real decoding.
Single thread, best of several samples (ISAs interleaved).  Timings on a shared 2-core machine are noisy;
compare runs made back to back.

Needs _core.bench_vec_dot(type, isa, w, a, n, iters, repeats) -> seconds per pass over
the rows.  Without it, falls back to one long _core.vec_dot call over the whole set
(activation repeated, so it streams twice the bytes and includes a copy of both
buffers): numbers then only rank kernels, they are not the matmul rate.

usage: python bench/dot_kernels.py [--types Q4_1,Q8_0] [--isas scalar,avx2] [--no-cold] [--rounds 7]
"""
import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np

N = 4096


def load_core():
    try:
        from lowbit import _core

        return _core
    except ImportError:
        pass
    dirs = [os.environ.get("LOWBIT_CORE_DIR", "")] + [os.path.join(p, "lowbit") for p in sys.path]
    for d in dirs:
        for path in glob.glob(os.path.join(d, "_core*.so")) if d else []:
            spec = importlib.util.spec_from_file_location("_core", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    sys.exit("lowbit._core not found (build it, or set LOWBIT_CORE_DIR to the folder holding _core*.so)")


TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4"]
ISAS = ["scalar", "avx2", "avx512", "amx"]


def make_timer(core, t, isa, w, a, rows):
    """A function timing one pass over the rows (seconds)."""
    if hasattr(core, "bench_vec_dot"):
        probe = core.bench_vec_dot(t, isa, w, a, N, 1, 3)
        iters = max(1, int(0.02 / max(probe, 1e-9)))   # ~20 ms per sample
        return lambda: core.bench_vec_dot(t, isa, w, a, N, iters, 1)
    aa = a * rows

    def once():
        t0 = time.perf_counter()
        core.vec_dot(t, isa, w, aa, N * rows)
        return time.perf_counter() - t0

    return once


def best_times(timers, rounds):
    """Best of `rounds` samples each, the ISAs interleaved so that load from other
    processes hits them alike."""
    best = [1e30] * len(timers)
    for _ in range(rounds):
        for i, f in enumerate(timers):
            best[i] = min(best[i], f())
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--isas", default=",".join(ISAS))
    ap.add_argument("--no-cold", action="store_true", help="skip the 4096-row (memory-bound) set")
    ap.add_argument("--rounds", type=int, default=7, help="samples per kernel; the best is kept")
    args = ap.parse_args()
    core = load_core()
    detected = core.detected_isa()
    isas = [i for i in args.isas.split(",") if ISAS.index(i) <= ISAS.index(detected)]
    known = set(core.type_names())
    rng = np.random.default_rng(0)
    mode = "bench_vec_dot" if hasattr(core, "bench_vec_dot") else "FALLBACK long vec_dot (ranks only)"
    print(f"detected ISA {detected}; row width {N}; timing via {mode}")
    sets = [("hot", None)] + ([] if args.no_cold else [("cold", 4096)])
    header = f"{'type':8s} {'set':5s} {'rows':>5s} {'MiB':>6s} " + " ".join(f"{i:>8s}" for i in isas) + "   GB/s of weight bytes"
    print(header)
    for t in args.types.split(","):
        if t not in known:
            print(f"{t:8s} (not in the registry yet)")
            continue
        info = core.type_info(t)
        if not info["can_quantize"]:
            print(f"{t:8s} (cannot quantize)")
            continue
        row_bytes = N // info["block_size"] * info["type_size"]
        a = core.quantize(info["vec_dot_type"], rng.standard_normal((1, N)).astype(np.float32)).tobytes()
        for set_name, rows in sets:
            rows = rows or max(16, (1 << 20) // row_bytes)
            w = core.quantize(t, rng.standard_normal((rows, N)).astype(np.float32)).tobytes()
            timers = [make_timer(core, t, isa, w, a, rows) for isa in isas]
            cells = []
            for isa, sec in zip(isas, best_times(timers, args.rounds)):
                own = isa in info["kernels"]
                cells.append(f"{len(w) / sec / 1e9:7.1f}{' ' if own else '*'}")
            print(f"{t:8s} {set_name:5s} {rows:5d} {len(w) / 2**20:6.1f} " + " ".join(cells), flush=True)
    print("* = no kernel of its own at that ISA (falls back to a lower one)")


if __name__ == "__main__":
    main()
