#include "dlinfer/pool.hpp"

#include <limits>
#include <stdexcept>
#include <string>

#include "dlinfer/nn_common.hpp"
#include "dlinfer/parallel.hpp"
#include "isa_kernels.hpp"

namespace dlinfer {
namespace {

isa::PoolJob make_job(const float* x, float* y, const Pool2dShape& s, bool count_include_pad) {
  isa::PoolJob j{};
  isa::set_window(j, x, s.h, s.w, s.c, y, s);
  j.pt = s.pad_top;
  j.pl = s.pad_left;
  j.pb = s.pad_bottom;
  j.pr = s.pad_right;
  j.count_include_pad = count_include_pad ? 1 : 0;
  return j;
}

// Rows per thread chunk: a row of a small pooling output is ~1k floats.
constexpr std::size_t kGrain = 8;

}  // namespace

void finish_pool2d_shape(Pool2dShape& s) {
  if (s.n < 1) throw std::invalid_argument("x: batch size must be >= 1, got " + std::to_string(s.n));
  if (s.c < 1) throw std::invalid_argument("x: channel count must be >= 1, got " + std::to_string(s.c));
  // A pad as large as the window would make windows of padding only, whose
  // max is undefined; ONNX and PyTorch forbid it too.
  if (s.pad_top >= s.kh || s.pad_bottom >= s.kh || s.pad_left >= s.kw || s.pad_right >= s.kw)
    throw std::invalid_argument("padding: every pad must be smaller than the pool size");
  s.out_h = window_out_size("height", s.h, s.kh, s.stride_h, 1, s.pad_top, s.pad_bottom, s.ceil_mode);
  s.out_w = window_out_size("width", s.w, s.kw, s.stride_w, 1, s.pad_left, s.pad_right, s.ceil_mode);
}

void max_pool2d_nhwc_f32(const float* x, float* y, const Pool2dShape& s, int threads) {
  const isa::Kernels& k = isa::active();
  const isa::PoolJob j = make_job(x, y, s, false);
  parallel_for(static_cast<std::size_t>(s.n) * s.out_h, threads, kGrain,
               [&](std::size_t b, std::size_t e) { k.max_pool_rows(j, b, e); });
}

void avg_pool2d_nhwc_f32(const float* x, float* y, const Pool2dShape& s, bool count_include_pad,
                         int threads) {
  const isa::Kernels& k = isa::active();
  const isa::PoolJob j = make_job(x, y, s, count_include_pad);
  parallel_for(static_cast<std::size_t>(s.n) * s.out_h, threads, kGrain,
               [&](std::size_t b, std::size_t e) { k.avg_pool_rows(j, b, e); });
}

// ---- scalar oracles: one output element at a time, every tap checked ----

namespace {

template <typename Fn>
void for_each_window(const Pool2dShape& s, Fn&& fn) {
  for (int n = 0; n < s.n; ++n)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int c = 0; c < s.c; ++c) fn(n, oy, ox, c);
}

}  // namespace

void max_pool2d_nhwc_f32_scalar(const float* x, float* y, const Pool2dShape& s) {
  for_each_window(s, [&](int n, int oy, int ox, int c) {
    float m = -std::numeric_limits<float>::infinity();
    for (int ky = 0; ky < s.kh; ++ky)
      for (int kx = 0; kx < s.kw; ++kx) {
        const int iy = oy * s.stride_h + ky - s.pad_top, ix = ox * s.stride_w + kx - s.pad_left;
        if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
        const float v = x[((static_cast<std::size_t>(n) * s.h + iy) * s.w + ix) * s.c + c];
        m = v > m ? v : m;
      }
    y[((static_cast<std::size_t>(n) * s.out_h + oy) * s.out_w + ox) * s.c + c] = m;
  });
}

void avg_pool2d_nhwc_f32_scalar(const float* x, float* y, const Pool2dShape& s,
                                bool count_include_pad) {
  for_each_window(s, [&](int n, int oy, int ox, int c) {
    float sum = 0.0f;
    int inside = 0, counted = 0;
    for (int ky = 0; ky < s.kh; ++ky)
      for (int kx = 0; kx < s.kw; ++kx) {
        const int iy = oy * s.stride_h + ky - s.pad_top, ix = ox * s.stride_w + kx - s.pad_left;
        if (iy < s.h + s.pad_bottom && ix < s.w + s.pad_right) ++counted;
        if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
        sum += x[((static_cast<std::size_t>(n) * s.h + iy) * s.w + ix) * s.c + c];
        ++inside;
      }
    y[((static_cast<std::size_t>(n) * s.out_h + oy) * s.out_w + ox) * s.c + c] =
        sum / static_cast<float>(count_include_pad ? counted : inside);
  });
}

}  // namespace dlinfer
