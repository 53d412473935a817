// The preprocessing row kernels for this CPU, picked once from the one
// CPU-feature table (dlinfer/cpu_features.hpp).
#include "row_kernels.hpp"

namespace dlinfer::prep {
namespace {

RowKernels pick(const CpuFeatures& f) {
  RowKernels k{"portable", blend_rows_portable, horizontal_portable, affine_store_portable,
               nullptr,    nullptr,             nullptr,             nullptr};
#if DLINFER_X86_GNU
  if (f.avx2) {
    k.name = "avx2";
    k.blend = blend_rows_avx2;
    k.horizontal = horizontal_avx2;
    k.affine_f32 = affine_store_avx2;
    k.interleave3 = interleave3_avx2;
    k.fused_row = fused_row_avx2;
  }
  if (f.f16c) k.to_half = to_half_f16c;
  if (f.avx512) {
    k.name = "avx512";
    k.blend = blend_rows_avx512;
  }
  if (f.avx512_vbmi) {
    k.name = "avx512-vbmi";
    k.gathered_row = gathered_row_vbmi;
  }
#else
  (void)f;
#endif
  return k;
}

}  // namespace

const RowKernels& row_kernels() {
  static const RowKernels kernels = pick(cpu_features());
  return kernels;
}

}  // namespace dlinfer::prep

namespace dlinfer {

bool gathered_bilinear_supported() { return prep::row_kernels().gathered_row != nullptr; }

}  // namespace dlinfer
