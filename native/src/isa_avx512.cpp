// The kernel bodies compiled for avx512 (flags in CMakeLists.txt).  Include
// nothing but isa_kernels.hpp here; see the note at the top of that header.
#include "isa_kernels.hpp"

namespace dlinfer::isa {
namespace avx512 {
#define DLINFER_ISA_NAME "avx512"
#define DLINFER_VW 16
#define DLINFER_NV 2
#define DLINFER_P 12
#include "isa_microkernels.inc"
}  // namespace avx512

Kernels avx512_kernels() { return avx512::kernels(); }
}  // namespace dlinfer::isa
