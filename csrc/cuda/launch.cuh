// The one launch() wrapper every kernel launch goes through, in both worlds:
// nvcc (a real GPU; <<<>>> or cudaLaunchCooperativeKernel, then a check) and
// simt (g++; csrc/simt runs the threads and enforces the GPU's limits). Also
// the dynamic shared memory macro and the device limits the launchers size
// their grids by.
#pragma once
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../common/check.h"
#if !FUSED_LSTM_SIMT
#include "cuda_check.h"
#endif

// All shared memory is dynamic, one buffer per block, reached through this macro
// (no static __shared__ arrays: the simt shim gives each block its own storage).
#if FUSED_LSTM_SIMT
#define FUSED_LSTM_DYNAMIC_SMEM(name) unsigned char* name = ::simt::dynamic_shared_memory()
#else
#define FUSED_LSTM_DYNAMIC_SMEM(name)                                  \
  extern __shared__ __align__(16) unsigned char fused_lstm_dynamic_smem[]; \
  unsigned char* name = fused_lstm_dynamic_smem
#endif

namespace fused_lstm::cuda {

struct LaunchConfig {
  unsigned grid = 1, block = 1;
  int64_t shared_memory = 0;  // dynamic, bytes per block
  void* stream = nullptr;     // cudaStream_t
  bool cooperative = false;   // all blocks co-resident; grid.sync() allowed
  int registers_per_thread = 0;  // the launcher's register budget (checked against ptxas by a test)
};

// What the launchers size grids and choose paths by, for the current device.
struct DeviceLimits {
  int sm_count = 0;
  int64_t shared_memory_per_block = 0;  // opt-in maximum for dynamic shared memory
  int64_t shared_memory_per_sm = 0;
  int registers_per_sm = 0;
  int block_threads = 128;  // threads per block the launchers may use, at most
};

// Arguments must have the kernel's exact parameter types: a cooperative launch
// passes their addresses, so a conversion would hand the kernel the wrong bytes.
#define FUSED_LSTM_CHECK_LAUNCH_ARGUMENTS()                                                                \
  static_assert(sizeof...(Params) == sizeof...(Args) && (std::is_same_v<std::decay_t<Args>, Params> && ...), \
                "launch(): pass arguments of the kernel's exact parameter types")

#if FUSED_LSTM_SIMT
inline DeviceLimits device_limits() {
  const simt::DeviceModel& d = simt::device_model();
  return {d.sm_count, d.shared_memory_per_block, d.shared_memory_per_sm, d.registers_per_sm, d.block_threads};
}

// Blocks of `kernel` that can be resident on the whole device at once.
template <class Kernel>
int64_t co_resident_blocks(Kernel, const LaunchConfig& config) {
  const simt::DeviceModel& d = simt::device_model();
  return int64_t(d.sm_count) *
         simt::blocks_per_sm(d, config.registers_per_thread, int(config.block), config.shared_memory);
}

template <class... Params, class... Args>
void launch(void (*kernel)(Params...), const LaunchConfig& config, Args&&... args) {
  FUSED_LSTM_CHECK_LAUNCH_ARGUMENTS();
  simt::LaunchConfig simt_config;
  simt_config.grid = simt::Dim3(config.grid);
  simt_config.block = simt::Dim3(config.block);
  simt_config.shared_memory = config.shared_memory;
  simt_config.cooperative = config.cooperative;
  simt_config.registers_per_thread = config.registers_per_thread;
  try {
    simt::launch(simt_config, kernel, Params(args)...);
  } catch (const simt::Error& e) {
    throw Error(e.what());
  }
}
#else
inline DeviceLimits device_limits() {
  // Cached per device: attribute queries are cheap but not free, and never sync.
  static DeviceLimits cache[64];
  int device = 0;
  FUSED_LSTM_CUDA_CHECK(cudaGetDevice(&device));
  FUSED_LSTM_CHECK(device >= 0 && device < 64, "device ", device);
  DeviceLimits& limits = cache[device];
  if (limits.sm_count == 0) {
    int value = 0;
    FUSED_LSTM_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    limits.shared_memory_per_block = value;
    FUSED_LSTM_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
    limits.shared_memory_per_sm = value;
    FUSED_LSTM_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxRegistersPerMultiprocessor, device));
    limits.registers_per_sm = value;
    FUSED_LSTM_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxThreadsPerBlock, device));
    limits.block_threads = value;
    FUSED_LSTM_CUDA_CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device));
    limits.sm_count = value;
  }
  return limits;
}

template <class Kernel>
void allow_shared_memory(Kernel kernel, int64_t bytes) {
  if (bytes > 48 * 1024)
    FUSED_LSTM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <class Kernel>
int64_t co_resident_blocks(Kernel kernel, const LaunchConfig& config) {
  allow_shared_memory(kernel, config.shared_memory);
  int per_sm = 0;
  FUSED_LSTM_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, int(config.block), size_t(config.shared_memory)));
  return int64_t(per_sm) * device_limits().sm_count;
}

template <class... Params, class... Args>
void launch(void (*kernel)(Params...), const LaunchConfig& config, Args&&... args) {
  FUSED_LSTM_CHECK_LAUNCH_ARGUMENTS();
  allow_shared_memory(kernel, config.shared_memory);
  cudaStream_t stream = static_cast<cudaStream_t>(config.stream);
  if (config.cooperative) {
    void* arguments[] = {const_cast<void*>(static_cast<const void*>(&args))...};
    FUSED_LSTM_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(config.grid),
                                                      dim3(config.block), arguments, size_t(config.shared_memory),
                                                      stream));
  } else {
    kernel<<<config.grid, config.block, size_t(config.shared_memory), stream>>>(Params(args)...);
  }
  FUSED_LSTM_CUDA_CHECK_LAUNCH();
}
#endif

}  // namespace fused_lstm::cuda
