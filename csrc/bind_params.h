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
      for (const auto& [key, value] : fields) set(*setters, self, key, value);
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
        throw py::type_error(std::string(name) + " cannot be a " + Py_TYPE(value.ptr())->tp_name);
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

  // Sets the field named `name` (a Python str) of self.
  static void set(const Setters& setters, Class& self, py::handle name, py::handle value) {
    const auto found = setters.find(py::cast<std::string>(name));
    if (found == setters.end()) throw py::type_error(std::string(py::str(name)) + " is not a field of this struct");
    found->second(self, value);
  }

 private:
  py::class_<Class> cls_;
  std::shared_ptr<Setters> setters_;
};

// name(**fields): fills a Class from keyword arguments with binding's setters
// and runs fn on it without the GIL. A plain METH_FASTCALL function, not a
// pybind11 one and no params object: on the eager inference path, whose code
// is out of cache after other work, pybind11's dispatcher and the object took
// ~25 us of a ~250 us call (bench, T100 N1 H64); the CPU backward launches
// the same way, so the CPU has one launch style. Exceptions map as pybind11's
// defaults do (ArgumentError: ValueError; other errors: RuntimeError).
template <class Class>
void def_run_from_fields(py::module_& m, const char* name, void (*fn)(const Class&),
                         const StructBinding<Class>& binding, const char* doc) {
  struct State {
    void (*fn)(const Class&);
    std::shared_ptr<typename StructBinding<Class>::Setters> setters;
  };
  constexpr const char* kCapsule = "fused_lstm.run_from_fields";
  auto run = [](PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* names) -> PyObject* {
    const State& state = *static_cast<const State*>(PyCapsule_GetPointer(self, kCapsule));
    try {
      if (nargs != 0) throw py::type_error("takes keyword arguments only");
      Class params;
      const Py_ssize_t count = names ? PyTuple_GET_SIZE(names) : 0;
      for (Py_ssize_t i = 0; i < count; ++i)
        StructBinding<Class>::set(*state.setters, params, PyTuple_GET_ITEM(names, i), args[i]);
      py::gil_scoped_release release;
      state.fn(params);
    } catch (py::error_already_set& e) {
      e.restore();
      return nullptr;
    } catch (const py::builtin_exception& e) {
      e.set_error();
      return nullptr;
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
      return nullptr;
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
      return nullptr;
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      return nullptr;
    }
    Py_RETURN_NONE;
  };
  // Both live as long as the module (the def must outlive the function object).
  using FastWithKeywords = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);
  auto* def = new PyMethodDef{
      name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(static_cast<FastWithKeywords>(run))),
      METH_FASTCALL | METH_KEYWORDS, doc};
  py::capsule state(new State{fn, binding.setters()}, kCapsule,
                    [](PyObject* capsule) { delete static_cast<State*>(PyCapsule_GetPointer(capsule, kCapsule)); });
  py::object function =
      py::reinterpret_steal<py::object>(PyCFunction_NewEx(def, state.ptr(), m.attr("__name__").ptr()));
  if (!function) throw py::error_already_set();
  m.add_object(name, function);
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

// The fields every recurrence launch carries, forward or backward: sizes,
// dtype, team size, CUDA path, stream and workspace.
template <class Params>
StructBinding<Params>& bind_launch_fields(StructBinding<Params>& binding, const StructBinding<LstmSizes>& sizes) {
  return binding.nested("sizes", &Params::sizes, sizes)
      .value("dtype", &Params::dtype)
      .value("workspace_bytes", &Params::workspace_bytes)
      .value("path", &Params::path)
      .value("num_threads", &Params::num_threads)
      .pointer("stream", &Params::stream)
      .pointer("workspace", &Params::workspace);
}

struct ParamsBindings {
  StructBinding<LstmFwdParams> forward;
  StructBinding<LstmBwdParams> backward;
};

inline ParamsBindings bind_params(py::module_& m, bool module_local) {
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

  StructBinding<LstmFwdParams> forward(m, "LstmFwdParams", module_local);
  bind_launch_fields(forward, sizes)
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
      .pointer("saved_h", &LstmFwdParams::saved_h);

  StructBinding<LstmBwdParams> backward(m, "LstmBwdParams", module_local);
  bind_launch_fields(backward, sizes)
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
      .value("input_size", &LstmBwdParams::input_size)
      .pointer("x", &LstmBwdParams::x)
      .pointer("w_ih", &LstmBwdParams::w_ih)
      .pointer("y", &LstmBwdParams::y)
      .pointer("h0", &LstmBwdParams::h0)
      .pointer("grad_x", &LstmBwdParams::grad_x)
      .pointer("grad_w_ih", &LstmBwdParams::grad_w_ih)
      .pointer("grad_w_hh", &LstmBwdParams::grad_w_hh)
      .pointer("grad_bias", &LstmBwdParams::grad_bias);
  return {forward, backward};
}

}  // namespace fused_lstm::bindings
