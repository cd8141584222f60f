// simt shim of <cuda_fp16.h>: the host side of __half (IEEE binary16), with
// round-to-nearest-even conversions through the compiler's _Float16.
#pragma once

struct __half {
  _Float16 value;
  __half() = default;
  __half(float x) : value(static_cast<_Float16>(x)) {}
  operator float() const { return static_cast<float>(value); }
};
inline float __half2float(__half x) { return static_cast<float>(x.value); }
inline __half __float2half_rn(float x) { return __half(x); }
