// The AVX-512 row kernels: the vertical blend sixteen floats at a time, and
// the gathered bilinear pass (AVX-512 VBMI byte permutes; see plan_gathered).
// Each function carries its own target attribute; the table in dispatch.cpp
// calls in only on a CPU with the features they need.
#include "dlinfer/cpu_features.hpp"

#if DLINFER_X86_GNU
// GCC 12 says its own _mm512_undefined_* values "may be used uninitialized"
// once inlined here (GCC bug 105593, fixed in 13): they are undefined on
// purpose.  Silenced for this file, before the intrinsics headers it points into.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "row_kernels.hpp"
#include "x86.hpp"

namespace dlinfer::prep {
namespace {

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

}  // namespace

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
  if (j == len) return;  // no call for an empty tail
  const std::uint8_t* rest[2] = {r[0] + j, r[1] + j};
  blend_rows_avx2(rest, w, K, len - j, v + j, nullptr);
}

void gathered_row_vbmi(const Plan& pl, const std::uint8_t* ra, const std::uint8_t* rb, float wy0,
                       float wy1, const float* bias, const GatheredOut& o,
                       const std::uint8_t* const* next) {
  if (o.nhwc)
    return o.half ? gathered_row<true, true>(pl, ra, rb, wy0, wy1, bias, o, next)
                  : gathered_row<true, false>(pl, ra, rb, wy0, wy1, bias, o, next);
  return o.half ? gathered_row<false, true>(pl, ra, rb, wy0, wy1, bias, o, next)
                : gathered_row<false, false>(pl, ra, rb, wy0, wy1, bias, o, next);
}

}  // namespace dlinfer::prep
#endif  // DLINFER_X86_GNU
