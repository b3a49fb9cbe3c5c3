// amx kernels, compiled with this ISA's flags and registered into the type table.
#include "formats/registry.h"
namespace lowbit {
void register_amx_kernels(TypeTable&) {}
}  // namespace lowbit
