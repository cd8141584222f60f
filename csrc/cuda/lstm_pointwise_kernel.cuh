// Device code and launch template of the pointwise cell kernel: one thread per
// (batch row, hidden unit); reads 4 pre-activation gates and c_{t-1}, writes
// h_t, c_t and, when training, the activated gates.
#pragma once
#include "../common/check.h"
#include "../common/lstm_math.h"
#include "launch.cuh"
#include "lstm_pointwise.h"
#include "storage.cuh"

namespace fused_lstm::cuda {

constexpr int kPointwiseThreads = 256;

template <DType D>
__global__ void __launch_bounds__(kPointwiseThreads) lstm_pointwise_kernel(LstmPointwiseParams p) {
  using T = storage_t<D>;
  using Acc = acc_t<T>;
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= p.batch * p.hidden) return;
  const int64_t n = index / p.hidden, j = index % p.hidden, H = p.hidden;
  const T* pre = static_cast<const T*>(p.pre_gates) + n * 4 * H;
  Acc c, h;
  const LstmGates<Acc> g = lstm_cell_forward(to_acc(pre[j]), to_acc(pre[H + j]), to_acc(pre[2 * H + j]),
                                             to_acc(pre[3 * H + j]),
                                             to_acc(static_cast<const T*>(p.c_prev)[index]), c, h);
  static_cast<T*>(p.c)[index] = from_acc<T>(c);
  static_cast<T*>(p.h)[index] = from_acc<T>(h);
  if (p.saved_gates) {
    Acc* saved = static_cast<Acc*>(p.saved_gates) + n * 4 * H;
    saved[j] = g.i, saved[H + j] = g.f, saved[2 * H + j] = g.g, saved[3 * H + j] = g.o;
  }
}

template <DType D> void launch_lstm_pointwise(const LstmPointwiseParams& p) {
  const int64_t count = p.batch * p.hidden;
  if (count == 0) return;
  const int64_t blocks = (count + kPointwiseThreads - 1) / kPointwiseThreads;
  FUSED_LSTM_CHECK_ARG(blocks < (int64_t(1) << 31), "batch*hidden=", count);
  LaunchConfig config;
  config.grid = unsigned(blocks);
  config.block = kPointwiseThreads;
  config.stream = p.stream;
  launch(lstm_pointwise_kernel<D>, config, p);
}

}  // namespace fused_lstm::cuda
