// 2-D max and average pooling, NHWC float32.
// Plain C++: no Python, raw C-contiguous buffers only.
#pragma once

#include <cstddef>

namespace dlinfer {

struct Pool2dShape {
  int n = 0, h = 0, w = 0, c = 0;
  int kh = 0, kw = 0;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  bool ceil_mode = false;
  int out_h = 0, out_w = 0;  // filled in

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
