// pybind11 bindings of the params structs (params.h), shared by fused_lstm._C
// and the test-only fused_lstm._simt (which registers them module-locally, so
// both modules can be imported together). Pointers are Python ints (0 = null).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/params.h"

namespace fused_lstm::bindings {

namespace py = pybind11;

template <class Class, class Pointer>
void pointer_field(py::class_<Class>& cls, const char* name, Pointer Class::*field) {
  cls.def_property(
      name, [field](const Class& self) { return reinterpret_cast<std::uintptr_t>(self.*field); },
      [field](Class& self, std::uintptr_t address) { self.*field = reinterpret_cast<Pointer>(address); });
}

// Runs fn(params) without the GIL.
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

inline void bind_params(py::module_& m, bool module_local) {
  py::enum_<DType>(m, "DType", py::module_local(module_local))
      .value("float32", DType::kFloat32)
      .value("float64", DType::kFloat64)
      .value("float16", DType::kFloat16)
      .value("bfloat16", DType::kBFloat16);

  py::enum_<RecurrencePath>(m, "RecurrencePath", py::module_local(module_local))
      .value("auto", RecurrencePath::kAuto)
      .value("step", RecurrencePath::kStep)
      .value("persistent", RecurrencePath::kPersistent);

  py::class_<LstmSizes> sizes(m, "LstmSizes", py::module_local(module_local));
  sizes.def(py::init<>())
      .def_readwrite("seq_len", &LstmSizes::seq_len)
      .def_readwrite("batch", &LstmSizes::batch)
      .def_readwrite("hidden", &LstmSizes::hidden)
      .def_readwrite("proj_size", &LstmSizes::proj_size)
      .def_readwrite("total_rows", &LstmSizes::total_rows);
  pointer_field(sizes, "batch_sizes", &LstmSizes::batch_sizes);

  py::class_<LstmFwdParams> fwd(m, "LstmFwdParams", py::module_local(module_local));
  fwd.def(py::init<>())
      .def_readwrite("sizes", &LstmFwdParams::sizes)
      .def_readwrite("dtype", &LstmFwdParams::dtype)
      .def_readwrite("workspace_bytes", &LstmFwdParams::workspace_bytes)
      .def_readwrite("path", &LstmFwdParams::path)
      .def_readwrite("num_threads", &LstmFwdParams::num_threads)
      .def_readwrite("input_size", &LstmFwdParams::input_size);
  pointer_field(fwd, "gates_x", &LstmFwdParams::gates_x);
  pointer_field(fwd, "x", &LstmFwdParams::x);
  pointer_field(fwd, "w_ih", &LstmFwdParams::w_ih);
  pointer_field(fwd, "b_ih", &LstmFwdParams::b_ih);
  pointer_field(fwd, "b_hh", &LstmFwdParams::b_hh);
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
  pointer_field(fwd, "workspace", &LstmFwdParams::workspace);

  py::class_<LstmBwdParams> bwd(m, "LstmBwdParams", py::module_local(module_local));
  bwd.def(py::init<>())
      .def_readwrite("sizes", &LstmBwdParams::sizes)
      .def_readwrite("dtype", &LstmBwdParams::dtype)
      .def_readwrite("workspace_bytes", &LstmBwdParams::workspace_bytes)
      .def_readwrite("path", &LstmBwdParams::path)
      .def_readwrite("num_threads", &LstmBwdParams::num_threads);
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
  pointer_field(bwd, "workspace", &LstmBwdParams::workspace);
}

}  // namespace fused_lstm::bindings
