// A persistent CPU thread team, the CPU twin of a persistent GPU kernel's
// grid: members run one job for a whole sequence, meeting at barriers.
// The members are torch's own OpenMP pool when that runtime is loaded
// (host_openmp.h: its workers are spinning right after torch's GEMM, so a
// second set of threads would fight them for the cores), else worker threads
// of our own, created once (grown on demand) and reused, the calling thread
// being member 0; they wait spin-then-sleep between runs.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace fused_lstm::cpu {

class ThreadTeam {
 public:
  using Job = void (*)(void* context, int member);

  // The process-wide team (a fresh one in a forked child).
  static ThreadTeam& instance();

  struct RunStats {
    // Share of the members' time spent waiting in barriers: near 1 when the
    // members did not run at the same time (more threads than free cores).
    double wait_fraction = 0;
  };

  // Runs job(context, m) for m in [0, members) concurrently, member 0 on the
  // calling thread, and returns when all have finished. Serialised: a second
  // caller (another Python thread) waits. Jobs must not throw.
  RunStats run(int members, Job job, void* context);

  // Whether runs may use torch's OpenMP pool (when loaded); else our threads.
  void set_use_openmp(bool use) { use_openmp_.store(use); }
  bool uses_openmp() const;

  // Inside a job: waits until every member of the current run arrives.
  // Spins first (steps are microseconds apart), then sleeps on a futex.
  void barrier();

  ~ThreadTeam();

 private:
  ThreadTeam() = default;
  void grow(int workers);
  void worker_loop(int member, unsigned seen);

  std::mutex run_mutex_;
  std::vector<std::thread> workers_;
  // A run is published by bumping run_generation_; workers with
  // member < members_ take part, then count themselves in done_.
  std::atomic<unsigned> run_generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int> done_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> use_openmp_{true};
  Job job_ = nullptr;
  void* context_ = nullptr;
  std::atomic<int> members_{1};
  // Barrier state, on its own cache line.
  alignas(64) std::atomic<int> arrived_{0};
  std::atomic<unsigned> barrier_generation_{0};
  std::atomic<int> barrier_sleepers_{0};
  std::atomic<uint64_t> wait_ticks_{0};  // members' barrier waits in this run (ticks(), thread_team.cpp)
};

}  // namespace fused_lstm::cpu
