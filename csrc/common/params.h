// One params struct per op: raw pointers, sizes in elements, dtype, stream.
// Filled in one place (fused_lstm/_backend.py through the bindings) and passed
// by value to the CPU recurrence and the CUDA launchers. No framework types.
//
// Sequence layout, shared by gates_x, y, grad_y, grad_gates and the saved
// buffers: time-major and contiguous, one row (of 4H, H or H_out elements) per
// (step, batch row).
//   dense  (batch_sizes == nullptr): step t holds rows [t*batch, (t+1)*batch).
//   packed (batch_sizes != nullptr, a PackedSequence sorted by length): step t
//          holds batch_sizes[t] rows, non-increasing in t, batch_sizes[0] ==
//          batch, starting at row sum_{s<t} batch_sizes[s]. Batch rows past
//          batch_sizes[t] have ended; their h/c state is left as it is, which
//          makes it their h_n/c_n. No work is done for them.
// State tensors (h0, c0, h_n, c_n and their grads) are [batch, H or H_out]
// contiguous. Weights are nn.LSTM's, contiguous row-major.
#pragma once
#include <cstdint>

namespace fused_lstm {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// CUDA recurrence path: auto (persistent when W_hh fits on chip, else step),
// or forced (tests; also FUSED_LSTM_CUDA_PATH=step|persistent).
enum class RecurrencePath : int { kAuto = 0, kStep = 1, kPersistent = 2 };

struct LstmSizes {
  int64_t seq_len = 0;    // T
  int64_t batch = 0;      // N (batch_sizes[0] when packed)
  int64_t hidden = 0;     // H
  int64_t proj_size = 0;  // P; 0 = no projection
  constexpr int64_t out_size() const { return proj_size > 0 ? proj_size : hidden; }  // H_out
  // [T] int64 per-step batch sizes in the executing device's memory, or nullptr.
  const int64_t* batch_sizes = nullptr;
  int64_t total_rows = 0;  // T*N dense, sum(batch_sizes) packed
};

// Forward recurrence of one layer and direction: for each step t,
// pre = gates_x[t] + h_{t-1} @ w_hh^T; (i,f,g,o, c_t, h_t) from lstm_math.h;
// h_out_t = proj_size ? h_t @ w_hr^T : h_t; y[t] = h_out_t.
struct LstmFwdParams {
  LstmSizes sizes;
  DType dtype = DType::kFloat32;  // storage dtype of every non-saved tensor
  const void* gates_x = nullptr;  // [rows, 4H]  x @ W_ih^T + b_ih + b_hh
  // CPU only, instead of gates_x: the input projection, computed inside the
  // recurrence (each team member for its own hidden units, a chunk of steps
  // ahead), so gates_x never goes through memory. input_size > 0 selects it.
  int64_t input_size = 0;         // I
  const void* x = nullptr;        // [rows, I]
  const void* w_ih = nullptr;     // [4H, I]
  const void* b_ih = nullptr;     // [4H], or nullptr (no bias: b_hh too)
  const void* b_hh = nullptr;     // [4H], or nullptr
  // [4H, H_out]. CPU only, nullptr: gates_x is the whole pre-activation of
  // one step (T = 1, no projection, h0 @ W_hh^T added by the caller's GEMM):
  // the gate math alone (FusedLSTMCell's framework-GEMM step).
  const void* w_hh = nullptr;
  const void* w_hr = nullptr;     // [P, H], or nullptr when proj_size == 0
  const void* h0 = nullptr;       // [N, H_out]; on the CPU, h0 and c0 both
  const void* c0 = nullptr;       // [N, H]      nullptr mean a zero state
  void* y = nullptr;              // [rows, H_out]
  void* h_n = nullptr;            // [N, H_out]
  void* c_n = nullptr;            // [N, H]
  // Training only (all nullptr in inference); in the accumulation dtype
  // (fp64 for fp64 storage, fp32 otherwise).
  void* saved_gates = nullptr;    // [rows, 4H] activated i, f, g, o
  void* saved_c = nullptr;        // [rows, H] c_t
  void* saved_h = nullptr;        // [rows, H] o*tanh(c_t) before projection; only if P > 0
  void* stream = nullptr;         // cudaStream_t on CUDA; unused on CPU
  // CUDA only (added for csrc/cuda): scratch memory from the framework's
  // allocator, sized by lstm_forward_workspace_bytes; and the path to take.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
  RecurrencePath path = RecurrencePath::kAuto;
  int num_threads = 0;  // CPU only: team size, torch.get_num_threads(); 0 = all cores
  bool training() const { return saved_gates != nullptr; }
  bool projects_input() const { return input_size > 0; }
  bool gate_math_only() const { return w_hh == nullptr; }
};

// Backward recurrence, t = T-1 .. 0. Produces the gradients that flow through
// time; the framework turns grad_gates into dW_ih, dx, db, dW_hh, and
// grad_h_out into dW_hr, with one GEMM each, except where the CPU recurrence
// computes the first four itself (the weight-gradient fields below).
struct LstmBwdParams {
  LstmSizes sizes;
  DType dtype = DType::kFloat32;
  // [4H, H_out]. CPU only, nullptr: the gate math's backward alone, of a
  // gate_math_only forward (T = 1): grad_gates and grad_c0, no grad_h0 (the
  // caller's GEMM: grad_gates @ W_hh) and no weight gradients inside.
  const void* w_hh = nullptr;
  const void* w_hr = nullptr;         // [P, H] or nullptr
  const void* c0 = nullptr;           // [N, H]
  const void* saved_gates = nullptr;  // as LstmFwdParams, accumulation dtype
  const void* saved_c = nullptr;
  const void* saved_h = nullptr;      // only if P > 0
  const void* grad_y = nullptr;       // [rows, H_out]
  const void* grad_h_n = nullptr;     // [N, H_out]; nullptr = zero (CPU only)
  const void* grad_c_n = nullptr;     // [N, H]; nullptr = zero (CPU only)
  void* grad_gates = nullptr;         // [rows, 4H] dL/d(pre-activation gates)
  void* grad_h_out = nullptr;         // [rows, P] total dL/dh_out_t; only if P > 0
  void* grad_h0 = nullptr;            // [N, H_out]
  void* grad_c0 = nullptr;            // [N, H]
  // CPU only: gradients the framework would get from grad_gates with GEMMs,
  // computed inside the recurrence a chunk of steps at a time (each member for
  // its own gate rows and input columns), while grad_gates is in cache. Each
  // output is optional (nullptr: not computed); any of them needs the inputs
  // it reads: grad_x w_ih; grad_w_ih x; grad_w_hh y and h0.
  int64_t input_size = 0;             // I
  const void* x = nullptr;            // [rows, I]
  const void* w_ih = nullptr;         // [4H, I]
  const void* y = nullptr;            // [rows, H_out]: h_{t-1} of step t > 0
  const void* h0 = nullptr;           // [N, H_out]: h_{t-1} of step 0
  void* grad_x = nullptr;             // [rows, I]
  void* grad_w_ih = nullptr;          // [4H, I]
  void* grad_w_hh = nullptr;          // [4H, H_out]
  void* grad_bias = nullptr;          // [4H]: the gradient of b_ih and of b_hh
  void* stream = nullptr;
  void* workspace = nullptr;          // CUDA only, as LstmFwdParams
  int64_t workspace_bytes = 0;
  RecurrencePath path = RecurrencePath::kAuto;
  int num_threads = 0;                // CPU only, as LstmFwdParams
  bool weight_grads_inside() const { return grad_x || grad_w_ih || grad_w_hh || grad_bias; }
  bool gate_math_only() const { return w_hh == nullptr; }
};

}  // namespace fused_lstm
