// float32 -> IEEE half: the public scalar conversion and the F16C row
// conversion, both rounding to nearest even as NumPy's astype does.
#include <cstdint>

#include "dlinfer/batch.hpp"
#include "dlinfer/cpu_features.hpp"
#include "half.hpp"

#if DLINFER_X86_GNU
#include <immintrin.h>
#endif

namespace dlinfer {

std::uint16_t float_to_half(float f) { return prep::half_from_float(f); }

#if DLINFER_X86_GNU
namespace prep {

// n floats to IEEE half, rounding to nearest even as half_from_float does.
__attribute__((target("avx2,f16c"))) void to_half_f16c(std::uint16_t* d, const float* v,
                                                       std::int64_t n) {
  std::int64_t x = 0;
  for (; x + 8 <= n; x += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + x),
                     _mm256_cvtps_ph(_mm256_loadu_ps(v + x),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; x < n; ++x) d[x] = half_from_float(v[x]);
}

}  // namespace prep
#endif

}  // namespace dlinfer
