// simt shim of <cuda_runtime.h>: found first on the include path of simt
// builds (csrc/simt/include), so kernel sources compile unchanged with g++.
#pragma once
#include "../simt.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

using dim3 = ::simt::Dim3;
using uint3 = ::simt::uint3;
using cudaStream_t = void*;

#define threadIdx (::simt::this_thread().thread_idx)
#define blockIdx (::simt::this_thread().block_idx)
#define blockDim (::simt::this_thread().block_dim)
#define gridDim (::simt::this_thread().grid_dim)

inline void __syncthreads() { ::simt::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::simt::syncwarp(); }

template <class T> T __shfl_sync(unsigned, T value, int source_lane, int width = 32) {
  const int lane = int(threadIdx.x % 32);
  return ::simt::shuffle(value, (lane / width) * width + source_lane % width);
}
template <class T> T __shfl_xor_sync(unsigned, T value, int lane_mask, int width = 32) {
  const int lane = int(threadIdx.x % 32);
  const int source = lane ^ lane_mask;
  return ::simt::shuffle(value, (source / width == lane / width) ? source : lane);
}
template <class T> T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
  const int lane = int(threadIdx.x % 32);
  const int source = lane + int(delta);
  return ::simt::shuffle(value, (source / width == lane / width) ? source : lane);
}
inline int __any_sync(unsigned, int predicate) {
  int any = predicate != 0;
  for (int mask = 16; mask > 0; mask /= 2) any |= __shfl_xor_sync(0xffffffffu, any, mask);
  return any;
}

template <class T> T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
