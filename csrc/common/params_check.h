// Last-line checks on a filled params struct, run before any kernel. The
// Python front end has already raised nn.LSTM's errors for bad user input;
// these catch a bad call into the core (null pointers, impossible sizes).
#pragma once
#include "check.h"
#include "params.h"

namespace fused_lstm {

inline void check_sizes(const LstmSizes& s) {
  FUSED_LSTM_CHECK_ARG(s.seq_len > 0, "seq_len=", s.seq_len);
  FUSED_LSTM_CHECK_ARG(s.batch >= 0, "batch=", s.batch);
  FUSED_LSTM_CHECK_ARG(s.hidden > 0, "hidden=", s.hidden);
  FUSED_LSTM_CHECK_ARG(s.proj_size >= 0 && s.proj_size < s.hidden, "proj_size=", s.proj_size,
                       " hidden=", s.hidden);
  if (s.batch_sizes == nullptr)
    FUSED_LSTM_CHECK_ARG(s.total_rows == s.seq_len * s.batch, "total_rows=", s.total_rows,
                         " seq_len*batch=", s.seq_len * s.batch);
}

// Packed batch sizes must start at batch, never grow, stay positive and add up
// to total_rows. Only callable where batch_sizes is host memory.
inline void check_host_batch_sizes(const LstmSizes& s) {
  if (s.batch_sizes == nullptr) return;
  int64_t sum = 0, previous = s.batch;
  for (int64_t t = 0; t < s.seq_len; ++t) {
    const int64_t b = s.batch_sizes[t];
    FUSED_LSTM_CHECK_ARG(b > 0 && b <= previous, "batch_sizes[", t, "]=", b, " previous=", previous);
    previous = b;
    sum += b;
  }
  FUSED_LSTM_CHECK_ARG(s.batch_sizes[0] == s.batch, "batch_sizes[0]=", s.batch_sizes[0],
                       " batch=", s.batch);
  FUSED_LSTM_CHECK_ARG(sum == s.total_rows, "sum(batch_sizes)=", sum, " total_rows=", s.total_rows);
}

inline void check_params(const LstmFwdParams& p) {
  check_sizes(p.sizes);
  const bool rows = p.sizes.total_rows > 0, states = p.sizes.batch > 0;
  FUSED_LSTM_CHECK_ARG(!p.gate_math_only() || (p.sizes.seq_len == 1 && p.sizes.proj_size == 0 && !p.projects_input()),
                       "w_hh may be null only for one step's gate math (seq_len 1, gates_x, no projection)");
  FUSED_LSTM_CHECK_ARG((p.sizes.proj_size > 0) == (p.w_hr != nullptr), "proj_size=", p.sizes.proj_size);
  FUSED_LSTM_CHECK_ARG(!rows || p.y != nullptr);
  FUSED_LSTM_CHECK_ARG(p.input_size >= 0, "input_size=", p.input_size);
  if (p.projects_input()) {
    FUSED_LSTM_CHECK_ARG(p.gates_x == nullptr, "give gates_x or x, not both");
    FUSED_LSTM_CHECK_ARG(!rows || (p.x != nullptr && p.w_ih != nullptr));
    FUSED_LSTM_CHECK_ARG((p.b_ih == nullptr) == (p.b_hh == nullptr), "b_ih and b_hh must be given together");
  } else {
    FUSED_LSTM_CHECK_ARG(!rows || p.gates_x != nullptr);
  }
  FUSED_LSTM_CHECK_ARG(!states || (p.h_n && p.c_n));
  FUSED_LSTM_CHECK_ARG((p.h0 == nullptr) == (p.c0 == nullptr), "h0 and c0 must be given together");
  const bool training = p.saved_gates != nullptr;
  FUSED_LSTM_CHECK_ARG(!rows || training == (p.saved_c != nullptr),
                       "saved_gates and saved_c must be given together");
  FUSED_LSTM_CHECK_ARG(!rows || !training || (p.sizes.proj_size > 0) == (p.saved_h != nullptr),
                       "saved_h is needed exactly when training with a projection");
}

inline void check_params(const LstmBwdParams& p) {
  check_sizes(p.sizes);
  const bool rows = p.sizes.total_rows > 0, states = p.sizes.batch > 0;
  const bool proj = p.sizes.proj_size > 0;
  FUSED_LSTM_CHECK_ARG(!p.gate_math_only() || (p.sizes.seq_len == 1 && !proj && !p.grad_h0 && !p.weight_grads_inside()),
                       "w_hh may be null only for one step's gate math (seq_len 1, no projection, no grad_h0, no "
                       "weight gradients)");
  FUSED_LSTM_CHECK_ARG(proj == (p.w_hr != nullptr), "proj_size=", p.sizes.proj_size);
  FUSED_LSTM_CHECK_ARG(!rows || (p.saved_gates && p.saved_c && p.grad_y && p.grad_gates));
  FUSED_LSTM_CHECK_ARG(!rows || !proj || (p.saved_h && p.grad_h_out));
  // grad_h_n, grad_c_n: nullptr = zero.
  FUSED_LSTM_CHECK_ARG(!states || (p.c0 && (p.grad_h0 || p.gate_math_only()) && p.grad_c0));
  FUSED_LSTM_CHECK_ARG(p.input_size >= 0, "input_size=", p.input_size);
  FUSED_LSTM_CHECK_ARG(!(p.grad_x || p.grad_w_ih) || p.input_size > 0, "grad_x and grad_w_ih need input_size");
  FUSED_LSTM_CHECK_ARG(!rows || !p.grad_x || p.w_ih, "grad_x needs w_ih");
  FUSED_LSTM_CHECK_ARG(!rows || !p.grad_w_ih || p.x, "grad_w_ih needs x");
  FUSED_LSTM_CHECK_ARG(!rows || !p.grad_w_hh || (p.y && p.h0), "grad_w_hh needs y and h0");
}

}  // namespace fused_lstm
