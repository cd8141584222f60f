// The one copy of the LSTM gate math, shared by the CPU recurrence, the CUDA
// kernels and (through csrc/simt) the CPU runs of those kernels.
//
// Gate order is nn.LSTM's: i, f, g, o. "Pre-activation" gates are
// x_t @ W_ih^T + b_ih + b_hh + h_{t-1} @ W_hh^T; everything here works on one
// hidden unit of one batch row, in the accumulation type (float for
// fp32/fp16/bf16 storage, double for fp64).
#pragma once

#if defined(__CUDACC__)
#define FUSED_LSTM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#include <cmath>
#define FUSED_LSTM_HOST_DEVICE inline
#endif

namespace fused_lstm {

// Accumulation type for a storage type: fp32 for everything but fp64.
template <class T> struct AccumulateType { using type = float; };
template <> struct AccumulateType<double> { using type = double; };
template <class T> using acc_t = typename AccumulateType<T>::type;

FUSED_LSTM_HOST_DEVICE float lstm_exp(float x) { return expf(x); }
FUSED_LSTM_HOST_DEVICE double lstm_exp(double x) { return exp(x); }
FUSED_LSTM_HOST_DEVICE float lstm_tanh(float x) { return tanhf(x); }
FUSED_LSTM_HOST_DEVICE double lstm_tanh(double x) { return tanh(x); }

// 1/x. The CPU's float SIMD types overload it with a refined hardware
// reciprocal (csrc/cpu/simd.h).
FUSED_LSTM_HOST_DEVICE float lstm_reciprocal(float x) { return 1.0f / x; }
FUSED_LSTM_HOST_DEVICE double lstm_reciprocal(double x) { return 1.0 / x; }

template <class Acc> FUSED_LSTM_HOST_DEVICE Acc lstm_sigmoid(Acc x) {
  // exp(-x) overflows to inf for very negative x, giving exactly 0: no NaN.
  return lstm_reciprocal(Acc(1) + lstm_exp(-x));
}

// Post-activation gates of one unit; what training saves for backward.
template <class Acc> struct LstmGates {
  Acc i, f, g, o;
};

// Forward of one unit. In: pre-activation gates, c_{t-1}. Out: activated
// gates, c_t, and h_t = o * tanh(c_t) (before any projection).
template <class Acc>
FUSED_LSTM_HOST_DEVICE LstmGates<Acc> lstm_cell_forward(Acc pre_i, Acc pre_f, Acc pre_g, Acc pre_o,
                                                        Acc c_prev, Acc& c, Acc& h) {
  LstmGates<Acc> gates;
  gates.i = lstm_sigmoid(pre_i);
  gates.f = lstm_sigmoid(pre_f);
  gates.g = lstm_tanh(pre_g);
  gates.o = lstm_sigmoid(pre_o);
  c = gates.f * c_prev + gates.i * gates.g;
  h = gates.o * lstm_tanh(c);
  return gates;
}

// Backward of one unit at step t.
// In: saved activated gates and c_t, c_{t-1}; dh = dL/dh_t (before the
// projection, recurrent and output parts summed); dc = dL/dc_t arriving from
// step t+1. Out: dL/d(pre-activation gates) and dL/dc_{t-1}.
template <class Acc>
FUSED_LSTM_HOST_DEVICE LstmGates<Acc> lstm_cell_backward(LstmGates<Acc> gates, Acc c, Acc c_prev,
                                                         Acc dh, Acc dc, Acc& dc_prev) {
  const Acc tanh_c = lstm_tanh(c);
  const Acc dc_total = dc + dh * gates.o * (Acc(1) - tanh_c * tanh_c);
  LstmGates<Acc> dpre;
  dpre.i = dc_total * gates.g * gates.i * (Acc(1) - gates.i);
  dpre.f = dc_total * c_prev * gates.f * (Acc(1) - gates.f);
  dpre.g = dc_total * gates.i * (Acc(1) - gates.g * gates.g);
  dpre.o = dh * tanh_c * gates.o * (Acc(1) - gates.o);
  dc_prev = dc_total * gates.f;
  return dpre;
}

}  // namespace fused_lstm
