// pybind11 bindings of the params structs (params.h), shared by fused_lstm._C
// and the test-only fused_lstm._simt (which registers them module-locally, so
// both modules can be imported together).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/params.h"

namespace fused_lstm::bindings {

namespace py = pybind11;

// A pointer field takes an int (an address, 0 = null), None (null) or a
// tensor (its data_ptr(); an empty tensor's is null), and reads as an int.
template <class Pointer>
Pointer to_pointer(py::handle value) {
  std::uintptr_t address = 0;
  if (py::isinstance<py::int_>(value)) {
    address = py::cast<std::uintptr_t>(value);
  } else if (!value.is_none()) {
    // An interned name and a method call without a bound-method object:
    // a quarter of the cost of value.attr("data_ptr")().
    static PyObject* const data_ptr = PyUnicode_InternFromString("data_ptr");
    PyObject* result = PyObject_CallMethodNoArgs(value.ptr(), data_ptr);
    if (result == nullptr) throw py::error_already_set();
    address = py::cast<std::uintptr_t>(py::reinterpret_steal<py::object>(result));
  }
  return reinterpret_cast<Pointer>(address);
}

// Binds a params struct's fields as read-write properties and as keywords of
// its constructor, Class(field=value, ...): filling a struct in one call
// instead of one Python call per field (fused_lstm._params does, on every
// launch; for a short sequence those calls cost more than the kernel). The
// fields of a nested struct (the sizes) are keywords of the outer one too.
template <class Class>
class StructBinding {
 public:
  using Setters = std::unordered_map<std::string, std::function<void(Class&, py::handle)>>;

  StructBinding(py::module_& m, const char* name, bool module_local)
      : cls_(m, name, py::module_local(module_local)), setters_(std::make_shared<Setters>()) {
    cls_.def(py::init([setters = setters_](const py::kwargs& fields) {
      Class self;
      for (const auto& [key, value] : fields) {
        const auto found = setters->find(py::cast<std::string>(key));
        if (found == setters->end())
          throw py::type_error(std::string(py::str(key)) + " is not a field of this struct");
        found->second(self, value);
      }
      return self;
    }));
  }

  template <class T>
  StructBinding& value(const char* name, T Class::*field) {
    cls_.def_readwrite(name, field);
    (*setters_)[name] = [field, name](Class& self, py::handle value) {
      try {
        self.*field = py::cast<T>(value);
      } catch (const py::cast_error&) {
        throw py::type_error(std::string(name) + " cannot be a " + std::string(py::str(value.get_type())));
      }
    };
    return *this;
  }

  // The struct-valued field as a whole (name) and each of its fields by its own name.
  template <class Inner>
  StructBinding& nested(const char* name, Inner Class::*field, const StructBinding<Inner>& inner) {
    value(name, field);
    for (const auto& [inner_name, set_inner] : *inner.setters())
      (*setters_)[inner_name] = [field, set = set_inner](Class& self, py::handle value) { set(self.*field, value); };
    return *this;
  }

  template <class Pointer>
  StructBinding& pointer(const char* name, Pointer Class::*field) {
    auto set = [field](Class& self, py::handle value) { self.*field = to_pointer<Pointer>(value); };
    cls_.def_property(
        name, [field](const Class& self) { return reinterpret_cast<std::uintptr_t>(self.*field); }, set);
    (*setters_)[name] = set;
    return *this;
  }

  const std::shared_ptr<Setters>& setters() const { return setters_; }

 private:
  py::class_<Class> cls_;
  std::shared_ptr<Setters> setters_;
};

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

  StructBinding<LstmSizes> sizes(m, "LstmSizes", module_local);
  sizes.value("seq_len", &LstmSizes::seq_len)
      .value("batch", &LstmSizes::batch)
      .value("hidden", &LstmSizes::hidden)
      .value("proj_size", &LstmSizes::proj_size)
      .value("total_rows", &LstmSizes::total_rows)
      .pointer("batch_sizes", &LstmSizes::batch_sizes);

  StructBinding<LstmFwdParams>(m, "LstmFwdParams", module_local)
      .nested("sizes", &LstmFwdParams::sizes, sizes)
      .value("dtype", &LstmFwdParams::dtype)
      .value("workspace_bytes", &LstmFwdParams::workspace_bytes)
      .value("path", &LstmFwdParams::path)
      .value("num_threads", &LstmFwdParams::num_threads)
      .value("input_size", &LstmFwdParams::input_size)
      .pointer("gates_x", &LstmFwdParams::gates_x)
      .pointer("x", &LstmFwdParams::x)
      .pointer("w_ih", &LstmFwdParams::w_ih)
      .pointer("b_ih", &LstmFwdParams::b_ih)
      .pointer("b_hh", &LstmFwdParams::b_hh)
      .pointer("w_hh", &LstmFwdParams::w_hh)
      .pointer("w_hr", &LstmFwdParams::w_hr)
      .pointer("h0", &LstmFwdParams::h0)
      .pointer("c0", &LstmFwdParams::c0)
      .pointer("y", &LstmFwdParams::y)
      .pointer("h_n", &LstmFwdParams::h_n)
      .pointer("c_n", &LstmFwdParams::c_n)
      .pointer("saved_gates", &LstmFwdParams::saved_gates)
      .pointer("saved_c", &LstmFwdParams::saved_c)
      .pointer("saved_h", &LstmFwdParams::saved_h)
      .pointer("stream", &LstmFwdParams::stream)
      .pointer("workspace", &LstmFwdParams::workspace);

  StructBinding<LstmBwdParams>(m, "LstmBwdParams", module_local)
      .nested("sizes", &LstmBwdParams::sizes, sizes)
      .value("dtype", &LstmBwdParams::dtype)
      .value("workspace_bytes", &LstmBwdParams::workspace_bytes)
      .value("path", &LstmBwdParams::path)
      .value("num_threads", &LstmBwdParams::num_threads)
      .pointer("w_hh", &LstmBwdParams::w_hh)
      .pointer("w_hr", &LstmBwdParams::w_hr)
      .pointer("c0", &LstmBwdParams::c0)
      .pointer("saved_gates", &LstmBwdParams::saved_gates)
      .pointer("saved_c", &LstmBwdParams::saved_c)
      .pointer("saved_h", &LstmBwdParams::saved_h)
      .pointer("grad_y", &LstmBwdParams::grad_y)
      .pointer("grad_h_n", &LstmBwdParams::grad_h_n)
      .pointer("grad_c_n", &LstmBwdParams::grad_c_n)
      .pointer("grad_gates", &LstmBwdParams::grad_gates)
      .pointer("grad_h_out", &LstmBwdParams::grad_h_out)
      .pointer("grad_h0", &LstmBwdParams::grad_h0)
      .pointer("grad_c0", &LstmBwdParams::grad_c0)
      .pointer("stream", &LstmBwdParams::stream)
      .pointer("workspace", &LstmBwdParams::workspace);
}

}  // namespace fused_lstm::bindings
