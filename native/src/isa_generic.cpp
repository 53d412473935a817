// The kernel bodies compiled for generic (flags in CMakeLists.txt).  Include
// nothing but isa_kernels.hpp here; see the note at the top of that header.
#include "isa_kernels.hpp"

namespace dlinfer::isa {
namespace generic {
#define DLINFER_ISA_NAME "generic"
#define DLINFER_VW 4
#define DLINFER_NV 4
#define DLINFER_P 2
#include "isa_microkernels.inc"
}  // namespace generic

Kernels generic_kernels() { return generic::kernels(); }
}  // namespace dlinfer::isa
