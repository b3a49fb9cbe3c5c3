"""Memory a user can see: a model is not resident twice once its weights are repacked for
the AVX-512 kernels, and the KV cache occupies memory only for the positions in use."""
import json
import os
import subprocess
import sys

import pytest

from lowbit import _core

CHILD = r"""
import json, sys
import lowbit

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssFile", "RssAnon"):
                out[key] = int(line.split()[1]) * 1024
    return out

before = status()
llm = lowbit.LLM(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=1)
llm.generate("The capital of France is", max_tokens=8, temperature=0)
after = status()
print(json.dumps({"before": before, "after": after}))
"""


def run_child(model_path, n_ctx):
    out = subprocess.run([sys.executable, "-c", CHILD, model_path, str(n_ctx)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_packed_model_is_not_resident_twice(model_path):
    if _core.detected_isa() not in ("avx512", "amx"):
        pytest.skip("weights are repacked only for the AVX-512 kernels; this CPU keeps the mapped ones")
    m = run_child(model_path, 256)
    size = os.path.getsize(model_path)
    file_pages = m["after"]["RssFile"] - m["before"]["RssFile"]
    # the packed copies replace the mapping: only embedding rows and small tensors stay
    assert file_pages < 0.2 * size, f"{file_pages / 2**20:.1f} MiB of the {size / 2**20:.1f} MiB file still resident"


def thp_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
@pytest.mark.skipif(thp_always(), reason="transparent huge pages ('always') back first touches with 2 MiB pages")
def test_kv_cache_is_touched_only_where_used(model_path):
    small, large = run_child(model_path, 512), run_child(model_path, 8192)
    grown = large["after"]["RssAnon"] - small["after"]["RssAnon"]
    # SmolLM2-135M: 30 layers x 192 values x 2 bytes per position for keys and for values;
    # 7680 more positions would be 170 MiB of cache if all of it were touched.  Values are
    # touched only where written; keys are stored transposed (a row per component), so a
    # short run touches one page of each row.
    per_position = 30 * 192 * 2
    assert grown < 0.6 * 2 * per_position * (8192 - 512), f"grew by {grown / 2**20:.1f} MiB"
