// simt shim of <cuda_bf16.h>: the host side of __nv_bfloat16 (the top 16 bits
// of an fp32), with round-to-nearest-even conversion.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t wide = uint32_t(x.bits) << 16;
  float result;
  std::memcpy(&result, &wide, sizeof(result));
  return result;
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t wide;
  std::memcpy(&wide, &x, sizeof(wide));
  if ((wide & 0x7fffffffu) > 0x7f800000u) return {uint16_t((wide >> 16) | 0x40)};  // quiet NaN
  wide += 0x7fffu + ((wide >> 16) & 1u);
  return {uint16_t(wide >> 16)};
}
