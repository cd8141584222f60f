// The CUDA kernel sources (recurrence and pointwise cell), compiled by g++ against the simt shim
// (csrc/simt/include comes first on the include path; FUSED_LSTM_SIMT=1).
#include "../cuda/lstm_pointwise_kernel.cuh"
#include "../cuda/lstm_recurrence_kernel.cuh"

namespace fused_lstm::cuda {
template void launch_lstm_forward<DType::kFloat32>(const LstmFwdParams&);
template void launch_lstm_forward<DType::kFloat16>(const LstmFwdParams&);
template void launch_lstm_forward<DType::kBFloat16>(const LstmFwdParams&);
template void launch_lstm_backward<DType::kFloat32>(const LstmBwdParams&);
template void launch_lstm_backward<DType::kFloat16>(const LstmBwdParams&);
template void launch_lstm_backward<DType::kBFloat16>(const LstmBwdParams&);
template void launch_lstm_pointwise<DType::kFloat32>(const LstmPointwiseParams&);
template void launch_lstm_pointwise<DType::kFloat64>(const LstmPointwiseParams&);
template void launch_lstm_pointwise<DType::kFloat16>(const LstmPointwiseParams&);
template void launch_lstm_pointwise<DType::kBFloat16>(const LstmPointwiseParams&);
}  // namespace fused_lstm::cuda
