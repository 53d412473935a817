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

namespace dlinfer {

struct Window2d;

namespace isa {

// What every sliding-window job carries: its input as the kernel reads it,
// its output, and the window with its strides.
struct WindowJob {
  const float* x;  // (n, h, w, c)
  int h, w, c;
  float* y;  // (n, ho, wo, channels)
  int n, ho, wo;
  int kh, kw, sh, sw;
};

// Fills j's WindowJob fields: x (n, h, w, c), y, and the rest from the
// geometry s.  Defined in isa_dispatch.cpp, so that no ISA translation unit
// needs Window2d.
void set_window(WindowJob& j, const float* x, int h, int w, int c, float* y, const Window2d& s);

// One convolution, ready for the microkernel: the input is already padded
// (h and w count the pads), the weights packed per group into blocks of `cb`
// output channels: wpack[g][blk][ky][kx][ci][cb], zero beyond cout_g.
struct ConvJob : WindowJob {
  const float* wpack;
  const float* bias;  // [groups][nblk][cb] (zeros when there is no bias)
  int cout;  // y's channels
  int dh, dw;
  int groups, cin_g, cout_g, nblk;
  int wchunk;          // output pixels per task, a multiple of the tile width
  int chunks_per_row;  // ceil(wo / wchunk)
};

// Max/avg pooling over an unpadded NHWC input; taps outside are skipped.
struct PoolJob : WindowJob {
  int pt, pl;
  int pb, pr;  // trailing pads, for count_include_pad
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

}  // namespace isa
}  // namespace dlinfer
