// MXFP4: filled in by the formats work.
#include "formats/registry.h"
namespace lowbit {
void register_mxfp4_format(TypeTable&) {}
}  // namespace lowbit
