"""`lowbit bench`: prompt processing and generation speed in llama-bench's form.

pp<N>: N tokens evaluated in one batch from an empty cache.  tg<N>: N tokens generated
one at a time from an empty cache (no sampling, as llama-bench does).  Each test runs
once to warm up, then `reps` times; t/s is the mean over repetitions, ± the standard
deviation.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _core
from .models import default_gpu_layers


@dataclass
class BenchResult:
    model_filename: str
    model_type: str
    model_size: int
    model_n_params: int
    n_threads: int
    n_prompt: int
    n_gen: int
    samples_ts: list = field(default_factory=list)
    avg_ts: float = 0.0
    stddev_ts: float = 0.0
    backend: str = "CPU"
    isa: str = ""

    @property
    def test(self) -> str:
        return f"pp{self.n_prompt}" if self.n_prompt else f"tg{self.n_gen}"


def model_format(model, path: str) -> str:
    """The file's mix (general.file_type: Q4_K_M, ...), else the type holding most matrix bytes."""
    from .quantize import file_type_name

    name = file_type_name(path)
    if name:
        return name
    types = {}
    for _, tname, shape, nbytes in model.tensors():
        if len(shape) == 2:
            types[tname] = types.get(tname, 0) + nbytes
    return max(types, key=types.get) if types else "?"


def _model_type(model, path: str) -> str:
    """As llama-bench: architecture, size class, format."""
    n = model.n_params
    size = f"{n / 1e9:.0f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
    return f"{model.hparams['arch']} {size} {model_format(model, path)}"


def _time_pp(ctx, tokens) -> float:
    ctx.rewind(0)
    t0 = time.perf_counter()
    ctx.eval(tokens)
    return time.perf_counter() - t0


def _time_tg(ctx, tokens) -> float:
    ctx.rewind(0)
    t0 = time.perf_counter()
    for t in tokens:
        ctx.eval([t])
    return time.perf_counter() - t0


def run(model_path: str, n_prompt: int = 512, n_gen: int = 128, n_threads: int | None = None,
        reps: int = 5, n_gpu_layers: int | None = None) -> list[BenchResult]:
    if n_prompt < 0 or n_gen < 0 or reps < 1:
        raise ValueError("-p and -n must be >= 0 and -r >= 1")
    model = _core.Model(model_path)
    threads = n_threads or os.cpu_count() or 1
    n_ctx = max(n_prompt, n_gen, 16)
    if n_gpu_layers is None:
        n_gpu_layers = default_gpu_layers(model)
    ctx = _core.Context(model, n_ctx=n_ctx, n_threads=threads, n_batch=max(n_prompt, 1), n_gpu_layers=n_gpu_layers)
    rng = np.random.default_rng(0)
    base = dict(model_filename=os.path.abspath(model_path), model_type=_model_type(model, model_path),
                model_size=model.weight_bytes, model_n_params=model.n_params, n_threads=threads,
                isa=_core.cuda_device_name() if ctx.on_gpu else _core.active_isa(),
                backend="CUDA" if ctx.on_gpu else "CPU")
    results = []
    for n, timer, key in ((n_prompt, _time_pp, "n_prompt"), (n_gen, _time_tg, "n_gen")):
        if n == 0:
            continue
        tokens = rng.integers(0, model.n_vocab, size=n).tolist()
        timer(ctx, tokens)   # warm-up
        samples = [n / timer(ctx, tokens) for _ in range(reps)]
        r = BenchResult(**base, n_prompt=n if key == "n_prompt" else 0, n_gen=n if key == "n_gen" else 0)
        r.samples_ts = samples
        r.avg_ts = statistics.mean(samples)
        r.stddev_ts = statistics.stdev(samples) if len(samples) > 1 else 0.0
        results.append(r)
    return results


def format_table(results: list[BenchResult]) -> str:
    rows = [("model", "size", "params", "backend", "threads", "test", "t/s")]
    for r in results:
        rows.append((r.model_type, f"{r.model_size / 2**20:.2f} MiB", f"{r.model_n_params / 1e6:.2f} M",
                     f"{r.backend} ({r.isa})", str(r.n_threads), r.test, f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append("| " + " | ".join("-" * w if i < 4 else "-" * (w - 1) + ":" for i, w in enumerate(widths)) + " |")
    return "\n".join(lines)


def to_json(results: list[BenchResult]) -> str:
    out = []
    for r in results:
        d = asdict(r)
        d["test"] = r.test
        out.append(d)
    return json.dumps(out, indent=2)
