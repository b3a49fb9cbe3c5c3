"""The `lowbit` command line, with llama.cpp's flag spellings (-m -p -n -t -c --temp ...)."""
from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Sequence

from . import _core


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF model file (default: SmolLM2-135M-Instruct)")


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("-c", "--ctx-size", type=int, default=2048, help="context size in tokens (0: the model's)")
    p.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", type=int, default=None, dest="gpu_layers",
                   help="layers on the GPU (CUDA builds; default: all when a GPU is present, 0: CPU only)")


def _add_sampling(p: argparse.ArgumentParser, temp: float = 0.8) -> None:
    p.add_argument("--temp", type=float, default=temp, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("-s", "--seed", type=int, default=None, help="random seed (same seed, same output)")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-text tokens")


def _sampling_kwargs(a: argparse.Namespace) -> dict:
    return dict(temperature=a.temp, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
                repeat_penalty=a.repeat_penalty, seed=a.seed, ignore_eos=a.ignore_eos)


def _open(a: argparse.Namespace):
    from .llm import LLM
    return LLM(a.model, n_ctx=a.ctx_size, n_threads=a.threads, n_gpu_layers=getattr(a, "gpu_layers", None))


def cmd_generate(a: argparse.Namespace) -> int:
    llm = _open(a)
    out = sys.stdout
    for piece in llm.generate(a.prompt, max_tokens=a.n_predict, stop=a.stop or None, stream=True,
                              **_sampling_kwargs(a)):
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    llm = _open(a)
    messages = []
    if a.system:
        messages.append({"role": "system", "content": a.system})
    print("lowbit chat: type a message; Ctrl-C stops an answer, /exit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if line.strip() in ("/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in llm.chat(messages, max_tokens=a.n_predict, stream=True, **_sampling_kwargs(a)):
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})


def _format_value(v, limit: int = 80) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, list):
        head = ", ".join(_format_value(x, 20) for x in v[:5])
        return f"[{head}{', ...' if len(v) > 5 else ''}] ({len(v)} items)"
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def cmd_info(a: argparse.Namespace) -> int:
    path = a.model_file or a.model
    from .models import resolve_model_path
    path = resolve_model_path(path)
    info = _core.read_gguf(path, with_data=False)
    model = _core.Model(path, vocab_only=True)
    tensors = model.tensors()
    hp = model.hparams
    n_params = sum(_prod(t[2]) for t in tensors)
    size = sum(t[3] for t in tensors)
    print(f"file:         {path}")
    print(f"gguf version: {info['version']}")
    print(f"architecture: {hp['arch']}")
    if hp.get("n_layer"):
        print(f"layers: {hp['n_layer']}  embedding: {hp['n_embd']}  heads: {hp['n_head']}  kv heads: {hp['n_head_kv']}  "
              f"ffn: {hp['n_ff']}  context: {hp['n_ctx_train']}  rope base: {hp['rope_base']:g}")
    print(f"vocabulary:   {model.n_vocab} tokens")
    print(f"parameters:   {n_params / 1e6:.2f} M")
    print(f"size:         {size / 2**20:.2f} MiB ({8 * size / max(n_params, 1):.2f} bits per weight)")
    counts = collections.Counter(t[1] for t in tensors)
    print("tensor types: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print("metadata:")
    for key, vtype, etype, value in info["metadata"]:
        key = key.decode("utf-8", errors="replace")
        print(f"  {key} ({vtype}{'[' + etype + ']' if etype else ''}) = {_format_value(value)}")
    if a.tensors:
        print("tensors:")
        for name, tname, shape, nbytes in tensors:
            print(f"  {name:40s} {tname:8s} {str(list(shape)):20s} {nbytes}")
    return 0


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def cmd_perplexity(a: argparse.Namespace) -> int:
    llm = _open(a)
    with open(a.file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    res = llm.perplexity(text, n_ctx=a.ctx_size, chunks=a.chunks)
    print(f"scored {res.n_tokens_scored} tokens in {res.n_chunks} chunks of {a.ctx_size}")
    print(res)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from . import bench
    from .models import resolve_model_path
    results = bench.run(resolve_model_path(a.model), n_prompt=a.n_prompt, n_gen=a.n_gen, n_threads=a.threads,
                        reps=a.repetitions, n_gpu_layers=a.gpu_layers)
    print(bench.to_json(results) if a.json else bench.format_table(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Run and quantize GGUF language models.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="continue a prompt")
    _add_model(g); _add_runtime(g); _add_sampling(g)
    g.add_argument("-p", "--prompt", required=True)
    g.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate")
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="interactive chat with the model's chat template")
    _add_model(c); _add_runtime(c); _add_sampling(c)
    c.add_argument("-n", "--n-predict", type=int, default=512, help="max tokens per answer")
    c.add_argument("--system", default=None, help="system prompt")
    c.set_defaults(func=cmd_chat)

    i = sub.add_parser("info", help="describe a GGUF file")
    i.add_argument("model_file", nargs="?", default=None)
    _add_model(i)
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    i.set_defaults(func=cmd_info)

    pp = sub.add_parser("perplexity", help="perplexity of a text file, as llama-perplexity computes it")
    _add_model(pp)
    pp.add_argument("-f", "--file", required=True)
    pp.add_argument("-c", "--ctx-size", type=int, default=512)
    pp.add_argument("-t", "--threads", type=int, default=None)
    pp.add_argument("--chunks", type=int, default=None, help="score only the first N chunks")
    pp.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", type=int, default=None, dest="gpu_layers")
    pp.set_defaults(func=cmd_perplexity)

    b = sub.add_parser("bench", help="speed in llama-bench's form (pp512 / tg128)")
    _add_model(b)
    b.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (0 skips the test)")
    b.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (0 skips the test)")
    b.add_argument("-t", "--threads", type=int, default=None)
    b.add_argument("-r", "--repetitions", type=int, default=5)
    b.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", type=int, default=None, dest="gpu_layers")
    b.add_argument("--json", action="store_true", help="print llama-bench-style JSON")
    b.set_defaults(func=cmd_bench)

    sub.add_parser("quantize", help="requantize a GGUF file (lowbit quantize -h for options)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quantize"]:   # has its own argument parser
        from .quantize import main as quantize_main
        try:
            return quantize_main(argv[1:])
        except (FileNotFoundError, ValueError, _core.LowbitError, OSError) as e:
            print(f"lowbit: error: {e}", file=sys.stderr)
            return 1
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, IsADirectoryError, ValueError, _core.LowbitError, OSError) as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
