"""The Python API and CLI on the default model: what a user relies on."""
import subprocess
import sys

import numpy as np
import pytest

import lowbit
from lowbit import cli
from lowbit.llm import _StopScanner

PROMPT = "The capital of France is"


def test_greedy_is_deterministic(llm):
    a = llm.generate(PROMPT, max_tokens=16, temperature=0)
    b = llm.generate(PROMPT, max_tokens=16, temperature=0)
    assert a == b and len(a) > 0
    assert "Paris" in a


def test_same_seed_same_output(llm):
    a = llm.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=7)
    b = llm.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=7)
    outs = {llm.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=s) for s in range(5)}
    assert a == b
    assert len(outs) > 1, "different seeds should give different samples"


def test_top_k_one_is_greedy(llm):
    greedy = llm.generate(PROMPT, max_tokens=12, temperature=0)
    assert llm.generate(PROMPT, max_tokens=12, temperature=1.5, top_k=1, seed=3) == greedy


def test_stream_matches_whole(llm):
    whole = llm.generate(PROMPT, max_tokens=20, temperature=0)
    pieces = list(llm.generate(PROMPT, max_tokens=20, temperature=0, stream=True))
    assert "".join(pieces) == whole and len(pieces) > 1


def test_stop_string_ends_and_is_excluded(llm):
    whole = llm.generate(PROMPT, max_tokens=32, temperature=0)
    stop = whole.strip()[3:8]
    out = llm.generate(PROMPT, max_tokens=32, temperature=0, stop=[stop])
    assert stop not in out and whole.startswith(out)


def test_stop_scanner_holds_partial_matches():
    s = _StopScanner(["STOP"])
    assert s.feed("abc ST") == ("abc ", False)
    assert s.feed("O") == ("", False)
    assert s.feed("Xy") == ("STOXy", False)
    assert s.feed("..STOP..") == ("..", True)


def test_max_tokens_respected(llm):
    ids = llm.generate_tokens("Write a long story:", max_tokens=5, temperature=0)
    assert len(ids) == 5


def test_tokenize_roundtrip(llm):
    text = "Hello world, ça va? 東京 🙂"
    assert llm.detokenize(llm.tokenize(text)).decode() == text


def test_logits_shape_and_no_copy(llm):
    toks = llm.tokenize(PROMPT)
    lg = llm.logits(toks)
    assert lg.shape == (len(toks), llm.n_vocab) and lg.dtype == np.float32
    assert not lg.flags.owndata and not lg.flags.writeable
    paris = llm.tokenize(" Paris", add_bos=False)[0]
    assert int(np.argmax(lg[-1])) == paris


def test_logits_batch_equals_incremental(llm):
    """Evaluating a prompt at once or token by token gives (nearly) the same logits."""
    toks = llm.tokenize("The quick brown fox jumps over the lazy dog")
    full = np.array(llm.logits(toks))
    ctx = lowbit._core.Context(llm.model, n_ctx=64, n_threads=2)
    for i, t in enumerate(toks):
        ctx.eval([t])
        step = ctx.logits()[0]
        assert np.argmax(step) == np.argmax(full[i])
        assert np.max(np.abs(step - full[i])) < 1e-2 * (full[i].max() - full[i].min())


def test_chat_uses_template(llm):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = llm.apply_chat_template(msgs)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    reply = llm.chat(msgs, max_tokens=32, temperature=0)
    assert reply.strip() and "<|im" not in reply
    # the reply is the greedy continuation of exactly the rendered prompt
    tokens = llm.tokenize(prompt, add_bos=False, special=True)
    assert reply == llm.generate(tokens, max_tokens=32, temperature=0)


def test_bad_chat_messages(llm):
    with pytest.raises(ValueError):
        llm.chat([{"content": "no role"}])


def test_prompt_longer_than_context(model_path):
    small = lowbit.LLM(model_path, n_ctx=16, n_threads=1)
    with pytest.raises(ValueError, match="longer than the context"):
        small.generate("word " * 40, max_tokens=1)


def test_generation_stops_at_full_context(model_path):
    small = lowbit.LLM(model_path, n_ctx=12, n_threads=1)
    ids = small.generate_tokens("Count: one two three", max_tokens=100, temperature=0)
    assert len(ids) <= 12


def test_invalid_arguments(model_path, llm):
    with pytest.raises(ValueError):
        lowbit.LLM(model_path, n_ctx=-1)
    with pytest.raises(ValueError):
        llm.generate(PROMPT, max_tokens=-1)
    with pytest.raises(ValueError):
        llm.generate("", max_tokens=3)
    with pytest.raises(lowbit.LowbitError):
        llm.logits([llm.n_vocab + 5])


def test_default_gpu_layers_runs_unsupported_models_on_cpu(model_path, monkeypatch):
    """With no -ngl, a CUDA build puts every layer on the GPU only when the GPU runs every
    weight type of the model; otherwise it warns and runs on the CPU (rather than failing
    in the backend).  Without a CUDA device: the CPU, silently."""
    from lowbit import _core
    from lowbit.models import default_gpu_layers

    model = _core.Model(model_path)
    monkeypatch.setattr(_core, "cuda_available", lambda: False)
    assert default_gpu_layers(model) == 0
    monkeypatch.setattr(_core, "cuda_available", lambda: True)
    monkeypatch.setattr(_core, "cuda_unsupported_weight", lambda m: "blk.0.attn_q.weight", raising=False)
    with pytest.warns(RuntimeWarning, match="blk.0.attn_q.weight"):
        assert default_gpu_layers(model) == 0
    monkeypatch.setattr(_core, "cuda_unsupported_weight", lambda m: "", raising=False)
    assert default_gpu_layers(model) == -1


def test_invalid_utf8_prompt(llm):
    out = llm.generate(b"caf\xc3 \xff\xfe ok", max_tokens=4, temperature=0)
    assert isinstance(out, str)


def test_perplexity_format(llm, wikitext_test):
    res = llm.perplexity(wikitext_test[:20000], n_ctx=128, chunks=2)
    assert res.n_chunks == 2 and res.n_tokens_scored == 2 * 63
    assert 1 < res.ppl < 1000 and res.stderr > 0
    assert str(res).startswith("Final estimate: PPL = ")


# ---------------------------------------------------------------- CLI

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True, timeout=300)


def test_cli_generate(model_path):
    r = run_cli("generate", "-m", model_path, "-p", PROMPT, "-n", "8", "--temp", "0", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_cli_info(model_path):
    r = run_cli("info", model_path)
    assert r.returncode == 0, r.stderr
    assert "architecture: llama" in r.stdout and "Q4_1: 210" in r.stdout and "general.name" in r.stdout


def test_cli_errors_are_clean(tmp_path):
    r = run_cli("generate", "-m", str(tmp_path / "missing.gguf"), "-p", "x")
    assert r.returncode == 1 and "model file not found" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 16)
    r = run_cli("info", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_cli_perplexity(model_path, tmp_path, wikitext_test):
    f = tmp_path / "t.txt"
    f.write_text(wikitext_test[:20000])
    r = run_cli("perplexity", "-m", model_path, "-f", str(f), "-c", "128", "--chunks", "2", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("Final estimate: PPL = ")


def test_cli_chat_exit(model_path):
    r = subprocess.run([sys.executable, "-m", "lowbit", "chat", "-m", model_path, "--temp", "0", "-n", "16"],
                       input="Hi!\n/exit\n", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 0


def test_cli_bad_arguments():
    with pytest.raises(SystemExit):
        cli.main(["generate"])   # -p is required


def test_cli_chat_ctrl_c_stops_answer_not_program(model_path):
    import os
    import signal

    # --ignore-eos and a long budget: the answer cannot end on its own before Ctrl-C,
    # however fast the machine; the interrupt is sent once the answer is streaming.
    p = subprocess.Popen([sys.executable, "-u", "-m", "lowbit", "chat", "-m", model_path, "-n", "100000",
                          "-c", "8192", "--ignore-eos", "-t", "1"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write("Write a very long story about a dragon.\n")
        p.stdin.flush()
        seen = ""
        while len(seen) < 2 + 20:                # the "> " prompt, then 20 characters of answer
            ch = p.stdout.read(1)
            assert ch, "chat exited before answering: " + p.stderr.read()
            seen += ch
        os.kill(p.pid, signal.SIGINT)
        p.stdin.write("/exit\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=120)
        out = seen + out
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "[stopped]" in out
