// The fused pass's parameters and geometry: checks, where the resized image
// lands in the output, and each axis's source taps.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "dlinfer/batch.hpp"
#include "plan.hpp"

namespace dlinfer {

int channels_of(PixelOrder order) {
  switch (order) {
    case PixelOrder::kGray: return 1;
    case PixelOrder::kRGB:
    case PixelOrder::kBGR: return 3;
    default: return 4;
  }
}

int channels_of(OutColor color) { return color == OutColor::kGray ? 1 : 3; }

void check_params(const PreprocessParams& p) {
  if (p.out_height < 1 || p.out_width < 1)
    throw std::invalid_argument("output size must be at least 1x1, got " +
                                std::to_string(p.out_height) + "x" + std::to_string(p.out_width));
  if (p.fit == Fit::kCrop && !(p.crop_ratio > 0.0 && p.crop_ratio <= 1.0))
    throw std::invalid_argument("crop ratio must be in (0, 1], got " +
                                std::to_string(p.crop_ratio));
  if (!std::isfinite(p.scale)) throw std::invalid_argument("scale must be finite");
  if (!std::isfinite(p.pad)) throw std::invalid_argument("pad must be finite");
  for (int c = 0; c < channels_of(p.color); ++c) {
    if (!std::isfinite(p.mean[c]))
      throw std::invalid_argument("mean[" + std::to_string(c) + "] must be finite");
    if (!std::isfinite(p.std[c]) || p.std[c] == 0.0f)
      throw std::invalid_argument("std[" + std::to_string(c) + "] must be finite and non-zero");
  }
  if (p.bilinear_pass == BilinearPass::kGathered && !gathered_bilinear_supported())
    throw std::invalid_argument(
        "the gathered bilinear pass needs AVX-512 VBMI, which this CPU or build lacks");
}

Geometry compute_geometry(std::int64_t height, std::int64_t width, const PreprocessParams& p) {
  if (height < 1 || width < 1)
    throw std::invalid_argument("image size must be at least 1x1, got " + std::to_string(height) +
                                "x" + std::to_string(width));
  Geometry g;
  const std::int64_t oh = p.out_height, ow = p.out_width;
  const double sy = static_cast<double>(oh) / height, sx = static_cast<double>(ow) / width;
  switch (p.fit) {
    case Fit::kStretch:
      g.resized_height = oh;
      g.resized_width = ow;
      break;
    case Fit::kCrop: {
      // Cover the output, then enlarge by 1/ratio; never smaller than the crop.
      const double s = std::max(sy, sx) / p.crop_ratio;
      g.resized_height = std::max<std::int64_t>(oh, std::llround(height * s));
      g.resized_width = std::max<std::int64_t>(ow, std::llround(width * s));
      g.top = -((g.resized_height - oh) / 2);
      g.left = -((g.resized_width - ow) / 2);
      break;
    }
    case Fit::kLetterbox: {
      const double s = std::min(sy, sx);
      g.resized_height = std::clamp<std::int64_t>(std::llround(height * s), 1, oh);
      g.resized_width = std::clamp<std::int64_t>(std::llround(width * s), 1, ow);
      g.top = (oh - g.resized_height) / 2;
      g.left = (ow - g.resized_width) / 2;
      break;
    }
  }
  return g;
}

AxisTaps axis_taps(ResizeMode mode, std::int64_t in, std::int64_t out, std::int64_t begin,
                   std::int64_t end) {
  AxisTaps t;
  const std::int64_t n = std::max<std::int64_t>(end - begin, 0);
  switch (mode) {
    case ResizeMode::kNearest:
      t.taps = 1;
      t.index.resize(n);
      t.weight.assign(n, 1.0f);
      // Exact integer floor(r * in / out), as INTER_NEAREST intends.
      for (std::int64_t i = 0; i < n; ++i)
        t.index[i] = std::min((begin + i) * in / out, in - 1);
      return t;
    case ResizeMode::kBilinear: {
      // Half-pixel centres, clamped: a coordinate outside [0, in-1] takes the
      // edge pixel, as OpenCV INTER_LINEAR and tf.image.resize do.
      const double ratio = static_cast<double>(in) / out;
      std::vector<std::int64_t> i0(n);
      std::vector<double> f(n);
      bool any_fraction = false;
      for (std::int64_t i = 0; i < n; ++i) {
        const double c = (begin + i + 0.5) * ratio - 0.5;
        double fl = std::floor(c);
        double fr = c - fl;
        std::int64_t lo = static_cast<std::int64_t>(fl);
        if (lo < 0) lo = 0, fr = 0.0;
        if (lo >= in - 1) lo = in - 1, fr = 0.0;
        i0[i] = lo;
        f[i] = fr;
        any_fraction |= fr != 0.0;
      }
      t.taps = any_fraction ? 2 : 1;  // e.g. an unchanged size needs one tap
      t.index.resize(n * t.taps);
      t.weight.resize(n * t.taps);
      for (std::int64_t i = 0; i < n; ++i) {
        t.index[i * t.taps] = i0[i];
        t.weight[i * t.taps] = static_cast<float>(1.0 - f[i]);
        if (t.taps == 2) {
          t.index[i * 2 + 1] = std::min(i0[i] + 1, in - 1);
          t.weight[i * 2 + 1] = static_cast<float>(f[i]);
        }
      }
      return t;
    }
    case ResizeMode::kArea: {
      // Output pixel r covers source interval [r*in/out, (r+1)*in/out); each
      // source pixel weighs by its overlap.  In units of 1/out the bounds are
      // integers, so the overlaps are exact.
      auto first = [&](std::int64_t r) { return r * in / out; };
      auto last = [&](std::int64_t r) { return std::min(((r + 1) * in + out - 1) / out, in) - 1; };
      int taps = 1;
      for (std::int64_t i = 0; i < n; ++i)
        taps = std::max<int>(taps, static_cast<int>(last(begin + i) - first(begin + i) + 1));
      t.taps = taps;
      t.index.assign(n * taps, 0);
      t.weight.assign(n * taps, 0.0f);
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t r = begin + i, lo = r * in, hi = (r + 1) * in;
        const std::int64_t u0 = first(r), u1 = last(r);
        for (int k = 0; k < taps; ++k) {
          const std::int64_t u = std::min(u0 + k, u1);
          t.index[i * taps + k] = u;
          if (u0 + k > u1) continue;
          const std::int64_t overlap = std::min((u + 1) * out, hi) - std::max(u * out, lo);
          t.weight[i * taps + k] = static_cast<float>(static_cast<double>(overlap) / in);
        }
      }
      return t;
    }
  }
  return t;
}

namespace prep {

void check_image(const ImageU8& im, std::size_t i) {
  if (im.height < 1 || im.width < 1)
    throw std::invalid_argument("images[" + std::to_string(i) + "] is empty (" +
                                std::to_string(im.height) + "x" + std::to_string(im.width) + ")");
  if (im.data == nullptr)
    throw std::invalid_argument("images[" + std::to_string(i) + "] has no data");
}

}  // namespace prep
}  // namespace dlinfer
