// Deterministic fork-join over an index range.
//
// Work is split into contiguous chunks whose boundaries depend only on the
// range and the chunk count, and every index is computed by exactly one
// thread with no shared accumulators, so results are bit-identical for any
// thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace dlinfer {

// Resolves a user thread request: 0 or negative means "all cores".
inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// Calls fn(begin, end) over [0, n) using up to `threads` threads.  `grain` is
// the smallest chunk worth a thread of its own: spawning costs tens of
// microseconds, so tiny inputs run on the calling thread.
template <typename Fn>
void parallel_for(std::size_t n, int threads, std::size_t grain, Fn&& fn) {
  if (n == 0) return;
  grain = std::max<std::size_t>(grain, 1);
  const std::size_t max_chunks = (n + grain - 1) / grain;
  const std::size_t chunks =
      std::min<std::size_t>(static_cast<std::size_t>(resolve_threads(threads)), max_chunks);
  if (chunks <= 1) {
    fn(std::size_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(chunks);
  workers.reserve(chunks - 1);
  auto run_chunk = [&](std::size_t c) {
    const std::size_t begin = n * c / chunks;
    const std::size_t end = n * (c + 1) / chunks;
    try {
      fn(begin, end);
    } catch (...) {
      errors[c] = std::current_exception();
    }
  };
  for (std::size_t c = 1; c < chunks; ++c) workers.emplace_back(run_chunk, c);
  run_chunk(0);
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace dlinfer
