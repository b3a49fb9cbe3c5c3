// Run-time CPU feature detection (CPUID + the OS's XSAVE state permission).
#pragma once

#include "formats/registry.h"

namespace lowbit {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512vnni = false, avx512bf16 = false;
    bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();
Isa detect_best_isa();

}  // namespace lowbit
