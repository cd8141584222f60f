// The recurrence kernels instantiated for one ISA; CMakeLists.txt gives this
// file its compiler flags (see simd.h for why everything lives in namespace
// fused_lstm::cpu::avx2).
#define FUSED_LSTM_CPU_ISA avx2
#include "backward.h"

namespace fused_lstm::cpu {

const IsaKernels& avx2_kernels() {
  static const IsaKernels kernels{"avx2",
                                  avx2::Vec<float>::width,
                                  avx2::Vec<double>::width,
                                  &avx2::forward_member<float>,
                                  &avx2::forward_member<double>,
                                  &avx2::backward_member<float>,
                                  &avx2::backward_member<double>,
                                  avx2::kFoldsProjection,
                                  false};
  return kernels;
}

}  // namespace fused_lstm::cpu
