// Standalone run of the recurrence kernels through simt, built with
// g++ -fsanitize=thread by tests/test_simt_tsan.py: the persistent kernels
// (forward in training mode, then backward), and the step kernels with a
// projection, their blocks run concurrently. ThreadSanitizer must find no race.
// Built with -DFUSED_LSTM_TEST_DROP_BARRIER (which removes one __syncthreads
// from the forward gate step) it must find one.
// Exit status: 0 when the kernels match the CPU recurrence, 1 otherwise.
#include <cmath>
#include <cstdio>
#include <vector>

#include "../cpu/lstm_recurrence.h"
#include "../cuda/lstm_recurrence_kernel.cuh"

using namespace fused_lstm;

namespace {

unsigned state = 12345;
float next_random() { return (state = state * 1103515245u + 12345u) / 4294967296.f - 0.5f; }
std::vector<float> random_vector(int64_t n, float scale) {
  std::vector<float> v(n);
  for (float& x : v) x = scale * next_random();
  return v;
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double error = 0;
  for (size_t i = 0; i < a.size(); ++i) error = std::fmax(error, std::fabs(a[i] - b[i]));
  return error;
}

// Forward (training) and backward on one path; returns max |simt - cpu|.
double run(RecurrencePath path, int64_t T, int64_t N, int64_t H, int64_t P) {
  const int64_t O = P > 0 ? P : H;
  std::vector<float> gates_x = random_vector(T * N * 4 * H, 2), w_hh = random_vector(4 * H * O, 1);
  std::vector<float> w_hr = random_vector(P * H, 1), h0 = random_vector(N * O, 1), c0 = random_vector(N * H, 1);
  LstmFwdParams p;
  p.sizes.seq_len = T, p.sizes.batch = N, p.sizes.hidden = H, p.sizes.proj_size = P, p.sizes.total_rows = T * N;
  p.gates_x = gates_x.data(), p.w_hh = w_hh.data(), p.w_hr = P > 0 ? w_hr.data() : nullptr;
  p.h0 = h0.data(), p.c0 = c0.data();
  std::vector<float> y(T * N * O), h_n(N * O), c_n(N * H), saved_gates(T * N * 4 * H), saved_c(T * N * H),
      saved_h(T * N * H);
  p.y = y.data(), p.h_n = h_n.data(), p.c_n = c_n.data();
  p.saved_gates = saved_gates.data(), p.saved_c = saved_c.data(), p.saved_h = P > 0 ? saved_h.data() : nullptr;
  std::vector<unsigned char> workspace(cuda::carve_forward_workspace(p, nullptr).bytes);
  p.workspace = workspace.data(), p.workspace_bytes = int64_t(workspace.size());
  p.path = path;
  cuda::launch_lstm_forward<DType::kFloat32>(p);

  LstmFwdParams q = p;
  std::vector<float> y_cpu(y.size()), h_cpu(h_n.size()), c_cpu(c_n.size());
  q.y = y_cpu.data(), q.h_n = h_cpu.data(), q.c_n = c_cpu.data();
  q.saved_gates = nullptr, q.saved_c = nullptr, q.saved_h = nullptr;
  cpu::lstm_forward(q);
  double error = std::fmax(max_difference(y, y_cpu), std::fmax(max_difference(h_n, h_cpu), max_difference(c_n, c_cpu)));

  LstmBwdParams b;
  b.sizes = p.sizes, b.w_hh = w_hh.data(), b.w_hr = p.w_hr, b.c0 = c0.data();
  b.saved_gates = saved_gates.data(), b.saved_c = saved_c.data(), b.saved_h = p.saved_h;
  std::vector<float> grad_y = random_vector(y.size(), 1), grad_h_n = random_vector(N * O, 1),
                     grad_c_n = random_vector(N * H, 1);
  b.grad_y = grad_y.data(), b.grad_h_n = grad_h_n.data(), b.grad_c_n = grad_c_n.data();
  std::vector<float> grad_gates(gates_x.size()), grad_h_out(T * N * O), grad_h0(N * O), grad_c0(N * H);
  b.grad_gates = grad_gates.data(), b.grad_h_out = P > 0 ? grad_h_out.data() : nullptr;
  b.grad_h0 = grad_h0.data(), b.grad_c0 = grad_c0.data();
  std::vector<unsigned char> bwd_workspace(cuda::carve_backward_workspace(b, nullptr).bytes);
  b.workspace = bwd_workspace.data(), b.workspace_bytes = int64_t(bwd_workspace.size());
  b.path = path;
  cuda::launch_lstm_backward<DType::kFloat32>(b);

  LstmBwdParams r = b;
  std::vector<float> gg_cpu(grad_gates.size()), gho_cpu(grad_h_out.size()), gh_cpu(N * O), gc_cpu(N * H);
  r.grad_gates = gg_cpu.data(), r.grad_h_out = P > 0 ? gho_cpu.data() : nullptr;
  r.grad_h0 = gh_cpu.data(), r.grad_c0 = gc_cpu.data();
  cpu::lstm_backward(r);
  error = std::fmax(error, std::fmax(max_difference(grad_gates, gg_cpu), max_difference(grad_h0, gh_cpu)));
  error = std::fmax(error, std::fmax(max_difference(grad_c0, gc_cpu), max_difference(grad_h_out, gho_cpu)));
  return error;
}

}  // namespace

int main() {
  simt::DeviceModel& device = simt::device_model();
  device.sm_count = 2, device.block_threads = 64;  // 2 co-resident blocks of 2 warps
  device.concurrent_blocks = true;
  try {
    const double persistent = run(RecurrencePath::kPersistent, 3, 2, 13, 0);
    const double step = run(RecurrencePath::kStep, 2, 2, 11, 5);
    std::printf("max |simt - cpu|: persistent %g, step with projection %g\n", persistent, step);
    return persistent < 1e-5 && step < 1e-5 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
