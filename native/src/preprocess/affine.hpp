// The one normalization rule of the native code, shared by the fused
// preprocessing pass (preprocess_batch_u8, every row path) and
// normalize_u8_to_f32_nhwc, so that a model fed by either sees the same bits:
//
//   out = fma(x, a[c], b[c]),  a[c] = float(scale / std[c]),
//                              b[c] = float(-mean[c] / std[c])
//
// a and b are computed in double and rounded once to float; the fused
// multiply-add rounds once more.  x is the source value as float: a byte where
// the output pixel is a source pixel (same size, or nearest), else the
// interpolated value.  The letterbox border is the value a pixel equal to
// `pad` would get.
//
// The vector paths compute the same expression: _mm256_fmadd_ps(x, a, b) in
// the streamed store, and, in the fused and gathered passes, which fold a[c]
// into the interpolation weights (weight * gain rounded once), an FMA chain
// starting from b[c] that for a single tap of weight 1 is fma(a[c], x, b[c]).
// The result differs from the exactly rounded (x * scale - mean) / std by the
// roundings of a and b: at most about 2^-23 * (|x * a| + |b|).
#pragma once

#include <cmath>

#include "dlinfer/batch.hpp"

namespace dlinfer::prep {

// scale / std in double: a before rounding, and what the resampling passes
// multiply into their interpolation weights.
inline double gain(float scale, float std) { return static_cast<double>(scale) / std; }
inline double gain(const PreprocessParams& p, int c) { return gain(p.scale, p.std[c]); }

inline float coef_a(float scale, float std) { return static_cast<float>(gain(scale, std)); }
inline float coef_b(float mean, float std) {
  return static_cast<float>(-static_cast<double>(mean) / std);
}

// The per-value formula.
inline float normalize_value(float x, float a, float b) { return std::fma(x, a, b); }

// The fused pass's coefficients per output channel, and its border value.
struct Affine {
  float a[3], b[3], pad[3];
};

inline Affine affine(const PreprocessParams& p) {
  Affine af;
  for (int c = 0; c < 3; ++c) {
    af.a[c] = coef_a(p.scale, p.std[c]);
    af.b[c] = coef_b(p.mean[c], p.std[c]);
    af.pad[c] = normalize_value(p.pad, af.a[c], af.b[c]);
  }
  return af;
}

}  // namespace dlinfer::prep
