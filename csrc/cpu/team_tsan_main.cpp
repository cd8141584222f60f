// ThreadSanitizer over the CPU recurrence's thread team (tests/test_cpu_team_tsan.py):
// a training forward, then the backward with every weight gradient inside,
// on one member and on two, dense and packed. Two members run the backward
// in batch slices at N = 10, T = 33 (lstm_recurrence.cpp plan_batch_slices),
// in the unit partition at N = 3. No race may be reported, and two members must give the bits of one.
// Built with g++ -fsanitize=thread from the portable kernels only.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../common/params.h"
#include "lstm_recurrence.h"

using namespace fused_lstm;

namespace {

std::vector<float> random_vector(size_t count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  std::vector<float> values(count);
  for (float& v : values) v = uniform(rng);
  return values;
}

struct Gradients {
  std::vector<float> grad_gates, grad_h0, grad_c0, grad_x, grad_w_ih, grad_w_hh, grad_bias;
  bool operator==(const Gradients& other) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return same(grad_gates, other.grad_gates) && same(grad_h0, other.grad_h0) && same(grad_c0, other.grad_c0) &&
           same(grad_x, other.grad_x) && same(grad_w_ih, other.grad_w_ih) && same(grad_w_hh, other.grad_w_hh) &&
           same(grad_bias, other.grad_bias);
  }
};

// batch_sizes empty: dense. Returns the backward's outputs on `threads` members.
Gradients run(int64_t T, int64_t N, int64_t I, int64_t H, const std::vector<int64_t>& batch_sizes, int threads) {
  int64_t rows = T * N;
  if (!batch_sizes.empty()) {
    rows = 0;
    for (int64_t b : batch_sizes) rows += b;
  }
  std::vector<float> x = random_vector(rows * I, 1), w_ih = random_vector(4 * H * I, 2), w_hh = random_vector(4 * H * H, 3);
  std::vector<float> b_ih = random_vector(4 * H, 4), b_hh = random_vector(4 * H, 5);
  std::vector<float> h0 = random_vector(N * H, 6), c0 = random_vector(N * H, 7);
  std::vector<float> y(rows * H), h_n(N * H), c_n(N * H), saved_gates(rows * 4 * H), saved_c(rows * H);
  LstmFwdParams p;
  p.sizes.seq_len = T, p.sizes.batch = N, p.sizes.hidden = H, p.sizes.total_rows = rows;
  p.sizes.batch_sizes = batch_sizes.empty() ? nullptr : batch_sizes.data();
  p.input_size = I, p.x = x.data(), p.w_ih = w_ih.data(), p.b_ih = b_ih.data(), p.b_hh = b_hh.data();
  p.w_hh = w_hh.data(), p.h0 = h0.data(), p.c0 = c0.data();
  p.y = y.data(), p.h_n = h_n.data(), p.c_n = c_n.data(), p.saved_gates = saved_gates.data(), p.saved_c = saved_c.data();
  p.num_threads = threads;
  cpu::lstm_forward(p);

  std::vector<float> grad_y = random_vector(rows * H, 8), grad_h_n = random_vector(N * H, 9);
  Gradients g{std::vector<float>(rows * 4 * H), std::vector<float>(N * H), std::vector<float>(N * H),
              std::vector<float>(rows * I),     std::vector<float>(4 * H * I), std::vector<float>(4 * H * H),
              std::vector<float>(4 * H)};
  LstmBwdParams b;
  b.sizes = p.sizes, b.w_hh = w_hh.data(), b.c0 = c0.data();
  b.saved_gates = saved_gates.data(), b.saved_c = saved_c.data();
  b.grad_y = grad_y.data(), b.grad_h_n = grad_h_n.data();
  b.grad_gates = g.grad_gates.data(), b.grad_h0 = g.grad_h0.data(), b.grad_c0 = g.grad_c0.data();
  b.input_size = I, b.x = x.data(), b.w_ih = w_ih.data(), b.y = y.data(), b.h0 = h0.data();
  b.grad_x = g.grad_x.data(), b.grad_w_ih = g.grad_w_ih.data(), b.grad_w_hh = g.grad_w_hh.data();
  b.grad_bias = g.grad_bias.data();
  b.num_threads = threads;
  cpu::lstm_backward(b);
  return g;
}

}  // namespace

int main() {
  cpu::set_cpu_team("threads");
  cpu::set_min_step_work(0);  // two members even at these sizes
  int failures = 0;
  struct Case {
    const char* name;
    int64_t T, N, I, H;
    std::vector<int64_t> batch_sizes;
  };
  std::vector<int64_t> ragged(33);  // 10 sequences of 33 down to 3 steps
  for (int64_t t = 0; t < 33; ++t) ragged[t] = t < 3 ? 10 : 10 - (t - 3) / 3;
  const Case cases[] = {
      {"batch slices, dense", 33, 10, 6, 12, {}},
      {"batch slices, packed", 33, 10, 6, 12, ragged},
      {"unit partition", 33, 3, 6, 12, {}},
  };
  for (const Case& c : cases) {
    const bool same = run(c.T, c.N, c.I, c.H, c.batch_sizes, 2) == run(c.T, c.N, c.I, c.H, c.batch_sizes, 1);
    std::printf("%s: two members %s one\n", c.name, same ? "give the bits of" : "DIFFER from");
    failures += !same;
  }
  return failures == 0 ? 0 : 1;
}
