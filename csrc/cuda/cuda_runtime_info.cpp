#include "cuda_runtime_info.h"

#include <cuda_runtime.h>

namespace fused_lstm::cuda {

RuntimeInfo runtime_info() {
  RuntimeInfo info;
  const cudaError_t status = cudaGetDeviceCount(&info.device_count);
  if (status != cudaSuccess) {
    info.device_count = 0;
    info.error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
  }
  return info;
}

}  // namespace fused_lstm::cuda
