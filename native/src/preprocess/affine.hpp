// The normalization of the fused pass: out = x * a[c] + b[c], with a and b
// from double so the only float rounding is in the multiply-add.
#pragma once

#include "dlinfer/batch.hpp"

namespace dlinfer::prep {

struct Affine {
  float a[3], b[3], pad[3];
};

// scale / std[c] in double: what the resampling passes fold into their weights.
inline double gain(const PreprocessParams& p, int c) {
  return static_cast<double>(p.scale) / p.std[c];
}

inline Affine affine(const PreprocessParams& p) {
  Affine af;
  for (int c = 0; c < 3; ++c) {
    const double sd = p.std[c], mn = p.mean[c];
    af.a[c] = static_cast<float>(p.scale / sd);
    af.b[c] = static_cast<float>(-mn / sd);
    af.pad[c] = static_cast<float>((static_cast<double>(p.pad) * p.scale - mn) / sd);
  }
  return af;
}

}  // namespace dlinfer::prep
