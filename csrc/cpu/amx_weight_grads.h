// The backward's products with grad_gates on AMX tiles (amx_tiles.h), for
// weight_grads.h on the avx512_amx kernels' float32 sequences of
// kAmxMinSteps or more with a batch of kAmxMinBackwardBatch or H of
// kAmxMinBackwardHidden (lstm_recurrence.cpp):
// - AmxWeightGradients: dW[r][c] += sum_k g_k[r] * b_k[c] over a block of
//   rows k, for a share's gate rows r and the columns c of x or of h_{t-1}.
//   C = 16 gate rows (one gate of a unit block) x 16 columns of dW, from dW
//   and back to it; A = those gate rows x 32 rows k (grad_gates transposed);
//   B = 16 pairs of rows k x 16 columns (x or h, pairwise interleaved). Per
//   block of rows the share's A tiles and each target's B tiles are built
//   once in scratch, then every (2 gate groups) x (2 column tiles) of C runs
//   over them. Each dW element's chain is fixed by the rows of the block (the
//   batch half's rows of a chunk, in order, in blocks of kAmxGradBlockRows:
//   the same whichever share runs them), so the bits depend on no thread
//   count. A gate group or a column tile whose values in the block hold an
//   inf or NaN runs on FMA chains instead: one per element, in order of k,
//   from dW, as weight_grads.h's tiles do.
// - amx_input_grads: dx = grad_gates @ W_ih for a share's rows and input
//   blocks.
#pragma once
#include <algorithm>

#include "amx_tiles.h"
#include "simd.h"

#if FUSED_LSTM_CPU_AMX
namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

class AmxWeightGradients {
 public:
  static constexpr int64_t kDepthTiles = kAmxGradBlockRows / kAmxTileDepth;  // k tiles a block has at most
  static constexpr int64_t kGroupValues = kDepthTiles * kAmxParts * kAmxTileValues;  // one group's or column tile's

  struct Group {  // a gate of a unit block: gate rows [r0, r0 + rows) of dW
    int64_t r0, rows;
  };
  // The share's groups: gate g of unit block `first + q / 4`.
  struct Groups {
    int64_t first, blocks, H;
    int64_t count() const { return 4 * blocks; }
    Group operator[](int64_t q) const {
      const int64_t b = first + q / 4;
      return {(q % 4) * H + b * 16, std::min<int64_t>(16, H - b * 16)};
    }
  };
  struct Target {  // columns [0, cols) of dW: rows k of x or h_{t-1}
    const float* const* b_rows;
    int64_t cols;
    float* dw;
  };

  // dW[r][c] += sum_{k < rows} g_rows[k][r] * b_rows[k][c] for each target
  // and the gate rows r of `groups`; rows <= kAmxGradBlockRows. scratch:
  // amx_grad_scratch_floats (recurrence_plan.h), 64-byte aligned.
  FUSED_LSTM_AMX_TARGET static void accumulate(const float* const* g_rows, int64_t rows, Groups groups,
                                               const Target* targets, int target_count, float* scratch) {
    const int64_t group_count = groups.count();
    const int64_t depth_tiles = amx_depth_tiles(rows);  // the block's k tiles (the last one padded with zeros)
    int64_t col_tiles_total = 0;
    for (int t = 0; t < target_count; ++t) col_tiles_total += (targets[t].cols + 15) / 16;
    uint16_t* a_tiles = reinterpret_cast<uint16_t*>(scratch);
    uint16_t* b_tiles = a_tiles + group_count * kGroupValues;
    float* edge = reinterpret_cast<float*>(b_tiles + col_tiles_total * kGroupValues);  // a C tile
    uint8_t* finite = reinterpret_cast<uint8_t*>(edge + 256);  // groups, then column tiles
    for (int64_t q = 0; q < group_count; ++q)
      finite[q] = pack_a(g_rows, rows, depth_tiles, groups[q], a_tiles + q * kGroupValues);
    int64_t col_tile = 0;
    for (int t = 0; t < target_count; ++t)
      for (int64_t c0 = 0; c0 < targets[t].cols; c0 += 16, ++col_tile)
        finite[group_count + col_tile] =
            pack_amx_columns([&](int64_t k) { return targets[t].b_rows[k] + c0; }, rows,
                             std::min<int64_t>(16, targets[t].cols - c0), depth_tiles,
                             b_tiles + col_tile * kGroupValues);

    AmxTiles tiles;
    col_tile = 0;
    for (int t = 0; t < target_count; ++t) {
      const Target& target = targets[t];
      const int64_t tiles_here = (target.cols + 15) / 16;
      for (int64_t q = 0; q < group_count; q += 2)
        for (int64_t c = 0; c < tiles_here; c += 2) {
          const int gq = q + 1 < group_count ? 2 : 1, gc = c + 1 < tiles_here ? 2 : 1;
          bool all_finite = true;
          for (int i = 0; i < gq; ++i)
            for (int j = 0; j < gc; ++j) all_finite &= finite[q + i] && finite[group_count + col_tile + c + j];
          Block block{a_tiles + q * kGroupValues,
                      b_tiles + (col_tile + c) * kGroupValues,
                      {groups[q], gq == 2 ? groups[q + 1] : groups[q]},
                      c * 16,
                      target.cols,
                      target.dw,
                      edge,
                      depth_tiles};
          if (all_finite) {
            run_block(gq, gc, block);
          } else {
            for (int i = 0; i < gq; ++i)
              for (int j = 0; j < gc; ++j) {
                Block one = block;
                one.a += i * kGroupValues, one.b += j * kGroupValues, one.groups[0] = groups[q + i];
                one.c0 += 16 * j;
                if (finite[q + i] && finite[group_count + col_tile + c + j])
                  run_block(1, 1, one);
                else
                  fma_block(g_rows, rows, groups[q + i], target, one.c0);
              }
          }
        }
      col_tile += tiles_here;
    }
  }

 private:
  struct Block {
    const uint16_t* a;  // the first group's A tiles
    const uint16_t* b;  // the first column tile's B tiles
    Group groups[2];
    int64_t c0, cols;
    float* dw;
    float* edge;
    int64_t depth_tiles;
  };

  // A tiles of one gate group: [k tile][part][16 gate rows][32 k], from
  // pairs of rows k (dwords of two bf16) transposed 16 x 16. Zeros past the
  // group's rows and past `rows`. Returns whether every value is finite.
  FUSED_LSTM_AMX_TARGET static bool pack_a(const float* const* g_rows, int64_t rows, int64_t depth_tiles, Group group,
                                           uint16_t* out) {
    const __mmask16 lanes = group.rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << group.rows) - 1);
    __mmask16 non_finite_lanes = 0;
    alignas(64) uint32_t pairs[kAmxParts][16][16];  // [part][k pair][gate row]
    for (int64_t kt = 0; kt < depth_tiles; ++kt) {
      for (int64_t pair = 0; pair < 16; ++pair) {
        const int64_t k = kt * kAmxTileDepth + 2 * pair;
        __m512i split[kAmxParts];
        split_pairs(k < rows ? _mm512_maskz_loadu_ps(lanes, g_rows[k] + group.r0) : _mm512_setzero_ps(),
                    k + 1 < rows ? _mm512_maskz_loadu_ps(lanes, g_rows[k + 1] + group.r0) : _mm512_setzero_ps(),
                    split, non_finite_lanes);
        for (int s = 0; s < kAmxParts; ++s) _mm512_store_si512(pairs[s][pair], split[s]);
      }
      for (int s = 0; s < kAmxParts; ++s)  // [k pair][gate row] -> [gate row][k pair]: a tile row is 32 k
        transpose_tile(reinterpret_cast<const float*>(pairs[s][0]), 16,
                       reinterpret_cast<float*>(out + (kt * kAmxParts + s) * kAmxTileValues), 16);
    }
    return non_finite_lanes == 0;
  }

  // Rows x Cols C tiles of dW (groups of blk, columns from blk.c0), from dW
  // and back.
  FUSED_LSTM_AMX_TARGET static void run_block(int groups, int columns, const Block& blk) {
    auto valid_cols = [&](int j) { return std::max<int64_t>(0, std::min<int64_t>(16, blk.cols - blk.c0 - 16 * j)); };
    const CBlock c{{blk.dw + blk.groups[0].r0 * blk.cols + blk.c0, blk.dw + blk.groups[1].r0 * blk.cols + blk.c0},
                   {blk.groups[0].rows, blk.groups[1].rows},
                   16,
                   {valid_cols(0), valid_cols(1)},
                   blk.cols,
                   {nullptr, nullptr},
                   blk.edge};
    amx_product<CStart::kOut>(groups, columns, blk.a, kGroupValues, blk.b, kGroupValues, blk.depth_tiles, c);
  }

  // One C tile's elements on FMA chains (a value in the block is not finite).
  static void fma_block(const float* const* g_rows, int64_t rows, Group group, const Target& target, int64_t c0) {
    using V = Vec<float>;
    const int64_t cols = std::min<int64_t>(16, target.cols - c0);
    for (int64_t r = 0; r < group.rows; ++r) {
      float* out = target.dw + (group.r0 + r) * target.cols + c0;
      V acc = load_partial(out, cols);
      for (int64_t k = 0; k < rows; ++k)
        acc = fma(broadcast(g_rows[k][group.r0 + r]), load_partial(target.b_rows[k] + c0, cols), acc);
      store_partial(out, acc, cols);
    }
  }
};

// dx on AMX tiles: grad_x row r (from out_row(r)) = grad_gates row r (K =
// 4H values from g_row(r)) @ W_ih, for r < rows and the input blocks q in
// [begin, end) with on_tiles(q): panel_of(q) is its B tiles
// (pack_amx_columns of W_ih's 16 columns; consecutive blocks' panels
// contiguous). The rows may lie anywhere (a batch slice's rows of a chunk):
// kAmxInputGradRows at a time are split into a_tiles, their C tiles stored
// into `staging` ([kAmxInputGradRows][32] floats, then copied out). C starts
// from zero: every element is one fixed sequence of tile products over K,
// whatever the rows or the share. Rows of g holding an inf or NaN then go to
// fma_row(r) (the FMA chains, every block).
template <class GRow, class OutRow, class OnTiles, class PanelOf, class FmaRow>
FUSED_LSTM_AMX_TARGET void amx_input_grads(GRow g_row, OutRow out_row, int64_t rows, int64_t K, int64_t I,
                                           int64_t begin, int64_t end, OnTiles on_tiles, PanelOf panel_of,
                                           uint16_t* a_tiles, float* staging, FmaRow fma_row) {
  const int64_t depth_tiles = amx_depth_tiles(K), step = depth_tiles * kAmxParts * kAmxTileValues;
  constexpr int64_t kStagingStride = 32;  // floats: two column tiles
  auto valid_cols = [&](int64_t q) { return std::max<int64_t>(0, std::min<int64_t>(16, I - q * 16)); };
  for (int64_t r0 = 0; r0 < rows; r0 += kAmxInputGradRows) {
    const int64_t n = std::min(kAmxInputGradRows, rows - r0), row_tiles = (n + kAmxTileRows - 1) / kAmxTileRows;
    const bool finite = split_amx_rows([&](int64_t r) { return g_row(r0 + r); }, n, K, a_tiles);
    {
      AmxTiles tiles;
      for (int64_t q = begin; q < end;) {
        if (!on_tiles(q)) {
          ++q;
          continue;
        }
        const int cols = q + 1 < end && on_tiles(q + 1) ? 2 : 1;
        const CBlock c{{staging, staging + kAmxTileRows * kStagingStride},
                       {kAmxTileRows, kAmxTileRows},
                       16,
                       {16, 16},
                       kStagingStride,
                       {nullptr, nullptr},
                       nullptr};
        amx_product<CStart::kZero>(row_tiles, cols, a_tiles, step, panel_of(q), step, depth_tiles, c);
        for (int64_t r = 0; r < n; ++r)
          for (int j = 0; j < cols; ++j)
            std::memcpy(out_row(r0 + r) + (q + j) * 16, staging + r * kStagingStride + j * 16,
                        valid_cols(q + j) * sizeof(float));
        q += cols;
      }
    }
    if (!finite) for_rows_not_finite(g_row, r0, r0 + n, K, fma_row);
  }
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
#endif
