"""fused_lstm's ops without modules.

Layers, directions and inter-layer dropout are orchestrated here around the
recurrence op (fused_lstm._ops); the input projection x @ W_ih^T + b is one
framework GEMM per layer and direction, differentiated by autograd, except in
eager CPU calls, where the recurrence projects x itself (in training through
_ops.projected_recurrence_training, whose backward has the projection's
gradients).

Sequence layout: time-major, [T, N, features], or packed rows [rows, features]
with ``batch_sizes`` [T] (a PackedSequence's data and batch_sizes).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._backend import projects_input
from ._ops import (cell_step, projected_recurrence_training, recurrence_forward, run_cell_step,
                   run_projected_forward, run_recurrence_forward)
from ._params import zero_state_sizes

__all__ = ["lstm", "lstm_layer", "lstm_cell"]


def _is_eager(x: Tensor) -> bool:
    """A call on a plain tensor outside Dynamo: the kernels may be called
    directly. Anything traced (Dynamo; export's fake or functional tensors)
    goes through the custom ops."""
    return type(x) is Tensor and not torch.compiler.is_dynamo_compiling()


def _requires_grad(*tensors: Optional[Tensor]) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


def _autocast(device_type: str, *tensors: Optional[Tensor]) -> List[Optional[Tensor]]:
    """Inside torch.autocast, the whole layer runs in the autocast dtype, as
    nn.LSTM's does (the recurrence still accumulates in float32)."""
    dtype = torch.get_autocast_dtype(device_type)
    return [t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors]


def _input_gates(x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> Tensor:
    """x @ W_ih^T + b_ih + b_hh in one GEMM; keeps x's leading dims."""
    rows = x.reshape(-1, x.shape[-1])
    if b_ih is None:
        gates = rows @ w_ih.t()
    else:
        gates = torch.addmm(b_ih + b_hh, rows, w_ih.t())
    return gates.reshape(*x.shape[:-1], w_ih.shape[0])


def _packed_reverse_index(batch_sizes: Tensor, device: torch.device) -> Tensor:
    """Row permutation that reverses every sequence of a packed batch in time.

    Reversed sequences have the same lengths, so the same batch_sizes; row
    (t, n) goes to (length_n - 1 - t, n). The permutation is its own inverse.
    """
    steps = len(batch_sizes)
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes
    step_of_row = torch.repeat_interleave(torch.arange(steps), batch_sizes)
    row_in_step = torch.arange(int(batch_sizes.sum())) - offsets[step_of_row]
    lengths = (batch_sizes.unsqueeze(0) > torch.arange(int(batch_sizes[0])).unsqueeze(1)).sum(1)
    reversed_step = lengths[row_in_step] - 1 - step_of_row
    return (offsets[reversed_step] + row_in_step).to(device)


def _reverse_time(x: Tensor, batch_sizes: Optional[Tensor], index: Optional[Tensor]) -> Tensor:
    return x.flip(0) if batch_sizes is None else x.index_select(0, index)


def _zero_state(x: Tensor, w_hh: Tensor, batch_sizes: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    batch, hidden, out_size = zero_state_sizes(x, w_hh, batch_sizes)
    return x.new_zeros((batch, out_size)), x.new_zeros((batch, hidden))


def lstm_layer(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor],
               w_hr: Optional[Tensor], h0: Optional[Tensor], c0: Optional[Tensor],
               batch_sizes: Optional[Tensor] = None, reverse: bool = False,
               _reverse_index: Optional[Tensor] = None, _stacked_states: bool = False
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """One layer, one direction.

    x: [T, N, I] or packed [rows, I] with batch_sizes; h0 [N, H_out], c0 [N, H],
    or both None for a zero initial state.
    Returns y (x's layout, last dim H_out), h_n [N, H_out], c_n [N, H].
    reverse runs the sequence backwards in time (each packed sequence within
    its own length), as nn.LSTM's reverse direction does. (_stacked_states:
    h_n and c_n as [1, N, ...], for lstm's single layer and direction.)
    """
    # (Helpers are called only where they have work: in a short eager call
    # every Python frame counts, most of all when its code is out of cache.)
    if torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(x.device.type):
        x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0 = _autocast(x.device.type, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)
    if reverse:
        if batch_sizes is not None and _reverse_index is None:
            _reverse_index = _packed_reverse_index(batch_sizes, x.device)
        x = _reverse_time(x, batch_sizes, _reverse_index)
    training = torch.is_grad_enabled() and _requires_grad(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)
    # Eager calls on plain tensors on the CPU skip the input GEMM (the
    # recurrence projects x itself), skipping the dispatcher: training goes
    # through projected_recurrence_training, whose backward has the GEMM's
    # gradients. Anything traced (Dynamo; export's fake or functional tensors)
    # or on another device takes the recurrence op after a framework GEMM.
    # Only projected inference takes a None (zero) state.
    eager = _is_eager(x)
    projected = eager and projects_input(x)
    if projected and not training:
        y, h_n, c_n = run_projected_forward(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes,
                                            (1,) if _stacked_states else ())
    else:
        if h0 is None:
            h0, c0 = _zero_state(x, w_hh, batch_sizes)
        if projected:
            y, h_n, c_n = projected_recurrence_training(x, w_ih, b_ih, b_hh, w_hh, w_hr, h0, c0, batch_sizes)[:3]
        else:
            gates_x = _input_gates(x, w_ih, b_ih, b_hh)
            run = recurrence_forward if training or not eager else run_recurrence_forward
            y, h_n, c_n = run(gates_x, w_hh, w_hr, h0, c0, batch_sizes, training)[:3]
        if _stacked_states:
            h_n, c_n = h_n.unsqueeze(0), c_n.unsqueeze(0)
    if reverse:
        y = _reverse_time(y, batch_sizes, _reverse_index)
    return y, h_n, c_n


def lstm(x: Tensor, hx: Optional[Tuple[Tensor, Tensor]], weights: Sequence[Sequence[Optional[Tensor]]],
         num_layers: int, dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
         proj_size: int = 0, batch_sizes: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Multi-layer, optionally bidirectional LSTM (nn.LSTM's _VF.lstm, time-major).

    x: [T, N, I] or packed [rows, I] with batch_sizes.
    hx: (h0 [L*D, N, H_out], c0 [L*D, N, H]), or None for zero initial states.
    weights[layer * D + direction] = (w_ih, w_hh, b_ih, b_hh, w_hr), None where absent.
    dropout: applied to each layer's output but the last, only when training.
    Returns output (x's layout, last dim D*H_out), h_n [L*D, N, H_out], c_n [L*D, N, H].
    """
    directions = 2 if bidirectional else 1
    single = num_layers * directions == 1  # then lstm_layer gives h_n, c_n as [1, N, ...]
    reverse_index = None
    if bidirectional and batch_sizes is not None:
        reverse_index = _packed_reverse_index(batch_sizes, x.device)
    h_n: List[Tensor] = []
    c_n: List[Tensor] = []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh, w_hr = weights[index]
            h0, c0 = (None, None) if hx is None else (hx[0][index], hx[1][index])
            y, h, c = lstm_layer(layer_input, w_ih, w_hh, b_ih, b_hh, w_hr if proj_size > 0 else None,
                                 h0, c0, batch_sizes, reverse=direction == 1, _reverse_index=reverse_index,
                                 _stacked_states=single)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    if single:
        return layer_input, h_n[0], c_n[0]
    return layer_input, torch.stack(h_n), torch.stack(c_n)


def lstm_cell(x: Tensor, hx: Tuple[Tensor, Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """One LSTM cell step (nn.LSTMCell's math): x [N, I], hx = (h [N, H], c [N, H]).

    Runs as a one-step recurrence, so it shares the recurrence's kernels:
    eager CPU calls launch them directly (_ops.cell_step; plain_lstm_cell
    without the checks where none could fail), anything else (traced,
    autocast, another device or dtype) through lstm_layer. Returns (h', c').
    """
    plain = plain_lstm_cell(x, hx, w_ih, w_hh, b_ih, b_hh)
    if plain is not None:
        return plain
    h, c = hx
    if _is_eager(x) and projects_input(x) and not torch._C._is_any_autocast_enabled():
        training = torch.is_grad_enabled() and _requires_grad(x, h, c, w_ih, w_hh, b_ih, b_hh)
        return cell_step(x, h, c, w_ih, w_hh, b_ih, b_hh, training)
    y, _, c_next = lstm_layer(x.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, None, h, c)
    return y[0], c_next


_autocast_enabled = torch._C._is_any_autocast_enabled
_dynamo_compiling = torch.compiler.is_dynamo_compiling


def plain_lstm_cell(x: Tensor, hx: Tuple[Tensor, Tensor], w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                    b_hh: Optional[Tensor]) -> Optional[Tuple[Tensor, Tensor]]:
    """lstm_cell's (h', c') with no checks, for a plain call: x, h, c plain
    tensors (hx a tuple) and the weights on the CPU, float32 or float64 alike,
    2-D with the sizes w_hh gives, contiguous, outside autocast and Dynamo,
    the CPU recurrence chosen. No check could fail there, so none runs. Else
    None: the caller takes the checked path. FusedLSTMCell tries this first:
    its checks, lstm_cell's and cell_step's took ~13 us of a ~26 us step at
    N=1, H=64, inference. (Spelled out, not looped: a generator over the
    tensors cost ~1 us.)"""
    if type(hx) is not tuple or len(hx) != 2:
        return None
    h, c = hx
    if type(x) is not Tensor or type(h) is not Tensor or type(c) is not Tensor:
        return None
    dtype = w_hh.dtype
    if x.dtype != dtype or h.dtype != dtype or c.dtype != dtype or w_ih.dtype != dtype:
        return None
    if x.dim() != 2 or w_hh.dim() != 2:  # the shape tests below cover h, c and w_ih
        return None
    batch, inputs = x.shape
    gate_rows, hidden = w_hh.shape
    if (batch == 0 or inputs == 0 or hidden == 0 or gate_rows != 4 * hidden or w_ih.shape != (gate_rows, inputs)
            or h.shape != (batch, hidden) or c.shape != (batch, hidden)):
        return None
    if not (x.is_cpu and h.is_cpu and c.is_cpu and w_ih.is_cpu and w_hh.is_cpu and x.is_contiguous()
            and h.is_contiguous() and c.is_contiguous() and w_ih.is_contiguous() and w_hh.is_contiguous()):
        return None
    requires_grad = x.requires_grad or h.requires_grad or c.requires_grad or w_ih.requires_grad or w_hh.requires_grad
    if b_ih is not None or b_hh is not None:
        if (b_ih is None or b_hh is None or b_ih.dtype != dtype or b_hh.dtype != dtype or b_ih.shape != (gate_rows,)
                or b_hh.shape != (gate_rows,) or not (b_ih.is_cpu and b_hh.is_cpu and b_ih.is_contiguous()
                                                      and b_hh.is_contiguous())):
            return None
        requires_grad = requires_grad or b_ih.requires_grad or b_hh.requires_grad
    if _autocast_enabled() or _dynamo_compiling() or not projects_input(x):  # float32/64, the CPU backend
        return None
    return run_cell_step(x, h, c, w_ih, w_hh, b_ih, b_hh, requires_grad and torch.is_grad_enabled())
