// Image preprocessing kernels.  Plain C++: no Python, raw buffers only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlinfer {

// Per-channel affine normalization of uint8 pixels into float32:
//
//   dst[p, c] = (src[p, c] * scale - mean[c]) / std[c]
//
// evaluated as the fused preprocessing pass (dlinfer/batch.hpp) evaluates it,
// bit for bit: fma(x, float(scale / std[c]), float(-mean[c] / std[c])), see
// native/src/preprocess/affine.hpp.
// `src` and `dst` are C-contiguous with `pixels` rows of `channels` values
// (any NHWC batch flattens to this).  `mean` and `std` hold `channels`
// values each; std must be non-zero.  Throws std::invalid_argument on bad
// parameters.
void normalize_u8_to_f32_nhwc(const std::uint8_t* src, float* dst, std::size_t pixels,
                              int channels, float scale, const float* mean, const float* std,
                              int threads);

// The straightforward loop (same rule, no table, one thread) that the fast
// kernel is tested against.
void normalize_u8_to_f32_nhwc_scalar(const std::uint8_t* src, float* dst, std::size_t pixels,
                                     int channels, float scale, const float* mean,
                                     const float* std);

}  // namespace dlinfer
