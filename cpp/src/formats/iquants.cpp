// IQ4_NL, IQ4_XS: filled in by the formats work.
#include "formats/registry.h"
namespace lowbit {
void register_iquant_formats(TypeTable&) {}
}  // namespace lowbit
