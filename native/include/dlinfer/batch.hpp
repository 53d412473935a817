// Fused image preprocessing: uint8 HWC images of any size -> one float batch.
//
// Plain C++: no Python, raw buffers only.  One pass per image does
//
//   resize (nearest | bilinear | area) -> center crop or letterbox ->
//   colour conversion (gray <-> RGB, channel order, alpha drop) ->
//   out = (x * scale - mean[c]) / std[c] -> float32 or float16, NHWC or NCHW
//
// straight into slot i of a preallocated batch.  Nothing is rounded to uint8
// on the way: interpolated values stay float until the single final store.
// The normalization is evaluated as normalize_u8_to_f32_nhwc evaluates it,
// bit for bit (native/src/preprocess/affine.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dlinfer {

// Colour order of an input image.  The channel count follows from it.
enum class PixelOrder { kGray, kRGB, kBGR, kRGBA, kBGRA };
// Colour order the model takes: 1 or 3 channels.
enum class OutColor { kGray, kRGB, kBGR };
enum class ResizeMode { kNearest, kBilinear, kArea };
// kStretch: resize to the output size, ignoring aspect ratio.
// kCrop: resize so the image covers the output (shorter side first), scaled up
//        by 1/crop_ratio, then take the centre (ImageNet: 224 / 0.875 = 256).
// kLetterbox: resize so the image fits inside the output, pad the rest.
enum class Fit { kStretch, kCrop, kLetterbox };
enum class Layout { kNHWC, kNCHW };
enum class OutDtype { kFloat32, kFloat16 };
// Which pass bilinear colour batches take.  kAuto: the gathered one (AVX-512
// VBMI byte permutes, see preprocess/rows_avx512.cpp) where the CPU has it and
// the image's shape allows it, else the blend-first one.  kGathered: the same,
// but check_params refuses it on a CPU without VBMI.  kBlendFirst: never the
// gathered pass (what a CPU without VBMI runs), to compare the two.
enum class BilinearPass { kAuto, kGathered, kBlendFirst };

int channels_of(PixelOrder order);
int channels_of(OutColor color);

// One input image: element (y, x, c) is at data[y*row_stride + x*col_stride +
// c*channel_stride].  Strides are in bytes and may be negative, so NumPy
// slices and flipped views are read in place.
struct ImageU8 {
  const std::uint8_t* data = nullptr;
  std::int64_t height = 0, width = 0;
  std::ptrdiff_t row_stride = 0, col_stride = 0, channel_stride = 1;
  PixelOrder order = PixelOrder::kRGB;
};

struct PreprocessParams {
  std::int64_t out_height = 0, out_width = 0;
  OutColor color = OutColor::kRGB;
  ResizeMode resize = ResizeMode::kBilinear;
  Fit fit = Fit::kStretch;
  double crop_ratio = 1.0;  // kCrop only, in (0, 1]
  float pad = 0.0f;         // kLetterbox only: pixel value (0..255 scale) of the border
  float scale = 1.0f / 255.0f;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  Layout layout = Layout::kNHWC;
  OutDtype dtype = OutDtype::kFloat32;
  BilinearPass bilinear_pass = BilinearPass::kAuto;
};

// Where the resized image lands in the output: output pixel (y, x) shows
// resized pixel (y - top, x - left).  Letterbox has top/left >= 0 (the pad);
// a centre crop has top/left <= 0 (the part cut off).
struct Geometry {
  std::int64_t resized_height = 0, resized_width = 0;
  std::int64_t top = 0, left = 0;
};

// Throws std::invalid_argument on sizes < 1, a bad crop ratio, non-finite or
// zero std, a pass the CPU cannot run, and so on.  Messages name the parameter.
void check_params(const PreprocessParams& p);
Geometry compute_geometry(std::int64_t height, std::int64_t width, const PreprocessParams& p);

// Source taps of one axis: resized coordinate r reads source pixels
// index[r*taps + t] with weights weight[r*taps + t].  Every coordinate has
// the same number of taps; unused ones carry weight 0 on a valid index.
struct AxisTaps {
  int taps = 1;
  std::vector<std::int64_t> index;
  std::vector<float> weight;
};
// Taps for resized coordinates [begin, end) of an axis resized from `in` to `out`.
AxisTaps axis_taps(ResizeMode mode, std::int64_t in, std::int64_t out, std::int64_t begin,
                   std::int64_t end);

// Fills out[0 .. n) with the preprocessed images.  `out` is C-contiguous,
// shape (n, H, W, C) for NHWC or (n, C, H, W) for NCHW, of float32 or float16
// (IEEE half, stored as uint16).  Work is split into fixed blocks of output
// rows, each computed the same way whichever thread runs it, so the result is
// bit-identical for every thread count.
void preprocess_batch_u8(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                         void* out, int threads);

// The straightforward per-pixel loop (double arithmetic, no tables, one
// thread) that preprocess_batch_u8 is tested against.
void preprocess_batch_u8_scalar(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                                void* out);

// Whether this CPU can run the gathered bilinear pass (BilinearPass), which
// kAuto then takes where the image's shape allows.
bool gathered_bilinear_supported();

// IEEE half from float, rounding to nearest even (as NumPy's astype does).
std::uint16_t float_to_half(float f);

}  // namespace dlinfer
