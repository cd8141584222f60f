// pybind11 bindings of the CUDA entry points, shared by fused_lstm._C (built
// with nvcc: real GPUs) and fused_lstm._simt (the same kernel sources run on
// the CPU by csrc/simt, on host memory; registered module-locally).
#pragma once
#include "bind_params.h"
#include "cuda/lstm_pointwise.h"
#include "cuda/lstm_recurrence.h"

namespace fused_lstm::bindings {

inline void bind_cuda_entry_points(py::module_& m, bool module_local) {
  StructBinding<LstmPointwiseParams>(m, "LstmPointwiseParams", module_local)
      .value("batch", &LstmPointwiseParams::batch)
      .value("hidden", &LstmPointwiseParams::hidden)
      .value("dtype", &LstmPointwiseParams::dtype)
      .pointer("pre_gates", &LstmPointwiseParams::pre_gates)
      .pointer("c_prev", &LstmPointwiseParams::c_prev)
      .pointer("h", &LstmPointwiseParams::h)
      .pointer("c", &LstmPointwiseParams::c)
      .pointer("saved_gates", &LstmPointwiseParams::saved_gates)
      .pointer("stream", &LstmPointwiseParams::stream);
  def_run<LstmPointwiseParams>(m, "lstm_pointwise_cuda", cuda::lstm_pointwise, "CUDA pointwise cell step");
  def_run<LstmFwdParams>(m, "lstm_forward_cuda", cuda::lstm_forward, "CUDA forward recurrence (on params.stream)");
  def_run<LstmBwdParams>(m, "lstm_backward_cuda", cuda::lstm_backward, "CUDA backward recurrence (on params.stream)");
  m.def("lstm_forward_workspace_bytes", &cuda::lstm_forward_workspace_bytes, py::arg("params"),
        "Bytes of params.workspace the CUDA forward needs");
  m.def("lstm_backward_workspace_bytes", &cuda::lstm_backward_workspace_bytes, py::arg("params"),
        "Bytes of params.workspace the CUDA backward needs");
}

}  // namespace fused_lstm::bindings
