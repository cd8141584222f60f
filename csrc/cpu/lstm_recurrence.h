// CPU recurrence of one LSTM layer and direction (float32 and float64), the
// sequential part of DESIGN.md's data flow. The caller has done the input GEMM
// (gates_x), or, with p.input_size > 0, the forward does it itself, each member
// for its own units a chunk of steps ahead; the caller does the weight-gradient
// GEMMs. Layouts: see params.h.
//
// A persistent thread team (p.num_threads members, torch.get_num_threads()
// from Python; fewer when a step is too small to share) runs the whole
// sequence; each member owns a slice of hidden units with its W_hh rows packed
// into SIMD panels (AVX-512, AVX2+FMA or portable, chosen at run time).
// Results are bit-identical across runs and team sizes.
#pragma once
#include <cstdint>
#include <string>

#include "../common/params.h"

namespace fused_lstm::cpu {

// Runs the whole sequence; saves for backward when p.saved_gates is set.
void lstm_forward(const LstmFwdParams& p);

// Backward through time: grad_gates for every step, grad_h0, grad_c0, and
// grad_h_out when there is a projection.
void lstm_backward(const LstmBwdParams& p);

// The instruction set the kernels use ("avx512", "avx2", "portable"), and a
// way to force one ("auto" = the best this CPU supports), for tests.
std::string cpu_isa();
void set_cpu_isa(const std::string& name);

// Team-size policy: at least this many multiply-adds per step per member
// (default 64Ki). Returns the previous value; 0 = always num_threads members,
// and no contention back-off (tests use it to run small shapes on several
// threads).
int64_t set_min_step_work(int64_t multiply_adds);

// Team engine: "openmp" (torch's OpenMP pool, when loaded; the default) or
// "threads" (our own std::thread workers). cpu_team() says which runs.
std::string cpu_team();
void set_cpu_team(const std::string& name);

}  // namespace fused_lstm::cpu
