// The plan of one image: geometry, taps, colour map and which row pass it
// takes (copy, gathered, fused or the portable blend-first one).
#include "plan.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "affine.hpp"
#include "row_kernels.hpp"

namespace dlinfer::prep {
namespace {

// Decides whether this image takes the fused horizontal pass and, if so,
// folds each output channel's gain scale/std into its x weights.  The choice
// depends only on the CPU, the parameters and the image's shape, never on
// the thread or the output buffer, so every thread count computes the same
// values.
void plan_fused(Plan& pl, const PreprocessParams& p) {
  const std::int64_t n = pl.x1 - pl.x0;
  const int K = pl.xtaps.taps, CS = pl.cm.src_channels;
  if (!row_kernels().fused_row || pl.cm.gray_mix || (CS != 3 && CS != 4) || K > 2 || n < 1)
    return;
  // With two taps the kernel reads the second from the pixel after the
  // first, as bilinear does except where the second tap has weight 0.
  for (std::int64_t x = 0; K == 2 && x < n; ++x)
    if (pl.oplanar[n + x] != pl.oplanar[x] + CS && pl.wplanar[n + x] != 0.0f) return;
  pl.fused = true;
  pl.wfused.resize(static_cast<std::size_t>(3 * K * n));
  for (int k = 0; k < 3; ++k) {
    const double g = gain(p, k);
    for (int t = 0; t < K; ++t)
      for (std::int64_t x = 0; x < n; ++x)
        pl.wfused[(k * K + t) * n + x] = static_cast<float>(pl.wplanar[t * n + x] * g);
  }
}

// Decides whether this image takes the gathered pass: bilinear in both
// directions from 3 or 4 interleaved channels to 3, on a CPU with AVX-512
// VBMI, unless the caller asked for the blend-first pass, with every group of 8 output columns reading inside one 128-byte
// window of the source row (downscales up to about 5.7x from 3 channels,
// 4.3x from 4).  Like plan_fused, the choice depends only on the CPU, the
// parameters and the image's shape.
//
// Group g is computed from three byte permutes of each row's window, each
// giving sixteen zero-extended bytes: P0 = [tap 0 of channel 0 | tap 0 of
// channel 1] for its 8 pixels, P1 = the same for tap 1, P2 = [channel 2 tap 0
// | tap 1].  gather.weight holds the matching weights: x weight times the
// channel's gain.
void plan_gathered(Plan& pl, const PreprocessParams& p) {
  const std::int64_t n = pl.x1 - pl.x0;
  const int CS = pl.cm.src_channels;
  const std::int64_t len = (pl.c1 - pl.c0) * CS;
  if (p.bilinear_pass == BilinearPass::kBlendFirst || !row_kernels().gathered_row ||
      pl.cm.gray_mix || pl.cm.out_channels != 3 || (CS != 3 && CS != 4) ||
      pl.xtaps.taps != 2 || pl.ytaps.taps != 2 || n < 1 || len < 128)
    return;
  const std::int64_t groups = (n + 7) / 8;
  std::vector<std::int32_t> base(groups);
  for (std::int64_t g = 0; g < groups; ++g) {
    std::int64_t lo = INT64_MAX, hi = 0;
    for (std::int64_t x = 8 * g; x < std::min(n, 8 * g + 8); ++x)
      for (int t = 0; t < 2; ++t) {
        lo = std::min<std::int64_t>(lo, pl.xoff[x * 2 + t]);
        hi = std::max<std::int64_t>(hi, pl.xoff[x * 2 + t] + CS - 1);
      }
    // Slide the window back from the row's end, so it never reads past it.
    const std::int64_t b = std::min(lo, len - 128);
    if (hi >= b + 128) return;
    base[g] = static_cast<std::int32_t>(b);
  }
  pl.gathered = true;
  pl.gather.groups = groups;
  pl.gather.base = std::move(base);
  pl.gather.index.assign(static_cast<std::size_t>(groups * 3 * 64), 0);
  pl.gather.weight.assign(static_cast<std::size_t>(groups * 3 * 16), 0.0f);
  double gains[3];
  for (int k = 0; k < 3; ++k) gains[k] = gain(p, k);
  for (std::int64_t g = 0; g < groups; ++g)
    for (int i = 0; i < 8; ++i) {
      // Columns past the end repeat the last one with weight 0.
      const std::int64_t x = std::min(n - 1, 8 * g + i);
      const bool real = 8 * g + i < n;
      // (permute, lane, channel, tap) for each of the six values of pixel i.
      const int slots[6][4] = {{0, i, 0, 0}, {0, 8 + i, 1, 0}, {1, i, 0, 1},
                               {1, 8 + i, 1, 1}, {2, i, 2, 0}, {2, 8 + i, 2, 1}};
      for (const auto& sl : slots) {
        const int perm = sl[0], lane = sl[1], k = sl[2], t = sl[3];
        const std::int64_t byte = pl.xoff[x * 2 + t] + pl.cm.pick[k] - pl.gather.base[g];
        pl.gather.index[(g * 3 + perm) * 64 + lane * 4] = static_cast<std::uint8_t>(byte);
        pl.gather.weight[(g * 3 + perm) * 16 + lane] =
            real ? static_cast<float>(pl.xtaps.weight[x * 2 + t] * gains[k]) : 0.0f;
      }
    }
}

}  // namespace

ColorMap color_map(PixelOrder in, OutColor out) {
  ColorMap m;
  m.src_channels = channels_of(in);
  m.out_channels = channels_of(out);
  const bool bgr = in == PixelOrder::kBGR || in == PixelOrder::kBGRA;
  if (in != PixelOrder::kGray) {
    m.rgb[0] = bgr ? 2 : 0;
    m.rgb[1] = 1;
    m.rgb[2] = bgr ? 0 : 2;
  }
  switch (out) {
    case OutColor::kGray: m.gray_mix = in != PixelOrder::kGray; break;
    case OutColor::kRGB: std::copy(m.rgb, m.rgb + 3, m.pick); break;
    case OutColor::kBGR:
      m.pick[0] = m.rgb[2], m.pick[1] = m.rgb[1], m.pick[2] = m.rgb[0];
      break;
  }
  return m;
}

Plan make_plan(const ImageU8& im, const PreprocessParams& p) {
  Plan pl;
  pl.g = compute_geometry(im.height, im.width, p);
  const Geometry& g = pl.g;
  pl.y0 = std::max<std::int64_t>(0, g.top);
  pl.y1 = std::min(p.out_height, g.top + g.resized_height);
  pl.x0 = std::max<std::int64_t>(0, g.left);
  pl.x1 = std::min(p.out_width, g.left + g.resized_width);
  pl.ytaps = axis_taps(p.resize, im.height, g.resized_height, pl.y0 - g.top, pl.y1 - g.top);
  pl.xtaps = axis_taps(p.resize, im.width, g.resized_width, pl.x0 - g.left, pl.x1 - g.left);
  pl.cm = color_map(im.order, p.color);
  const auto& xi = pl.xtaps.index;
  pl.c0 = xi.empty() ? 0 : *std::min_element(xi.begin(), xi.end());
  pl.c1 = xi.empty() ? 0 : *std::max_element(xi.begin(), xi.end()) + 1;
  if ((pl.c1 - pl.c0) * pl.cm.src_channels > INT32_MAX)
    throw std::invalid_argument("image is too wide (" + std::to_string(im.width) + " pixels)");
  pl.xoff.resize(xi.size());
  for (std::size_t i = 0; i < xi.size(); ++i)
    pl.xoff[i] = static_cast<std::int32_t>((xi[i] - pl.c0) * pl.cm.src_channels);
  const std::int64_t n = pl.x1 - pl.x0;
  const int K = pl.xtaps.taps;
  pl.oplanar.resize(xi.size());
  pl.wplanar.resize(xi.size());
  for (std::int64_t x = 0; x < n; ++x)
    for (int t = 0; t < K; ++t) {
      pl.oplanar[t * n + x] = pl.xoff[x * K + t];
      pl.wplanar[t * n + x] = pl.xtaps.weight[x * K + t];
    }
  pl.contiguous_rows = im.col_stride == pl.cm.src_channels && im.channel_stride == 1;
  plan_gathered(pl, p);
  if (!pl.gathered) plan_fused(pl, p);
  auto ones = [](const std::vector<float>& w) {
    return std::all_of(w.begin(), w.end(), [](float v) { return v == 1.0f; });
  };
  bool consecutive = true;
  for (std::size_t i = 1; i < xi.size(); ++i) consecutive &= xi[i] == xi[i - 1] + 1;
  pl.copy = !pl.fused && !pl.cm.gray_mix && pl.ytaps.taps == 1 && pl.xtaps.taps == 1 &&
            ones(pl.ytaps.weight) && ones(pl.xtaps.weight) && consecutive;
  return pl;
}

// Source row r of an image with any strides, columns c0 .. c1, copied into dst
// as packed interleaved bytes.
void pack_source_row(const ImageU8& im, const Plan& pl, std::int64_t r, std::uint8_t* dst) {
  const int cs = pl.cm.src_channels;
  const std::uint8_t* row = im.data + r * im.row_stride;
  for (std::int64_t u = pl.c0; u < pl.c1; ++u)
    for (int c = 0; c < cs; ++c) *dst++ = row[u * im.col_stride + c * im.channel_stride];
}

// Source row r of the image, columns c0.. packed: in place when the rows are
// contiguous, else copied into buf.
const std::uint8_t* packed_source_row(const ImageU8& im, const Plan& pl, std::int64_t r,
                                      std::vector<std::uint8_t>& buf) {
  if (pl.contiguous_rows) return im.data + r * im.row_stride + pl.c0 * pl.cm.src_channels;
  buf.resize(static_cast<std::size_t>((pl.c1 - pl.c0) * pl.cm.src_channels));
  pack_source_row(im, pl, r, buf.data());
  return buf.data();
}

}  // namespace dlinfer::prep
