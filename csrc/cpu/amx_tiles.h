// float32 products on AMX tiles through bf16, shared by the avx512_amx
// kernels' forward projection (amx_projection.h) and backward (dx and dW,
// amx_weight_grads.h); lstm_recurrence.cpp checks the CPU and asks the kernel
// for the tile state.
//
// Numerics: every float is split exactly into three bf16 parts, x = x0 + x1 +
// x2 (x0 its top 8 significant bits by truncation, x1 the next 8 of the
// remainder, x2 the rest, which fits bf16 too), and a.b is summed as the six
// products a_i b_j with i + j <= 2 in the tiles' fp32 accumulators. The three
// dropped products are below 2^-23 of |a b|: float32's own rounding. An inf
// or NaN would meet a zero part of the other operand (inf * 0 = NaN where the
// float product is an inf), so the callers take rows and weights holding one
// to the FMA chains instead.
// Determinism: each output's sequence of tile operations is fixed by the
// depth alone, whatever rows or columns share its tile.
//
// Tiles (all 16 rows x 64 bytes): C = 16 x 16 fp32; A = 16 rows x 32 k bf16,
// [16 rows][32 k]; B = 32 k x 16 columns, pairs of k interleaved,
// [16 k pairs][16 columns][2]. A tile of each part is kAmxTileValues apart:
// [k tile][3 parts][tile].
#pragma once
#include <algorithm>
#include <cmath>
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

// Two rows k, k + 1 of 16 values, split: per part, 16 dwords of (k, k + 1)
// bf16 pairs (a row of a B tile). Adds the lanes that are not finite.
FUSED_LSTM_AMX_TARGET inline void split_pairs(__m512 even, __m512 odd, __m512i (&pairs)[kAmxParts],
                                              __mmask16& non_finite_lanes) {
  const __m512i top = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  non_finite_lanes |= non_finite(even) | non_finite(odd);
  __m512i even_parts[kAmxParts], odd_parts[kAmxParts];
  split_parts(even, even_parts);
  split_parts(odd, odd_parts);
  for (int s = 0; s < kAmxParts; ++s)
    pairs[s] = _mm512_or_si512(_mm512_srli_epi32(even_parts[s], 16), _mm512_and_si512(odd_parts[s], top));
}

// B tiles of `lanes` (<= 16) columns: row k's from row_of(k), k < K, zeros
// past them to depth_tiles k tiles. out: [k tile][part][B tile]. Returns
// whether every value is finite.
template <class RowOf>
FUSED_LSTM_AMX_TARGET inline bool pack_amx_columns(RowOf row_of, int64_t K, int64_t lanes, int64_t depth_tiles,
                                                   uint16_t* out) {
  const __mmask16 mask = lanes >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << lanes) - 1);
  __mmask16 non_finite_lanes = 0;
  for (int64_t kt = 0; kt < depth_tiles; ++kt)
    for (int64_t pair = 0; pair < kAmxTileRows; ++pair) {
      const int64_t k = kt * kAmxTileDepth + 2 * pair;
      __m512i pairs[kAmxParts];
      split_pairs(k < K ? _mm512_maskz_loadu_ps(mask, row_of(k)) : _mm512_setzero_ps(),
                  k + 1 < K ? _mm512_maskz_loadu_ps(mask, row_of(k + 1)) : _mm512_setzero_ps(), pairs,
                  non_finite_lanes);
      for (int s = 0; s < kAmxParts; ++s)
        _mm512_storeu_si512(out + (kt * kAmxParts + s) * kAmxTileValues + pair * kAmxTileDepth, pairs[s]);
    }
  return non_finite_lanes == 0;
}
// 16 columns, column c of row k at column[k * k_stride + c], K deep.
FUSED_LSTM_AMX_TARGET inline bool pack_amx_columns(const float* column, int64_t K, int64_t k_stride, uint16_t* out) {
  return pack_amx_columns([&](int64_t k) { return column + k * k_stride; }, K, 16, amx_depth_tiles(K), out);
}

// Rows [0, rows) of a (row r: K values from row_of(r)) to A tiles: [row
// tile][k tile][part][A tile], the last row tile's missing rows zeros.
// Returns whether every value is finite.
template <class RowOf>
FUSED_LSTM_AMX_TARGET inline bool split_amx_rows(RowOf row_of, int64_t rows, int64_t K, uint16_t* out) {
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
        return _mm512_maskz_loadu_ps(lanes, row_of(r) + k0);
      };
      const __m512 a_low = load16(k), a_high = load16(k + 16);
      any_non_finite |= non_finite(a_low) | non_finite(a_high);
      split_parts(a_low, low);
      split_parts(a_high, high);
      uint16_t* tile_row = out + (((r / kAmxTileRows) * depth_tiles + kt) * kAmxParts) * kAmxTileValues +
                           (r % kAmxTileRows) * kAmxTileDepth;
      for (int s = 0; s < kAmxParts; ++s)
        _mm512_storeu_si512(tile_row + s * kAmxTileValues, _mm512_permutex2var_epi16(low[s], high_halves, high[s]));
    }
  return any_non_finite == 0;
}
// fn(r) for each row r in [begin, end) whose K values from row_of(r) hold
// an inf or NaN (such rows go to the FMA chains).
template <class RowOf, class Fn>
inline void for_rows_not_finite(RowOf row_of, int64_t begin, int64_t end, int64_t K, Fn fn) {
  for (int64_t r = begin; r < end; ++r)
    if (!std::all_of(row_of(r), row_of(r) + K, [](float v) { return std::isfinite(v); })) fn(r);
}

// Rows [0, rows) of a [rows][lda] matrix.
FUSED_LSTM_AMX_TARGET inline bool split_amx_rows(const float* a, int64_t lda, int64_t rows, int64_t K,
                                                 uint16_t* out) {
  return split_amx_rows([&](int64_t r) { return a + r * lda; }, rows, K, out);
}

// The tile shapes every product here uses: 8 tiles of 16 rows x 64 bytes
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

// Where C tiles start from: zero, a 16-float row repeated (the forward's
// bias), or the output itself (dW's running sums).
enum class CStart { kZero, kRow, kOut };

// A block of up to 2 x 2 C tiles in a float output: row tile i's first row
// at out[i] (valid_rows[i] of its 16 rows are read and written), column tile
// j col_step floats on from there (valid_cols[j] of its 16), rows out_stride
// floats apart. `edge` (256 floats) carries a partial tile.
struct CBlock {
  float* out[2];
  int64_t valid_rows[2];
  int64_t col_step;
  int64_t valid_cols[2];
  int64_t out_stride;
  const float* start_row[2];  // CStart::kRow: column tile j's row
  float* edge;
};

namespace amx_detail {
// The tile intrinsics paste the tile's number into the instruction: a
// literal, so each C tile gets its own line.
template <int Tile> FUSED_LSTM_AMX_TARGET inline void load(const void* p, int64_t stride) {
  if constexpr (Tile == 0) _tile_loadd(0, p, stride);
  if constexpr (Tile == 1) _tile_loadd(1, p, stride);
  if constexpr (Tile == 2) _tile_loadd(2, p, stride);
  if constexpr (Tile == 3) _tile_loadd(3, p, stride);
}
template <int Tile> FUSED_LSTM_AMX_TARGET inline void store(void* p, int64_t stride) {
  if constexpr (Tile == 0) _tile_stored(0, p, stride);
  if constexpr (Tile == 1) _tile_stored(1, p, stride);
  if constexpr (Tile == 2) _tile_stored(2, p, stride);
  if constexpr (Tile == 3) _tile_stored(3, p, stride);
}
template <int Tile> FUSED_LSTM_AMX_TARGET inline void zero() {
  if constexpr (Tile == 0) _tile_zero(0);
  if constexpr (Tile == 1) _tile_zero(1);
  if constexpr (Tile == 2) _tile_zero(2);
  if constexpr (Tile == 3) _tile_zero(3);
}

// C tile (i, j) = tile 2i + j: its start, and its store.
template <int I, int J, CStart Start> FUSED_LSTM_AMX_TARGET inline void start(const CBlock& c) {
  constexpr int kTile = 2 * I + J;
  if constexpr (Start == CStart::kZero) return zero<kTile>();
  if constexpr (Start == CStart::kRow) return load<kTile>(c.start_row[J], 0);  // row stride 0: every row the same
  if constexpr (Start == CStart::kOut) {
    const float* at = c.out[I] + J * c.col_step;
    if (c.valid_rows[I] >= kAmxTileRows && c.valid_cols[J] == 16) return load<kTile>(at, c.out_stride * 4);
    for (int64_t r = 0; r < kAmxTileRows; ++r)
      for (int64_t col = 0; col < 16; ++col)
        c.edge[r * 16 + col] = r < c.valid_rows[I] && col < c.valid_cols[J] ? at[r * c.out_stride + col] : 0.0f;
    load<kTile>(c.edge, 64);
  }
}
template <int I, int J> FUSED_LSTM_AMX_TARGET inline void finish(const CBlock& c) {
  constexpr int kTile = 2 * I + J;
  float* at = c.out[I] + J * c.col_step;
  if (c.valid_rows[I] >= kAmxTileRows && c.valid_cols[J] == 16) return store<kTile>(at, c.out_stride * 4);
  store<kTile>(c.edge, 64);
  for (int64_t r = 0; r < std::min(c.valid_rows[I], kAmxTileRows); ++r)
    std::memcpy(at + r * c.out_stride, c.edge + r * 16, c.valid_cols[J] * sizeof(float));
}
}  // namespace amx_detail

// C += A B over depth_tiles k tiles for Rows x Cols C tiles: row tile i's A
// tiles at a + i * a_step, column tile j's B tiles at b + j * b_step (each
// [k tile][part][tile]). Products (i, j) of the parts in the order (0,0)
// (0,1) (0,2) (1,0) (1,1) (2,0), A part i loaded once for its B parts.
template <int Rows, int Cols, CStart Start>
FUSED_LSTM_AMX_TARGET inline void amx_product(const uint16_t* a, int64_t a_step, const uint16_t* b, int64_t b_step,
                                              int64_t depth_tiles, const CBlock& c) {
  using namespace amx_detail;
  static_assert(Rows >= 1 && Rows <= 2 && Cols >= 1 && Cols <= 2, "up to 2 x 2 C tiles");
  start<0, 0, Start>(c);
  if constexpr (Cols == 2) start<0, 1, Start>(c);
  if constexpr (Rows == 2) start<1, 0, Start>(c);
  if constexpr (Rows == 2 && Cols == 2) start<1, 1, Start>(c);
  for (int64_t kt = 0; kt < depth_tiles; ++kt) {
    const int64_t t = kt * kAmxParts * kAmxTileValues;
    for (int i = 0; i < kAmxParts; ++i) {
      _tile_loadd(4, a + t + i * kAmxTileValues, 64);
      if constexpr (Rows == 2) _tile_loadd(5, a + a_step + t + i * kAmxTileValues, 64);
      for (int j = 0; i + j < kAmxParts; ++j) {
        _tile_loadd(6, b + t + j * kAmxTileValues, 64);
        if constexpr (Cols == 2) _tile_loadd(7, b + b_step + t + j * kAmxTileValues, 64);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (Cols == 2) _tile_dpbf16ps(1, 4, 7);
        if constexpr (Rows == 2) _tile_dpbf16ps(2, 5, 6);
        if constexpr (Rows == 2 && Cols == 2) _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  finish<0, 0>(c);
  if constexpr (Cols == 2) finish<0, 1>(c);
  if constexpr (Rows == 2) finish<1, 0>(c);
  if constexpr (Rows == 2 && Cols == 2) finish<1, 1>(c);
}

// amx_product with Rows, Cols (1 or 2) chosen at run time.
template <CStart Start>
FUSED_LSTM_AMX_TARGET inline void amx_product(int rows, int cols, const uint16_t* a, int64_t a_step,
                                              const uint16_t* b, int64_t b_step, int64_t depth_tiles,
                                              const CBlock& c) {
  if (rows == 2 && cols == 2) return amx_product<2, 2, Start>(a, a_step, b, b_step, depth_tiles, c);
  if (rows == 2) return amx_product<2, 1, Start>(a, a_step, b, b_step, depth_tiles, c);
  if (cols == 2) return amx_product<1, 2, Start>(a, a_step, b, b_step, depth_tiles, c);
  amx_product<1, 1, Start>(a, a_step, b, b_step, depth_tiles, c);
}

}  // namespace fused_lstm::cpu::FUSED_LSTM_CPU_ISA
#endif
