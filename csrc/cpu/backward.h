// Backward recurrence, t = T-1 .. 0, run by every member of the thread team
// for its own blocks (see recurrence_plan.h). Per step t (rows = batch at t):
//   dh_out[n] = grad_y[row] + dh carried from step t+1 (starts as grad_h_n)
//   projection: dh_out -> grad_h_out, exchange; barrier;
//               dh_cell = dh_out @ W_hr (own unit blocks)
//   gate backward (lstm_math.h, vectorised) on own unit blocks -> grad_gates
//   barrier (every member needs all of grad_gates[row])
//   dh carried to t-1 = grad_gates[row] @ W_hh (own blocks of H_out columns)
//   every grad_chunk_steps steps, with the weight gradients inside: the
//               chunk's dx, dW, db (weight_grads.h)
// Rows that end before the last step start carrying at the step they end,
// from grad_h_n / grad_c_n (null: zero), as the forward left their state there.
#pragma once
#include "forward.h"
#include "weight_grads.h"

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

template <class T> void backward_member(const RecurrencePlan& plan, int member) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const LstmBwdParams& p = *plan.backward;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, O = P > 0 ? P : H, N = s.batch;
  const BlockRange units = owned_blocks(plan.unit_blocks, plan, member);
  const BlockRange outs = owned_blocks(plan.out_blocks, plan, member);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  const T* c0 = static_cast<const T*>(p.c0);
  const T* saved_gates = static_cast<const T*>(p.saved_gates);
  const T* saved_c = static_cast<const T*>(p.saved_c);
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const T* grad_h_n = static_cast<const T*>(p.grad_h_n);  // nullptr = zero
  const T* grad_c_n = static_cast<const T*>(p.grad_c_n);
  T* grad_gates = static_cast<T*>(p.grad_gates);
  T* grad_h_out = static_cast<T*>(p.grad_h_out);
  T* w_hh_panels = static_cast<T*>(plan.w_hh_panels);
  T* w_hr_panels = static_cast<T*>(plan.w_hr_panels);
  T* dc_state = static_cast<T*>(plan.cell_state);
  T* dh_state = static_cast<T*>(plan.out_state);
  T* dh_out_rows = static_cast<T*>(plan.exchange);
  T* partial = static_cast<T*>(plan.partial) + member * plan.partial_values;
  const int64_t exchange_stride = plan.out_blocks * W;
  WeightGradients<T> weight_grads(plan, member, units);

  // W_hh columns of this member's out blocks: panel q is [4H][W], zero past O.
  auto hh_panel = [&](int64_t q) { return w_hh_panels + q * 4 * H * W; };
  for (int64_t q = outs.begin; q < outs.end; ++q) {
    T* panel = hh_panel(q);
    const int64_t count = O - q * W;
    for (int64_t r = 0; !p.gate_math_only() && r < 4 * H; ++r)
      load_partial(w_hh + r * O + q * W, count).store(panel + r * W);
    for (int64_t n = 0; n < N; ++n)
      (grad_h_n ? load_partial(grad_h_n + n * O + q * W, count) : V::zero()).store(dh_state + (q * N + n) * W);
  }
  // W_hr columns of this member's unit blocks: panel b is [P][W], zero past H.
  auto hr_panel = [&](int64_t b) { return w_hr_panels + b * P * W; };
  for (int64_t b = units.begin; b < units.end; ++b) {
    const int64_t count = H - b * W;
    for (int64_t q = 0; q < P; ++q) load_partial(w_hr + q * H + b * W, count).store(hr_panel(b) + q * W);
    for (int64_t n = 0; n < N; ++n)
      (grad_c_n ? load_partial(grad_c_n + n * H + b * W, count) : V::zero()).store(dc_state + (b * N + n) * W);
  }

  // Gate backward of unit block b, row n, given dL/dh_cell.
  int64_t row0 = 0, prev_row0 = 0, t = 0;
  auto gate_backward = [&](int64_t n, int64_t b, V dh) {
    const int64_t row = row0 + n, j0 = b * W, count = H - j0;
    const T* sg = saved_gates + row * 4 * H + j0;
    const LstmGates<V> gates{load_partial(sg, count), load_partial(sg + H, count),
                             load_partial(sg + 2 * H, count), load_partial(sg + 3 * H, count)};
    const V c_prev = t > 0 ? load_partial(saved_c + (prev_row0 + n) * H + j0, count)
                           : load_partial(c0 + n * H + j0, count);
    T* dc_slot = dc_state + (b * N + n) * W;
    V dc_prev;
    const LstmGates<V> d =
        lstm_cell_backward(gates, load_partial(saved_c + row * H + j0, count), c_prev, dh, V::load(dc_slot), dc_prev);
    dc_prev.store(dc_slot);
    weight_grads.add_bias(b, d);
    T* gg = grad_gates + row * 4 * H + j0;
    store_partial(gg, d.i, count);
    store_partial(gg + H, d.f, count);
    store_partial(gg + 2 * H, d.g, count);
    store_partial(gg + 3 * H, d.o, count);
  };

  int64_t row_end = s.total_rows;
  int64_t chunk_last = s.seq_len - 1, chunk_row_end = row_end;  // the weight gradients' chunk
  for (t = s.seq_len - 1; t >= 0; --t) {
    const int64_t rows = rows_at(s, t);
    row0 = row_end - rows;
    prev_row0 = t > 0 ? row0 - rows_at(s, t - 1) : 0;
    if (P == 0) {
      // Out blocks are the unit blocks: dh carried is this member's own.
      for (int64_t b = units.begin; b < units.end; ++b)
        for (int64_t n = 0; n < rows; ++n)
          gate_backward(n, b, load_partial(grad_y + (row0 + n) * O + b * W, O - b * W) +
                                  V::load(dh_state + (b * N + n) * W));
    } else {
      for (int64_t q = outs.begin; q < outs.end; ++q)
        for (int64_t n = 0; n < rows; ++n) {
          const int64_t row = row0 + n, count = P - q * W;
          const V dh_out = load_partial(grad_y + row * O + q * W, count) + V::load(dh_state + (q * N + n) * W);
          store_partial(grad_h_out + row * O + q * W, dh_out, count);
          dh_out.store(dh_out_rows + n * exchange_stride + q * W);
        }
      plan.team->barrier();
      prefetch_shared(dh_out_rows, rows * exchange_stride);
      product_over_blocks<T, 1>(units, dh_out_rows, exchange_stride, rows, P, partial, hr_panel,
                                [&](int64_t n, int64_t b, const V* acc) { gate_backward(n, b, acc[0]); },
                                plan.prefetch_panels);
    }
    if (p.gate_math_only()) break;  // one step, the caller's GEMM carries dh
    plan.team->barrier();
    prefetch_shared(grad_gates + row0 * 4 * H, rows * 4 * H);
    product_over_blocks<T, 1>(outs, grad_gates + row0 * 4 * H, 4 * H, rows, 4 * H, partial, hh_panel,
                              [&](int64_t n, int64_t q, const V* acc) { acc[0].store(dh_state + (q * N + n) * W); },
                              plan.prefetch_panels);
    if (t == 0 || chunk_last - t + 1 == plan.grad_chunk_steps) {
      weight_grads.run_chunk(t, chunk_last, row0, chunk_row_end, partial);
      chunk_last = t - 1;
      chunk_row_end = row0;
    }
    row_end = row0;
  }
  weight_grads.finish();
  for (int64_t q = outs.begin; p.grad_h0 && q < outs.end; ++q)
    for (int64_t n = 0; n < N; ++n)
      store_partial(static_cast<T*>(p.grad_h0) + n * O + q * W, V::load(dh_state + (q * N + n) * W), O - q * W);
  for (int64_t b = units.begin; b < units.end; ++b)
    for (int64_t n = 0; n < N; ++n)
      store_partial(static_cast<T*>(p.grad_c0) + n * H + b * W, V::load(dc_state + (b * N + n) * W), H - b * W);
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
