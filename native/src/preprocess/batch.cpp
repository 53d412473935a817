// The batch driver of the fused preprocessing pass: plans per image shape,
// work items of output rows spread over threads, and per row the pass its
// plan chose (copy, gathered, fused or blend-first), through the row kernels
// picked for this CPU (row_kernels.hpp).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>
#include <type_traits>
#include <vector>

#include "affine.hpp"
#include "dlinfer/batch.hpp"
#include "dlinfer/parallel.hpp"
#include "plan.hpp"
#include "row_kernels.hpp"

#if DLINFER_X86_GNU
#include <immintrin.h>
#endif

namespace dlinfer {
namespace prep {
namespace {

constexpr std::int64_t kRowBlock = 16;  // output rows per work item
constexpr std::int64_t kMinChunkValues = 1 << 17;  // outputs per thread, at least

// How many output rows ahead the blend prefetches.
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
  row_kernels().blend(s.rowptr.data(), w, K, len, v, next);
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
  row_kernels().gathered_row(pl, ra, rb, wy[0], wy[1], af.b, o, next);
  for (int k = 0; k < 3; ++k) {
    for (std::int64_t x = 0; x < pl.x0; ++x) store(dst[k] + x * step, af.pad[k]);
    for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst[k] + x * step, af.pad[k]);
  }
}

// Normalize and store one output channel row.
void normalize_row(float* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                   float b) {
  row_kernels().affine_f32(d, step, h, n, a, b);
}
void normalize_row(std::uint16_t* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                   float b) {
  affine_store_portable(d, step, h, n, a, b);
}

template <typename OutT>
void write_channel(OutT* dst, std::ptrdiff_t step, const float* h, const Plan& pl,
                   const PreprocessParams& p, const Affine& af, int k) {
  const float a = af.a[k], b = af.b[k], pad = af.pad[k];
  for (std::int64_t x = 0; x < pl.x0; ++x) store(dst + x * step, pad);
  normalize_row(dst + pl.x0 * step, step, h, pl.x1 - pl.x0, a, b);
  for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst + x * step, pad);
}

// Stores three channel rows of n floats at column x0 of dst's rows, with the
// layout's step (1: NCHW, 3: NHWC) and dtype: interleaved and converted in
// vectors where the CPU allows, one value at a time otherwise.
template <typename OutT>
void store_channel_rows(OutT* const* dst, std::ptrdiff_t step, std::int64_t x0,
                        const float* const* h, std::int64_t n, Scratch& s) {
  const RowKernels& rk = row_kernels();
  if constexpr (std::is_same_v<OutT, float>) {
    if (rk.interleave3 && step == 3) return rk.interleave3(dst[0] + 3 * x0, h[0], h[1], h[2], n);
  } else if (rk.to_half && rk.interleave3) {
    if (step == 3) {
      rk.interleave3(s.mixed.data(), h[0], h[1], h[2], n);
      return rk.to_half(dst[0] + 3 * x0, s.mixed.data(), 3 * n);
    }
    if (step == 1) {
      for (int k = 0; k < 3; ++k) rk.to_half(dst[k] + x0, h[k], n);
      return;
    }
  }
  for (int k = 0; k < 3; ++k)
    for (std::int64_t x = 0; x < n; ++x) store(dst[k] + (x0 + x) * step, h[k][x]);
}

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
  // Streaming pays only for rows of many whole cache lines; see affine_store_avx2.
  row_kernels().fused_row(pl, s.vrow.data(), o, direct && aligned && n >= 128);
  if (!direct) {
    const float* h[3] = {s.hrow[0].data(), s.hrow[1].data(), s.hrow[2].data()};
    store_channel_rows(dst, step, pl.x0, h, n, s);
  }
  for (int k = 0; k < 3; ++k) {
    for (std::int64_t x = 0; x < pl.x0; ++x) store(dst[k] + x * step, af.pad[k]);
    for (std::int64_t x = pl.x1; x < p.out_width; ++x) store(dst[k] + x * step, af.pad[k]);
  }
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
      row_kernels().horizontal(pl, s);
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
    row_kernels().horizontal(pl, s);
    for (int k = 0; k < C; ++k)
      write_channel(dst(k), step, s.hrow[pl.cm.pick[k]].data(), pl, p, af, k);
  }
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
#if DLINFER_X86_GNU
                 _mm_sfence();  // make the streamed stores visible before the join
#endif
               });
}

}  // namespace
}  // namespace prep

void preprocess_batch_u8(const ImageU8* images, std::size_t n, const PreprocessParams& p,
                         void* out, int threads) {
  check_params(p);
  if (p.dtype == OutDtype::kFloat32)
    prep::batch(images, n, p, static_cast<float*>(out), threads);
  else
    prep::batch(images, n, p, static_cast<std::uint16_t*>(out), threads);
}

}  // namespace dlinfer
