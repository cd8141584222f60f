// CPU recurrence dispatch: checks, ISA choice (at run time), team size,
// workspace, then one run of the persistent thread team for the whole
// sequence. The kernels are in forward.h / backward.h, instantiated per ISA
// in isa_*.cpp; the team is thread_team.h.
#include "lstm_recurrence.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unistd.h>
#include <utility>
#if FUSED_LSTM_CPU_X86
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#endif

#include "../common/check.h"
#include "../common/params_check.h"
#include "recurrence_plan.h"
#include "thread_team.h"

namespace fused_lstm::cpu {
namespace {

// A team member costs a barrier per step (~0.2 us across cores, OpenMP
// workers spinning); below this many multiply-adds per step and member, fewer
// members are faster. Measured: N=1, H=64 (16K per step) runs ~1.4x faster
// on two members than on one (W_hh then fits each core's L1 and L2 halves).
int64_t min_step_work_per_member = 8 * 1024;

std::mutex dispatch_mutex;  // guards the workspace and the ISA override
std::string isa_override = "auto";

#if FUSED_LSTM_CPU_X86
// Whether this process may run AMX-BF16 tiles: the CPU has them (and
// AVX512-BW, which the operand splitting uses), the OS saves their state
// (XCR0 bits 17, 18), and Linux grants this process the tile data
// (arch_prctl, once per process; torch's oneDNN asks for the same).
bool amx_usable() {
  static const bool usable = [] {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool avx512bw = ebx & (1u << 30), amx_bf16 = edx & (1u << 22), amx_tile = edx & (1u << 24);
    const bool osxsave = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 27));
    if (!(avx512bw && amx_bf16 && amx_tile && osxsave)) return false;
    unsigned xcr0_low, xcr0_high;
    __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    if ((xcr0_low & (3u << 17)) != (3u << 17)) return false;
#if defined(__linux__)
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
#endif

const IsaKernels* kernels_named(const std::string& name) {
#if FUSED_LSTM_CPU_X86
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if ((name == "auto" || name == "avx512_amx") && avx512 && amx_usable()) return &avx512_amx_kernels();
  if ((name == "auto" || name == "avx512") && avx512) return &avx512_kernels();
  if ((name == "auto" || name == "avx2") && avx2) return &avx2_kernels();
#endif
  if (name == "auto" || name == "portable") return &portable_kernels();
  return nullptr;
}

// One growing, 64-byte aligned buffer, reused across calls so its pages stay
// mapped (and often cached).
class Workspace {
 public:
  void reset() { used_ = 0; }
  // Reserves values of T; layout only, memory comes in commit().
  template <class T> size_t reserve(int64_t values) {
    const size_t offset = used_;
    used_ += (static_cast<size_t>(values) * sizeof(T) + 63) / 64 * 64;
    return offset;
  }
  char* commit() {
    if (used_ > capacity_) {
      data_.reset(static_cast<char*>(std::aligned_alloc(64, used_)));
      FUSED_LSTM_CHECK(data_ != nullptr, "workspace of ", used_, " bytes");
      capacity_ = used_;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> data_;
  size_t used_ = 0, capacity_ = 0;
};
Workspace workspace;

// Contention back-off: when the members of two team runs in a row spent most
// of them waiting for each other (another process holds the cores, so they
// took turns), run on the calling thread alone for a while, then try again;
// each retry that finds the cores still taken doubles the solo period.
// Results are bit-identical whatever the team size.
constexpr double kContendedWaitFraction = 0.6;
constexpr auto kMinSoloPeriod = std::chrono::milliseconds(100);
constexpr auto kMaxSoloPeriod = std::chrono::milliseconds(3200);
std::chrono::steady_clock::time_point solo_until{};
std::chrono::milliseconds solo_period = kMinSoloPeriod;
int contended_runs = 0;  // consecutive team runs

int team_size(int requested, int64_t step_work, int64_t unit_blocks) {
  if (min_step_work_per_member > 0 && std::chrono::steady_clock::now() < solo_until) return 1;
  int members = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  members = static_cast<int>(std::min<int64_t>(members, unit_blocks));
  const int64_t by_work = min_step_work_per_member > 0 ? step_work / min_step_work_per_member : members;
  members = static_cast<int>(std::min<int64_t>(members, std::max<int64_t>(1, by_work)));
  return std::max(members, 1);
}

struct Job {
  RecurrencePlan plan;
  MemberFn member_fn;
};
void run_member(void* context, int member) {
  const Job& job = *static_cast<const Job*>(context);
  job.member_fn(job.plan, member);
}

void run_job(const RecurrencePlan& plan, MemberFn fn) {
  Job job{plan, fn};
  const ThreadTeam::RunStats stats = plan.team->run(plan.members, run_member, &job);
  if (plan.members == 1) return;  // a solo run says nothing about contention
  if (stats.wait_fraction <= kContendedWaitFraction) {
    contended_runs = 0;
    solo_period = kMinSoloPeriod;
  } else if (++contended_runs >= 2) {
    solo_until = std::chrono::steady_clock::now() + solo_period;
    solo_period = std::min(2 * solo_period, kMaxSoloPeriod);
    contended_runs = 0;
  }
}

// Blocks, team size and scratch sizes, common to forward and backward.
// gate_math_only (params.h): no product, so a step's work is counted as one
// multiply-add per gate value, and a team forms only from N * 4H = 16K (a
// cell's GEMM step at N=1 H=256, inference: ~45 us on two members, ~41 on one).
RecurrencePlan sized_plan(const LstmSizes& s, int num_threads, int64_t width, bool gate_math_only) {
  RecurrencePlan plan;
  plan.width = width;
  plan.unit_blocks = (s.hidden + width - 1) / width;
  plan.out_blocks = (s.out_size() + width - 1) / width;
  const int64_t step_work = s.batch * 4 * s.hidden * (gate_math_only ? 1 : s.out_size());
  plan.members = team_size(num_threads, step_work, plan.unit_blocks);
  plan.partial_values = s.batch * 8 * width;  // panel_product: rows * (<= 8 vectors)
  plan.team = &ThreadTeam::instance();
  workspace.reset();
  return plan;
}

// The most unit blocks one member owns (owned_blocks, forward.h, splits
// them as evenly as can be): what sizes a member's share of a buffer.
int64_t unit_blocks_per_member(const RecurrencePlan& plan) {
  return (plan.unit_blocks + plan.members - 1) / plan.members;
}

// The unit blocks a member's share reads: its own, or (batch slices) all.
int64_t blocks_read_per_member(const RecurrencePlan& plan) {
  return plan.batch_slices > 1 ? plan.unit_blocks : unit_blocks_per_member(plan);
}

// Steps per input-projection chunk: enough rows for the panel kernel to run
// near its peak, few enough that a member's gates_chunk stays in its L2.
// (32 to 256 rows measured within 1% of each other at N=8/16, H=128.)
constexpr int64_t kChunkTargetRows = 256;
constexpr int64_t kChunkBytesPerMember = 256 * 1024;

// Folding the projection into the recurrent product (forward.h fold_step)
// re-reads the W_ih panels every kFoldRows steps: a gain while they stay in
// cache beside the W_hh panels read every step. Measured on Zen 4 (1 MiB L2
// a core, 32 MiB L3, two members), N=1: a member's slices in its L2
// (T=1000 H=256, 1 MiB) or the layer's weights in half the L3 (H=512,
// 8 MiB) 5-15% faster than projecting chunks; I=1024 H=256, H=384,
// I=1024 H=512 (5-12 MiB) about even; H=1024 (32 MiB) ~50% slower.
int64_t l2_bytes() {
  static const int64_t bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return reported > 0 ? static_cast<int64_t>(reported) : int64_t(1) << 20;
  }();
  return bytes;
}

// The L3 as Linux's sysfs gives it (cpu0's index3), 0 where unknown. Not
// sysconf(_SC_LEVEL3_CACHE_SIZE): glibc derives that from cpuid, and on this
// Zen 4 VM it says 320 MiB for a 32 MiB L3.
int64_t l3_bytes() {
  static const int64_t bytes = [] {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index3/";
    int level = 0;
    std::ifstream(dir + "level") >> level;
    std::ifstream size_file(dir + "size");
    int64_t size = 0;
    char unit = 0;
    if (level != 3 || !(size_file >> size)) return int64_t(0);
    if (size_file >> unit) size <<= unit == 'K' ? 10 : unit == 'M' ? 20 : 0;
    return size;
  }();
  return bytes;
}

// Bytes of `blocks` unit blocks' gate panels (4 gates x width) with `depth` values each.
template <class T> int64_t gate_panel_bytes(const RecurrencePlan& plan, int64_t blocks, int64_t depth) {
  return blocks * 4 * plan.width * depth * int64_t(sizeof(T));
}

// Whether a member's panels of weights with `depth` columns (W_ih's and
// W_hh's, added) stay in its L2 from one step to the next.
template <class T> bool member_panels_in_l2(const RecurrencePlan& plan, int64_t depth) {
  return gate_panel_bytes<T>(plan, blocks_read_per_member(plan), depth) <= l2_bytes();
}

// The backward in batch slices (backward.h slice_share) instead of the
// unit partition, for a team of two, with at least kMinSliceRows rows a
// slice and kMinSliceSteps steps, where every panel a slice reads (W_hh's,
// and W_ih's with the weight gradients inside) fits in half an L2: no step
// then waits at a barrier, and no grad_gates row crosses to the other core.
// Measured on the 2-core Sapphire Rapids VM, training steps alternating
// builds, T=100: H=128 N=8 -4 to -14%, N=16 -6 to -8% (the backward -16%:
// dh product 0.90 -> 0.66 ms, gate backward 0.48 -> 0.37, barrier waits
// 0.15 -> 0); H=64 N=8 -12 to -16%, N=4 -5%; but H=128 N=4 +7 to +11% and
// N=6 +5 to +7% (2 or 3 rows a slice, for which every step streams all the
// panels from L2); H=256 (2 MiB of panels) within the noise. Each call also
// pays a fixed ~60-70 us at H=128 (the weight gradients' second half zeroed
// and added in, each member reading the panels the other packed): N=16
// T=8 +5 to +15%, T=16 about even, T=32 -2 to -9%, FusedLSTMCell's step at
// N=8 290 -> 360 us. The forward keeps the unit partition: in slices (each
// member streaming all of W_hh for half the rows) it measured ~10% slower
// at N=8 and N=16.
// Where the sizes allow slices, the weight gradients sum over the batch's
// halves on any team (weight_grads.h), so the bits do not depend on whether
// the team has two members; elsewhere (T=50 N=64 H=512: 8 MiB more to zero
// and add) one chain. The panels counted are W_hh's and, with the weight
// gradients inside, W_ih's whichever of them are asked for (the same bits
// for each output alone).
constexpr int64_t kMinSliceRows = 4;
constexpr int64_t kMinSliceSteps = 32;
template <class T> void plan_batch_slices(const LstmBwdParams& p, RecurrencePlan& plan) {
  const LstmSizes& s = p.sizes;
  if (p.gate_math_only() || s.batch < 2 * kMinSliceRows || s.seq_len < kMinSliceSteps ||
      gate_panel_bytes<T>(plan, plan.unit_blocks, p.input_size + s.out_size()) > l2_bytes() / 2)
    return;
  plan.batch_split = s.batch / 2;
  if (plan.members == 2) plan.batch_slices = 2;
}

// The float projection runs on AMX tiles (where the ISA has them) from this
// many steps, at every batch size (no fold at N = 1 then) and thread count:
// its bits differ from the FMA chains', and a sequence alone gives the bits
// it gives in a batch. Each call packs W_ih for the tiles, and each chunk
// pays for the tile state: at N=8 H=128 T=4 to 16 that made the call 5-10%
// slower, T=32 even, T=100 5% faster (and 15% at N=64 H=512 T=50); a cell's
// single step stays on the FMA chains (FusedLSTMCell N=16 H=512: 25% slower).
constexpr int64_t kAmxMinSteps = 32;
// The backward's dx and dW take the tiles from a batch of 8 or H = 256 (by
// the sizes, so the bits still depend on no thread count). Training,
// alternating builds, on the tiles against the FMA chains: T=100 N=8 H=128
// -5%, N=16 -8%, N=4 H=256 -11%, T=1000 N=1 H=256 -15%, T=100 N=1 H=256 -5%,
// N=1 H=1024 even; but T=100 N=1 H=64 +11% and N=2 H=128 +5%.
constexpr int64_t kAmxMinBackwardBatch = 8;
constexpr int64_t kAmxMinBackwardHidden = 256;

template <class T>
void plan_input_chunks(const LstmSizes& s, int64_t input_size, bool isa_folds, bool amx, RecurrencePlan& plan) {
  const int64_t depth = input_size + s.out_size();  // W_ih + W_hh
  const bool weights_cached =
      member_panels_in_l2<T>(plan, depth) || gate_panel_bytes<T>(plan, plan.unit_blocks, depth) <= l3_bytes() / 2;
  plan.fold_projection = isa_folds && !amx && s.batch == 1 && weights_cached;
  const int64_t row_bytes = gate_panel_bytes<T>(plan, blocks_read_per_member(plan), 1);  // a row of gates_chunk
  const int64_t rows = plan.fold_projection
                           ? kFoldRingRows
                           : std::max<int64_t>(1, std::min(kChunkTargetRows, kChunkBytesPerMember / row_bytes));
  plan.chunk_steps = std::min(s.seq_len, std::max<int64_t>(1, rows / std::max<int64_t>(1, s.batch)));
  plan.chunk_rows = plan.chunk_steps * s.batch;
  plan.partial_values = std::max(plan.partial_values, plan.chunk_rows * 8 * plan.width);
}

template <class T>
void run_forward(const LstmFwdParams& p, MemberFn fn, int64_t width, bool isa_folds, bool isa_amx) {
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, O = s.out_size(), N = s.batch, I = p.input_size;
  RecurrencePlan plan = sized_plan(s, p.num_threads, width, p.gate_math_only());
  plan.forward = &p;
  const bool amx = isa_amx && p.projects_input() && std::is_same_v<T, float> && s.seq_len >= kAmxMinSteps;
  if (p.projects_input()) plan_input_chunks<T>(s, I, isa_folds, amx, plan);
  // Measured on the Sapphire Rapids VM (2 MiB L2 a core), alternating builds:
  // inference T=50 N=64 H=512 (4 MiB of panels a member) 46.9 -> 42.6 ms,
  // T=100 N=16 H=512 -8%, training T=50 N=64 -2 to -4%; with the weights in L2
  // (N=8 and N=16 at H=128) the extra loads cost 3-7%.
  plan.prefetch_panels = !member_panels_in_l2<T>(plan, (p.projects_input() ? I : 0) + O);
  const size_t ih = workspace.reserve<T>(plan.unit_blocks * I * 4 * width);
  const size_t bias = workspace.reserve<T>(p.projects_input() ? plan.unit_blocks * 4 * width : 0);
  const size_t chunk = workspace.reserve<T>(plan.unit_blocks * plan.chunk_rows * 4 * width);
  const size_t hh = workspace.reserve<T>(p.gate_math_only() ? 0 : plan.unit_blocks * O * 4 * width);
  const size_t hr = workspace.reserve<T>(P > 0 ? plan.out_blocks * H * width : 0);
  const size_t cell = workspace.reserve<T>(plan.unit_blocks * N * width);
  const size_t h0 = workspace.reserve<T>(N * O), h1 = workspace.reserve<T>(N * O);
  const size_t exchange = workspace.reserve<T>(P > 0 ? N * plan.unit_blocks * width : 0);
  const size_t partial = workspace.reserve<T>(plan.members * plan.partial_values);
  plan.amx_rows_values = amx ? amx_rows_values(plan.chunk_rows, I) : 0;
  const size_t amx_ih = workspace.reserve<uint16_t>(amx ? plan.unit_blocks * amx_gate_panel_values(I) : 0);
  const size_t amx_rows = workspace.reserve<uint16_t>(plan.members * plan.amx_rows_values);
  const size_t amx_finite = workspace.reserve<uint8_t>(amx ? plan.unit_blocks : 0);
  char* base = workspace.commit();
  if (amx) {
    plan.amx_ih_panels = base + amx_ih;
    plan.amx_rows = base + amx_rows;
    plan.amx_finite_blocks = reinterpret_cast<uint8_t*>(base + amx_finite);
  }
  plan.w_ih_panels = base + ih;
  plan.bias_panels = base + bias;
  plan.gates_chunk = base + chunk;
  plan.w_hh_panels = base + hh;
  plan.w_hr_panels = base + hr;
  plan.cell_state = base + cell;
  plan.h_buffers[0] = base + h0;
  plan.h_buffers[1] = base + h1;
  plan.exchange = base + exchange;
  plan.partial = base + partial;
  if (p.h0)
    std::memcpy(plan.h_buffers[0], p.h0, N * O * sizeof(T));
  else
    std::memset(plan.h_buffers[0], 0, N * O * sizeof(T));
  run_job(plan, fn);
}

template <class T>
void run_backward(const LstmBwdParams& p, MemberFn fn, int64_t width, bool isa_amx) {
  const LstmSizes& s = p.sizes;
  const int64_t H = s.hidden, P = s.proj_size, N = s.batch;
  RecurrencePlan plan = sized_plan(s, p.num_threads, width, p.gate_math_only());
  plan.backward = &p;
  plan_batch_slices<T>(p, plan);
  plan.prefetch_panels = !member_panels_in_l2<T>(plan, (p.grad_x ? p.input_size : 0) + s.out_size());
  if (p.weight_grads_inside()) {
    plan.input_blocks = (p.input_size + width - 1) / width;
    plan.grad_chunk_steps = std::min(s.seq_len, (kWeightGradChunkRows + N - 1) / N);
    plan.grad_chunk_rows = plan.grad_chunk_steps * N;
    plan.partial_values = std::max({plan.partial_values, plan.grad_chunk_rows * 8 * width,
                                    kGradBlockRows * 4 * blocks_read_per_member(plan) * width});
  }
  // dx and dW on AMX tiles from the steps the forward's projection takes
  // them (kAmxMinSteps), with a batch or hidden size large enough.
  const bool amx = p.weight_grads_inside() && isa_amx && std::is_same_v<T, float> && s.seq_len >= kAmxMinSteps &&
                   (s.batch >= kAmxMinBackwardBatch || s.hidden >= kAmxMinBackwardHidden);
  const bool amx_dx = amx && p.grad_x;
  if (amx) {
    plan.amx_weight_grads = p.grad_w_ih || p.grad_w_hh;
    if (plan.amx_weight_grads)
      plan.partial_values =
          std::max(plan.partial_values, amx_grad_scratch_floats(4 * blocks_read_per_member(plan),
                                                                p.grad_w_ih ? p.input_size : 0,
                                                                p.grad_w_hh ? s.out_size() : 0));
  }
  const bool halves = plan.batch_split > 0;
  const size_t ih = workspace.reserve<T>(p.grad_x ? plan.input_blocks * 4 * H * width : 0);
  const size_t bias = workspace.reserve<T>(p.grad_bias ? 2 * plan.unit_blocks * 8 * width : 0);
  const size_t half_ih = workspace.reserve<T>(halves && p.grad_w_ih ? 4 * H * p.input_size : 0);
  const size_t half_hh = workspace.reserve<T>(halves && p.grad_w_hh ? 4 * H * s.out_size() : 0);
  const size_t row_pointers = workspace.reserve<const T*>(plan.members * 3 * plan.grad_chunk_rows);
  const size_t hh = workspace.reserve<T>(p.gate_math_only() ? 0 : plan.out_blocks * 4 * H * width);
  const size_t hr = workspace.reserve<T>(P > 0 ? plan.unit_blocks * P * width : 0);
  const size_t cell = workspace.reserve<T>(plan.unit_blocks * N * width);
  const size_t out = workspace.reserve<T>(plan.out_blocks * N * width);
  const size_t exchange = workspace.reserve<T>(P > 0 ? N * plan.out_blocks * width : 0);
  const size_t partial = workspace.reserve<T>(plan.members * plan.partial_values);
  plan.amx_rows_values = amx_dx ? amx_rows_values(kAmxInputGradRows, 4 * H) : 0;
  const size_t amx_ih = workspace.reserve<uint16_t>(amx_dx ? plan.input_blocks * amx_column_panel_values(4 * H) : 0);
  const size_t amx_rows = workspace.reserve<uint16_t>(plan.members * plan.amx_rows_values);
  const size_t amx_finite = workspace.reserve<uint8_t>(amx_dx ? plan.input_blocks : 0);
  char* base = workspace.commit();
  if (amx_dx) {
    plan.amx_ih_panels = base + amx_ih;
    plan.amx_rows = base + amx_rows;
    plan.amx_finite_blocks = reinterpret_cast<uint8_t*>(base + amx_finite);
  }
  plan.w_hh_panels = base + hh;
  plan.w_hr_panels = base + hr;
  plan.cell_state = base + cell;
  plan.out_state = base + out;
  plan.exchange = base + exchange;
  plan.partial = base + partial;
  plan.w_ih_panels = base + ih;
  plan.bias_sums = base + bias;
  if (halves && p.grad_w_ih) plan.first_half_w_ih = base + half_ih;
  if (halves && p.grad_w_hh) plan.first_half_w_hh = base + half_hh;
  plan.row_pointers = base + row_pointers;
  run_job(plan, fn);
}

// Outputs that an empty batch still defines: the weight gradients inside
// the backward are zero.
void fill_empty(const LstmFwdParams&) {}
void fill_empty(const LstmBwdParams& p) {
  const size_t value = p.dtype == DType::kFloat64 ? sizeof(double) : sizeof(float);
  const int64_t gate_rows = 4 * p.sizes.hidden;
  if (p.grad_w_ih) std::memset(p.grad_w_ih, 0, gate_rows * p.input_size * value);
  if (p.grad_w_hh) std::memset(p.grad_w_hh, 0, gate_rows * p.sizes.out_size() * value);
  if (p.grad_bias) std::memset(p.grad_bias, 0, gate_rows * value);
}

}  // namespace

std::string cpu_isa() {
  std::lock_guard<std::mutex> lock(dispatch_mutex);
  return kernels_named(isa_override)->name;
}

void set_cpu_isa(const std::string& name) {
  std::lock_guard<std::mutex> lock(dispatch_mutex);
  FUSED_LSTM_CHECK_ARG(kernels_named(name) != nullptr, "ISA '", name,
                       "' is unknown or not supported by this CPU (auto, avx512_amx, avx512, avx2, portable)");
  isa_override = name;
}

int64_t set_min_step_work(int64_t multiply_adds) {
  std::lock_guard<std::mutex> lock(dispatch_mutex);
  FUSED_LSTM_CHECK_ARG(multiply_adds >= 0, "multiply_adds=", multiply_adds);
  return std::exchange(min_step_work_per_member, multiply_adds);
}

std::string cpu_team() { return ThreadTeam::instance().uses_openmp() ? "openmp" : "threads"; }

void set_cpu_team(const std::string& name) {
  FUSED_LSTM_CHECK_ARG(name == "openmp" || name == "threads", "team '", name, "': openmp or threads");
  ThreadTeam::instance().set_use_openmp(name == "openmp");
}

namespace {

// Checks, then runs `run(isa)` under the dispatch lock (one recurrence at a
// time owns the thread team).
template <class Params, class Run>
void checked_dispatch(const Params& p, Run run) {
  check_params(p);
  check_host_batch_sizes(p.sizes);
  FUSED_LSTM_CHECK_ARG(p.dtype == DType::kFloat32 || p.dtype == DType::kFloat64,
                       "the CPU recurrence takes float32 or float64");
  if (p.sizes.batch == 0) return fill_empty(p);
  std::lock_guard<std::mutex> lock(dispatch_mutex);
  run(*kernels_named(isa_override));
}

}  // namespace

void lstm_forward(const LstmFwdParams& p) {
  checked_dispatch(p, [&](const IsaKernels& isa) {
    if (p.dtype == DType::kFloat32)
      return run_forward<float>(p, isa.forward_float, isa.width_float, isa.folds_projection, isa.uses_amx);
    run_forward<double>(p, isa.forward_double, isa.width_double, isa.folds_projection, false);
  });
}

void lstm_backward(const LstmBwdParams& p) {
  checked_dispatch(p, [&](const IsaKernels& isa) {
    if (p.dtype == DType::kFloat32) return run_backward<float>(p, isa.backward_float, isa.width_float, isa.uses_amx);
    run_backward<double>(p, isa.backward_double, isa.width_double, false);
  });
}

}  // namespace fused_lstm::cpu
