#!/usr/bin/env bash
# One device call for the CPU side (the device's Xeon: 16 cores, AVX-512 VNNI, AMX):
#   1. builds lowbit and a native llama-bench (from .llama-src/, see tools/prune_llama_src.sh);
#   2. runs the kernel, format and fast-path tests there (the AMX tests included);
#   3. compares lowbit with llama-bench side by side on Llama-3.2-1B-shaped random models,
#      16 threads, pp512 / tg128 (the CPU-speed issue's device targets), then lowbit's pp512
#      again with LOWBIT_ISA=avx512 (the packed VNNI kernels instead of AMX tiles).
# Carry .whl (pybind11, gguf, pytest and their needs) and .llama-src.  Everything it prints
# is also written under $OUT.
#   bash tools/device_cpu_compare.sh            (TYPES="Q4_0 Q8_0 Q4_K_M F16" THREADS=16 REPS=3)
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log() { tee -a "$out/device_cpu.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
(cmake -S . -B /tmp/lowbit-build -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
   > /tmp/cmake.log && ninja -C /tmp/lowbit-build -j16 > /tmp/ninja.log) &
lowbit_build=$!
bench=$(bash tools/build_llama_bench.sh /tmp/llama-bench-build) || { echo "llama-bench build failed" | log; exit 1; }
wait $lowbit_build || { tail -20 /tmp/ninja.log | log; exit 1; }
export PYTHONPATH=python:/tmp/lowbit-build/py:/tmp/site
{ grep -o -w 'amx_tile\|amx_int8\|amx_bf16\|avx512_vnni' /proc/cpuinfo | sort | uniq -c
  python3 -c "from lowbit import _core; print('detected ISA:', _core.detected_isa())"; } | log
python3 -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py tests/test_formats.py tests/test_ops.py 2>&1 | tail -40 | log
models=()
for t in ${TYPES:-Q4_0 Q8_0 Q4_K_M F16}; do
  f=/tmp/r1b-$t.gguf
  python3 -m lowbit.tools.random_model --shape llama3.2-1b --type "$t" --distinct-rows 256 "$f" && models+=("$f")
done
python3 bench/compare_llamacpp.py -t "${THREADS:-16}" -r "${REPS:-3}" --llama-bench "$bench" -m "${models[@]}" 2>&1 | log
# prompt processing without the AMX tiles (LOWBIT_ISA=avx512: the packed VNNI kernels), same files
for f in "${models[@]}"; do
  LOWBIT_ISA=avx512 python3 -m lowbit bench -m "$f" -p 512 -n 0 -r "${REPS:-3}" -t "${THREADS:-16}" 2>&1 | tail -n 1 | log
done
