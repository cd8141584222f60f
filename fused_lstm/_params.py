"""The one place that fills the compiled core's params structs
(csrc/common/params.h) from tensors and allocates the outputs.

Shared by the CPU backend (fused_lstm._C's CPU recurrence), the CUDA backend
and the simt module (the CUDA kernels run on the CPU in tests): ``module`` is
the pybind11 module whose struct types are used, ``launch`` the entry point,
and ``configure`` adds what the device needs (stream, workspace, threads)
before the launch. The structs' pointer fields take tensors (their data_ptr),
None (null) or ints (csrc/bind_params.h).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from . import _buffers

Allocator = Callable[..., Tensor]  # (shape, *, dtype, device) -> Tensor, as torch.empty

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the saved buffers and cell-state math for a storage dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# NaN-fill every output buffer, so tests catch any element a kernel forgets to
# write. Set from FUSED_LSTM_POISON_OUTPUTS=1 at import; tests set it directly.
POISON_OUTPUTS = os.environ.get("FUSED_LSTM_POISON_OUTPUTS") == "1"


def poisoned_buffer(shape, *, dtype: torch.dtype, device: torch.device, empty: Allocator = torch.empty) -> Tensor:
    """A NaN-filled buffer from empty (left uninitialised if not floating point)."""
    tensor = empty(shape, dtype=dtype, device=device)
    return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor


def output_allocator(alloc: Optional[Allocator] = None) -> Allocator:
    """alloc, or else torch.empty itself (poisoned_buffer under POISON_OUTPUTS):
    no Python frame per buffer on the default path."""
    if alloc is not None:
        return alloc
    return poisoned_buffer if POISON_OUTPUTS else torch.empty


def scratch_allocator(alloc: Optional[Allocator], reuse: bool) -> Allocator:
    """The allocator of the internal buffers (saved gates and cells, the gate
    gradients): output_allocator(alloc), or with reuse (the CPU backend's
    calls, alloc None) the pool of _buffers, NaN-filled under POISON_OUTPUTS."""
    if alloc is not None or not reuse:
        return output_allocator(alloc)
    return functools.partial(poisoned_buffer, empty=_buffers.reused_empty) if POISON_OUTPUTS else _buffers.reused_empty


def allocator_for(like: Tensor, alloc: Allocator) -> Callable[..., Tensor]:
    """shape -> an unfilled tensor of like's dtype and device from alloc. The
    default (torch.empty) is like.new_empty, whose dtype and device come with
    the tensor instead of being parsed from arguments: a torch.device's parse
    costs ~15 us of a short call whose code is out of cache."""
    if alloc is torch.empty:
        return like.new_empty
    return functools.partial(alloc, dtype=like.dtype, device=like.device)


def _size_fields(rows_like: Tensor, batch: int, hidden: int, proj_size: int, batch_sizes: Optional[Tensor]) -> dict:
    """LstmSizes' fields, which the params structs' constructors take as keywords."""
    return dict(seq_len=rows_like.shape[0] if batch_sizes is None else batch_sizes.shape[0], batch=batch,
                hidden=hidden, proj_size=proj_size, total_rows=rows_like.numel() // rows_like.shape[-1],
                batch_sizes=batch_sizes)


def zero_state_sizes(sequence: Tensor, w_hh: Tensor, batch_sizes: Optional[Tensor]) -> Tuple[int, int, int]:
    """(batch, hidden, out_size) of a zero initial state (h0 = c0 = None): the
    batch from the sequence (dense [T, N, ...] or packed), the rest from w_hh."""
    batch = sequence.shape[1] if batch_sizes is None else int(batch_sizes[0])
    return batch, w_hh.shape[0] // 4, w_hh.shape[1]


def forward_outputs(gates_x: Tensor, w_hr: Optional[Tensor], batch: int, hidden: int, out_size: int,
                    training: Optional[bool], alloc: Allocator, state_prefix: Tuple[int, ...] = (),
                    scratch_alloc: Optional[Allocator] = None) -> Tuple[Tensor, ...]:
    """The forward recurrence's outputs, unfilled: y, h_n, c_n, saved_gates,
    saved_c, saved_h (from scratch_alloc, default alloc); what is not saved is
    empty. Also the op's fake kernel.
    Of gates_x (or x, when the input is projected inside) only the leading
    dims, dtype and device are used. h_n and c_n are [*state_prefix, N, ...]
    (state_prefix=(1,): nn.LSTM's stacked layout of one layer, without a view op)."""
    new = allocator_for(gates_x, alloc)
    outputs = (new((*gates_x.shape[:-1], out_size)), new((*state_prefix, batch, out_size)),
               new((*state_prefix, batch, hidden)))
    if training is None:  # inference without the op's empty saved buffers
        return outputs
    device, acc = gates_x.device, accumulate_dtype(gates_x.dtype)
    rows = gates_x.numel() // gates_x.shape[-1]

    def saved(width, needed):
        return (scratch_alloc or alloc)((rows, width) if needed else (0,), dtype=acc, device=device)

    return outputs + (saved(4 * hidden, training), saved(hidden, training),
                      saved(hidden, training and w_hr is not None))


def backward_outputs(w_hr: Optional[Tensor], c0: Tensor, grad_y: Tensor, alloc: Allocator,
                     scratch_alloc: Optional[Allocator] = None) -> Tuple[Tensor, ...]:
    """The backward recurrence's outputs, unfilled: grad_gates (from
    scratch_alloc, default alloc), grad_h_out (empty without projection),
    grad_h0 [N, H_out], grad_c0 [N, H]. Also the op's fake kernel."""
    new = allocator_for(grad_y, alloc)
    return (allocator_for(grad_y, scratch_alloc or alloc)((*grad_y.shape[:-1], 4 * c0.shape[1])),
            new(grad_y.shape if w_hr is not None else (0,)), new((c0.shape[0], grad_y.shape[-1])), new(c0.shape))


Projection = Tuple[Tensor, Optional[Tensor], Optional[Tensor]]  # w_ih, b_ih, b_hh


def run_forward(module, launch: Callable, gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
                h0: Optional[Tensor], c0: Optional[Tensor], batch_sizes: Optional[Tensor], training: Optional[bool],
                alloc: Optional[Allocator] = None, configure: Optional[Callable] = None,
                projection: Optional[Projection] = None) -> Tuple[Tensor, ...]:
    """Returns y, h_n, c_n, saved_gates, saved_c, saved_h (see _ops.recurrence_forward);
    what is not saved is an empty tensor. training=None: inference returning
    y, h_n, c_n only (no empty saved buffers to allocate).

    projection = (w_ih, b_ih, b_hh): the first argument is then x, projected
    inside the recurrence (CPU only; params.h's input_size). h0 and c0 None:
    a zero initial state (CPU only)."""
    outputs, fields = forward_fields(module, gates_x, w_hh, w_hr, h0, c0, batch_sizes, training, alloc, projection)
    p = module.LstmFwdParams(**fields)
    keep_alive = configure(p) if configure else None  # e.g. the workspace, until the launch is queued
    launch(p)
    del keep_alive
    return outputs


def forward_fields(module, gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Optional[Tensor],
                   c0: Optional[Tensor], batch_sizes: Optional[Tensor], training: Optional[bool],
                   alloc: Optional[Allocator] = None, projection: Optional[Projection] = None,
                   state_prefix: Tuple[int, ...] = (), reuse_scratch: bool = False
                   ) -> Tuple[Tuple[Tensor, ...], dict]:
    """run_forward's outputs (unfilled; state_prefix: see forward_outputs) and
    the LstmFwdParams fields that fill them, for a launcher that takes the
    fields themselves (lstm_forward_cpu_fields). reuse_scratch: the saved
    buffers from scratch_allocator's pool."""
    if c0 is not None:
        batch, hidden, out_size = c0.shape[0], c0.shape[1], h0.shape[1]
    else:
        batch, hidden, out_size = zero_state_sizes(gates_x, w_hh, batch_sizes)
    outputs = forward_outputs(gates_x, w_hr, batch, hidden, out_size, training, output_allocator(alloc), state_prefix,
                              scratch_allocator(alloc, reuse_scratch))
    y, h_n, c_n = outputs[:3]
    saved_gates, saved_c, saved_h = outputs[3:] if training is not None else (None, None, None)

    fields = _size_fields(gates_x, batch, hidden, 0 if w_hr is None else out_size, batch_sizes)
    fields.update(dtype=getattr(module.DType, _DTYPE_NAMES[gates_x.dtype]), w_hh=w_hh, w_hr=w_hr, h0=h0, c0=c0,
                  y=y, h_n=h_n, c_n=c_n, saved_gates=saved_gates, saved_c=saved_c, saved_h=saved_h)
    if projection is None:
        fields.update(gates_x=gates_x)
    else:
        w_ih, b_ih, b_hh = projection
        fields.update(x=gates_x, input_size=gates_x.shape[-1], w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
    return outputs, fields


def run_backward(module, launch: Callable, w_hh: Tensor, w_hr: Optional[Tensor], c0: Tensor, saved_gates: Tensor,
                 saved_c: Tensor, saved_h: Optional[Tensor], grad_y: Tensor, grad_h_n: Optional[Tensor],
                 grad_c_n: Optional[Tensor], batch_sizes: Optional[Tensor], alloc: Optional[Allocator] = None,
                 configure: Optional[Callable] = None) -> Tuple[Tensor, ...]:
    """Returns grad_gates (layout of grad_y, last dim 4H), grad_h_out (grad_y's
    shape; empty without projection), grad_h0, grad_c0. grad_h_n / grad_c_n
    None (a null pointer: zero) only for a launch that accepts it (the CPU's)."""
    outputs, fields = backward_fields(module, w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n,
                                      grad_c_n, batch_sizes, alloc)
    p = module.LstmBwdParams(**fields)
    keep_alive = configure(p) if configure else None
    launch(p)
    del keep_alive
    return outputs


def backward_fields(module, w_hh: Tensor, w_hr: Optional[Tensor], c0: Tensor, saved_gates: Tensor,
                    saved_c: Tensor, saved_h: Optional[Tensor], grad_y: Tensor, grad_h_n: Optional[Tensor],
                    grad_c_n: Optional[Tensor], batch_sizes: Optional[Tensor],
                    alloc: Optional[Allocator] = None, reuse_scratch: bool = False
                    ) -> Tuple[Tuple[Tensor, ...], dict]:
    """run_backward's outputs (unfilled) and the LstmBwdParams fields that
    fill them, for a launcher that takes the fields themselves
    (lstm_backward_cpu_fields). reuse_scratch: grad_gates from
    scratch_allocator's pool."""
    proj_size = 0 if w_hr is None else w_hr.shape[0]
    outputs = backward_outputs(w_hr, c0, grad_y, output_allocator(alloc), scratch_allocator(alloc, reuse_scratch))
    grad_gates, grad_h_out, grad_h0, grad_c0 = outputs
    fields = _size_fields(grad_y, c0.shape[0], c0.shape[1], proj_size, batch_sizes)
    fields.update(dtype=getattr(module.DType, _DTYPE_NAMES[grad_y.dtype]), w_hh=w_hh, w_hr=w_hr, c0=c0,
                  saved_gates=saved_gates, saved_c=saved_c, saved_h=saved_h, grad_y=grad_y, grad_h_n=grad_h_n,
                  grad_c_n=grad_c_n, grad_gates=grad_gates, grad_h_out=grad_h_out, grad_h0=grad_h0,
                  grad_c0=grad_c0)
    return outputs, fields


def weight_grad_fields(x: Tensor, w_ih: Tensor, w_hh: Tensor, y: Tensor, h0: Tensor,
                       needs_grad: Tuple[bool, bool, bool, bool]) -> Tuple[Tuple[Optional[Tensor], ...], dict]:
    """The CPU backward's weight-gradient outputs, unfilled: grad_x, grad_w_ih,
    grad_bias, grad_w_hh (None where needs_grad, for x, w_ih, the bias, w_hh,
    says no), and the LstmBwdParams fields that have the recurrence compute
    them, with the inputs they read (y and h0: the rows of h_{t-1})."""
    new = allocator_for(x, output_allocator())
    grads = tuple(new(shape) if needed else None
                  for needed, shape in zip(needs_grad, (x.shape, w_ih.shape, (w_hh.shape[0],), w_hh.shape)))
    grad_x, grad_w_ih, grad_bias, grad_w_hh = grads
    return grads, dict(input_size=x.shape[-1], x=x, w_ih=w_ih, y=y, h0=h0, grad_x=grad_x, grad_w_ih=grad_w_ih,
                       grad_bias=grad_bias, grad_w_hh=grad_w_hh)


# One step of nn.LSTMCell's math on the CPU recurrence (FusedLSTMCell's eager
# step): always T = 1, dense, no projection, a state given. Its fields are
# spelled out here, not built by forward_fields / backward_fields, whose
# generality costs more than a small cell's kernels (N=1, H=64: ~40 us against
# ~30 us for the two launches).

def cell_forward_fields(module, x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, b_ih: Optional[Tensor],
                        b_hh: Optional[Tensor], w_hh: Tensor, training: bool) -> Tuple[Tuple[Tensor, ...], dict]:
    """Outputs h', c' and, training, saved_gates [N, 4H] and saved_c [N, H]
    (else None), with the fields that fill them. x [N, I], h and c [N, H]. The
    step's y [1, N, H] and its h_n [N, H] are both h' (same layout, same rows).
    w_ih and w_hh None (params.h's gate_math_only): x is the step's whole
    pre-activation [N, 4H], the gate math alone runs; the biases are None."""
    new = allocator_for(x, output_allocator())  # x: float32 or float64, its own accumulation dtype
    batch, hidden = c.shape
    h_next, c_next = new((batch, hidden)), new((batch, hidden))
    saved_gates = new((batch, 4 * hidden)) if training else None
    saved_c = new((batch, hidden)) if training else None
    fields = dict(seq_len=1, batch=batch, hidden=hidden, proj_size=0, total_rows=batch, batch_sizes=None,
                  dtype=getattr(module.DType, _DTYPE_NAMES[x.dtype]), w_hh=w_hh, w_hr=None, h0=h, c0=c, y=h_next,
                  h_n=h_next, c_n=c_next, saved_gates=saved_gates, saved_c=saved_c, saved_h=None)
    if w_ih is None:
        fields.update(gates_x=x)
    else:
        fields.update(x=x, input_size=x.shape[1], w_ih=w_ih, b_ih=b_ih, b_hh=b_hh)
    return (h_next, c_next, saved_gates, saved_c), fields


def cell_backward_fields(module, x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, h_next: Tensor,
                         saved_gates: Tensor, saved_c: Tensor, grad_h: Tensor, grad_c: Optional[Tensor],
                         needs_grad: Tuple[bool, bool, bool, bool]) -> Tuple[Tuple[Optional[Tensor], ...], dict]:
    """Outputs grad_x, grad_h, grad_c (of the step's inputs), grad_w_ih,
    grad_bias, grad_w_hh (None where needs_grad, for x, w_ih, the bias, w_hh,
    says no) of cell_forward_fields' training step, with the fields that fill
    them: the weight gradients inside the backward recurrence
    (weight_grad_fields). grad_h [N, H]; grad_c None is zero."""
    new = allocator_for(x, output_allocator())
    batch, hidden = c.shape
    (grad_x, grad_w_ih, grad_bias, grad_w_hh), fields = weight_grad_fields(x, w_ih, w_hh, h_next, h, needs_grad)
    (_, grad_c0), step_fields = cell_gate_math_backward_fields(module, c, saved_gates, saved_c, grad_h, grad_c)
    grad_h0 = new((batch, hidden))
    fields.update(step_fields, w_hh=w_hh, grad_h0=grad_h0)
    return (grad_x, grad_h0, grad_c0, grad_w_ih, grad_bias, grad_w_hh), fields


def cell_gate_math_backward_fields(module, c: Tensor, saved_gates: Tensor, saved_c: Tensor, grad_h: Tensor,
                                   grad_c: Optional[Tensor]) -> Tuple[Tuple[Tensor, Tensor], dict]:
    """Outputs grad_gates [N, 4H] (of the step's pre-activation) and grad_c
    [N, H] of a cell step's gate math, with the fields that fill them
    (params.h's gate_math_only: w_hh None, no grad_h0)."""
    new = allocator_for(saved_c, output_allocator())
    batch, hidden = c.shape
    grad_gates, grad_c0 = new((batch, 4 * hidden)), new((batch, hidden))
    fields = dict(seq_len=1, batch=batch, hidden=hidden, proj_size=0, total_rows=batch, batch_sizes=None,
                  dtype=getattr(module.DType, _DTYPE_NAMES[c.dtype]), w_hh=None, w_hr=None, c0=c,
                  saved_gates=saved_gates, saved_c=saved_c, saved_h=None, grad_y=grad_h, grad_h_n=None,
                  grad_c_n=grad_c, grad_gates=grad_gates, grad_h_out=None, grad_h0=None, grad_c0=grad_c0)
    return (grad_gates, grad_c0), fields
