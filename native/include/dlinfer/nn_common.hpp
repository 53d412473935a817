// Shared pieces of the neural-network kernels: activations and window geometry.
// Plain C++: no Python, raw buffers only.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace dlinfer {

// Fused epilogues.  `alpha` is the negative slope of LeakyRelu.
enum class Activation : int { kNone = 0, kRelu = 1, kLeakyRelu = 2, kSigmoid = 3, kTanh = 4 };

inline Activation parse_activation(const std::string& name) {
  if (name.empty() || name == "none" || name == "linear") return Activation::kNone;
  if (name == "relu") return Activation::kRelu;
  if (name == "leaky_relu") return Activation::kLeakyRelu;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "tanh") return Activation::kTanh;
  throw std::invalid_argument("activation must be one of none, relu, leaky_relu, sigmoid, tanh; got '" +
                              name + "'");
}

inline float activate(float v, Activation act, float alpha) {
  switch (act) {
    case Activation::kRelu: return v > 0.0f ? v : 0.0f;
    case Activation::kLeakyRelu: return v >= 0.0f ? v : v * alpha;
    case Activation::kSigmoid: return 1.0f / (1.0f + std::exp(-v));
    case Activation::kTanh: return std::tanh(v);
    default: return v;
  }
}

// Applies the activation in place to n values (no-op for kNone).
void activate_inplace(float* y, std::size_t n, Activation act, float alpha);

// The geometry every 2-D sliding-window op over an NHWC batch shares
// (convolution, pooling): the input's batch, height and width, the window, its
// strides and pads.  Conv2dShape and Pool2dShape add channels and the rest.
struct Window2d {
  int n = 0, h = 0, w = 0;  // input (N, H, W, channels)
  int kh = 0, kw = 0;       // window
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int out_h = 0, out_w = 0;  // filled in
};

// Output length of a sliding window along one axis, after validating every
// parameter.  `what` names the axis in error messages ("height", "width").
// ceil_mode follows ONNX/PyTorch: the last window may hang over the end, but
// it must start inside the input or the leading pad.
inline int window_out_size(const char* what, int in, int kernel, int stride, int dilation,
                           int pad_before, int pad_after, bool ceil_mode = false) {
  const std::string axis(what);
  if (in < 1) throw std::invalid_argument("input " + axis + " must be >= 1, got " + std::to_string(in));
  if (kernel < 1)
    throw std::invalid_argument("kernel " + axis + " must be >= 1, got " + std::to_string(kernel));
  if (stride < 1)
    throw std::invalid_argument("strides: " + axis + " stride must be >= 1, got " +
                                std::to_string(stride));
  if (dilation < 1)
    throw std::invalid_argument("dilations: " + axis + " dilation must be >= 1, got " +
                                std::to_string(dilation));
  if (pad_before < 0 || pad_after < 0)
    throw std::invalid_argument("padding: " + axis + " pads must be >= 0, got (" +
                                std::to_string(pad_before) + ", " + std::to_string(pad_after) + ")");
  const long effective = static_cast<long>(dilation) * (kernel - 1) + 1;
  const long padded = static_cast<long>(in) + pad_before + pad_after;
  if (effective > padded)
    throw std::invalid_argument("kernel " + axis + " " + std::to_string(effective) +
                                " (dilated) is larger than the padded input " + axis + " " +
                                std::to_string(padded));
  long out = (padded - effective) / stride + 1;
  if (ceil_mode) {
    out = (padded - effective + stride - 1) / stride + 1;
    if ((out - 1) * stride >= static_cast<long>(in) + pad_before) --out;
  }
  return static_cast<int>(out);
}

}  // namespace dlinfer
