// The CPU backward's weight gradients (csrc/cpu/weight_grads.h, dW_ih and
// dW_hh from a chunk's grad_gates) alone, without the recurrence around them:
// each member thread runs WeightGradients::run_chunk over a sequence's chunks
// for its own gate rows, as the backward does. Prints the median time and
// GFLOP/s, to compare with bench/fma_peak.cpp's peak.
//   g++ -O3 -std=c++20 -mavx512f -mavx2 -mfma -DNDEBUG -Icsrc -pthread bench/weight_grads_loop.cpp -o /tmp/wgl
//   /tmp/wgl 2
// Arguments: members (default 2), T, N, I, H (default 100 16 128 128), 1 for
// the AMX tiles (amx_weight_grads.h; default 0, the FMA chains).
#define FUSED_LSTM_CPU_ISA avx512
#include "cpu/weight_grads.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <vector>

using namespace fused_lstm;
using namespace fused_lstm::cpu;

int main(int argc, char** argv) {
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::atoll(argv[i]) : fallback; };
  const int members = static_cast<int>(arg(1, 2));
  const int64_t T = arg(2, 100), N = arg(3, 16), I = arg(4, 128), H = arg(5, 128), rows = T * N;
  constexpr int64_t W = avx512::Vec<float>::width;

  // 64-byte aligned, as torch's tensors and the recurrence's workspace are.
  std::vector<std::unique_ptr<float[], decltype(&std::free)>> buffers;
  auto buffer = [&](int64_t count, bool random) {
    float* data = static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64));
    buffers.emplace_back(data, &std::free);
    std::mt19937 rng(static_cast<unsigned>(buffers.size()));
    std::uniform_real_distribution<float> uniform(-1, 1);
    for (int64_t i = 0; i < count; ++i) data[i] = random ? uniform(rng) : 0.0f;
    return data;
  };
  float *grad_gates = buffer(rows * 4 * H, true), *x = buffer(rows * I, true), *y = buffer(rows * H, true);
  float *h0 = buffer(N * H, true), *grad_w_ih = buffer(4 * H * I, false), *grad_w_hh = buffer(4 * H * H, false);

  LstmBwdParams p;
  p.sizes.seq_len = T;
  p.sizes.batch = N;
  p.sizes.hidden = H;
  p.sizes.total_rows = rows;
  p.input_size = I;
  p.x = x;
  p.y = y;
  p.h0 = h0;
  p.grad_gates = grad_gates;
  p.grad_w_ih = grad_w_ih;
  p.grad_w_hh = grad_w_hh;

  // Sized as lstm_recurrence.cpp's run_backward sizes them.
  RecurrencePlan plan;
  plan.backward = &p;
  plan.members = members;
  plan.width = W;
  plan.unit_blocks = (H + W - 1) / W;
  plan.out_blocks = plan.unit_blocks;
  plan.input_blocks = (I + W - 1) / W;
  plan.grad_chunk_steps = std::min(T, (kWeightGradChunkRows + N - 1) / N);
  plan.grad_chunk_rows = plan.grad_chunk_steps * N;
  std::vector<const float*> row_pointers(members * 3 * plan.grad_chunk_rows);
  plan.row_pointers = row_pointers.data();
  const int64_t blocks_per_member = (plan.unit_blocks + members - 1) / members;
  // 1 as the sixth argument: on AMX tiles (amx_weight_grads.h), where the process may use them.
  plan.amx_weight_grads = arg(6, 0) == 1 && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                                    18 /* XFEATURE_XTILEDATA */) == 0;
  int64_t scratch_values = kGradBlockRows * 4 * blocks_per_member * W;
  if (plan.amx_weight_grads) scratch_values = std::max(scratch_values, amx_grad_scratch_floats(4 * blocks_per_member, I, H));
  float* scratch = buffer(members * scratch_values, false);

  // The unit partition, one chain per element (batch_split 0): each member
  // its own gate rows over every row.
  auto member = [&](int m) {
    avx512::WeightGradients<float>::prepare(plan, m);
    avx512::WeightGradients<float> grads(plan, m, avx512::owned_blocks(plan.unit_blocks, plan, m),
                                         avx512::owned_blocks(plan.input_blocks, plan, m), {0, N});
    for (int64_t t_last = T - 1; t_last >= 0; t_last -= plan.grad_chunk_steps) {
      const int64_t t_first = std::max<int64_t>(0, t_last - plan.grad_chunk_steps + 1);
      grads.run_chunk(t_first, t_last, t_first * N, scratch + m * scratch_values);
    }
    avx512::WeightGradients<float>::finish(plan, m);
  };
  std::vector<double> times;
  for (int rep = 0; rep < 200; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int m = 1; m < members; ++m) workers.emplace_back(member, m);
    member(0);
    for (auto& worker : workers) worker.join();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2], flops = 2.0 * rows * 4 * H * (I + H);
  std::printf("T=%lld N=%lld I=%lld H=%lld, %d members%s: %.3f ms, %.1f GFLOP/s (thread starts included)\n",
              static_cast<long long>(T), static_cast<long long>(N), static_cast<long long>(I),
              static_cast<long long>(H), members, plan.amx_weight_grads ? ", AMX tiles" : "", median,
              flops / median / 1e6);
}
