"""The CUDA recurrence (csrc/cuda) called from PyTorch tensors.

``forward`` / ``backward`` have the semantics and layouts of
``fused_lstm.reference.recurrence_forward`` / ``recurrence_backward`` (without
the weight gradients, which the framework computes with one GEMM each from
``grad_gates`` and ``grad_h_out``). Inputs are already validated and
contiguous; outputs and workspace come from torch's allocator on the inputs'
device, and the kernels run on torch's current stream (no host sync).

The same code fills the params for ``fused_lstm._simt`` (the kernels run on the
CPU by csrc/simt, tests only): pass ``module`` and host tensors.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

Allocator = Callable[..., Tensor]  # (shape, dtype, device) -> Tensor


def _empty(shape, dtype, device) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _default_module():
    from . import _C
    return _C


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _sizes(module, steps_of: Tensor, hidden: int, batch: int, proj_size: int, batch_sizes: Optional[Tensor]):
    sizes = module.LstmSizes()
    sizes.hidden, sizes.batch, sizes.proj_size = hidden, batch, proj_size
    if batch_sizes is None:
        sizes.seq_len = steps_of.shape[0]
        sizes.total_rows = steps_of.shape[0] * batch
    else:
        sizes.seq_len = batch_sizes.shape[0]
        sizes.total_rows = steps_of.numel() // steps_of.shape[-1]
        sizes.batch_sizes = batch_sizes.data_ptr()
    return sizes


def _device_batch_sizes(batch_sizes: Optional[Tensor], device: torch.device) -> Optional[Tensor]:
    # The kernels read per-step batch sizes on the device, as int64. A CPU
    # tensor (PackedSequence's) goes through pinned memory so the copy is
    # asynchronous on the current stream: no host sync.
    if batch_sizes is None:
        return None
    batch_sizes = batch_sizes.to(dtype=torch.int64).contiguous()
    if device.type == "cuda" and batch_sizes.device.type == "cpu":
        return batch_sizes.pin_memory().to(device, non_blocking=True)
    return batch_sizes.to(device)


def _on_device(device: torch.device):
    # Kernels launch on the current CUDA device: make it the tensors' device.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _path(module, path: Optional[str]):
    return getattr(module.RecurrencePath, path or "auto")


def forward(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor, c0: Tensor,
            batch_sizes: Optional[Tensor], training: bool, *, module=None, path: Optional[str] = None,
            alloc: Allocator = _empty) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor],
                                                 Optional[Tensor]]:
    """Returns y, h_n, c_n, saved_gates, saved_c, saved_h (the saved tensors in
    fp32; None in inference, saved_h None without a projection)."""
    module = module or _default_module()
    device, dtype = gates_x.device, gates_x.dtype
    hidden, batch, out_size = c0.shape[-1], c0.shape[0], h0.shape[-1]
    proj_size = w_hr.shape[0] if w_hr is not None else 0
    batch_sizes = _device_batch_sizes(batch_sizes, device)
    rows = gates_x.numel() // gates_x.shape[-1]
    y = alloc((*gates_x.shape[:-1], out_size), dtype, device)
    h_n, c_n = alloc(h0.shape, dtype, device), alloc(c0.shape, dtype, device)
    saved_gates = saved_c = saved_h = None
    if training:
        saved_gates = alloc((rows, 4 * hidden), torch.float32, device)
        saved_c = alloc((rows, hidden), torch.float32, device)
        if proj_size > 0:
            saved_h = alloc((rows, hidden), torch.float32, device)

    p = module.LstmFwdParams()
    p.sizes = _sizes(module, gates_x, hidden, batch, proj_size, batch_sizes)
    p.dtype = getattr(module.DType, _DTYPE_NAMES[dtype])
    p.gates_x, p.w_hh, p.w_hr, p.h0, p.c0 = map(_ptr, (gates_x, w_hh, w_hr, h0, c0))
    p.y, p.h_n, p.c_n = map(_ptr, (y, h_n, c_n))
    p.saved_gates, p.saved_c, p.saved_h = map(_ptr, (saved_gates, saved_c, saved_h))
    p.stream = _stream(device)
    p.path = _path(module, path)
    workspace = alloc((module.lstm_forward_workspace_bytes(p),), torch.uint8, device)
    p.workspace, p.workspace_bytes = workspace.data_ptr(), workspace.numel()
    with _on_device(device):
        module.lstm_forward_cuda(p)
    return y, h_n, c_n, saved_gates, saved_c, saved_h


def backward(w_hh: Tensor, w_hr: Optional[Tensor], c0: Tensor, saved_gates: Tensor, saved_c: Tensor,
             saved_h: Optional[Tensor], grad_y: Tensor, grad_h_n: Tensor, grad_c_n: Tensor,
             batch_sizes: Optional[Tensor], *, module=None, path: Optional[str] = None,
             alloc: Allocator = _empty) -> Tuple[Tensor, Optional[Tensor], Tensor, Tensor]:
    """Returns grad_gates (layout of gates_x), grad_h_out ([rows, P], None
    without a projection), grad_h0, grad_c0."""
    module = module or _default_module()
    device, dtype = grad_y.device, grad_y.dtype
    hidden, batch = c0.shape[-1], c0.shape[0]
    proj_size = w_hr.shape[0] if w_hr is not None else 0
    batch_sizes = _device_batch_sizes(batch_sizes, device)
    rows = grad_y.numel() // grad_y.shape[-1]
    grad_gates = alloc((*grad_y.shape[:-1], 4 * hidden), dtype, device)
    grad_h_out = alloc((rows, proj_size), dtype, device) if proj_size > 0 else None
    grad_h0, grad_c0 = alloc(grad_h_n.shape, dtype, device), alloc(grad_c_n.shape, dtype, device)

    p = module.LstmBwdParams()
    p.sizes = _sizes(module, grad_y, hidden, batch, proj_size, batch_sizes)
    p.dtype = getattr(module.DType, _DTYPE_NAMES[dtype])
    p.w_hh, p.w_hr, p.c0 = map(_ptr, (w_hh, w_hr, c0))
    p.saved_gates, p.saved_c, p.saved_h = map(_ptr, (saved_gates, saved_c, saved_h))
    p.grad_y, p.grad_h_n, p.grad_c_n = map(_ptr, (grad_y, grad_h_n, grad_c_n))
    p.grad_gates, p.grad_h_out, p.grad_h0, p.grad_c0 = map(_ptr, (grad_gates, grad_h_out, grad_h0, grad_c0))
    p.stream = _stream(device)
    p.path = _path(module, path)
    workspace = alloc((module.lstm_backward_workspace_bytes(p),), torch.uint8, device)
    p.workspace, p.workspace_bytes = workspace.data_ptr(), workspace.numel()
    with _on_device(device):
        module.lstm_backward_cuda(p)
    return grad_gates, grad_h_out, grad_h0, grad_c0
