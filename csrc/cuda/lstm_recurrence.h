// CUDA recurrence of one LSTM layer and direction (fp32, fp16, bf16 storage;
// fp32 accumulation and cell state). Host-only header: callers need no nvcc.
//
// Two paths, same results (see lstm_recurrence_kernel.cuh):
//   step:       per step one fused launch (recurrent product + gate math;
//               backward: dgates and dh = dgates . W_hh), W_hh streamed from L2.
//               With a projection, a second launch per step.
//   persistent: one cooperative launch for the whole sequence; each block keeps
//               its slice of W_hh (and W_hr) in shared memory; a grid barrier
//               per step (two with a projection).
// Dispatch: persistent when the slices fit on chip on the device found at run
// time, step otherwise; params.path or FUSED_LSTM_CUDA_PATH=step|persistent
// forces one.
#pragma once
#include <cstdint>

#include "../common/params.h"

namespace fused_lstm::cuda {

// Bytes of workspace (params.workspace) the call needs, 256-byte aligned base.
int64_t lstm_forward_workspace_bytes(const LstmFwdParams& p);
int64_t lstm_backward_workspace_bytes(const LstmBwdParams& p);

// Launch on p.stream; no host synchronisation.
void lstm_forward(const LstmFwdParams& p);
void lstm_backward(const LstmBwdParams& p);

template <DType D> void launch_lstm_forward(const LstmFwdParams& p);
template <DType D> void launch_lstm_backward(const LstmBwdParams& p);

}  // namespace fused_lstm::cuda
