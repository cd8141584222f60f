// The recurrence kernels instantiated for one ISA; CMakeLists.txt gives this
// file its compiler flags (see simd.h for why everything lives in namespace
// fused_lstm::cpu::avx512).
#define FUSED_LSTM_CPU_ISA avx512
#include "backward.h"

namespace fused_lstm::cpu {

namespace {
IsaKernels avx512_kernels_with(const char* name, bool uses_amx) {
  return {name,
          avx512::Vec<float>::width,
          avx512::Vec<double>::width,
          &avx512::forward_member<float>,
          &avx512::forward_member<double>,
          &avx512::backward_member<float>,
          &avx512::backward_member<double>,
          avx512::kFoldsProjection,
          uses_amx};
}
}  // namespace

const IsaKernels& avx512_kernels() {
  static const IsaKernels kernels = avx512_kernels_with("avx512", false);
  return kernels;
}

// The same kernels, their float32 products with W_ih and the weight
// gradients on AMX tiles (amx_tiles.h).
const IsaKernels& avx512_amx_kernels() {
  static const IsaKernels kernels = avx512_kernels_with("avx512_amx", true);
  return kernels;
}

}  // namespace fused_lstm::cpu
