// 2-D convolution and transposed convolution, NHWC float32.
// Plain C++: no Python, raw C-contiguous buffers only.
#pragma once

#include <cstddef>

#include "dlinfer/nn_common.hpp"

namespace dlinfer {

// Geometry of a 2-D convolution.  Fill in the fields, then call
// finish_conv2d_shape (or finish_conv2d_transpose_shape), which validates
// every field and fills in the output size.
struct Conv2dShape : Window2d {
  int cin = 0, cout = 0;  // x is (N, H, W, Cin), w (KH, KW, Cin/groups, Cout)
  int dil_h = 1, dil_w = 1;
  int groups = 1;

  int cin_g() const { return cin / groups; }
  int cout_g() const { return cout / groups; }
  std::size_t out_size() const {
    return static_cast<std::size_t>(n) * out_h * out_w * cout;
  }
};

// Validates the geometry (throws std::invalid_argument naming the argument)
// and computes out_h/out_w.
void finish_conv2d_shape(Conv2dShape& s);

// y[n, oy, ox, co] = act(bias[co] + sum_{ky, kx, ci} x[n, oy*sh + ky*dh - pt,
//                        ox*sw + kx*dw - pl, g*cin_g + ci] * w[ky, kx, ci, co])
// with g = co / cout_g and zero padding.  w is in Keras layout
// (KH, KW, Cin/groups, Cout); bias may be null.  Each output element is summed
// in the fixed order (ky, kx, ci) by exactly one thread, so the result is the
// same for every thread count.
void conv2d_nhwc_f32(const float* x, const float* w, const float* bias, float* y,
                     const Conv2dShape& s, Activation act, float alpha, int threads);

// The plain nested loop that conv2d_nhwc_f32 is tested against.
void conv2d_nhwc_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                            const Conv2dShape& s, Activation act, float alpha);

// Transposed convolution (the gradient of conv2d with respect to its input).
// s describes the *transposed* op: n/h/w/cin is the input, out_h/out_w the
// output, pads crop the full output ((H-1)*stride + dil*(K-1) + 1 + output
// padding).  Construct with finish_conv2d_transpose_shape.  w is
// (KH, KW, Cin, Cout/groups).
void finish_conv2d_transpose_shape(Conv2dShape& s, int output_pad_h, int output_pad_w);

void conv2d_transpose_nhwc_f32(const float* x, const float* w, const float* bias, float* y,
                               const Conv2dShape& s, Activation act, float alpha, int threads);

void conv2d_transpose_nhwc_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                                      const Conv2dShape& s, Activation act, float alpha);

// Which instruction set the fast kernels use: "avx512", "avx2" or "generic".
// set_kernel_isa("auto") restores the runtime choice; a request the CPU
// cannot run throws std::invalid_argument.
const char* kernel_isa();
void set_kernel_isa(const char* isa);

}  // namespace dlinfer
