// float -> IEEE half, rounding to nearest even (as NumPy's astype does), for
// the portable row paths; inline so their store loops keep it in registers.
#pragma once

#include <cstdint>
#include <cstring>

namespace dlinfer::prep {

// After F. Giesen's float_to_half_fast3_rtne.
inline std::uint16_t half_from_float(float value) {
  std::uint32_t f;
  std::memcpy(&f, &value, 4);
  const std::uint32_t sign = f & 0x80000000u;
  f ^= sign;
  std::uint16_t o;
  if (f >= (127u + 16u) << 23) {  // overflow, Inf or NaN
    o = f > (255u << 23) ? 0x7e00 : 0x7c00;
  } else if (f < (113u << 23)) {  // half subnormal or zero
    // Adding 0.5f aligns the 10 mantissa bits at the bottom; the FPU's
    // round-to-nearest-even does the rounding.
    float v;
    std::memcpy(&v, &f, 4);
    v += 0.5f;
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    o = static_cast<std::uint16_t>(u - 0x3f000000u);
  } else {
    const std::uint32_t mant_odd = (f >> 13) & 1u;
    f += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu;
    f += mant_odd;
    o = static_cast<std::uint16_t>(f >> 13);
  }
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

}  // namespace dlinfer::prep
