// pybind11 module fused_lstm._C: the params structs (pointers as integers),
// the CPU recurrence and, when built with nvcc, the CUDA launchers. No libtorch:
// fused_lstm/_backend.py fills the structs from tensors' data_ptr().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bind_params.h"
#include "common/params.h"
#include "cpu/lstm_recurrence.h"
#if FUSED_LSTM_WITH_CUDA
#include "cuda/cuda_runtime_info.h"
#include "cuda/lstm_pointwise.h"
#include "cuda/lstm_recurrence.h"
#endif

namespace py = pybind11;
using namespace fused_lstm;
using bindings::def_run;
using bindings::pointer_field;

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
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fused_lstm compiled core (framework-free)";

  bindings::bind_params(m, /*module_local=*/false);

  def_run<LstmFwdParams>(m, "lstm_forward_cpu", cpu::lstm_forward, "CPU forward recurrence");
  def_run<LstmBwdParams>(m, "lstm_backward_cpu", cpu::lstm_backward, "CPU backward recurrence");

#if FUSED_LSTM_WITH_CUDA
  py::class_<LstmPointwiseParams> pointwise(m, "LstmPointwiseParams");
  pointwise.def(py::init<>())
      .def_readwrite("batch", &LstmPointwiseParams::batch)
      .def_readwrite("hidden", &LstmPointwiseParams::hidden)
      .def_readwrite("dtype", &LstmPointwiseParams::dtype);
  pointer_field(pointwise, "pre_gates", &LstmPointwiseParams::pre_gates);
  pointer_field(pointwise, "c_prev", &LstmPointwiseParams::c_prev);
  pointer_field(pointwise, "h", &LstmPointwiseParams::h);
  pointer_field(pointwise, "c", &LstmPointwiseParams::c);
  pointer_field(pointwise, "saved_gates", &LstmPointwiseParams::saved_gates);
  pointer_field(pointwise, "stream", &LstmPointwiseParams::stream);
  def_run<LstmPointwiseParams>(m, "lstm_pointwise_cuda", cuda::lstm_pointwise, "CUDA pointwise cell step");
  def_run<LstmFwdParams>(m, "lstm_forward_cuda", cuda::lstm_forward, "CUDA forward recurrence (on params.stream)");
  def_run<LstmBwdParams>(m, "lstm_backward_cuda", cuda::lstm_backward, "CUDA backward recurrence (on params.stream)");
  m.def("lstm_forward_workspace_bytes", &cuda::lstm_forward_workspace_bytes, py::arg("params"));
  m.def("lstm_backward_workspace_bytes", &cuda::lstm_backward_workspace_bytes, py::arg("params"));
#endif

  m.def("build_info", &build_info, "How this module was built and what it sees at run time");
}
