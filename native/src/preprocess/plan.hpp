// Internal to the fused preprocessing pass (dlinfer/batch.hpp): what is
// decided once per image shape (the Plan), the per-thread scratch rows, and
// the small helpers every row path shares.  No Python, no intrinsics.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dlinfer/batch.hpp"
#include "half.hpp"

namespace dlinfer::prep {

constexpr double kGrayWeights[3] = {0.299, 0.587, 0.114};  // ITU-R BT.601, as PIL and OpenCV
// Floats a fused row may read past the end of the vertically blended row.
constexpr std::int64_t kRowPad = 8;

// Which source channels feed each output channel.
struct ColorMap {
  int src_channels = 1, out_channels = 1;
  bool gray_mix = false;  // gray output from a colour source
  int pick[3] = {0, 0, 0};
  int rgb[3] = {0, 0, 0};  // source positions of R, G, B
};

ColorMap color_map(PixelOrder in, OutColor out);

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

// The plan of one image.  Which pass it takes depends only on the CPU, the
// parameters and the image's shape, never on the thread or the output
// buffer, so every thread count computes the same values.
Plan make_plan(const ImageU8& im, const PreprocessParams& p);

struct Scratch {
  std::vector<float> vrow;               // vertically blended source row, interleaved
  std::vector<float> hrow[4];            // horizontally resampled, one per source channel
  std::vector<float> mixed;              // gray mixed from colour; NHWC half staging
  std::vector<const std::uint8_t*> rowptr;
  std::vector<std::uint8_t> packed;      // strided source rows, packed
  std::vector<std::uint8_t> packed_b;    // the second source row, packed
};

// Throws std::invalid_argument naming images[i] if it is empty or has no data.
void check_image(const ImageU8& im, std::size_t i);

// Source row r of an image with any strides, columns c0 .. c1, copied into dst
// as packed interleaved bytes.
void pack_source_row(const ImageU8& im, const Plan& pl, std::int64_t r, std::uint8_t* dst);

// Source row r of the image, columns c0.. packed: in place when the rows are
// contiguous, else copied into buf.
const std::uint8_t* packed_source_row(const ImageU8& im, const Plan& pl, std::int64_t r,
                                      std::vector<std::uint8_t>& buf);

inline void store(float* d, float v) { *d = v; }
inline void store(std::uint16_t* d, float v) { *d = half_from_float(v); }

}  // namespace dlinfer::prep
