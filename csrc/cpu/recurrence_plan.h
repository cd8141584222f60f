// What the dispatcher (lstm_recurrence.cpp) hands every member of the thread
// team, and the per-ISA kernel tables it chooses from. Plain data only: this
// header is shared by translation units compiled for different ISAs.
//
// Partition: hidden units in blocks of `width` (one SIMD vector); member m of
// `members` owns unit blocks [unit_blocks*m/members, unit_blocks*(m+1)/members)
// for the whole sequence: their W_hh rows (all four gates), their cell state,
// their gate math. Projection outputs (and, in backward, the columns of dh) are
// partitioned the same way in blocks of `width`. Each output element is
// computed by exactly one member with a fixed reduction order, so the thread
// count never changes a bit of the result. The backward may split the batch
// rows instead (batch_slices): each member runs every unit for its rows with
// no barrier per step, and the same bits (weight_grads.h sums the weight
// gradients over fixed halves of the batch either way). The forward does
// not: there each core would stream all of W_hh's and W_ih's panels, not
// half (3-8% slower at N=8/16, H=128 on Zen 4, ~10% on Sapphire Rapids).
#pragma once
#include <cstdint>

#include "../common/params.h"

namespace fused_lstm::cpu {

class ThreadTeam;

struct RecurrencePlan {
  const LstmFwdParams* forward = nullptr;  // exactly one of forward / backward
  const LstmBwdParams* backward = nullptr;
  ThreadTeam* team = nullptr;
  int members = 1;
  int64_t width = 1;        // SIMD width in elements of the accumulation type
  int64_t unit_blocks = 0;  // ceil(H / width)
  int64_t out_blocks = 0;   // ceil(H_out / width)
  // Backward in batch slices (backward.h slice_share) when > 1: each member
  // runs the rows of a slice of the batch over every block alone, with no
  // barrier per step (2 slices: rows n < batch_split, and the rest). Else
  // the unit partition above.
  int64_t batch_slices = 1;
  int64_t batch_split = 0;  // also the weight gradients' halves of the batch (weight_grads.h); 0: one chain
  // Workspace (accumulation type, 64-byte aligned), packed per call by its owners:
  void* w_hh_panels = nullptr;  // forward: per unit block [H_out][4 gates][width];
                                // backward: per out block [4H][width] (W_hh columns)
  void* w_hr_panels = nullptr;  // forward: per out block [H][width] (W_hr rows);
                                // backward: per unit block [P][width] (W_hr columns)
  void* cell_state = nullptr;   // [unit_blocks][N][width]: c (forward), dL/dc (backward)
  void* out_state = nullptr;    // backward: [out_blocks][N][width] dL/dh_out carried back
  void* h_buffers[2] = {};      // forward: [N][H_out], h_{t-1} and h_t (double buffer)
  void* exchange = nullptr;     // projection only: forward h_cell [N][unit_blocks*width],
                                // backward dL/dh_out [N][out_blocks*width]
  void* partial = nullptr;      // per member partial_values: depth-chunk partial sums
  // Forward with the input projection inside (LstmFwdParams::projects_input()):
  void* w_ih_panels = nullptr;  // per unit block [I][4 gates][width] (W_ih rows);
                                // backward with grad_x: per input block [4H][width] (W_ih columns)
  void* bias_panels = nullptr;  // per unit block [4 gates][width]: b_ih + b_hh, or zeros
  void* gates_chunk = nullptr;  // [unit_blocks][chunk_rows][4 gates][width]: x @ W_ih^T + b
                                // (batch slices: one per member)
  int64_t chunk_steps = 0;      // steps projected at a time
  int64_t chunk_rows = 0;       // rows of gates_chunk (chunk_steps * batch)
  bool fold_projection = false; // N = 1, the ISA folds, the weights stay cached (plan_input_chunks)
  // float32 products with W_ih on AMX tiles (amx_tiles.h; lstm_recurrence.cpp):
  void* amx_ih_panels = nullptr;  // forward: per unit block amx_gate_panel_values(I) bf16 values;
                                  // backward: per input block amx_depth_tiles(4H) B tiles (dx)
  void* amx_rows = nullptr;       // per member amx_rows_values values: rows of x (forward: a chunk's)
                                  // or of grad_gates (backward: kAmxInputGradRows) split
  uint8_t* amx_finite_blocks = nullptr;  // per unit block (forward) or input block (backward): W_ih all finite
  int64_t amx_rows_values = 0;
  int64_t partial_values = 0;
  // A member's weight panels do not fit its L2, so every step streams them
  // from L3: each product requests its next panels into L2 while it runs the
  // current ones (forward.h product_in_groups).
  bool prefetch_panels = false;
  // Backward with the weight gradients inside (LstmBwdParams::weight_grads_inside(), weight_grads.h):
  int64_t input_blocks = 0;       // ceil(I / width): grad_x's column blocks
  void* bias_sums = nullptr;      // per batch half [unit_blocks][2][4 gates][width]: grad_bias so far, its compensation
  // batch_split > 0: the first half's dW_ih [4H][I] and dW_hh [4H][H_out] sums (each nullptr if not asked for)
  void* first_half_w_ih = nullptr;
  void* first_half_w_hh = nullptr;
  void* row_pointers = nullptr;   // per member 3 * grad_chunk_rows pointers: a chunk's rows of grad_gates, x, h_{t-1}
  int64_t grad_chunk_steps = 0;   // steps per chunk
  int64_t grad_chunk_rows = 0;    // grad_chunk_steps * batch: most rows a chunk has
  bool amx_weight_grads = false;  // float dW on AMX tiles (amx_weight_grads.h)
};

// Forward with fold_projection (forward.h fold_step): each step folds the
// input projection of the next kFoldRows rows, for kFoldVectors of the four
// gates of some unit blocks, into its recurrent product; gates_chunk is a
// ring of kFoldRingRows rows (chunk_rows: that, or T if fewer).
// Each W_ih vector loaded serves kFoldRows rows: 8 rows of 2 gates (16
// accumulators, as 4 rows of 4) halve its loads against 4 rows of 4 (Zen 4,
// T=1000 H=256: ~10% faster); 16 rows of 1 gate measured in between.
constexpr int64_t kFoldRows = 8;
constexpr int kFoldVectors = 2;
constexpr int64_t kFoldRingRows = 2 * kFoldRows;  // > kFoldRows + 1: rows t .. t + kFoldRows live at step t

// float32 products on AMX tiles (amx_tiles.h): bf16 tiles of 16 rows x 32
// k, each float split into 3 bf16 parts. Sizes in bf16 values.
constexpr int64_t kAmxTileRows = 16;   // rows of every tile: A's rows, B's k pairs, C's rows
constexpr int64_t kAmxTileDepth = 32;  // k per tile: 64 bytes of bf16
constexpr int kAmxParts = 3;
constexpr int64_t kAmxTileValues = kAmxTileRows * kAmxTileDepth;
inline int64_t amx_depth_tiles(int64_t K) { return (K + kAmxTileDepth - 1) / kAmxTileDepth; }
// The B tiles of 16 columns, K deep (amx_tiles.h pack_amx_columns).
inline int64_t amx_column_panel_values(int64_t K) { return amx_depth_tiles(K) * kAmxParts * kAmxTileValues; }
// One unit block's packed W_ih (4 gates of 16 units).
inline int64_t amx_gate_panel_values(int64_t K) { return 4 * amx_column_panel_values(K); }
// `rows` rows of K values (x, or grad_gates), split.
inline int64_t amx_rows_values(int64_t rows, int64_t K) {
  return (rows + kAmxTileRows - 1) / kAmxTileRows * amx_depth_tiles(K) * kAmxParts * kAmxTileValues;
}

// Rows per chunk of the weight gradients inside the backward (weight_grads.h):
// each chunk re-reads and re-writes the member's dW rows (4 MB a member at
// H = 512), so enough rows that this is small beside the chunk's FMAs.
// Measured on Zen 4, a training step's time over the same step's with
// framework GEMMs, at N=64 H=512 / N=16 H=128 / N=8 H=128: 64 rows 1.04 at
// N=64 (a chunk a step); 256 rows 0.97 / 0.93 / 0.92; 512 rows 0.96 / 0.89 /
// 0.88; the whole sequence as one chunk 1.13 / 0.92 / 0.89.
constexpr int64_t kWeightGradChunkRows = 512;

// Backward with the weight gradients inside (weight_grads.h): rows of a
// chunk per pass of the dW tiles; scratch (partial) holds that many rows of
// a member's own gate columns.
constexpr int64_t kGradBlockRows = 64;

// Rows of a chunk per pass of the dW tiles on AMX (amx_weight_grads.h): C
// goes from dW to the tiles and back once a pass.
constexpr int64_t kAmxGradBlockRows = 128;

// Rows of grad_gates split at a time for dx on AMX (amx_weight_grads.h
// amx_input_grads): two row tiles; their C tiles staged in the member's
// scratch ([rows][32] floats).
constexpr int64_t kAmxInputGradRows = 2 * kAmxTileRows;

// Scratch of the weight gradients on AMX tiles (amx_weight_grads.h), in
// floats: a block's A tiles for `groups` gate groups (16 gate rows each), B
// tiles for the columns of x and h, a C tile, a flag per group and column tile.
inline int64_t amx_grad_scratch_floats(int64_t groups, int64_t cols_x, int64_t cols_h) {
  const int64_t col_tiles = (cols_x + 15) / 16 + (cols_h + 15) / 16;
  const int64_t tile_floats = kAmxGradBlockRows / kAmxTileDepth * kAmxParts * kAmxTileValues / 2;
  const int64_t flags = (groups + col_tiles + 63) / 64 * 16;  // bytes, in whole cache lines
  return (groups + col_tiles) * tile_floats + 256 + flags;
}

// Run by each member m of the team: the whole sequence for its blocks.
using MemberFn = void (*)(const RecurrencePlan& plan, int member);

struct IsaKernels {
  const char* name;
  int width_float, width_double;
  MemberFn forward_float, forward_double, backward_float, backward_double;
  bool folds_projection;  // its forward can fold_projection (32 vector registers)
  bool uses_amx;          // its float32 products with W_ih and dW run on AMX tiles (amx_tiles.h)
};

// One per ISA translation unit; avx512/avx2 only when built for x86-64.
const IsaKernels& portable_kernels();
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
const IsaKernels& avx512_amx_kernels();

}  // namespace fused_lstm::cpu
