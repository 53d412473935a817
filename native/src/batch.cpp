#include "dlinfer/batch.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <tuple>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "dlinfer/parallel.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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

std::uint16_t float_to_half(float value) {
  // Round-to-nearest-even conversion after F. Giesen's float_to_half_fast3_rtne.
  std::uint32_t f;
  std::memcpy(&f, &value, 4);
  const std::uint32_t sign = f & 0x80000000u;
  f ^= sign;
  std::uint16_t o;
  if (f >= (127u + 16u) << 23) {  // overflow, Inf or NaN
    o = f > (255u << 23) ? 0x7e00 : 0x7c00;
  } else if (f < (113u << 23)) {  // half subnormal or zero
    // Adding 0.5f aligns the 10 mantissa bits at the bottom; the FPU's
    // round-to-nearest-even does the rounding.
    float v;
    std::memcpy(&v, &f, 4);
    v += 0.5f;
    std::uint32_t u;
    std::memcpy(&u, &v, 4);
    o = static_cast<std::uint16_t>(u - 0x3f000000u);
  } else {
    const std::uint32_t mant_odd = (f >> 13) & 1u;
    f += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu;
    f += mant_odd;
    o = static_cast<std::uint16_t>(f >> 13);
  }
  return static_cast<std::uint16_t>(o | (sign >> 16));
}

namespace {

constexpr double kGrayWeights[3] = {0.299, 0.587, 0.114};  // ITU-R BT.601, as PIL and OpenCV
constexpr std::int64_t kRowBlock = 16;  // output rows per work item
constexpr std::int64_t kMinChunkValues = 1 << 17;  // outputs per thread, at least

// Which source channels feed each output channel.
struct ColorMap {
  int src_channels = 1, out_channels = 1;
  bool gray_mix = false;  // gray output from a colour source
  int pick[3] = {0, 0, 0};
  int rgb[3] = {0, 0, 0};  // source positions of R, G, B
};

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

// out = x * a[c] + b[c], with a and b from double so the only float rounding
// is in the multiply-add.
struct Affine {
  float a[3], b[3], pad[3];
};

Affine affine(const PreprocessParams& p) {
  Affine af;
  for (int c = 0; c < 3; ++c) {
    const double sd = p.std[c], mn = p.mean[c];
    af.a[c] = static_cast<float>(p.scale / sd);
    af.b[c] = static_cast<float>(-mn / sd);
    af.pad[c] = static_cast<float>((static_cast<double>(p.pad) * p.scale - mn) / sd);
  }
  return af;
}

inline void store(float* d, float v) { *d = v; }
inline void store(std::uint16_t* d, float v) { *d = float_to_half(v); }

// Everything about one image that does not depend on the output row.
struct Plan {
  Geometry g;
  std::int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // output window the image covers
  AxisTaps ytaps, xtaps;                         // for output rows y0.. and cols x0..
  std::int64_t c0 = 0, c1 = 0;                   // source columns read
  std::vector<std::int32_t> xoff;                // (xtaps.index - c0) * src channels
  std::vector<std::int32_t> oplanar;             // xoff and the x weights, tap-major
  std::vector<float> wplanar;
  ColorMap cm;
  bool contiguous_rows = false;
  // The fused horizontal pass (see fused_row_avx2): per output channel
  // k, the x weights already multiplied by the channel's gain, tap-major.
  bool fused = false;
  std::vector<float> wfused;  // [k][t][x]
  // Output pixels are source pixels (same size, every weight 1; e.g. MNIST
  // digits into an MNIST model) and no gray mixing: rows skip the blend and
  // the gathers, whose arithmetic would only multiply by 1.
  bool copy = false;
  // The gathered bilinear pass (see gathered_row): groups of 8 output
  // columns, each read from a 128-byte window of each source row.
  bool gathered = false;
  struct {
    std::int64_t groups = 0;
    std::vector<std::int32_t> base;   // [g] window start, in bytes from column c0
    std::vector<std::uint8_t> index;  // [g][3][64] byte permutes (see plan_gathered)
    std::vector<float> weight;        // [g][3][16] x weights times the channel gain
  } gather;
};

bool fused_horizontal_supported();

// Decides whether this image takes the fused horizontal pass and, if so,
// folds each output channel's gain scale/std into its x weights.  The choice
// depends only on the CPU, the parameters and the image's shape, never on
// the thread or the output buffer, so every thread count computes the same
// values.
void plan_fused(Plan& pl, const PreprocessParams& p) {
  const std::int64_t n = pl.x1 - pl.x0;
  const int K = pl.xtaps.taps, CS = pl.cm.src_channels;
  if (!fused_horizontal_supported() || pl.cm.gray_mix || (CS != 3 && CS != 4) || K > 2 || n < 1)
    return;
  // With two taps the kernel reads the second from the pixel after the
  // first, as bilinear does except where the second tap has weight 0.
  for (std::int64_t x = 0; K == 2 && x < n; ++x)
    if (pl.oplanar[n + x] != pl.oplanar[x] + CS && pl.wplanar[n + x] != 0.0f) return;
  pl.fused = true;
  pl.wfused.resize(static_cast<std::size_t>(3 * K * n));
  for (int k = 0; k < 3; ++k) {
    const double gain = static_cast<double>(p.scale) / p.std[k];
    for (int t = 0; t < K; ++t)
      for (std::int64_t x = 0; x < n; ++x)
        pl.wfused[(k * K + t) * n + x] = static_cast<float>(pl.wplanar[t * n + x] * gain);
  }
}

bool gathered_supported();

// Decides whether this image takes the gathered pass: bilinear in both
// directions from 3 or 4 interleaved channels to 3, on a CPU with AVX-512
// VBMI, with every group of 8 output columns reading inside one 128-byte
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
  if (!gathered_supported() || pl.cm.gray_mix || pl.cm.out_channels != 3 || (CS != 3 && CS != 4) ||
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
  double gain[3];
  for (int k = 0; k < 3; ++k) gain[k] = static_cast<double>(p.scale) / p.std[k];
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
            real ? static_cast<float>(pl.xtaps.weight[x * 2 + t] * gain[k]) : 0.0f;
      }
    }
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

struct Scratch {
  std::vector<float> vrow;               // vertically blended source row, interleaved
  std::vector<float> hrow[4];            // horizontally resampled, one per source channel
  std::vector<float> mixed;              // gray mixed from colour; NHWC half staging
  std::vector<const std::uint8_t*> rowptr;
  std::vector<std::uint8_t> packed;      // strided source rows, packed
  std::vector<std::uint8_t> packed_b;    // the second source row, packed
};

// Hot loops get an AVX2+FMA clone next to the portable one, picked once at
// load time: wheels are built without -march=native.  The clone is chosen per
// process, so every thread runs the same code and results stay bit-identical
// across thread counts.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DLINFER_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DLINFER_CLONES
#endif
#define DLINFER_INLINE inline __attribute__((always_inline))

#if defined(__GNUC__) && defined(__x86_64__)
const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
const bool kHaveAvx512 = kHaveAvx2 && __builtin_cpu_supports("avx512f");
#else
const bool kHaveAvx2 = false;
const bool kHaveAvx512 = false;
#endif

// Vertical pass over contiguous rows: v[j] = sum_t w[t] * row_t[j].
template <int K>
DLINFER_INLINE void blend_rows(const std::uint8_t* const* r, const float* w, std::int64_t len,
                               float* __restrict v) {
  if constexpr (K == 1) {
    const std::uint8_t* __restrict r0 = r[0];
    for (std::int64_t j = 0; j < len; ++j) v[j] = w[0] * r0[j];
  } else {
    const std::uint8_t* __restrict r0 = r[0];
    const std::uint8_t* __restrict r1 = r[1];
    const float w0 = w[0], w1 = w[1];
    for (std::int64_t j = 0; j < len; ++j) v[j] = w0 * r0[j] + w1 * r1[j];
  }
}

DLINFER_CLONES void blend_rows_any(const std::uint8_t* const* r, const float* w, int K,
                                   std::int64_t len, float* __restrict v) {
  if (K == 1) return blend_rows<1>(r, w, len, v);
  if (K == 2) return blend_rows<2>(r, w, len, v);
  blend_rows<1>(r, w, len, v);
  for (int t = 1; t < K; ++t) {
    const std::uint8_t* __restrict rt = r[t];
    const float wt = w[t];
    for (std::int64_t j = 0; j < len; ++j) v[j] += wt * rt[j];
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
// Eight bytes -> eight floats in two instructions (the auto-vectorizer goes
// through 16-bit lanes and needs four).
__attribute__((target("avx2,fma"))) inline __m256 load8_u8(const std::uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Software prefetch of the next output row's source rows, a cache line of
// each per 64 bytes blended here.  Downscaling skips source rows, and a 4 KiB
// page holds only two or three of them (the hardware streamer does not cross
// pages), so the hardware prefetchers alone left the blend waiting on memory:
// this cut the whole 64x480x640 -> 224x224 batch by about a third.
inline void prefetch_next_rows(const std::uint8_t* const* next, int K, std::int64_t j) {
  if (next == nullptr || (j & 63) != 0) return;
  for (int t = 0; t < K; ++t) _mm_prefetch(reinterpret_cast<const char*>(next[t] + j), _MM_HINT_T0);
}

__attribute__((target("avx2,fma"))) void blend_rows_avx2(const std::uint8_t* const* r,
                                                          const float* w, int K,
                                                          std::int64_t len, float* v,
                                                          const std::uint8_t* const* next) {
  std::int64_t j = 0;
  const __m256 w0 = _mm256_set1_ps(w[0]);
  if (K == 2) {
    const __m256 w1 = _mm256_set1_ps(w[1]);
    for (; j + 8 <= len; j += 8) {
      prefetch_next_rows(next, 2, j);
      _mm256_storeu_ps(v + j, _mm256_fmadd_ps(w1, load8_u8(r[1] + j),
                                              _mm256_mul_ps(w0, load8_u8(r[0] + j))));
    }
  } else {
    for (; j + 8 <= len; j += 8) {
      prefetch_next_rows(next, K, j);
      __m256 acc = _mm256_mul_ps(w0, load8_u8(r[0] + j));
      for (int t = 1; t < K; ++t)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(w[t]), load8_u8(r[t] + j), acc);
      _mm256_storeu_ps(v + j, acc);
    }
  }
  for (; j < len; ++j) {
    float acc = w[0] * r[0][j];
    for (int t = 1; t < K; ++t) acc = std::fma(w[t], static_cast<float>(r[t][j]), acc);
    v[j] = acc;
  }
}

// The same blend sixteen floats at a time: the loop is bound by its
// conversions and multiplies once the prefetches hide memory, so wider
// vectors halve it.  Lane for lane the same operations as blend_rows_avx2, so
// the two give identical results.
__attribute__((target("avx512f"))) inline __m512 load16_u8(const std::uint8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

__attribute__((target("avx512f"))) inline void blend16_avx512(const std::uint8_t* r0,
                                                              const std::uint8_t* r1, __m512 w0,
                                                              __m512 w1, std::int64_t j, float* v) {
  _mm512_storeu_ps(v + j, _mm512_fmadd_ps(w1, load16_u8(r1 + j),
                                          _mm512_mul_ps(w0, load16_u8(r0 + j))));
}

__attribute__((target("avx512f,avx2,fma"))) void blend_rows_avx512(
    const std::uint8_t* const* r, const float* w, int K, std::int64_t len, float* v,
    const std::uint8_t* const* next) {
  if (K != 2) return blend_rows_avx2(r, w, K, len, v, next);
  std::int64_t j = 0;
  const __m512 w0 = _mm512_set1_ps(w[0]), w1 = _mm512_set1_ps(w[1]);
  const std::uint8_t* const r0 = r[0];  // not reloaded after each store to v
  const std::uint8_t* const r1 = r[1];
  // A cache line of each row per step: one prefetch each and no branch per
  // vector: about 15% off the batch when the source is already in cache
  // (none when it comes from memory).
  for (; j + 64 <= len; j += 64) {
    prefetch_next_rows(next, 2, j);
    for (int k = 0; k < 64; k += 16) blend16_avx512(r0, r1, w0, w1, j + k, v);
  }
  for (; j + 16 <= len; j += 16) blend16_avx512(r0, r1, w0, w1, j, v);
  const std::uint8_t* rest[2] = {r[0] + j, r[1] + j};
  blend_rows_avx2(rest, w, K, len - j, v + j, nullptr);
}
#endif

// Source row r of an image with any strides, columns c0 .. c1, copied into dst
// as packed interleaved bytes.
void pack_source_row(const ImageU8& im, const Plan& pl, std::int64_t r, std::uint8_t* dst) {
  const int cs = pl.cm.src_channels;
  const std::uint8_t* row = im.data + r * im.row_stride;
  for (std::int64_t u = pl.c0; u < pl.c1; ++u)
    for (int c = 0; c < cs; ++c) *dst++ = row[u * im.col_stride + c * im.channel_stride];
}

// How many output rows ahead blend_rows_avx2 prefetches.
constexpr std::int64_t kPrefetchRows = 1;

// Vertical pass: blend the source rows of output row y into s.vrow.
void vertical(const ImageU8& im, const Plan& pl, std::int64_t y, Scratch& s) {
  const int cs = pl.cm.src_channels;
  const int K = pl.ytaps.taps;
  const std::int64_t* idx = &pl.ytaps.index[(y - pl.y0) * K];
  const float* w = &pl.ytaps.weight[(y - pl.y0) * K];
  float* v = s.vrow.data();
  const std::int64_t len = (pl.c1 - pl.c0) * cs;
  s.rowptr.resize(2 * K);
  const std::uint8_t** next = nullptr;
  if (pl.contiguous_rows) {
    for (int t = 0; t < K; ++t) s.rowptr[t] = im.data + idx[t] * im.row_stride + pl.c0 * cs;
    if (y + kPrefetchRows < pl.y1) {
      next = s.rowptr.data() + K;
      for (int t = 0; t < K; ++t)
        next[t] = im.data + idx[kPrefetchRows * K + t] * im.row_stride + pl.c0 * cs;
    }
  } else {
    // Any strides: copy each tap's row segment into a packed buffer first, so
    // the arithmetic below (and so the result) does not depend on the layout.
    s.packed.resize(static_cast<std::size_t>(K * len));
    for (int t = 0; t < K; ++t) {
      pack_source_row(im, pl, idx[t], s.packed.data() + t * len);
      s.rowptr[t] = s.packed.data() + t * len;
    }
  }
#if defined(__GNUC__) && defined(__x86_64__)
  if (kHaveAvx512) return blend_rows_avx512(s.rowptr.data(), w, K, len, v, next);
  if (kHaveAvx2) return blend_rows_avx2(s.rowptr.data(), w, K, len, v, next);
#endif
  blend_rows_any(s.rowptr.data(), w, K, len, v);
}

// Horizontal pass for every source channel at once, so each tap's offset and
// weight are loaded once per output pixel rather than once per channel.
template <int CS, int K>
DLINFER_INLINE void resample_row(const std::int32_t* off, const float* w, std::int64_t n,
                                 const float* __restrict v, float* const* h) {
  for (std::int64_t x = 0; x < n; ++x) {
    float acc[CS];
    for (int c = 0; c < CS; ++c) acc[c] = w[x * K] * v[off[x * K] + c];
    for (int t = 1; t < K; ++t)
      for (int c = 0; c < CS; ++c) acc[c] += w[x * K + t] * v[off[x * K + t] + c];
    for (int c = 0; c < CS; ++c) h[c][x] = acc[c];
  }
}

template <int CS>
DLINFER_INLINE void resample_row_k(const std::int32_t* off, const float* w, int K, std::int64_t n,
                                   const float* v, float* const* h) {
  if (K == 1) return resample_row<CS, 1>(off, w, n, v, h);
  if (K == 2) return resample_row<CS, 2>(off, w, n, v, h);
  for (std::int64_t x = 0; x < n; ++x)
    for (int c = 0; c < CS; ++c) {
      float acc = w[x * K] * v[off[x * K] + c];
      for (int t = 1; t < K; ++t) acc += w[x * K + t] * v[off[x * K + t] + c];
      h[c][x] = acc;
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
// AVX2 gathers: eight output pixels of one channel per step, reading each
// tap's offsets and weights from planar copies of the tap table.
__attribute__((target("avx2,fma"))) void horizontal_avx2(const Plan& pl, Scratch& s) {
  const std::int64_t n = pl.x1 - pl.x0;
  const int K = pl.xtaps.taps, CS = pl.cm.src_channels;
  for (int c = 0; c < CS; ++c) {
    const float* v = s.vrow.data() + c;
    float* h = s.hrow[c].data();
    std::int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
      __m256 acc = _mm256_mul_ps(
          _mm256_loadu_ps(&pl.wplanar[x]),
          _mm256_i32gather_ps(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&pl.oplanar[x])), 4));
      for (int t = 1; t < K; ++t) {
        const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&pl.oplanar[t * n + x]));
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(&pl.wplanar[t * n + x]), _mm256_i32gather_ps(v, o, 4), acc);
      }
      _mm256_storeu_ps(h + x, acc);
    }
    for (; x < n; ++x) {
      float acc = pl.wplanar[x] * v[pl.oplanar[x]];
      for (int t = 1; t < K; ++t) acc = std::fma(pl.wplanar[t * n + x], v[pl.oplanar[t * n + x]], acc);
      h[x] = acc;
    }
  }
}
#else
void horizontal_avx2(const Plan&, Scratch&) {}
#endif

bool fused_horizontal_supported() { return kHaveAvx2; }

// Where the fused pass writes source channel c: the output row of the
// channel that picks it, with that channel's bias and gain-scaled weights.
// Where gathered_row writes: NCHW, the three channel rows at column x0;
// NHWC, row[0] at pixel x0's first channel.  float32 or float16.
struct GatheredOut {
  void* row[3];
  bool nhwc = false, half = false;
  bool stream = false;  // NCHW float32 only: rows start on a cache line
};

struct FusedRows {
  float* row[3];
  float bias[3];
  const float* w[3];  // tap t of pixel x at w[c][t * n + x]
};

#if defined(__GNUC__) && defined(__x86_64__)
// Transposes the 4x4 block in each 128-bit lane of rows a, b, c, d.
__attribute__((target("avx2"))) inline void transpose4_in_lanes(__m256& a, __m256& b, __m256& c,
                                                                __m256& d) {
  const __m256 ab_lo = _mm256_unpacklo_ps(a, b), ab_hi = _mm256_unpackhi_ps(a, b);
  const __m256 cd_lo = _mm256_unpacklo_ps(c, d), cd_hi = _mm256_unpackhi_ps(c, d);
  a = _mm256_shuffle_ps(ab_lo, cd_lo, 0x44);
  b = _mm256_shuffle_ps(ab_lo, cd_lo, 0xee);
  c = _mm256_shuffle_ps(ab_hi, cd_hi, 0x44);
  d = _mm256_shuffle_ps(ab_hi, cd_hi, 0xee);
}

// Four floats from lo in the low lane, four from hi in the high lane.
__attribute__((target("avx2"))) inline __m256 load_pair(const float* lo, const float* hi) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(lo)), _mm_loadu_ps(hi), 1);
}

// Pixels [xa, xb) of fused_row_avx2 one at a time, with the same roundings.
template <int CS, int K>
__attribute__((target("avx2,fma"))) inline void fused_pixels_scalar(
    const float* v, const std::int32_t* off, std::int64_t n, const FusedRows& o, std::int64_t xa,
    std::int64_t xb) {
  for (std::int64_t x = xa; x < xb; ++x)
    for (int c = 0; c < 3; ++c) {
      float acc = std::fma(o.w[c][x], v[off[x] + c], o.bias[c]);
      if constexpr (K == 2) acc = std::fma(o.w[c][n + x], v[off[x] + CS + c], acc);
      o.row[c][x] = acc;
    }
}

// The horizontal pass for 3- and 4-channel rows with one tap, or with two
// taps on neighbouring pixels (bilinear), normalization folded into the
// weights: out = bias + w0 * v[o + c] + w1 * v[o + CS + c], o = xoff of tap 0.
//
// Why no hardware gather: a gather fetches one float per lane, so the gather
// pass needed taps x channels gathers per 8 output pixels (6 for RGB
// bilinear) and a separate normalization pass, while the floats a pixel
// needs (R G B R G B) are contiguous.  Here pixel i of a group of 8 costs one
// or two 16-byte loads; pairing pixels i and i + 4 in the two lanes, a 4x4
// transpose per lane gives element j of all 8 pixels in vector j, in order.
// (A 16-pixel AVX-512 version measured no faster: by then the batch is bound
// by memory, not by this loop.)
//
// Reads up to 8 floats past the last tap's pixel: the caller pads v.
// With `stream` the rows must start on a cache line; only whole lines are
// streamed, since a line written partly by non-temporal stores leaves the
// write-combining buffer half full.  (Rows that start mid-line were measured
// slower streamed, even peeled to the next line, than with ordinary stores.)
template <int CS, int K>
__attribute__((target("avx2,fma"))) void fused_row_avx2(const float* v, const std::int32_t* off,
                                                         std::int64_t n, const FusedRows& o,
                                                         bool stream) {
  const std::int64_t stream_end = stream ? n / 16 * 16 : 0;
  // In locals: the stores through row[] could otherwise alias o, and the
  // compiler would reload every pointer and bias per group.
  float* const row[3] = {o.row[0], o.row[1], o.row[2]};
  const float* const w[3] = {o.w[0], o.w[1], o.w[2]};
  const __m256 bias[3] = {_mm256_set1_ps(o.bias[0]), _mm256_set1_ps(o.bias[1]),
                          _mm256_set1_ps(o.bias[2])};
  std::int64_t x = 0;
  for (; x + 8 <= n; x += 8) {
    const float* p[8];
    for (int i = 0; i < 8; ++i) p[i] = v + off[x + i];
    __m256 e[8];
    for (int j = 0; j < 4; ++j) e[j] = load_pair(p[j], p[j + 4]);
    transpose4_in_lanes(e[0], e[1], e[2], e[3]);
    if constexpr (K == 2) {
      for (int j = 0; j < 4; ++j) e[4 + j] = load_pair(p[j] + 4, p[j + 4] + 4);
      transpose4_in_lanes(e[4], e[5], e[6], e[7]);
    }
    for (int c = 0; c < 3; ++c) {
      __m256 acc = _mm256_fmadd_ps(_mm256_loadu_ps(w[c] + x), e[c], bias[c]);
      if constexpr (K == 2) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w[c] + n + x), e[CS + c], acc);
      if (x < stream_end) _mm256_stream_ps(row[c] + x, acc);
      else _mm256_storeu_ps(row[c] + x, acc);
    }
  }
  fused_pixels_scalar<CS, K>(v, off, n, o, x, n);
}

void fused_row(const Plan& pl, const float* v, const FusedRows& o, bool stream) {
  const std::int64_t n = pl.x1 - pl.x0;
  const std::int32_t* off = pl.oplanar.data();
  const bool four = pl.cm.src_channels == 4;
  if (pl.xtaps.taps == 1)
    return four ? fused_row_avx2<4, 1>(v, off, n, o, stream)
                : fused_row_avx2<3, 1>(v, off, n, o, stream);
  return four ? fused_row_avx2<4, 2>(v, off, n, o, stream)
              : fused_row_avx2<3, 2>(v, off, n, o, stream);
}

// Sixteen source bytes picked from a 128-byte window (lo, hi) by the byte
// indices at ix, zero-extended into 32-bit lanes and converted: one permute
// and one conversion.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) inline __m512 pick16(
    __m512i lo, __m512i hi, const std::uint8_t* ix) {
  const __mmask64 low_bytes = 0x1111111111111111ULL;  // byte 0 of each 32-bit lane
  return _mm512_cvtepi32_ps(
      _mm512_maskz_permutex2var_epi8(low_bytes, lo, _mm512_loadu_si512(ix), hi));
}

// Stores 8 float32 or float16 values (the first `m` of them).
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) inline void store8(
    void* d, __m256 v, __mmask8 m, bool half) {
  if (half)
    _mm_mask_storeu_epi16(d, m, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  else
    _mm256_mask_storeu_ps(d, m, v);
}

// One output row of the gathered bilinear pass (see plan_gathered) from its
// two source rows ra and rb, weights wy0 and wy1: for each group of 8 output
// pixels, three permutes per source row pick the taps' bytes, a vertical
// blend and a horizontal one (x weights times the gains, plus the bias) give
// the three channels, stored at column 8g.  Only the bytes the taps read
// are converted, against every source byte in the blend-first pass, and no
// intermediate row goes through memory: 64 RGB 480x640 -> 224x224 NCHW took
// 9.7 ms instead of 15.2 on one core.
// NHWC interleaves the channels with two more permutes; float16 converts in
// registers, rounding to nearest even as float_to_half does.
// With o.stream whole lines go out with non-temporal stores, one full line
// per store (two groups): streaming half lines measured slower than ordinary
// stores.  next[0..1], when set, are the rows the next output row reads: their
// lines are prefetched at the pace these are read (without, the batch above
// took 15 ms again).
template <bool kNHWC, bool kHalf>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx2,fma,f16c"))) void
gathered_row(const Plan& pl, const std::uint8_t* ra, const std::uint8_t* rb, float wy0, float wy1,
             const float* bias, const GatheredOut& o, const std::uint8_t* const* next) {
  const std::int64_t n = pl.x1 - pl.x0, groups = pl.gather.groups;
  const std::int64_t len = (pl.c1 - pl.c0) * pl.cm.src_channels;
  const std::int64_t stream_groups = !kNHWC && !kHalf && o.stream ? n / 16 * 2 : 0;
  const std::int32_t* base = pl.gather.base.data();
  const std::uint8_t* idx = pl.gather.index.data();
  const float* wx = pl.gather.weight.data();
  constexpr std::size_t kSize = kHalf ? 2 : 4;
  char* const o0 = static_cast<char*>(o.row[0]);
  char* const o1 = static_cast<char*>(o.row[1]);
  char* const o2 = static_cast<char*>(o.row[2]);
  const __m512 vy0 = _mm512_set1_ps(wy0), vy1 = _mm512_set1_ps(wy1);
  const __m512 bias01 = _mm512_insertf32x8(_mm512_set1_ps(bias[0]), _mm256_set1_ps(bias[1]), 1);
  const __m512 bias2 = _mm512_insertf32x8(_mm512_set1_ps(bias[2]), _mm256_setzero_ps(), 1);
  // NHWC: value j of the group's 24 is pixel j / 3, channel j % 3, taken from
  // [channel 0 | channel 1] (lanes 0-15) or channel 2 (lanes 16-23).
  alignas(64) static constexpr std::int32_t kInterleave[32] = {
      0, 8, 16, 1, 9, 17, 2, 10, 18, 3, 11, 19, 4, 12, 20, 5,
      13, 21, 6, 14, 22, 7, 15, 23, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m512i il0 = _mm512_load_si512(kInterleave), il1 = _mm512_load_si512(kInterleave + 16);
  std::int64_t ahead = 0;
  __m256 held[3];
  for (std::int64_t g = 0; g < groups; ++g) {
    if (next != nullptr)
      for (; ahead < len && ahead < base[g] + 128; ahead += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(next[0] + ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(next[1] + ahead), _MM_HINT_T0);
      }
    const std::uint8_t* wa = ra + base[g];
    const std::uint8_t* wb = rb + base[g];
    const __m512i alo = _mm512_loadu_si512(wa), ahi = _mm512_loadu_si512(wa + 64);
    const __m512i blo = _mm512_loadu_si512(wb), bhi = _mm512_loadu_si512(wb + 64);
    const std::uint8_t* ix = idx + g * 192;
    const float* w = wx + g * 48;
    __m512 p[3];
    for (int k = 0; k < 3; ++k)
      p[k] = _mm512_fmadd_ps(vy1, pick16(blo, bhi, ix + 64 * k),
                             _mm512_mul_ps(vy0, pick16(alo, ahi, ix + 64 * k)));
    const __m512 ch01 = _mm512_fmadd_ps(_mm512_loadu_ps(w + 16), p[1],
                                        _mm512_fmadd_ps(_mm512_loadu_ps(w), p[0], bias01));
    const __m512 ch2x = _mm512_fmadd_ps(_mm512_loadu_ps(w + 32), p[2], bias2);
    const __m256 c2 = _mm256_add_ps(_mm512_castps512_ps256(ch2x), _mm512_extractf32x8_ps(ch2x, 1));
    const std::int64_t x = 8 * g;
    const std::int64_t left = std::min<std::int64_t>(8, n - x);  // pixels in this group
    if constexpr (kNHWC) {
      const __m512 c2z = _mm512_castps256_ps512(c2);
      const __m512 v0 = _mm512_permutex2var_ps(ch01, il0, c2z);
      const __m256 v1 = _mm512_castps512_ps256(_mm512_permutex2var_ps(ch01, il1, c2z));
      const int values = static_cast<int>(3 * left);
      const __mmask16 m0 = static_cast<__mmask16>(values >= 16 ? 0xffff : (1u << values) - 1);
      const __mmask8 m1 = static_cast<__mmask8>(values > 16 ? (1u << (values - 16)) - 1 : 0);
      char* d = o0 + 3 * x * kSize;
      if constexpr (kHalf)
        _mm256_mask_storeu_epi16(
            d, m0, _mm512_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      else
        _mm512_mask_storeu_ps(d, m0, v0);
      store8(d + 16 * kSize, v1, m1, kHalf);
    } else {
      const __m256 c0 = _mm512_castps512_ps256(ch01), c1 = _mm512_extractf32x8_ps(ch01, 1);
      if (g < stream_groups) {
        if ((g & 1) == 0) {
          held[0] = c0, held[1] = c1, held[2] = c2;
        } else {
          const std::size_t at = (x - 8) * kSize;
          _mm512_stream_ps(reinterpret_cast<float*>(o0 + at),
                           _mm512_insertf32x8(_mm512_castps256_ps512(held[0]), c0, 1));
          _mm512_stream_ps(reinterpret_cast<float*>(o1 + at),
                           _mm512_insertf32x8(_mm512_castps256_ps512(held[1]), c1, 1));
          _mm512_stream_ps(reinterpret_cast<float*>(o2 + at),
                           _mm512_insertf32x8(_mm512_castps256_ps512(held[2]), c2, 1));
        }
      } else {
        const __mmask8 m = static_cast<__mmask8>((1u << left) - 1);
        store8(o0 + x * kSize, c0, m, kHalf);
        store8(o1 + x * kSize, c1, m, kHalf);
        store8(o2 + x * kSize, c2, m, kHalf);
      }
    }
  }
}

void gathered_row_any(const Plan& pl, const std::uint8_t* ra, const std::uint8_t* rb, float wy0,
                      float wy1, const float* bias, const GatheredOut& o,
                      const std::uint8_t* const* next) {
  if (o.nhwc)
    return o.half ? gathered_row<true, true>(pl, ra, rb, wy0, wy1, bias, o, next)
                  : gathered_row<true, false>(pl, ra, rb, wy0, wy1, bias, o, next);
  return o.half ? gathered_row<false, true>(pl, ra, rb, wy0, wy1, bias, o, next)
                : gathered_row<false, false>(pl, ra, rb, wy0, wy1, bias, o, next);
}
#else
void fused_row(const Plan&, const float*, const FusedRows&, bool) {}
void gathered_row_any(const Plan&, const std::uint8_t*, const std::uint8_t*, float, float,
                      const float*, const GatheredOut&, const std::uint8_t* const*) {}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
const bool kHaveVbmi = kHaveAvx512 && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512vbmi");
#else
const bool kHaveVbmi = false;
#endif
std::atomic<bool> gathered_on{true};
bool gathered_supported() { return kHaveVbmi && gathered_on.load(std::memory_order_relaxed); }

// Source row r of the image, columns c0.. packed: in place when the rows are
// contiguous, else copied into buf.
const std::uint8_t* packed_source_row(const ImageU8& im, const Plan& pl, std::int64_t r,
                                      std::vector<std::uint8_t>& buf) {
  if (pl.contiguous_rows) return im.data + r * im.row_stride + pl.c0 * pl.cm.src_channels;
  buf.resize(static_cast<std::size_t>((pl.c1 - pl.c0) * pl.cm.src_channels));
  pack_source_row(im, pl, r, buf.data());
  return buf.data();
}

// One output row through the gathered pass, written in place in any layout
// and dtype; only the padding columns of a letterbox are stored here.
template <typename OutT>
void write_gathered(OutT* const* dst, std::ptrdiff_t step, const ImageU8& im, const Plan& pl,
                    std::int64_t y, const PreprocessParams& p, const Affine& af, Scratch& s) {
  const std::int64_t n = pl.x1 - pl.x0;
  const std::int64_t* idx = &pl.ytaps.index[(y - pl.y0) * 2];
  const float* wy = &pl.ytaps.weight[(y - pl.y0) * 2];
  const std::uint8_t* ra = packed_source_row(im, pl, idx[0], s.packed);
  const std::uint8_t* rb = packed_source_row(im, pl, idx[1], s.packed_b);
  const std::uint8_t* next_rows[2];
  const std::uint8_t* const* next = nullptr;
  if (pl.contiguous_rows && y + 1 < pl.y1) {
    for (int t = 0; t < 2; ++t)
      next_rows[t] = im.data + pl.ytaps.index[(y + 1 - pl.y0) * 2 + t] * im.row_stride +
                     pl.c0 * pl.cm.src_channels;
    next = next_rows;
  }
  GatheredOut o;
  o.nhwc = step != 1;
  o.half = !std::is_same_v<OutT, float>;
  bool aligned = true;
  for (int k = 0; k < 3; ++k) {
    o.row[k] = dst[k] + pl.x0 * step;
    aligned &= (reinterpret_cast<std::uintptr_t>(o.row[k]) & 63) == 0;
  }
  o.stream = !o.nhwc && !o.half && aligned && n >= 128;
  gathered_row_any(pl, ra, rb, wy[0], wy[1], af.b, o, next);
  for (int k = 0; k < 3; ++k) {
    for (std::int64_t x = 0; x < pl.x0; ++x) store(dst[k] + x * step, af.pad[k]);
    for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst[k] + x * step, af.pad[k]);
  }
}

DLINFER_CLONES void horizontal_portable(const Plan& pl, Scratch& s) {
  const std::int64_t n = pl.x1 - pl.x0;
  const int K = pl.xtaps.taps;
  const std::int32_t* off = pl.xoff.data();
  const float* w = pl.xtaps.weight.data();
  float* h[4] = {s.hrow[0].data(), s.hrow[1].data(), s.hrow[2].data(), s.hrow[3].data()};
  switch (pl.cm.src_channels) {
    case 1: return resample_row_k<1>(off, w, K, n, s.vrow.data(), h);
    case 3: return resample_row_k<3>(off, w, K, n, s.vrow.data(), h);
    default: return resample_row_k<4>(off, w, K, n, s.vrow.data(), h);
  }
}

void horizontal(const Plan& pl, Scratch& s) {
  if (kHaveAvx2) return horizontal_avx2(pl, s);
  horizontal_portable(pl, s);
}

// Normalize and store one output channel row; float32 and float16 get their
// own clones so the affine loop vectorizes.
template <typename OutT>
DLINFER_INLINE void affine_store(OutT* d, std::ptrdiff_t step, const float* __restrict h,
                                 std::int64_t n, float a, float b) {
  if (step == 1)
    for (std::int64_t x = 0; x < n; ++x) store(d + x, h[x] * a + b);
  else
    for (std::int64_t x = 0; x < n; ++x) store(d + x * step, h[x] * a + b);
}
#if defined(__GNUC__) && defined(__x86_64__)
// Contiguous float32 rows go out with non-temporal stores: the batch is far
// larger than the caches, and streaming skips reading every output line
// before overwriting it (a third of the memory traffic).  Multiply then add,
// never fused, so the values equal the portable loop's.
__attribute__((target("avx2"))) void affine_stream_avx2(float* d, const float* h,
                                                        std::int64_t n, float a, float b) {
  std::int64_t x = 0;
  for (; x < n && (reinterpret_cast<std::uintptr_t>(d + x) & 31) != 0; ++x) d[x] = h[x] * a + b;
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (; x + 8 <= n; x += 8)
    _mm256_stream_ps(d + x, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(h + x), va), vb));
  for (; x < n; ++x) d[x] = h[x] * a + b;
}
#endif

DLINFER_CLONES void affine_store_any(float* d, std::ptrdiff_t step, const float* h,
                                     std::int64_t n, float a, float b) {
#if defined(__GNUC__) && defined(__x86_64__)
  // Only rows of whole cache lines: streaming a partial line (a 28-pixel MNIST
  // row is 112 bytes) makes the write-combining buffer flush it half empty.
  if (kHaveAvx2 && step == 1 && n >= 128 && (reinterpret_cast<std::uintptr_t>(d) & 3) == 0)
    return affine_stream_avx2(d, h, n, a, b);
#endif
  affine_store(d, step, h, n, a, b);
}
DLINFER_CLONES void affine_store_any(std::uint16_t* d, std::ptrdiff_t step, const float* h,
                                     std::int64_t n, float a, float b) {
  affine_store(d, step, h, n, a, b);
}

template <typename OutT>
void write_channel(OutT* dst, std::ptrdiff_t step, const float* h, const Plan& pl,
                   const PreprocessParams& p, const Affine& af, int k) {
  const float a = af.a[k], b = af.b[k], pad = af.pad[k];
  for (std::int64_t x = 0; x < pl.x0; ++x) store(dst + x * step, pad);
  affine_store_any(dst + pl.x0 * step, step, h, pl.x1 - pl.x0, a, b);
  for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst + x * step, pad);
}

#if defined(__GNUC__) && defined(__x86_64__)
const bool kHaveF16c = kHaveAvx2 && __builtin_cpu_supports("f16c");

// Channel rows a, b, c of n floats, interleaved into 3n floats at d.  Each 8
// pixels fill three vectors, each permuting the three rows by pixel and
// blending by channel.
__attribute__((target("avx2"))) void interleave3_avx2(float* d, const float* a, const float* b,
                                                     const float* c, std::int64_t n) {
  const __m256i p0 = _mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2);
  const __m256i p1 = _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5);
  const __m256i p2 = _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7);
  std::int64_t x = 0;
  for (; x + 8 <= n; x += 8, d += 24) {
    const __m256 va = _mm256_loadu_ps(a + x), vb = _mm256_loadu_ps(b + x),
                 vc = _mm256_loadu_ps(c + x);
    // The blend masks mark the lanes that hold channel 1, then channel 2.
    const __m256 a0 = _mm256_permutevar8x32_ps(va, p0), b0 = _mm256_permutevar8x32_ps(vb, p0),
                 c0 = _mm256_permutevar8x32_ps(vc, p0);
    _mm256_storeu_ps(d, _mm256_blend_ps(_mm256_blend_ps(a0, b0, 0x92), c0, 0x24));
    const __m256 a1 = _mm256_permutevar8x32_ps(va, p1), b1 = _mm256_permutevar8x32_ps(vb, p1),
                 c1 = _mm256_permutevar8x32_ps(vc, p1);
    _mm256_storeu_ps(d + 8, _mm256_blend_ps(_mm256_blend_ps(a1, b1, 0x24), c1, 0x49));
    const __m256 a2 = _mm256_permutevar8x32_ps(va, p2), b2 = _mm256_permutevar8x32_ps(vb, p2),
                 c2 = _mm256_permutevar8x32_ps(vc, p2);
    _mm256_storeu_ps(d + 16, _mm256_blend_ps(_mm256_blend_ps(a2, b2, 0x49), c2, 0x92));
  }
  for (; x < n; ++x, d += 3) d[0] = a[x], d[1] = b[x], d[2] = c[x];
}

// n floats to IEEE half, rounding to nearest even as float_to_half does.
__attribute__((target("avx2,f16c"))) void to_half_f16c(std::uint16_t* d, const float* v,
                                                       std::int64_t n) {
  std::int64_t x = 0;
  for (; x + 8 <= n; x += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + x),
                     _mm256_cvtps_ph(_mm256_loadu_ps(v + x),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; x < n; ++x) d[x] = float_to_half(v[x]);
}
#else
const bool kHaveF16c = false;
void interleave3_avx2(float*, const float*, const float*, const float*, std::int64_t) {}
void to_half_f16c(std::uint16_t*, const float*, std::int64_t) {}
#endif

// Stores three channel rows of n floats at column x0 of dst's rows, with the
// layout's step (1: NCHW, 3: NHWC) and dtype: interleaved and converted in
// vectors where the CPU allows, one value at a time otherwise.
template <typename OutT>
void store_channel_rows(OutT* const* dst, std::ptrdiff_t step, std::int64_t x0,
                        const float* const* h, std::int64_t n, Scratch& s) {
  if constexpr (std::is_same_v<OutT, float>) {
    if (kHaveAvx2 && step == 3) return interleave3_avx2(dst[0] + 3 * x0, h[0], h[1], h[2], n);
  } else if (kHaveF16c) {
    if (step == 3) {
      interleave3_avx2(s.mixed.data(), h[0], h[1], h[2], n);
      return to_half_f16c(dst[0] + 3 * x0, s.mixed.data(), 3 * n);
    }
    if (step == 1) {
      for (int k = 0; k < 3; ++k) to_half_f16c(dst[k] + x0, h[k], n);
      return;
    }
  }
  for (int k = 0; k < 3; ++k)
    for (std::int64_t x = 0; x < n; ++x) store(dst[k] + (x0 + x) * step, h[k][x]);
}

// Floats a fused row may read past the end of the vertically blended row.
constexpr std::int64_t kRowPad = 8;

// One output row through the fused pass: float32 rows with unit stride are
// written in place (streamed when whole aligned cache lines), anything else
// goes through hrow and is stored with the layout's stride and dtype, from
// the same float values.
template <typename OutT>
void write_fused(OutT* const* dst, std::ptrdiff_t step, const Plan& pl, const PreprocessParams& p,
                 const Affine& af, Scratch& s) {
  const std::int64_t n = pl.x1 - pl.x0, K = pl.xtaps.taps;
  const bool direct = std::is_same_v<OutT, float> && step == 1;
  bool aligned = true;
  FusedRows o;
  for (int k = 0; k < 3; ++k) {
    const int c = pl.cm.pick[k];
    o.row[c] = direct ? reinterpret_cast<float*>(dst[k] + pl.x0) : s.hrow[k].data();
    o.bias[c] = af.b[k];
    o.w[c] = pl.wfused.data() + k * K * n;
  }
  for (int c = 0; c < 3; ++c) aligned &= (reinterpret_cast<std::uintptr_t>(o.row[c]) & 63) == 0;
  // Whatever lies past the row is read only under weight 0; zeros keep even
  // the sign of a zero result independent of what the buffer held before.
  const std::int64_t len = (pl.c1 - pl.c0) * pl.cm.src_channels;
  std::fill(s.vrow.begin() + len, s.vrow.begin() + len + kRowPad, 0.0f);
  // Streaming pays only for rows of many whole cache lines; see affine_store_any.
  fused_row(pl, s.vrow.data(), o, direct && aligned && n >= 128);
  if (!direct) {
    const float* h[3] = {s.hrow[0].data(), s.hrow[1].data(), s.hrow[2].data()};
    store_channel_rows(dst, step, pl.x0, h, n, s);
  }
  for (int k = 0; k < 3; ++k) {
    for (std::int64_t x = 0; x < pl.x0; ++x) store(dst[k] + x * step, af.pad[k]);
    for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst[k] + x * step, af.pad[k]);
  }
}

// One source channel of a row segment as floats, for Plan::copy rows: the
// values the blend and the resampling would give with weights of exactly 1.
DLINFER_CLONES void u8_to_float(const std::uint8_t* src, std::ptrdiff_t stride, std::int64_t n,
                                float* __restrict dst) {
  if (stride == 1)
    for (std::int64_t x = 0; x < n; ++x) dst[x] = src[x];
  else
    for (std::int64_t x = 0; x < n; ++x) dst[x] = src[x * stride];
}

template <typename OutT>
void rows(const ImageU8& im, const Plan& pl, const PreprocessParams& p, const Affine& af,
          OutT* img_out, std::int64_t ya, std::int64_t yb, Scratch& s) {
  const std::int64_t H = p.out_height, W = p.out_width;
  const int C = pl.cm.out_channels;
  const bool nchw = p.layout == Layout::kNCHW;
  const std::ptrdiff_t step = nchw ? 1 : C;
  for (std::int64_t y = ya; y < yb; ++y) {
    auto dst = [&](int k) { return nchw ? img_out + (k * H + y) * W : img_out + y * W * C + k; };
    if (y < pl.y0 || y >= pl.y1) {
      for (int k = 0; k < C; ++k)
        for (std::int64_t x = 0; x < W; ++x) store(dst(k) + x * step, af.pad[k]);
      continue;
    }
    if (pl.copy) {
      const std::uint8_t* row = im.data + pl.ytaps.index[y - pl.y0] * im.row_stride +
                                pl.xtaps.index[0] * im.col_stride;
      float* h = s.hrow[0].data();
      for (int k = 0; k < C; ++k) {
        u8_to_float(row + pl.cm.pick[k] * im.channel_stride, im.col_stride, pl.x1 - pl.x0, h);
        write_channel(dst(k), step, h, pl, p, af, k);
      }
      continue;
    }
    if (pl.gathered) {
      OutT* const rows3[3] = {dst(0), dst(1), dst(2)};
      write_gathered(rows3, step, im, pl, y, p, af, s);
      continue;
    }
    vertical(im, pl, y, s);
    if (pl.fused) {
      OutT* const rows3[3] = {dst(0), dst(1), dst(2)};
      write_fused(rows3, step, pl, p, af, s);
      continue;
    }
    if (pl.cm.gray_mix) {
      horizontal(pl, s);
      const float *r = s.hrow[pl.cm.rgb[0]].data(), *g = s.hrow[pl.cm.rgb[1]].data(),
                  *b = s.hrow[pl.cm.rgb[2]].data();
      const float wr = static_cast<float>(kGrayWeights[0]),
                  wg = static_cast<float>(kGrayWeights[1]),
                  wb = static_cast<float>(kGrayWeights[2]);
      float* m = s.mixed.data();
      for (std::int64_t x = 0; x < pl.x1 - pl.x0; ++x) m[x] = wr * r[x] + wg * g[x] + wb * b[x];
      write_channel(dst(0), step, m, pl, p, af, 0);
      continue;
    }
    horizontal(pl, s);
    for (int k = 0; k < C; ++k)
      write_channel(dst(k), step, s.hrow[pl.cm.pick[k]].data(), pl, p, af, k);
  }
}

void check_image(const ImageU8& im, std::size_t i) {
  if (im.height < 1 || im.width < 1)
    throw std::invalid_argument("images[" + std::to_string(i) + "] is empty (" +
                                std::to_string(im.height) + "x" + std::to_string(im.width) + ")");
  if (im.data == nullptr)
    throw std::invalid_argument("images[" + std::to_string(i) + "] has no data");
}

template <typename OutT>
void batch(const ImageU8* images, std::size_t n, const PreprocessParams& p, OutT* out,
           int threads) {
  // A plan depends only on the image's size, colour order and whether its
  // rows are packed, so a batch of same-sized images (the usual case) builds
  // one plan, not one per image.
  std::vector<Plan> plans;
  std::vector<std::size_t> plan_of(n);
  std::map<std::tuple<std::int64_t, std::int64_t, int, bool>, std::size_t> seen;
  const std::int64_t blocks = (p.out_height + kRowBlock - 1) / kRowBlock;
  std::int64_t widest = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const ImageU8& im = images[i];
    check_image(im, i);
    const bool packed = im.col_stride == channels_of(im.order) && im.channel_stride == 1;
    const auto key = std::make_tuple(im.height, im.width, static_cast<int>(im.order), packed);
    auto [it, fresh] = seen.emplace(key, plans.size());
    if (fresh) {
      plans.push_back(make_plan(im, p));
      widest = std::max(widest, (plans.back().c1 - plans.back().c0) * plans.back().cm.src_channels);
    }
    plan_of[i] = it->second;
  }
  const Affine af = affine(p);
  const std::int64_t per_image = p.out_height * p.out_width * channels_of(p.color);
  // Work items are (image, block of kRowBlock output rows); which thread
  // runs an item never changes what it computes.  A thread is spawned per
  // call, which costs tens of microseconds (far more on a busy machine), so a
  // chunk must carry at least kMinChunkValues outputs to be worth one: 64 MNIST
  // digits (50k values) then run on the calling thread.
  const std::int64_t item_values = kRowBlock * p.out_width * channels_of(p.color);
  const auto grain = static_cast<std::size_t>((kMinChunkValues + item_values - 1) / item_values);
  parallel_for(n * static_cast<std::size_t>(blocks), threads, grain,
               [&](std::size_t begin, std::size_t end) {
                 Scratch s;
                 s.vrow.resize(std::max<std::int64_t>(widest, 1) + kRowPad);
                 for (auto& h : s.hrow) h.resize(p.out_width);
                 s.mixed.resize(3 * p.out_width);  // gray rows; NHWC float16 staging
                 for (std::size_t item = begin; item < end; ++item) {
                   const std::size_t i = item / blocks;
                   const std::int64_t b = static_cast<std::int64_t>(item % blocks);
                   const std::int64_t ya = b * kRowBlock;
                   const std::int64_t yb = std::min(p.out_height, ya + kRowBlock);
                   rows(images[i], plans[plan_of[i]], p, af, out + i * per_image, ya, yb, s);
                 }
#if defined(__GNUC__) && defined(__x86_64__)
                 _mm_sfence();  // make the streamed stores visible before the join
#endif
               });
}

template <typename OutT>
void batch_scalar(const ImageU8* images, std::size_t n, const PreprocessParams& p, OutT* out) {
  const std::int64_t H = p.out_height, W = p.out_width;
  const int C = channels_of(p.color);
  for (std::size_t i = 0; i < n; ++i) {
    const ImageU8& im = images[i];
    check_image(im, i);
    const Geometry g = compute_geometry(im.height, im.width, p);
    const ColorMap cm = color_map(im.order, p.color);
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
          store(img_out + at, static_cast<float>(norm));
        }
      }
  }
}

}  // namespace

bool set_gathered_bilinear(bool enabled) {
  gathered_on.store(enabled, std::memory_order_relaxed);
  return gathered_supported();
}

bool gathered_bilinear() { return gathered_supported(); }

void preprocess_batch_u8(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                         void* out, int threads) {
  check_params(p);
  if (p.dtype == OutDtype::kFloat32)
    batch(images, n, p, static_cast<float*>(out), threads);
  else
    batch(images, n, p, static_cast<std::uint16_t*>(out), threads);
}

void preprocess_batch_u8_scalar(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                                void* out) {
  check_params(p);
  if (p.dtype == OutDtype::kFloat32)
    batch_scalar(images, n, p, static_cast<float*>(out));
  else
    batch_scalar(images, n, p, static_cast<std::uint16_t*>(out));
}

}  // namespace dlinfer
