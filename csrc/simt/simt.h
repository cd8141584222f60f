// simt: runs CUDA kernel sources on the CPU, for tests on machines with no GPU.
//
// One OS thread per CUDA thread (small stacks). __syncthreads is a barrier per
// block, __shfl_*_sync/__syncwarp go through a per-warp exchange, grid.sync()
// (cooperative_groups.h shim) is a barrier over the whole grid. Dynamic shared
// memory is per-block storage reached through FUSED_LSTM_DYNAMIC_SMEM. Every
// barrier wait has a time-out that raises simt::Error instead of hanging, and
// a thread that throws aborts the whole launch.
//
// Launches go through simt::launch (called by the kernels' launch() wrapper,
// csrc/cuda/launch.cuh), which enforces what a GPU would: threads per block,
// shared memory per block, and for cooperative launches a grid no larger than
// the blocks that can be co-resident on the modelled device.
//
// Blind spots: the GPU memory model (everything here is sequentially
// consistent through the barriers' mutexes), timing, register pressure.
#pragma once
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace simt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The device the launches are checked against. Defaults to an H100 SXM.
struct DeviceModel {
  int sm_count = 132;
  int64_t shared_memory_per_sm = 228 * 1024;
  int64_t shared_memory_per_block = 227 * 1024;  // opt-in maximum
  int registers_per_sm = 64 * 1024;
  int max_threads_per_sm = 2048;
  int max_blocks_per_sm = 32;
  int block_threads = 128;  // threads per block the launchers should use (small in tests)
  // Run every block of a normal launch at once too (as a big GPU would), so
  // ThreadSanitizer also sees races between blocks of one launch.
  bool concurrent_blocks = false;
};

inline DeviceModel& device_model() {
  static DeviceModel model;
  return model;
}

// Blocks of one kernel that fit on one SM, from its registers per thread
// (ptxas' number, or the budget the launcher asserts), threads and shared memory.
inline int blocks_per_sm(const DeviceModel& d, int registers_per_thread, int threads, int64_t smem) {
  const int warps = (threads + 31) / 32;
  // Registers are allocated per warp in units of 256.
  const int regs_per_warp = ((registers_per_thread * 32 + 255) / 256) * 256;
  int blocks = std::min(d.max_blocks_per_sm, d.max_threads_per_sm / (warps * 32));
  if (regs_per_warp > 0) blocks = std::min(blocks, d.registers_per_sm / (regs_per_warp * warps));
  if (smem > 0) blocks = std::min<int64_t>(blocks, d.shared_memory_per_sm / (smem + 1024));  // 1 KB reserved per block
  return std::max(blocks, 0);
}

inline std::chrono::milliseconds barrier_timeout() {
  const char* env = std::getenv("SIMT_BARRIER_TIMEOUT_MS");
  return std::chrono::milliseconds(env ? std::atoll(env) : 60000);
}

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

// Shared by every thread of one launch: abort flag and first error.
struct LaunchState {
  std::atomic<bool> aborted{false};
  std::mutex mutex;
  std::string error;
  void fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mutex);
    if (error.empty()) error = message;
    aborted = true;
  }
};

struct Aborted {};  // thrown in threads after another thread failed

// A reusable barrier with a time-out: generation counting under a mutex, so
// ThreadSanitizer sees the happens-before edges a real barrier gives.
class Barrier {
 public:
  Barrier(int count, const char* what, LaunchState* launch) : count_(count), what_(what), launch_(launch) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + barrier_timeout();
    while (generation_ == generation) {
      if (launch_->aborted) throw Aborted{};
      if (cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50))) ==
              std::cv_status::timeout &&
          std::chrono::steady_clock::now() >= deadline) {
        throw Error(std::string("simt: ") + what_ + " timed out: " + std::to_string(arrived_) + " of " +
                    std::to_string(count_) + " threads arrived (a missing or divergent barrier?)");
      }
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, arrived_ = 0;
  uint64_t generation_ = 0;
  const char* what_;
  LaunchState* launch_;
};

struct Warp {
  Warp(int size, LaunchState* launch) : size(size), barrier(size, "__syncwarp/__shfl", launch) {}
  int size;
  Barrier barrier;
  uint64_t slots[32] = {};
};

struct Block {
  Block(int threads, int64_t smem, LaunchState* launch)
      : barrier(threads, "__syncthreads", launch), shared(new (std::align_val_t(64)) unsigned char[smem > 0 ? smem : 1]) {
    for (int w = 0; w * 32 < threads; ++w) warps.emplace_back(new Warp(std::min(32, threads - w * 32), launch));
    // Fresh shared memory is garbage on a GPU; make reading it before writing visible.
    std::memset(shared.get(), 0xA5, smem > 0 ? smem : 1);
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::unique_ptr<unsigned char[]> shared;
};

struct ThreadContext {
  uint3 thread_idx, block_idx, block_dim, grid_dim;
  Block* block = nullptr;
  Barrier* grid_barrier = nullptr;  // cooperative launches only
};

inline ThreadContext& this_thread() {
  static thread_local ThreadContext context;
  return context;
}

inline unsigned char* dynamic_shared_memory() { return this_thread().block->shared.get(); }

inline void syncthreads() { this_thread().block->barrier.arrive_and_wait(); }

inline Warp& this_warp() { return *this_thread().block->warps[this_thread().thread_idx.x / 32]; }

inline void syncwarp() { this_warp().barrier.arrive_and_wait(); }

// Every lane of the warp publishes its value, then reads its source lane's.
template <class T>
T shuffle(T value, int source_lane) {
  static_assert(sizeof(T) <= 8, "simt shuffles 8-byte values at most");
  Warp& warp = this_warp();
  const int lane = this_thread().thread_idx.x % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  warp.slots[lane] = bits;
  warp.barrier.arrive_and_wait();
  if (source_lane < 0 || source_lane >= warp.size) source_lane = lane;  // out of range: own value, as on a GPU
  bits = warp.slots[source_lane];
  warp.barrier.arrive_and_wait();  // nobody overwrites a slot before all have read
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

inline void grid_sync() {
  Barrier* barrier = this_thread().grid_barrier;
  if (barrier == nullptr) throw Error("simt: grid.sync() in a kernel that was not launched cooperatively");
  barrier->arrive_and_wait();
}

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  Dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct LaunchConfig {
  Dim3 grid, block;
  int64_t shared_memory = 0;
  bool cooperative = false;
  int registers_per_thread = 0;  // the launcher's budget, for the co-residency check
};

namespace detail {
struct ThreadStart {
  ThreadContext context;
  LaunchState* launch;
  const std::function<void()>* body;
};

inline void* thread_main(void* arg) {
  ThreadStart* start = static_cast<ThreadStart*>(arg);
  this_thread() = start->context;
  try {
    (*start->body)();
  } catch (const Aborted&) {
  } catch (const std::exception& e) {
    start->launch->fail(e.what());
  } catch (...) {
    start->launch->fail("simt: unknown exception in a kernel thread");
  }
  return nullptr;
}
}  // namespace detail

// Runs kernel(args...) for every thread of the grid. Blocks of a normal launch
// run one after another (as a GPU may schedule them) unless the device model
// asks for concurrent blocks; a cooperative launch runs all blocks at once.
template <class Kernel, class... Args>
void launch(const LaunchConfig& config, Kernel kernel, Args... args) {
  const DeviceModel& device = device_model();
  const int64_t threads = int64_t(config.block.x) * config.block.y * config.block.z;
  const int64_t blocks = int64_t(config.grid.x) * config.grid.y * config.grid.z;
  if (config.block.y != 1 || config.block.z != 1 || config.grid.y != 1 || config.grid.z != 1)
    throw Error("simt: only 1-D grids and blocks are modelled");
  if (threads < 1 || threads > 1024)
    throw Error("simt: " + std::to_string(threads) + " threads per block (the limit is 1024)");
  if (blocks < 1) throw Error("simt: empty grid");
  if (config.shared_memory > device.shared_memory_per_block)
    throw Error("simt: " + std::to_string(config.shared_memory) + " bytes of shared memory per block (the limit is " +
                std::to_string(device.shared_memory_per_block) + ")");
  if (config.cooperative) {
    const int per_sm = blocks_per_sm(device, config.registers_per_thread, int(threads), config.shared_memory);
    if (blocks > int64_t(per_sm) * device.sm_count)
      throw Error("simt: cooperative grid of " + std::to_string(blocks) + " blocks exceeds the " +
                  std::to_string(per_sm * device.sm_count) + " co-resident blocks of the device (" +
                  std::to_string(device.sm_count) + " SMs x " + std::to_string(per_sm) + ")");
  }

  LaunchState state;
  const std::function<void()> body = [&] { kernel(args...); };
  const int64_t blocks_at_once = config.cooperative || device.concurrent_blocks ? blocks : 1;
  std::unique_ptr<Barrier> grid_barrier;
  if (config.cooperative) grid_barrier.reset(new Barrier(int(blocks * threads), "grid.sync()", &state));

  for (int64_t first = 0; first < blocks && !state.aborted; first += blocks_at_once) {
    std::vector<std::unique_ptr<Block>> resident;
    std::vector<detail::ThreadStart> starts(size_t(blocks_at_once * threads));
    std::vector<pthread_t> handles;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int64_t b = 0; b < blocks_at_once; ++b) {
      resident.emplace_back(new Block(int(threads), config.shared_memory, &state));
      for (int64_t t = 0; t < threads; ++t) {
        detail::ThreadStart& start = starts[size_t(b * threads + t)];
        start.context.thread_idx = {unsigned(t), 0, 0};
        start.context.block_idx = {unsigned(first + b), 0, 0};
        start.context.block_dim = {unsigned(threads), 1, 1};
        start.context.grid_dim = {unsigned(blocks), 1, 1};
        start.context.block = resident.back().get();
        start.context.grid_barrier = grid_barrier.get();
        start.launch = &state;
        start.body = &body;
        pthread_t handle;
        if (pthread_create(&handle, &attr, detail::thread_main, &start) != 0) {
          state.fail("simt: could not start a thread (too many threads for this machine?)");
          break;
        }
        handles.push_back(handle);
      }
    }
    pthread_attr_destroy(&attr);
    for (pthread_t handle : handles) pthread_join(handle, nullptr);
  }
  if (state.aborted) throw Error(state.error);
}

}  // namespace simt
