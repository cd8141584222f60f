// The forward's input projection (gates_chunk = x @ W_ih^T + b for a member's
// unit blocks) on AMX tiles (amx_tiles.h): the avx512_amx kernels' float32
// sequences of kAmxMinSteps or more (lstm_recurrence.cpp).
// bench/amx_projection_loop.cpp, one thread of the Sapphire Rapids VM,
// against the FMA chains: 256 rows K=128 (N=8 H=128's chunk) 2.0x, 256 rows
// K=512 1.9x, 64 rows K=512 (N=64 H=512's) 1.6x; the largest error against
// float64 the same (6.1e-7 and 6.0e-7 at K=128).
//
// Layouts (uint16 bf16 values), K padded with zeros to whole k tiles:
//   W_ih, per unit block: [4 gates][B tiles of the gate's 16 units];
//   x rows, per member: split_amx_rows of a chunk's rows.
#pragma once
#include "amx_tiles.h"

#if FUSED_LSTM_CPU_AMX
namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

// From a unit block's float panel ([K][4 gates][16], forward.h
// pack_gate_panel) to its B tiles. Returns whether every weight is finite
// (a block with an inf or NaN is projected on the FMA chains).
FUSED_LSTM_AMX_TARGET inline bool pack_amx_gate_panel(const float* panel, int64_t K, uint16_t* out) {
  bool finite = true;
  for (int g = 0; g < 4; ++g)
    finite &= pack_amx_columns(panel + g * 16, K, 4 * 16, out + g * amx_column_panel_values(K));
  return finite;
}

// gates_chunk rows [0, rows) for the unit blocks b in [begin, end) with
// on_tiles(b): out_of(b) is block b's [rows][4][16]; b_panel_of(b) its
// packed W_ih; bias_of(b) its [4][16] bias, where every C row starts.
// a_tiles: split_amx_rows of the rows. Columns outer: a gate pair's B tiles
// stay in L1/L2 while every row tile passes. scratch: 256 floats.
template <class OnTiles, class OutOf, class PanelOf, class BiasOf>
FUSED_LSTM_AMX_TARGET void amx_project(const uint16_t* a_tiles, int64_t rows, int64_t K, int64_t begin, int64_t end,
                                       OnTiles on_tiles, OutOf out_of, PanelOf b_panel_of, BiasOf bias_of,
                                       float* scratch) {
  const int64_t depth_tiles = amx_depth_tiles(K), row_tiles = (rows + kAmxTileRows - 1) / kAmxTileRows;
  const int64_t a_step = depth_tiles * kAmxParts * kAmxTileValues;  // one row tile of A, one gate of B
  constexpr int64_t kRowFloats = 4 * 16;                            // a row of a block's gates_chunk
  AmxTiles tiles;
  for (int64_t b = begin; b < end; ++b)
    for (int g = 0; g < 4 && on_tiles(b); g += 2)
      for (int64_t rt = 0; rt < row_tiles; rt += 2) {
        const int pair = rt + 1 < row_tiles ? 2 : 1;
        float* out = out_of(b) + rt * kAmxTileRows * kRowFloats + g * 16;
        const int64_t left = rows - rt * kAmxTileRows;
        const CBlock c{{out, out + kAmxTileRows * kRowFloats},
                       {left, left - kAmxTileRows},
                       16,
                       {16, 16},
                       kRowFloats,
                       {bias_of(b) + g * 16, bias_of(b) + (g + 1) * 16},
                       scratch};
        amx_product<CStart::kRow>(pair, 2, a_tiles + rt * a_step, a_step, b_panel_of(b) + g * a_step, a_step,
                                  depth_tiles, c);
      }
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
#endif
