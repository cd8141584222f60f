// Instantiation only: one file per dtype so nvcc compiles them in parallel.
#include "lstm_pointwise_kernel.cuh"

template void fused_lstm::cuda::launch_lstm_pointwise<fused_lstm::DType::kFloat16>(const fused_lstm::LstmPointwiseParams&);
