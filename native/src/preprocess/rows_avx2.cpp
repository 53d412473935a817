// The AVX2 + FMA row kernels: the vertical blend, the gathered horizontal
// pass, the fused horizontal pass (normalization folded into the weights),
// streamed normalization and the NHWC interleave.  Each function carries its
// own target attribute, so this file builds with the baseline flags and the
// table in dispatch.cpp calls in only on a CPU with AVX2 and FMA.
#include "dlinfer/cpu_features.hpp"

#if DLINFER_X86_GNU
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "affine.hpp"
#include "row_kernels.hpp"
#include "x86.hpp"

namespace dlinfer::prep {
namespace {

// Eight bytes -> eight floats in two instructions (the auto-vectorizer goes
// through 16-bit lanes and needs four).
__attribute__((target("avx2,fma"))) inline __m256 load8_u8(const std::uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

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

// Pixels [xa, xb) of fused_row_t one at a time, with the same roundings.
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
__attribute__((target("avx2,fma"))) void fused_row_t(const float* v, const std::int32_t* off,
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

// Contiguous float32 rows go out with non-temporal stores: the batch is far
// larger than the caches, and streaming skips reading every output line
// before overwriting it (a third of the memory traffic).  The normalization
// rule of affine.hpp, fma(h, a, b), eight values at a time.
__attribute__((target("avx2,fma"))) void affine_stream_avx2(float* d, const float* h,
                                                             std::int64_t n, float a, float b) {
  std::int64_t x = 0;
  for (; x < n && (reinterpret_cast<std::uintptr_t>(d + x) & 31) != 0; ++x)
    d[x] = normalize_value(h[x], a, b);
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (; x + 8 <= n; x += 8)
    _mm256_stream_ps(d + x, _mm256_fmadd_ps(_mm256_loadu_ps(h + x), va, vb));
  for (; x < n; ++x) d[x] = normalize_value(h[x], a, b);
}

}  // namespace

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

void fused_row_avx2(const Plan& pl, const float* v, const FusedRows& o, bool stream) {
  const std::int64_t n = pl.x1 - pl.x0;
  const std::int32_t* off = pl.oplanar.data();
  const bool four = pl.cm.src_channels == 4;
  if (pl.xtaps.taps == 1)
    return four ? fused_row_t<4, 1>(v, off, n, o, stream)
                : fused_row_t<3, 1>(v, off, n, o, stream);
  return four ? fused_row_t<4, 2>(v, off, n, o, stream)
              : fused_row_t<3, 2>(v, off, n, o, stream);
}

void affine_store_avx2(float* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                       float b) {
  // Only rows of whole cache lines: streaming a partial line (a 28-pixel MNIST
  // row is 112 bytes) makes the write-combining buffer flush it half empty.
  if (step == 1 && n >= 128 && (reinterpret_cast<std::uintptr_t>(d) & 3) == 0)
    return affine_stream_avx2(d, h, n, a, b);
  affine_store_portable(d, step, h, n, a, b);
}

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

}  // namespace dlinfer::prep
#endif  // DLINFER_X86_GNU
