#include "dlinfer/cpu_features.hpp"

namespace dlinfer {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if DLINFER_X86_GNU
  // libgcc's (and compiler-rt's) checks include the OS's XSAVE support of the
  // wider registers, not only the CPUID bits.
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.f16c = f.avx2 && __builtin_cpu_supports("f16c");
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
