// Instantiation only: one file per dtype so nvcc compiles them in parallel.
#include "lstm_recurrence_kernel.cuh"

template void fused_lstm::cuda::launch_lstm_forward<fused_lstm::DType::kFloat16>(const fused_lstm::LstmFwdParams&);
template void fused_lstm::cuda::launch_lstm_backward<fused_lstm::DType::kFloat16>(const fused_lstm::LstmBwdParams&);
