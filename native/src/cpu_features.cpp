#include "dlinfer/cpu_features.hpp"

#if DLINFER_X86_GNU
#include <cpuid.h>
#endif

namespace dlinfer {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if DLINFER_X86_GNU
  // libgcc's (and compiler-rt's) checks include the OS's XSAVE support of the
  // wider registers, not only the CPUID bits.
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // F16C from CPUID leaf 1 (ECX bit 29): Clang before 16 has no "f16c" for
  // __builtin_cpu_supports.  Its YMM forms need the OS support that avx2
  // above already checked.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  f.f16c = f.avx2 && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f");
  f.avx512_vbmi = f.avx512 && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512vbmi");
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace dlinfer
