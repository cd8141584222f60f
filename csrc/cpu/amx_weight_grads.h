// The backward's weight gradients (weight_grads.h accumulate: dW[r][c] +=
// sum_k g_k[r] * b_k[c] over a block of rows k, for a share's gate rows r and
// the columns c of x or of h_{t-1}) on AMX tiles, float32 through bf16 as
// amx_projection.h does the forward's projection: each operand split exactly
// into three bf16 parts, the six products with i + j <= 2 summed in the
// tiles' fp32 accumulators, which start from dW and go back to it.
//
// Tiles: C = 16 gate rows (one gate of a unit block) x 16 columns of dW; A =
// those gate rows x 32 rows k (grad_gates transposed); B = 16 pairs of rows k
// x 16 columns (x or h, pairwise interleaved). Per block of rows, the share's
// A tiles and each target's B tiles are built once in scratch, then every
// (2 gate groups) x (2 column tiles) of C runs over them.
//
// Determinism: each dW element's chain is fixed by the rows of the block
// (the batch half's rows of a chunk, in order, in blocks of kGradBlockRows:
// the same whichever share runs them) and its K padding, so the bits depend
// on no thread count. A gate group or a column tile whose values in the block
// hold an inf or NaN (which the parts would turn into a NaN where the float
// product is an inf) runs on FMA chains instead: one per element, in order
// of k, from dW, as weight_grads.h's tiles do.
#pragma once
#include "amx_projection.h"
#include "simd.h"

#if FUSED_LSTM_CPU_AMX
namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

class AmxWeightGradients {
 public:
  static constexpr int64_t kDepthTiles = kGradBlockRows / kAmxTileDepth;  // k tiles per block
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
  // and the gate rows r of `groups`; rows <= kGradBlockRows. scratch:
  // amx_grad_scratch_floats (recurrence_plan.h), 64-byte aligned.
  FUSED_LSTM_AMX_TARGET static void accumulate(const float* const* g_rows, int64_t rows, Groups groups,
                                               const Target* targets, int target_count, float* scratch) {
    const int64_t group_count = groups.count();
    int64_t col_tiles_total = 0;
    for (int t = 0; t < target_count; ++t) col_tiles_total += (targets[t].cols + 15) / 16;
    uint16_t* a_tiles = reinterpret_cast<uint16_t*>(scratch);
    uint16_t* b_tiles = a_tiles + group_count * kGroupValues;
    float* edge = reinterpret_cast<float*>(b_tiles + col_tiles_total * kGroupValues);  // a C tile
    uint8_t* finite = reinterpret_cast<uint8_t*>(edge + 256);  // groups, then column tiles
    for (int64_t q = 0; q < group_count; ++q)
      finite[q] = pack_a(g_rows, rows, groups[q], a_tiles + q * kGroupValues);
    int64_t col_tile = 0;
    for (int t = 0; t < target_count; ++t)
      for (int64_t c0 = 0; c0 < targets[t].cols; c0 += 16, ++col_tile)
        finite[group_count + col_tile] =
            pack_b(targets[t].b_rows, rows, c0, std::min<int64_t>(16, targets[t].cols - c0),
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
                      edge};
          if (all_finite && gq == 2 && gc == 2) {
            run_block<2, 2>(block);
          } else if (all_finite && gq == 2) {
            run_block<2, 1>(block);
          } else if (all_finite && gc == 2) {
            run_block<1, 2>(block);
          } else {
            for (int i = 0; i < gq; ++i)
              for (int j = 0; j < gc; ++j) {
                Block one = block;
                one.a += i * kGroupValues, one.b += j * kGroupValues, one.groups[0] = groups[q + i];
                one.c0 += 16 * j;
                if (finite[q + i] && finite[group_count + col_tile + c + j])
                  run_block<1, 1>(one);
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
  };

  // A tiles of one gate group: [k tile][part][16 gate rows][32 k], from
  // pairs of rows k (dwords of two bf16) transposed 16 x 16. Zeros past the
  // group's rows and past `rows`. Returns whether every value is finite.
  FUSED_LSTM_AMX_TARGET static bool pack_a(const float* const* g_rows, int64_t rows, Group group, uint16_t* out) {
    const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __mmask16 lanes = group.rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << group.rows) - 1);
    __mmask16 non_finite_lanes = 0;
    alignas(64) uint32_t pairs[kAmxParts][16][16];  // [part][k pair][gate row]
    for (int64_t kt = 0; kt < kDepthTiles; ++kt) {
      for (int64_t pair = 0; pair < 16; ++pair) {
        const int64_t k = kt * kAmxTileDepth + 2 * pair;
        const __m512 even = k < rows ? _mm512_maskz_loadu_ps(lanes, g_rows[k] + group.r0) : _mm512_setzero_ps();
        const __m512 odd =
            k + 1 < rows ? _mm512_maskz_loadu_ps(lanes, g_rows[k + 1] + group.r0) : _mm512_setzero_ps();
        non_finite_lanes |= non_finite(even) | non_finite(odd);
        __m512i even_parts[kAmxParts], odd_parts[kAmxParts];
        split_parts(even, even_parts);
        split_parts(odd, odd_parts);
        for (int s = 0; s < kAmxParts; ++s)
          _mm512_store_si512(pairs[s][pair], _mm512_or_si512(_mm512_srli_epi32(even_parts[s], 16),
                                                             _mm512_and_si512(odd_parts[s], top)));
      }
      for (int s = 0; s < kAmxParts; ++s)  // [k pair][gate row] -> [gate row][k pair]: a tile row is 32 k
        transpose_tile(reinterpret_cast<const float*>(pairs[s][0]), 16,
                       reinterpret_cast<float*>(out + (kt * kAmxParts + s) * kAmxTileValues), 16);
    }
    return non_finite_lanes == 0;
  }

  // B tiles of columns [c0, c0 + count) of b_rows: [k tile][part][16 k
  // pairs][16 columns][2]. Zeros past count and past `rows`.
  FUSED_LSTM_AMX_TARGET static bool pack_b(const float* const* b_rows, int64_t rows, int64_t c0, int64_t count,
                                           uint16_t* out) {
    const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __mmask16 lanes = count >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
    __mmask16 non_finite_lanes = 0;
    for (int64_t kt = 0; kt < kDepthTiles; ++kt)
      for (int64_t pair = 0; pair < 16; ++pair) {
        const int64_t k = kt * kAmxTileDepth + 2 * pair;
        const __m512 even = k < rows ? _mm512_maskz_loadu_ps(lanes, b_rows[k] + c0) : _mm512_setzero_ps();
        const __m512 odd = k + 1 < rows ? _mm512_maskz_loadu_ps(lanes, b_rows[k + 1] + c0) : _mm512_setzero_ps();
        non_finite_lanes |= non_finite(even) | non_finite(odd);
        __m512i even_parts[kAmxParts], odd_parts[kAmxParts];
        split_parts(even, even_parts);
        split_parts(odd, odd_parts);
        for (int s = 0; s < kAmxParts; ++s)
          _mm512_store_si512(out + (kt * kAmxParts + s) * kAmxTileValues + pair * kAmxTileDepth,
                             _mm512_or_si512(_mm512_srli_epi32(even_parts[s], 16),
                                             _mm512_and_si512(odd_parts[s], top)));
      }
    return non_finite_lanes == 0;
  }

  // _tile_loadd / _tile_stored of C tile Tile (the intrinsics paste the
  // tile's number into the instruction: a literal, not a template argument).
  template <int Tile> FUSED_LSTM_AMX_TARGET static void tile_load(const void* p, int64_t stride) {
    static_assert(Tile >= 0 && Tile < 4, "C tiles are 0-3");
    if constexpr (Tile == 0) _tile_loadd(0, p, stride);
    if constexpr (Tile == 1) _tile_loadd(1, p, stride);
    if constexpr (Tile == 2) _tile_loadd(2, p, stride);
    if constexpr (Tile == 3) _tile_loadd(3, p, stride);
  }
  template <int Tile> FUSED_LSTM_AMX_TARGET static void tile_store(void* p, int64_t stride) {
    static_assert(Tile >= 0 && Tile < 4, "C tiles are 0-3");
    if constexpr (Tile == 0) _tile_stored(0, p, stride);
    if constexpr (Tile == 1) _tile_stored(1, p, stride);
    if constexpr (Tile == 2) _tile_stored(2, p, stride);
    if constexpr (Tile == 3) _tile_stored(3, p, stride);
  }

  // C tile `Tile` from / to dW rows [r0, r0 + rows) x columns [c0, c0 + 16):
  // in place when whole, else through `edge` (the missing rows and columns
  // zero in, dropped out).
  template <int Tile> FUSED_LSTM_AMX_TARGET static void load_c(const Block& blk, Group group, int64_t c0) {
    const int64_t cols = std::min<int64_t>(16, blk.cols - c0);
    float* at = blk.dw + group.r0 * blk.cols + c0;
    if (group.rows == 16 && cols == 16) {
      tile_load<Tile>(at, blk.cols * sizeof(float));
      return;
    }
    for (int64_t r = 0; r < 16; ++r)
      for (int64_t c = 0; c < 16; ++c) blk.edge[r * 16 + c] = r < group.rows && c < cols ? at[r * blk.cols + c] : 0.0f;
    tile_load<Tile>(blk.edge, 64);
  }
  template <int Tile> FUSED_LSTM_AMX_TARGET static void store_c(const Block& blk, Group group, int64_t c0) {
    const int64_t cols = std::min<int64_t>(16, blk.cols - c0);
    float* at = blk.dw + group.r0 * blk.cols + c0;
    if (group.rows == 16 && cols == 16) {
      tile_store<Tile>(at, blk.cols * sizeof(float));
      return;
    }
    tile_store<Tile>(blk.edge, 64);
    for (int64_t r = 0; r < group.rows; ++r)
      for (int64_t c = 0; c < cols; ++c) at[r * blk.cols + c] = blk.edge[r * 16 + c];
  }

  // Groups x Columns C tiles (tiles 0, 1 the first group's; 2, 3 the second's).
  template <int Groups, int Columns> FUSED_LSTM_AMX_TARGET static void run_block(const Block& blk) {
    load_c<0>(blk, blk.groups[0], blk.c0);
    if constexpr (Columns == 2) load_c<1>(blk, blk.groups[0], blk.c0 + 16);
    if constexpr (Groups == 2) {
      load_c<2>(blk, blk.groups[1], blk.c0);
      if constexpr (Columns == 2) load_c<3>(blk, blk.groups[1], blk.c0 + 16);
    }
    for (int64_t kt = 0; kt < kDepthTiles; ++kt) {
      const int64_t t = kt * kAmxParts * kAmxTileValues;
      for (int i = 0; i < kAmxParts; ++i) {  // products (i, j), i + j <= 2, A part i loaded once
        _tile_loadd(4, blk.a + t + i * kAmxTileValues, 64);
        if constexpr (Groups == 2) _tile_loadd(5, blk.a + kGroupValues + t + i * kAmxTileValues, 64);
        for (int j = 0; i + j < kAmxParts; ++j) {
          _tile_loadd(6, blk.b + t + j * kAmxTileValues, 64);
          if constexpr (Columns == 2) _tile_loadd(7, blk.b + kGroupValues + t + j * kAmxTileValues, 64);
          _tile_dpbf16ps(0, 4, 6);
          if constexpr (Columns == 2) _tile_dpbf16ps(1, 4, 7);
          if constexpr (Groups == 2) {
            _tile_dpbf16ps(2, 5, 6);
            if constexpr (Columns == 2) _tile_dpbf16ps(3, 5, 7);
          }
        }
      }
    }
    store_c<0>(blk, blk.groups[0], blk.c0);
    if constexpr (Columns == 2) store_c<1>(blk, blk.groups[0], blk.c0 + 16);
    if constexpr (Groups == 2) {
      store_c<2>(blk, blk.groups[1], blk.c0);
      if constexpr (Columns == 2) store_c<3>(blk, blk.groups[1], blk.c0 + 16);
    }
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

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
#endif
