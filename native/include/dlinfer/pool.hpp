// 2-D max and average pooling, NHWC float32.
// Plain C++: no Python, raw C-contiguous buffers only.
#pragma once

#include <cstddef>

#include "dlinfer/nn_common.hpp"

namespace dlinfer {

struct Pool2dShape : Window2d {
  int c = 0;  // input (N, H, W, C)
  bool ceil_mode = false;

  std::size_t out_size() const { return static_cast<std::size_t>(n) * out_h * out_w * c; }
};

// Validates (std::invalid_argument naming the argument) and fills out_h/out_w.
void finish_pool2d_shape(Pool2dShape& s);

// Max over the window's taps that fall inside the input (padding never wins).
void max_pool2d_nhwc_f32(const float* x, float* y, const Pool2dShape& s, int threads);
void max_pool2d_nhwc_f32_scalar(const float* x, float* y, const Pool2dShape& s);

// Mean over the window.  The divisor counts the taps inside the input, or
// with count_include_pad also the explicit pads (but never the overhang that
// ceil_mode adds past the trailing pad), as ONNX and PyTorch define it.
void avg_pool2d_nhwc_f32(const float* x, float* y, const Pool2dShape& s, bool count_include_pad,
                         int threads);
void avg_pool2d_nhwc_f32_scalar(const float* x, float* y, const Pool2dShape& s,
                                bool count_include_pad);

}  // namespace dlinfer
