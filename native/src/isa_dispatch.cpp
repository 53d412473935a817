// Picks the per-ISA kernels at run time, from the one CPU-feature table
// (dlinfer/cpu_features.hpp).
#include <atomic>
#include <stdexcept>
#include <string>

#include "dlinfer/conv2d.hpp"
#include "dlinfer/cpu_features.hpp"
#include "dlinfer/nn_common.hpp"
#include "isa_kernels.hpp"

namespace dlinfer {
namespace isa {
namespace {

// Whether this CPU and this build can run the kernels compiled for `isa`.
bool cpu_has(const std::string& isa) {
#if defined(DLINFER_HAVE_X86_ISAS)
  if (isa == "avx2") return cpu_features().avx2;
  if (isa == "avx512") return cpu_features().avx512;
#endif
  return isa == "generic";
}

Kernels pick(const std::string& isa) {
#if defined(DLINFER_HAVE_X86_ISAS)
  if (isa == "avx512") return avx512_kernels();
  if (isa == "avx2") return avx2_kernels();
#endif
  (void)isa;
  return generic_kernels();
}

Kernels best() {
  for (const char* isa : {"avx512", "avx2"})
    if (cpu_has(isa)) return pick(isa);
  return generic_kernels();
}

// Written only by set_kernel_isa (a test/benchmark switch), read by every
// kernel call; the table entries are immutable, so an atomic index suffices.
Kernels g_table[4];
std::atomic<int> g_active{-1};

}  // namespace

void set_window(WindowJob& j, const float* x, int h, int w, int c, float* y, const Window2d& s) {
  j.x = x;
  j.h = h;
  j.w = w;
  j.c = c;
  j.y = y;
  j.n = s.n;
  j.ho = s.out_h;
  j.wo = s.out_w;
  j.kh = s.kh;
  j.kw = s.kw;
  j.sh = s.stride_h;
  j.sw = s.stride_w;
}

const Kernels& active() {
  int i = g_active.load(std::memory_order_acquire);
  if (i < 0) {
    set_kernel_isa("auto");
    i = g_active.load(std::memory_order_acquire);
  }
  return g_table[i];
}

}  // namespace isa

const char* kernel_isa() { return isa::active().name; }

void set_kernel_isa(const char* name) {
  using namespace isa;
  static bool filled = [] {
    g_table[0] = best();
    g_table[1] = generic_kernels();
#if defined(DLINFER_HAVE_X86_ISAS)
    g_table[2] = avx2_kernels();
    g_table[3] = avx512_kernels();
#endif
    return true;
  }();
  (void)filled;
  const std::string want(name);
  int index = -1;
  if (want == "auto") index = 0;
  else if (want == "generic") index = 1;
  else if (want == "avx2" || want == "avx512") {
    if (!cpu_has(want))
      throw std::invalid_argument("isa '" + want + "' is not supported by this CPU or build");
    index = want == "avx2" ? 2 : 3;
  } else {
    throw std::invalid_argument("isa must be auto, generic, avx2 or avx512, got '" + want + "'");
  }
  g_active.store(index, std::memory_order_release);
}

}  // namespace dlinfer
