"""reference.py is the oracle: it must match torch.nn.LSTM itself in float64."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fused_lstm import reference
from conftest import max_abs_diff


@pytest.mark.parametrize("bias,bidirectional,batch_first,proj_size,num_layers",
                         list(itertools.product([True, False], [False, True], [False, True], [0, 2], [1, 3])))
def test_full_lstm_matches_torch(bias, bidirectional, batch_first, proj_size, num_layers):
    torch_lstm = torch.nn.LSTM(4, 5, num_layers=num_layers, bias=bias, batch_first=batch_first,
                               bidirectional=bidirectional, proj_size=proj_size, dtype=torch.float64)
    directions = 2 if bidirectional else 1
    x = torch.randn((3, 6, 4) if batch_first else (6, 3, 4), dtype=torch.float64)
    hx = (torch.randn(num_layers * directions, 3, proj_size or 5, dtype=torch.float64),
          torch.randn(num_layers * directions, 3, 5, dtype=torch.float64))
    expected, (h, c) = torch_lstm(x, hx)
    weights = [[getattr(torch_lstm, name) for name in names] for names in torch_lstm._all_weights]
    actual, (h_ref, c_ref) = reference.lstm(x, hx, weights, num_layers, bidirectional, batch_first, proj_size)
    for a, b in ((actual, expected), (h_ref, h), (c_ref, c)):
        assert a.shape == b.shape
        assert max_abs_diff(a, b) <= 1e-12


def test_unbatched_input_matches_torch():
    torch_lstm = torch.nn.LSTM(4, 5, dtype=torch.float64)
    x = torch.randn(7, 4, dtype=torch.float64)
    expected, (h, c) = torch_lstm(x)
    weights = [[getattr(torch_lstm, name) for name in names] for names in torch_lstm._all_weights]
    actual, (h_ref, c_ref) = reference.lstm(x, None, weights, 1)
    assert actual.shape == expected.shape and h_ref.shape == h.shape
    assert max(max_abs_diff(actual, expected), max_abs_diff(h_ref, h), max_abs_diff(c_ref, c)) <= 1e-12


def _random_recurrence(T, N, H, P, dtype=torch.float64):
    out = P or H
    return (torch.randn(T, N, 4 * H, dtype=dtype), torch.randn(4 * H, out, dtype=dtype) * 0.5,
            torch.randn(P, H, dtype=dtype) * 0.5 if P else None,
            torch.randn(N, out, dtype=dtype), torch.randn(N, H, dtype=dtype))


@pytest.mark.parametrize("proj_size", [0, 2])
def test_packed_recurrence_matches_torch_packed_lstm(proj_size):
    """Packed rows and batch_sizes give what nn.LSTM gives on the same PackedSequence."""
    torch_lstm = torch.nn.LSTM(3, 5, proj_size=proj_size, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 4, 1])
    padded = torch.randn(6, 4, 3, dtype=torch.float64)
    packed = pack_padded_sequence(padded, lengths)
    h0 = torch.randn(1, 4, proj_size or 5, dtype=torch.float64)
    c0 = torch.randn(1, 4, 5, dtype=torch.float64)
    expected, (h, c) = torch_lstm(packed, (h0, c0))
    gates_x = packed.data @ torch_lstm.weight_ih_l0.t() + torch_lstm.bias_ih_l0 + torch_lstm.bias_hh_l0
    w_hr = torch_lstm.weight_hr_l0 if proj_size else None
    y, h_n, c_n = reference.recurrence_forward(gates_x, torch_lstm.weight_hh_l0, w_hr, h0[0], c0[0],
                                               packed.batch_sizes)[:3]
    assert max(max_abs_diff(y, expected.data), max_abs_diff(h_n, h[0]), max_abs_diff(c_n, c[0])) <= 1e-12


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("proj_size", [0, 3])
def test_backward_from_saved_matches_autograd(packed, proj_size):
    """The explicit backward formulas (what the kernels implement) agree with autograd."""
    T, N, H = 5, 3, 4
    gates_x, w_hh, w_hr, h0, c0 = _random_recurrence(T, N, H, proj_size)
    batch_sizes = torch.tensor([3, 3, 2, 2, 1]) if packed else None
    if packed:
        gates_x = gates_x.reshape(-1, 4 * H)[: int(batch_sizes.sum())]
    y, h_n, c_n, saved_gates, saved_c, saved_h = reference.recurrence_forward(gates_x, w_hh, w_hr, h0, c0,
                                                                              batch_sizes)
    grad_y, grad_h_n, grad_c_n = torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n)
    expected = reference.recurrence_backward(gates_x, w_hh, w_hr, h0, c0, grad_y, grad_h_n, grad_c_n, batch_sizes)
    actual = reference.recurrence_backward_from_saved(w_hh, w_hr, c0, saved_gates, saved_c, saved_h, grad_y,
                                                      grad_h_n, grad_c_n, batch_sizes)
    grad_gates, grad_h_out, grad_h0, grad_c0 = actual
    assert max_abs_diff(grad_gates, expected[0]) <= 1e-12
    assert max_abs_diff(grad_h0, expected[2]) <= 1e-12
    assert max_abs_diff(grad_c0, expected[3]) <= 1e-12
    if proj_size:
        assert max_abs_diff(grad_h_out.reshape(expected[1].shape), expected[1]) <= 1e-12
    else:
        assert grad_h_out.numel() == 0
