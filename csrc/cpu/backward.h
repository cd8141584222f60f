// Backward recurrence, t = T-1 .. 0, run by every member of the thread team
// over its share (see recurrence_plan.h): its own blocks for every row (the
// unit partition), or every block for its slice of the batch (batch_slices).
// Per step t (rows = batch at t; the share's rows of them):
//   dh_out[n] = grad_y[row] + dh carried from step t+1 (starts as grad_h_n)
//   projection: dh_out -> grad_h_out, exchange; barrier;
//               dh_cell = dh_out @ W_hr (the share's unit blocks)
//   gate backward (lstm_math.h, vectorised) on the share's unit blocks -> grad_gates
//   barrier (unit partition: every member needs all of grad_gates[row])
//   dh carried to t-1 = grad_gates[row] @ W_hh (the share's blocks of H_out columns)
//   every grad_chunk_steps steps, with the weight gradients inside: the
//               chunk's dx, dW, db (weight_grads.h)
// A slice reads only what its member wrote, so it meets no barrier per step.
// Rows that end before the last step start carrying at the step they end,
// from grad_h_n / grad_c_n (null: zero), as the forward left their state there.
#pragma once
#include "forward.h"
#include "weight_grads.h"

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

// A member's part of the backward (recurrence_plan.h): unit blocks (gate
// backward, dc carried), out blocks (columns of dh carried back), input
// blocks (grad_x columns), batch rows; shared: the members meet at barriers
// each step, since each reads what the others wrote.
struct MemberShare {
  BlockRange units, outs, inputs, batch;
  bool shared;
};
// The unit partition: the member's own blocks, every row.
inline MemberShare unit_share(const RecurrencePlan& plan, int member) {
  return {owned_blocks(plan.unit_blocks, plan, member), owned_blocks(plan.out_blocks, plan, member),
          owned_blocks(plan.input_blocks, plan, member), {0, plan.backward->sizes.batch}, true};
}
// Batch slice `slice` (batch_slices > 1): every block, the rows of one half
// of the batch (batch_split), run by one member alone.
inline MemberShare slice_share(const RecurrencePlan& plan, int slice) {
  const int64_t split = plan.batch_split, batch = plan.backward->sizes.batch;
  return {{0, plan.unit_blocks}, {0, plan.out_blocks}, {0, plan.input_blocks},
          slice == 0 ? BlockRange{0, split} : BlockRange{split, batch}, false};
}

// The backward's weight panels (packed in backward_member, read in
// backward_share): W_hh's columns of out block q ([4H][W], zero past H_out),
// W_hr's columns of unit block b ([P][W], zero past H).
template <class T> T* hh_column_panel(const RecurrencePlan& plan, int64_t q) {
  return static_cast<T*>(plan.w_hh_panels) + q * 4 * plan.backward->sizes.hidden * Vec<T>::width;
}
template <class T> T* hr_column_panel(const RecurrencePlan& plan, int64_t b) {
  return static_cast<T*>(plan.w_hr_panels) + b * plan.backward->sizes.proj_size * Vec<T>::width;
}

// The backward recurrence over a member's share: barriers only when shared.
template <class T> void backward_share(const RecurrencePlan& plan, int member, const MemberShare& share) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const LstmBwdParams& p = *plan.backward;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, O = P > 0 ? P : H, N = s.batch;
  const BlockRange units = share.units, outs = share.outs;
  const T* c0 = static_cast<const T*>(p.c0);
  const T* saved_gates = static_cast<const T*>(p.saved_gates);
  const T* saved_c = static_cast<const T*>(p.saved_c);
  const T* grad_y = static_cast<const T*>(p.grad_y);
  T* grad_gates = static_cast<T*>(p.grad_gates);
  T* grad_h_out = static_cast<T*>(p.grad_h_out);
  T* dc_state = static_cast<T*>(plan.cell_state);
  T* dh_state = static_cast<T*>(plan.out_state);
  T* dh_out_rows = static_cast<T*>(plan.exchange);
  T* partial = static_cast<T*>(plan.partial) + member * plan.partial_values;
  const int64_t exchange_stride = plan.out_blocks * W;
  WeightGradients<T> weight_grads(plan, member, units, share.inputs, share.batch);
  auto hh_panel = [&](int64_t q) { return hh_column_panel<T>(plan, q); };
  auto hr_panel = [&](int64_t b) { return hr_column_panel<T>(plan, b); };
  auto barrier = [&] {
    if (share.shared) plan.team->barrier();
  };

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
    weight_grads.add_bias(n, b, d);
    T* gg = grad_gates + row * 4 * H + j0;
    store_partial(gg, d.i, count);
    store_partial(gg + H, d.f, count);
    store_partial(gg + 2 * H, d.g, count);
    store_partial(gg + 3 * H, d.o, count);
  };

  int64_t row_end = s.total_rows;
  int64_t chunk_last = s.seq_len - 1;  // the weight gradients' chunk
  for (t = s.seq_len - 1; t >= 0; --t) {
    const int64_t rows = rows_at(s, t);
    const int64_t n_begin = share.batch.begin, n_end = std::min(share.batch.end, rows);
    const int64_t share_rows = std::max<int64_t>(0, n_end - n_begin);
    row0 = row_end - rows;
    prev_row0 = t > 0 ? row0 - rows_at(s, t - 1) : 0;
    if (P == 0) {
      // Out blocks are the unit blocks: dh carried is this member's own.
      for (int64_t b = units.begin; b < units.end; ++b)
        for (int64_t n = n_begin; n < n_end; ++n)
          gate_backward(n, b, load_partial(grad_y + (row0 + n) * O + b * W, O - b * W) +
                                  V::load(dh_state + (b * N + n) * W));
    } else {
      for (int64_t q = outs.begin; q < outs.end; ++q)
        for (int64_t n = n_begin; n < n_end; ++n) {
          const int64_t row = row0 + n, count = P - q * W;
          const V dh_out = load_partial(grad_y + row * O + q * W, count) + V::load(dh_state + (q * N + n) * W);
          store_partial(grad_h_out + row * O + q * W, dh_out, count);
          dh_out.store(dh_out_rows + n * exchange_stride + q * W);
        }
      barrier();
      if (share.shared) prefetch_shared(dh_out_rows, rows * exchange_stride);
      product_over_blocks<T, 1>(units, dh_out_rows + n_begin * exchange_stride, exchange_stride, share_rows, P,
                                partial, hr_panel,
                                [&](int64_t n, int64_t b, const V* acc) { gate_backward(n_begin + n, b, acc[0]); },
                                plan.prefetch_panels);
    }
    if (p.gate_math_only()) break;  // one step, the caller's GEMM carries dh
    barrier();
    if (share.shared) prefetch_shared(grad_gates + row0 * 4 * H, rows * 4 * H);
    product_over_blocks<T, 1>(outs, grad_gates + (row0 + n_begin) * 4 * H, 4 * H, share_rows, 4 * H, partial,
                              hh_panel,
                              [&](int64_t n, int64_t q, const V* acc) {
                                acc[0].store(dh_state + (q * N + n_begin + n) * W);
                              },
                              plan.prefetch_panels);
    if (t == 0 || chunk_last - t + 1 == plan.grad_chunk_steps) {
      weight_grads.run_chunk(t, chunk_last, row0, partial);
      chunk_last = t - 1;
    }
    row_end = row0;
  }
  const int64_t n_end = std::min(share.batch.end, N);
  for (int64_t q = outs.begin; p.grad_h0 && q < outs.end; ++q)
    for (int64_t n = share.batch.begin; n < n_end; ++n)
      store_partial(static_cast<T*>(p.grad_h0) + n * O + q * W, V::load(dh_state + (q * N + n) * W), O - q * W);
  for (int64_t b = units.begin; b < units.end; ++b)
    for (int64_t n = share.batch.begin; n < n_end; ++n)
      store_partial(static_cast<T*>(p.grad_c0) + n * H + b * W, V::load(dc_state + (b * N + n) * W), H - b * W);
}

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
  const T* grad_h_n = static_cast<const T*>(p.grad_h_n);  // nullptr = zero
  const T* grad_c_n = static_cast<const T*>(p.grad_c_n);
  T* dc_state = static_cast<T*>(plan.cell_state);
  T* dh_state = static_cast<T*>(plan.out_state);

  // The member's own blocks, whatever its share: W_hh's columns of its out
  // blocks and their dh carried; W_hr's columns of its unit blocks and their dc.
  for (int64_t q = outs.begin; q < outs.end; ++q) {
    T* panel = hh_column_panel<T>(plan, q);
    const int64_t count = O - q * W;
    for (int64_t r = 0; !p.gate_math_only() && r < 4 * H; ++r)
      load_partial(w_hh + r * O + q * W, count).store(panel + r * W);
    for (int64_t n = 0; n < N; ++n)
      (grad_h_n ? load_partial(grad_h_n + n * O + q * W, count) : V::zero()).store(dh_state + (q * N + n) * W);
  }
  for (int64_t b = units.begin; b < units.end; ++b) {
    const int64_t count = H - b * W;
    T* panel = hr_column_panel<T>(plan, b);
    for (int64_t q = 0; q < P; ++q) load_partial(w_hr + q * H + b * W, count).store(panel + q * W);
    for (int64_t n = 0; n < N; ++n)
      (grad_c_n ? load_partial(grad_c_n + n * H + b * W, count) : V::zero()).store(dc_state + (b * N + n) * W);
  }
  WeightGradients<T>::prepare(plan, member);
  if (plan.batch_slices > 1) {
    plan.team->barrier();  // every panel packed, every state and sum set
    const BlockRange slices = owned_blocks(plan.batch_slices, plan, member);  // run one after the other
    for (int64_t slice = slices.begin; slice < slices.end; ++slice)
      backward_share<T>(plan, member, slice_share(plan, static_cast<int>(slice)));
    plan.team->barrier();  // every slice's sums in
  } else {
    backward_share<T>(plan, member, unit_share(plan, member));
  }
  WeightGradients<T>::finish(plan, member);
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
