#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for $1 seconds (default 60).
# Every input in regressions/ (crashes ever found) is replayed first; the committed
# corpus seeds the search, and new inputs go to a scratch folder unless
# LOWBIT_FUZZ_KEEP=1 (then they are added to the corpus, for a developer to commit).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
if ! command -v clang++ >/dev/null; then
  apt-get update -qq && apt-get install -y -qq clang >/dev/null
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOWBIT_PYTHON=OFF -DLOWBIT_FUZZ=ON > build-fuzz.log
cmake --build build-fuzz -j2 >> build-fuzz.log
export LOWBIT_FUZZ_MODEL=$(python -c "from lowbit.models import default_model_path; print(default_model_path())")
for target in fuzz_gguf fuzz_tokenizer; do
  corpus=tests/fuzz/corpus/$target
  regress=tests/fuzz/regressions/$target
  mkdir -p "$corpus" "$regress"
  mapfile -t crashes < <(find "$regress" -type f ! -name .keep)
  if [ ${#crashes[@]} -gt 0 ]; then
    ./build-fuzz/$target -runs=0 "${crashes[@]}" >/dev/null 2>&1 || { ./build-fuzz/$target "${crashes[@]}"; exit 1; }
  fi
  if [ "${LOWBIT_FUZZ_KEEP:-0}" = 1 ]; then out=$corpus; else out=$(mktemp -d); fi
  echo "fuzzing $target for ${secs}s"
  ./build-fuzz/$target -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
      -artifact_prefix="$regress/" -print_final_stats=1 "$out" "$corpus" 2>&1 | tail -n 12
done
echo "fuzzing: no crashes"
