#include "dlinfer/conv2d.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "dlinfer/parallel.hpp"
#include "isa_kernels.hpp"

namespace dlinfer {

void activate_inplace(float* y, std::size_t n, Activation act, float alpha) {
  if (act == Activation::kNone) return;
  if (act == Activation::kRelu) {
    for (std::size_t i = 0; i < n; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    return;
  }
  for (std::size_t i = 0; i < n; ++i) y[i] = activate(y[i], act, alpha);
}

namespace {

void check_common(const Conv2dShape& s) {
  auto positive = [](int v, const char* what) {
    if (v < 1) throw std::invalid_argument(std::string(what) + " must be >= 1, got " + std::to_string(v));
  };
  positive(s.n, "x: batch size");
  positive(s.cin, "x: channel count");
  positive(s.cout, "w: output channel count");
  positive(s.groups, "groups");
  if (s.cin % s.groups != 0)
    throw std::invalid_argument("groups: input channels " + std::to_string(s.cin) +
                                " are not divisible by groups " + std::to_string(s.groups));
  if (s.cout % s.groups != 0)
    throw std::invalid_argument("groups: output channels " + std::to_string(s.cout) +
                                " are not divisible by groups " + std::to_string(s.groups));
}

// The input coordinate that output coordinate `o` reads through tap `k` along
// one axis, or -1 where the tap lands in the padding.  The transposed op reads
// its input backwards: only taps that land on a whole multiple of the stride
// touch an input pixel.
template <bool Transposed>
int input_coord(int o, int k, int stride, int dil, int pad, int in) {
  if constexpr (Transposed) {
    const int t = o + pad - k * dil;
    if (t < 0 || t % stride) return -1;
    const int i = t / stride;
    return i < in ? i : -1;
  } else {
    const int i = o * stride + k * dil - pad;
    return i >= 0 && i < in ? i : -1;
  }
}

// Calls fn(ky, kx, iy, ix) for every tap of output pixel (oy, ox) that reads
// an input pixel, in the order (ky, kx): the one place that says which input
// pixels an output pixel of a convolution (or its transpose) sees.
template <bool Transposed, typename Fn>
void for_each_tap(const Conv2dShape& s, int oy, int ox, Fn&& fn) {
  for (int ky = 0; ky < s.kh; ++ky) {
    const int iy = input_coord<Transposed>(oy, ky, s.stride_h, s.dil_h, s.pad_top, s.h);
    if (iy < 0) continue;
    for (int kx = 0; kx < s.kw; ++kx) {
      const int ix = input_coord<Transposed>(ox, kx, s.stride_w, s.dil_w, s.pad_left, s.w);
      if (ix < 0) continue;
      fn(ky, kx, iy, ix);
    }
  }
}

// The scalar oracle of both ops: one output element at a time, summed over
// (ky, kx, ci).  weight_at(ky, kx, g, ci, co) is the index into w of the
// weight joining input channel g * cin_g + ci to output channel co.
template <bool Transposed, typename WeightAt>
void conv_scalar(const float* x, const float* w, const float* bias, float* y, const Conv2dShape& s,
                 Activation act, float alpha, WeightAt weight_at) {
  const int cin_g = s.cin_g(), cout_g = s.cout_g();
  for (int n = 0; n < s.n; ++n)
    for (int oy = 0; oy < s.out_h; ++oy)
      for (int ox = 0; ox < s.out_w; ++ox)
        for (int co = 0; co < s.cout; ++co) {
          const int g = co / cout_g;
          float acc = 0.0f;
          for_each_tap<Transposed>(s, oy, ox, [&](int ky, int kx, int iy, int ix) {
            for (int ci = 0; ci < cin_g; ++ci)
              acc += x[((static_cast<std::size_t>(n) * s.h + iy) * s.w + ix) * s.cin + g * cin_g + ci] *
                     w[weight_at(ky, kx, g, ci, co)];
          });
          if (bias) acc += bias[co];
          y[((static_cast<std::size_t>(n) * s.out_h + oy) * s.out_w + ox) * s.cout + co] =
              activate(acc, act, alpha);
        }
}

}  // namespace

void finish_conv2d_shape(Conv2dShape& s) {
  check_common(s);
  s.out_h = window_out_size("height", s.h, s.kh, s.stride_h, s.dil_h, s.pad_top, s.pad_bottom);
  s.out_w = window_out_size("width", s.w, s.kw, s.stride_w, s.dil_w, s.pad_left, s.pad_right);
}

void conv2d_nhwc_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                            const Conv2dShape& s, Activation act, float alpha) {
  // w is (KH, KW, Cin/groups, Cout).
  const int cin_g = s.cin_g();
  conv_scalar<false>(x, w, bias, y, s, act, alpha, [&](int ky, int kx, int, int ci, int co) {
    return ((static_cast<std::size_t>(ky) * s.kw + kx) * cin_g + ci) * s.cout + co;
  });
}

namespace {

// Depthwise (one input channel per group, `mult` outputs each): the blocked
// path would pad every group's few outputs to a whole vector block, so this
// one walks the taps per output pixel and vectorizes over all channels at once.
// Same summation order (ky, kx) for every output, one thread per output row.
void depthwise_nhwc_f32(const float* x, const float* w, const float* bias, float* y,
                        const Conv2dShape& s, Activation act, float alpha, int threads) {
  const std::size_t rows = static_cast<std::size_t>(s.n) * s.out_h;
  parallel_for(rows, threads, 4, [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      const int oy = static_cast<int>(r % s.out_h);
      const std::size_t n = r / s.out_h;
      for (int ox = 0; ox < s.out_w; ++ox) {
        float* out = y + (r * s.out_w + ox) * s.cout;
        std::fill(out, out + s.cout, 0.0f);
        for_each_tap<false>(s, oy, ox, [&](int ky, int kx, int iy, int ix) {
          const float* xp = x + ((n * s.h + iy) * s.w + ix) * s.cin;
          const float* wp = w + (static_cast<std::size_t>(ky) * s.kw + kx) * s.cout;
          const int mult = s.cout_g();
          if (mult == 1) {
            for (int c = 0; c < s.cout; ++c) out[c] += xp[c] * wp[c];
          } else {
            for (int c = 0; c < s.cout; ++c) out[c] += xp[c / mult] * wp[c];
          }
        });
        if (bias)
          for (int c = 0; c < s.cout; ++c) out[c] += bias[c];
        activate_inplace(out, s.cout, act, alpha);
      }
    }
  });
}

}  // namespace

void conv2d_nhwc_f32(const float* x, const float* w, const float* bias, float* y,
                     const Conv2dShape& s, Activation act, float alpha, int threads) {
  if (s.groups > 1 && s.cin_g() == 1) {
    depthwise_nhwc_f32(x, w, bias, y, s, act, alpha, threads);
    return;
  }
  const isa::Kernels& k = isa::active();
  const int cb = k.conv_cb;
  const int cin_g = s.cin_g(), cout_g = s.cout_g();
  const int nblk = (cout_g + cb - 1) / cb;

  // Weights -> [g][blk][ky][kx][ci][cb], zero-filled past cout_g, so the
  // microkernel loads whole vectors and never reads past the buffer.
  const std::size_t taps = static_cast<std::size_t>(s.kh) * s.kw;
  const std::size_t wsize = taps * cin_g * cb;
  std::vector<float> wpack(static_cast<std::size_t>(s.groups) * nblk * wsize, 0.0f);
  std::vector<float> bpack(static_cast<std::size_t>(s.groups) * nblk * cb, 0.0f);
  for (int g = 0; g < s.groups; ++g)
    for (int blk = 0; blk < nblk; ++blk) {
      float* dst = wpack.data() + (static_cast<std::size_t>(g) * nblk + blk) * wsize;
      const int co0 = g * cout_g + blk * cb;
      const int valid = std::min(cb, cout_g - blk * cb);
      for (std::size_t t = 0; t < taps; ++t)
        for (int ci = 0; ci < cin_g; ++ci)
          std::memcpy(dst + (t * cin_g + ci) * cb, w + (t * cin_g + ci) * s.cout + co0,
                      sizeof(float) * valid);
      if (bias)
        std::memcpy(bpack.data() + (static_cast<std::size_t>(g) * nblk + blk) * cb, bias + co0,
                    sizeof(float) * valid);
    }

  // Zero-padded copy of the input, so the hot loop has no bounds checks.
  const bool padded = s.pad_top || s.pad_bottom || s.pad_left || s.pad_right;
  const int hp = s.h + s.pad_top + s.pad_bottom, wp = s.w + s.pad_left + s.pad_right;
  std::vector<float> xpad;
  if (padded) {
    xpad.assign(static_cast<std::size_t>(s.n) * hp * wp * s.cin, 0.0f);
    const std::size_t row = static_cast<std::size_t>(s.w) * s.cin;
    for (int n = 0; n < s.n; ++n)
      for (int iy = 0; iy < s.h; ++iy)
        std::memcpy(xpad.data() +
                        ((static_cast<std::size_t>(n) * hp + iy + s.pad_top) * wp + s.pad_left) *
                            s.cin,
                    x + (static_cast<std::size_t>(n) * s.h + iy) * row, sizeof(float) * row);
  }

  isa::ConvJob j{};
  isa::set_window(j, padded ? xpad.data() : x, hp, wp, s.cin, y, s);
  j.wpack = wpack.data();
  j.bias = bpack.data();
  j.cout = s.cout;
  j.dh = s.dil_h;
  j.dw = s.dil_w;
  j.groups = s.groups;
  j.cin_g = cin_g;
  j.cout_g = cout_g;
  j.nblk = nblk;
  j.wchunk = 4 * k.conv_p;
  j.chunks_per_row = (s.out_w + j.wchunk - 1) / j.wchunk;

  const std::size_t tasks = static_cast<std::size_t>(s.n) * s.out_h * j.chunks_per_row;
  // A task is a few hundred to a few thousand FMAs per channel block; 16 of
  // them are enough to repay a thread's start-up.
  parallel_for(tasks, threads, 16, [&](std::size_t begin, std::size_t end) {
    k.conv_tasks(j, begin, end);
    if (act == Activation::kNone) return;
    for (std::size_t t = begin; t < end; ++t) {
      const std::size_t r = t / j.chunks_per_row;
      const int ox0 = static_cast<int>(t % j.chunks_per_row) * j.wchunk;
      const int ox1 = std::min(ox0 + j.wchunk, s.out_w);
      activate_inplace(y + (r * s.out_w + ox0) * s.cout, static_cast<std::size_t>(ox1 - ox0) * s.cout,
                       act, alpha);
    }
  });
}

// ---- transposed convolution -------------------------------------------------

void finish_conv2d_transpose_shape(Conv2dShape& s, int output_pad_h, int output_pad_w) {
  check_common(s);
  auto axis = [](const char* what, int in, int k, int st, int d, int pb, int pa, int op) {
    // The transposed op's geometry is the forward op's read backwards; reuse
    // its checks on the full (uncropped) output.
    const std::string a(what);
    if (in < 1) throw std::invalid_argument("input " + a + " must be >= 1");
    if (k < 1) throw std::invalid_argument("kernel " + a + " must be >= 1");
    if (st < 1)
      throw std::invalid_argument("strides: " + a + " stride must be >= 1, got " + std::to_string(st));
    if (d < 1)
      throw std::invalid_argument("dilations: " + a + " dilation must be >= 1, got " + std::to_string(d));
    if (pb < 0 || pa < 0) throw std::invalid_argument("padding: " + a + " pads must be >= 0");
    if (op < 0 || (op >= st && op >= d))
      throw std::invalid_argument("output_padding: " + a + " must be >= 0 and smaller than the stride or dilation");
    const long full = static_cast<long>(in - 1) * st + static_cast<long>(d) * (k - 1) + 1 + op;
    const long out = full - pb - pa;
    if (out < 1)
      throw std::invalid_argument("padding: " + a + " pads " + std::to_string(pb + pa) +
                                  " crop the whole output (" + std::to_string(full) + ")");
    return static_cast<int>(out);
  };
  s.out_h = axis("height", s.h, s.kh, s.stride_h, s.dil_h, s.pad_top, s.pad_bottom, output_pad_h);
  s.out_w = axis("width", s.w, s.kw, s.stride_w, s.dil_w, s.pad_left, s.pad_right, output_pad_w);
}

void conv2d_transpose_nhwc_f32_scalar(const float* x, const float* w, const float* bias, float* y,
                                      const Conv2dShape& s, Activation act, float alpha) {
  // w is (KH, KW, Cin, Cout/groups).
  const int cin_g = s.cin_g(), cout_g = s.cout_g();
  conv_scalar<true>(x, w, bias, y, s, act, alpha, [&](int ky, int kx, int g, int ci, int co) {
    return ((static_cast<std::size_t>(ky) * s.kw + kx) * s.cin + g * cin_g + ci) * cout_g +
           (co - g * cout_g);
  });
}

void conv2d_transpose_nhwc_f32(const float* x, const float* w, const float* bias, float* y,
                               const Conv2dShape& s, Activation act, float alpha, int threads) {
  // Gather form: each output pixel sums its contributing taps in the order
  // (ky, kx, ci), vectorized over output channels.  No scatter, so no two
  // threads ever touch one output and the order never depends on threads.
  const int cin_g = s.cin_g(), cout_g = s.cout_g();
  const std::size_t rows = static_cast<std::size_t>(s.n) * s.out_h;
  parallel_for(rows, threads, 4, [&](std::size_t begin, std::size_t end) {
    std::vector<float> acc(cout_g);
    for (std::size_t r = begin; r < end; ++r) {
      const int oy = static_cast<int>(r % s.out_h);
      const std::size_t n = r / s.out_h;
      for (int ox = 0; ox < s.out_w; ++ox) {
        float* out = y + (r * s.out_w + ox) * s.cout;
        for (int g = 0; g < s.groups; ++g) {
          std::fill(acc.begin(), acc.end(), 0.0f);
          for_each_tap<true>(s, oy, ox, [&](int ky, int kx, int iy, int ix) {
            const float* xp = x + ((n * s.h + iy) * s.w + ix) * s.cin + g * cin_g;
            const float* wp = w + ((static_cast<std::size_t>(ky) * s.kw + kx) * s.cin + g * cin_g) * cout_g;
            for (int ci = 0; ci < cin_g; ++ci) {
              const float v = xp[ci];
              const float* wr = wp + static_cast<std::size_t>(ci) * cout_g;
              float* a = acc.data();
              for (int co = 0; co < cout_g; ++co) a[co] += v * wr[co];
            }
          });
          float* o = out + g * cout_g;
          for (int co = 0; co < cout_g; ++co)
            o[co] = activate(acc[co] + (bias ? bias[g * cout_g + co] : 0.0f), act, alpha);
        }
      }
    }
  });
}

}  // namespace dlinfer
