// The recurrent micro-kernel: out[n][c] = sum_{k < depth} a[n][k] * B[k][c]
// for a few rows n, with B packed into panels, and a caller's epilogue run on
// the accumulators while they are still in registers (the fused gate math).
//
// Panel layout: panel p is [depth][NV][width] contiguous (NV vectors of
// width output columns per k). NP panels are processed together; the
// accumulators are acc[R rows][NP*NV vectors].
//
// Determinism: every output element is one FMA chain over k = 0, 1, ...,
// depth-1 from zero, whatever the row grouping, the panel grouping, the
// depth chunking (partials are stored and reloaded exactly) or the thread
// that runs it. So results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "simd.h"

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

// Rows per register block: accumulators fill the budget (at least 1, at most 8).
template <int Vectors> constexpr int rows_per_block() {
  constexpr int rows = kAccumulatorRegisters / Vectors;
  return rows < 1 ? 1 : (rows > 8 ? 8 : rows);
}

// Depth per chunk, when several row blocks reuse the panels: the NP panels'
// chunk (NP*NV*width*chunk values) stays within ~256 KiB, in L2. Streaming
// the panels from L2 is cheap (sequential, prefetched); an L1-sized chunk
// (24 KiB) measured 5-10% slower on Zen 4 at N=8..64 (the partial sums'
// store and reload per chunk, ragged last chunks).
template <class T, int Vectors> constexpr int64_t depth_chunk() {
  constexpr int64_t chunk = (256 * 1024) / (int64_t(Vectors) * Vec<T>::width * int64_t(sizeof(T)));
  return chunk < 8 ? 8 : chunk;
}

// Cache lines to request into L2 while a block runs: count lines from `lines`.
struct Prefetch {
  const char* lines = nullptr;
  int64_t count = 0;
};

template <class T, int NP, int NV, int R>
inline void panel_block(const T* a, int64_t lda, int64_t k_begin, int64_t k_end, const T* const* panels,
                        Vec<T> (&acc)[R][NP * NV], Prefetch prefetch) {
  constexpr int W = Vec<T>::width;
  const int64_t iterations = k_end - k_begin;
  for (int64_t k = k_begin; k < k_end; ++k) {
    for (int64_t line = k - k_begin; line < prefetch.count; line += iterations)
      __builtin_prefetch(prefetch.lines + line * 64, 0, 2);
    Vec<T> b[NP * NV];
    for (int p = 0; p < NP; ++p)
      for (int v = 0; v < NV; ++v) b[p * NV + v] = Vec<T>::load(panels[p] + (k * NV + v) * W);
    for (int r = 0; r < R; ++r) {
      const Vec<T> x = broadcast(a[r * lda + k]);
      for (int j = 0; j < NP * NV; ++j) acc[r][j] = fma(x, b[j], acc[r][j]);
    }
  }
}

// R rows starting at row (a already offset), depth [k_begin, k_end). Partial
// sums ([R][NP*NV] vectors in partial) carry the chain between depth chunks;
// after the last chunk: epilogue(row, panel, const Vec<T>* NV accumulators).
template <class T, int NP, int NV, int R, class Epilogue>
inline void panel_rows(const T* a, int64_t lda, int64_t row, int64_t k_begin, int64_t k_end, int64_t depth,
                       const T* const* panels, T* partial, Epilogue& epilogue, Prefetch prefetch) {
  constexpr int W = Vec<T>::width, J = NP * NV;
  Vec<T> acc[R][J];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < J; ++j) acc[r][j] = k_begin == 0 ? Vec<T>::zero() : Vec<T>::load(partial + (r * J + j) * W);
  panel_block<T, NP, NV, R>(a, lda, k_begin, k_end, panels, acc, prefetch);
  if (k_end < depth) {
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < J; ++j) acc[r][j].store(partial + (r * J + j) * W);
    return;
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < NP; ++p) epilogue(row + r, p, &acc[r][p * NV]);
}

// panel_rows for a block of rows <= R rows, R chosen at compile time.
template <class T, int NP, int NV, int R, class Epilogue>
inline void panel_rows_upto(int64_t rows, const T* a, int64_t lda, int64_t row, int64_t k_begin, int64_t k_end,
                            int64_t depth, const T* const* panels, T* partial, Epilogue& epilogue,
                            Prefetch prefetch) {
  if constexpr (R > 0) {
    if (rows == R)
      return panel_rows<T, NP, NV, R>(a, lda, row, k_begin, k_end, depth, panels, partial, epilogue, prefetch);
    panel_rows_upto<T, NP, NV, R - 1>(rows, a, lda, row, k_begin, k_end, depth, panels, partial, epilogue,
                                      prefetch);
  }
}

// All rows [0, rows) of a ([rows][lda]) against NP panels, in blocks of at
// most R rows, as even as possible: a ragged last block (8 rows as 6 + 2)
// reloads every panel vector for a few FMAs (4 + 4 measured 2-3% faster at
// N=8, H=128). When several row blocks reuse the panels, a deep product is
// cut into depth chunks (outer loop) so each chunk of the panels stays in L2
// while every row block passes over it.
// partial: scratch of rows * NP*NV * width values. next: lines to request
// into L2 meanwhile (the panels a caller runs next), a share in each pass of
// a row block over a chunk, spread over its k loop so that the requests
// overlap the FMAs.
template <class T, int NP, int NV, class Epilogue>
void panel_product(const T* a, int64_t lda, int64_t rows, int64_t depth, const T* const* panels, T* partial,
                   Epilogue&& epilogue, Prefetch next = {}) {
  constexpr int R = rows_per_block<NP * NV>();
  constexpr int64_t block_values = int64_t(NP) * NV * Vec<T>::width;
  const int64_t chunk = rows > R ? depth_chunk<T, NP * NV>() : depth;
  const int64_t blocks = (rows + R - 1) / R;
  const int64_t passes = blocks * ((depth + chunk - 1) / chunk);
  int64_t pass = 0;
  for (int64_t k = 0; k < depth; k += chunk) {
    const int64_t k_end = k + chunk < depth ? k + chunk : depth;
    int64_t row = 0;
    for (int64_t i = 0; i < blocks; ++i, ++pass) {
      const int64_t left = blocks - i, size = (rows - row + left - 1) / left;
      const int64_t first = next.count * pass / passes, last = next.count * (pass + 1) / passes;
      panel_rows_upto<T, NP, NV, R>(size, a + row * lda, lda, row, k, k_end, depth, panels,
                                    partial + row * block_values, epilogue,
                                    Prefetch{next.lines + first * 64, last - first});
      row += size;
    }
  }
}

// One row a ([depth]) against NP panels of NV = 4 vectors (as panel_product),
// with a second product folded into the same loop over k: R rows of x
// (ldx apart, [x_depth] each) against XV of the NV vectors of one more
// panel (x_panel points at the first of them). At one row the first product
// loads a panel vector per FMA (L2-bound on Zen 4: half the FMA issue slots
// idle) while the second reuses each vector R times (FMA-bound): in one loop
// each fills the other's idle slots. Each output element is still one FMA
// chain over k from zero, so the bits are those of two separate
// panel_products.
// epilogue(0, p, const Vec<T>* NV accumulators); x_epilogue(r, const Vec<T>* XV).
template <class T, int NP, int R, int XV, class Epilogue, class XEpilogue>
inline void panel_row_with_rows(const T* a, int64_t depth, const T* const* panels, const T* x, int64_t ldx,
                                int64_t x_depth, const T* x_panel, Epilogue& epilogue, XEpilogue& x_epilogue) {
  constexpr int W = Vec<T>::width, NV = 4;
  Vec<T> acc[NP * NV], x_acc[R][XV];
  for (int j = 0; j < NP * NV; ++j) acc[j] = Vec<T>::zero();
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < XV; ++v) x_acc[r][v] = Vec<T>::zero();
  auto row_step = [&](int64_t k) {
    const Vec<T> ak = broadcast(a[k]);
    for (int p = 0; p < NP; ++p)
      for (int v = 0; v < NV; ++v)
        acc[p * NV + v] = fma(ak, Vec<T>::load(panels[p] + (k * NV + v) * W), acc[p * NV + v]);
  };
  auto x_step = [&](int64_t k) {
    Vec<T> b[XV];
    for (int v = 0; v < XV; ++v) b[v] = Vec<T>::load(x_panel + (k * NV + v) * W);
    for (int r = 0; r < R; ++r) {
      const Vec<T> xk = broadcast(x[r * ldx + k]);
      for (int v = 0; v < XV; ++v) x_acc[r][v] = fma(xk, b[v], x_acc[r][v]);
    }
  };
  const int64_t common = depth < x_depth ? depth : x_depth;
  for (int64_t k = 0; k < common; ++k) {
    row_step(k);
    x_step(k);
  }
  for (int64_t k = common; k < depth; ++k) row_step(k);
  for (int64_t k = common; k < x_depth; ++k) x_step(k);
  for (int p = 0; p < NP; ++p) epilogue(0, p, &acc[p * NV]);
  for (int r = 0; r < R; ++r) x_epilogue(r, x_acc[r]);
}

// panel_row_with_rows for rows <= R of x, R chosen at compile time.
template <class T, int NP, int R, int XV, class Epilogue, class XEpilogue>
inline void fold_rows(int64_t rows, const T* a, int64_t depth, const T* const* panels, const T* x, int64_t ldx,
                      int64_t x_depth, const T* x_panel, Epilogue& epilogue, XEpilogue& x_epilogue) {
  if constexpr (R > 1)
    if (rows < R)
      return fold_rows<T, NP, R - 1, XV>(rows, a, depth, panels, x, ldx, x_depth, x_panel, epilogue, x_epilogue);
  panel_row_with_rows<T, NP, R, XV>(a, depth, panels, x, ldx, x_depth, x_panel, epilogue, x_epilogue);
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
