// The fused gate/pointwise step of an LSTM cell on CUDA (FusedLSTMCell's
// kernel): pre-activation gates -> i, f, g, o, c_t, h_t in one pass.
// Host-only header: the launchers are compiled by nvcc, callers need not be.
#pragma once
#include <cstdint>

#include "../common/params.h"

namespace fused_lstm {

struct LstmPointwiseParams {
  int64_t batch = 0, hidden = 0;     // N, H
  DType dtype = DType::kFloat32;
  const void* pre_gates = nullptr;   // [N, 4H] x@W_ih^T + b + h_prev@W_hh^T
  const void* c_prev = nullptr;      // [N, H]
  void* h = nullptr;                 // [N, H]
  void* c = nullptr;                 // [N, H]
  void* saved_gates = nullptr;       // [N, 4H] accumulation dtype, activated; nullptr in inference
  void* stream = nullptr;            // cudaStream_t
};

namespace cuda {
template <DType D> void launch_lstm_pointwise(const LstmPointwiseParams& p);
void lstm_pointwise(const LstmPointwiseParams& p);  // dispatches on p.dtype
}  // namespace cuda

}  // namespace fused_lstm
