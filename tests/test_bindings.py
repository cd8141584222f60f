"""The params structs' Python bindings (csrc/bind_params.h): keyword
constructors, pointer fields from tensors, None or ints, and refusals that
raise instead of storing a bad pointer."""
from __future__ import annotations

import pytest
import torch

from fused_lstm import _C


def test_keyword_constructor_sets_every_field_given():
    x, y = torch.randn(3, 4), torch.randn(5)
    sizes = _C.LstmSizes(seq_len=3, batch=2, hidden=7, proj_size=1, total_rows=6, batch_sizes=None)
    p = _C.LstmFwdParams(sizes=sizes, dtype=_C.DType.float64, input_size=4, x=x, y=y, h0=None, num_threads=3)
    assert (p.sizes.seq_len, p.sizes.batch, p.sizes.hidden, p.sizes.proj_size, p.sizes.total_rows) == (3, 2, 7, 1, 6)
    assert p.sizes.batch_sizes == 0
    assert (p.dtype, p.input_size, p.num_threads) == (_C.DType.float64, 4, 3)
    assert (p.x, p.y, p.h0) == (x.data_ptr(), y.data_ptr(), 0)
    assert p.gates_x == 0 and p.w_hh == 0  # fields not given keep their defaults


def test_pointer_fields_take_tensors_none_and_ints():
    t = torch.randn(4)
    p = _C.LstmBwdParams()
    p.grad_y = t
    assert p.grad_y == t.data_ptr()
    p.grad_y = None
    assert p.grad_y == 0
    p.grad_y = 12345
    assert p.grad_y == 12345
    p.grad_y = torch.empty(0)  # an empty tensor's data_ptr is null
    assert p.grad_y == 0


@pytest.mark.parametrize("make, error, message", [
    (lambda: _C.LstmFwdParams(bogus=1), TypeError, "bogus is not a field"),
    (lambda: _C.LstmFwdParams(x="not a tensor"), AttributeError, "data_ptr"),
    (lambda: _C.LstmSizes(seq_len="three"), TypeError, "seq_len cannot be a str"),
])
def test_bad_fields_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_nested_sizes_fields_are_keywords_of_the_params():
    p = _C.LstmBwdParams(seq_len=4, batch=3, hidden=5, proj_size=2, total_rows=12)
    assert (p.sizes.seq_len, p.sizes.batch, p.sizes.hidden, p.sizes.proj_size, p.sizes.total_rows) == (4, 3, 5, 2, 12)
    whole = _C.LstmFwdParams(sizes=_C.LstmSizes(seq_len=7, batch=1, hidden=2, proj_size=0, total_rows=7))
    assert (whole.sizes.seq_len, whole.sizes.total_rows) == (7, 7)


def test_cpu_forward_from_fields_raises_like_the_pybind_launchers():
    # lstm_forward_cpu_fields is a plain CPython function (no pybind11
    # dispatcher): its errors must still come out as Python exceptions.
    with pytest.raises(TypeError, match="keyword arguments only"):
        _C.lstm_forward_cpu_fields(1)
    with pytest.raises(TypeError, match="bogus is not a field"):
        _C.lstm_forward_cpu_fields(bogus=1)
    with pytest.raises(ValueError, match="seq_len"):  # the core's own check (check_params)
        _C.lstm_forward_cpu_fields(seq_len=0, batch=1, hidden=4, total_rows=0)
    x = torch.randn(2, 1, 3)
    with pytest.raises(ValueError, match="gates_x or x"):
        _C.lstm_forward_cpu_fields(seq_len=2, batch=1, hidden=4, total_rows=2, input_size=3, x=x, gates_x=x,
                                   w_hh=torch.randn(16, 4), w_ih=torch.randn(16, 3), y=torch.empty(2, 1, 4),
                                   h_n=torch.empty(1, 4), c_n=torch.empty(1, 4))


def test_cpu_backward_from_fields_raises_like_the_pybind_launchers():
    with pytest.raises(TypeError, match="keyword arguments only"):
        _C.lstm_backward_cpu_fields(1)
    with pytest.raises(TypeError, match="gates_x is not a field"):  # a forward field
        _C.lstm_backward_cpu_fields(gates_x=1)
    with pytest.raises(ValueError, match="seq_len"):
        _C.lstm_backward_cpu_fields(seq_len=0, batch=1, hidden=4, total_rows=0)


def test_a_null_w_hh_is_only_one_steps_gate_math():
    # params.h's gate_math_only: one step, gates_x, no projection; its backward
    # without grad_h0 or weight gradients (FusedLSTMCell's GEMM step).
    def forward(seq_len, **fields):
        _C.lstm_forward_cpu_fields(seq_len=seq_len, batch=1, hidden=4, total_rows=seq_len,
                                   y=torch.empty(seq_len, 1, 4), h_n=torch.empty(1, 4), c_n=torch.empty(1, 4),
                                   **fields)

    with pytest.raises(ValueError, match="w_hh may be null only"):
        forward(2, gates_x=torch.randn(2, 1, 16))
    with pytest.raises(ValueError, match="w_hh may be null only"):
        forward(1, x=torch.randn(1, 1, 3), input_size=3, w_ih=torch.randn(16, 3))
    forward(1, gates_x=torch.randn(1, 1, 16))  # allowed

    def backward(**fields):
        _C.lstm_backward_cpu_fields(seq_len=1, batch=1, hidden=4, total_rows=1, c0=torch.randn(1, 4),
                                    saved_gates=torch.rand(1, 16), saved_c=torch.randn(1, 4),
                                    grad_y=torch.randn(1, 4), grad_gates=torch.empty(1, 16),
                                    grad_c0=torch.empty(1, 4), **fields)

    with pytest.raises(ValueError, match="w_hh may be null only"):
        backward(grad_h0=torch.empty(1, 4))
    with pytest.raises(ValueError, match="w_hh may be null only"):
        backward(input_size=3, x=torch.randn(1, 3), grad_w_ih=torch.empty(16, 3))
    backward()  # allowed
    simt = pytest.importorskip("fused_lstm._simt")  # the CUDA launchers' host code, on the CPU
    with pytest.raises(ValueError, match="needs w_hh"):
        simt.lstm_forward_cuda(simt.LstmFwdParams(seq_len=1, batch=1, hidden=4, total_rows=1))


def test_cpu_backward_from_fields_matches_the_params_launcher():
    # The autograd path launches the CPU backward from its fields; the params
    # object launcher (kept for the tests' direct calls) must give the same bits.
    from fused_lstm import _params

    T, N, H = 5, 3, 6
    g = torch.Generator().manual_seed(3)
    w_hh = torch.randn(4 * H, H, generator=g) / H ** 0.5
    c0 = torch.randn(N, H, generator=g)
    gates_x = torch.randn(T, N, 4 * H, generator=g)
    h0 = torch.randn(N, H, generator=g)
    _, _, _, saved_gates, saved_c, saved_h = _params.run_forward(_C, _C.lstm_forward_cpu, gates_x, w_hh, None, h0,
                                                                 c0, None, training=True)
    grad_y, grad_h_n, grad_c_n = torch.randn(T, N, H, generator=g), torch.randn(N, H, generator=g), None
    args = (w_hh, None, c0, saved_gates, saved_c, saved_h, grad_y, grad_h_n, grad_c_n, None)
    by_params = _params.run_backward(_C, _C.lstm_backward_cpu, *args)
    outputs, fields = _params.backward_fields(_C, *args)
    _C.lstm_backward_cpu_fields(**fields)
    for name, a, b in zip(("grad_gates", "grad_h_out", "grad_h0", "grad_c0"), outputs, by_params):
        assert torch.equal(a, b), name
