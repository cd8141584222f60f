"""FusedLSTMCell's eager CPU step (_ops.cell_step): the recurrence's kernels
launched directly for one step. Same bits as the general one-step path
(functional.lstm_layer with T = 1), outputs and every gradient, on any
thread count; create_graph; bad arguments refused before any kernel.
A step with large weights (_ops._cell_by_gemms) takes its pre-activation
from framework GEMMs and runs only the gate math on the kernels: the same
results within the parity bounds, checked here with that path forced at
small sizes."""
from __future__ import annotations

import pytest
import torch

from fused_lstm import FusedLSTMCell, _backend, _ops, _params, functional
from test_cpu_recurrence import TOLERANCE, torch_threads


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    # Every output buffer starts as NaN: an element the kernels skip shows.
    monkeypatch.setattr(_params, "POISON_OUTPUTS", True)


@pytest.fixture
def cell_launches(monkeypatch):
    """The `training` flag of every _backend.cell_forward call."""
    calls = []
    launch = _backend.cell_forward

    def spy(*args, training):
        calls.append(training)
        return launch(*args, training=training)

    monkeypatch.setattr(_backend, "cell_forward", spy)
    return calls


def general_step(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """The one-step recurrence through lstm_layer, as lstm_cell ran before cell_step."""
    h, c = hx
    y, _, c_next = functional.lstm_layer(x.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, None, h, c)
    return y[0], c_next


def make_cell(batch, input_size, hidden, dtype, bias, state_grad, seed):
    torch.manual_seed(seed)
    cell = FusedLSTMCell(input_size, hidden, bias=bias, dtype=dtype)
    x = torch.randn(batch, input_size, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(batch, hidden, dtype=dtype, requires_grad=state_grad) for _ in range(2))
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    return x, hx, weights


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("state_grad", [True, False], ids=["state_grad", "no_state_grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 20, 33), (9, 64, 130)], ids=lambda s: "N{}I{}H{}".format(*s))
def test_training_step_has_the_general_paths_bits(shape, dtype, bias, state_grad, threads, cell_launches):
    x, hx, weights = make_cell(*shape, dtype, bias, state_grad, seed=sum(shape))
    leaves = [x, *(hx if state_grad else ()), *(w for w in weights if w is not None)]
    grad_h, grad_c = torch.randn_like(hx[0]), torch.randn_like(hx[1])
    results = []
    with torch_threads(threads):
        for step in (functional.lstm_cell, general_step):
            h, c = step(x, hx, *weights)
            grads = torch.autograd.grad((h * grad_h).sum() + (c * grad_c).sum(), leaves)
            results.append([h, c, *grads])
    assert cell_launches == [True], "lstm_cell did not take cell_step"
    for index, (got, expected) in enumerate(zip(*results)):
        assert torch.equal(got, expected), f"output {index} differs from the general path"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_inference_step_has_the_general_paths_bits(dtype, cell_launches):
    x, hx, weights = make_cell(4, 6, 10, dtype, True, False, seed=1)
    with torch.no_grad():
        got = functional.lstm_cell(x, hx, *weights)
        expected = general_step(x, hx, *weights)
    assert cell_launches == [False]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("gemms", [False, True], ids=["kernels", "gemms"])
@pytest.mark.parametrize("through", ["h", "c"])
def test_gradient_through_one_output(through, gemms, cell_launches, monkeypatch):
    if gemms:
        force_gemm_steps(monkeypatch)
    x, hx, weights = make_cell(2, 4, 6, torch.float64, True, True, seed=2)
    leaves = [x, *hx, *weights]
    results = []
    for step in (functional.lstm_cell, general_step):
        h, c = step(x, hx, *weights)
        results.append(torch.autograd.grad((h if through == "h" else c).sum(), leaves))
    assert cell_launches == [True]
    for a, b in zip(*results):  # the GEMM step: the same math through the framework's GEMMs
        torch.testing.assert_close(a, b, atol=1e-12 if gemms else 0, rtol=0)


@pytest.mark.parametrize("gemms", [False, True], ids=["kernels", "gemms"])
def test_create_graph_gives_first_derivatives_and_refuses_a_second(gemms, monkeypatch):
    if gemms:
        force_gemm_steps(monkeypatch)
    x, hx, weights = make_cell(3, 4, 5, torch.float64, True, True, seed=3)
    leaves = [x, *hx, *weights]
    h, c = functional.lstm_cell(x, hx, *weights)
    expected = torch.autograd.grad(h.sum() + 2 * c.sum(), leaves)
    h, c = functional.lstm_cell(x, hx, *weights)
    got = torch.autograd.grad(h.sum() + 2 * c.sum(), leaves, create_graph=True)
    for index, (a, b) in enumerate(zip(got, expected)):  # framework GEMMs there: not the same bits
        assert (a - b).abs().max() < 1e-12, f"gradient {index}"
    with pytest.raises(RuntimeError, match="no autograd formula"):
        got[0].sum().backward()


def test_bad_arguments_raise_before_any_kernel(cell_launches):
    x, (h, c), (w_ih, w_hh, b_ih, b_hh) = make_cell(3, 4, 5, torch.float32, True, False, seed=4)
    with pytest.raises(ValueError, match="fused_lstm"):
        functional.lstm_cell(x, (h[:, :4], c), w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="fused_lstm"):
        functional.lstm_cell(x[:, :3], (h, c), w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="fused_lstm"):
        functional.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, None)
    with pytest.raises(TypeError, match="fused_lstm"):
        functional.lstm_cell(x, (h.double(), c), w_ih, w_hh, b_ih, b_hh)
    assert cell_launches == []


@pytest.fixture
def plain_launches(monkeypatch):
    """The `training` flag of every step plain_lstm_cell launched (it skipped the checks)."""
    calls = []
    launch = functional.run_cell_step

    def spy(*args):
        calls.append(args[-1])
        return launch(*args)

    monkeypatch.setattr(functional, "run_cell_step", spy)
    return calls


@pytest.fixture
def module_checks(monkeypatch):
    """One entry per FusedLSTMCell call that ran the module's checks."""
    calls = []
    check = FusedLSTMCell._check_forward_args

    def spy(self, *args):
        calls.append(True)
        return check(self, *args)

    monkeypatch.setattr(FusedLSTMCell, "_check_forward_args", spy)
    return calls


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_plain_module_calls_skip_the_checks_with_the_same_bits(bias, grad, plain_launches, module_checks):
    torch.manual_seed(5)
    cell = FusedLSTMCell(6, 10, bias=bias)
    x, h, c = torch.randn(4, 6), torch.randn(4, 10), torch.randn(4, 10)
    with torch.set_grad_enabled(grad):
        got = cell(x, (h, c))
        assert plain_launches == [grad] and module_checks == []
        expected = general_step(x, (h, c), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def _not_plain_calls():
    """(name, call(cell, x, h, c) -> (h', c')) with the inputs of a plain call
    in a form plain_lstm_cell leaves to the checked path; same values."""
    def strided(t):
        return t.t().contiguous().t()  # same values, column-major

    class Sub(torch.Tensor):
        pass

    return [
        ("hx_list", lambda cell, x, h, c: cell(x, [h, c])),
        ("x_strided", lambda cell, x, h, c: cell(strided(x), (h, c))),
        ("c_strided", lambda cell, x, h, c: cell(x, (h, strided(c)))),
        ("unbatched", lambda cell, x, h, c: tuple(t.unsqueeze(0) for t in cell(x[0], (h[0], c[0])))),
        ("x_subclass", lambda cell, x, h, c: tuple(torch.Tensor(t) for t in cell(x.as_subclass(Sub), (h, c)))),
    ]


@pytest.mark.parametrize("name, call", _not_plain_calls(), ids=[name for name, _ in _not_plain_calls()])
def test_calls_that_are_not_plain_take_the_checked_path_with_the_same_results(name, call, module_checks):
    torch.manual_seed(6)
    cell = FusedLSTMCell(6, 10)
    x, h, c = torch.randn(4, 6), torch.randn(4, 10), torch.randn(4, 10)
    with torch.no_grad():
        expected = cell(x, (h, c))
        assert module_checks == []
        got = call(cell, x, h, c)
    assert module_checks == [True], "a call that is not plain skipped the checks"
    if name == "unbatched":  # row 0 alone
        expected = tuple(t[:1] for t in expected)
    for a, b in zip(got, expected):
        if name == "x_subclass":  # the general path: the same math through other kernels
            torch.testing.assert_close(a, b, atol=5e-6, rtol=0)
        else:
            assert torch.equal(a, b), name


@pytest.mark.parametrize("names", [("weight_hh",), ("bias_ih",), ("bias_ih", "bias_hh")], ids="+".join)
def test_a_parametrized_weight_is_used_not_skipped(names, module_checks):
    """torch.nn.utils.parametrize moves the parameter out of _parameters: the
    module must take the checked path, which reads the parametrized value."""
    from torch.nn.utils import parametrize

    class Halve(torch.nn.Module):
        def forward(self, value):
            return value / 2

    torch.manual_seed(7)
    reference = torch.nn.LSTMCell(6, 10)
    cell = FusedLSTMCell.from_torch(reference)
    for module in (reference, cell):
        for name in names:
            parametrize.register_parametrization(module, name, Halve())
    x, hx = torch.randn(3, 6), (torch.randn(3, 10), torch.randn(3, 10))
    with torch.no_grad():
        got, expected = cell(x, hx), reference(x, hx)
    assert module_checks == [True]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=5e-6, rtol=0)


# -- the framework-GEMM step (_ops._cell_by_gemms) -------------------------------------------------


def force_gemm_steps(monkeypatch):
    monkeypatch.setattr(_ops, "CELL_GEMM_MIN_WEIGHT_BYTES", 0)
    monkeypatch.setattr(_ops, "CELL_GEMM_MAX_INFERENCE_BATCH", 1 << 30)


@pytest.fixture
def gate_math_launches(monkeypatch):
    """Per _backend.cell_forward call, whether it ran the gate math alone (its w_ih None)."""
    calls = []
    launch = _backend.cell_forward

    def spy(*args, training):
        calls.append(args[3] is None)
        return launch(*args, training=training)

    monkeypatch.setattr(_backend, "cell_forward", spy)
    return calls


@pytest.fixture
def by_gemms(gate_math_launches, monkeypatch):
    """The GEMM step forced at any size; gate_math_launches' record."""
    force_gemm_steps(monkeypatch)
    return gate_math_launches


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("state_grad", [True, False], ids=["state_grad", "no_state_grad"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 5, 7), (9, 64, 130)], ids=lambda s: "N{}I{}H{}".format(*s))
def test_gemm_step_matches_the_general_path(shape, dtype, bias, state_grad, grad, by_gemms):
    x, hx, weights = make_cell(*shape, dtype, bias, state_grad, seed=sum(shape) + 1)
    leaves = [x, *(hx if state_grad else ()), *(w for w in weights if w is not None)]
    grad_h, grad_c = torch.randn_like(hx[0]), torch.randn_like(hx[1])
    results = []
    with torch.set_grad_enabled(grad):
        for step in (functional.lstm_cell, general_step):
            h, c = step(x, hx, *weights)
            grads = torch.autograd.grad((h * grad_h).sum() + (c * grad_c).sum(), leaves) if grad else ()
            results.append([h, c, *grads])
    assert by_gemms == [True], "lstm_cell did not take the GEMM step"
    for index, (got, expected) in enumerate(zip(*results)):
        torch.testing.assert_close(got, expected, atol=TOLERANCE[dtype], rtol=0, msg=f"output {index}")


def test_gemm_step_matches_nn_lstm_cell_in_float32(by_gemms):
    torch.manual_seed(8)
    reference = torch.nn.LSTMCell(48, 96)
    cell = FusedLSTMCell.from_torch(reference)
    x = torch.randn(16, 48, requires_grad=True)
    hx = tuple(torch.randn(16, 96, requires_grad=True) for _ in range(2))
    grad_h, grad_c = torch.randn(16, 96), torch.randn(16, 96)
    results = []
    for module in (cell, reference):
        h, c = module(x, hx)
        leaves = [x, *hx, *module.parameters()]
        results.append([h, c, *torch.autograd.grad((h * grad_h).sum() + (c * grad_c).sum(), leaves)])
    assert by_gemms == [True]
    for index, (got, expected) in enumerate(zip(*results)):
        torch.testing.assert_close(got, expected, atol=5e-5, rtol=0, msg=f"output {index}")


@pytest.mark.parametrize("frozen", ["weights", "input", "bias"])
def test_gemm_step_gives_only_the_gradients_asked_for(frozen, by_gemms):
    x, hx, weights = make_cell(5, 8, 12, torch.float64, True, True, seed=9)
    w_ih, w_hh, b_ih, b_hh = weights
    frozen_tensors = {"weights": (w_ih, w_hh), "input": (x, *hx), "bias": (b_ih, b_hh)}[frozen]
    for tensor in frozen_tensors:
        tensor.requires_grad_(False)
    leaves = [t for t in (x, *hx, *weights) if t.requires_grad]
    got = torch.autograd.grad(sum(t.sum() for t in functional.lstm_cell(x, hx, *weights)), leaves)
    expected = torch.autograd.grad(sum(t.sum() for t in general_step(x, hx, *weights)), leaves)
    assert by_gemms == [True]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_gemm_step_gradcheck_and_determinism(by_gemms):
    x, hx, weights = make_cell(3, 4, 5, torch.float64, True, True, seed=11)
    assert torch.autograd.gradcheck(lambda *args: functional.lstm_cell(args[0], args[1:3], *args[3:]),
                                    (x, *hx, *weights))
    runs = []
    for _ in range(2):
        h, c = functional.lstm_cell(x, hx, *weights)
        runs.append([h, c, *torch.autograd.grad(h.sum() + c.sum(), [x, *hx, *weights])])
    assert all(by_gemms)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("batch, hidden, grad, expected", [
    (1, 512, False, True), (8, 256, False, True), (16, 256, False, False),  # inference: small batches
    (64, 256, True, True), (1, 128, True, False), (64, 128, False, False),  # training: 1 MiB of weights
])
def test_large_weights_take_the_gemm_step(batch, hidden, grad, expected, gate_math_launches):
    cell = FusedLSTMCell(hidden, hidden)
    with torch.set_grad_enabled(grad):
        cell(torch.randn(batch, hidden), (torch.randn(batch, hidden), torch.randn(batch, hidden)))
    assert gate_math_launches == [expected]
