"""Pure-PyTorch reference LSTM: the oracle every test compares against.

Written for clarity, not speed: plain tensor ops, a Python loop over time,
differentiable by autograd. Nothing here calls fused_lstm's compiled code.

Conventions (nn.LSTM's): gate order i, f, g, o; W_ih [4H, I], W_hh [4H, H_out],
b_ih/b_hh [4H], W_hr [P, H] (only with proj_size P > 0; H_out = P, else H).

Two levels:
- ``recurrence_forward`` / ``recurrence_backward``: the sequential part only,
  with the exact inputs, outputs and layouts of the compiled recurrence
  (csrc/common/params.h): time-major rows, dense or packed by ``batch_sizes``.
- ``lstm_layer`` / ``lstm``: whole layers and the full multi-layer,
  bidirectional, projected LSTM, matching torch.nn.LSTM.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def _step_rows(seq_len: int, batch: int, batch_sizes: Optional[Tensor]) -> List[Tuple[int, int]]:
    """(first row, row count) of each step in the time-major row layout."""
    if batch_sizes is None:
        return [(t * batch, batch) for t in range(seq_len)]
    rows, start = [], 0
    for size in batch_sizes.tolist():
        rows.append((start, size))
        start += size
    return rows


def _flatten_rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def recurrence_forward(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor, c0: Tensor,
                       batch_sizes: Optional[Tensor] = None):
    """The recurrence of one layer and direction.

    gates_x: [T, N, 4H] (dense) or [rows, 4H] (packed with ``batch_sizes`` [T]),
      the input projection x @ W_ih^T + b_ih + b_hh.
    h0: [N, H_out], c0: [N, H].
    Returns y (same layout as gates_x, last dim H_out), h_n [N, H_out],
    c_n [N, H], and what training saves: gates [rows, 4H] (activated i, f, g,
    o), c [rows, H], h [rows, H] (o * tanh(c) before the projection).
    Computes in the inputs' dtype; differentiable.
    """
    hidden = c0.shape[-1]
    rows_of = _step_rows(gates_x.shape[0] if batch_sizes is None else len(batch_sizes), h0.shape[0], batch_sizes)
    flat = _flatten_rows(gates_x)
    h_state, c_state = h0, c0
    ys, saved_gates, saved_c, saved_h = [], [], [], []
    for start, count in rows_of:
        h_prev, c_prev = h_state[:count], c_state[:count]
        pre = flat[start:start + count] + h_prev @ w_hh.t()
        i, f, g, o = pre.split(hidden, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c_prev + i * g
        h_cell = o * torch.tanh(c)
        h_out = h_cell @ w_hr.t() if w_hr is not None else h_cell
        ys.append(h_out)
        saved_gates.append(torch.cat([i, f, g, o], dim=1))
        saved_c.append(c)
        saved_h.append(h_cell)
        # Rows past `count` have ended: their state is kept as it is.
        h_state = torch.cat([h_out, h_state[count:]])
        c_state = torch.cat([c, c_state[count:]])
    y = torch.cat(ys).reshape(*gates_x.shape[:-1], h_state.shape[-1])
    return y, h_state, c_state, torch.cat(saved_gates), torch.cat(saved_c), torch.cat(saved_h)


def recurrence_backward(gates_x: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor, c0: Tensor,
                        grad_y: Tensor, grad_h_n: Tensor, grad_c_n: Tensor,
                        batch_sizes: Optional[Tensor] = None):
    """Gradients of the recurrence, by autograd through ``recurrence_forward``.

    Returns grad_gates (layout of gates_x: dL/d pre-activation gates),
    grad_h_out ([rows, P], the total dL/dh_out_t, or None without projection),
    grad_h0, grad_c0, grad_w_hh, grad_w_hr (None without projection).
    """
    leaves = [t.detach().requires_grad_() for t in (gates_x, w_hh, h0, c0)]
    w_hr_leaf = w_hr.detach().requires_grad_() if w_hr is not None else None
    gates_leaf, w_hh_leaf, h0_leaf, c0_leaf = leaves
    hidden = c0.shape[-1]
    with torch.enable_grad():
        # Re-run the loop keeping each step's h_out so its total gradient can be read.
        rows_of = _step_rows(gates_x.shape[0] if batch_sizes is None else len(batch_sizes), h0.shape[0],
                             batch_sizes)
        flat = _flatten_rows(gates_leaf)
        h_state, c_state = h0_leaf, c0_leaf
        h_outs = []
        for start, count in rows_of:
            pre = flat[start:start + count] + h_state[:count] @ w_hh_leaf.t()
            i, f, g, o = pre.split(hidden, dim=1)
            c = torch.sigmoid(f) * c_state[:count] + torch.sigmoid(i) * torch.tanh(g)
            h_cell = torch.sigmoid(o) * torch.tanh(c)
            h_out = h_cell @ w_hr_leaf.t() if w_hr_leaf is not None else h_cell
            h_out.retain_grad()
            h_outs.append(h_out)
            h_state = torch.cat([h_out, h_state[count:]])
            c_state = torch.cat([c, c_state[count:]])
        y = torch.cat(h_outs)
        loss = (y * _flatten_rows(grad_y)).sum() + (h_state * grad_h_n).sum() + (c_state * grad_c_n).sum()
        inputs = [gates_leaf, h0_leaf, c0_leaf, w_hh_leaf] + ([w_hr_leaf] if w_hr_leaf is not None else [])
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grad_gates, grad_h0, grad_c0, grad_w_hh = (
        g if g is not None else torch.zeros_like(x) for g, x in zip(grads[:4], inputs[:4]))
    grad_w_hr = grads[4] if w_hr_leaf is not None else None
    grad_h_out = None
    if w_hr is not None:
        grad_h_out = torch.cat([h.grad if h.grad is not None else torch.zeros_like(h) for h in h_outs])
    return grad_gates, grad_h_out, grad_h0, grad_c0, grad_w_hh, grad_w_hr


def recurrence_backward_from_saved(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, batch_sizes):
    """Backward of the recurrence from what the forward saved, with the
    formulas of csrc/common/lstm_math.h in tensor form: the exact inputs and
    outputs of the compiled backward (see recurrence_forward for layouts).

    saved_*: as returned by recurrence_forward (accumulation dtype);
    grad_h_n / grad_c_n may be None, meaning zero.
    Returns grad_gates (layout of grad_y, last dim 4H), grad_h_out (layout and
    shape of grad_y, or an empty tensor without projection), grad_h0, grad_c0. Checked against
    the autograd-derived recurrence_backward in the tests.
    """
    hidden = c0.shape[1]
    steps = _step_rows(grad_y.shape[0] if batch_sizes is None else len(batch_sizes), c0.shape[0], batch_sizes)
    acc = saved_c.dtype
    flat_grad_y = grad_y.reshape(-1, grad_y.shape[-1]).to(acc)
    w_hh_acc, w_hr_acc = w_hh.to(acc), (w_hr.to(acc) if w_hr is not None else None)
    dh = grad_h_n.to(acc).clone() if grad_h_n is not None else c0.new_zeros(c0.shape[0], grad_y.shape[-1], dtype=acc)
    dc = grad_c_n.to(acc).clone() if grad_c_n is not None else torch.zeros_like(c0, dtype=acc)
    grad_gates = torch.empty(flat_grad_y.shape[0], 4 * hidden, dtype=acc, device=grad_y.device)
    grad_h_out = torch.empty_like(flat_grad_y) if w_hr is not None else None
    for t in range(len(steps) - 1, -1, -1):
        start, count = steps[t]
        rows = slice(start, start + count)
        dh_out = flat_grad_y[rows] + dh[:count]
        if grad_h_out is not None:
            grad_h_out[rows] = dh_out
        dh_cell = dh_out @ w_hr_acc if w_hr_acc is not None else dh_out
        i, f, g, o = saved_gates[rows].split(hidden, dim=1)
        c = saved_c[rows]
        c_prev = saved_c[steps[t - 1][0]:steps[t - 1][0] + count] if t > 0 else c0[:count].to(acc)
        tanh_c = torch.tanh(c)
        dc_total = dc[:count] + dh_cell * o * (1 - tanh_c * tanh_c)
        dpre = torch.cat([dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f),
                          dc_total * i * (1 - g * g), dh_cell * tanh_c * o * (1 - o)], dim=1)
        grad_gates[rows] = dpre
        dc[:count] = dc_total * f
        dh[:count] = dpre @ w_hh_acc
    dtype = grad_y.dtype
    grad_h_out = grad_h_out.reshape(grad_y.shape).to(dtype) if grad_h_out is not None else grad_y.new_empty((0,))
    return grad_gates.reshape(*grad_y.shape[:-1], 4 * hidden).to(dtype), grad_h_out, dh.to(dtype), dc.to(dtype)


def lstm_layer(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
               w_hr: Optional[Tensor], h0: Tensor, c0: Tensor, reverse: bool = False):
    """One layer, one direction. x: [T, N, I]; returns y [T, N, H_out], h_n, c_n."""
    if reverse:
        x = x.flip(0)
    gates_x = x @ w_ih.t()
    if b_ih is not None:
        gates_x = gates_x + b_ih + b_hh
    y, h_n, c_n = recurrence_forward(gates_x, w_hh, w_hr, h0, c0)[:3]
    return (y.flip(0) if reverse else y), h_n, c_n


def lstm(x: Tensor, hx: Optional[Tuple[Tensor, Tensor]], weights: Sequence[Sequence[Tensor]], num_layers: int,
         bidirectional: bool = False, batch_first: bool = False, proj_size: int = 0):
    """Full LSTM with nn.LSTM's semantics (no dropout, dense input).

    x: [T, N, I] ([N, T, I] if batch_first) or unbatched [T, I].
    hx: (h0 [L*D, N, H_out], c0 [L*D, N, H]) or None for zeros.
    weights: per layer and direction (index layer*D + direction), the list
      [w_ih, w_hh, (b_ih, b_hh)?, (w_hr)?] in nn.LSTM's _flat_weights order.
    Returns output, (h_n, c_n) with nn.LSTM's shapes.
    """
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        hx = None if hx is None else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    elif batch_first:
        x = x.transpose(0, 1)
    directions = 2 if bidirectional else 1
    hidden = weights[0][1].shape[0] // 4
    out_size = proj_size if proj_size > 0 else hidden
    if hx is None:
        zeros = x.new_zeros
        hx = (zeros(num_layers * directions, x.shape[1], out_size), zeros(num_layers * directions, x.shape[1], hidden))
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w = list(weights[index])
            w_ih, w_hh = w[0], w[1]
            has_bias = len(w) >= 4
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            w_hr = w[-1] if proj_size > 0 else None
            y, h, c = lstm_layer(layer_input, w_ih, w_hh, b_ih, b_hh, w_hr, hx[0][index], hx[1][index],
                                 reverse=direction == 1)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
    output, h_n, c_n = layer_input, torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    if batch_first:
        output = output.transpose(0, 1)
    return output, (h_n, c_n)
