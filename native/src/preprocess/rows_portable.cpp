// The portable row kernels: plain loops that any compiler vectorizes, with an
// AVX2+FMA clone beside the baseline one where GCC builds for x86-64.  Every
// CPU can run them; the blend-first pass is these plus, where the CPU has
// them, the AVX2 bodies of rows_avx2.cpp.
#include <cstddef>
#include <cstdint>

#include "affine.hpp"
#include "row_kernels.hpp"

namespace dlinfer::prep {
namespace {

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

// Normalize (affine.hpp) and store one output channel row; float32 and
// float16 get their own clones so the loop vectorizes.  The x86-64-v3 clone's
// std::fma is one instruction; the baseline clone calls the C library's
// fmaf, slower but with the same result.
template <typename OutT>
DLINFER_INLINE void affine_store(OutT* d, std::ptrdiff_t step, const float* __restrict h,
                                 std::int64_t n, float a, float b) {
  if (step == 1)
    for (std::int64_t x = 0; x < n; ++x) store(d + x, normalize_value(h[x], a, b));
  else
    for (std::int64_t x = 0; x < n; ++x) store(d + x * step, normalize_value(h[x], a, b));
}

}  // namespace

DLINFER_CLONES void blend_rows_portable(const std::uint8_t* const* r, const float* w, int K,
                                        std::int64_t len, float* __restrict v,
                                        const std::uint8_t* const* /*next*/) {
  if (K == 1) return blend_rows<1>(r, w, len, v);
  if (K == 2) return blend_rows<2>(r, w, len, v);
  blend_rows<1>(r, w, len, v);
  for (int t = 1; t < K; ++t) {
    const std::uint8_t* __restrict rt = r[t];
    const float wt = w[t];
    for (std::int64_t j = 0; j < len; ++j) v[j] += wt * rt[j];
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

DLINFER_CLONES void affine_store_portable(float* d, std::ptrdiff_t step, const float* h,
                                          std::int64_t n, float a, float b) {
  affine_store(d, step, h, n, a, b);
}
DLINFER_CLONES void affine_store_portable(std::uint16_t* d, std::ptrdiff_t step, const float* h,
                                     std::int64_t n, float a, float b) {
  affine_store(d, step, h, n, a, b);
}

DLINFER_CLONES void u8_to_float(const std::uint8_t* src, std::ptrdiff_t stride, std::int64_t n,
                                float* __restrict dst) {
  if (stride == 1)
    for (std::int64_t x = 0; x < n; ++x) dst[x] = src[x];
  else
    for (std::int64_t x = 0; x < n; ++x) dst[x] = src[x * stride];
}

}  // namespace dlinfer::prep
