// torch's own OpenMP runtime, when the process has one loaded: its thread
// pool is the one that just ran the input GEMM and whose workers spin-wait
// for a few milliseconds afterwards. A separate std::thread team would fight
// those spinning workers for the cores (measured on a 2-core machine: a
// recurrence started right after a GEMM ran ~7x slower); handing our team's
// job to the same pool does not. Found with dl_iterate_phdr and
// dlopen(RTLD_NOLOAD), so no OpenMP runtime is ever loaded by us.
#pragma once

namespace fused_lstm::cpu {

struct HostOpenMP {
  void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) = nullptr;  // GOMP_parallel
  int (*thread_num)() = nullptr;   // omp_get_thread_num
  int (*num_threads)() = nullptr;  // omp_get_num_threads
  int (*in_parallel)() = nullptr;  // omp_in_parallel
  bool available() const { return parallel && thread_num && num_threads && in_parallel; }
};

// The loaded runtime (libgomp, libiomp5 or libomp), looked up once; empty
// when none is loaded or FUSED_LSTM_CPU_TEAM=threads.
const HostOpenMP& host_openmp();

}  // namespace fused_lstm::cpu
