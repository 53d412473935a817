// The one table of CPU features, detected once per process, that every
// run-time dispatch reads: the conv/pool kernel tables (isa_dispatch.cpp) and
// the preprocessing row kernels (preprocess/dispatch.cpp).  Wheels are built
// without -march=native, so the wide bodies are compiled with per-function or
// per-file target flags and chosen here, once, so that every thread of every
// call runs the same code and results do not depend on the thread count.
#pragma once

// DLINFER_X86_GNU: GCC or Clang targeting x86-64, the only compilers and
// target for which the AVX bodies (intrinsics, __attribute__((target))) are
// compiled.  Anywhere else (MSVC, ARM, ...) only the portable code is built and
// every feature below reads false.
#if defined(__GNUC__) && defined(__x86_64__)
#define DLINFER_X86_GNU 1
#else
#define DLINFER_X86_GNU 0
#endif

namespace dlinfer {

struct CpuFeatures {
  bool avx2 = false;    // AVX2 and FMA (the core of x86-64-v3)
  bool f16c = false;    // F16C, with avx2
  bool avx512 = false;  // AVX-512F, with avx2
  // AVX-512 F, BW, DQ, VL and VBMI (Ice Lake, Zen 4 and later): the byte
  // permutes of the gathered bilinear pass.
  bool avx512_vbmi = false;
};

// Detected on first use (thread-safe), then constant.
const CpuFeatures& cpu_features();

}  // namespace dlinfer
