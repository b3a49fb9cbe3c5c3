// avx512 kernels, compiled with this ISA's flags and registered into the type table.
#include "formats/registry.h"
namespace lowbit {
void register_avx512_kernels(TypeTable&) {}
}  // namespace lowbit
