// Workspace layouts of the CUDA recurrence, shared by the size query (host
// .cpp) and the launchers (.cuh). Carving from a null base gives the size.
#pragma once
#include <cstdint>

#include "../common/params.h"

namespace fused_lstm::cuda {

inline int64_t dtype_bytes(DType d) {
  return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : 2;
}

class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<unsigned char*>(base)) {}
  template <class T> T* take(int64_t count, int64_t element_bytes = sizeof(T)) {
    unsigned char* at = base_ ? base_ + offset_ : nullptr;
    offset_ += (count * element_bytes + 255) / 256 * 256;
    return reinterpret_cast<T*>(at);
  }
  int64_t bytes() const { return offset_; }

 private:
  unsigned char* base_;
  int64_t offset_ = 0;
};

struct ForwardWorkspace {
  float* h_state = nullptr;      // [2][N][H_out] h_out of the last two steps (ping-pong)
  float* c_state = nullptr;      // [N][H] c_t, updated in place by the thread that owns (n, j)
  float* h_cell = nullptr;       // [N][H] o*tanh(c_t) before the projection; only if P > 0
  int64_t* row_offsets = nullptr;  // [T+1] first row of each step; only when packed
  int64_t bytes = 0;
};

inline ForwardWorkspace carve_forward_workspace(const LstmFwdParams& p, void* base) {
  const LstmSizes& s = p.sizes;
  WorkspaceCarver carver(base);
  ForwardWorkspace w;
  w.h_state = carver.take<float>(2 * s.batch * s.out_size());
  w.c_state = carver.take<float>(s.batch * s.hidden);
  if (s.proj_size > 0) w.h_cell = carver.take<float>(s.batch * s.hidden);
  if (s.batch_sizes) w.row_offsets = carver.take<int64_t>(s.seq_len + 1);
  w.bytes = carver.bytes();
  return w;
}

struct BackwardWorkspace {
  float* dgates = nullptr;       // [2][N][4H] dL/d pre-activation gates of the last two steps
  float* dc_state = nullptr;     // [N][H] dL/dc carried back through time
  float* dh_out = nullptr;       // [N][P] total dL/dh_out_t; only if P > 0
  void* w_hh_t = nullptr;        // [H_out][4H] W_hh transposed, storage dtype
  void* w_hr_t = nullptr;        // [H][P] W_hr transposed; only if P > 0
  int64_t* row_offsets = nullptr;  // [T+1]; only when packed
  int64_t bytes = 0;
};

inline BackwardWorkspace carve_backward_workspace(const LstmBwdParams& p, void* base) {
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, O = s.out_size(), P = s.proj_size, N = s.batch, e = dtype_bytes(p.dtype);
  WorkspaceCarver carver(base);
  BackwardWorkspace w;
  w.dgates = carver.take<float>(2 * N * 4 * H);
  w.dc_state = carver.take<float>(N * H);
  if (P > 0) w.dh_out = carver.take<float>(N * P);
  w.w_hh_t = carver.take<unsigned char>(O * 4 * H, e);
  if (P > 0) w.w_hr_t = carver.take<unsigned char>(H * P, e);
  if (s.batch_sizes) w.row_offsets = carver.take<int64_t>(s.seq_len + 1);
  w.bytes = carver.bytes();
  return w;
}

}  // namespace fused_lstm::cuda
