// Self-test of the simt shim, built and run by tests/test_simt_shim.py: the
// CUDA primitives behave as on a GPU, and what a GPU would refuse (or hang on)
// raises a clear error. Prints one line per check; exit status 0 if all pass.
#include <cstdio>
#include <string>
#include <vector>

#include "../cuda/launch.cuh"

using namespace fused_lstm::cuda;

__global__ void warp_reduce_kernel(int* out) {
  int value = int(threadIdx.x), down = int(threadIdx.x);
  for (int mask = 16; mask > 0; mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, mask);
  for (int delta = 16; delta > 0; delta /= 2) down += __shfl_down_sync(0xffffffffu, down, delta);
  const int broadcast = __shfl_sync(0xffffffffu, int(threadIdx.x) * 10, 3);
  out[blockIdx.x * blockDim.x + threadIdx.x] = value * 1000000 + (threadIdx.x % 32 == 0 ? down : 0) * 1000 + broadcast;
}

__global__ void reverse_kernel(const float* in, float* out) {
  FUSED_LSTM_DYNAMIC_SMEM(smem);
  float* buffer = reinterpret_cast<float*>(smem);
  const int base = int(blockIdx.x * blockDim.x);
  buffer[threadIdx.x] = in[base + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

__global__ void grid_sync_kernel(int* data, int* out) {
  data[blockIdx.x * blockDim.x + threadIdx.x] = int(blockIdx.x) + 1;
  cooperative_groups::this_grid().sync();
  const int neighbour = int((blockIdx.x + 1) % gridDim.x);
  out[blockIdx.x * blockDim.x + threadIdx.x] = data[neighbour * blockDim.x + threadIdx.x];
}

__global__ void atomic_kernel(int* counter) { atomicAdd(counter, 1); }

__global__ void missing_barrier_kernel() {
  if (threadIdx.x != 0) __syncthreads();  // thread 0 never arrives: a GPU would hang
}

__global__ void noop_kernel() {}

__global__ void grid_sync_uncooperative_kernel() { cooperative_groups::this_grid().sync(); }

static int failures = 0;

static void report(const char* name, bool ok, const std::string& detail = "") {
  std::printf("%s %s %s\n", ok ? "ok" : "FAIL", name, detail.c_str());
  failures += !ok;
}

template <class Fn>
static void expect_error(const char* name, const char* needle, Fn fn) {
  try {
    fn();
    report(name, false, "no error");
  } catch (const fused_lstm::Error& e) {
    report(name, std::string(e.what()).find(needle) != std::string::npos, e.what());
  }
}

static LaunchConfig config(unsigned grid, unsigned block, int64_t smem = 0, bool cooperative = false) {
  LaunchConfig c;
  c.grid = grid, c.block = block, c.shared_memory = smem, c.cooperative = cooperative, c.registers_per_thread = 32;
  return c;
}

int main() {
  {
    std::vector<int> out(2 * 64);
    launch(warp_reduce_kernel, config(2, 64), out.data());
    bool ok = true;
    for (int i = 0; i < 128; ++i) {
      const int t = i % 64, warp_base = (t / 32) * 32;
      const int sum = 32 * warp_base + 496, broadcast = (warp_base + 3) * 10;
      ok &= out[i] == sum * 1000000 + (t % 32 == 0 ? sum : 0) * 1000 + broadcast;
    }
    report("shuffles", ok);
  }
  {
    std::vector<float> in(3 * 96), out(3 * 96);
    for (size_t i = 0; i < in.size(); ++i) in[i] = float(i);
    launch(reverse_kernel, config(3, 96, 96 * sizeof(float)), static_cast<const float*>(in.data()), out.data());
    bool ok = true;
    for (int i = 0; i < 3 * 96; ++i) ok &= out[i] == in[(i / 96) * 96 + 95 - i % 96];
    report("syncthreads_and_dynamic_smem", ok);
  }
  {
    std::vector<int> data(4 * 32), out(4 * 32);
    launch(grid_sync_kernel, config(4, 32, 0, true), data.data(), out.data());
    bool ok = true;
    for (int i = 0; i < 4 * 32; ++i) ok &= out[i] == (i / 32 + 1) % 4 + 1;
    report("grid_sync", ok);
  }
  {
    int counter = 0;
    launch(atomic_kernel, config(3, 64), &counter);
    report("atomic_add", counter == 192, std::to_string(counter));
  }
  expect_error("threads_per_block_limit", "1025 threads per block", [] { launch(noop_kernel, config(1, 1025)); });
  expect_error("shared_memory_limit", "bytes of shared memory per block",
               [] { launch(noop_kernel, config(1, 32, 228 * 1024)); });
  expect_error("cooperative_grid_limit", "co-resident",
               [] { launch(grid_sync_uncooperative_kernel, config(132 * 16 + 1, 128, 0, true)); });
  expect_error("grid_sync_needs_cooperative", "not launched cooperatively",
               [] { launch(grid_sync_uncooperative_kernel, config(2, 32)); });
  expect_error("barrier_timeout", "__syncthreads timed out", [] { launch(missing_barrier_kernel, config(1, 64)); });
  return failures == 0 ? 0 : 1;
}
