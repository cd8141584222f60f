// What the CUDA runtime sees, for `python -m fused_lstm info` and dispatch.
// Never throws for a missing driver: that is a normal state on CPU machines.
#pragma once
#include <string>

namespace fused_lstm::cuda {

struct RuntimeInfo {
  int device_count = 0;
  std::string error;  // empty when the runtime answered
};

RuntimeInfo runtime_info();

}  // namespace fused_lstm::cuda
