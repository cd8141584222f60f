// Reference-grade CPU recurrence: one thread, rows in order, so results are
// deterministic. The persistent multi-threaded path builds on the same math.
#include "lstm_recurrence.h"

#include <algorithm>
#include <vector>

#include "../common/check.h"
#include "../common/lstm_math.h"
#include "../common/params_check.h"

namespace fused_lstm::cpu {
namespace {

template <class T, class Acc>
Acc dot(const T* a, const Acc* b, int64_t n) {
  Acc sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += Acc(a[k]) * b[k];
  return sum;
}

int64_t step_batch(const LstmSizes& s, int64_t t) {
  return s.batch_sizes ? s.batch_sizes[t] : s.batch;
}

template <class T>
void forward_impl(const LstmFwdParams& p) {
  using Acc = acc_t<T>;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size, N = s.batch;
  const T* gates_x = static_cast<const T*>(p.gates_x);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  T* y = static_cast<T*>(p.y);
  Acc* saved_gates = static_cast<Acc*>(p.saved_gates);
  Acc* saved_c = static_cast<Acc*>(p.saved_c);
  Acc* saved_h = static_cast<Acc*>(p.saved_h);

  std::vector<Acc> h_state(N * O), c_state(N * H), pre(4 * H), h_cell(H);
  std::copy_n(static_cast<const T*>(p.h0), N * O, h_state.begin());
  std::copy_n(static_cast<const T*>(p.c0), N * H, c_state.begin());

  int64_t row0 = 0;
  for (int64_t t = 0; t < s.seq_len; ++t) {
    const int64_t rows = step_batch(s, t);
    for (int64_t n = 0; n < rows; ++n) {
      const int64_t row = row0 + n;
      Acc* h = h_state.data() + n * O;
      Acc* c = c_state.data() + n * H;
      for (int64_t r = 0; r < 4 * H; ++r)
        pre[r] = Acc(gates_x[row * 4 * H + r]) + dot(w_hh + r * O, h, O);
      for (int64_t j = 0; j < H; ++j) {
        Acc c_new, h_new;
        const LstmGates<Acc> g =
            lstm_cell_forward(pre[j], pre[H + j], pre[2 * H + j], pre[3 * H + j], c[j], c_new, h_new);
        c[j] = c_new;
        h_cell[j] = h_new;
        if (saved_gates) {
          Acc* sg = saved_gates + row * 4 * H;
          sg[j] = g.i, sg[H + j] = g.f, sg[2 * H + j] = g.g, sg[3 * H + j] = g.o;
          saved_c[row * H + j] = c_new;
          if (P > 0) saved_h[row * H + j] = h_new;
        }
      }
      for (int64_t q = 0; q < O; ++q) {
        h[q] = P > 0 ? dot(w_hr + q * H, h_cell.data(), H) : h_cell[q];
        y[row * O + q] = T(h[q]);
      }
    }
    row0 += rows;
  }
  std::copy(h_state.begin(), h_state.end(), static_cast<T*>(p.h_n));
  std::copy(c_state.begin(), c_state.end(), static_cast<T*>(p.c_n));
}

template <class T>
void backward_impl(const LstmBwdParams& p) {
  using Acc = acc_t<T>;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size, N = s.batch;
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  const T* c0 = static_cast<const T*>(p.c0);
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const Acc* saved_gates = static_cast<const Acc*>(p.saved_gates);
  const Acc* saved_c = static_cast<const Acc*>(p.saved_c);
  T* grad_gates = static_cast<T*>(p.grad_gates);
  T* grad_h_out = static_cast<T*>(p.grad_h_out);

  // dh_carry: dL/dh_out_{t} from step t+1 (starts as grad_h_n); dc_carry likewise.
  std::vector<Acc> dh_carry(N * O), dc_carry(N * H), dh_out(O), dh_cell(H), dpre(4 * H);
  std::copy_n(static_cast<const T*>(p.grad_h_n), N * O, dh_carry.begin());
  std::copy_n(static_cast<const T*>(p.grad_c_n), N * H, dc_carry.begin());

  int64_t row_end = s.total_rows;
  for (int64_t t = s.seq_len - 1; t >= 0; --t) {
    const int64_t rows = step_batch(s, t);
    const int64_t row0 = row_end - rows;
    const int64_t prev_row0 = t > 0 ? row0 - step_batch(s, t - 1) : 0;
    for (int64_t n = 0; n < rows; ++n) {
      const int64_t row = row0 + n;
      Acc* dh = dh_carry.data() + n * O;
      Acc* dc = dc_carry.data() + n * H;
      for (int64_t q = 0; q < O; ++q) dh_out[q] = Acc(grad_y[row * O + q]) + dh[q];
      if (P > 0) {
        for (int64_t q = 0; q < O; ++q) grad_h_out[row * O + q] = T(dh_out[q]);
        std::fill(dh_cell.begin(), dh_cell.end(), Acc(0));
        for (int64_t q = 0; q < P; ++q)
          for (int64_t j = 0; j < H; ++j) dh_cell[j] += dh_out[q] * Acc(w_hr[q * H + j]);
      } else {
        std::copy(dh_out.begin(), dh_out.end(), dh_cell.begin());
      }
      const Acc* sg = saved_gates + row * 4 * H;
      for (int64_t j = 0; j < H; ++j) {
        const LstmGates<Acc> g{sg[j], sg[H + j], sg[2 * H + j], sg[3 * H + j]};
        const Acc c_prev = t > 0 ? saved_c[(prev_row0 + n) * H + j] : Acc(c0[n * H + j]);
        Acc dc_prev;
        const LstmGates<Acc> d = lstm_cell_backward(g, saved_c[row * H + j], c_prev, dh_cell[j], dc[j], dc_prev);
        dc[j] = dc_prev;
        dpre[j] = d.i, dpre[H + j] = d.f, dpre[2 * H + j] = d.g, dpre[3 * H + j] = d.o;
      }
      // dh_{t-1} = dpre @ W_hh, W_hh being [4H, O].
      std::fill(dh, dh + O, Acc(0));
      for (int64_t r = 0; r < 4 * H; ++r) {
        grad_gates[row * 4 * H + r] = T(dpre[r]);
        const T* w_row = w_hh + r * O;
        for (int64_t q = 0; q < O; ++q) dh[q] += dpre[r] * Acc(w_row[q]);
      }
    }
    row_end = row0;
  }
  std::copy(dh_carry.begin(), dh_carry.end(), static_cast<T*>(p.grad_h0));
  std::copy(dc_carry.begin(), dc_carry.end(), static_cast<T*>(p.grad_c0));
}

}  // namespace

void lstm_forward(const LstmFwdParams& p) {
  check_params(p);
  check_host_batch_sizes(p.sizes);
  switch (p.dtype) {
    case DType::kFloat32: return forward_impl<float>(p);
    case DType::kFloat64: return forward_impl<double>(p);
    default: FUSED_LSTM_CHECK_ARG(false, "the CPU recurrence takes float32 or float64");
  }
}

void lstm_backward(const LstmBwdParams& p) {
  check_params(p);
  check_host_batch_sizes(p.sizes);
  switch (p.dtype) {
    case DType::kFloat32: return backward_impl<float>(p);
    case DType::kFloat64: return backward_impl<double>(p);
    default: FUSED_LSTM_CHECK_ARG(false, "the CPU recurrence takes float32 or float64");
  }
}

}  // namespace fused_lstm::cpu
