// This machine's float32 FMA peak, the yardstick for the benchmark's GFLOP/s.
// Independent FMA chains (enough to cover latency x units) on each thread:
//   g++ -O2 -march=native -pthread bench/fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak
// Prints GFLOP/s for AVX-512 (if built with it) and AVX2, 1 and all threads.
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <algorithm>
#include <vector>

// 12 independent accumulators: covers 4-cycle latency x 2 FMA ports with room.
#define FMA_PEAK_KERNEL(NAME, V, FMA, SET)                                       \
  double NAME(long iterations) {                                                \
    V a0 = SET(0.f), a1 = SET(1e-3f), a2 = SET(2e-3f), a3 = SET(3e-3f);           \
    V a4 = SET(4e-3f), a5 = SET(5e-3f), a6 = SET(6e-3f), a7 = SET(7e-3f);         \
    V a8 = SET(8e-3f), a9 = SET(9e-3f), a10 = SET(1e-2f), a11 = SET(1.1e-2f);     \
    const V m = SET(0.999999f), b = SET(1e-7f);                                 \
    for (long it = 0; it < iterations; ++it) {                                  \
      a0 = FMA(a0, m, b); a1 = FMA(a1, m, b); a2 = FMA(a2, m, b);               \
      a3 = FMA(a3, m, b); a4 = FMA(a4, m, b); a5 = FMA(a5, m, b);               \
      a6 = FMA(a6, m, b); a7 = FMA(a7, m, b); a8 = FMA(a8, m, b);               \
      a9 = FMA(a9, m, b); a10 = FMA(a10, m, b); a11 = FMA(a11, m, b);           \
    }                                                                           \
    V s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;          \
    return reinterpret_cast<float*>(&s)[0];                                     \
  }
FMA_PEAK_KERNEL(run256, __m256, _mm256_fmadd_ps, _mm256_set1_ps)
#if defined(__AVX512F__)
FMA_PEAK_KERNEL(run512, __m512, _mm512_fmadd_ps, _mm512_set1_ps)
#endif

template <class Fn> double gflops(Fn fn, int threads, long iterations, int lanes) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t) team.emplace_back([&] { volatile double s = fn(iterations); (void)s; });
  for (auto& t : team) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * 12 * lanes * iterations * threads / seconds / 1e9;
}

int main() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const long iterations = 200000000 / 12;
  for (int threads : {1, cores}) {
    double best256 = 0, best512 = 0;
    for (int rep = 0; rep < 5; ++rep) {
      best256 = std::max(best256, gflops(run256, threads, iterations, 8));
#if defined(__AVX512F__)
      best512 = std::max(best512, gflops(run512, threads, iterations, 16));
#endif
    }
    std::printf("threads %d: AVX2 %.1f GFLOP/s, AVX-512 %.1f GFLOP/s (best of 5)\n", threads, best256, best512);
  }
}
