// The forward's input projection (gates = x @ W_ih^T + b for some unit
// blocks) alone, on one thread, both ways the AVX-512 kernels run it: the FMA
// chains (forward.h product_over_blocks on pack_gate_panel panels) and the
// AMX tiles (amx_projection.h: split_amx_rows + amx_project on
// pack_amx_gate_panel panels). Prints each one's median time, GFLOP/s, and
// largest error against a float64 product.
//   g++ -O3 -std=c++20 -mavx512f -mavx2 -mfma -DNDEBUG -Icsrc bench/amx_projection_loop.cpp -o /tmp/apl
//   /tmp/apl 256 128 4      (rows, K = input size, unit blocks of 16 units; these are the default)
#define FUSED_LSTM_CPU_ISA avx512
#include "cpu/forward.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <span>
#include <vector>

using namespace fused_lstm::cpu;
using namespace fused_lstm::cpu::avx512;


template <class Run> double median_seconds(Run run) {
  std::vector<double> times;
  for (int i = 0; i < 41; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int main(int argc, char** argv) {
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::atoll(argv[i]) : fallback; };
  const int64_t rows = arg(1, 256), K = arg(2, 128), blocks = arg(3, 4), H = blocks * 16;
  constexpr int64_t kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    std::printf("no AMX tile data for this process\n");
    return 0;
  }
  // 64-byte aligned, as the recurrence's workspace is (a tile row across two
  // cache lines costs the tiles half their speed).
  std::vector<std::unique_ptr<char, decltype(&std::free)>> buffers;
  auto buffer = [&]<class T>(T, int64_t count) {
    void* data = std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64);
    buffers.emplace_back(static_cast<char*>(data), &std::free);
    return std::span<T>(static_cast<T*>(data), count);
  };
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1, 1);
  auto x = buffer(0.0f, rows * K), w = buffer(0.0f, 4 * H * K), bias = buffer(0.0f, 4 * H);
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng) / std::sqrt(float(K));
  for (float& v : bias) v = uniform(rng);

  // Both kernels' panels, packed once (the recurrence packs them per call).
  auto panels = buffer(0.0f, blocks * K * 64), bias_panels = buffer(0.0f, blocks * 64);
  auto amx_panels = buffer(uint16_t(0), blocks * amx_gate_panel_values(K));
  auto a_tiles = buffer(uint16_t(0), amx_rows_values(rows, K));
  for (int64_t b = 0; b < blocks; ++b) {
    pack_gate_panel(w.data(), H, K, b, panels.data() + b * K * 64);
    pack_amx_gate_panel(panels.data() + b * K * 64, K, amx_panels.data() + b * amx_gate_panel_values(K));
    for (int g = 0; g < 4; ++g)
      for (int lane = 0; lane < 16; ++lane) bias_panels[(b * 4 + g) * 16 + lane] = bias[g * H + b * 16 + lane];
  }
  // Outputs [blocks][rows][4 gates][16], as gates_chunk.
  auto fma_out = buffer(0.0f, blocks * rows * 64), amx_out = buffer(0.0f, blocks * rows * 64);
  auto partial = buffer(0.0f, rows * 8 * 16 + 512);

  const double fma_s = median_seconds([&] {
    product_over_blocks<float, 4>(
        {0, blocks}, x.data(), K, rows, K, partial.data(), [&](int64_t b) { return panels.data() + b * K * 64; },
        [&](int64_t n, int64_t b, const Vec<float>* acc) {
          for (int g = 0; g < 4; ++g)
            (acc[g] + Vec<float>::load(bias_panels.data() + (b * 4 + g) * 16))
                .store(fma_out.data() + ((b * rows + n) * 4 + g) * 16);
        });
  });
  const double amx_s = median_seconds([&] {
    split_amx_rows(x.data(), K, rows, K, a_tiles.data());
    amx_project(
        a_tiles.data(), rows, K, 0, blocks, [](int64_t) { return true; },
        [&](int64_t b) { return amx_out.data() + b * rows * 64; },
        [&](int64_t b) { return amx_panels.data() + b * amx_gate_panel_values(K); },
        [&](int64_t b) { return bias_panels.data() + b * 64; }, partial.data());
  });

  double fma_error = 0, amx_error = 0;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t n = 0; n < rows; ++n)
      for (int g = 0; g < 4; ++g)
        for (int lane = 0; lane < 16; ++lane) {
          const int64_t unit = g * H + b * 16 + lane, at = ((b * rows + n) * 4 + g) * 16 + lane;
          double exact = bias[unit];
          for (int64_t k = 0; k < K; ++k) exact += double(x[n * K + k]) * w[unit * K + k];
          fma_error = std::max(fma_error, std::abs(fma_out[at] - exact));
          amx_error = std::max(amx_error, std::abs(amx_out[at] - exact));
        }
  const double flops = 2.0 * rows * K * 4 * H;
  std::printf("rows %lld, K %lld, %lld unit blocks (%lld outputs a row), one thread:\n", (long long)rows,
              (long long)K, (long long)blocks, (long long)(4 * H));
  std::printf("  FMA chains: %9.1f us  %6.1f GFLOP/s  max error %.2e\n", fma_s * 1e6, flops / fma_s / 1e9, fma_error);
  std::printf("  AMX tiles:  %9.1f us  %6.1f GFLOP/s  max error %.2e  (%.2fx)\n", amx_s * 1e6, flops / amx_s / 1e9,
              amx_error, fma_s / amx_s);
  return 0;
}
