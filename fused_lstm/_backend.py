"""Chooses where the recurrence runs, per call, and runs it there.

- "cuda": the compiled CUDA kernels (fused_lstm._cuda_backend), on CUDA tensors.
- "cpu": the compiled CPU recurrence (float32/float64; fp16/bf16 are computed
  in float32 and rounded back, as the kernels accumulate in float32).
- "reference": fused_lstm.reference, for anything the compiled core cannot take.
- "simt" (tests only, never chosen by itself): the CUDA kernels on CPU tensors,
  run by fused_lstm._simt, so the whole CUDA wiring is exercised without a GPU.

FUSED_LSTM_BACKEND=reference|cpu|cuda|simt, read at import, forces one; tests set
FORCED_BACKEND. Tensors that reach this module have been validated and made
contiguous by fused_lstm._ops.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import _params, reference
from ._params import accumulate_dtype

try:
    from . import _C
except ImportError as error:  # a source tree that was never built
    _C = None
    _IMPORT_ERROR: Optional[ImportError] = error
else:
    _IMPORT_ERROR = None


def build_info() -> dict:
    return dict(_C.build_info()) if _C is not None else {"cuda": False, "import_error": str(_IMPORT_ERROR)}


# Read once: reading the environment on every call costs several microseconds
# of a short call (os.environ.get raises and catches KeyError when unset).
FORCED_BACKEND: Optional[str] = os.environ.get("FUSED_LSTM_BACKEND") or None


def cuda_kernels_available() -> bool:
    return _C is not None and hasattr(_C, "lstm_forward_cuda")


def choose(device_type: str, dtype: torch.dtype = torch.float32) -> str:
    """The backend for tensors of this device type ("cpu", "cuda"; a
    torch.device's .type, which takes ~10 us when its code is cold: callers on
    the eager path pass a constant) and dtype."""
    forced = FORCED_BACKEND
    if forced:
        if forced not in ("reference", "cpu", "cuda", "simt"):
            raise ValueError(f"FUSED_LSTM_BACKEND must be reference, cpu, cuda or simt, got {forced!r}")
        return forced
    # The CUDA recurrence stores fp32/fp16/bf16; float64 on a GPU takes the reference.
    if device_type == "cuda" and cuda_kernels_available() and dtype != torch.float64:
        return "cuda"
    if device_type == "cpu" and _C is not None:
        return "cpu"
    return "reference"


# CPU launches take the params' fields as keywords (no params object, no
# pybind11 dispatch), follow torch's intra-op thread count and reuse large
# internal buffers (_buffers).
def _cpu_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training, projection=None, state_prefix=()):
    outputs, fields = _params.forward_fields(_C, gates_x, w_hh, w_hr, h0, c0, batch_sizes, training,
                                             projection=projection, state_prefix=state_prefix, reuse_scratch=True)
    _C.lstm_forward_cpu_fields(**fields, num_threads=torch.get_num_threads())
    return outputs


def _cpu_backward(*args):
    outputs, fields = _params.backward_fields(_C, *args, reuse_scratch=True)
    _C.lstm_backward_cpu_fields(**fields, num_threads=torch.get_num_threads())
    return outputs


def _in_float32(run, tensors, dtype, storage_outputs):
    """Runs a float32 computation for fp16/bf16 storage; rounds the first
    `storage_outputs` outputs back to the storage dtype (saved buffers stay fp32)."""
    outputs = run(*[t.float() if isinstance(t, Tensor) and t.dtype == dtype else t for t in tensors])
    return tuple(o.to(dtype) if i < storage_outputs else o for i, o in enumerate(outputs))


def _reference_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training):
    with torch.no_grad():
        y, h_n, c_n, gates, c, h = reference.recurrence_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes)
    acc = accumulate_dtype(gates_x.dtype)
    gates, c, h = (saved.to(acc) if keep else gates_x.new_empty((0,), dtype=acc)
                   for saved, keep in ((gates, training), (c, training), (h, training and w_hr is not None)))
    return y, h_n, c_n, gates, c, h


def _host_run(cpu_fn, reference_fn, device, dtype, args, storage_outputs):
    """Runs on the host backends; fp16/bf16 storage is computed in float32 (the
    kernels' accumulation type) and rounded back, on either of them."""
    device_type = device.type
    run = cpu_fn if choose(device_type, dtype) == "cpu" and device_type == "cpu" else reference_fn
    if dtype in (torch.float16, torch.bfloat16):
        return _in_float32(run, args, dtype, storage_outputs)
    return run(*args)


def _kernel_module(backend: str):
    """The module whose CUDA kernels run this call, or None for the host backends."""
    if backend == "cuda":
        return _C
    if backend == "simt":
        from . import _simt
        return _simt
    return None


def recurrence_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training):
    args = (gates_x, w_hh, w_hr, h0, c0, batch_sizes, training)
    module = _kernel_module(choose(gates_x.device.type, gates_x.dtype))
    if module is not None:
        from . import _cuda_backend
        return _cuda_backend.forward(*args, module=module)
    return _host_run(_cpu_forward, _reference_forward, gates_x.device, gates_x.dtype, args, storage_outputs=3)


def projects_input(x: Tensor) -> bool:
    """Whether projected_forward takes x: the CPU recurrence, float32/float64."""
    return x.is_cpu and x.dtype in (torch.float32, torch.float64) and choose("cpu", x.dtype) == "cpu"


def projected_forward(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes, training=None, state_prefix=()):
    """One layer and direction with the input projection inside the CPU
    recurrence. Inference (training=None) returns y, h_n, c_n (see
    _params.forward_outputs for state_prefix); training=True also the saved
    buffers, as recurrence_forward."""
    return _cpu_forward(x, w_hh, w_hr, h0, c0, batch_sizes, training, projection=(w_ih, b_ih, b_hh),
                        state_prefix=state_prefix)


def projected_backward(x, w_ih, w_hh, w_hr, h0, c0, y, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n,
                       batch_sizes, needs_grad):
    """The backward of projected_forward's training call on the CPU recurrence,
    with the gradients of the input projection and of w_hh computed inside it
    (params.h's weight-gradient fields) instead of by GEMMs on grad_gates.
    needs_grad: (x, w_ih, bias, w_hh) flags. Returns grad_h_out (empty without
    projection), grad_h0, grad_c0, grad_x, grad_w_ih, grad_bias, grad_w_hh,
    None where not needed."""
    outputs, fields = _params.backward_fields(_C, w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n,
                                              grad_c_n, batch_sizes, reuse_scratch=True)
    weight_grads, weight_grad_fields = _params.weight_grad_fields(x, w_ih, w_hh, y, h0, needs_grad)
    _C.lstm_backward_cpu_fields(**fields, **weight_grad_fields, num_threads=torch.get_num_threads())
    return (*outputs[1:], *weight_grads)


def cell_forward(x, h, c, w_ih, b_ih, b_hh, w_hh, training):
    """One nn.LSTMCell step on the CPU recurrence (_params.cell_forward_fields):
    h', c' and, training, saved_gates and saved_c (else None). Only where
    projects_input(x); inputs contiguous and checked. w_ih, b_ih, b_hh, w_hh
    None: x is the step's whole pre-activation, the gate math alone runs."""
    outputs, fields = _params.cell_forward_fields(_C, x, h, c, w_ih, b_ih, b_hh, w_hh, training)
    _C.lstm_forward_cpu_fields(**fields, num_threads=torch.get_num_threads())
    return outputs


def cell_backward(x, h, c, w_ih, w_hh, h_next, saved_gates, saved_c, grad_h, grad_c, needs_grad):
    """The backward of cell_forward's training step, the weight gradients
    inside it: grad_x, grad_h, grad_c, grad_w_ih, grad_bias, grad_w_hh (None
    where needs_grad, for x, w_ih, the bias, w_hh, says no)."""
    outputs, fields = _params.cell_backward_fields(_C, x, h, c, w_ih, w_hh, h_next, saved_gates, saved_c, grad_h,
                                                   grad_c, needs_grad)
    _C.lstm_backward_cpu_fields(**fields, num_threads=torch.get_num_threads())
    return outputs


def cell_gate_math_backward(c, saved_gates, saved_c, grad_h, grad_c):
    """The backward of cell_forward's gate math alone (its w_ih None):
    grad_gates (of the pre-activation) and grad_c of the step's input c."""
    outputs, fields = _params.cell_gate_math_backward_fields(_C, c, saved_gates, saved_c, grad_h, grad_c)
    _C.lstm_backward_cpu_fields(**fields, num_threads=torch.get_num_threads())
    return outputs


def recurrence_backward(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes):
    """grad_h_n / grad_c_n may be None (zero): the CPU recurrence and the
    reference take that as it is; the CUDA kernels get zero tensors."""
    module = _kernel_module(choose(grad_y.device.type, grad_y.dtype))
    if module is not None:
        grad_h_n = grad_y.new_zeros(c0.shape[0], grad_y.shape[-1]) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0, dtype=grad_y.dtype) if grad_c_n is None else grad_c_n
    args = (w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes)
    if module is not None:
        from . import _cuda_backend
        return _cuda_backend.backward(*args, module=module)
    return _host_run(_cpu_backward, reference.recurrence_backward_from_saved, grad_y.device, grad_y.dtype, args,
                     storage_outputs=4)
