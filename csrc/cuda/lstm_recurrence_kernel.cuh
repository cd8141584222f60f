// Device code and launch templates of the CUDA recurrence (lstm_recurrence.h).
// Compiled by nvcc for GPUs and by g++ through csrc/simt for tests.
//
// Work split: a block owns a slice of J hidden units (all four gate rows of
// each, so the gate math needs nothing from other blocks) and, with a
// projection, a slice of Q projection outputs. Every recurrent product is
// "rows times a batch stage": up to kMaxStageRows batch rows of the step's
// input are staged in shared memory at once, and the block's warps share out
// (row pair, batch tile) work items: a warp takes kRowsPerPass weight rows, its
// lanes stride along them (coalesced), kBatchTile batch rows are accumulated at
// once in fp32 registers, and a warp shuffle reduction finishes each dot
// product (fixed order: deterministic, no atomics).
//
// Paths: step kernels for any size the shared-memory tile allows (K = 4H in
// backward: H up to ~3500 on an H100); persistent kernels when the block's
// weight slices fit in shared memory at about one block per SM. Both cover
// inference and training, projections and packed sequences.
//
// The step bodies (fwd_gates_step, fwd_proj_step, bwd_dh_step, bwd_gates_step)
// are shared by the step kernels (one launch per step, weight rows read from
// global memory / L2) and the persistent kernels (one cooperative launch, the
// block's weight rows copied to shared memory once, grid.sync() between steps).
//
// State between steps lives in the fp32 workspace (lstm_workspace.h): h_out of
// the last two steps (ping-pong: step t reads buffer (t-1)&1, writes t&1), the
// cell state c (read and written only by the thread that owns (n, j)), and in
// backward the dgates of the last two steps and the carried dc.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../common/check.h"
#include "../common/lstm_math.h"
#include "../common/params.h"
#include "launch.cuh"
#include "lstm_recurrence.h"
#include "lstm_workspace.h"
#include "storage.cuh"

namespace fused_lstm::cuda {

constexpr int kMaxThreads = 512;      // threads per block, at most (launch bounds)
constexpr int kMinBlocksPerSm = 1;    // => ptxas keeps every kernel at <= 128 registers
constexpr int kMinWarps = 4;          // warps per block, at least
constexpr int kRegisterBudget = 65536 / (kMaxThreads * kMinBlocksPerSm);
constexpr int kBatchTile = 4;         // batch rows a warp accumulates at once (registers)
constexpr int kMaxStageRows = 32;     // batch rows staged in shared memory at once, at most
constexpr int kStageLoads = 8;        // global loads a thread has in flight while staging
constexpr int64_t kStageBytes = 32 * 1024;  // shared memory a step kernel's stage may take (one tile may take more)
constexpr int kRowsPerPass = 2;       // weight rows a warp multiplies at once
constexpr int kStepUnits = 8;         // hidden units per block in the step kernels, at most

// ---------------------------------------------------------------- device code

__device__ __forceinline__ float warp_sum(float value) {
  for (int mask = 16; mask > 0; mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, mask);
  return value;
}

// Per-step batch sizes and first rows (dense or packed, params.h).
struct StepRows {
  const int64_t* batch_sizes;  // device memory, or nullptr (dense)
  const int64_t* row_offsets;  // [T+1] prefix sums when packed
  int64_t batch, seq_len;
  __device__ __forceinline__ int64_t rows(int64_t t) const {
    return t < 0 || t >= seq_len ? 0 : batch_sizes ? batch_sizes[t] : batch;
  }
  __device__ __forceinline__ int64_t first(int64_t t) const { return batch_sizes ? row_offsets[t] : t * batch; }
};

// out[b * out_stride + i] = sum_k row(i)[k] * stage[b * K + k] for i < count,
// b < batch (rounded up to kBatchTile; the stage is zero past batch). The
// stage is fp32 in shared memory; rows are any storage type. Work items are
// (kRowsPerPass rows, kBatchTile batch rows), dealt out to the warps: each
// stage value a warp loads feeds kRowsPerPass FMAs, each weight kBatchTile.
// Every dot product is one warp's, lanes striding over k, then a butterfly:
// the same order whatever the grid or the stage size, so the step and
// persistent paths give the same bits.
template <class T, class RowFn>
__device__ __forceinline__ void rows_times_stage(RowFn row, int count, const float* stage, int64_t K64, int batch,
                                                 float* out, int out_stride) {
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32), warps = int(blockDim.x / 32);
  const int K = int(K64);  // < 2^31: the launchers bound K by shared memory
  const int tiles = (batch + kBatchTile - 1) / kBatchTile, pairs = (count + kRowsPerPass - 1) / kRowsPerPass;
  for (int item = warp; item < pairs * tiles; item += warps) {  // warp-uniform
    const int i0 = item / tiles * kRowsPerPass, b0 = item % tiles * kBatchTile;
    const float* tile = stage + b0 * K;
    const T* a[kRowsPerPass];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r) a[r] = row(std::min(i0 + r, count - 1));  // past count: result dropped
    float acc[kRowsPerPass][kBatchTile];
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r)
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) acc[r][b] = 0.f;
    for (int k = lane; k < K; k += 32) {
      float x[kBatchTile];
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) x[b] = tile[b * K + k];
#pragma unroll
      for (int r = 0; r < kRowsPerPass; ++r) {
        const float w = to_acc(a[r][k]);
#pragma unroll
        for (int b = 0; b < kBatchTile; ++b) acc[r][b] += w * x[b];
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerPass; ++r)
#pragma unroll
      for (int b = 0; b < kBatchTile; ++b) acc[r][b] = warp_sum(acc[r][b]);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRowsPerPass; ++r)
        if (i0 + r < count)
#pragma unroll
          for (int b = 0; b < kBatchTile; ++b) out[(b0 + b) * out_stride + i0 + r] = acc[r][b];
    }
  }
}

// stage[b][k] = value(b, k) for b < count, 0 up to the next whole tile.
// Each thread has kStageLoads loads in flight before it stores any: one at a
// time, a stage of dgates (K = 4H = 2048, 20 rows) cost 128 L2 round trips a
// thread at N=64 H=512, most of a backward step. The stage is in shared
// memory, so its indices fit in an int (and int division is the cheap one).
template <class ValueFn>
__device__ __forceinline__ void stage_rows(float* stage, int64_t K64, int count, ValueFn value) {
  const int K = int(K64), threads = int(blockDim.x);
  const int filled = (count + kBatchTile - 1) / kBatchTile * kBatchTile * K;
  for (int first = int(threadIdx.x); first < filled; first += kStageLoads * threads) {
    float loaded[kStageLoads];
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int index = first + u * threads, b = index / K;
      loaded[u] = index < filled && b < count ? value(b, int64_t(index - b * K)) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u)
      if (first + u * threads < filled) stage[first + u * threads] = loaded[u];
  }
}

struct FwdArgs {
  LstmFwdParams p;
  ForwardWorkspace w;
  int units;  // J: hidden units per block
  int proj;   // Q: projection outputs per block
  int stage;  // batch rows per shared-memory stage (a multiple of kBatchTile)
};

struct BwdArgs {
  LstmBwdParams p;
  BackwardWorkspace w;
  int units;  // J: hidden units per block
  int proj;   // Q: h_out columns per block (== J without projection)
  int stage;  // batch rows per shared-memory stage (a multiple of kBatchTile)
};

// Forward, step t, this block's hidden units: pre-activations (recurrent
// product + gates_x) and the gate math. w_row(i) is W_hh's row for gate
// i / J_block, unit j0 + i % J_block. Writes c_t, the saved values, and h_t
// (to h_state/y, or to h_cell when a projection follows).
template <class T, class RowFn>
__device__ void fwd_gates_step(const FwdArgs& a, int64_t t, RowFn w_row, float* tile, float* pre) {
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), N = s.batch;
  const int J = a.units;
  const int64_t j0 = int64_t(blockIdx.x) * J;
  const int units = int(std::min<int64_t>(J, H - j0));
  if (units <= 0) return;  // block-uniform
  const StepRows steps{s.batch_sizes, a.w.row_offsets, N, s.seq_len};
  const int64_t rows = steps.rows(t), row0 = steps.first(t), next_rows = steps.rows(t + 1);
  const T* h0 = static_cast<const T*>(a.p.h0);
  const T* c0 = static_cast<const T*>(a.p.c0);
  const T* gates_x = static_cast<const T*>(a.p.gates_x);
  const float* h_prev = a.w.h_state + ((t + 1) & 1) * N * O;
  float* h_next = a.w.h_state + (t & 1) * N * O;
  float* saved_gates = static_cast<float*>(a.p.saved_gates);
  float* saved_c = static_cast<float*>(a.p.saved_c);
  float* saved_h = static_cast<float*>(a.p.saved_h);

  for (int64_t n0 = 0; n0 < rows; n0 += a.stage) {
    const int count = int(std::min<int64_t>(a.stage, rows - n0));
    stage_rows(tile, O, count, [&](int b, int64_t k) {
      const int64_t index = (n0 + b) * O + k;
      return t == 0 ? to_acc(h0[index]) : h_prev[index];
    });
    __syncthreads();
    rows_times_stage<T>(w_row, 4 * units, tile, O, count, pre, 4 * J);
#ifndef FUSED_LSTM_TEST_DROP_BARRIER  // tests/test_simt_tsan.py: ThreadSanitizer must flag its absence
    __syncthreads();
#endif
    for (int index = threadIdx.x; index < count * units; index += blockDim.x) {
      const int b = index / units, u = index - b * units;
      const int64_t n = n0 + b, j = j0 + u, row = row0 + n;
      const T* gx = gates_x + row * 4 * H;
      const float* p = pre + b * 4 * J;
      const float c_prev = t == 0 ? to_acc(c0[n * H + j]) : a.w.c_state[n * H + j];
      float c, h;
      const LstmGates<float> g =
          lstm_cell_forward(p[u] + to_acc(gx[j]), p[units + u] + to_acc(gx[H + j]),
                            p[2 * units + u] + to_acc(gx[2 * H + j]), p[3 * units + u] + to_acc(gx[3 * H + j]),
                            c_prev, c, h);
      a.w.c_state[n * H + j] = c;
      if (saved_gates) {
        float* sg = saved_gates + row * 4 * H;
        sg[j] = g.i, sg[H + j] = g.f, sg[2 * H + j] = g.g, sg[3 * H + j] = g.o;
        saved_c[row * H + j] = c;
        if (saved_h) saved_h[row * H + j] = h;
      }
      const bool last = n >= next_rows;  // this batch row ends at step t
      if (last) static_cast<T*>(a.p.c_n)[n * H + j] = from_acc<T>(c);
      if (s.proj_size > 0) {
        a.w.h_cell[n * H + j] = h;
      } else {
        h_next[n * O + j] = h;
        static_cast<T*>(a.p.y)[row * O + j] = from_acc<T>(h);
        if (last) static_cast<T*>(a.p.h_n)[n * O + j] = from_acc<T>(h);
      }
    }
    __syncthreads();
  }
}

// Forward projection, step t, this block's outputs q: h_out = h_cell @ W_hr^T.
template <class T, class RowFn>
__device__ void fwd_proj_step(const FwdArgs& a, int64_t t, RowFn w_row, float* tile, float* out) {
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, N = s.batch;
  const int Q = a.proj;
  const int64_t q0 = int64_t(blockIdx.x) * Q;
  const int outputs = int(std::min<int64_t>(Q, P - q0));
  if (outputs <= 0) return;  // block-uniform
  const StepRows steps{s.batch_sizes, a.w.row_offsets, N, s.seq_len};
  const int64_t rows = steps.rows(t), row0 = steps.first(t), next_rows = steps.rows(t + 1);
  float* h_next = a.w.h_state + (t & 1) * N * P;
  for (int64_t n0 = 0; n0 < rows; n0 += a.stage) {
    const int count = int(std::min<int64_t>(a.stage, rows - n0));
    stage_rows(tile, H, count, [&](int b, int64_t k) { return a.w.h_cell[(n0 + b) * H + k]; });
    __syncthreads();
    rows_times_stage<T>(w_row, outputs, tile, H, count, out, Q);
    __syncthreads();
    for (int index = threadIdx.x; index < count * outputs; index += blockDim.x) {
      const int b = index / outputs, u = index - b * outputs;
      const int64_t n = n0 + b, q = q0 + u, row = row0 + n;
      const float h = out[b * Q + u];
      h_next[n * P + q] = h;
      static_cast<T*>(a.p.y)[row * P + q] = from_acc<T>(h);
      if (n >= next_rows) static_cast<T*>(a.p.h_n)[n * P + q] = from_acc<T>(h);
    }
    __syncthreads();
  }
}

// Backward, this block's h_out columns q: dh_out_t = grad_y_t + dgates_{t+1} .
// W_hh[:, q] (or grad_h_n for rows that end at t). With t == -1 this is
// grad_h0. w_row(i) is row q0 + i of W_hh^T. Writes grad_h_out and the fp32
// dh_out the gate step reads (projection), or grad_h0.
template <class T, class RowFn>
__device__ void bwd_dh_step(const BwdArgs& a, int64_t t, RowFn w_row, float* tile, float* out) {
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), N = s.batch;
  const int Q = a.proj;
  const int64_t q0 = int64_t(blockIdx.x) * Q;
  const int columns = int(std::min<int64_t>(Q, O - q0));
  if (columns <= 0) return;  // block-uniform
  const StepRows steps{s.batch_sizes, a.w.row_offsets, N, s.seq_len};
  const int64_t rows = t < 0 ? N : steps.rows(t), row0 = t < 0 ? 0 : steps.first(t);
  const int64_t next_rows = steps.rows(t + 1);
  const float* dgates_next = a.w.dgates + ((t + 1) & 1) * N * 4 * H;
  const T* grad_y = static_cast<const T*>(a.p.grad_y);
  const T* grad_h_n = static_cast<const T*>(a.p.grad_h_n);
  for (int64_t n0 = 0; n0 < rows; n0 += a.stage) {
    const int count = int(std::min<int64_t>(a.stage, rows - n0));
    if (n0 < next_rows) {  // block-uniform
      const int carried = int(std::min<int64_t>(count, next_rows - n0));
      stage_rows(tile, 4 * H, carried, [&](int b, int64_t k) { return dgates_next[(n0 + b) * 4 * H + k]; });
      __syncthreads();
      rows_times_stage<T>(w_row, columns, tile, 4 * H, carried, out, Q);
      __syncthreads();
    }
    for (int index = threadIdx.x; index < count * columns; index += blockDim.x) {
      const int b = index / columns, u = index - b * columns;
      const int64_t n = n0 + b, q = q0 + u, row = row0 + n;
      float dh = n < next_rows ? out[b * Q + u] : to_acc(grad_h_n[n * O + q]);
      if (t < 0) {
        static_cast<T*>(a.p.grad_h0)[n * O + q] = from_acc<T>(dh);
      } else {
        dh += to_acc(grad_y[row * O + q]);
        static_cast<T*>(a.p.grad_h_out)[row * O + q] = from_acc<T>(dh);
        a.w.dh_out[n * O + q] = dh;
      }
    }
    __syncthreads();
  }
}

// Backward, step t, this block's hidden units: dh (fused dgates_{t+1} . W_hh
// without a projection; dh_out . W_hr with one), then the gate backward.
// w_row(i): row j0 + i of W_hh^T (no projection) or of W_hr^T (projection).
template <class T, class RowFn>
__device__ void bwd_gates_step(const BwdArgs& a, int64_t t, RowFn w_row, float* tile, float* out) {
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size, N = s.batch;
  const int J = a.units;
  const int64_t j0 = int64_t(blockIdx.x) * J;
  const int units = int(std::min<int64_t>(J, H - j0));
  if (units <= 0) return;  // block-uniform
  const StepRows steps{s.batch_sizes, a.w.row_offsets, N, s.seq_len};
  const int64_t rows = steps.rows(t), row0 = steps.first(t), next_rows = steps.rows(t + 1);
  const int64_t prev_row0 = t > 0 ? steps.first(t - 1) : 0;
  const float* dgates_next = a.w.dgates + ((t + 1) & 1) * N * 4 * H;
  float* dgates = a.w.dgates + (t & 1) * N * 4 * H;
  const float* saved_gates = static_cast<const float*>(a.p.saved_gates);
  const float* saved_c = static_cast<const float*>(a.p.saved_c);
  const T* grad_y = static_cast<const T*>(a.p.grad_y);
  const T* grad_h_n = static_cast<const T*>(a.p.grad_h_n);
  const T* grad_c_n = static_cast<const T*>(a.p.grad_c_n);
  const T* c0 = static_cast<const T*>(a.p.c0);
  T* grad_gates = static_cast<T*>(a.p.grad_gates);
  for (int64_t n0 = 0; n0 < rows; n0 += a.stage) {
    const int count = int(std::min<int64_t>(a.stage, rows - n0));
    if (P > 0) {
      stage_rows(tile, P, count, [&](int b, int64_t k) { return a.w.dh_out[(n0 + b) * P + k]; });
      __syncthreads();
      rows_times_stage<T>(w_row, units, tile, P, count, out, J);
      __syncthreads();
    } else if (n0 < next_rows) {  // block-uniform
      const int carried = int(std::min<int64_t>(count, next_rows - n0));
      stage_rows(tile, 4 * H, carried, [&](int b, int64_t k) { return dgates_next[(n0 + b) * 4 * H + k]; });
      __syncthreads();
      rows_times_stage<T>(w_row, units, tile, 4 * H, carried, out, J);
      __syncthreads();
    }
    for (int index = threadIdx.x; index < count * units; index += blockDim.x) {
      const int b = index / units, u = index - b * units;
      const int64_t n = n0 + b, j = j0 + u, row = row0 + n;
      const bool carried = n < next_rows;  // step t+1 exists for this batch row
      float dh = out[b * J + u];
      if (P == 0) dh = to_acc(grad_y[row * O + j]) + (carried ? dh : to_acc(grad_h_n[n * O + j]));
      const float dc = carried ? a.w.dc_state[n * H + j] : to_acc(grad_c_n[n * H + j]);
      const float* sg = saved_gates + row * 4 * H;
      const LstmGates<float> g{sg[j], sg[H + j], sg[2 * H + j], sg[3 * H + j]};
      const float c_prev = t > 0 ? saved_c[(prev_row0 + n) * H + j] : to_acc(c0[n * H + j]);
      float dc_prev;
      const LstmGates<float> d = lstm_cell_backward(g, saved_c[row * H + j], c_prev, dh, dc, dc_prev);
      a.w.dc_state[n * H + j] = dc_prev;
      if (t == 0) static_cast<T*>(a.p.grad_c0)[n * H + j] = from_acc<T>(dc_prev);
      T* gg = grad_gates + row * 4 * H;
      gg[j] = from_acc<T>(d.i), gg[H + j] = from_acc<T>(d.f);
      gg[2 * H + j] = from_acc<T>(d.g), gg[3 * H + j] = from_acc<T>(d.o);
      float* dg = dgates + n * 4 * H;
      dg[j] = d.i, dg[H + j] = d.f, dg[2 * H + j] = d.g, dg[3 * H + j] = d.o;
    }
    __syncthreads();
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared memory of a step body: the batch stage (K values per row) and its
// results (R per row), fp32.
inline int64_t stage_bytes(int64_t K, int64_t R, int stage) { return stage * (K + R) * int64_t(sizeof(float)); }

// Batch rows per stage: the whole batch (in whole tiles) up to kMaxStageRows,
// within `budget` bytes, at least one tile. One stage per step where the batch
// allows: every stage costs three block barriers and a round of staging
// loads, and a one-tile stage leaves warps idle when the block has few rows.
// The step kernels keep to step_stage_budget() (about two blocks an SM); a
// persistent kernel runs one block an SM and gives its stage whatever shared
// memory its weight slices leave: at N=64 H=512 the backward's K = 4H stage
// would otherwise hold one tile, 16 stages a step with 2 of 4 warps busy.
inline int stage_rows_for(int64_t batch, int64_t K, int64_t R, int64_t budget) {
  const int64_t by_bytes = budget / ((K + R) * int64_t(sizeof(float))) / kBatchTile * kBatchTile;
  const int64_t whole = ceil_div(std::max<int64_t>(batch, 1), kBatchTile) * kBatchTile;
  return int(std::max<int64_t>(kBatchTile, std::min<int64_t>({whole, kMaxStageRows, by_bytes})));
}

// Shared memory a step kernel's stage may take: kStageBytes, within the device's limit.
inline int64_t step_stage_budget() { return std::min(kStageBytes, device_limits().shared_memory_per_block); }

// ------------------------------------------------------------------- kernels

// First row of every step of a packed sequence: one thread, T additions.
// (static: this header is included by one .cu per dtype.)
static __global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm)
    lstm_row_offsets_kernel(const int64_t* batch_sizes, int64_t seq_len, int64_t* row_offsets) {
  if (threadIdx.x != 0) return;
  int64_t sum = 0;
  for (int64_t t = 0; t < seq_len; ++t) row_offsets[t] = sum, sum += batch_sizes[t];
  row_offsets[seq_len] = sum;
}

// out[c][r] = in[r][c] for in [R][C]; one 32x32 tile per block through shared memory.
template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm)
    lstm_transpose_kernel(const T* in, int64_t R, int64_t C, T* out) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  T* tile = reinterpret_cast<T*>(smem);  // [32][33]: the pad avoids bank conflicts on the way out
  const int64_t tiles_c = (C + 31) / 32;
  const int64_t r0 = int64_t(blockIdx.x) / tiles_c * 32, c0 = int64_t(blockIdx.x) % tiles_c * 32;
  for (int index = threadIdx.x; index < 32 * 32; index += blockDim.x) {
    const int r = index / 32, c = index % 32;
    if (r0 + r < R && c0 + c < C) tile[r * 33 + c] = in[(r0 + r) * C + c0 + c];
  }
  __syncthreads();
  for (int index = threadIdx.x; index < 32 * 32; index += blockDim.x) {
    const int c = index / 32, r = index % 32;
    if (r0 + r < R && c0 + c < C) out[(c0 + c) * R + r0 + r] = tile[r * 33 + c];
  }
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_fwd_step_kernel(FwdArgs a, int64_t t) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const int64_t H = a.p.sizes.hidden, O = a.p.sizes.out_size();
  const T* w_hh = static_cast<const T*>(a.p.w_hh);
  const int64_t j0 = int64_t(blockIdx.x) * a.units;
  const int units = int(std::min<int64_t>(a.units, H - j0));
  float* tile = reinterpret_cast<float*>(smem);
  fwd_gates_step<T>(a, t, [&](int i) { return w_hh + ((i / units) * H + j0 + i % units) * O; }, tile,
                    tile + a.stage * O);
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_fwd_proj_kernel(FwdArgs a, int64_t t) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const int64_t H = a.p.sizes.hidden;
  const T* w_hr = static_cast<const T*>(a.p.w_hr) + int64_t(blockIdx.x) * a.proj * H;
  float* tile = reinterpret_cast<float*>(smem);
  fwd_proj_step<T>(a, t, [&](int i) { return w_hr + i * H; }, tile, tile + a.stage * H);
}

// Shared memory of the persistent forward: W_hh rows [4][J][H_out], W_hr rows
// [Q][H] (storage type), then the stage and its results.
template <class T> int64_t fwd_persistent_smem(const LstmSizes& s, int J, int Q, int stage) {
  const int64_t H = s.hidden, O = s.out_size();
  const int64_t weights = (4 * J * O + (s.proj_size > 0 ? Q * H : 0)) * int64_t(sizeof(T));
  return (weights + 15) / 16 * 16 + stage_bytes(std::max(O, H), std::max<int64_t>(4 * J, Q), stage);
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_fwd_persistent_kernel(FwdArgs a) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size;
  const int J = a.units, Q = a.proj;
  const int64_t j0 = int64_t(blockIdx.x) * J, q0 = int64_t(blockIdx.x) * Q;
  const int units = int(std::max<int64_t>(0, std::min<int64_t>(J, H - j0)));
  const int outputs = P > 0 ? int(std::max<int64_t>(0, std::min<int64_t>(Q, P - q0))) : 0;
  T* w_slice = reinterpret_cast<T*>(smem);  // [4][units][O]
  T* wr_slice = w_slice + 4 * J * O;        // [outputs][H]
  const int64_t weight_bytes = (4 * J * O + (P > 0 ? Q * H : 0)) * int64_t(sizeof(T));
  float* tile = reinterpret_cast<float*>(smem + (weight_bytes + 15) / 16 * 16);
  float* out = tile + a.stage * std::max(O, H);

  // Load this block's weight rows once; they stay in shared memory for all steps.
  const T* w_hh = static_cast<const T*>(a.p.w_hh);
  for (int64_t index = threadIdx.x; index < 4 * units * O; index += blockDim.x) {
    const int64_t i = index / O, k = index - i * O;
    w_slice[index] = w_hh[((i / units) * H + j0 + i % units) * O + k];
  }
  const T* w_hr = static_cast<const T*>(a.p.w_hr);
  for (int64_t index = threadIdx.x; index < outputs * H; index += blockDim.x) wr_slice[index] = w_hr[q0 * H + index];
  __syncthreads();

  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t t = 0; t < s.seq_len; ++t) {
    fwd_gates_step<T>(a, t, [&](int i) { return w_slice + i * O; }, tile, out);
    grid.sync();
    if (P > 0) {
      fwd_proj_step<T>(a, t, [&](int i) { return wr_slice + i * H; }, tile, out);
      grid.sync();
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_bwd_dh_kernel(BwdArgs a, int64_t t) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const int64_t H = a.p.sizes.hidden;
  const T* w_t = static_cast<const T*>(a.w.w_hh_t) + int64_t(blockIdx.x) * a.proj * 4 * H;
  float* tile = reinterpret_cast<float*>(smem);
  bwd_dh_step<T>(a, t, [&](int i) { return w_t + i * 4 * H; }, tile, tile + a.stage * 4 * H);
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_bwd_step_kernel(BwdArgs a, int64_t t) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const int64_t H = a.p.sizes.hidden, P = a.p.sizes.proj_size;
  const int64_t K = P > 0 ? P : 4 * H;  // row length of W_hr^T or W_hh^T
  const T* w_t = static_cast<const T*>(P > 0 ? a.w.w_hr_t : a.w.w_hh_t) + int64_t(blockIdx.x) * a.units * K;
  float* tile = reinterpret_cast<float*>(smem);
  bwd_gates_step<T>(a, t, [&](int i) { return w_t + i * K; }, tile, tile + a.stage * K);
}

// Shared memory of the persistent backward: W_hh^T rows [Q][4H] and, with a
// projection, W_hr^T rows [J][P]; then the stage and its results.
template <class T> int64_t bwd_persistent_smem(const LstmSizes& s, int J, int Q, int stage) {
  const int64_t H = s.hidden, P = s.proj_size;
  const int64_t weights = (Q * 4 * H + (P > 0 ? J * P : 0)) * int64_t(sizeof(T));
  return (weights + 15) / 16 * 16 + stage_bytes(4 * H, std::max(J, Q), stage);
}

template <class T>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSm) lstm_bwd_persistent_kernel(BwdArgs a) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  const LstmSizes& s = a.p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size;
  const int J = a.units, Q = a.proj;
  const int64_t j0 = int64_t(blockIdx.x) * J, q0 = int64_t(blockIdx.x) * Q;
  const int units = P > 0 ? int(std::max<int64_t>(0, std::min<int64_t>(J, H - j0))) : 0;
  const int columns = int(std::max<int64_t>(0, std::min<int64_t>(Q, O - q0)));
  T* wt_slice = reinterpret_cast<T*>(smem);  // [columns][4H]
  T* wrt_slice = wt_slice + Q * 4 * H;       // [units][P]
  const int64_t weight_bytes = (Q * 4 * H + (P > 0 ? J * P : 0)) * int64_t(sizeof(T));
  float* tile = reinterpret_cast<float*>(smem + (weight_bytes + 15) / 16 * 16);
  float* out = tile + a.stage * 4 * H;

  const T* w_hh_t = static_cast<const T*>(a.w.w_hh_t);
  for (int64_t index = threadIdx.x; index < columns * 4 * H; index += blockDim.x)
    wt_slice[index] = w_hh_t[q0 * 4 * H + index];
  const T* w_hr_t = static_cast<const T*>(a.w.w_hr_t);
  for (int64_t index = threadIdx.x; index < units * P; index += blockDim.x) wrt_slice[index] = w_hr_t[j0 * P + index];
  __syncthreads();

  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t t = s.seq_len - 1; t >= 0; --t) {
    if (P > 0) {
      bwd_dh_step<T>(a, t, [&](int i) { return wt_slice + i * 4 * H; }, tile, out);
      grid.sync();
      bwd_gates_step<T>(a, t, [&](int i) { return wrt_slice + i * P; }, tile, out);
    } else {
      bwd_gates_step<T>(a, t, [&](int i) { return wt_slice + i * 4 * H; }, tile, out);
    }
    grid.sync();
  }
  bwd_dh_step<T>(a, -1, [&](int i) { return wt_slice + i * 4 * H; }, tile, out);
}

// ------------------------------------------------------------------ launchers

inline RecurrencePath requested_path(RecurrencePath path) {
  if (path != RecurrencePath::kAuto) return path;
  const char* env = std::getenv("FUSED_LSTM_CUDA_PATH");
  if (env && std::strcmp(env, "step") == 0) return RecurrencePath::kStep;
  if (env && std::strcmp(env, "persistent") == 0) return RecurrencePath::kPersistent;
  FUSED_LSTM_CHECK_ARG(!env || !*env || std::strcmp(env, "auto") == 0, "FUSED_LSTM_CUDA_PATH=", env,
                       " (expected step, persistent or auto)");
  return RecurrencePath::kAuto;
}

// Units per block of a step kernel: up to kStepUnits, fewer when that leaves
// SMs idle (about two blocks per SM). The result does not depend on it: every
// dot product is one warp's, in the same order, whatever the split.
inline int step_units(int64_t count) {
  const int64_t blocks_wanted = 2 * int64_t(device_limits().sm_count);
  return int(std::max<int64_t>(1, std::min<int64_t>(kStepUnits, ceil_div(count, blocks_wanted))));
}

// Warps a product of `rows` weight rows with a stage of `stage` batch rows keeps busy.
inline int product_warps(int64_t rows, int stage) { return int(ceil_div(rows, kRowsPerPass) * (stage / kBatchTile)); }

// A launch of `grid` blocks of one warp per product work item (`warps`), from
// kMinWarps up to kMaxThreads threads: at about one block per SM a block's
// warps are all the SM has to hide its loads' and shuffles' latency.
inline LaunchConfig base_config(int64_t grid, int64_t smem, void* stream, int64_t warps = kMinWarps) {
  const DeviceLimits limits = device_limits();
  FUSED_LSTM_CHECK_ARG(grid < (int64_t(1) << 31), "grid of ", grid, " blocks");
  FUSED_LSTM_CHECK_ARG(smem <= limits.shared_memory_per_block, "the step kernels need ", smem,
                       " bytes of shared memory per block; the device has ", limits.shared_memory_per_block,
                       " (hidden size too large)");
  LaunchConfig config;
  config.grid = unsigned(grid);
  const int64_t threads = 32 * std::max<int64_t>(kMinWarps, warps);
  config.block = unsigned(std::min<int64_t>({limits.block_threads, kMaxThreads, threads}));
  config.shared_memory = smem;
  config.stream = stream;
  config.registers_per_thread = kRegisterBudget;
  return config;
}

// The persistent launch: about one block per SM (every block stages all of
// h_{t-1} from L2 each step, so more blocks cost L2 bandwidth and barrier
// participants), with the fewest units per block whose slices fit in shared
// memory and whose grid can be co-resident, and the largest batch stage
// (stage_of(J, Q, budget), capped at kMaxStageRows, else one tile) that
// allows one. At one block an SM the stage's budget is the block's shared
// memory less its weight slices (smem_of(J, Q, 0)). smem_of(J, Q, stage)
// gives a block's shared memory, warps_of(J, Q, stage) its warps. Returns
// false if none.
template <class Kernel, class StageFn, class SmemFn, class WarpsFn>
bool plan_persistent(Kernel kernel, int64_t H, int64_t P, void* stream, StageFn stage_of, SmemFn smem_of,
                     WarpsFn warps_of, LaunchConfig& config, int& J, int& Q, int& stage) {
  const DeviceLimits limits = device_limits();
  for (const int cap : {kMaxStageRows, kBatchTile}) {
    for (int64_t units = std::max<int64_t>(1, ceil_div(H, limits.sm_count)); units <= H; ++units) {
      const int64_t blocks = ceil_div(H, units);
      if (units > 1 && ceil_div(H, units - 1) == blocks) continue;  // same grid, fewer units is better
      const int64_t proj = P > 0 ? ceil_div(P, blocks) : 0;
      const int64_t budget = limits.shared_memory_per_block - smem_of(int(units), int(proj), 0);
      const int rows = std::min(cap, stage_of(int(units), int(proj), budget));
      const int64_t smem = smem_of(int(units), int(proj), rows);
      if (smem > limits.shared_memory_per_block) break;  // grows with units: nothing larger fits
      LaunchConfig candidate = base_config(blocks, smem, stream, warps_of(int(units), int(proj), rows));
      candidate.cooperative = true;
      if (blocks > co_resident_blocks(kernel, candidate)) continue;
      config = candidate, J = int(units), Q = int(proj), stage = rows;
      return true;
    }
  }
  return false;
}

template <DType D> void launch_lstm_forward(const LstmFwdParams& p) {
  using T = storage_t<D>;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size;
  FwdArgs a{p, carve_forward_workspace(p, p.workspace), 0, 0, 0};
  if (s.batch_sizes)
    launch(lstm_row_offsets_kernel, base_config(1, 0, p.stream), s.batch_sizes, s.seq_len, a.w.row_offsets);

  const RecurrencePath path = requested_path(p.path);
  if (path != RecurrencePath::kStep) {
    LaunchConfig config;
    const bool fits = plan_persistent(
        lstm_fwd_persistent_kernel<T>, H, P, p.stream,
        [&](int J, int Q, int64_t budget) {
          return stage_rows_for(s.batch, std::max(O, H), std::max(4 * J, Q), budget);
        },
        [&](int J, int Q, int stage) { return fwd_persistent_smem<T>(s, J, Q, stage); },
        [&](int J, int Q, int stage) { return std::max(product_warps(4 * J, stage), product_warps(Q, stage)); },
        config, a.units, a.proj, a.stage);
    FUSED_LSTM_CHECK_ARG(fits || path == RecurrencePath::kAuto,
                         "the persistent forward does not fit on this device: hidden=", H, " proj_size=", P);
    if (fits) return launch(lstm_fwd_persistent_kernel<T>, config, a);
  }
  a.units = step_units(H);
  a.proj = P > 0 ? step_units(P) : 0;
  a.stage = stage_rows_for(s.batch, O, 4 * a.units, step_stage_budget());
  if (P > 0) a.stage = std::min(a.stage, stage_rows_for(s.batch, H, a.proj, step_stage_budget()));
  const LaunchConfig gates = base_config(ceil_div(H, a.units), stage_bytes(O, 4 * a.units, a.stage), p.stream,
                                         product_warps(4 * a.units, a.stage));
  LaunchConfig proj;
  if (P > 0)
    proj = base_config(ceil_div(P, a.proj), stage_bytes(H, a.proj, a.stage), p.stream, product_warps(a.proj, a.stage));
  for (int64_t t = 0; t < s.seq_len; ++t) {
    launch(lstm_fwd_step_kernel<T>, gates, a, t);
    if (P > 0) launch(lstm_fwd_proj_kernel<T>, proj, a, t);
  }
}

template <DType D> void launch_lstm_backward(const LstmBwdParams& p) {
  using T = storage_t<D>;
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size;
  BwdArgs a{p, carve_backward_workspace(p, p.workspace), 0, 0, 0};
  if (s.batch_sizes)
    launch(lstm_row_offsets_kernel, base_config(1, 0, p.stream), s.batch_sizes, s.seq_len, a.w.row_offsets);
  const auto transpose = [&](const void* in, int64_t R, int64_t C, void* out) {
    launch(lstm_transpose_kernel<T>, base_config(ceil_div(R, 32) * ceil_div(C, 32), 32 * 33 * sizeof(T), p.stream),
           static_cast<const T*>(in), R, C, static_cast<T*>(out));
  };
  transpose(p.w_hh, 4 * H, O, a.w.w_hh_t);
  if (P > 0) transpose(p.w_hr, P, H, a.w.w_hr_t);

  const RecurrencePath path = requested_path(p.path);
  if (path != RecurrencePath::kStep) {
    LaunchConfig config;
    // Without a projection a block's h_out columns are its hidden units (Q = J).
    const bool fits = plan_persistent(
        lstm_bwd_persistent_kernel<T>, H, P, p.stream,
        [&](int J, int Q, int64_t budget) {
          return stage_rows_for(s.batch, 4 * H, std::max(J, P > 0 ? Q : J), budget);
        },
        [&](int J, int Q, int stage) { return bwd_persistent_smem<T>(s, J, P > 0 ? Q : J, stage); },
        [&](int J, int Q, int stage) { return std::max(product_warps(J, stage), product_warps(P > 0 ? Q : J, stage)); },
        config, a.units, a.proj, a.stage);
    FUSED_LSTM_CHECK_ARG(fits || path == RecurrencePath::kAuto,
                         "the persistent backward does not fit on this device: hidden=", H, " proj_size=", P);
    if (fits) {
      if (P == 0) a.proj = a.units;
      return launch(lstm_bwd_persistent_kernel<T>, config, a);
    }
  }
  a.units = step_units(H);
  a.proj = P > 0 ? step_units(P) : a.units;
  // One stage size for both kernels (the dh kernel also runs for grad_h0).
  a.stage = std::min(stage_rows_for(s.batch, P > 0 ? P : 4 * H, a.units, step_stage_budget()),
                     stage_rows_for(s.batch, 4 * H, a.proj, step_stage_budget()));
  const LaunchConfig gates = base_config(ceil_div(H, a.units), stage_bytes(P > 0 ? P : 4 * H, a.units, a.stage),
                                         p.stream, product_warps(a.units, a.stage));
  const LaunchConfig dh =
      base_config(ceil_div(O, a.proj), stage_bytes(4 * H, a.proj, a.stage), p.stream, product_warps(a.proj, a.stage));
  for (int64_t t = s.seq_len - 1; t >= 0; --t) {
    if (P > 0) launch(lstm_bwd_dh_kernel<T>, dh, a, t);
    launch(lstm_bwd_step_kernel<T>, gates, a, t);
  }
  launch(lstm_bwd_dh_kernel<T>, dh, a, int64_t(-1));
}

}  // namespace fused_lstm::cuda
