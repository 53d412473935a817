// The row kernels of the fused preprocessing pass, one body per instruction
// set, and the table the batch driver calls them through.
//
// Same scheme as the conv/pool kernels (isa_kernels.hpp): the bodies are
// compiled for their ISA (here with __attribute__((target)) per function, in
// rows_avx2.cpp and rows_avx512.cpp), the table is filled once from
// cpu_features() (dispatch.cpp), and every thread reads the same table, so the
// code that runs, and so the result, never depends on the thread count.
// Entries a CPU cannot run are null; the portable ones (rows_portable.cpp)
// are always there.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dlinfer/cpu_features.hpp"
#include "plan.hpp"

// DLINFER_CLONES: hot portable loops get an AVX2+FMA clone next to the
// baseline one, picked by the loader (GCC's target_clones; elsewhere one body).
#if DLINFER_X86_GNU && !defined(__clang__)
#define DLINFER_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DLINFER_CLONES
#endif
#if defined(__GNUC__)
#define DLINFER_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define DLINFER_INLINE __forceinline
#else
#define DLINFER_INLINE inline
#endif

namespace dlinfer::prep {

// Where the fused pass writes source channel c: the output row of the
// channel that picks it, with that channel's bias and gain-scaled weights.
struct FusedRows {
  float* row[3];
  float bias[3];
  const float* w[3];  // tap t of pixel x at w[c][t * n + x]
};

// Where gathered_row writes: NCHW, the three channel rows at column x0;
// NHWC, row[0] at pixel x0's first channel.  float32 or float16.
struct GatheredOut {
  void* row[3];
  bool nhwc = false, half = false;
  bool stream = false;  // NCHW float32 only: rows start on a cache line
};

struct RowKernels {
  const char* name;
  // Vertical pass: v[j] = sum_t w[t] * r[t][j], j < len.  `next`, when set,
  // holds the K rows the next output row reads, to prefetch.
  void (*blend)(const std::uint8_t* const* r, const float* w, int K, std::int64_t len, float* v,
                const std::uint8_t* const* next);
  // Horizontal pass of the blended row s.vrow into s.hrow[c], per source channel.
  void (*horizontal)(const Plan& pl, Scratch& s);
  // d[x * step] = normalized h[x] for x < n (float32 output).
  void (*affine_f32)(float* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                     float b);
  // Channel rows a, b, c of n floats interleaved into 3n floats at d; or null.
  void (*interleave3)(float* d, const float* a, const float* b, const float* c, std::int64_t n);
  // n floats to IEEE half, rounding as half_from_float does; or null.
  void (*to_half)(std::uint16_t* d, const float* v, std::int64_t n);
  // The fused horizontal pass (see rows_avx2.cpp); or null.
  void (*fused_row)(const Plan& pl, const float* v, const FusedRows& o, bool stream);
  // The gathered bilinear pass (see rows_avx512.cpp); or null.
  void (*gathered_row)(const Plan& pl, const std::uint8_t* ra, const std::uint8_t* rb, float wy0,
                       float wy1, const float* bias, const GatheredOut& o,
                       const std::uint8_t* const* next);
};

// The kernels for this CPU, chosen once.
const RowKernels& row_kernels();

// rows_portable.cpp: every CPU.
void blend_rows_portable(const std::uint8_t* const* r, const float* w, int K, std::int64_t len,
                         float* v, const std::uint8_t* const* next);
void horizontal_portable(const Plan& pl, Scratch& s);
void affine_store_portable(float* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                           float b);
void affine_store_portable(std::uint16_t* d, std::ptrdiff_t step, const float* h, std::int64_t n,
                           float a, float b);
// One source channel of a row segment as floats, for Plan::copy rows: the
// values the blend and the resampling would give with weights of exactly 1.
void u8_to_float(const std::uint8_t* src, std::ptrdiff_t stride, std::int64_t n, float* dst);

#if DLINFER_X86_GNU
// rows_avx2.cpp: AVX2 + FMA (F16C for to_half_f16c).
void blend_rows_avx2(const std::uint8_t* const* r, const float* w, int K, std::int64_t len,
                     float* v, const std::uint8_t* const* next);
void horizontal_avx2(const Plan& pl, Scratch& s);
void affine_store_avx2(float* d, std::ptrdiff_t step, const float* h, std::int64_t n, float a,
                       float b);
void interleave3_avx2(float* d, const float* a, const float* b, const float* c, std::int64_t n);
void to_half_f16c(std::uint16_t* d, const float* v, std::int64_t n);
void fused_row_avx2(const Plan& pl, const float* v, const FusedRows& o, bool stream);
// rows_avx512.cpp: AVX-512F, and BW, DQ, VL, VBMI for the gathered pass.
void blend_rows_avx512(const std::uint8_t* const* r, const float* w, int K, std::int64_t len,
                       float* v, const std::uint8_t* const* next);
void gathered_row_vbmi(const Plan& pl, const std::uint8_t* ra, const std::uint8_t* rb, float wy0,
                       float wy1, const float* bias, const GatheredOut& o,
                       const std::uint8_t* const* next);
#endif

}  // namespace dlinfer::prep
