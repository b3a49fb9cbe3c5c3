#!/usr/bin/env bash
# Build, check and time the CUDA backend in one go (on the GPU machine, or here to
# compile only).  Usage, from the repository root:
#
#   cuda/run_device.sh STAGE...
#
# stages, run in the order given:
#   build      install .whl/ (if present) into /tmp/site, configure + build the working tree with
#              -DLOWBIT_CUDA=ON -DLOWBIT_PYTHON=ON into /tmp/lowbit_build
#   check      bench_gemv --check-only (every kernel, GEMV and tensor-core, against the CPU formats)
#   bench      bench_gemv (checks + copy bandwidth + decode GB/s + prefill TFLOP/s, Llama-3-8B shapes;
#              BENCH_TYPES limits the types, default all)
#   prefill    bench_gemv --prefill-only with each tile shape of the tensor-core kernel
#   pytest     tests/test_cuda.py (kernels + whole model when a model is found)
#   stash-a    keep .models/part_a in /tmp/lowbit_model (the model travels in two calls)
#   join-b     /tmp/lowbit_model/part_a + .models/part_b -> the model; checks its sha256
#   speed      cuda/bench_model.py: GPU prefill/decode speed next to the CPU's
#   sanitize   compute-sanitizer memcheck over kernel checks and a short model forward
#   e2e        `lowbit bench -ngl 99 -p 512 -n 128` on random Llama-3-8B models of E2E_TYPES
#              (default "Q4_0 Q8_0"), each with everything on and with E2E_CONFIGS' switches
#              (default: all off = the pre-graph, pre-tensor-core path; the 8-warp tensor-core tiles)
#   compare    bench/compare_llamacpp.py -ngl 99: lowbit against llama.cpp's llama-bench (a CUDA build,
#              LLAMA_BENCH=path) side by side on random Llama-3-8B models of E2E_TYPES
#              (default "Q4_0 Q4_K_M Q8_0 F16")
#   ab         decode speed of this tree against a base, in one call (machines differ by up to ~5% on the
#              same code, so only same-call comparisons decide): AB_BASE=<tar of the base tree> (make it
#              here with `git archive -o <ignored dir>/base.tar <rev>` and carry it; the device copy's .git
#              is not current), built into /tmp/lowbit_base_build; then `lowbit bench -ngl 99 -p 0 -n 128
#              -r 3` on random Llama-3-8B models of E2E_TYPES (default "Q4_0 Q4_K_M"), AB_ROUNDS rounds
#              (default 2), this tree then the base in each; needs the build stage first
#
# Env: OUT (logs), CORE (above), LOWBIT_CUDA_ARCH (default 90 here; the library default is 80;86;89;90),
# JOBS.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/lowbit_out}
SRC=$ROOT
# CORE=<dir under the root>: build the core (CMakeLists.txt, cpp/, python/) from that snapshot
# (e.g. `git archive HEAD` of it, in an ignored folder) with this tree's cuda/, tests/ and
# tools/, so that other people's unfinished edits of the core cannot break or change the run
[ -n "${CORE:-}" ] && SRC=/tmp/lowbit_src
BUILD=/tmp/lowbit_build
MODEL_DIR=/tmp/lowbit_model
ARCH=${LOWBIT_CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
status=0

export PYTHONPATH="$SRC/python:$BUILD/py${PYTHONPATH:+:$PYTHONPATH}"
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"   # the wheels an earlier build stage installed

for stage in "$@"; do
    echo "===== $stage ($(date +%T))"
    case "$stage" in
    build)
        if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
                "$ROOT"/.whl/*.whl > "$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
            export PYTHONPATH="$PYTHONPATH:/tmp/site"
        fi
        if [ -n "${CORE:-}" ]; then
            rm -rf "$SRC" && mkdir -p "$SRC" &&
                cp -r "$ROOT/$CORE"/CMakeLists.txt "$ROOT/$CORE"/pyproject.toml "$ROOT/$CORE"/cpp "$ROOT/$CORE"/python "$SRC"/ &&
                cp -r "$ROOT"/cuda "$ROOT"/tests "$ROOT"/tools "$SRC"/ && echo "core from $CORE" || { status=1; continue; }
        fi
        PYBIND=$(python3 -m pybind11 --cmakedir 2>/dev/null || true)
        GEN=""; command -v ninja >/dev/null && GEN="-G Ninja"
        cmake -S "$SRC" -B "$BUILD" $GEN -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DLOWBIT_PYTHON=ON \
            -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -Dpybind11_DIR="$PYBIND" -DPython_EXECUTABLE="$(command -v python3)" \
            > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; status=1; continue; }
        grep "lowbit CUDA" "$OUT/cmake.log"
        cmake --build "$BUILD" -j "$JOBS" > "$OUT/build.log" 2>&1 || { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; status=1; continue; }
        grep -iE "spill|warning" "$OUT/build.log" | grep -v "^--" | head -20
        echo "built: $(ls "$BUILD"/py/lowbit/ "$BUILD"/cuda/bench_gemv 2>&1 | tr '\n' ' ')"
        ;;
    check)
        "$BUILD"/cuda/bench_gemv --check-only 2>&1 | tee "$OUT/gemv_check.txt" || status=1
        ;;
    bench)
        nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv 2>&1 | tee "$OUT/gpu.txt"
        "$BUILD"/cuda/bench_gemv ${BENCH_TYPES:+--types $BENCH_TYPES} 2>&1 | tee "$OUT/bench_gemv.txt" || status=1
        ;;
    prefill)
        for tile in auto wide classic; do
            LOWBIT_CUDA_MMA_TILE=$tile "$BUILD"/cuda/bench_gemv --prefill-only ${BENCH_TYPES:+--types $BENCH_TYPES} \
                2>&1 | tee -a "$OUT/bench_prefill.txt" || status=1
        done
        ;;
    stash-a)
        mkdir -p "$MODEL_DIR" && cp "$ROOT"/.models/part_a "$MODEL_DIR"/ && ls -la "$MODEL_DIR"
        ;;
    join-b)
        if [ -f "$MODEL_DIR/part_a" ]; then
            cat "$MODEL_DIR/part_a" "$ROOT/.models/part_b" > "$MODEL_DIR/model.gguf"
            (cd "$MODEL_DIR" && sha256sum model.gguf | cut -d' ' -f1 > got.sha)
            if cmp -s <(cut -d' ' -f1 "$ROOT/.models/model.sha256") "$MODEL_DIR/got.sha"; then
                echo "model joined, sha256 ok"
            else
                echo "model sha256 MISMATCH"; rm -f "$MODEL_DIR/model.gguf"; status=1
            fi
        else
            echo "part_a missing (fresh machine): no whole-model test"; status=1
        fi
        ;;
    pytest)
        export LOWBIT_TEST_MODEL=${LOWBIT_TEST_MODEL:-$MODEL_DIR/model.gguf}
        [ -f "$LOWBIT_TEST_MODEL" ] || unset LOWBIT_TEST_MODEL
        [ -f "$ROOT/.models/text.txt" ] && export LOWBIT_TEST_TEXT="$ROOT/.models/text.txt"
        (cd "$SRC" && python3 -m pytest -q -s -p no:cacheprovider \
            tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.txt") || status=1
        ;;
    sanitize)
        compute-sanitizer --tool memcheck --leak-check no "$BUILD"/cuda/bench_gemv --check-only \
            --types ${SANITIZE_TYPES:-Q4_0,Q4_1,Q8_0,Q6_K,Q3_K,Q5_0,IQ4_NL,F16} 2>&1 | tail -25 | tee "$OUT/sanitize_gemv.txt"
        if [ -f "$MODEL_DIR/model.gguf" ]; then
            (cd "$SRC" && compute-sanitizer --tool memcheck --leak-check no python3 -c "
from lowbit import _core
m = _core.Model('$MODEL_DIR/model.gguf'); t = m.tokenize('The quick brown fox jumps over the lazy dog. ' * 8)
g = _core.CudaLlama(m, 256); a = g.forward(t[:40], 0, 40); b = g.forward([t[40]], 40, 1); c = g.forward(t[41:70], 41, 2)
print('sanitized forward ok', a.shape, b.shape, c.shape)" 2>&1 | tail -15 | tee "$OUT/sanitize_model.txt")
        fi
        ;;
    speed)
        (cd "$SRC" && python3 cuda/bench_model.py "$MODEL_DIR/model.gguf" \
            "$ROOT/.models/text.txt" 2>&1 | tee "$OUT/bench_model.txt") || status=1
        ;;
    e2e)
        nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader
        for t in ${E2E_TYPES:-Q4_0 Q8_0}; do
            python3 -m lowbit.tools.random_model --shape llama3-8b --type "$t" --distinct-rows 512 /tmp/m8b.gguf \
                > /dev/null || { status=1; continue; }
            while read -r name vars; do
                [ -z "$name" ] && continue
                env $vars python3 -m lowbit bench -m /tmp/m8b.gguf -ngl 99 -p 512 -n 128 -r 3 2>&1 | tail -n 2 \
                    | sed "s/^/$name /" | tee -a "$OUT/e2e.txt"
            done <<< "${E2E_CONFIGS:-new LOWBIT_CUDA_GRAPH=1
old LOWBIT_CUDA_GRAPH=0 LOWBIT_CUDA_MMA=0 LOWBIT_CUDA_PDL=0
classic LOWBIT_CUDA_MMA_TILE=classic}"
            rm -f /tmp/m8b.gguf
        done
        ;;
    ab)
        [ -f "${AB_BASE:-}" ] || { echo "ab: AB_BASE must name a tar of the base tree"; status=1; continue; }
        BASE_SRC=/tmp/lowbit_base_src BASE_BUILD=/tmp/lowbit_base_build
        rm -rf "$BASE_SRC" && mkdir -p "$BASE_SRC" && tar -xf "$AB_BASE" -C "$BASE_SRC" || { status=1; continue; }
        PYBIND=$(python3 -m pybind11 --cmakedir 2>/dev/null || true)
        GEN=""; command -v ninja >/dev/null && GEN="-G Ninja"
        { cmake -S "$BASE_SRC" -B "$BASE_BUILD" $GEN -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DLOWBIT_PYTHON=ON \
            -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -Dpybind11_DIR="$PYBIND" -DPython_EXECUTABLE="$(command -v python3)" &&
            cmake --build "$BASE_BUILD" -j "$JOBS"; } > "$OUT/ab_base_build.log" 2>&1 ||
            { tail -20 "$OUT/ab_base_build.log"; status=1; continue; }
        NEW_PATH="$PYTHONPATH"
        BASE_PATH="$BASE_SRC/python:$BASE_BUILD/py${PYTHONPATH:+:$PYTHONPATH}"
        for t in ${E2E_TYPES:-Q4_0 Q4_K_M}; do
            python3 -m lowbit.tools.random_model --shape llama3-8b --type "$t" --distinct-rows 512 /tmp/m8b.gguf \
                > /dev/null || { status=1; continue; }
            for r in $(seq "${AB_ROUNDS:-2}"); do
                for side in new base; do
                    [ $side = new ] && P="$NEW_PATH" || P="$BASE_PATH"
                    res=$(PYTHONPATH="$P" python3 -m lowbit bench -m /tmp/m8b.gguf -ngl 99 -p 0 -n 128 -r 3 2>&1)
                    line=$(grep tg128 <<< "$res" | awk -F'|' -v n="$t round $r $side" '{print n, $(NF-1)}')
                    [ -n "$line" ] && echo "$line" | tee -a "$OUT/ab.txt" || { echo "$t $side: $(tail -1 <<< "$res")"; status=1; }
                done
            done
            rm -f /tmp/m8b.gguf
        done
        ;;
    compare)
        nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader | tee -a "$OUT/compare_cuda.txt"
        for t in ${E2E_TYPES:-Q4_0 Q4_K_M Q8_0 F16}; do
            f=/tmp/m8b-$t.gguf
            python3 -m lowbit.tools.random_model --shape llama3-8b --type "$t" --distinct-rows 512 "$f" > /dev/null \
                || { status=1; continue; }
            (cd "$SRC" && python3 bench/compare_llamacpp.py -ngl 99 -r 3 --llama-bench "$LLAMA_BENCH" -m "$f") 2>&1 \
                | tee -a "$OUT/compare_cuda.txt" || status=1
            rm -f "$f"
        done
        ;;
    *)
        echo "unknown stage $stage"; status=1 ;;
    esac
done
echo "===== done, status $status"
exit $status
