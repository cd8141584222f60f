// Host-side dtype dispatch for the pointwise kernel (no nvcc needed here).
#include "lstm_pointwise.h"

#include "../common/check.h"

namespace fused_lstm::cuda {

void lstm_pointwise(const LstmPointwiseParams& p) {
  FUSED_LSTM_CHECK_ARG(p.batch >= 0 && p.hidden > 0, "batch=", p.batch, " hidden=", p.hidden);
  FUSED_LSTM_CHECK_ARG(p.batch == 0 || (p.pre_gates && p.c_prev && p.h && p.c));
  switch (p.dtype) {
    case DType::kFloat32: return launch_lstm_pointwise<DType::kFloat32>(p);
    case DType::kFloat64: return launch_lstm_pointwise<DType::kFloat64>(p);
    case DType::kFloat16: return launch_lstm_pointwise<DType::kFloat16>(p);
    case DType::kBFloat16: return launch_lstm_pointwise<DType::kBFloat16>(p);
  }
  FUSED_LSTM_CHECK_ARG(false, "unknown dtype ", int(p.dtype));
}

}  // namespace fused_lstm::cuda
