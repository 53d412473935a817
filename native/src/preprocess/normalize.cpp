#include "dlinfer/preprocess.hpp"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "affine.hpp"
#include "dlinfer/parallel.hpp"

namespace dlinfer {
namespace {

constexpr int kMaxChannels = 4;

void check_params(int channels, float scale, const float* mean, const float* std) {
  if (channels < 1 || channels > kMaxChannels)
    throw std::invalid_argument("channels must be 1..4, got " + std::to_string(channels));
  if (!std::isfinite(scale)) throw std::invalid_argument("scale must be finite");
  for (int c = 0; c < channels; ++c) {
    if (!std::isfinite(mean[c]))
      throw std::invalid_argument("mean[" + std::to_string(c) + "] must be finite");
    if (!std::isfinite(std[c]) || std[c] == 0.0f)
      throw std::invalid_argument("std[" + std::to_string(c) + "] must be finite and non-zero");
  }
}

// The value of every (channel, byte) pair under the one normalization rule
// (preprocess/affine.hpp), which the fused preprocessing pass applies too.  A
// uint8 input has only 256 values per channel, so the hot loop becomes a
// table lookup.
using Table = std::array<float, 256 * kMaxChannels>;

Table build_table(int channels, float scale, const float* mean, const float* std) {
  Table table{};
  for (int c = 0; c < channels; ++c) {
    const float a = prep::coef_a(scale, std[c]), b = prep::coef_b(mean[c], std[c]);
    for (int v = 0; v < 256; ++v)
      table[c * 256 + v] = prep::normalize_value(static_cast<float>(v), a, b);
  }
  return table;
}

template <int C>
void lookup_rows(const std::uint8_t* src, float* dst, std::size_t begin, std::size_t end,
                 const Table& table) {
  const std::uint8_t* s = src + begin * C;
  float* d = dst + begin * C;
  for (std::size_t p = begin; p < end; ++p, s += C, d += C)
    for (int c = 0; c < C; ++c) d[c] = table[c * 256 + s[c]];
}

}  // namespace

void normalize_u8_to_f32_nhwc(const std::uint8_t* src, float* dst, std::size_t pixels,
                              int channels, float scale, const float* mean, const float* std,
                              int threads) {
  check_params(channels, scale, mean, std);
  const Table table = build_table(channels, scale, mean, std);
  // 64k pixels per thread: below that, thread start-up costs more than the work.
  constexpr std::size_t kGrain = 1 << 16;
  parallel_for(pixels, threads, kGrain, [&](std::size_t begin, std::size_t end) {
    switch (channels) {
      case 1: lookup_rows<1>(src, dst, begin, end, table); break;
      case 2: lookup_rows<2>(src, dst, begin, end, table); break;
      case 3: lookup_rows<3>(src, dst, begin, end, table); break;
      default: lookup_rows<4>(src, dst, begin, end, table); break;
    }
  });
}

void normalize_u8_to_f32_nhwc_scalar(const std::uint8_t* src, float* dst, std::size_t pixels,
                                     int channels, float scale, const float* mean,
                                     const float* std) {
  check_params(channels, scale, mean, std);
  for (std::size_t p = 0; p < pixels; ++p)
    for (int c = 0; c < channels; ++c) {
      const std::size_t i = p * channels + c;
      dst[i] = prep::normalize_value(static_cast<float>(src[i]), prep::coef_a(scale, std[c]),
                                     prep::coef_b(mean[c], std[c]));
    }
}

}  // namespace dlinfer
