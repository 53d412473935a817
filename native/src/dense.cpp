#include "dlinfer/dense.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "dlinfer/conv2d.hpp"
#include "dlinfer/parallel.hpp"

namespace dlinfer {

void dense_f32(const float* x, const float* w, const float* bias, float* y, std::size_t rows,
               int in, int out, Activation act, float alpha, int threads) {
  // A dense layer is a 1x1 convolution over a 1 x rows "image": the conv
  // microkernel's register tiles then span several rows of x at once.
  if (rows > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument("x: too many rows for dense");
  Conv2dShape s;
  s.n = 1;
  s.h = 1;
  s.w = static_cast<int>(rows);
  s.cin = in;
  s.kh = s.kw = 1;
  s.cout = out;
  finish_conv2d_shape(s);
  conv2d_nhwc_f32(x, w, bias, y, s, act, alpha, threads);
}

void dense_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                      std::size_t rows, int in, int out, Activation act, float alpha) {
  for (std::size_t r = 0; r < rows; ++r)
    for (int o = 0; o < out; ++o) {
      float acc = 0.0f;
      for (int k = 0; k < in; ++k) acc += x[r * in + k] * w[static_cast<std::size_t>(k) * out + o];
      if (bias) acc += bias[o];
      y[r * out + o] = activate(acc, act, alpha);
    }
}

namespace {

void softmax_rows(const float* x, float* y, std::size_t begin, std::size_t end, int cols) {
  for (std::size_t r = begin; r < end; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = xr[0];
    for (int i = 1; i < cols; ++i) m = xr[i] > m ? xr[i] : m;
    float sum = 0.0f;
    for (int i = 0; i < cols; ++i) {
      yr[i] = std::exp(xr[i] - m);
      sum += yr[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < cols; ++i) yr[i] *= inv;
  }
}

}  // namespace

void softmax_f32(const float* x, float* y, std::size_t rows, int cols, int threads) {
  if (cols < 1) throw std::invalid_argument("x: the softmax axis must not be empty");
  parallel_for(rows, threads, 256, [&](std::size_t b, std::size_t e) { softmax_rows(x, y, b, e, cols); });
}

void softmax_f32_scalar(const float* x, float* y, std::size_t rows, int cols) {
  if (cols < 1) throw std::invalid_argument("x: the softmax axis must not be empty");
  for (std::size_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
    for (int i = 0; i < cols; ++i) m = std::max<double>(m, x[r * cols + i]);
    for (int i = 0; i < cols; ++i) sum += std::exp(x[r * cols + i] - m);
    for (int i = 0; i < cols; ++i) y[r * cols + i] = static_cast<float>(std::exp(x[r * cols + i] - m) / sum);
  }
}

namespace {

void check_bn(int channels, const float* var, float eps) {
  if (channels < 1) throw std::invalid_argument("x: channel count must be >= 1");
  if (!(eps >= 0.0f)) throw std::invalid_argument("epsilon must be >= 0");
  for (int c = 0; c < channels; ++c)
    if (!(var[c] + eps > 0.0f))
      throw std::invalid_argument("var[" + std::to_string(c) + "] + epsilon must be > 0");
}

}  // namespace

void batch_norm_f32(const float* x, float* y, std::size_t outer, int channels, std::size_t inner,
                    const float* gamma, const float* beta, const float* mean, const float* var,
                    float eps, int threads) {
  check_bn(channels, var, eps);
  // Folded once per channel in double: y = x * scale + shift.
  std::vector<float> scale(channels), shift(channels);
  for (int c = 0; c < channels; ++c) {
    const double sc = static_cast<double>(gamma[c]) / std::sqrt(static_cast<double>(var[c]) + eps);
    scale[c] = static_cast<float>(sc);
    shift[c] = static_cast<float>(beta[c] - mean[c] * sc);
  }
  parallel_for(outer, threads, 64, [&](std::size_t b, std::size_t e) {
    for (std::size_t o = b; o < e; ++o)
      for (int c = 0; c < channels; ++c) {
        const std::size_t base = (o * channels + c) * inner;
        const float sc = scale[c], sh = shift[c];
        for (std::size_t i = 0; i < inner; ++i) y[base + i] = x[base + i] * sc + sh;
      }
  });
}

void batch_norm_f32_scalar(const float* x, float* y, std::size_t outer, int channels,
                           std::size_t inner, const float* gamma, const float* beta,
                           const float* mean, const float* var, float eps) {
  check_bn(channels, var, eps);
  for (std::size_t o = 0; o < outer; ++o)
    for (int c = 0; c < channels; ++c)
      for (std::size_t i = 0; i < inner; ++i) {
        const std::size_t k = (o * channels + c) * inner + i;
        y[k] = (x[k] - mean[c]) / std::sqrt(var[c] + eps) * gamma[c] + beta[c];
      }
}

}  // namespace dlinfer
