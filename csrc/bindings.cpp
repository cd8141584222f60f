// pybind11 module fused_lstm._C: the params structs (pointers as integers),
// the CPU recurrence and, when built with nvcc, the CUDA launchers. No libtorch:
// fused_lstm/_backend.py fills the structs from tensors' data_ptr().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "common/params.h"
#include "cpu/lstm_recurrence.h"
#if FUSED_LSTM_WITH_CUDA
#include "cuda/cuda_runtime_info.h"
#include "cuda/lstm_pointwise.h"
#endif

namespace py = pybind11;
using namespace fused_lstm;

namespace {

// Exposes a pointer field as a Python int (0 = nullptr).
template <class Class, class Pointer>
void pointer_field(py::class_<Class>& cls, const char* name, Pointer Class::*field) {
  cls.def_property(
      name, [field](const Class& self) { return reinterpret_cast<std::uintptr_t>(self.*field); },
      [field](Class& self, std::uintptr_t address) { self.*field = reinterpret_cast<Pointer>(address); });
}

template <class Params, class Fn>
void def_run(py::module_& m, const char* name, Fn fn, const char* doc) {
  m.def(
      name,
      [fn](const Params& params) {
        py::gil_scoped_release release;
        fn(params);
      },
      py::arg("params"), doc);
}

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

  py::enum_<DType>(m, "DType")
      .value("float32", DType::kFloat32)
      .value("float64", DType::kFloat64)
      .value("float16", DType::kFloat16)
      .value("bfloat16", DType::kBFloat16);

  py::class_<LstmSizes> sizes(m, "LstmSizes");
  sizes.def(py::init<>())
      .def_readwrite("seq_len", &LstmSizes::seq_len)
      .def_readwrite("batch", &LstmSizes::batch)
      .def_readwrite("hidden", &LstmSizes::hidden)
      .def_readwrite("proj_size", &LstmSizes::proj_size)
      .def_readwrite("total_rows", &LstmSizes::total_rows);
  pointer_field(sizes, "batch_sizes", &LstmSizes::batch_sizes);

  py::class_<LstmFwdParams> fwd(m, "LstmFwdParams");
  fwd.def(py::init<>()).def_readwrite("sizes", &LstmFwdParams::sizes).def_readwrite("dtype", &LstmFwdParams::dtype);
  pointer_field(fwd, "gates_x", &LstmFwdParams::gates_x);
  pointer_field(fwd, "w_hh", &LstmFwdParams::w_hh);
  pointer_field(fwd, "w_hr", &LstmFwdParams::w_hr);
  pointer_field(fwd, "h0", &LstmFwdParams::h0);
  pointer_field(fwd, "c0", &LstmFwdParams::c0);
  pointer_field(fwd, "y", &LstmFwdParams::y);
  pointer_field(fwd, "h_n", &LstmFwdParams::h_n);
  pointer_field(fwd, "c_n", &LstmFwdParams::c_n);
  pointer_field(fwd, "saved_gates", &LstmFwdParams::saved_gates);
  pointer_field(fwd, "saved_c", &LstmFwdParams::saved_c);
  pointer_field(fwd, "saved_h", &LstmFwdParams::saved_h);
  pointer_field(fwd, "stream", &LstmFwdParams::stream);
  fwd.def_readwrite("num_threads", &LstmFwdParams::num_threads);

  py::class_<LstmBwdParams> bwd(m, "LstmBwdParams");
  bwd.def(py::init<>()).def_readwrite("sizes", &LstmBwdParams::sizes).def_readwrite("dtype", &LstmBwdParams::dtype);
  pointer_field(bwd, "w_hh", &LstmBwdParams::w_hh);
  pointer_field(bwd, "w_hr", &LstmBwdParams::w_hr);
  pointer_field(bwd, "c0", &LstmBwdParams::c0);
  pointer_field(bwd, "saved_gates", &LstmBwdParams::saved_gates);
  pointer_field(bwd, "saved_c", &LstmBwdParams::saved_c);
  pointer_field(bwd, "saved_h", &LstmBwdParams::saved_h);
  pointer_field(bwd, "grad_y", &LstmBwdParams::grad_y);
  pointer_field(bwd, "grad_h_n", &LstmBwdParams::grad_h_n);
  pointer_field(bwd, "grad_c_n", &LstmBwdParams::grad_c_n);
  pointer_field(bwd, "grad_gates", &LstmBwdParams::grad_gates);
  pointer_field(bwd, "grad_h_out", &LstmBwdParams::grad_h_out);
  pointer_field(bwd, "grad_h0", &LstmBwdParams::grad_h0);
  pointer_field(bwd, "grad_c0", &LstmBwdParams::grad_c0);
  pointer_field(bwd, "stream", &LstmBwdParams::stream);
  bwd.def_readwrite("num_threads", &LstmBwdParams::num_threads);

  def_run<LstmFwdParams>(m, "lstm_forward_cpu", cpu::lstm_forward, "CPU forward recurrence");
  def_run<LstmBwdParams>(m, "lstm_backward_cpu", cpu::lstm_backward, "CPU backward recurrence");
  m.def("cpu_isa", &cpu::cpu_isa, "Instruction set of the CPU recurrence kernels: avx512, avx2 or portable");
  m.def("set_cpu_isa", &cpu::set_cpu_isa, py::arg("name"),
        "Forces the CPU kernels' instruction set (auto, avx512, avx2, portable); for tests and benchmarks");
  m.def("cpu_team", &cpu::cpu_team, "CPU team engine: openmp (torch's OpenMP pool) or threads (std::thread)");
  m.def("set_cpu_team", &cpu::set_cpu_team, py::arg("name"), "Chooses the CPU team engine: openmp or threads");
  m.def("set_cpu_min_step_work", &cpu::set_min_step_work, py::arg("multiply_adds"),
        "CPU team-size policy: min multiply-adds per step per thread; returns the previous value (0: always "
        "num_threads)");

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
#endif

  m.def("build_info", &build_info, "How this module was built and what it sees at run time");
}
