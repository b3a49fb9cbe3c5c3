// Python bindings of the CUDA backend, added to lowbit._core by python/lowbit/_core.cpp
// (under #ifdef LOWBIT_CUDA) with lowbit::cuda::bind(m).
#pragma once

#include <pybind11/pybind11.h>

namespace lowbit::cuda {

void bind(pybind11::module_& m);

}  // namespace lowbit::cuda
