"""The CUDA recurrence (csrc/cuda) called from PyTorch tensors.

``forward`` / ``backward`` have the semantics, layouts and outputs of
fused_lstm._ops' recurrence ops (fused_lstm._params fills the params). Inputs
are already validated and contiguous; outputs and workspace come from torch's
allocator on the inputs' device, and the kernels run on torch's current stream
(no host sync).

The same code drives ``fused_lstm._simt`` (the kernels run on the CPU by
csrc/simt, tests only): pass ``module`` and host tensors.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _params
from ._params import Allocator, output_allocator


def _default_module():
    from . import _C
    return _C


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


def _configure(module, device: torch.device, path: Optional[str], alloc: Optional[Allocator], workspace_bytes):
    """Stream, path and workspace of a launch; returns the workspace to keep it alive."""
    def configure(p):
        p.stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
        p.path = getattr(module.RecurrencePath, path or "auto")
        workspace = output_allocator(alloc)((workspace_bytes(p),), dtype=torch.uint8, device=device)
        p.workspace, p.workspace_bytes = workspace.data_ptr(), workspace.numel()
        return workspace
    return configure


def forward(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor, c0: Tensor,
            batch_sizes: Optional[Tensor], training: bool, *, module=None, path: Optional[str] = None,
            alloc: Optional[Allocator] = None) -> Tuple[Tensor, ...]:
    """Returns y, h_n, c_n, saved_gates, saved_c, saved_h (saved in fp32; empty
    tensors in inference, saved_h empty without a projection)."""
    module = module or _default_module()
    device = gates_x.device
    configure = _configure(module, device, path, alloc, module.lstm_forward_workspace_bytes)
    with _on_device(device):
        return _params.run_forward(module, module.lstm_forward_cuda, gates_x, w_hh, w_hr, h0, c0,
                                   _device_batch_sizes(batch_sizes, device), training, alloc, configure)


def backward(w_hh: Tensor, w_hr: Optional[Tensor], c0: Tensor, saved_gates: Tensor, saved_c: Tensor,
             saved_h: Optional[Tensor], grad_y: Tensor, grad_h_n: Tensor, grad_c_n: Tensor,
             batch_sizes: Optional[Tensor], *, module=None, path: Optional[str] = None,
             alloc: Optional[Allocator] = None) -> Tuple[Tensor, ...]:
    """Returns grad_gates (layout of grad_y, last dim 4H), grad_h_out (grad_y's
    shape; empty without a projection), grad_h0, grad_c0."""
    module = module or _default_module()
    device = grad_y.device
    configure = _configure(module, device, path, alloc, module.lstm_backward_workspace_bytes)
    with _on_device(device):
        return _params.run_backward(module, module.lstm_backward_cuda, w_hh, w_hr, c0, saved_gates, saved_c,
                                    saved_h, grad_y, grad_h_n, grad_c_n, _device_batch_sizes(batch_sizes, device),
                                    alloc, configure)
