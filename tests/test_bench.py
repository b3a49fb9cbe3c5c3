"""`lowbit bench` in llama-bench's form: the table, -p 0 / -n 0, --json field names, and the
random-weight model maker it is used with.  (Speeds themselves are measured by
bench/compare_llamacpp.py, never asserted here.)"""
import json

import pytest

from lowbit import _core, cli
from lowbit.tools import random_model


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    paths = {}
    for t in ("Q8_0", "Q5_K_S"):   # a type, and a mix of llama.cpp's (with its fallbacks)
        paths[t] = str(d / f"small-{t}.gguf")
        random_model.make(paths[t], "small", t, seed=2)
    return paths


def bench_json(capsys, *args):
    assert cli.main(["bench", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_llama_bench_fields(small_models, capsys):
    rows = bench_json(capsys, "-m", small_models["Q8_0"], "-p", "16", "-n", "4", "-r", "2", "-t", "1")
    assert [(r["n_prompt"], r["n_gen"]) for r in rows] == [(16, 0), (0, 4)]
    for r in rows:
        assert r["n_threads"] == 1
        assert len(r["samples_ts"]) == 2 and all(s > 0 for s in r["samples_ts"])
        assert r["avg_ts"] == pytest.approx(sum(r["samples_ts"]) / 2)
        assert r["stddev_ts"] >= 0
        assert r["model_type"] == "llama 2M Q8_0"
        assert r["model_n_params"] > 0 and r["model_size"] > 0


@pytest.mark.parametrize("args, tests", [(["-p", "0", "-n", "3"], ["tg3"]), (["-p", "8", "-n", "0"], ["pp8"])])
def test_zero_skips_a_test(small_models, capsys, args, tests):
    rows = bench_json(capsys, "-m", small_models["Q8_0"], *args, "-r", "1", "-t", "1")
    assert [r["test"] for r in rows] == tests


def test_table_names_the_mix(small_models, capsys):
    assert cli.main(["bench", "-m", small_models["Q5_K_S"], "-p", "8", "-n", "2", "-r", "1", "-t", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("|")[1].strip() == "model" and "t/s" in lines[0]
    assert len(lines) == 4   # header, rule, pp8, tg2
    assert [ln.split("|")[6].strip() for ln in lines[2:]] == ["pp8", "tg2"]
    assert all("Q5_K_S" in ln for ln in lines[2:])


def test_bad_arguments_are_errors(small_models, capsys):
    for args in (["-r", "0"], ["-p", "-1"]):
        assert cli.main(["bench", "-m", small_models["Q8_0"], *args]) != 0
        err = capsys.readouterr().err
        assert "error" in err and "Traceback" not in err


def test_random_model_mix_types(small_models):
    """A mix name gives llama.cpp's per-tensor choices (Q5_K_S: Q5_K, with Q6_K for output),
    recorded as the file's general.file_type."""
    model = _core.Model(small_models["Q5_K_S"])
    types = {name: t for name, t, _, _ in model.tensors()}
    assert types["blk.0.ffn_down.weight"] == "Q5_K"
    assert types["output.weight"] == "Q6_K"
    from lowbit.quantize import file_type_name
    assert file_type_name(small_models["Q5_K_S"]) == "Q5_K_S"
    assert file_type_name(small_models["Q8_0"]) is None


def test_random_model_rejects_unknown_type(tmp_path):
    with pytest.raises(SystemExit):
        random_model.main([str(tmp_path / "x.gguf"), "--shape", "tiny", "--type", "Q9_X"])
    assert not (tmp_path / "x.gguf").exists()


def test_profile_table_at_exit(small_models):
    """LOWBIT_PROFILE=1: where a forward pass goes, per phase, printed when the process exits."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, LOWBIT_PROFILE="1")
    cmd = [sys.executable, "-m", "lowbit", "bench", "-m", small_models["Q8_0"], "-p", "0", "-n", "3", "-r", "1", "-t", "2"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    head = [ln for ln in lines if ln.startswith("lowbit profile:")]
    assert len(head) == 1 and "forward calls" in head[0]
    phases = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("  ") and not ln.strip().startswith("phase")}
    for name in ("q/k/v", "attention", "wo", "gate/up", "down", "output"):
        assert name in phases, out.stderr
    assert len(phases["gate/up"]) == 4 and float(phases["gate/up"][3]) > 0   # us/call, share, GB/s
    env.pop("LOWBIT_PROFILE")
    quiet = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "lowbit profile" not in quiet.stderr
