#!/usr/bin/env bash
# Run on the device machine (Intel Xeon with AMX, 16 cores): builds the CPU core and runs
# the kernel and format tests there, the AMX ones included.  Needs the wheels in .whl/
# (see device/README: pybind11, gguf, pytest and their needs) carried with the call.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
cmake -S . -B /tmp/lowbit-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" > /tmp/cmake.log
ninja -C /tmp/lowbit-build -j16 > /tmp/ninja.log
export PYTHONPATH=python:/tmp/lowbit-build/py:/tmp/site
grep -o -w 'amx_tile\|amx_int8\|amx_bf16\|avx512_vnni' /proc/cpuinfo | sort | uniq -c
python3 -c "from lowbit import _core; print('detected ISA:', _core.detected_isa())"
python3 -m pytest -q -p no:cacheprovider -rs tests/test_kernels.py tests/test_formats.py "$@"
