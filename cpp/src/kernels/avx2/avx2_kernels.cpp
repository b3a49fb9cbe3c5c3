// AVX2 (+FMA, F16C) dot kernels, registered into the type table's Isa::Avx2 slots when
// the CPU has them.  The kernels themselves live in dots256.h, shared with the AVX-512
// build.
#include "cpu_features.h"
#include "formats/registry.h"
#include "kernels/avx2/dots256.h"

namespace lowbit {

void register_avx2_kernels(TypeTable& t) {
    if (int(detect_best_isa()) < int(Isa::Avx2)) return;   // never hand out kernels the CPU lacks
    fill_256bit_kernels(t, Isa::Avx2);
}

}  // namespace lowbit
