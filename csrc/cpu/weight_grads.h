// The gradients a framework would get from grad_gates with GEMMs after the
// backward recurrence (LstmBwdParams' weight-gradient fields), computed by the
// team inside it, a chunk of steps at a time, while the chunk's grad_gates
// rows are still in cache. For each row k of the chunk in a member's share
// (backward.h; its grad_gates row g_k, its input x_k, its h_{t-1}):
//   grad_w_ih[r] += g_k[r] * x_k        grad_w_hh[r] += g_k[r] * h_{t-1}
//     for the share's gate rows r (those of its unit blocks, whose
//     grad_gates it computed itself: no barrier needed);
//   grad_x[k] = g_k @ W_ih               for the share's blocks of I columns
//     (unit partition: after the step's barrier, as it reads every gate row);
//   grad_bias[r] += g_k[r]               in the gate backward (add_bias).
// The framework's three GEMMs after the recurrence took ~1.3 ms each at
// T=100 N=16 H=128 on Zen 4 (~160 GFLOP/s); here each adds ~0.95 ms to the
// backward (~220 GFLOP/s, 95% of the FMA peak), and db needs no pass of its own.
//
// Determinism: every dW and db element is the sum of two chains, one over
// the rows of batch rows n < batch_split and one over the others (the
// batch's halves, fixed by its size: a batch slice runs one alone), each
// over its rows in a fixed order (chunks from the last step back, rows in
// order within a chunk; dW's chain continues through memory from one chunk
// to the next), and each run by the one member that owns its row or its
// slice; chunks depend on the sizes only. So the thread count never changes
// a bit. On the avx512_amx kernels a float32 backward of 32 steps or more
// with a batch of 8 or more (or H >= 256) computes dW and dx on AMX tiles
// instead (amx_weight_grads.h; the same halves, chunks and rows, so the same
// guarantee): dW at T=100 N=16 H=128 on one thread 1.5x the FMA tiles'
// speed, at T=50 N=64 H=512 2.2x (bench/weight_grads_loop.cpp).
#pragma once
#include <cstring>
#include <type_traits>

#include "amx_weight_grads.h"
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

// The batch rows' two halves (RecurrencePlan::batch_split): each dW and db
// element is one chain over the rows n < batch_split, one over the rest, and
// their sum; a member may run either half alone (batch slices, backward.h).
inline int batch_half(const RecurrencePlan& plan, int64_t n) { return n < plan.batch_split ? 0 : 1; }

template <class T> class WeightGradients {
 public:
  using V = Vec<T>;
  static constexpr int64_t W = V::width;

  // A member's share: the gate rows of `units` (dW, db), the grad_x columns
  // of `inputs`, the batch rows `batch` (every step's rows n in it).
  WeightGradients(const RecurrencePlan& plan, int member, BlockRange units, BlockRange inputs, BlockRange batch)
      : plan_(plan),
        p_(*plan.backward),
        units_(units),
        inputs_(inputs),
        batch_(batch),
        H_(p_.sizes.hidden),
        O_(p_.sizes.out_size()),
        I_(p_.input_size),
        member_(member),
        row_pointers_(static_cast<const T**>(plan.row_pointers) + member * 3 * plan.grad_chunk_rows) {}

  // Before any share runs, each member for its own blocks (owned_blocks):
  // the W_ih panels of its input blocks, zero sums for its gate rows.
  static void prepare(const RecurrencePlan& plan, int member) {
    const LstmBwdParams& p = *plan.backward;
    if (!p.weight_grads_inside()) return;
    const int64_t H = p.sizes.hidden, O = p.sizes.out_size(), I = p.input_size;
    const BlockRange inputs = owned_blocks(plan.input_blocks, plan, member);
    const BlockRange units = owned_blocks(plan.unit_blocks, plan, member);
    const T* w_ih = static_cast<const T*>(p.w_ih);
    for (int64_t q = inputs.begin; p.grad_x && q < inputs.end; ++q) {  // W_ih columns: panel q is [4H][W]
      for (int64_t r = 0; r < 4 * H; ++r)
        load_partial(w_ih + r * I + q * W, I - q * W).store(ih_panel(plan, q) + r * W);
#if FUSED_LSTM_CPU_AMX
      if constexpr (std::is_same_v<T, float>)
        if (plan.amx_ih_panels)
          plan.amx_finite_blocks[q] = pack_amx_columns(ih_panel(plan, q), 4 * H, W, amx_panel(plan, q));
#endif
    }
    for_gate_rows(units, H, [&](int64_t r0, int64_t count) {
      for (int half = 0; half < 2; ++half) {
        if (T* dw = grad_w_ih(plan, half)) std::memset(dw + r0 * I, 0, count * I * sizeof(T));
        if (T* dw = grad_w_hh(plan, half)) std::memset(dw + r0 * O, 0, count * O * sizeof(T));
      }
    });
    for (int64_t b = units.begin; p.grad_bias && b < units.end; ++b)
      for (int half = 0; half < 2; ++half)
        for (int g = 0; g < 4; ++g) {
          V::zero().store(bias_sum(plan, half, b, g));
          V::zero().store(bias_carry(plan, half, b, g));
        }
  }

  // Gate backward's d(pre-activation) of unit block b for batch row n. A
  // compensated (Kahan) sum: a plain float32 running sum erred up to 4e-5
  // against float64 at 360 rows (sums ~60), near the 5e-5 parity bound and
  // growing with the rows; torch's own reductions are pairwise.
  void add_bias(int64_t n, int64_t b, const LstmGates<V>& d) {
    if (!p_.grad_bias) return;
    const int half = batch_half(plan_, n);
    const V* gates[4] = {&d.i, &d.f, &d.g, &d.o};
    for (int g = 0; g < 4; ++g) {
      T* sum_slot = bias_sum(plan_, half, b, g);
      T* carry_slot = bias_carry(plan_, half, b, g);
      const V sum = V::load(sum_slot), term = *gates[g] - V::load(carry_slot), next = sum + term;
      ((next - sum) - term).store(carry_slot);
      next.store(sum_slot);
    }
  }

  // Steps [t_first, t_last], from row row_first: the share's rows of them,
  // whose grad_gates are all written.
  void run_chunk(int64_t t_first, int64_t t_last, int64_t row_first, T* partial) {
    if (!p_.weight_grads_inside()) return;
    const LstmSizes& s = p_.sizes;
    const T* grad_gates = static_cast<const T*>(p_.grad_gates);
    // The share's rows of step t: [row0 + begin, row0 + end).
    auto for_steps = [&](auto fn) {
      int64_t row0 = row_first;
      for (int64_t t = t_first; t <= t_last; ++t) {
        const int64_t rows = rows_at(s, t);
        fn(t, row0, batch_.begin, std::min(batch_.end, rows));
        row0 += rows;
      }
    };
    if (p_.grad_x) input_grads(for_steps, row_first, partial);
    if (!p_.grad_w_ih && !p_.grad_w_hh) return;
    // Per half of the batch: pointers to the share's rows of grad_gates, x
    // and h_{t-1} (h0[n] at t = 0, else row n of step t - 1 in y).
    const T** g_rows = row_pointers_;
    const T** x_rows = row_pointers_ + plan_.grad_chunk_rows;
    const T** h_rows = row_pointers_ + 2 * plan_.grad_chunk_rows;
    const T* x = static_cast<const T*>(p_.x);
    const T* y = static_cast<const T*>(p_.y);
    for (int half = 0; half < 2; ++half) {
      int64_t k = 0;
      for_steps([&](int64_t t, int64_t row0, int64_t begin, int64_t end) {
        const T* prev = t == 0 ? static_cast<const T*>(p_.h0) : y + (row0 - rows_at(s, t - 1)) * O_;
        for (int64_t n = begin; n < end; ++n) {
          if (batch_half(plan_, n) != half) continue;
          g_rows[k] = grad_gates + (row0 + n) * 4 * H_;
          x_rows[k] = x + (row0 + n) * I_;
          h_rows[k++] = prev + n * O_;
        }
      });
      if (k == 0) continue;
      Target targets[2];
      int count = 0;
      if (p_.grad_w_ih) targets[count++] = {x_rows, I_, grad_w_ih(plan_, half)};
      if (p_.grad_w_hh) targets[count++] = {h_rows, O_, grad_w_hh(plan_, half)};
      accumulate(g_rows, k, targets, count, partial);
    }
  }

  // After every share has run its chunks, each member for its own unit
  // blocks: the halves' sums added, into grad_w_ih, grad_w_hh and grad_bias.
  static void finish(const RecurrencePlan& plan, int member) {
    const LstmBwdParams& p = *plan.backward;
    const int64_t H = p.sizes.hidden, O = p.sizes.out_size(), I = p.input_size;
    const BlockRange units = owned_blocks(plan.unit_blocks, plan, member);
    if (plan.batch_split > 0)
      for_gate_rows(units, H, [&](int64_t r0, int64_t count) {
        auto add_rows = [&](T* sums, const T* first_half, int64_t cols) {
          if (!sums) return;
          for (int64_t i = r0 * cols; i < (r0 + count) * cols; i += W) {
            const int64_t lanes = (r0 + count) * cols - i;
            store_partial(sums + i, load_partial(sums + i, lanes) + load_partial(first_half + i, lanes), lanes);
          }
        };
        add_rows(grad_w_ih(plan, 1), grad_w_ih(plan, 0), I);
        add_rows(grad_w_hh(plan, 1), grad_w_hh(plan, 0), O);
      });
    for (int64_t b = units.begin; p.grad_bias && b < units.end; ++b)
      for (int g = 0; g < 4; ++g) {
        V sum = V::load(bias_sum(plan, 1, b, g)) - V::load(bias_carry(plan, 1, b, g));
        if (plan.batch_split > 0) sum = V::load(bias_sum(plan, 0, b, g)) - V::load(bias_carry(plan, 0, b, g)) + sum;
        store_partial(static_cast<T*>(p.grad_bias) + g * H + b * W, sum, H - b * W);
      }
  }

 private:
  // grad_x for the share's rows of a chunk and its input blocks (for_steps:
  // run_chunk's).
  template <class ForSteps> void input_grads(ForSteps& for_steps, int64_t row_first, T* partial) {
    const LstmSizes& s = p_.sizes;
    const T* grad_gates = static_cast<const T*>(p_.grad_gates);
    T* grad_x = static_cast<T*>(p_.grad_x);
    auto dx_on_fma = [&](BlockRange inputs, int64_t row, int64_t rows) {
      product_over_blocks<T, 1>(inputs, grad_gates + row * 4 * H_, 4 * H_, rows, 4 * H_, partial,
                                [&](int64_t q) { return ih_panel(plan_, q); },
                                [&](int64_t n, int64_t q, const V* acc) {
                                  store_partial(grad_x + (row + n) * I_ + q * W, acc[0], I_ - q * W);
                                });
    };
#if FUSED_LSTM_CPU_AMX
    // On AMX tiles, the share's rows of the chunk at once, wherever they lie;
    // an input block with an inf or NaN weight, and a row of grad_gates with
    // one, on the FMA chains (amx_tiles.h).
    if constexpr (std::is_same_v<T, float>)
      if (plan_.amx_ih_panels) {
        int64_t* rows_of = reinterpret_cast<int64_t*>(row_pointers_);  // the share's rows, in order
        int64_t count = 0;
        for_steps([&](int64_t, int64_t row0, int64_t begin, int64_t end) {
          for (int64_t n = begin; n < end; ++n) rows_of[count++] = row0 + n;
        });
        auto on_tiles = [&](int64_t q) { return plan_.amx_finite_blocks[q] != 0; };
        uint16_t* a_tiles = static_cast<uint16_t*>(plan_.amx_rows) + member_ * plan_.amx_rows_values;
        amx_input_grads(
            [&](int64_t r) { return grad_gates + rows_of[r] * 4 * H_; },
            [&](int64_t r) { return grad_x + rows_of[r] * I_; }, count, 4 * H_, I_, inputs_.begin, inputs_.end,
            on_tiles, [&](int64_t q) { return amx_panel(plan_, q); }, a_tiles, partial,
            [&](int64_t r) { dx_on_fma(inputs_, rows_of[r], 1); });
        for (int64_t q = inputs_.begin; q < inputs_.end; ++q)
          if (!on_tiles(q))
            for (int64_t r = 0; r < count; ++r) dx_on_fma({q, q + 1}, rows_of[r], 1);
        return;
      }
#endif
    if (batch_.begin == 0 && batch_.end >= s.batch) {  // the whole chunk at once
      int64_t rows = 0;
      for_steps([&](int64_t, int64_t, int64_t, int64_t end) { rows += end; });
      dx_on_fma(inputs_, row_first, rows);
    } else {
      for_steps([&](int64_t, int64_t row0, int64_t begin, int64_t end) {
        if (begin < end) dx_on_fma(inputs_, row0 + begin, end - begin);
      });
    }
  }

  static T* ih_panel(const RecurrencePlan& plan, int64_t q) {
    return static_cast<T*>(plan.w_ih_panels) + q * 4 * plan.backward->sizes.hidden * W;
  }
  // Input block q's B tiles for dx on AMX.
  static uint16_t* amx_panel(const RecurrencePlan& plan, int64_t q) {
    return static_cast<uint16_t*>(plan.amx_ih_panels) + q * amx_column_panel_values(4 * plan.backward->sizes.hidden);
  }
  // grad_bias's sums of a half (2 x [unit_blocks][4 gates][width] each: sums, Kahan's compensation).
  static T* bias_sum(const RecurrencePlan& plan, int half, int64_t b, int g) {
    return static_cast<T*>(plan.bias_sums) + ((half * plan.unit_blocks + b) * 8 + g) * W;
  }
  static T* bias_carry(const RecurrencePlan& plan, int half, int64_t b, int g) {
    return bias_sum(plan, half, b, g) + 4 * W;
  }
  // Where a half's dW sums go: the second half's (all rows, without a split)
  // into the outputs, the first half's into the plan's first_half_ sums.
  static T* grad_w_ih(const RecurrencePlan& plan, int half) {
    return static_cast<T*>(half == 1 ? plan.backward->grad_w_ih : plan.first_half_w_ih);
  }
  static T* grad_w_hh(const RecurrencePlan& plan, int half) {
    return static_cast<T*>(half == 1 ? plan.backward->grad_w_hh : plan.first_half_w_hh);
  }

  // fn(first gate row, count) for each gate of each unit block of `units`.
  template <class Fn> static void for_gate_rows(BlockRange units, int64_t H, Fn fn) {
    for (int64_t b = units.begin; b < units.end; ++b) {
      const int64_t count = H - b * W < W ? H - b * W : W;
      for (int g = 0; g < 4; ++g) fn(g * H + b * W, count);
    }
  }

  // For each target: dw[r] += sum_k g_rows[k][r] * b_rows[k] for the share's
  // gate rows r (cols per row), in blocks of kGradBlockRows rows k
  // (recurrence_plan.h): a block's column tile of b (kGradBlockRows *
  // kGradTileVectors vectors, 16 KiB with AVX-512) stays in L1 while every
  // gate-row tile reads it. Column tiles have as even a number of vectors as
  // can be (8 as 4 + 4, not 6 + 2). Each element's chain still runs over k in
  // order (through dw between blocks). Measured on a 2-core Sapphire Rapids
  // VM: training T=50 N=64 H=512 10% faster than each tile streaming the
  // chunk's 512 rows from L2.
  // The block's gate columns of grad_gates are first copied into scratch
  // ([group][k][W], a group one gate of one unit block), once for both
  // targets, so a tile's broadcasts read consecutive lines: in place, 4H
  // apart (a power of two), a group's lines fall into a few L1 sets and
  // evict each other (the 6 x 4 tile with its operands in L1: 200 -> 220
  // GFLOP/s). One copy for both targets instead of one each: the weight
  // gradients alone (bench/weight_grads_loop.cpp, T=100 N=16 H=128, one
  // thread) ~7% faster.
  struct Target {
    const T* const* b_rows;  // the rows of x, or of h_{t-1}
    int64_t cols;
    T* dw;
  };
  void accumulate(const T* const* g_rows, int64_t rows, const Target* targets, int count, T* scratch) const {
#if FUSED_LSTM_CPU_AMX
    if constexpr (std::is_same_v<T, float>)
      if (plan_.amx_weight_grads) {
        using Amx = AmxWeightGradients;
        const Amx::Groups groups{units_.begin, units_.end - units_.begin, H_};
        Amx::Target on_tiles[2];
        for (int t = 0; t < count; ++t) on_tiles[t] = {targets[t].b_rows, targets[t].cols, targets[t].dw};
        for (int64_t k0 = 0; k0 < rows && count > 0; k0 += kAmxGradBlockRows) {
          for (int t = 0; t < count; ++t) on_tiles[t].b_rows = targets[t].b_rows + k0;
          Amx::accumulate(g_rows + k0, std::min(kAmxGradBlockRows, rows - k0), groups, on_tiles, count, scratch);
        }
        return;
      }
#endif
    for (int64_t k0 = 0; k0 < rows && count > 0; k0 += kGradBlockRows) {
      const int64_t block = rows - k0 < kGradBlockRows ? rows - k0 : kGradBlockRows;
      T* group = scratch;
      for_gate_rows(units_, H_, [&](int64_t r0, int64_t gate_rows) {
        for (int64_t k = 0; k < block; ++k) load_partial(g_rows[k0 + k] + r0, gate_rows).store(group + k * W);
        group += kGradBlockRows * W;
      });
      for (const Target* target = targets; target < targets + count; ++target) {
        const int64_t cols = target->cols, vectors = (cols + W - 1) / W;
        const int64_t tiles = (vectors + kGradTileVectors - 1) / kGradTileVectors;
        int64_t v0 = 0;
        for (int64_t i = 0; i < tiles; ++i) {
          const int64_t left = tiles - i, size = (vectors - v0 + left - 1) / left;
          const T* packed = scratch;
          for_gate_rows(units_, H_, [&](int64_t r0, int64_t gate_rows) {
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

  const RecurrencePlan& plan_;
  const LstmBwdParams& p_;
  const BlockRange units_, inputs_, batch_;
  const int64_t H_, O_, I_;
  const int member_;
  const T** const row_pointers_;  // the chunk's rows of grad_gates, x and h_{t-1}, grad_chunk_rows apart
};

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
