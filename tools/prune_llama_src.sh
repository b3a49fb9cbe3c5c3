#!/usr/bin/env bash
# Makes .llama-src/: llama.cpp's sources from the llama-cpp-python sdist, without docs,
# models, tests, the web UI and GPU backends other than CUDA (~22 MB instead of 176 MB),
# so that the device machine (no package registry, 64 MiB per call) can build llama-bench.
#   bash tools/prune_llama_src.sh path/to/llama_cpp_python-X.Y.Z.tar.gz
set -euo pipefail
sdist=$1
tmp=$(mktemp -d)
tar xzf "$sdist" -C "$tmp"
S=$(echo "$tmp"/*/vendor/llama.cpp)
D=.llama-src
rm -rf "$D"; mkdir -p "$D/ggml/src" "$D/tools"
cp -r "$S"/{CMakeLists.txt,cmake,include,src,common,vendor,licenses,LICENSE} "$D/"
cp -r "$S"/ggml/{CMakeLists.txt,cmake,include} "$D/ggml/"
for f in "$S"/ggml/src/*; do
  case $(basename "$f") in ggml-*) [ -f "$f" ] && cp "$f" "$D/ggml/src/";; *) cp -r "$f" "$D/ggml/src/";; esac
done
cp -r "$S"/ggml/src/{ggml-cpu,ggml-cuda,ggml-blas} "$D/ggml/src/"
cp -r "$S"/tools/llama-bench "$D/tools/"
echo 'add_subdirectory(llama-bench)' > "$D/tools/CMakeLists.txt"
rm -rf "$tmp"
du -sh "$D"
