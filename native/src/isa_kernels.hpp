// The interface between the dispatching code and the per-ISA kernels.
//
// Each kernel body (conv2d_microkernel.inc, pool_microkernel.inc) is compiled
// once per instruction set, in its own translation unit with its own flags
// (isa_generic.cpp, isa_avx2.cpp, isa_avx512.cpp), and picked at run time with
// __builtin_cpu_supports.  Wheels are built without -march=native, and
// onnxruntime dispatches the same way, so this is how we keep up with it.
//
// Only this header and <cstddef> may be included by the ISA translation
// units: an inline function from a standard header compiled there with AVX
// enabled could be chosen by the linker for every caller, and crash on a CPU
// without AVX.
#pragma once

#include <cstddef>

namespace dlinfer::isa {

// One convolution, ready for the microkernel: the input is already padded,
// the weights packed per group into blocks of `cb` output channels:
// wpack[g][blk][ky][kx][ci][cb], zero beyond cout_g.
struct ConvJob {
  const float* x;  // (n, hp, wp, c), padded
  int hp, wp, c;
  const float* wpack;
  const float* bias;  // [groups][nblk][cb] (zeros when there is no bias)
  float* y;           // (n, ho, wo, cout)
  int n, ho, wo, cout;
  int kh, kw, sh, sw, dh, dw;
  int groups, cin_g, cout_g, nblk;
  int wchunk;          // output pixels per task, a multiple of the tile width
  int chunks_per_row;  // ceil(wo / wchunk)
};

// Max/avg pooling over an unpadded NHWC input; taps outside are skipped.
struct PoolJob {
  const float* x;
  float* y;
  int n, h, w, c;
  int kh, kw, sh, sw, pt, pl;
  int ho, wo;
  int pb, pr;               // trailing pads, for count_include_pad
  int count_include_pad;
};

struct Kernels {
  const char* name;
  int conv_cb;  // output channels per block
  int conv_p;   // output pixels per register tile
  // Runs tasks [begin, end); task t is output row t / chunks_per_row, pixel
  // chunk t % chunks_per_row, across every group and block.  Writes
  // conv + bias, without activation.
  void (*conv_tasks)(const ConvJob&, std::size_t begin, std::size_t end);
  // Runs output rows [begin, end) of n*ho.
  void (*max_pool_rows)(const PoolJob&, std::size_t begin, std::size_t end);
  void (*avg_pool_rows)(const PoolJob&, std::size_t begin, std::size_t end);
};

Kernels generic_kernels();
Kernels avx2_kernels();
Kernels avx512_kernels();

// The kernels for this CPU (or the ones forced by set_kernel_isa).
const Kernels& active();

}  // namespace dlinfer::isa
