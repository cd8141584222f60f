// The recurrence kernels instantiated for one ISA; CMakeLists.txt gives this
// file its compiler flags (see simd.h for why everything lives in namespace
// fused_lstm::cpu::portable).
#define FUSED_LSTM_CPU_ISA portable
#include "backward.h"

namespace fused_lstm::cpu {

const IsaKernels& portable_kernels() {
  static const IsaKernels kernels{"portable",
                                  portable::Vec<float>::width,
                                  portable::Vec<double>::width,
                                  &portable::forward_member<float>,
                                  &portable::forward_member<double>,
                                  &portable::backward_member<float>,
                                  &portable::backward_member<double>,
                                  portable::kFoldsProjection,
                                  false};
  return kernels;
}

}  // namespace fused_lstm::cpu
