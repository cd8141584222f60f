"""Bad constructor arguments and bad inputs: the same exception type and key
message as torch.nn.LSTM / nn.LSTMCell, raised before any kernel runs.
Cases are PyTorch's own (test_nn.py and common_modules' error inputs)."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import fused_lstm
from fused_lstm import FusedLSTM, FusedLSTMCell

TWINS = {nn.LSTM: FusedLSTM, nn.LSTMCell: FusedLSTMCell}


def _raised(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return error
    return None


def _assert_same_error(torch_call, fused_call, regex=None):
    expected, actual = _raised(torch_call), _raised(fused_call)
    assert expected is not None, "torch accepted the case: it is not an error case"
    assert actual is not None, f"fused_lstm accepted what torch rejects with {expected!r}"
    assert type(actual) is type(expected), f"{type(actual).__name__} != {type(expected).__name__}: {actual}"
    pattern = regex if regex is not None else re.escape(str(expected))
    assert re.search(pattern, str(actual)), f"{actual} does not match {pattern!r}"


@pytest.fixture(autouse=True)
def _no_kernel_may_run(monkeypatch):
    """Errors come before any kernel: the recurrence must never be reached in these tests
    except where a test says the call is valid."""
    from fused_lstm import _backend

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran on a bad input")

    monkeypatch.setattr(_backend, "recurrence_forward", forbidden)
    monkeypatch.setattr(_backend, "projected_forward", forbidden)


# -- PyTorch's module error inputs (torch.testing._internal.common_modules) -------------------------

def _module_error_inputs():
    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    for info in common_modules.module_db:
        if info.module_cls in TWINS and info.module_error_inputs_func is not None:
            errors = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                                   training=True)
            for index, error in enumerate(errors):
                yield pytest.param(info.module_cls, error, id=f"{info.module_cls.__name__}-{index}")


@pytest.mark.parametrize("module_cls,error", list(_module_error_inputs()))
def test_torch_module_error_inputs(module_cls, error):
    inputs = error.module_error_input
    ctor_args, ctor_kwargs = inputs.constructor_input.args, inputs.constructor_input.kwargs
    fused_cls = TWINS[module_cls]
    if error.error_on.name == "CONSTRUCTION_ERROR":
        with pytest.raises(error.error_type, match=error.error_regex):
            module_cls(*ctor_args, **ctor_kwargs)
        with pytest.raises(error.error_type, match=error.error_regex):
            fused_cls(*ctor_args, **ctor_kwargs)
        return
    forward_args, forward_kwargs = inputs.forward_input.args, inputs.forward_input.kwargs
    torch.manual_seed(0)
    fused = fused_cls(*ctor_args, **ctor_kwargs)
    with pytest.raises(error.error_type, match=error.error_regex):
        fused(*forward_args, **forward_kwargs)


# -- test_nn.py: test_rnn_args_check and test_projections_lstm_args_check ---------------------------

def _args_check_cases(proj_size):
    input_size, hidden_size, num_layers, batch_size, seq_len, bad = 3, 5, 2, 4, 6, 7
    out_size = proj_size or hidden_size
    good_input = (seq_len, batch_size, input_size)
    good_h = (num_layers, batch_size, out_size)
    good_c = (num_layers, batch_size, hidden_size)

    def replaced(shape, dim, value):
        shape = list(shape)
        shape[dim] = value
        return tuple(shape)

    yield "input batch", replaced(good_input, 1, bad), good_h, good_c
    yield "input size", replaced(good_input, 2, bad), good_h, good_c
    for dim, what in ((1, "batch"), (2, "size"), (0, "layers")):
        yield f"h {what}", good_input, replaced(good_h, dim, bad), good_c
        yield f"c {what}", good_input, good_h, replaced(good_c, dim, bad)
    if proj_size:
        yield "h sized as c", good_input, good_c, good_c
        yield "c sized as h", good_input, good_h, good_h


@pytest.mark.parametrize("proj_size", [0, 2])
def test_rnn_args_check(proj_size):
    torch.manual_seed(0)
    reference = nn.LSTM(3, 5, 2, proj_size=proj_size)
    fused = FusedLSTM.from_torch(reference)
    for name, input_shape, h_shape, c_shape in _args_check_cases(proj_size):
        x, hx = torch.randn(input_shape), (torch.randn(h_shape), torch.randn(c_shape))
        _assert_same_error(lambda: reference(x, hx), lambda: fused(x, hx))


# -- the remaining input errors of nn.LSTM ---------------------------------------------------------

LSTM_INPUT_CASES = {
    "4-D input": lambda: (torch.randn(2, 3, 4, 1), None),
    "1-D input": lambda: (torch.randn(4), None),
    "dtype mismatch": lambda: (torch.randn(2, 3, 4, dtype=torch.float64), None),
    "sequence length 0": lambda: (torch.randn(0, 3, 4), None),
    "batched input, 2-D states": lambda: (torch.randn(2, 3, 4), (torch.randn(3, 5), torch.randn(3, 5))),
    "unbatched input, 3-D states": lambda: (torch.randn(2, 4), (torch.randn(1, 1, 5), torch.randn(1, 1, 5))),
    "unbatched input size": lambda: (torch.randn(2, 6), None),
    "unbatched state size": lambda: (torch.randn(2, 4), (torch.randn(1, 6), torch.randn(1, 5))),
}


@pytest.mark.parametrize("case", list(LSTM_INPUT_CASES))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_input_errors(case, bidirectional):
    reference = nn.LSTM(4, 5, bidirectional=bidirectional)
    fused = FusedLSTM.from_torch(reference)
    x, hx = LSTM_INPUT_CASES[case]()
    if bidirectional and hx is not None:
        hx = tuple(torch.cat([s, s]) for s in hx)
    _assert_same_error(lambda: reference(x, hx), lambda: fused(x, hx))


def test_packed_input_with_wrong_states_raises_runtime_error():
    """nn.LSTM fails deep in its kernel here; FusedLSTM raises its usual message, same type."""
    fused = FusedLSTM(4, 5)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 3, 4), torch.tensor([4, 2, 1]))
    with pytest.raises(RuntimeError, match=re.escape("Expected hidden[0] size (1, 3, 5), got [1, 2, 5]")):
        fused(packed, (torch.randn(1, 2, 5), torch.randn(1, 3, 5)))
    with pytest.raises(RuntimeError, match=re.escape("input.size(-1) must be equal to input_size. Expected 4")):
        fused(nn.utils.rnn.pack_padded_sequence(torch.randn(4, 3, 7), torch.tensor([4, 2, 1])))


def test_state_dtype_mismatch_raises_runtime_error():
    fused = FusedLSTM(4, 5)
    with pytest.raises(RuntimeError, match="hidden state dtype"):
        fused(torch.randn(2, 3, 4), (torch.randn(1, 3, 5, dtype=torch.float64), torch.randn(1, 3, 5)))


CONSTRUCTOR_CASES = [
    dict(input_size=4, hidden_size=0), dict(input_size=4, hidden_size=2.0), dict(input_size=4, hidden_size="2"),
    dict(input_size=0, hidden_size=3), dict(input_size=4.0, hidden_size=3), dict(input_size=4, hidden_size=3,
                                                                                 num_layers=0),
    dict(input_size=4, hidden_size=3, proj_size=3), dict(input_size=4, hidden_size=3, proj_size=5),
    dict(input_size=4, hidden_size=3, proj_size=-1), dict(input_size=4, hidden_size=3, dropout=1.5),
    dict(input_size=4, hidden_size=3, dropout=-0.1), dict(input_size=4, hidden_size=3, dropout=True),
    dict(input_size=4, hidden_size=3, dropout="0.5"), dict(input_size=4, hidden_size=3, bias=1),
    dict(input_size=4, hidden_size=3, batch_first="yes"),
]


@pytest.mark.parametrize("config", CONSTRUCTOR_CASES, ids=str)
def test_constructor_errors(config):
    _assert_same_error(lambda: nn.LSTM(**config), lambda: FusedLSTM(**config))


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        FusedLSTM(3, 4, dropout=0.5)


# -- nn.LSTMCell -----------------------------------------------------------------------------------

CELL_CASES = {
    "input size": lambda: (torch.randn(3, 11), (torch.randn(3, 20), torch.randn(3, 20))),
    "h size": lambda: (torch.randn(3, 10), (torch.randn(3, 21), torch.randn(3, 20))),
    "c size": lambda: (torch.randn(3, 10), (torch.randn(3, 20), torch.randn(3, 21))),
    "h batch": lambda: (torch.randn(3, 10), (torch.randn(5, 20), torch.randn(3, 20))),
    "c batch": lambda: (torch.randn(3, 10), (torch.randn(3, 20), torch.randn(2, 20))),
    "3-D input": lambda: (torch.randn(2, 3, 10), None),
    "4-D hx": lambda: (torch.randn(3, 10), (torch.randn(3, 1, 1, 20), torch.randn(3, 1, 1, 20))),
    "unbatched input, batched hx": lambda: (torch.randn(10), (torch.randn(3, 20), torch.randn(3, 20))),
    "input dtype": lambda: (torch.randn(3, 10, dtype=torch.float64), None),
    "hx dtype": lambda: (torch.randn(3, 10), (torch.randn(3, 20, dtype=torch.float64), torch.randn(3, 20))),
}


@pytest.mark.parametrize("case", list(CELL_CASES))
def test_cell_input_errors(case):
    reference = nn.LSTMCell(10, 20)
    fused = FusedLSTMCell.from_torch(reference)
    x, hx = CELL_CASES[case]()
    _assert_same_error(lambda: reference(x, hx), lambda: fused(x, hx))


def test_bad_input_leaves_module_usable(monkeypatch):
    """Nothing is corrupted by a rejected call: the next good call gives torch's answer."""
    monkeypatch.undo()
    reference = nn.LSTM(4, 5, num_layers=2)
    fused = FusedLSTM.from_torch(reference)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    for _ in range(3):
        with pytest.raises(RuntimeError):
            fused(torch.randn(3, 2, 7))
    assert all(torch.equal(before[k], v) for k, v in fused.state_dict().items())
    x = torch.randn(3, 2, 4)
    assert torch.allclose(fused(x)[0], reference(x)[0], atol=5e-5)
    assert fused_lstm.FusedLSTM is FusedLSTM
