"""The recurrence as PyTorch custom ops, with fake (meta) kernels and autograd.

fused_lstm::recurrence_forward and fused_lstm::recurrence_backward wrap the
sequential part of one LSTM layer and direction (DESIGN.md's data flow); the
GEMMs around it are ordinary torch ops in fused_lstm.functional, so autograd
differentiates them itself. Eager CPU calls run the recurrence with the input
projection inside instead, without the dispatcher: run_projected_forward
(inference) and projected_recurrence_training (an autograd.Function).
Layouts are those of csrc/common/params.h: gates_x [T, N, 4H] dense or
[rows, 4H] packed with batch_sizes [T] (int64, CPU).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _backend, _params

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_like(like_name: str, like: Tensor, named: Tuple[Tuple[str, Optional[Tensor], int], ...]) -> None:
    """Every (name, tensor, dim) given (not None) has like's dtype and device and dim dims."""
    dtype, on_cpu = like.dtype, like.is_cpu
    for name, tensor, dim in named:
        if tensor is None:
            continue
        if tensor.dtype != dtype:
            raise TypeError(f"fused_lstm: {name} has dtype {tensor.dtype} but {like_name} has {dtype}")
        # (is_cpu first: .device makes a new object, slowly when cold)
        if not (on_cpu and tensor.is_cpu) and tensor.device != like.device:
            raise ValueError(f"fused_lstm: {name} is on {tensor.device} but {like_name} is on {like.device}")
        if tensor.dim() != dim:
            raise ValueError(f"fused_lstm: {name} must be {dim}-D, got shape {tuple(tensor.shape)}")


def _contiguous(*tensors: Optional[Tensor]) -> list:
    """The kernels' inputs: contiguous, None kept."""
    return [t.contiguous() if t is not None else None for t in tensors]


def check_recurrence_args(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Optional[Tensor],
                          c0: Optional[Tensor], batch_sizes: Optional[Tensor], check_values: bool = True,
                          sequence_name: str = "gates_x", sequence_width: Optional[int] = None) -> None:
    """Raises ValueError/TypeError naming the argument before any kernel runs.
    check_values=False skips what needs batch_sizes' values (fake tensors).
    The sequence (gates_x) has rows of 4H values, or of sequence_width.
    h0 and c0 both None (a zero state; only the CPU recurrence takes it):
    w_hh gives the hidden size and the sequence the batch."""
    if gates_x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"fused_lstm: {sequence_name} must be float32, float64, float16 or bfloat16, "
                        f"got {gates_x.dtype}")
    _check_like(sequence_name, gates_x, (("w_hh", w_hh, 2), ("w_hr", w_hr, 2), ("h0", h0, 2), ("c0", c0, 2)))
    proj_size = 0 if w_hr is None else w_hr.shape[0]
    if (h0 is None) != (c0 is None):
        raise ValueError("fused_lstm: h0 and c0 must both be given or both be None")
    if c0 is None:
        batch, hidden = None, w_hh.shape[0] // 4
        out_size = proj_size or hidden
    else:
        batch, out_size = h0.shape
        hidden = c0.shape[1]
    if hidden == 0 or (proj_size > 0 and proj_size >= hidden):
        raise ValueError(f"fused_lstm: hidden size {hidden} with proj_size {proj_size}")
    if c0 is not None and (out_size != (proj_size or hidden) or c0.shape[0] != batch):
        raise ValueError(f"fused_lstm: h0 {tuple(h0.shape)} and c0 {tuple(c0.shape)} do not fit "
                         f"hidden={hidden}, proj_size={proj_size}")
    if tuple(w_hh.shape) != (4 * hidden, out_size):
        raise ValueError(f"fused_lstm: w_hh must have shape {(4 * hidden, out_size)}, got {tuple(w_hh.shape)}")
    if w_hr is not None and tuple(w_hr.shape) != (proj_size, hidden):
        raise ValueError(f"fused_lstm: w_hr must have shape {(proj_size, hidden)}, got {tuple(w_hr.shape)}")
    width = 4 * hidden if sequence_width is None else sequence_width
    if batch_sizes is None:
        if gates_x.dim() != 3 or (batch is not None and gates_x.shape[1] != batch) or gates_x.shape[2] != width:
            raise ValueError(f"fused_lstm: {sequence_name} must have shape (T, {'N' if batch is None else batch}, "
                             f"{width}), got {tuple(gates_x.shape)}")
        if gates_x.shape[0] == 0:
            raise ValueError("fused_lstm: sequence length must be at least 1")
        return
    if batch_sizes.dtype != torch.int64 or batch_sizes.dim() != 1 or batch_sizes.device.type != "cpu":
        raise ValueError("fused_lstm: batch_sizes must be a 1-D int64 CPU tensor")
    if gates_x.dim() != 2 or gates_x.shape[1] != width:
        raise ValueError(f"fused_lstm: packed {sequence_name} must have shape (rows, {width}), "
                         f"got {tuple(gates_x.shape)}")
    if check_values:
        _check_batch_sizes_values(batch_sizes, batch, gates_x.shape[0])


def _check_batch_sizes_values(batch_sizes: Tensor, batch: Optional[int], rows: int) -> None:
    """batch None: whatever batch_sizes starts with."""
    sizes = batch_sizes.tolist()
    if batch is None and sizes:
        batch = sizes[0]
    if (not sizes or sizes[0] != batch or any(b <= 0 for b in sizes)
            or any(later > earlier for earlier, later in zip(sizes, sizes[1:]))
            or sum(sizes) != rows):
        raise ValueError(f"fused_lstm: batch_sizes must be positive, non-increasing, start at the batch size "
                         f"{batch} and add up to {rows} rows; got {sizes}")


def run_recurrence_forward(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor, c0: Tensor,
                           batch_sizes: Optional[Tensor], training: bool
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns y, h_n, c_n and the buffers backward needs (empty unless training):
    saved_gates [rows, 4H], saved_c [rows, H], saved_h [rows, H] (projection only).

    The op's implementation. Eager inference calls it directly (see
    functional.lstm_layer): the dispatcher would add ~20 us a call and has
    nothing to do there."""
    check_recurrence_args(gates_x, w_hh, w_hr, h0, c0, batch_sizes)
    return _backend.recurrence_forward(*_contiguous(gates_x, w_hh, w_hr, h0, c0, batch_sizes), training)


recurrence_forward = torch.library.custom_op("fused_lstm::recurrence_forward", mutates_args=())(
    run_recurrence_forward)


def _check_projected_args(x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hh: Tensor,
                          w_hr: Optional[Tensor], h0: Optional[Tensor], c0: Optional[Tensor],
                          batch_sizes: Optional[Tensor]) -> None:
    """check_recurrence_args for x in place of gates_x, and the projection's weights."""
    check_recurrence_args(x, w_hh, w_hr, h0, c0, batch_sizes, sequence_name="x", sequence_width=w_ih.shape[-1])
    hidden = w_hh.shape[0] // 4  # checked
    _check_like("x", x, (("w_ih", w_ih, 2), ("b_ih", b_ih, 1), ("b_hh", b_hh, 1)))
    if w_ih.shape[0] != 4 * hidden:
        raise ValueError(f"fused_lstm: w_ih must have shape {(4 * hidden, x.shape[-1])}, got {tuple(w_ih.shape)}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("fused_lstm: b_ih and b_hh must both be given or both be None")
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None and bias.shape[0] != 4 * hidden:
            raise ValueError(f"fused_lstm: {name} must have shape {(4 * hidden,)}, got {tuple(bias.shape)}")


def run_projected_forward(x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hh: Tensor,
                          w_hr: Optional[Tensor], h0: Optional[Tensor], c0: Optional[Tensor],
                          batch_sizes: Optional[Tensor], state_prefix: Tuple[int, ...] = (),
                          training: Optional[bool] = None) -> Tuple[Tensor, ...]:
    """One layer and direction from x itself: the CPU recurrence computes
    x @ w_ih^T + b_ih + b_hh inside (see params.h's input_size), so gates_x
    is never written to memory. Only where _backend.projects_input(x).
    Inference (training=None): y, h_n, c_n; h0 and c0 None is a zero initial
    state; state_prefix=(1,): h_n and c_n come out [1, N, ...]. training=True
    (_EagerProjectedRecurrence): also recurrence_forward's saved buffers."""
    _check_projected_args(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes)
    return _backend.projected_forward(*_contiguous(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes),
                                      training=training, state_prefix=state_prefix)


@recurrence_forward.register_fake
def _recurrence_forward_fake(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training):
    check_recurrence_args(gates_x, w_hh, w_hr, h0, c0, batch_sizes, check_values=False)
    return _params.forward_outputs(gates_x, w_hr, h0.shape[0], c0.shape[1], h0.shape[1], training, alloc=torch.empty)


@torch.library.custom_op("fused_lstm::recurrence_backward", mutates_args=())
def recurrence_backward(w_hh: Tensor, w_hr: Optional[Tensor], c0: Tensor, saved_gates: Tensor, saved_c: Tensor,
                        saved_h: Tensor, grad_y: Tensor, grad_h_n: Optional[Tensor], grad_c_n: Optional[Tensor],
                        batch_sizes: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns grad_gates (layout of gates_x), grad_h_out (grad_y's shape; empty
    without projection), grad_h0, grad_c0. grad_h_n / grad_c_n None mean zero."""
    return _backend.recurrence_backward(*_contiguous(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n,
                                                     grad_c_n, batch_sizes))


@recurrence_backward.register_fake
def _recurrence_backward_fake(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n,
                              batch_sizes):
    return _params.backward_outputs(w_hr, c0, grad_y, alloc=torch.empty)


def _grad_w_hh(grad_gates: Tensor, y: Tensor, h0: Tensor, batch_sizes: Optional[Tensor]) -> Tensor:
    """sum over rows of grad_gates[row]^T h_{t-1}[row]: [4H, H_out]. The first
    step's rows read h0, the others rows of y: one GEMM over the rest of the
    sequence, then the first step's small one accumulated in place (no copy of
    y into an h_{t-1} buffer, none of the result)."""
    flat_grad_gates = grad_gates.reshape(-1, grad_gates.shape[-1])
    batch = h0.shape[0]
    if flat_grad_gates.shape[0] == batch:
        return flat_grad_gates.t() @ h0
    grad = flat_grad_gates[batch:].t() @ _previous_y_rows(y, batch, batch_sizes)
    return grad.addmm_(flat_grad_gates[:batch].t(), h0)


def _previous_y_rows(y: Tensor, batch: int, batch_sizes: Optional[Tensor]) -> Tensor:
    """h_{t-1} (a row of y) for every row of steps t >= 1, flattened to [rows - batch, H_out]."""
    if batch_sizes is None:
        return y[:-1].reshape(-1, y.shape[-1])
    # Packed: row n of step t > 0 reads row n of step t-1.
    # Sizes come from shapes, not from batch_sizes' values, so this traces under torch.compile.
    rows = y.shape[0]
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes
    step_of_row = torch.repeat_interleave(torch.arange(batch_sizes.shape[0]), batch_sizes, output_size=rows)[batch:]
    index_in_step = torch.arange(batch, rows) - offsets[step_of_row]
    return y[(offsets[step_of_row - 1] + index_in_step).to(y.device)]


def _save_for_recurrence_grads(ctx, w_hh, w_hr, h0, c0, batch_sizes, output, *leading: Tensor) -> None:
    """Saves what _recurrence_grads reads, after the `leading` tensors of the
    caller's own backward (ctx.saved_tensors = (*leading, *recurrence's))."""
    y, _, _, saved_gates, saved_c, saved_h = output
    # Unused outputs (h_n, c_n, the saved buffers) get no gradient: None, not
    # zero tensors the engine would allocate and fill on every backward.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*leading, w_hh, w_hr, h0, c0, batch_sizes, y, saved_gates, saved_c, saved_h)


def _setup_context(ctx, inputs, output):
    gates_x, w_hh, w_hr, h0, c0, batch_sizes, training = inputs
    ctx.training = training
    _save_for_recurrence_grads(ctx, w_hh, w_hr, h0, c0, batch_sizes, output)


def _recurrence_grads(saved, grad_y, grad_h_n, grad_c_n):
    """grad_gates, grad_w_hh, grad_w_hr, grad_h0, grad_c0 of the recurrence
    from the tensors _save_for_recurrence_grads saved and the output grads
    (None: zero). w_hr None (no projection): grad_w_hr None."""
    w_hh, w_hr, h0, c0, batch_sizes, y, saved_gates, saved_c, saved_h = saved
    grad_y = torch.zeros_like(y) if grad_y is None else grad_y  # grad_h_n / grad_c_n: None is zero
    grad_gates, grad_h_out, grad_h0, grad_c0 = recurrence_backward(
        w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes)
    # Weight gradients: framework GEMMs over all steps.
    grad_w_hh = _grad_w_hh(grad_gates, y, h0, batch_sizes)
    grad_w_hr = _grad_w_hr(grad_h_out, saved_h) if w_hr is not None else None
    return grad_gates, grad_w_hh, grad_w_hr, grad_h0, grad_c0


def _grad_w_hr(grad_h_out: Tensor, saved_h: Tensor) -> Tensor:
    """sum over rows of grad_h_out[row]^T h_cell[row]: [P, H]."""
    return grad_h_out.reshape(-1, grad_h_out.shape[-1]).t() @ saved_h.to(grad_h_out.dtype)


def _backward(ctx, grad_y, grad_h_n, grad_c_n, *_saved_grads):
    if not ctx.training:
        raise RuntimeError("fused_lstm: recurrence_forward was called with training=False; "
                           "call it with training=True to differentiate it")
    grad_gates, grad_w_hh, grad_w_hr, grad_h0, grad_c0 = _recurrence_grads(ctx.saved_tensors, grad_y, grad_h_n,
                                                                           grad_c_n)
    return grad_gates, grad_w_hh, grad_w_hr, grad_h0, grad_c0, None, None


torch.library.register_autograd("fused_lstm::recurrence_forward", _backward, setup_context=_setup_context)


class _EagerProjectedRecurrence(torch.autograd.Function):
    """Training of one layer and direction on the CPU with the input projection
    inside the recurrence (run_projected_forward): y, h_n, c_n and
    recurrence_forward's saved buffers. Its backward has the backward
    recurrence compute the projection's gradients (dx = dgates @ w_ih,
    dw_ih = dgates^T x, db = sum dgates) and dw_hh as well
    (_backend.projected_backward), so neither x @ w_ih^T + b nor any weight
    gradient is a framework GEMM. Only for eager calls on plain tensors where
    _backend.projects_input(x) (functional.lstm_layer): anything traced takes
    the GEMM and recurrence_forward. Hence an autograd.Function calling the
    kernels directly, not a custom op (whose dispatch and autograd wrapper
    cost ~60-75 us a training step, a fifth of a small cell's), with ctx in
    forward: a separate setup_context makes every apply bind the arguments
    with inspect.signature (~25 us). (torch.func transforms are unsupported
    either way: the kernels take plain tensors.)"""

    @staticmethod
    def forward(ctx, x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes):
        output = run_projected_forward(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes, training=True)
        ctx.has_bias = b_ih is not None
        ctx.mark_non_differentiable(*output[3:])
        _save_for_recurrence_grads(ctx, w_hh, w_hr, h0, c0, batch_sizes, output, x, w_ih)
        return output

    @staticmethod
    def backward(ctx, grad_y, grad_h_n, grad_c_n, *_saved_grads):
        x, w_ih, *saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        needs_bias = ctx.has_bias and (needs[2] or needs[3])
        if torch.is_grad_enabled():
            # create_graph: through the op, which has no autograd formula, so a second
            # derivative raises instead of silently missing the recurrence.
            grad_gates, grad_w_hh, grad_w_hr, grad_h0, grad_c0 = _recurrence_grads(saved, grad_y, grad_h_n,
                                                                                   grad_c_n)
            grad_x, grad_w_ih, grad_bias = _projection_grads(grad_gates, x, w_ih, needs[0], needs[1], needs_bias)
        else:
            # The recurrence computes dx, dW_ih, db and dW_hh itself, while grad_gates is in cache.
            w_hh, w_hr, h0, c0, batch_sizes, y, saved_gates, saved_c, saved_h = saved
            grad_y = torch.zeros_like(y) if grad_y is None else grad_y
            grad_h_out, grad_h0, grad_c0, grad_x, grad_w_ih, grad_bias, grad_w_hh = _backend.projected_backward(
                *_contiguous(x, w_ih, w_hh, w_hr, h0, c0, y, saved_gates, saved_c, saved_h, grad_y, grad_h_n,
                             grad_c_n, batch_sizes), (needs[0], needs[1], needs_bias, needs[4]))
            grad_w_hr = _grad_w_hr(grad_h_out, saved_h) if w_hr is not None else None
        return grad_x, grad_w_ih, *_bias_grads(grad_bias), grad_w_hh, grad_w_hr, grad_h0, grad_c0, None


def _bias_grads(grad_bias: Optional[Tensor]) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The gradients of b_ih and b_hh: both are grad_bias, b_hh's as its own
    tensor (the engine may keep either as a .grad)."""
    return grad_bias, grad_bias.clone() if grad_bias is not None else None


def _projection_grads(grad_gates: Tensor, x: Tensor, w_ih: Tensor, needs_x: bool, needs_w_ih: bool,
                      needs_bias: bool) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """dx, dW_ih, db of x @ w_ih^T + b from grad_gates: the GEMMs autograd would run."""
    flat_grad_gates = grad_gates.reshape(-1, grad_gates.shape[-1])
    grad_x = (flat_grad_gates @ w_ih).reshape(x.shape) if needs_x else None
    grad_w_ih = flat_grad_gates.t() @ x.reshape(-1, x.shape[-1]) if needs_w_ih else None
    return grad_x, grad_w_ih, flat_grad_gates.sum(0) if needs_bias else None


projected_recurrence_training = _EagerProjectedRecurrence.apply


def cell_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
              b_hh: Optional[Tensor], training: bool) -> Tuple[Tensor, Tensor]:
    """One nn.LSTMCell step, eager on the CPU (functional.lstm_cell, where
    _backend.projects_input(x)): x [N, I], h and c [N, H]; returns h', c'.
    training: grad mode is on and an input requires grad.
    The same kernels as a one-step projected recurrence, launched directly
    (_backend.cell_forward) and trained through _EagerCellStep: the general
    path (lstm_layer, _EagerProjectedRecurrence) made a training step at
    N=1, H=64 take 1.6x nn.LSTMCell's, nearly all of it Python."""
    _check_projected_args(x.unsqueeze(0), w_ih, b_ih, b_hh, w_hh, None, h, c, None)
    return run_cell_step(*_contiguous(x, h, c, w_ih, w_hh, b_ih, b_hh), training)


def run_cell_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                  b_hh: Optional[Tensor], training: bool) -> Tuple[Tensor, Tensor]:
    """cell_step on arguments already checked and contiguous."""
    if training:
        return _EagerCellStep.apply(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return _cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, False, _cell_by_gemms(x, w_hh, training=False))[:2]


# Where a cell step's pre-activation comes from the framework's GEMMs (MKL /
# oneDNN, reading the weights in place), with only the gate math on the
# recurrence's kernels: weights of at least CELL_GEMM_MIN_WEIGHT_BYTES
# (w_ih and w_hh), in training or at batch <= CELL_GEMM_MAX_INFERENCE_BATCH.
# Elsewhere the recurrence runs the whole step. It packs both weights into
# panels every call (its backward both again), which a sequence pays once
# for T steps but a cell step each time. Measured on the 2-core Sapphire
# Rapids VM against the recurrence: training N=1 H=512 2.31 -> 1.18 ms, N=16
# H=512 3.05 -> 1.94 ms, N=16 H=192 0.60 -> 0.53 ms, N=64 H=256 within the
# noise, N=64 H=128 (0.5 MiB) even; inference N=1 H=512 553 -> 259 us, N=4
# H=256 117 -> 108 us, but N=16 H=192 91 -> 128 us (the recurrence's product
# beats the GEMMs there). bench/compare_cell_paths.py compares the two.
CELL_GEMM_MIN_WEIGHT_BYTES = 1 << 20
CELL_GEMM_MAX_INFERENCE_BATCH = 8


def _cell_by_gemms(x: Tensor, w_hh: Tensor, training: bool) -> bool:
    weight_bytes = w_hh.shape[0] * (x.shape[1] + w_hh.shape[1]) * x.element_size()
    return weight_bytes >= CELL_GEMM_MIN_WEIGHT_BYTES and (training or x.shape[0] <= CELL_GEMM_MAX_INFERENCE_BATCH)


def _cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, training, by_gemms):
    """_backend.cell_forward of the step, its pre-activation from GEMMs where
    by_gemms (_cell_by_gemms's answer for the call)."""
    if not by_gemms:
        return _backend.cell_forward(x, h, c, w_ih, b_ih, b_hh, w_hh, training=training)
    gates = torch.mm(x, w_ih.t()) if b_ih is None else torch.addmm(b_ih + b_hh, x, w_ih.t())
    gates.addmm_(h, w_hh.t())
    return _backend.cell_forward(gates, h, c, None, None, None, None, training=training)


class _EagerCellStep(torch.autograd.Function):
    """cell_step's training: saves what its backward reads (8 tensors against
    the general path's 11) and has the backward recurrence compute every
    gradient (_backend.cell_backward), as _EagerProjectedRecurrence does; or,
    for a step whose pre-activation came from GEMMs (_cell_by_gemms), the
    gate math's backward, then the framework's GEMMs for the rest."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        ctx.by_gemms = _cell_by_gemms(x, w_hh, training=True)
        h_next, c_next, saved_gates, saved_c = _cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, True, ctx.by_gemms)
        ctx.has_bias = b_ih is not None
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None
        ctx.save_for_backward(x, h, c, w_ih, w_hh, h_next, saved_gates, saved_c)
        return h_next, c_next

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        x, h, c, w_ih, w_hh, h_next, saved_gates, saved_c = ctx.saved_tensors
        needs = ctx.needs_input_grad
        needs_bias = ctx.has_bias and (needs[5] or needs[6])
        if torch.is_grad_enabled():
            # create_graph: through the recurrence op, as _EagerProjectedRecurrence's backward
            # (a second derivative raises).
            saved = (w_hh, None, h, c, None, h_next.unsqueeze(0), saved_gates, saved_c, saved_c.new_empty(0))
            grad_gates, grad_w_hh, _, grad_h0, grad_c0 = _recurrence_grads(
                saved, None if grad_h is None else grad_h.unsqueeze(0), None, grad_c)
            grad_x, grad_w_ih, grad_bias = _projection_grads(grad_gates[0], x, w_ih, needs[0], needs[3], needs_bias)
            return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, *_bias_grads(grad_bias)
        # Gradients of the outputs may be expanded (a sum's): the kernels read them dense.
        grad_h = torch.zeros_like(h_next) if grad_h is None else grad_h.contiguous()
        grad_c = None if grad_c is None else grad_c.contiguous()
        if ctx.by_gemms:
            grad_gates, grad_c0 = _backend.cell_gate_math_backward(c, saved_gates, saved_c, grad_h, grad_c)
            grad_x, grad_w_ih, grad_bias = _projection_grads(grad_gates, x, w_ih, needs[0], needs[3], needs_bias)
            grad_h0 = grad_gates @ w_hh if needs[1] else None
            grad_w_hh = _grad_w_hh(grad_gates, h_next, h, None) if needs[4] else None  # one step: h_{t-1} is h
        else:
            grad_x, grad_h0, grad_c0, grad_w_ih, grad_bias, grad_w_hh = _backend.cell_backward(
                x, h, c, w_ih, w_hh, h_next, saved_gates, saved_c, grad_h, grad_c,
                (needs[0], needs[3], needs_bias, needs[4]))
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, *_bias_grads(grad_bias)
