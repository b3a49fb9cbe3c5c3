// K-quants (Q2_K..Q6_K, Q8_K): filled in by the formats work.
#include "formats/registry.h"
namespace lowbit {
void register_kquant_formats(TypeTable&) {}
}  // namespace lowbit
