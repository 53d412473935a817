// Dense layers, softmax and inference-mode batch normalization, float32.
// Plain C++: no Python, raw C-contiguous buffers only.
#pragma once

#include <cstddef>

#include "dlinfer/nn_common.hpp"

namespace dlinfer {

// y[r, o] = act(bias[o] + sum_k x[r, k] * w[k, o]) for `rows` rows; w is
// (in, out) as Keras stores it, bias may be null.  Summed in the fixed order
// k = 0..in-1 by one thread per output, so identical for every thread count.
void dense_f32(const float* x, const float* w, const float* bias, float* y, std::size_t rows,
               int in, int out, Activation act, float alpha, int threads);
void dense_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                      std::size_t rows, int in, int out, Activation act, float alpha);

// Softmax over the last axis of a (rows, cols) buffer, max-subtracted.
void softmax_f32(const float* x, float* y, std::size_t rows, int cols, int threads);
void softmax_f32_scalar(const float* x, float* y, std::size_t rows, int cols);

// y[o, c, i] = (x[o, c, i] - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c]
// on a buffer viewed as (outer, channels, inner): NHWC is (N*H*W, C, 1), NCHW
// is (N, C, H*W).
void batch_norm_f32(const float* x, float* y, std::size_t outer, int channels, std::size_t inner,
                    const float* gamma, const float* beta, const float* mean, const float* var,
                    float eps, int threads);
void batch_norm_f32_scalar(const float* x, float* y, std::size_t outer, int channels,
                           std::size_t inner, const float* gamma, const float* beta,
                           const float* mean, const float* var, float eps);

}  // namespace dlinfer
