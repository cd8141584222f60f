// Host-side checks and dtype dispatch of the CUDA recurrence (no nvcc needed
// here). Also compiled into fused_lstm._simt, where the launchers run on the CPU.
#include "lstm_recurrence.h"

#include "../common/check.h"
#include "../common/params_check.h"
#include "lstm_workspace.h"

namespace fused_lstm::cuda {
namespace {

template <class Params, class Launch32, class Launch16, class LaunchBf16>
void dispatch(const Params& p, int64_t needed, Launch32 f32, Launch16 f16, LaunchBf16 bf16) {
  check_params(p);
  if (p.sizes.batch == 0) return;  // nothing to compute, no state to write
  FUSED_LSTM_CHECK_ARG(p.workspace != nullptr && p.workspace_bytes >= needed, "workspace of ", p.workspace_bytes,
                       " bytes; the call needs ", needed);
  switch (p.dtype) {
    case DType::kFloat32: return f32(p);
    case DType::kFloat16: return f16(p);
    case DType::kBFloat16: return bf16(p);
    default: FUSED_LSTM_CHECK_ARG(false, "the CUDA recurrence takes float32, float16 or bfloat16");
  }
}

}  // namespace

int64_t lstm_forward_workspace_bytes(const LstmFwdParams& p) { return carve_forward_workspace(p, nullptr).bytes; }
int64_t lstm_backward_workspace_bytes(const LstmBwdParams& p) { return carve_backward_workspace(p, nullptr).bytes; }

void lstm_forward(const LstmFwdParams& p) {
  FUSED_LSTM_CHECK_ARG(!p.projects_input(), "the CUDA recurrence takes gates_x, not x (input_size must be 0)");
  FUSED_LSTM_CHECK_ARG(!p.gate_math_only(), "the CUDA recurrence needs w_hh");
  FUSED_LSTM_CHECK_ARG(p.sizes.batch == 0 || (p.h0 && p.c0),
                       "the CUDA recurrence needs h0 and c0 (nullptr as zero is CPU only)");
  dispatch(p, lstm_forward_workspace_bytes(p), launch_lstm_forward<DType::kFloat32>,
           launch_lstm_forward<DType::kFloat16>, launch_lstm_forward<DType::kBFloat16>);
}

void lstm_backward(const LstmBwdParams& p) {
  FUSED_LSTM_CHECK_ARG(p.sizes.batch == 0 || (p.grad_h_n && p.grad_c_n),
                       "the CUDA recurrence needs grad_h_n and grad_c_n (nullptr as zero is CPU only)");
  FUSED_LSTM_CHECK_ARG(!p.weight_grads_inside(), "the CUDA recurrence leaves dx, dW and db to GEMMs (CPU only)");
  FUSED_LSTM_CHECK_ARG(!p.gate_math_only(), "the CUDA recurrence needs w_hh");
  dispatch(p, lstm_backward_workspace_bytes(p), launch_lstm_backward<DType::kFloat32>,
           launch_lstm_backward<DType::kFloat16>, launch_lstm_backward<DType::kBFloat16>);
}

}  // namespace fused_lstm::cuda
