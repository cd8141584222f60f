// pybind11 module fused_lstm._C: the params structs (pointer fields read as
// integers and take tensors, None or integers), the CPU recurrence and, when
// built with nvcc, the CUDA launchers. No libtorch: fused_lstm/_params.py
// fills the structs from tensors (their data_ptr()).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bind_params.h"
#include "common/params.h"
#include "cpu/lstm_recurrence.h"
#if FUSED_LSTM_WITH_CUDA
#include "bind_cuda.h"
#include "cuda/cuda_runtime_info.h"
#endif

namespace py = pybind11;
using namespace fused_lstm;
using bindings::def_run;

namespace {

py::dict build_info() {
  py::dict info;
#if FUSED_LSTM_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(FUSED_LSTM_CUDA_ARCHS);
  info["cuda_compiler_version"] = std::string(FUSED_LSTM_CUDA_COMPILER_VERSION);
  const cuda::RuntimeInfo runtime = cuda::runtime_info();
  info["cuda_device_count"] = runtime.device_count;
  info["cuda_runtime_error"] = runtime.error;
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string();
#endif
  py::list features;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#define FUSED_LSTM_CPU_FEATURE(name) \
  if (__builtin_cpu_supports(name)) features.append(name);
  FUSED_LSTM_CPU_FEATURE("sse4.2")
  FUSED_LSTM_CPU_FEATURE("avx")
  FUSED_LSTM_CPU_FEATURE("avx2")
  FUSED_LSTM_CPU_FEATURE("fma")
  FUSED_LSTM_CPU_FEATURE("avx512f")
#undef FUSED_LSTM_CPU_FEATURE
#endif
  info["cpu_features"] = features;
  info["cpu_isa"] = cpu::cpu_isa();
  info["cpu_team"] = cpu::cpu_team();
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fused_lstm compiled core (framework-free)";

  const bindings::ParamsBindings params = bindings::bind_params(m, /*module_local=*/false);

  def_run<LstmFwdParams>(m, "lstm_forward_cpu", cpu::lstm_forward, "CPU forward recurrence");
  bindings::def_run_from_fields(m, "lstm_forward_cpu_fields", cpu::lstm_forward, params.forward,
                                "CPU forward recurrence from LstmFwdParams' fields as keywords");
  def_run<LstmBwdParams>(m, "lstm_backward_cpu", cpu::lstm_backward, "CPU backward recurrence");
  bindings::def_run_from_fields(m, "lstm_backward_cpu_fields", cpu::lstm_backward, params.backward,
                                "CPU backward recurrence from LstmBwdParams' fields as keywords");
  m.def("cpu_isa", &cpu::cpu_isa, "Instruction set of the CPU recurrence kernels: avx512, avx2 or portable");
  m.def("set_cpu_isa", &cpu::set_cpu_isa, py::arg("name"),
        "Forces the CPU kernels' instruction set (auto, avx512, avx2, portable); for tests and benchmarks");
  m.def("cpu_team", &cpu::cpu_team, "CPU team engine: openmp (torch's OpenMP pool) or threads (std::thread)");
  m.def("set_cpu_team", &cpu::set_cpu_team, py::arg("name"), "Chooses the CPU team engine: openmp or threads");
  m.def("set_cpu_min_step_work", &cpu::set_min_step_work, py::arg("multiply_adds"),
        "CPU team-size policy: min multiply-adds per step per thread; returns the previous value (0: always "
        "num_threads, no contention back-off)");

#if FUSED_LSTM_WITH_CUDA
  bindings::bind_cuda_entry_points(m, /*module_local=*/false);
#endif

  m.def("build_info", &build_info, "How this module was built and what it sees at run time");
}
