// The gradients a framework would get from grad_gates with GEMMs after the
// backward recurrence (LstmBwdParams' weight-gradient fields), computed by the
// team inside it, a chunk of steps at a time, while the chunk's grad_gates
// rows are still in cache. For each row k of the chunk (its grad_gates row
// g_k, its input x_k, its h_{t-1}):
//   grad_w_ih[r] += g_k[r] * x_k        grad_w_hh[r] += g_k[r] * h_{t-1}
//     for the member's own gate rows r (those of its unit blocks, whose
//     grad_gates it computed itself: no barrier needed);
//   grad_x[k] = g_k @ W_ih               for its own blocks of I columns (after
//     the step's barrier: it reads every gate row);
//   grad_bias[r] += g_k[r]               in the gate backward (add_bias).
// The framework's three GEMMs after the recurrence took ~1.3 ms each at
// T=100 N=16 H=128 on Zen 4 (~160 GFLOP/s); here each adds ~0.95 ms to the
// backward (~220 GFLOP/s, 95% of the FMA peak), and db needs no pass of its own.
//
// Determinism: every dW and db element is one chain over the rows in a fixed
// order (chunks from the last step back, rows in order within a chunk; dW's
// chain continues through memory from one chunk to the next), run by the one
// member that owns its row; chunks depend on the sizes only. So the thread
// count never changes a bit.
#pragma once
#include <cstring>

#include "forward.h"

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

// A weight-gradient tile: kGradTileRows gate rows (one broadcast each per
// row k) by up to kAccumulatorRegisters / kGradTileRows column vectors
// (AVX-512: 6 x 4; 4 x 6 measured the same at H = 128).
constexpr int kGradTileRows = 6;
constexpr int kGradTileVectors = kAccumulatorRegisters / kGradTileRows;

// dw[r][c0, c0 + NV*W) += sum_{k < rows} a[k*lda + r] * b_rows[k][c0, ...) for
// r < R, the last vector only up to cols (Full: it is whole). The
// accumulators start from dw and go back to it: one FMA chain per element
// over all the chunks.
template <class T, int R, int NV, bool Full>
inline void weight_grad_tile(const T* a, int64_t lda, const T* const* b_rows, int64_t rows, int64_t c0,
                             int64_t cols, T* dw, int64_t ldw) {
  constexpr int W = Vec<T>::width;
  const int64_t last = cols - c0 - (NV - 1) * W;  // columns in the last vector
  auto load = [&](const T* p, int v) {
    return Full || v < NV - 1 ? Vec<T>::load(p) : load_partial(p, last);
  };
  Vec<T> acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = load(dw + r * ldw + c0 + v * W, v);
  for (int64_t k = 0; k < rows; ++k) {
    const T* b = b_rows[k] + c0;
    Vec<T> bk[NV];
    for (int v = 0; v < NV; ++v) bk[v] = load(b + v * W, v);
    for (int r = 0; r < R; ++r) {
      const Vec<T> ak = broadcast(a[k * lda + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = fma(ak, bk[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) {
      T* out = dw + r * ldw + c0 + v * W;
      if (Full || v < NV - 1)
        acc[r][v].store(out);
      else
        store_partial(out, acc[r][v], last);
    }
}

// weight_grad_tile for vectors <= NV, NV chosen at compile time.
template <class T, int R, int NV>
inline void weight_grad_tile_upto(int64_t vectors, const T* a, int64_t lda, const T* const* b_rows, int64_t rows,
                                  int64_t c0, int64_t cols, T* dw, int64_t ldw) {
  if constexpr (NV > 1)
    if (vectors < NV) return weight_grad_tile_upto<T, R, NV - 1>(vectors, a, lda, b_rows, rows, c0, cols, dw, ldw);
  if (c0 + NV * Vec<T>::width <= cols) return weight_grad_tile<T, R, NV, true>(a, lda, b_rows, rows, c0, cols, dw, ldw);
  weight_grad_tile<T, R, NV, false>(a, lda, b_rows, rows, c0, cols, dw, ldw);
}

// Gate rows [0, count) of a (count <= R, chosen at compile time) against
// the `vectors` column vectors of b_rows from c0.
template <class T, int R>
inline void weight_grad_rows(int64_t count, int64_t vectors, const T* a, int64_t lda, const T* const* b_rows,
                             int64_t rows, int64_t c0, int64_t cols, T* dw, int64_t ldw) {
  if constexpr (R > 1)
    if (count < R) return weight_grad_rows<T, R - 1>(count, vectors, a, lda, b_rows, rows, c0, cols, dw, ldw);
  weight_grad_tile_upto<T, R, kGradTileVectors>(vectors, a, lda, b_rows, rows, c0, cols, dw, ldw);
}

template <class T> class WeightGradients {
 public:
  using V = Vec<T>;
  static constexpr int64_t W = V::width;

  WeightGradients(const RecurrencePlan& plan, int member, BlockRange units)
      : p_(*plan.backward),
        units_(units),
        inputs_(owned_blocks(plan.input_blocks, plan, member)),
        H_(p_.sizes.hidden),
        O_(p_.sizes.out_size()),
        I_(p_.input_size),
        w_ih_panels_(static_cast<T*>(plan.w_ih_panels)),
        bias_sums_(static_cast<T*>(plan.bias_sums)),
        chunk_rows_(plan.grad_chunk_rows),
        row_pointers_(static_cast<const T**>(plan.row_pointers) + member * 2 * plan.grad_chunk_rows) {
    if (!p_.weight_grads_inside()) return;
    const T* w_ih = static_cast<const T*>(p_.w_ih);
    for (int64_t q = inputs_.begin; p_.grad_x && q < inputs_.end; ++q)  // W_ih columns: panel q is [4H][W]
      for (int64_t r = 0; r < 4 * H_; ++r) load_partial(w_ih + r * I_ + q * W, I_ - q * W).store(ih_panel(q) + r * W);
    for_own_gate_rows([&](int64_t r0, int64_t count) {
      if (p_.grad_w_ih) std::memset(static_cast<T*>(p_.grad_w_ih) + r0 * I_, 0, count * I_ * sizeof(T));
      if (p_.grad_w_hh) std::memset(static_cast<T*>(p_.grad_w_hh) + r0 * O_, 0, count * O_ * sizeof(T));
    });
    for (int64_t b = units_.begin; p_.grad_bias && b < units_.end; ++b)
      for (int g = 0; g < 4; ++g) {
        V::zero().store(bias_sum(b, g));
        V::zero().store(bias_carry(b, g));
      }
  }

  // Gate backward's d(pre-activation) of unit block b for one row. A
  // compensated (Kahan) sum: a plain float32 running sum erred up to 4e-5
  // against float64 at 360 rows (sums ~60), near the 5e-5 parity bound and
  // growing with the rows; torch's own reductions are pairwise.
  void add_bias(int64_t b, const LstmGates<V>& d) {
    if (!p_.grad_bias) return;
    const V* gates[4] = {&d.i, &d.f, &d.g, &d.o};
    for (int g = 0; g < 4; ++g) {
      const V sum = V::load(bias_sum(b, g)), term = *gates[g] - V::load(bias_carry(b, g)), next = sum + term;
      ((next - sum) - term).store(bias_carry(b, g));
      next.store(bias_sum(b, g));
    }
  }

  // Steps [t_first, t_last], rows [row_first, row_end): every member's
  // grad_gates of them are written (called after the barrier of t_first).
  void run_chunk(int64_t t_first, int64_t t_last, int64_t row_first, int64_t row_end, T* partial) {
    if (!p_.weight_grads_inside()) return;
    const LstmSizes& s = p_.sizes;
    const int64_t rows = row_end - row_first;
    const T* grad_gates = static_cast<const T*>(p_.grad_gates) + row_first * 4 * H_;
    if (p_.grad_x) {
      T* grad_x = static_cast<T*>(p_.grad_x);
      product_over_blocks<T, 1>(inputs_, grad_gates, 4 * H_, rows, 4 * H_, partial,
                                [&](int64_t q) { return ih_panel(q); },
                                [&](int64_t n, int64_t q, const V* acc) {
                                  store_partial(grad_x + (row_first + n) * I_ + q * W, acc[0], I_ - q * W);
                                });
    }
    Target targets[2];
    int count = 0;
    if (p_.grad_w_ih) {
      const T* x = static_cast<const T*>(p_.x);
      for (int64_t k = 0; k < rows; ++k) row_pointers_[k] = x + (row_first + k) * I_;
      targets[count++] = {row_pointers_, I_, static_cast<T*>(p_.grad_w_ih)};
    }
    if (p_.grad_w_hh) {  // h_{t-1} of row n at step t: h0[n] at t = 0, else row n of step t - 1 in y
      const T* y = static_cast<const T*>(p_.y);
      const T** h_rows = row_pointers_ + chunk_rows_;
      int64_t row0 = row_first, k = 0;
      for (int64_t t = t_first; t <= t_last; ++t) {
        const int64_t step_rows = rows_at(s, t);
        const T* prev = t == 0 ? static_cast<const T*>(p_.h0) : y + (row0 - rows_at(s, t - 1)) * O_;
        for (int64_t n = 0; n < step_rows; ++n) h_rows[k++] = prev + n * O_;
        row0 += step_rows;
      }
      targets[count++] = {h_rows, O_, static_cast<T*>(p_.grad_w_hh)};
    }
    accumulate(grad_gates, rows, targets, count, partial);
  }

  void finish() {
    if (!p_.grad_bias) return;
    for (int64_t b = units_.begin; b < units_.end; ++b)
      for (int g = 0; g < 4; ++g)
        store_partial(static_cast<T*>(p_.grad_bias) + g * H_ + b * W, V::load(bias_sum(b, g)), H_ - b * W);
  }

 private:
  T* ih_panel(int64_t q) const { return w_ih_panels_ + q * 4 * H_ * W; }
  T* bias_sum(int64_t b, int g) const { return bias_sums_ + (b * 8 + g) * W; }
  T* bias_carry(int64_t b, int g) const { return bias_sums_ + (b * 8 + 4 + g) * W; }  // Kahan's compensation

  // fn(first gate row, count) for each gate of each own unit block.
  template <class Fn> void for_own_gate_rows(Fn fn) const {
    for (int64_t b = units_.begin; b < units_.end; ++b) {
      const int64_t count = H_ - b * W < W ? H_ - b * W : W;
      for (int g = 0; g < 4; ++g) fn(g * H_ + b * W, count);
    }
  }

  // For each target: dw[r] += sum_k grad_gates[k][r] * b_rows[k] for the own
  // gate rows r (cols per row), in blocks of kGradBlockRows rows k
  // (recurrence_plan.h): a block's column tile of b (kGradBlockRows *
  // kGradTileVectors vectors, 16 KiB with AVX-512) stays in L1 while every
  // gate-row tile reads it. Column tiles have as even a number of vectors as
  // can be (8 as 4 + 4, not 6 + 2). Each element's chain still runs over k in
  // order (through dw between blocks). Measured on a 2-core Sapphire Rapids
  // VM: training T=50 N=64 H=512 10% faster than each tile streaming the
  // chunk's 512 rows from L2.
  // The block's own gate columns of grad_gates are first copied into
  // scratch ([group][k][W], a group one gate of one unit block), once for
  // both targets, so a tile's broadcasts read consecutive lines: in place,
  // 4H apart (a power of two), a group's lines fall into a few L1 sets and
  // evict each other (the 6 x 4 tile with its operands in L1: 200 -> 220
  // GFLOP/s). One copy for both targets instead of one each: the weight
  // gradients alone (bench/weight_grads_loop.cpp, T=100 N=16 H=128, one
  // thread) ~7% faster.
  struct Target {
    const T* const* b_rows;  // the chunk's rows of x, or of h_{t-1}
    int64_t cols;
    T* dw;
  };
  void accumulate(const T* grad_gates, int64_t rows, const Target* targets, int count, T* scratch) const {
    for (int64_t k0 = 0; k0 < rows && count > 0; k0 += kGradBlockRows) {
      const int64_t block = rows - k0 < kGradBlockRows ? rows - k0 : kGradBlockRows;
      T* group = scratch;
      for_own_gate_rows([&](int64_t r0, int64_t gate_rows) {
        for (int64_t k = 0; k < block; ++k)
          load_partial(grad_gates + (k0 + k) * 4 * H_ + r0, gate_rows).store(group + k * W);
        group += kGradBlockRows * W;
      });
      for (const Target* target = targets; target < targets + count; ++target) {
        const int64_t cols = target->cols, vectors = (cols + W - 1) / W;
        const int64_t tiles = (vectors + kGradTileVectors - 1) / kGradTileVectors;
        int64_t v0 = 0;
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t left = tiles - i, size = (vectors - v0 + left - 1) / left;
          const T* packed = scratch;
          for_own_gate_rows([&](int64_t r0, int64_t gate_rows) {
            for (int64_t r = 0; r < gate_rows; r += kGradTileRows) {
              const int64_t tile = gate_rows - r < kGradTileRows ? gate_rows - r : kGradTileRows;
              weight_grad_rows<T, kGradTileRows>(tile, size, packed + r, W, target->b_rows + k0, block, v0 * W, cols,
                                                 target->dw + (r0 + r) * cols, cols);
            }
            packed += kGradBlockRows * W;
          });
          v0 += size;
        }
      }
    }
  }

  const LstmBwdParams& p_;
  const BlockRange units_, inputs_;
  const int64_t H_, O_, I_;
  T* const w_ih_panels_;
  T* const bias_sums_;
  const int64_t chunk_rows_;       // most rows a chunk has
  const T** const row_pointers_;  // the chunk's rows of x, then (from chunk_rows_) of h_{t-1}
};

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
