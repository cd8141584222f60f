// SIMD vector types for the CPU recurrence, one set per instruction set, and
// the ONE vectorised exp/tanh. csrc/common/lstm_math.h stays the definition of
// the gate math: its templates are instantiated with these types (operators
// and ADL-found lstm_exp / lstm_tanh), so the formulas are not copied here.
//
// Include only from an ISA translation unit that defines FUSED_LSTM_CPU_ISA
// (avx512, avx2 or portable) and is compiled with that ISA's flags: every
// definition below then lives in namespace fused_lstm::cpu::<ISA>, so inline
// code compiled for AVX-512 can never be merged by the linker into a path
// taken on a CPU without it.
//
// Vec<T> interface: width, Scalar, load/store (unaligned), broadcast, zero,
// fma(a, b, c) = a*b + c with one rounding, + - * / and unary -.
//
// float: exp is Cephes' expf (range reduction by ln2 in two parts, degree-6
// polynomial, ~2 ulp); inputs clamped to [-87.3, 88.37] so no overflow and no
// denormals; NaN propagates. tanh(x) = 1 - 2 / (exp(2x) + 1): absolute error
// ~1e-7, well inside the 5e-5 float32 parity bound. Reciprocals (sigmoid,
// tanh) are the hardware estimate refined by one Newton step, ~1 ulp, a
// third of a division's cost. double: per-lane libm exp/tanh and exact
// division (parity 1e-10 with the reference). In the recurrence the gate
// math is not what limits (measured at N=8/16, H=128: a division instead of
// the refined estimate, or ln2 in one part instead of two, within 2%).
#pragma once
#include <cmath>
#include <cstdint>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../common/lstm_math.h"

#ifndef FUSED_LSTM_CPU_ISA
#error "define FUSED_LSTM_CPU_ISA (avx512, avx2, portable) before including simd.h"
#endif

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

template <class T> struct Vec;

#if defined(__AVX512F__)
constexpr int kAccumulatorRegisters = 24;  // of 32 zmm: room for weights and a broadcast

template <> struct Vec<float> {
  using Scalar = float;
  static constexpr int width = 16;
  __m512 v;
  Vec() = default;
  Vec(__m512 x) : v(x) {}
  Vec(float s) : v(_mm512_set1_ps(s)) {}
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec zero() { return _mm512_setzero_ps(); }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
template <> struct Vec<double> {
  using Scalar = double;
  static constexpr int width = 8;
  __m512d v;
  Vec() = default;
  Vec(__m512d x) : v(x) {}
  Vec(double s) : v(_mm512_set1_pd(s)) {}
  static Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static Vec zero() { return _mm512_setzero_pd(); }
  void store(double* p) const { _mm512_storeu_pd(p, v); }
};
inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return _mm512_add_ps(a.v, b.v); }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return _mm512_sub_ps(a.v, b.v); }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return _mm512_mul_ps(a.v, b.v); }
inline Vec<float> operator/(Vec<float> a, Vec<float> b) { return _mm512_div_ps(a.v, b.v); }
inline Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
inline Vec<float> clamp(Vec<float> x, float lo, float hi) {
  // NaN as the second operand comes through max/min.
  return _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), x.v));
}
inline Vec<float> round_nearest(Vec<float> x) {
  return _mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// p * 2^n for integral n in [-126, 127].
inline Vec<float> times_exp2(Vec<float> p, Vec<float> n) { return _mm512_scalef_ps(p.v, n.v); }
// 1/d: rcp14 (relative error < 2^-14) refined by one Newton step, y + y*(1 - d*y).
inline Vec<float> lstm_reciprocal(Vec<float> d) {
  const __m512 y = _mm512_rcp14_ps(d.v);
  return _mm512_fmadd_ps(y, _mm512_fnmadd_ps(d.v, y, _mm512_set1_ps(1.0f)), y);
}
inline Vec<double> operator+(Vec<double> a, Vec<double> b) { return _mm512_add_pd(a.v, b.v); }
inline Vec<double> operator-(Vec<double> a, Vec<double> b) { return _mm512_sub_pd(a.v, b.v); }
inline Vec<double> operator*(Vec<double> a, Vec<double> b) { return _mm512_mul_pd(a.v, b.v); }
inline Vec<double> operator/(Vec<double> a, Vec<double> b) { return _mm512_div_pd(a.v, b.v); }
inline Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return _mm512_fmadd_pd(a.v, b.v, c.v); }

#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kAccumulatorRegisters = 12;  // of 16 ymm

template <> struct Vec<float> {
  using Scalar = float;
  static constexpr int width = 8;
  __m256 v;
  Vec() = default;
  Vec(__m256 x) : v(x) {}
  Vec(float s) : v(_mm256_set1_ps(s)) {}
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec zero() { return _mm256_setzero_ps(); }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
template <> struct Vec<double> {
  using Scalar = double;
  static constexpr int width = 4;
  __m256d v;
  Vec() = default;
  Vec(__m256d x) : v(x) {}
  Vec(double s) : v(_mm256_set1_pd(s)) {}
  static Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static Vec zero() { return _mm256_setzero_pd(); }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
};
inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return _mm256_add_ps(a.v, b.v); }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return _mm256_sub_ps(a.v, b.v); }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return _mm256_mul_ps(a.v, b.v); }
inline Vec<float> operator/(Vec<float> a, Vec<float> b) { return _mm256_div_ps(a.v, b.v); }
inline Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
inline Vec<float> clamp(Vec<float> x, float lo, float hi) {
  return _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x.v));
}
inline Vec<float> round_nearest(Vec<float> x) {
  return _mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline Vec<float> times_exp2(Vec<float> p, Vec<float> n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p.v, _mm256_castsi256_ps(bits));
}
// 1/d: rcp (relative error < 1.5 * 2^-12) refined by one Newton step.
inline Vec<float> lstm_reciprocal(Vec<float> d) {
  const __m256 y = _mm256_rcp_ps(d.v);
  return _mm256_fmadd_ps(y, _mm256_fnmadd_ps(d.v, y, _mm256_set1_ps(1.0f)), y);
}
inline Vec<double> operator+(Vec<double> a, Vec<double> b) { return _mm256_add_pd(a.v, b.v); }
inline Vec<double> operator-(Vec<double> a, Vec<double> b) { return _mm256_sub_pd(a.v, b.v); }
inline Vec<double> operator*(Vec<double> a, Vec<double> b) { return _mm256_mul_pd(a.v, b.v); }
inline Vec<double> operator/(Vec<double> a, Vec<double> b) { return _mm256_div_pd(a.v, b.v); }
inline Vec<double> fma(Vec<double> a, Vec<double> b, Vec<double> c) { return _mm256_fmadd_pd(a.v, b.v, c.v); }

#else
// Portable: one scalar lane; exp/tanh are lstm_math.h's own (libm).
constexpr int kAccumulatorRegisters = 8;

template <class T> struct Vec {
  using Scalar = T;
  static constexpr int width = 1;
  T v;
  Vec() = default;
  Vec(T s) : v(s) {}
  static Vec load(const T* p) { return *p; }
  static Vec zero() { return T(0); }
  void store(T* p) const { *p = v; }
};
template <class T> Vec<T> operator+(Vec<T> a, Vec<T> b) { return a.v + b.v; }
template <class T> Vec<T> operator-(Vec<T> a, Vec<T> b) { return a.v - b.v; }
template <class T> Vec<T> operator*(Vec<T> a, Vec<T> b) { return a.v * b.v; }
template <class T> Vec<T> operator/(Vec<T> a, Vec<T> b) { return a.v / b.v; }
template <class T> Vec<T> fma(Vec<T> a, Vec<T> b, Vec<T> c) { return std::fma(a.v, b.v, c.v); }
template <class T> Vec<T> lstm_exp(Vec<T> x) { return ::fused_lstm::lstm_exp(x.v); }
template <class T> Vec<T> lstm_tanh(Vec<T> x) { return ::fused_lstm::lstm_tanh(x.v); }
template <class T> Vec<T> lstm_reciprocal(Vec<T> x) { return ::fused_lstm::lstm_reciprocal(x.v); }
#endif

template <class T> Vec<T> operator-(Vec<T> a) { return Vec<T>::zero() - a; }
template <class T> Vec<T> broadcast(T s) { return Vec<T>(s); }

#if defined(__AVX2__) || defined(__AVX512F__)
inline Vec<float> lstm_exp(Vec<float> x) {
  x = clamp(x, -87.33f, 88.37f);
  const Vec<float> n = round_nearest(x * Vec<float>(1.44269504088896341f));
  // r = x - n*ln2, ln2 split so that n*0.693359375 is exact.
  Vec<float> r = fma(n, Vec<float>(-0.693359375f), x);
  r = fma(n, Vec<float>(2.12194440e-4f), r);
  Vec<float> p(1.9875691500e-4f);
  p = fma(p, r, Vec<float>(1.3981999507e-3f));
  p = fma(p, r, Vec<float>(8.3334519073e-3f));
  p = fma(p, r, Vec<float>(4.1665795894e-2f));
  p = fma(p, r, Vec<float>(1.6666665459e-1f));
  p = fma(p, r, Vec<float>(5.0000001201e-1f));
  p = fma(p, r * r, r + Vec<float>(1.0f));
  return times_exp2(p, n);
}
inline Vec<float> lstm_tanh(Vec<float> x) {
  const Vec<float> e = lstm_exp(x + x);
  return fma(Vec<float>(-2.0f), lstm_reciprocal(e + Vec<float>(1.0f)), Vec<float>(1.0f));
}
inline Vec<double> lstm_reciprocal(Vec<double> d) { return Vec<double>(1.0) / d; }
// double: per lane through libm (std::exp is an external function, no ODR hazard).
inline Vec<double> lstm_exp(Vec<double> x) {
  alignas(64) double lanes[Vec<double>::width];
  x.store(lanes);
  for (double& lane : lanes) lane = std::exp(lane);
  return Vec<double>::load(lanes);
}
inline Vec<double> lstm_tanh(Vec<double> x) {
  alignas(64) double lanes[Vec<double>::width];
  x.store(lanes);
  for (double& lane : lanes) lane = std::tanh(lane);
  return Vec<double>::load(lanes);
}
#endif

// One width x width tile transposed: dst[k * dst_stride + lane] =
// src[lane * src_stride + k] (weight packing). Generic: element by element.
template <class T> void transpose_tile(const T* src, int64_t src_stride, T* dst, int64_t dst_stride) {
  constexpr int W = Vec<T>::width;
  for (int lane = 0; lane < W; ++lane)
    for (int k = 0; k < W; ++k) dst[k * dst_stride + lane] = src[lane * src_stride + k];
}
#if defined(__AVX512F__)
// float on AVX-512: 16 rows in registers, 32-bit, 64-bit and two 128-bit
// interleaving stages (each row read as one cache line, each column written
// as one vector).
inline void transpose_tile(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  auto lo64 = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  auto hi64 = [](__m512 a, __m512 b) {
    return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
  };
  // r[4q + j]: rows 4q..4q+3 of columns j, 4+j, 8+j, 12+j (one per 128-bit lane).
  for (int q = 0; q < 4; ++q) {
    r[4 * q] = lo64(t[4 * q], t[4 * q + 2]);
    r[4 * q + 1] = hi64(t[4 * q], t[4 * q + 2]);
    r[4 * q + 2] = lo64(t[4 * q + 1], t[4 * q + 3]);
    r[4 * q + 3] = hi64(t[4 * q + 1], t[4 * q + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
  }
  for (int j = 0; j < 4; ++j) {  // column c = all 16 rows of src's column c
    _mm512_storeu_ps(dst + j * dst_stride, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(dst + (8 + j) * dst_stride, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd));
    _mm512_storeu_ps(dst + (4 + j) * dst_stride, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88));
    _mm512_storeu_ps(dst + (12 + j) * dst_stride, _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd));
  }
}
// double on AVX-512: 8 rows in registers, 64-bit interleaving, then two
// stages of 128-bit lane shuffles.
inline void transpose_tile(const double* src, int64_t src_stride, double* dst, int64_t dst_stride) {
  __m512d r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_pd(src + i * src_stride);
  for (int i = 0; i < 4; ++i) {  // t[2i] = a0 b0 | a2 b2 | a4 b4 | a6 b6, t[2i+1]: the odd columns
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  // r[4h + j]: rows 4h..4h+3 of columns j and j + 4, as two-row 128-bit lanes.
  for (int h = 0; h < 2; ++h)
    for (int odd = 0; odd < 2; ++odd) {
      r[4 * h + odd] = _mm512_shuffle_f64x2(t[4 * h + odd], t[4 * h + 2 + odd], 0x88);
      r[4 * h + 2 + odd] = _mm512_shuffle_f64x2(t[4 * h + odd], t[4 * h + 2 + odd], 0xdd);
    }
  for (int j = 0; j < 4; ++j) {  // column c = all 8 rows of src's column c
    _mm512_storeu_pd(dst + j * dst_stride, _mm512_shuffle_f64x2(r[j], r[4 + j], 0x88));
    _mm512_storeu_pd(dst + (j + 4) * dst_stride, _mm512_shuffle_f64x2(r[j], r[4 + j], 0xdd));
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
// float on AVX2: 8 rows in registers, 32-bit and 64-bit interleaving within
// 128-bit lanes, then the lanes exchanged (measured at H=1024: packing both
// weights took ~4 ms a call element by element, ~2.5x the AVX-512 path).
inline void transpose_tile(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 4; ++i) {  // t[2i] = a0 b0 a1 b1 | a4 b4 a5 b5, t[2i+1] = a2 b2 a3 b3 | a6 b6 a7 b7
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4q + j]: rows 4q..4q+3 of columns j | 4+j.
  for (int q = 0; q < 2; ++q) {
    r[4 * q] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * q + 1] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * q + 2] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * q + 3] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {  // column c = all 8 rows of src's column c
    _mm256_storeu_ps(dst + j * dst_stride, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * dst_stride, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
  }
}
// double on AVX2: 4 rows, 64-bit interleaving, then the 128-bit halves exchanged.
inline void transpose_tile(const double* src, int64_t src_stride, double* dst, int64_t dst_stride) {
  __m256d r[4], t[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(src + i * src_stride);
  for (int i = 0; i < 2; ++i) {  // t[2i] = a0 b0 | a2 b2, t[2i+1] = a1 b1 | a3 b3
    t[2 * i] = _mm256_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  for (int odd = 0; odd < 2; ++odd) {
    _mm256_storeu_pd(dst + odd * dst_stride, _mm256_permute2f128_pd(t[odd], t[2 + odd], 0x20));
    _mm256_storeu_pd(dst + (2 + odd) * dst_stride, _mm256_permute2f128_pd(t[odd], t[2 + odd], 0x31));
  }
}
#endif

// Loads count (<= width) elements, zero-filling the rest; stores count.
template <class T> Vec<T> load_partial(const T* p, int64_t count) {
  if (count >= Vec<T>::width) return Vec<T>::load(p);
  alignas(64) T lanes[Vec<T>::width] = {};
  for (int64_t i = 0; i < count; ++i) lanes[i] = p[i];
  return Vec<T>::load(lanes);
}
template <class T> void store_partial(T* p, Vec<T> v, int64_t count) {
  if (count >= Vec<T>::width) return v.store(p);
  alignas(64) T lanes[Vec<T>::width];
  v.store(lanes);
  for (int64_t i = 0; i < count; ++i) p[i] = lanes[i];
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
