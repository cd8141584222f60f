"""Chooses where the recurrence runs, per call, and runs it there.

- "cuda": the compiled CUDA kernels (fused_lstm._cuda_backend), on CUDA tensors.
- "cpu": the compiled CPU recurrence (float32/float64; fp16/bf16 are computed
  in float32 and rounded back, as the kernels accumulate in float32).
- "reference": fused_lstm.reference, for anything the compiled core cannot take.

FUSED_LSTM_BACKEND=reference|cpu|cuda forces one (tests use it). Tensors that
reach this module have been validated and made contiguous by fused_lstm._ops.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import reference

try:
    from . import _C
except ImportError as error:  # a source tree that was never built
    _C = None
    _IMPORT_ERROR: Optional[ImportError] = error
else:
    _IMPORT_ERROR = None

_DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the saved buffers and cell-state math for a storage dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def build_info() -> dict:
    return dict(_C.build_info()) if _C is not None else {"cuda": False, "import_error": str(_IMPORT_ERROR)}


def cuda_kernels_available() -> bool:
    return _C is not None and hasattr(_C, "lstm_forward_cuda")


def choose(device: torch.device) -> str:
    forced = os.environ.get("FUSED_LSTM_BACKEND")
    if forced:
        if forced not in ("reference", "cpu", "cuda"):
            raise ValueError(f"FUSED_LSTM_BACKEND must be reference, cpu or cuda, got {forced!r}")
        return forced
    if device.type == "cuda" and cuda_kernels_available():
        return "cuda"
    if device.type == "cpu" and _C is not None:
        return "cpu"
    return "reference"


def new_output(shape, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Uninitialised output buffer; NaN-filled when FUSED_LSTM_POISON_OUTPUTS=1, so
    tests catch any element a kernel forgets to write."""
    tensor = torch.empty(shape, dtype=dtype or like.dtype, device=like.device)
    if os.environ.get("FUSED_LSTM_POISON_OUTPUTS") == "1" and tensor.is_floating_point():
        tensor.fill_(float("nan"))
    return tensor


def _pointer(tensor: Optional[Tensor]) -> int:
    return 0 if tensor is None or tensor.numel() == 0 else tensor.data_ptr()


def _sizes(gates_x: Tensor, h0: Tensor, c0: Tensor, w_hr: Optional[Tensor], batch_sizes: Optional[Tensor]):
    sizes = _C.LstmSizes()
    sizes.seq_len = gates_x.shape[0] if batch_sizes is None else batch_sizes.shape[0]
    sizes.batch = h0.shape[0]
    sizes.hidden = c0.shape[1]
    sizes.proj_size = 0 if w_hr is None else w_hr.shape[0]
    sizes.total_rows = gates_x.numel() // (4 * sizes.hidden)
    sizes.batch_sizes = _pointer(batch_sizes)
    return sizes


def _empty_saved(like: Tensor, rows: int, width: int, needed: bool) -> Tensor:
    return new_output((rows, width) if needed else (0,), like, accumulate_dtype(like.dtype))


def _cpu_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training):
    hidden, out_size = c0.shape[1], h0.shape[1]
    rows = gates_x.numel() // (4 * hidden)
    y = new_output((*gates_x.shape[:-1], out_size), gates_x)
    h_n, c_n = new_output(h0.shape, h0), new_output(c0.shape, c0)
    saved_gates = _empty_saved(gates_x, rows, 4 * hidden, training)
    saved_c = _empty_saved(gates_x, rows, hidden, training)
    saved_h = _empty_saved(gates_x, rows, hidden, training and w_hr is not None)
    params = _C.LstmFwdParams()
    params.sizes = _sizes(gates_x, h0, c0, w_hr, batch_sizes)
    params.dtype = getattr(_C.DType, _DTYPES[gates_x.dtype])
    params.gates_x, params.w_hh, params.w_hr = _pointer(gates_x), _pointer(w_hh), _pointer(w_hr)
    params.h0, params.c0 = _pointer(h0), _pointer(c0)
    params.y, params.h_n, params.c_n = _pointer(y), _pointer(h_n), _pointer(c_n)
    params.saved_gates, params.saved_c, params.saved_h = _pointer(saved_gates), _pointer(saved_c), _pointer(saved_h)
    params.num_threads = torch.get_num_threads()
    _C.lstm_forward_cpu(params)
    return y, h_n, c_n, saved_gates, saved_c, saved_h


def _cpu_backward(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes):
    hidden = c0.shape[1]
    grad_gates = new_output((*grad_y.shape[:-1], 4 * hidden), grad_y)
    grad_h_out = new_output(grad_y.shape if w_hr is not None else (0,), grad_y)
    grad_h0, grad_c0 = new_output(grad_h_n.shape, grad_h_n), new_output(grad_c_n.shape, grad_c_n)
    params = _C.LstmBwdParams()
    params.sizes = _sizes(grad_gates, grad_h_n, c0, w_hr, batch_sizes)
    params.dtype = getattr(_C.DType, _DTYPES[grad_y.dtype])
    params.w_hh, params.w_hr, params.c0 = _pointer(w_hh), _pointer(w_hr), _pointer(c0)
    params.saved_gates, params.saved_c, params.saved_h = _pointer(saved_gates), _pointer(saved_c), _pointer(saved_h)
    params.grad_y, params.grad_h_n, params.grad_c_n = _pointer(grad_y), _pointer(grad_h_n), _pointer(grad_c_n)
    params.grad_gates, params.grad_h_out = _pointer(grad_gates), _pointer(grad_h_out)
    params.grad_h0, params.grad_c0 = _pointer(grad_h0), _pointer(grad_c0)
    params.num_threads = torch.get_num_threads()
    _C.lstm_backward_cpu(params)
    return grad_gates, grad_h_out, grad_h0, grad_c0


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
    run = cpu_fn if choose(device) == "cpu" and device.type == "cpu" else reference_fn
    if dtype in (torch.float16, torch.bfloat16):
        return _in_float32(run, args, dtype, storage_outputs)
    return run(*args)


def recurrence_forward(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training):
    args = (gates_x, w_hh, w_hr, h0, c0, batch_sizes, training)
    if choose(gates_x.device) == "cuda":
        from . import _cuda_backend
        return _cuda_backend.forward(*args)
    return _host_run(_cpu_forward, _reference_forward, gates_x.device, gates_x.dtype, args, storage_outputs=3)


def recurrence_backward(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes):
    args = (w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes)
    if choose(grad_y.device) == "cuda":
        from . import _cuda_backend
        return _cuda_backend.backward(*args)
    return _host_run(_cpu_backward, reference.recurrence_backward_from_saved, grad_y.device, grad_y.dtype, args,
                     storage_outputs=4)
