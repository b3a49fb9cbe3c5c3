#!/usr/bin/env bash
# Run on the device machine: builds lowbit with CUDA, then benchmarks random-weight
# models in llama-bench form: Llama-3-8B shapes on the GPU (-ngl 99) and a
# Llama-3.2-1B shape on the Xeon's CPU (16 threads, AMX vs AVX-512).  Needs .whl/.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
cmake -S . -B /tmp/lowbit-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > /tmp/cmake.log
ninja -C /tmp/lowbit-cuda -j16 > /tmp/ninja.log
export PYTHONPATH=python:/tmp/lowbit-cuda/py:/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
out=${OUT:-/tmp}
for t in ${GPU_TYPES-Q4_0 Q4_K Q8_0 F16}; do
  python3 -m lowbit.tools.random_model --shape llama3-8b --type "$t" --distinct-rows 512 /tmp/m8b.gguf
  python3 -m lowbit bench -m /tmp/m8b.gguf -ngl 99 -p 512 -n 128 -r 3 | tail -n 2 | tee -a "$out/gpu_bench.txt"
  rm -f /tmp/m8b.gguf
done
for t in ${CPU_TYPES-Q8_0 Q4_1}; do
  python3 -m lowbit.tools.random_model --shape llama3.2-1b --type "$t" --distinct-rows 512 /tmp/m1b.gguf
  for isa in avx512 amx; do
    LOWBIT_ISA=$isa python3 -m lowbit bench -m /tmp/m1b.gguf -ngl 0 -p 512 -n 32 -t 16 -r 2 | tail -n 2 | tee -a "$out/cpu_bench.txt"
  done
  rm -f /tmp/m1b.gguf
done
