// Storage types by DType and their conversions to and from the fp32/fp64
// accumulation type. fp16/bf16 round to nearest even on the way back.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common/lstm_math.h"
#include "../common/params.h"

namespace fused_lstm::cuda {

template <DType> struct Storage;
template <> struct Storage<DType::kFloat32> { using type = float; };
template <> struct Storage<DType::kFloat64> { using type = double; };
template <> struct Storage<DType::kFloat16> { using type = __half; };
template <> struct Storage<DType::kBFloat16> { using type = __nv_bfloat16; };
template <DType D> using storage_t = typename Storage<D>::type;

template <class T> __host__ __device__ __forceinline__ acc_t<T> to_acc(T x) { return x; }
template <> __host__ __device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
template <> __host__ __device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __host__ __device__ __forceinline__ T from_acc(acc_t<T> x) { return T(x); }
template <> __host__ __device__ __forceinline__ __half from_acc(float x) { return __float2half_rn(x); }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_acc(float x) { return __float2bfloat16_rn(x); }

}  // namespace fused_lstm::cuda
