// Shared by the AVX2 and AVX-512 row kernels; include only where
// DLINFER_X86_GNU holds.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace dlinfer::prep {

// Software prefetch of the next output row's source rows, a cache line of
// each per 64 bytes blended here.  Downscaling skips source rows, and a 4 KiB
// page holds only two or three of them (the hardware streamer does not cross
// pages), so the hardware prefetchers alone left the blend waiting on memory:
// this cut the whole 64x480x640 -> 224x224 batch by about a third.
//
// always_inline, not just inline: left to itself GCC (12) splits the loop
// below out of line, finds the void function "pure" (to it a prefetch is no
// side effect) and deletes every call as dead, so the blends ran without a
// single prefetch.  Inlined, the prefetches stay in the blend loops, and the
// blend-first pass of the batch above takes a third to a half less time.
__attribute__((always_inline)) inline void prefetch_next_rows(const std::uint8_t* const* next,
                                                              int K, std::int64_t j) {
  if (next == nullptr || (j & 63) != 0) return;
  for (int t = 0; t < K; ++t) _mm_prefetch(reinterpret_cast<const char*>(next[t] + j), _MM_HINT_T0);
}

}  // namespace dlinfer::prep
