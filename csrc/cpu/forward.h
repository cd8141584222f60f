// Forward recurrence, run by every member of the thread team for its own
// blocks of hidden units, all steps (see recurrence_plan.h for the partition).
// With the input projection inside (p.projects_input()), every chunk of steps
// starts with gates_chunk = x @ W_ih^T + b for the member's own units, or at
// N = 1 each step folds the next rows' projection into its recurrent product
// (fold_step): the member alone reads what it wrote, so this needs no barrier.
// Per step t (rows = batch at t):
//   pre[n][g*H+j] = gates_x[row][g*H+j] + sum_k h_{t-1}[n][k] * W_hh[g*H+j][k]
//   gate math (lstm_math.h, vectorised) -> c_t (member-private), h_t
//   no projection: h_t -> y, h-buffer;                    one barrier
//   projection:    h_t -> exchange; barrier; own outputs q of h_t @ W_hr^T
//                  -> y, h-buffer;                        second barrier
#pragma once
#include <algorithm>
#include <type_traits>

#include "amx_projection.h"
#include "panel_product.h"
#include "../common/lstm_math.h"
#include "recurrence_plan.h"
#include "thread_team.h"

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

struct BlockRange {
  int64_t begin, end;
};
// (Plain inline functions are safe here: the namespace is per ISA.)
inline BlockRange owned_blocks(int64_t blocks, const RecurrencePlan& plan, int member) {
  return {blocks * member / plan.members, blocks * (member + 1) / plan.members};
}
inline int64_t rows_at(const LstmSizes& s, int64_t t) { return s.batch_sizes ? s.batch_sizes[t] : s.batch; }

// Called after a barrier, before a product reads values [p, p + count) that
// every member wrote (h_{t-1}; in backward the step's grad_gates rows):
// requests all their cache lines at once, so the other members' lines come
// over in parallel, not a few at a time as the product's loads reach them
// (a 2-core Sapphire Rapids VM, backward at N=16 H=128: the dh product took
// 1.10 ms of 3.7, 0.57 with the same rows in private memory, 0.82 with this).
// Into L1 up to 32 KiB, else into L2 (N=64 H=512, 128 KiB: L1 2-5% slower).
template <class T> inline void prefetch_shared(const T* p, int64_t count) {
  constexpr int64_t kLineValues = 64 / sizeof(T);
  if (count * int64_t(sizeof(T)) <= 32 * 1024)
    for (int64_t i = 0; i < count; i += kLineValues) __builtin_prefetch(p + i, 0, 3);
  else
    for (int64_t i = 0; i < count; i += kLineValues) __builtin_prefetch(p + i, 0, 2);
}

// Runs panel_product over blocks [begin, end), Group panels at a time, the
// rest in halving groups. panel_of(block) -> panel pointer (the panels of
// consecutive blocks are contiguous); epilogue(row, block, const Vec<T>*
// accumulators). prefetch_next: while a group runs, its row blocks request
// the next group's panels into L2, a share each (RecurrencePlan::prefetch_panels).
template <class T, int NV, int Group, class PanelOf, class Epilogue>
void product_in_groups(BlockRange blocks, const T* a, int64_t lda, int64_t rows, int64_t depth, T* partial,
                       PanelOf& panel_of, Epilogue& epilogue, bool prefetch_next) {
  int64_t b = blocks.begin;
  for (; b + Group <= blocks.end; b += Group) {
    const T* panels[Group];
    for (int g = 0; g < Group; ++g) panels[g] = panel_of(b + g);
    Prefetch next;
    if (prefetch_next && b + Group < blocks.end) {
      next.lines = reinterpret_cast<const char*>(panel_of(b + Group));
      next.count = std::min<int64_t>(Group, blocks.end - b - Group) * depth * NV * Vec<T>::width * sizeof(T) / 64;
    }
    panel_product<T, Group, NV>(a, lda, rows, depth, panels, partial,
                                [&](int64_t n, int p, const Vec<T>* acc) { epilogue(n, b + p, acc); }, next);
  }
  if constexpr (Group > 1)
    if (b < blocks.end)
      product_in_groups<T, NV, Group / 2>({b, blocks.end}, a, lda, rows, depth, partial, panel_of, epilogue,
                                          prefetch_next);
}

// Group size: enough independent accumulators for few rows (FMA latency),
// few loads per FMA for many rows (weights reused across a row block).
template <class T, int NV, class PanelOf, class Epilogue>
void product_over_blocks(BlockRange blocks, const T* a, int64_t lda, int64_t rows, int64_t depth, T* partial,
                         PanelOf panel_of, Epilogue epilogue, bool prefetch_next = false) {
  if constexpr (NV == 4) {
    if (rows <= rows_per_block<8>())
      return product_in_groups<T, 4, 2>(blocks, a, lda, rows, depth, partial, panel_of, epilogue, prefetch_next);
    return product_in_groups<T, 4, 1>(blocks, a, lda, rows, depth, partial, panel_of, epilogue, prefetch_next);
  } else {
    if (rows <= rows_per_block<8 * NV>())
      return product_in_groups<T, NV, 8>(blocks, a, lda, rows, depth, partial, panel_of, epilogue, prefetch_next);
    return product_in_groups<T, NV, 4>(blocks, a, lda, rows, depth, partial, panel_of, epilogue, prefetch_next);
  }
}

// Packs the rows of unit block b of a gate-stacked weight w ([4H][depth],
// nn.LSTM's W_hh or W_ih) into panel [depth][4][W], zero past H.
template <class T>
void pack_gate_panel(const T* w, int64_t H, int64_t depth, int64_t b, T* panel) {
  constexpr int64_t W = Vec<T>::width;
  const int64_t lanes = H - b * W < W ? H - b * W : W;
  // W x W tiles (k by lane) of each gate, transposed in registers where the
  // ISA can; the ragged edges (last block past H, depth % W) element-wise.
  for (int g = 0; g < 4; ++g) {
    const T* rows = w + (g * H + b * W) * depth;
    int64_t k0 = 0;
    if (lanes == W)
      for (; k0 + W <= depth; k0 += W) transpose_tile(rows + k0, depth, panel + (k0 * 4 + g) * W, 4 * W);
    for (int64_t k = k0; k < depth; ++k)
      for (int64_t lane = 0; lane < W; ++lane)
        panel[(k * 4 + g) * W + lane] = lane < lanes ? rows[lane * depth + k] : T(0);
  }
}

// Whether this ISA has the registers for fold_step's folded products (24
// accumulators beside the loaded weights and a broadcast).
constexpr bool kFoldsProjection = kAccumulatorRegisters >= 24;

template <class T> void forward_member(const RecurrencePlan& plan, int member) {
  using V = Vec<T>;
  constexpr int64_t W = V::width;
  const LstmFwdParams& p = *plan.forward;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, O = P > 0 ? P : H, N = s.batch;
  const BlockRange units = owned_blocks(plan.unit_blocks, plan, member);
  const BlockRange outs = owned_blocks(plan.out_blocks, plan, member);
  const T* gates_x = static_cast<const T*>(p.gates_x);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  T* y = static_cast<T*>(p.y);
  T* h_n = static_cast<T*>(p.h_n);
  T* c_n = static_cast<T*>(p.c_n);
  T* saved_gates = static_cast<T*>(p.saved_gates);
  T* saved_c = static_cast<T*>(p.saved_c);
  T* saved_h = static_cast<T*>(p.saved_h);
  T* w_hh_panels = static_cast<T*>(plan.w_hh_panels);
  T* w_hr_panels = static_cast<T*>(plan.w_hr_panels);
  T* cell_state = static_cast<T*>(plan.cell_state);
  T* h_cell = static_cast<T*>(plan.exchange);
  T* partial = static_cast<T*>(plan.partial) + member * plan.partial_values;
  const int64_t cell_stride = plan.unit_blocks * W;  // row stride of h_cell
  const int64_t I = p.input_size;
  const T* x = static_cast<const T*>(p.x);
  T* w_ih_panels = static_cast<T*>(plan.w_ih_panels);
  T* bias_panels = static_cast<T*>(plan.bias_panels);
  T* gates_chunk = static_cast<T*>(plan.gates_chunk);

  // Pack this member's W_hh rows (panel b is [O][4][W]) and, projecting the
  // input, its W_ih rows ([I][4][W]) and b_ih + b_hh ([4][W]); zero past H.
  auto hh_panel = [&](int64_t b) { return w_hh_panels + b * O * 4 * W; };
  auto ih_panel = [&](int64_t b) { return w_ih_panels + b * I * 4 * W; };
#if FUSED_LSTM_CPU_AMX
  auto amx_panel = [&](int64_t b) { return static_cast<uint16_t*>(plan.amx_ih_panels) + b * amx_gate_panel_values(I); };
#endif
  for (int64_t b = units.begin; b < units.end; ++b) {
    if (!p.gate_math_only()) pack_gate_panel(w_hh, H, O, b, hh_panel(b));
    if (p.projects_input()) {
      pack_gate_panel(static_cast<const T*>(p.w_ih), H, I, b, ih_panel(b));
#if FUSED_LSTM_CPU_AMX
      if constexpr (std::is_same_v<T, float>)
        if (plan.amx_ih_panels) plan.amx_finite_blocks[b] = pack_amx_gate_panel(ih_panel(b), I, amx_panel(b));
#endif
      const T* b_ih = static_cast<const T*>(p.b_ih);
      const T* b_hh = static_cast<const T*>(p.b_hh);
      const int64_t lanes = H - b * W;
      for (int g = 0; g < 4; ++g) {
        const V bias = b_ih ? load_partial(b_ih + g * H + b * W, lanes) + load_partial(b_hh + g * H + b * W, lanes)
                            : V::zero();
        bias.store(bias_panels + (b * 4 + g) * W);
      }
    }
    // Cell state from c0 (nullptr: zero), zero in the padding lanes.
    const T* c0 = static_cast<const T*>(p.c0);
    for (int64_t n = 0; n < N; ++n)
      (c0 ? load_partial(c0 + n * H + b * W, H - b * W) : V::zero()).store(cell_state + (b * N + n) * W);
  }
  // And its W_hr rows: panel q is [H][W], zero past P.
  auto hr_panel = [&](int64_t q) { return w_hr_panels + q * H * W; };
  for (int64_t q = outs.begin; P > 0 && q < outs.end; ++q) {
    T* panel = hr_panel(q);
    for (int64_t lane = 0; lane < W; ++lane) {
      const int64_t out = q * W + lane;
      for (int64_t j = 0; j < H; ++j) panel[j * W + lane] = out < P ? w_hr[out * H + j] : T(0);
    }
  }

  // With the projection inside, gates_chunk holds x @ W_ih^T + b for the
  // member's units: in chunks of steps (project_chunk) or, when the plan
  // folds (N = 1, an ISA with the registers), in a ring of kFoldRingRows
  // rows that every step refills by folding the projection of the next
  // kFoldRows rows, for some gates of some unit blocks, into its recurrent
  // product (fold_step).
  const bool folds = kFoldsProjection && plan.fold_projection;
  int64_t chunk_row0 = 0, chunk_end = 0;
  auto chunk_slot = [&](int64_t row, int64_t b) {
    return gates_chunk + (b * plan.chunk_rows + (folds ? row % kFoldRingRows : row - chunk_row0)) * 4 * W;
  };
  // Gates [first, first + count) of row `row`, unit block b: acc[0, count) + b.
  auto store_projection = [&](int64_t row, int64_t b, int first, int count, const V* acc) {
    T* out = chunk_slot(row, b);
    for (int g = first; g < first + count; ++g)
      (acc[g - first] + V::load(bias_panels + (b * 4 + g) * W)).store(out + g * W);
  };
  // Rows [row0, row0 + rows) of x @ W_ih^T + b, unit blocks `blocks`.
  auto project_on_fma = [&](BlockRange blocks, int64_t row0, int64_t rows) {
    product_over_blocks<T, 4>(
        blocks, x + row0 * I, I, rows, I, partial, ih_panel,
        [&](int64_t n, int64_t b, const V* acc) { store_projection(row0 + n, b, 0, 4, acc); }, plan.prefetch_panels);
  };
  // Own units. On AMX tiles, but a block with an inf or NaN weight, and a
  // row with an inf or NaN input, on the FMA chains (pack_amx_gate_panel).
  auto project_rows = [&](int64_t row0, int64_t rows) {
#if FUSED_LSTM_CPU_AMX
    if constexpr (std::is_same_v<T, float>)
      if (plan.amx_ih_panels) {
        uint16_t* a_tiles = static_cast<uint16_t*>(plan.amx_rows) + member * plan.amx_rows_values;
        const bool rows_finite = split_amx_rows(x + row0 * I, I, rows, I, a_tiles);
        auto on_tiles = [&](int64_t b) { return plan.amx_finite_blocks[b] != 0; };
        amx_project(
            a_tiles, rows, I, units.begin, units.end, on_tiles, [&](int64_t b) { return chunk_slot(row0, b); },
            amx_panel, [&](int64_t b) { return bias_panels + b * 4 * W; }, partial);
        for (int64_t b = units.begin; b < units.end; ++b)
          if (!on_tiles(b)) project_on_fma({b, b + 1}, row0, rows);
        if (!rows_finite)
          for_rows_not_finite([&](int64_t r) { return x + r * I; }, row0, row0 + rows, I,
                              [&](int64_t r) { project_on_fma(units, r, 1); });
        return;
      }
#endif
    project_on_fma(units, row0, rows);
  };
  // The rows of steps [t, t + chunk_steps).
  auto project_chunk = [&](int64_t t, int64_t row0) {
    chunk_row0 = row0;
    chunk_end = t + plan.chunk_steps < s.seq_len ? t + plan.chunk_steps : s.seq_len;
    int64_t rows = 0;
    for (int64_t u = t; u < chunk_end; ++u) rows += rows_at(s, u);
    project_rows(row0, rows);
  };
  // Gate g's input part of the pre-activation of unit block b, row `row`.
  auto input_gate = [&](int64_t row, int64_t b, int g) {
    if (p.projects_input()) return V::load(chunk_slot(row, b) + g * W);
    return load_partial(gates_x + row * 4 * H + g * H + b * W, H - b * W);
  };

  // The step's gate math on the accumulated recurrent product of block b, row
  // n. (Measured at N=8/16, H=128, all within 2%: starting the accumulators
  // from the input gates instead of adding them here; for training,
  // prefetching the next step's saved rows, non-temporal stores of
  // saved_gates and saved_c, or a per-member contiguous layout for them.
  // Four rows' gate math in lockstep, for more independent work in flight,
  // was 10-20% slower: its temporaries spill.)
  int64_t row0 = 0, next_rows = 0;  // rows n >= next_rows end at this step
  T* h_next = nullptr;
  auto finish_units = [&](int64_t n, int64_t b, const V* acc) {
    const int64_t row = row0 + n, j0 = b * W, count = H - j0;
    T* c_slot = cell_state + (b * N + n) * W;
    V c, h;
    const LstmGates<V> gates =
        lstm_cell_forward(acc[0] + input_gate(row, b, 0), acc[1] + input_gate(row, b, 1),
                          acc[2] + input_gate(row, b, 2), acc[3] + input_gate(row, b, 3), V::load(c_slot), c, h);
    c.store(c_slot);
    if (saved_gates) {
      T* sg = saved_gates + row * 4 * H + j0;
      store_partial(sg, gates.i, count);
      store_partial(sg + H, gates.f, count);
      store_partial(sg + 2 * H, gates.g, count);
      store_partial(sg + 3 * H, gates.o, count);
      store_partial(saved_c + row * H + j0, c, count);
      if (P > 0) store_partial(saved_h + row * H + j0, h, count);
    }
    if (n >= next_rows) store_partial(c_n + n * H + j0, c, count);
    if (P > 0) {
      h.store(h_cell + n * cell_stride + j0);
    } else {
      store_partial(h_next + n * O + j0, h, count);
      store_partial(y + row * O + j0, h, count);
      if (n >= next_rows) store_partial(h_n + n * O + j0, h, count);
    }
  };

  // Step t at N = 1, folding: unit blocks in pairs (as product_over_blocks
  // groups them at one row). Each block's gates are projected in kFoldParts
  // parts of kFoldVectors; part k of block u of the member's (u = 0, 1, ...)
  // projects rows [t + 1, t + 1 + kFoldRows) at the steps
  // t = u * kFoldParts + k mod kFoldRows, so each row's projection is in
  // the ring before its step, and a pair never has two blocks folding at once.
  constexpr int kFoldParts = 4 / kFoldVectors;
  static_assert(kFoldParts * kFoldVectors == 4 && kFoldRows >= 2 * kFoldParts, "fold schedule");
  auto fold_step = [&](int64_t t, const T* h_prev) {
    const int64_t ahead = std::min<int64_t>(kFoldRows, s.seq_len - 1 - t);
    for (int64_t b = units.begin; b < units.end; b += 2) {
      const int pair = b + 1 < units.end ? 2 : 1;
      int64_t folding = -1;
      int part = 0;
      for (int64_t q = b; q < b + pair; ++q)
        for (int k = 0; k < kFoldParts; ++k)
          if (((q - units.begin) * kFoldParts + k) % kFoldRows == t % kFoldRows) folding = q, part = k;
      auto finish = [&](int64_t n, int i, const V* acc) { finish_units(n, b + i, acc); };
      auto projected = [&](int64_t r, const V* acc) {
        store_projection(t + 1 + r, folding, part * kFoldVectors, kFoldVectors, acc);
      };
      const T* panels[2] = {hh_panel(b), hh_panel(b + pair - 1)};
      if (ahead > 0 && folding >= 0) {
        const T* x_rows = x + (t + 1) * I;
        const T* x_panel = ih_panel(folding) + part * kFoldVectors * W;
        if (pair == 2)
          fold_rows<T, 2, kFoldRows, kFoldVectors>(ahead, h_prev, O, panels, x_rows, I, I, x_panel, finish,
                                                   projected);
        else
          fold_rows<T, 1, kFoldRows, kFoldVectors>(ahead, h_prev, O, panels, x_rows, I, I, x_panel, finish,
                                                   projected);
      } else if (pair == 2) {
        panel_product<T, 2, 4>(h_prev, O, 1, O, panels, partial, finish);
      } else {
        panel_product<T, 1, 4>(h_prev, O, 1, O, panels, partial, finish);
      }
    }
  };

  if (folds) project_rows(0, std::min<int64_t>(kFoldRows, s.seq_len));
  for (int64_t t = 0; t < s.seq_len; ++t) {
    const int64_t rows = rows_at(s, t);
    next_rows = t + 1 < s.seq_len ? rows_at(s, t + 1) : 0;
    const T* h_prev = static_cast<const T*>(plan.h_buffers[t & 1]);
    h_next = static_cast<T*>(plan.h_buffers[(t + 1) & 1]);
    prefetch_shared(h_prev, rows * O);
    if (folds) {
      fold_step(t, h_prev);
    } else if (p.gate_math_only()) {  // gates_x is the whole pre-activation: add zeros
      const V zeros[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
      for (int64_t b = units.begin; b < units.end; ++b)
        for (int64_t n = 0; n < rows; ++n) finish_units(n, b, zeros);
    } else {
      if (p.projects_input() && t == chunk_end) project_chunk(t, row0);
      product_over_blocks<T, 4>(units, h_prev, O, rows, O, partial, hh_panel, finish_units, plan.prefetch_panels);
    }
    plan.team->barrier();

    if (P > 0) {
      prefetch_shared(h_cell, rows * cell_stride);
      product_over_blocks<T, 1>(outs, h_cell, cell_stride, rows, H, partial, hr_panel,
                                [&](int64_t n, int64_t q, const V* acc) {
        const int64_t row = row0 + n, q0 = q * W, count = P - q0;
        store_partial(h_next + n * O + q0, acc[0], count);
        store_partial(y + row * O + q0, acc[0], count);
        if (n >= next_rows) store_partial(h_n + n * O + q0, acc[0], count);
      }, plan.prefetch_panels);
      plan.team->barrier();
    }
    row0 += rows;
  }
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
