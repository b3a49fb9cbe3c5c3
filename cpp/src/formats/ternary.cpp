// TQ1_0, TQ2_0: filled in by the formats work.
#include "formats/registry.h"
namespace lowbit {
void register_ternary_formats(TypeTable&) {}
}  // namespace lowbit
