#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from a pruned copy of the llama.cpp sources that the
# llama-cpp-python source distribution vendors (made by tools/prune_llama_src.sh into
# .llama-src/, git-ignored, ~22 MB: small enough to carry to the device machine).
#   bash tools/build_llama_bench.sh [BUILD_DIR] [extra cmake args, e.g. -DGGML_CUDA=ON]
set -euo pipefail
src=${LLAMA_SRC:-.llama-src}
build=${1:-/tmp/llama-bench-build}
shift || true
cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF "$@" > "$build.cmake.log" 2>&1 \
  || { tail -30 "$build.cmake.log"; exit 1; }
ninja -C "$build" llama-bench > "$build.ninja.log" 2>&1 || { tail -30 "$build.ninja.log"; exit 1; }
echo "$build/bin/llama-bench"
