"""End-to-end speed of the GPU forward pass (CudaLlama) next to the CPU Context.

    PYTHONPATH=python:<build>/py python3 cuda/bench_model.py MODEL.gguf TEXT.txt
Times include the Python call, the host<->device copies and the logits download.
"""
import statistics
import sys
import time

from lowbit import _core


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    path, text = sys.argv[1], sys.argv[2]
    m = _core.Model(path)
    toks = m.tokenize(open(text, encoding="utf-8").read(200_000))[:1200]
    print(f"device: {_core.cuda_device_name()}; model {path.split('/')[-1]}: {m.hparams}")
    g = _core.CudaLlama(m, n_ctx=2048)
    print(f"GPU memory held by CudaLlama: {g.device_bytes / 1e6:.1f} MB")
    for n in (64, 512, 1024):
        g.forward(toks[:n], 0, 1)   # warm-up
        s = timed(lambda: g.forward(toks[:n], 0, 1), 3)
        print(f"GPU prefill {n:5d} tokens: {s * 1e3:8.2f} ms  ({n / s:9.0f} tok/s)")
    for ctx in (16, 512, 1024):
        g.forward(toks[:ctx], 0, 1)
        steps = 64
        t0 = time.perf_counter()
        for i in range(ctx, ctx + steps):
            g.forward([toks[i]], i, 1)
        s = (time.perf_counter() - t0) / steps
        print(f"GPU decode at context {ctx:5d}: {s * 1e3:7.3f} ms/token ({1 / s:7.0f} tok/s)")
    c = _core.Context(m, n_ctx=2048, n_threads=0, n_batch=512)
    t0 = time.perf_counter()
    c.eval(toks[:512])
    s = time.perf_counter() - t0
    print(f"CPU prefill   512 tokens: {s * 1e3:8.2f} ms  ({512 / s:9.0f} tok/s), {c.n_threads} threads")
    t0 = time.perf_counter()
    for i in range(512, 544):
        c.eval([toks[i]])
    s = (time.perf_counter() - t0) / 32
    print(f"CPU decode at context   512: {s * 1e3:7.3f} ms/token ({1 / s:7.0f} tok/s)")


if __name__ == "__main__":
    main()
