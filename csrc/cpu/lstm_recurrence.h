// CPU recurrence of one LSTM layer and direction (float32 and float64), the
// sequential part of DESIGN.md's data flow. The caller has done the input GEMM
// (gates_x) and does the weight-gradient GEMMs. Layouts: see params.h.
#pragma once
#include "../common/params.h"

namespace fused_lstm::cpu {

// Runs the whole sequence; saves for backward when p.saved_gates is set.
void lstm_forward(const LstmFwdParams& p);

// Backward through time: grad_gates for every step, grad_h0, grad_c0, and
// grad_h_out when there is a projection.
void lstm_backward(const LstmBwdParams& p);

}  // namespace fused_lstm::cpu
