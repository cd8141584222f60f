// The forward's input projection (gates_chunk = x @ W_ih^T + b for a member's
// unit blocks) on AMX tiles, float32 through bf16: the "avx512_amx" kernels
// (Sapphire Rapids and later; lstm_recurrence.cpp checks the CPU and asks the
// kernel for the tile state).
//
// Numerics: every float is split exactly into three bf16 parts, x = x0 + x1 +
// x2 (x0 its top 8 significant bits by truncation, x1 the next 8 of the
// remainder, x2 the rest, which fits bf16 too), and x.w is summed as the six
// products x_i w_j with i + j <= 2, in the tiles' fp32 accumulators, from the
// bias. The three dropped products are below 2^-23 of |x w|: float32's own
// rounding. bench/amx_projection_loop.cpp, one thread of the Sapphire Rapids
// VM, against the FMA chains: 256 rows K=128 (N=8 H=128's chunk) 2.0x, 256
// rows K=512 1.9x, 64 rows K=512 (N=64 H=512's) 1.6x; the largest error
// against float64 the same (6.1e-7 and 6.0e-7 at K=128).
// Determinism: each output's sequence of tile operations is fixed by K alone,
// whatever rows share its tile, so the bits depend on no row grouping and no
// thread count.
//
// Layouts (uint16 bf16 values), K padded with zeros to Kp = a multiple of 32:
//   W_ih, per unit block: [4 gates][Kp/32][3 parts][16 k pairs][16 units][2]
//     (a tile of B in the pairwise-interleaved form TDPBF16PS reads);
//   x rows, per member: [row tiles][Kp/32][3 parts][16 rows][32 k] (a tile of
//     A), row tiles padded with zero rows to a whole tile.
#pragma once
#include <cstdint>
#include <cstring>

#include "recurrence_plan.h"

// The AVX-512 translation unit compiles the AMX code (target attributes; run
// only where lstm_recurrence.cpp found the tiles); the others leave it out.
#if defined(__AVX512F__) && defined(__x86_64__)
#define FUSED_LSTM_CPU_AMX 1
#else
#define FUSED_LSTM_CPU_AMX 0
#endif

#if FUSED_LSTM_CPU_AMX
#include <immintrin.h>

namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA {

#define FUSED_LSTM_AMX_TARGET __attribute__((target("avx512bw,amx-tile,amx-bf16")))

// The three parts of 16 floats, each as floats whose low 16 bits are zero
// (so its bf16 is its high half). Inf and NaN go into x0 whole, with zero
// parts after them (inf - inf would make a NaN of an inf input).
FUSED_LSTM_AMX_TARGET inline void split_parts(__m512 x, __m512i (&part)[kAmxParts]) {
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const __m512i exponent = _mm512_set1_epi32(0x7F800000);
  const __m512i bits = _mm512_castps_si512(x);
  const __mmask16 finite = _mm512_cmpneq_epi32_mask(_mm512_and_si512(bits, exponent), exponent);
  part[0] = _mm512_mask_and_epi32(bits, finite, bits, top);
  const __m512 r1 = _mm512_maskz_sub_ps(finite, x, _mm512_castsi512_ps(part[0]));
  part[1] = _mm512_and_si512(_mm512_castps_si512(r1), top);
  part[2] = _mm512_castps_si512(_mm512_sub_ps(r1, _mm512_castsi512_ps(part[1])));
}

// Lanes of x that are inf or NaN.
FUSED_LSTM_AMX_TARGET inline __mmask16 non_finite(__m512 x) {
  const __m512i exponent = _mm512_set1_epi32(0x7F800000);
  return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(x), exponent), exponent);
}

// From a unit block's float panel ([K][4 gates][16], forward.h
// pack_gate_panel) to its B tiles. Returns whether every weight is finite:
// an inf weight times a zero part of x makes a NaN where the float product
// is inf, so such a block is projected by the FMA chains instead.
FUSED_LSTM_AMX_TARGET inline bool pack_amx_gate_panel(const float* panel, int64_t K, uint16_t* out) {
  const int64_t depth_tiles = amx_depth_tiles(K);
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __mmask16 any_non_finite = 0;
  for (int g = 0; g < 4; ++g)
    for (int64_t kt = 0; kt < depth_tiles; ++kt)
      for (int64_t pair = 0; pair < kAmxTileRows; ++pair) {
        const int64_t k = kt * kAmxTileDepth + 2 * pair;
        const __m512 w_even = k < K ? _mm512_loadu_ps(panel + (k * 4 + g) * 16) : _mm512_setzero_ps();
        const __m512 w_odd = k + 1 < K ? _mm512_loadu_ps(panel + ((k + 1) * 4 + g) * 16) : _mm512_setzero_ps();
        any_non_finite |= non_finite(w_even) | non_finite(w_odd);
        __m512i even[kAmxParts], odd[kAmxParts];
        split_parts(w_even, even);
        split_parts(w_odd, odd);
        for (int s = 0; s < kAmxParts; ++s) {
          const __m512i pairs = _mm512_or_si512(_mm512_srli_epi32(even[s], 16), _mm512_and_si512(odd[s], top));
          _mm512_storeu_si512(out + ((g * depth_tiles + kt) * kAmxParts + s) * kAmxTileValues + pair * kAmxTileDepth,
                              pairs);
        }
      }
  return any_non_finite == 0;
}

// Rows [0, rows) of x ([rows][lda], K used) to A tiles; the last tile's
// missing rows are zeros. Returns whether every value is finite (see
// pack_amx_gate_panel for why that matters).
FUSED_LSTM_AMX_TARGET inline bool split_amx_rows(const float* x, int64_t lda, int64_t rows, int64_t K,
                                                 uint16_t* out) {
  const int64_t depth_tiles = amx_depth_tiles(K);
  const int64_t padded = (rows + kAmxTileRows - 1) / kAmxTileRows * kAmxTileRows;
  // High halves of 32 floats (two vectors) in order: the 32 bf16 of a tile row.
  alignas(64) static constexpr uint16_t kHighHalves[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                                           23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                                           45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  const __m512i high_halves = _mm512_load_si512(kHighHalves);
  __mmask16 any_non_finite = 0;
  for (int64_t r = 0; r < padded; ++r)
    for (int64_t kt = 0; kt < depth_tiles; ++kt) {
      __m512i low[kAmxParts], high[kAmxParts];
      const int64_t k = kt * kAmxTileDepth;
      auto load16 = [&](int64_t k0) {
        if (r >= rows || k0 >= K) return _mm512_setzero_ps();
        const __mmask16 lanes = K - k0 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k0)) - 1);
        return _mm512_maskz_loadu_ps(lanes, x + r * lda + k0);
      };
      const __m512 x_low = load16(k), x_high = load16(k + 16);
      any_non_finite |= non_finite(x_low) | non_finite(x_high);
      split_parts(x_low, low);
      split_parts(x_high, high);
      uint16_t* tile_row = out + (((r / kAmxTileRows) * depth_tiles + kt) * kAmxParts) * kAmxTileValues +
                           (r % kAmxTileRows) * kAmxTileDepth;
      for (int s = 0; s < kAmxParts; ++s)
        _mm512_storeu_si512(tile_row + s * kAmxTileValues, _mm512_permutex2var_epi16(low[s], high_halves, high[s]));
    }
  return any_non_finite == 0;
}

// The tile shapes every AMX product here uses: 8 tiles of 16 rows x 64 bytes
// (tiles 0-3 C, 4-5 A, 6-7 B). Configured while alive; released after, so a
// thread of the host's pool carries no tile state out of our run.
struct AmxTiles {
  FUSED_LSTM_AMX_TARGET AmxTiles() {
    struct alignas(64) Config {
      uint8_t palette = 1, start_row = 0, reserved[14] = {};
      uint16_t bytes_per_row[16] = {};
      uint8_t rows[16] = {};
    } config;
    static_assert(sizeof(Config) == 64, "the 64-byte LDTILECFG operand");
    for (int t = 0; t < 8; ++t) config.bytes_per_row[t] = 64, config.rows[t] = kAmxTileRows;
    // Our own operand, not _tile_loadconfig's: GCC 12 reads that one as a
    // different type and drops stores into ours as dead (zero rows: #UD, a
    // stray reserved byte: #GP).
    __asm__ volatile("ldtilecfg %0" : : "m"(config));
  }
  FUSED_LSTM_AMX_TARGET ~AmxTiles() { _tile_release(); }
  AmxTiles(const AmxTiles&) = delete;
  AmxTiles& operator=(const AmxTiles&) = delete;
};

// out[r][g][lane] = bias[g][lane] + sum_k x[r][k] W[g*16 + lane][k] for the
// rows of `row_tiles` A tiles (RowTiles = 1 or 2 at once) and gates
// [2*pair, 2*pair + 2): out is [rows][4 gates][16] floats (a unit block's
// gates_chunk), rows < valid_rows stored. `scratch`: 512 floats.
template <int RowTiles>
FUSED_LSTM_AMX_TARGET inline void amx_gate_pair(const uint16_t* a_tiles, const uint16_t* b_panel,
                                                int64_t depth_tiles, int pair, const float* bias, float* out,
                                                int64_t valid_rows, float* scratch) {
  constexpr int64_t kPartsValues = kAmxParts * kAmxTileValues, kOutStride = 4 * 16 * sizeof(float);
  const int g = 2 * pair;
  const uint16_t* b0 = b_panel + g * depth_tiles * kPartsValues;
  const uint16_t* b1 = b0 + depth_tiles * kPartsValues;
  const uint16_t* a0 = a_tiles;
  const uint16_t* a1 = a_tiles + depth_tiles * kPartsValues;
  // Every row of C starts from the gate's bias (a row stride of 0).
  _tile_loadd(0, bias + g * 16, 0);
  _tile_loadd(1, bias + (g + 1) * 16, 0);
  if constexpr (RowTiles == 2) {
    _tile_loadd(2, bias + g * 16, 0);
    _tile_loadd(3, bias + (g + 1) * 16, 0);
  }
  for (int64_t kt = 0; kt < depth_tiles; ++kt) {
    const int64_t t = kt * kPartsValues;
    // Products (i, j) in the order (0,0) (0,1) (0,2) (1,0) (1,1) (2,0): A part
    // i loaded once for its B parts. Any fixed order gives fixed bits.
    for (int i = 0; i < kAmxParts; ++i) {
      _tile_loadd(4, a0 + t + i * kAmxTileValues, 64);
      if constexpr (RowTiles == 2) _tile_loadd(5, a1 + t + i * kAmxTileValues, 64);
      for (int j = 0; i + j < kAmxParts; ++j) {
        _tile_loadd(6, b0 + t + j * kAmxTileValues, 64);
        _tile_loadd(7, b1 + t + j * kAmxTileValues, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if constexpr (RowTiles == 2) {
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
    }
  }
  // Whole tiles straight into out; a partial one through scratch.
  auto store = [&](int64_t tile_row0, auto store_pair) {
    const int64_t rows = valid_rows - tile_row0;
    if (rows >= kAmxTileRows) return store_pair(out + (tile_row0 * 4 + g) * 16, kOutStride);
    store_pair(scratch, 2 * 16 * int64_t(sizeof(float)));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(out + ((tile_row0 + r) * 4 + g) * 16, scratch + r * 32, 32 * sizeof(float));
  };
  store(0, [&](float* dst, int64_t stride) {
    _tile_stored(0, dst, stride);
    _tile_stored(1, dst + 16, stride);
  });
  if constexpr (RowTiles == 2)
    store(kAmxTileRows, [&](float* dst, int64_t stride) {
      _tile_stored(2, dst, stride);
      _tile_stored(3, dst + 16, stride);
    });
}

// gates_chunk rows [0, rows) for the unit blocks b in [begin, end) with
// on_tiles(b): out_of(b) is block b's [rows][4][16]; b_panel_of(b) its
// packed W_ih; bias_of(b) its [4][16] bias. a_tiles: split_amx_rows of the
// rows. Columns outer: a gate pair's B tiles stay in L1/L2 while every row
// tile passes.
template <class OnTiles, class OutOf, class PanelOf, class BiasOf>
FUSED_LSTM_AMX_TARGET void amx_project(const uint16_t* a_tiles, int64_t rows, int64_t K, int64_t begin, int64_t end,
                                       OnTiles on_tiles, OutOf out_of, PanelOf b_panel_of, BiasOf bias_of,
                                       float* scratch) {
  const int64_t depth_tiles = amx_depth_tiles(K), row_tiles = (rows + kAmxTileRows - 1) / kAmxTileRows;
  const int64_t tile_values = depth_tiles * kAmxParts * kAmxTileValues;  // one row tile of A
  AmxTiles tiles;
  for (int64_t b = begin; b < end; ++b)
    for (int pair = 0; pair < 2 && on_tiles(b); ++pair) {
      int64_t rt = 0;
      for (; rt + 2 <= row_tiles; rt += 2)
        amx_gate_pair<2>(a_tiles + rt * tile_values, b_panel_of(b), depth_tiles, pair, bias_of(b),
                         out_of(b) + rt * kAmxTileRows * 64, rows - rt * kAmxTileRows, scratch);
      if (rt < row_tiles)
        amx_gate_pair<1>(a_tiles + rt * tile_values, b_panel_of(b), depth_tiles, pair, bias_of(b),
                         out_of(b) + rt * kAmxTileRows * 64, rows - rt * kAmxTileRows, scratch);
    }
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
#endif
