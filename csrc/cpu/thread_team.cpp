#include "thread_team.h"

#include "host_openmp.h"

#include <chrono>
#include <memory>

#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fused_lstm::cpu {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// A cheap timestamp for the wait accounting, which only uses ratios: the TSC
// where there is one (~10 ns; steady_clock::now() costs ~25 ns, and a barrier
// wait took three of them, a tenth of a short step).
inline uint64_t ticks() {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

// Waits while value == old: spins with pause for spin_us microseconds, then
// spins with sched_yield for yield_us (a partner descheduled on a busy
// machine, or torch's OpenMP threads still spinning after a GEMM, get the
// core), then sleeps on the atomic. sleepers counts threads (possibly)
// asleep, so that wakers only pay for a futex call when someone sleeps
// (seq_cst on both sides: a waker that saw no sleeper stored the new value
// before the sleeper re-checked it).
void wait_while_equal(const std::atomic<unsigned>& value, unsigned old, std::atomic<int>& sleepers,
                      int spin_us, int yield_us) {
  using clock = std::chrono::steady_clock;
  clock::time_point spin_end;  // read the clock only once the wait is not short
  for (int i = 0;; ++i) {
    if (value.load(std::memory_order_acquire) != old) return;
    cpu_relax();
    if ((i & 63) == 63) {
      const auto now = clock::now();
      if (i == 63)
        spin_end = now + std::chrono::microseconds(spin_us);
      else if (now > spin_end)
        break;
    }
  }
  const auto yield_end = clock::now() + std::chrono::microseconds(yield_us);
  while (clock::now() < yield_end) {
    if (value.load(std::memory_order_acquire) != old) return;
    std::this_thread::yield();
  }
  sleepers.fetch_add(1);
  while (value.load() == old) value.wait(old);
  sleepers.fetch_sub(1);
}

void wake(std::atomic<unsigned>& value, std::atomic<int>& sleepers) {
  if (sleepers.load() > 0) value.notify_all();
}

// Steps of a recurrence are 1 us .. 1 ms apart. A member late by more than
// the pause-spin is usually descheduled (a busy machine): yielding lets it
// run if it shares this core. Idle workers give their core back to torch soon.
constexpr int kBarrierSpinUs = 50, kBarrierYieldUs = 1000;
constexpr int kIdleSpinUs = 50, kIdleYieldUs = 0;

}  // namespace

ThreadTeam& ThreadTeam::instance() {
  // After fork() the workers are gone from the child: leave the parent's team
  // (never destroyed there) and start a new one.
  static pid_t owner = 0;
  static ThreadTeam* team = nullptr;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (team == nullptr || owner != getpid()) {
    team = new ThreadTeam();  // lives for the process: workers may outlive static destructors
    owner = getpid();
  }
  return *team;
}

ThreadTeam::~ThreadTeam() {
  stopping_.store(true);
  run_generation_.fetch_add(1);
  run_generation_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadTeam::grow(int workers) {
  while (static_cast<int>(workers_.size()) < workers) {
    const int member = static_cast<int>(workers_.size()) + 1;
    // The generation before this run's bump, so a late-starting worker still sees the run.
    const unsigned seen = run_generation_.load();
    workers_.emplace_back([this, member, seen] { worker_loop(member, seen); });
  }
}

void ThreadTeam::worker_loop(int member, unsigned seen) {
  for (;;) {
    wait_while_equal(run_generation_, seen, sleepers_, kIdleSpinUs, kIdleYieldUs);
    seen = run_generation_.load(std::memory_order_acquire);
    if (stopping_.load()) return;
    if (member < members_.load(std::memory_order_relaxed)) {
      job_(context_, member);
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }
}

namespace {
struct OpenMPRun {
  ThreadTeam::Job job;
  void* context;
  int members;
  int (*thread_num)();
  int (*num_threads)();
  std::atomic<bool> wrong_size{false};
};
void openmp_member(void* data) {
  OpenMPRun& run = *static_cast<OpenMPRun*>(data);
  // All or nothing: a team of another size (nested, limited) runs no member.
  if (run.num_threads() != run.members) {
    run.wrong_size.store(true);
    return;
  }
  run.job(run.context, run.thread_num());
}
}  // namespace

ThreadTeam::RunStats ThreadTeam::run(int members, Job job, void* context) {
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (members <= 1) {
    job(context, 0);
    return {};
  }
  members_.store(members, std::memory_order_relaxed);
  arrived_.store(0);
  wait_ticks_.store(0);
  const uint64_t start = ticks();
  const HostOpenMP& omp = host_openmp();
  bool ran = false;
  if (use_openmp_.load() && omp.available() && !omp.in_parallel()) {
    OpenMPRun openmp{job, context, members, omp.thread_num, omp.num_threads};
    omp.parallel(openmp_member, &openmp, static_cast<unsigned>(members), 0);
    ran = !openmp.wrong_size.load();
  }
  if (!ran) {
    grow(members - 1);
    job_ = job;
    context_ = context;
    done_.store(0);
    run_generation_.fetch_add(1);  // seq_cst: publishes job_, context_, members_
    wake(run_generation_, sleepers_);
    job(context, 0);
    for (int i = 0; done_.load(std::memory_order_acquire) != members - 1; ++i)
      if (i < 4096) cpu_relax(); else std::this_thread::yield();
  }
  members_.store(1, std::memory_order_relaxed);
  const double wall = static_cast<double>(ticks() - start);
  return {wall > 0 ? static_cast<double>(wait_ticks_.load()) / (members * wall) : 0.0};
}

bool ThreadTeam::uses_openmp() const { return use_openmp_.load() && host_openmp().available(); }

void ThreadTeam::barrier() {
  const int members = members_.load(std::memory_order_relaxed);
  if (members <= 1) return;
  const unsigned generation = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == members - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.fetch_add(1);  // seq_cst, releases everyone's writes
    wake(barrier_generation_, barrier_sleepers_);
  } else {
    const uint64_t start = ticks();
    wait_while_equal(barrier_generation_, generation, barrier_sleepers_, kBarrierSpinUs, kBarrierYieldUs);
    wait_ticks_.fetch_add(ticks() - start, std::memory_order_relaxed);
  }
}

}  // namespace fused_lstm::cpu
