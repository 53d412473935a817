// The kernel bodies compiled for avx2 (flags in CMakeLists.txt).  Include
// nothing but isa_kernels.hpp here; see the note at the top of that header.
#include "isa_kernels.hpp"

namespace dlinfer::isa {
namespace avx2 {
#define DLINFER_ISA_NAME "avx2"
#define DLINFER_VW 8
#define DLINFER_NV 2
#define DLINFER_P 6
#include "isa_microkernels.inc"
}  // namespace avx2

Kernels avx2_kernels() { return avx2::kernels(); }
}  // namespace dlinfer::isa
