// The straightforward per-pixel oracle of the fused pass: double arithmetic,
// no tables, one thread.  Tests compare preprocess_batch_u8 against it.
#include <cstddef>
#include <cstdint>

#include "dlinfer/batch.hpp"
#include "plan.hpp"

namespace dlinfer {
namespace {

using prep::ColorMap;
using prep::kGrayWeights;

template <typename OutT>
void batch_scalar(const ImageU8* images, std::size_t n, const PreprocessParams& p, OutT* out) {
  const std::int64_t H = p.out_height, W = p.out_width;
  const int C = channels_of(p.color);
  for (std::size_t i = 0; i < n; ++i) {
    const ImageU8& im = images[i];
    prep::check_image(im, i);
    const Geometry g = compute_geometry(im.height, im.width, p);
    const ColorMap cm = prep::color_map(im.order, p.color);
    OutT* img_out = out + i * H * W * C;
    for (std::int64_t y = 0; y < H; ++y)
      for (std::int64_t x = 0; x < W; ++x) {
        const std::int64_t ry = y - g.top, rx = x - g.left;
        const bool inside = ry >= 0 && ry < g.resized_height && rx >= 0 && rx < g.resized_width;
        double src[4] = {0, 0, 0, 0};
        if (inside) {
          const AxisTaps ty = axis_taps(p.resize, im.height, g.resized_height, ry, ry + 1);
          const AxisTaps tx = axis_taps(p.resize, im.width, g.resized_width, rx, rx + 1);
          for (int c = 0; c < cm.src_channels; ++c)
            for (int a = 0; a < ty.taps; ++a)
              for (int b = 0; b < tx.taps; ++b)
                src[c] += static_cast<double>(ty.weight[a]) * tx.weight[b] *
                          im.data[ty.index[a] * im.row_stride + tx.index[b] * im.col_stride +
                                  c * im.channel_stride];
        }
        for (int k = 0; k < C; ++k) {
          double v;
          if (!inside) v = p.pad;
          else if (cm.gray_mix)
            v = kGrayWeights[0] * src[cm.rgb[0]] + kGrayWeights[1] * src[cm.rgb[1]] +
                kGrayWeights[2] * src[cm.rgb[2]];
          else v = src[cm.pick[k]];
          const double norm = (v * p.scale - p.mean[k]) / p.std[k];
          const std::int64_t at =
              p.layout == Layout::kNCHW ? (k * H + y) * W + x : (y * W + x) * C + k;
          prep::store(img_out + at, static_cast<float>(norm));
        }
      }
  }
}

}  // namespace

void preprocess_batch_u8_scalar(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                                void* out) {
  check_params(p);
  if (p.dtype == OutDtype::kFloat32)
    batch_scalar(images, n, p, static_cast<float*>(out));
  else
    batch_scalar(images, n, p, static_cast<std::uint16_t*>(out));
}

}  // namespace dlinfer
