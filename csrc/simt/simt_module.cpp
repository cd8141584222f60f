// fused_lstm._simt (test-only): the CUDA recurrence's entry points running on
// the CPU through csrc/simt, on host memory. Same params structs as _C
// (registered module-locally), plus the device model launches are checked
// against (an H100 by default; tests shrink it so small shapes still spread
// over several co-resident blocks).
#include <pybind11/pybind11.h>

#include "../bind_cuda.h"
#include "simt.h"

namespace py = pybind11;
using namespace fused_lstm;

PYBIND11_MODULE(_simt, m) {
  m.doc() = "fused_lstm CUDA kernels run on the CPU by the simt shim (tests only)";
  bindings::bind_params(m, /*module_local=*/true);
  bindings::bind_cuda_entry_points(m, /*module_local=*/true);

  m.def(
      "set_device",
      [](int sm_count, int64_t shared_memory_per_sm, int64_t shared_memory_per_block, int registers_per_sm,
         int block_threads, bool concurrent_blocks) {
        simt::DeviceModel& d = simt::device_model();
        d = simt::DeviceModel{};
        if (sm_count > 0) d.sm_count = sm_count;
        if (shared_memory_per_sm > 0) d.shared_memory_per_sm = shared_memory_per_sm;
        if (shared_memory_per_block > 0) d.shared_memory_per_block = shared_memory_per_block;
        if (registers_per_sm > 0) d.registers_per_sm = registers_per_sm;
        if (block_threads > 0) d.block_threads = block_threads;
        d.concurrent_blocks = concurrent_blocks;
      },
      py::arg("sm_count") = 0, py::arg("shared_memory_per_sm") = 0, py::arg("shared_memory_per_block") = 0,
      py::arg("registers_per_sm") = 0, py::arg("block_threads") = 0, py::arg("concurrent_blocks") = false,
      "Model a device for the launch checks (0 keeps the H100 default); no arguments resets to the H100.");
  m.def("device", [] {
    const simt::DeviceModel& d = simt::device_model();
    py::dict info;
    info["sm_count"] = d.sm_count;
    info["shared_memory_per_sm"] = d.shared_memory_per_sm;
    info["shared_memory_per_block"] = d.shared_memory_per_block;
    info["registers_per_sm"] = d.registers_per_sm;
    info["block_threads"] = d.block_threads;
    info["concurrent_blocks"] = d.concurrent_blocks;
    return info;
  });
}
