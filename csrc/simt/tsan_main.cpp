// Standalone run of the persistent recurrence kernels (forward, training; then
// backward) through simt, built with
// g++ -fsanitize=thread by tests/test_simt_tsan.py: ThreadSanitizer must find
// no race in them. Built with -DFUSED_LSTM_TEST_DROP_BARRIER (which removes one
// __syncthreads from the forward gate step) it must find one.
// Exit status: 0 when the kernels match the CPU recurrence, 1 otherwise.
#include <cmath>
#include <cstdio>
#include <vector>

#include "../cpu/lstm_recurrence.h"
#include "../cuda/lstm_recurrence_kernel.cuh"

using namespace fused_lstm;

int main() {
  simt::DeviceModel& device = simt::device_model();
  device.sm_count = 2, device.block_threads = 64;  // 2 co-resident blocks of 2 warps
  const int64_t T = 3, N = 2, H = 13;
  std::vector<float> gates_x(T * N * 4 * H), w_hh(4 * H * H), h0(N * H), c0(N * H);
  unsigned state = 12345;
  const auto next = [&] { return (state = state * 1103515245u + 12345u) / 4294967296.f - 0.5f; };
  for (float& v : gates_x) v = 2 * next();
  for (float& v : w_hh) v = next() / 2;
  for (float& v : h0) v = next();
  for (float& v : c0) v = next();

  LstmFwdParams p;
  p.sizes.seq_len = T, p.sizes.batch = N, p.sizes.hidden = H, p.sizes.total_rows = T * N;
  p.gates_x = gates_x.data(), p.w_hh = w_hh.data(), p.h0 = h0.data(), p.c0 = c0.data();
  std::vector<float> y(T * N * H), h_n(N * H), c_n(N * H), saved_gates(T * N * 4 * H), saved_c(T * N * H);
  p.y = y.data(), p.h_n = h_n.data(), p.c_n = c_n.data();
  p.saved_gates = saved_gates.data(), p.saved_c = saved_c.data();
  std::vector<unsigned char> workspace(cuda::carve_forward_workspace(p, nullptr).bytes);
  p.workspace = workspace.data(), p.workspace_bytes = int64_t(workspace.size());
  p.path = RecurrencePath::kPersistent;
  try {
    cuda::launch_lstm_forward<DType::kFloat32>(p);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }

  LstmFwdParams q = p;
  std::vector<float> y_cpu(y.size()), h_cpu(h_n.size()), c_cpu(c_n.size());
  q.y = y_cpu.data(), q.h_n = h_cpu.data(), q.c_n = c_cpu.data(), q.saved_gates = nullptr, q.saved_c = nullptr;
  cpu::lstm_forward(q);
  double error = 0;
  for (size_t i = 0; i < y.size(); ++i) error = std::fmax(error, std::fabs(y[i] - y_cpu[i]));
  for (size_t i = 0; i < c_n.size(); ++i) error = std::fmax(error, std::fabs(c_n[i] - c_cpu[i]));

  // Backward, persistent, from the kernel's saved values.
  LstmBwdParams b;
  b.sizes = p.sizes, b.w_hh = w_hh.data(), b.c0 = c0.data();
  b.saved_gates = saved_gates.data(), b.saved_c = saved_c.data();
  std::vector<float> grad_y(y.size()), grad_h_n(N * H), grad_c_n(N * H);
  for (float& v : grad_y) v = next();
  for (float& v : grad_h_n) v = next();
  for (float& v : grad_c_n) v = next();
  b.grad_y = grad_y.data(), b.grad_h_n = grad_h_n.data(), b.grad_c_n = grad_c_n.data();
  std::vector<float> grad_gates(gates_x.size()), grad_h0(N * H), grad_c0(N * H);
  b.grad_gates = grad_gates.data(), b.grad_h0 = grad_h0.data(), b.grad_c0 = grad_c0.data();
  std::vector<unsigned char> bwd_workspace(cuda::carve_backward_workspace(b, nullptr).bytes);
  b.workspace = bwd_workspace.data(), b.workspace_bytes = int64_t(bwd_workspace.size());
  b.path = RecurrencePath::kPersistent;
  try {
    cuda::launch_lstm_backward<DType::kFloat32>(b);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  LstmBwdParams r = b;
  std::vector<float> gg_cpu(grad_gates.size()), gh_cpu(N * H), gc_cpu(N * H);
  r.grad_gates = gg_cpu.data(), r.grad_h0 = gh_cpu.data(), r.grad_c0 = gc_cpu.data();
  cpu::lstm_backward(r);
  for (size_t i = 0; i < gg_cpu.size(); ++i) error = std::fmax(error, std::fabs(grad_gates[i] - gg_cpu[i]));
  for (size_t i = 0; i < gh_cpu.size(); ++i) error = std::fmax(error, std::fabs(grad_h0[i] - gh_cpu[i]));
  for (size_t i = 0; i < gc_cpu.size(); ++i) error = std::fmax(error, std::fabs(grad_c0[i] - gc_cpu[i]));
  std::printf("max |simt - cpu| = %g\n", error);
  return error < 1e-5 ? 0 : 1;
}
