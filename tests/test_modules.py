"""FusedLSTM / FusedLSTMCell against torch.nn.LSTM / nn.LSTMCell as drop-ins:
outputs, states and every gradient, over the configuration grid."""
from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pack_sequence

from fused_lstm import FusedLSTM, FusedLSTMCell
from conftest import ATOL, assert_all_close, force_backend

GRID = list(itertools.product([True, False], [False, True], [False, True], [0, 3], [1, 2],
                              [torch.float64, torch.float32]))


def _pair(dtype=torch.float64, **config):
    reference = nn.LSTM(dtype=dtype, **config)
    fused = FusedLSTM.from_torch(reference)
    return reference, fused


def _run(module, x, hx, weights_of_output=None):
    """Forward, then gradients of a loss that weighs every output element differently."""
    out, (h, c) = module(x, hx)
    data = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    weights = torch.linspace(-1, 1, data.numel(), dtype=data.dtype).reshape(data.shape)
    loss = (data * weights).sum() + (h * 0.5).sum() + (c * c).sum()
    leaves = [t for t in ([x.data if hasattr(x, "batch_sizes") else x] + list(hx or ())) if t.requires_grad]
    grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
    return [data, h, c, *grads]


@pytest.mark.parametrize("bias,bidirectional,batch_first,proj_size,num_layers,dtype", GRID)
def test_parity_grid(bias, bidirectional, batch_first, proj_size, num_layers, dtype):
    config = dict(input_size=5, hidden_size=7, num_layers=num_layers, bias=bias, batch_first=batch_first,
                  bidirectional=bidirectional, proj_size=proj_size)
    reference, fused = _pair(dtype, **config)
    T, N = 6, 3
    x = torch.randn((N, T, 5) if batch_first else (T, N, 5), dtype=dtype, requires_grad=True)
    states = num_layers * (2 if bidirectional else 1)
    hx = (torch.randn(states, N, proj_size or 7, dtype=dtype, requires_grad=True),
          torch.randn(states, N, 7, dtype=dtype, requires_grad=True))
    atol = 1e-9 if dtype == torch.float64 else ATOL[dtype]
    assert_all_close(_run(fused, x, hx), _run(reference, x, hx), atol, "outputs and gradients")
    # Without hx: zero initial state.
    assert_all_close(_run(fused, x, None), _run(reference, x, None), atol, "outputs and gradients (no hx)")


def _random_input(rng: random.Random, config: dict, layout: str, T: int, N: int):
    """x for nn.LSTM's three input kinds (requires grad): dense [T, N, I] (or
    batch first), a PackedSequence of random lengths in random order, or unbatched [T, I]."""
    I, batch_first = config["input_size"], config["batch_first"]
    if layout == "unbatched":
        return torch.randn(T, I, dtype=torch.float64, requires_grad=True)
    x = torch.randn((N, T, I) if batch_first else (T, N, I), dtype=torch.float64, requires_grad=True)
    if layout == "dense":
        return x
    lengths = torch.tensor([rng.randint(1, T) for _ in range(N)])
    return pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)


@pytest.mark.parametrize("seed", range(48))
def test_random_configuration_matches_torch(seed):
    """Beyond the grid's fixed sizes: a configuration drawn from the seed, with
    input and hidden sizes up to 40 (several SIMD vectors, split between the
    thread team's members, ragged last blocks), 1-3 layers, 1-12 steps, batch
    1-9, dense, packed or unbatched input, with or without hx. Every output
    and gradient, float64."""
    rng = random.Random(seed)
    hidden = rng.randint(2, 40)
    config = dict(input_size=rng.randint(1, 40), hidden_size=hidden, num_layers=rng.randint(1, 3),
                  bias=rng.random() < 0.8, batch_first=rng.random() < 0.5, bidirectional=rng.random() < 0.5,
                  proj_size=rng.randint(1, hidden - 1) if rng.random() < 0.3 else 0)
    T, N, layout = rng.randint(1, 12), rng.randint(1, 9), rng.choice(["dense", "packed", "unbatched"])
    reference, fused = _pair(**config)
    x = _random_input(rng, config, layout, T, N)
    hx = None
    if rng.random() < 0.5:
        states = config["num_layers"] * (2 if config["bidirectional"] else 1)
        batch = () if layout == "unbatched" else (N,)
        hx = tuple(torch.randn(states, *batch, size, dtype=torch.float64, requires_grad=True)
                   for size in (config["proj_size"] or hidden, hidden))
    assert_all_close(_run(fused, x, hx), _run(reference, x, hx), 1e-9,
                     f"{config}, T={T}, N={N}, {layout}, hx={hx is not None}")


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional,proj_size,num_layers", [(False, 0, 1), (True, 0, 2), (True, 2, 2),
                                                                (False, 3, 3)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequences(enforce_sorted, bidirectional, proj_size, num_layers, with_hx):
    reference, fused = _pair(input_size=4, hidden_size=5, num_layers=num_layers, bidirectional=bidirectional,
                             proj_size=proj_size)
    lengths = [7, 5, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 5]
    sequences = [torch.randn(length, 4, dtype=torch.float64) for length in lengths]
    padded = nn.utils.rnn.pad_sequence(sequences).requires_grad_()
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    states = num_layers * (2 if bidirectional else 1)
    hx = None
    if with_hx:
        hx = (torch.randn(states, 5, proj_size or 5, dtype=torch.float64, requires_grad=True),
              torch.randn(states, 5, 5, dtype=torch.float64, requires_grad=True))
    expected_out, _ = reference(packed, hx)
    actual_out, _ = fused(packed, hx)
    assert isinstance(actual_out, nn.utils.rnn.PackedSequence)
    assert torch.equal(actual_out.batch_sizes, expected_out.batch_sizes)
    assert (actual_out.sorted_indices is None) == (expected_out.sorted_indices is None)
    assert_all_close(_run(fused, packed, hx), _run(reference, packed, hx), 1e-9, "packed")
    # Padding is not computed: the padded output is zero there, as nn.LSTM's.
    unpacked, unpacked_lengths = pad_packed_sequence(actual_out)
    assert unpacked_lengths.tolist() == lengths
    for index, length in enumerate(lengths):
        assert torch.all(unpacked[length:, index] == 0)


def test_variable_sequence_matches_per_sequence_runs():
    """PyTorch's test_variable_sequence: packed results equal running each sequence alone."""
    fused = FusedLSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    lengths = [6, 4, 3, 1]
    sequences = [torch.randn(length, 3, dtype=torch.float64) for length in lengths]
    out, (h, c) = fused(pack_sequence(sequences))
    padded, _ = pad_packed_sequence(out)
    for index, sequence in enumerate(sequences):
        alone, (h_alone, c_alone) = fused(sequence.unsqueeze(1))
        assert torch.allclose(padded[: lengths[index], index], alone[:, 0], atol=1e-12)
        assert torch.allclose(h[:, index], h_alone[:, 0], atol=1e-12)
        assert torch.allclose(c[:, index], c_alone[:, 0], atol=1e-12)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input(batch_first, with_hx):
    reference, fused = _pair(input_size=3, hidden_size=4, num_layers=2, batch_first=batch_first, proj_size=2)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 4, dtype=torch.float64, requires_grad=True)) if with_hx else None
    actual, expected = _run(fused, x, hx), _run(reference, x, hx)
    assert actual[0].shape == (5, 2) and actual[1].shape == (2, 2)
    assert_all_close(actual, expected, 1e-9, "unbatched")


def test_zero_batch_works_and_backpropagates():
    """PyTorch's test_RNN_input_size_zero."""
    fused = FusedLSTM(3, 4)
    x = torch.zeros(5, 0, 3, requires_grad=True)
    out, (h, c) = fused(x)
    assert out.shape == (5, 0, 4) and h.shape == (1, 0, 4) and c.shape == (1, 0, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and fused.weight_hh_l0.grad is not None


def test_dropout_matches_torch_in_training_and_eval():
    reference, fused = _pair(input_size=4, hidden_size=5, num_layers=3, dropout=0.4, bidirectional=True)
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    # Same RNG stream and the same dropout calls: training outputs agree exactly.
    torch.manual_seed(1)
    expected = reference(x)[0]
    torch.manual_seed(1)
    actual = fused(x)[0]
    assert torch.allclose(actual, expected, atol=1e-12)
    reference.eval(), fused.eval()
    assert torch.allclose(fused(x)[0], reference(x)[0], atol=1e-12)
    assert torch.equal(fused(x)[0], fused(x)[0])


def test_setting_dropout_after_construction_takes_effect():
    fused = FusedLSTM(4, 5, num_layers=2)
    x = torch.randn(6, 2, 4)
    assert torch.equal(fused(x)[0], fused(x)[0])
    fused.dropout = 0.9
    assert not torch.equal(fused(x)[0], fused(x)[0])


def test_parameters_and_state_dict_match_torch():
    reference = nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, bias=True)
    fused = FusedLSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, bias=True)
    assert [(n, p.shape) for n, p in fused.named_parameters()] == \
        [(n, p.shape) for n, p in reference.named_parameters()]
    assert list(fused.state_dict()) == list(reference.state_dict())
    assert fused._flat_weights_names == reference._flat_weights_names
    assert fused._all_weights == reference._all_weights
    # Both ways, and the outputs follow the weights.
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(4, 2, 3)
    assert torch.allclose(fused(x)[0], reference(x)[0], atol=5e-5)
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(0.1)
    reference.load_state_dict(fused.state_dict())
    assert torch.allclose(fused(x)[0], reference(x)[0], atol=5e-5)


def test_same_seed_gives_same_weights_and_repr():
    for config in (dict(input_size=3, hidden_size=4), dict(input_size=3, hidden_size=4, num_layers=2,
                   bias=False, batch_first=True, dropout=0.5, bidirectional=True, proj_size=2)):
        torch.manual_seed(7)
        reference = nn.LSTM(**config)
        torch.manual_seed(7)
        fused = FusedLSTM(**config)
        assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), reference.parameters()))
        assert repr(fused) == repr(reference).replace("LSTM(", "FusedLSTM(", 1)
    fused.flatten_parameters()  # accepted, as nn.LSTM's


def test_device_and_dtype_arguments():
    fused = FusedLSTM(3, 4, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in fused.parameters())
    cell = FusedLSTMCell(3, 4, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in cell.parameters())


def test_not_an_rnnbase_subclass():
    """Dynamo refuses to trace RNNBase subclasses; FusedLSTM must stay out of that hierarchy."""
    assert not isinstance(FusedLSTM(2, 3), nn.RNNBase)


# -- FusedLSTMCell ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
def test_cell_parity(dtype, bias, batched, with_hx):
    reference = nn.LSTMCell(5, 7, bias=bias, dtype=dtype)
    fused = FusedLSTMCell.from_torch(reference)
    shape = (3, 5) if batched else (5,)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    state_shape = (3, 7) if batched else (7,)
    hx = (torch.randn(state_shape, dtype=dtype, requires_grad=True),
          torch.randn(state_shape, dtype=dtype, requires_grad=True)) if with_hx else None
    results = []
    for module in (fused, reference):
        h, c = module(x, hx)
        loss = (h * torch.arange(h.numel(), dtype=dtype).reshape(h.shape)).sum() + (c * c).sum()
        leaves = [x, *(hx or ())]
        results.append([h, c, *torch.autograd.grad(loss, leaves + list(module.parameters()))])
    atol = 1e-9 if dtype == torch.float64 else ATOL[dtype]
    assert_all_close(results[0], results[1], atol, "cell")


@pytest.mark.parametrize("seed", range(24))
def test_cell_random_configuration_matches_torch(seed):
    """A cell drawn from the seed (sizes up to 40, batch up to 20, bias or not,
    hx or not) run for 1-4 steps, each feeding the next, in float64: every
    state and every gradient through the whole loop."""
    rng = random.Random(seed)
    I, H, N, steps = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 20), rng.randint(1, 4)
    reference = nn.LSTMCell(I, H, bias=rng.random() < 0.8, dtype=torch.float64)
    fused = FusedLSTMCell.from_torch(reference)
    x = torch.randn(N, I, dtype=torch.float64, requires_grad=True)
    hx = None
    if rng.random() < 0.7:
        hx = tuple(torch.randn(N, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    results = []
    for module in (fused, reference):
        state, outputs = hx, []
        for step in range(steps):
            state = module(x * (step + 1), state)
            outputs += state
        loss = sum((output * (index + 1)).sum() for index, output in enumerate(outputs))
        results.append([*outputs, *torch.autograd.grad(loss, [x, *(hx or ()), *module.parameters()])])
    assert_all_close(results[0], results[1], 1e-9, f"I={I}, H={H}, N={N}, steps={steps}, hx={hx is not None}")


@pytest.mark.parametrize("through", ["h", "c"])
def test_cell_backward_through_one_output(through):
    reference = nn.LSTMCell(4, 6, dtype=torch.float64)
    fused = FusedLSTMCell.from_torch(reference)
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (fused, reference):
        h, c = module(x)
        out = h if through == "h" else c
        grads.append(torch.autograd.grad(out.sum(), [x, *module.parameters()]))
    assert_all_close(grads[0], grads[1], 1e-10, f"through {through}")


def test_cell_parameters_match_torch():
    reference, fused = nn.LSTMCell(3, 4, bias=False), FusedLSTMCell(3, 4, bias=False)
    assert list(fused.state_dict()) == list(reference.state_dict())
    assert fused.bias_ih is None and fused.bias_hh is None
    assert repr(fused) == repr(reference).replace("LSTMCell(", "FusedLSTMCell(", 1)
    fused.load_state_dict(reference.state_dict())
    reference.load_state_dict(fused.state_dict())


def test_gradcheck_two_layer_bidirectional_model():
    fused = FusedLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in fused.named_parameters()]

    def model(x, h0, c0, *params):
        out, (h, c) = torch.func.functional_call(fused, dict(zip(names, params)), (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(model, (x, h0, c0, *fused.parameters()), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_cpu_autocast_runs_in_the_autocast_dtype_like_torch(input_dtype):
    reference = nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    fused = FusedLSTM.from_torch(reference)
    cell_reference = nn.LSTMCell(4, 6)
    cell = FusedLSTMCell.from_torch(cell_reference)
    x = torch.randn(5, 3, 4, dtype=input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, (h, c) = reference(x)
        assert expected.dtype == torch.bfloat16
        actual, (h_fused, c_fused) = fused(x)
        expected_cell = cell_reference(x[0])
        actual_cell = cell(x[0])
    for a, b in ((actual, expected), (h_fused, h), (c_fused, c), *zip(actual_cell, expected_cell)):
        # nn.LSTM runs in bf16; nn.LSTMCell's outputs promote with c_prev's dtype.
        assert a.dtype == b.dtype
        # Both ran in bf16; ours accumulates in fp32, so the two differ by bf16 rounding.
        assert (a.float() - b.float()).abs().max() < 0.05


# -- the CUDA kernels end to end, run on the CPU by the simt module --------------------------------

@pytest.mark.simt
@pytest.mark.parametrize("config,packed", [
    (dict(), False),
    (dict(num_layers=2, bidirectional=True, batch_first=True), False),
    (dict(proj_size=3), False),
    (dict(bidirectional=True, proj_size=2), True),
])
@pytest.mark.parametrize("path", ["step", "persistent"])
def test_fused_lstm_through_the_cuda_kernels_on_simt(config, packed, path, monkeypatch):
    """FusedLSTM -> custom op -> _cuda_backend -> kernel sources (on the CPU), forward
    and backward, against nn.LSTM: the whole CUDA wiring without a GPU."""
    pytest.importorskip("fused_lstm._simt")
    force_backend(monkeypatch, "simt")
    monkeypatch.setenv("FUSED_LSTM_CUDA_PATH", path)
    reference = nn.LSTM(4, 6, dtype=torch.float32, **config)
    fused = FusedLSTM.from_torch(reference)
    batch_first = config.get("batch_first", False)
    x = torch.randn((3, 5, 4) if batch_first else (5, 3, 4), requires_grad=True)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([2, 5, 4]), batch_first=batch_first, enforce_sorted=False)
    assert_all_close(_run(fused, x, None), _run(reference, x, None), 5e-5, "simt kernels")


@pytest.mark.parametrize("backend", ["cpu", "reference", pytest.param("simt", marks=pytest.mark.simt)])
@pytest.mark.parametrize("through", ["output", "h_n", "c_n"])
@pytest.mark.parametrize("packed", [False, True])
def test_backward_through_one_output(backend, through, packed, monkeypatch):
    """A loss of one output only: the others' gradients reach the recurrence as None."""
    if backend == "simt":
        pytest.importorskip("fused_lstm._simt")
    force_backend(monkeypatch, backend)
    dtype = torch.float32 if backend == "simt" else torch.float64
    reference = nn.LSTM(4, 6, num_layers=2, dtype=dtype)
    fused = FusedLSTM.from_torch(reference)
    x = torch.randn(5, 3, 4, dtype=dtype, requires_grad=True)
    grads = []
    for module in (fused, reference):
        inputs = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False) if packed else x
        out, (h, c) = module(inputs)
        chosen = {"output": out.data if packed else out, "h_n": h, "c_n": c}[through]
        weights = torch.linspace(-1, 1, chosen.numel(), dtype=dtype).reshape(chosen.shape)
        grads.append(torch.autograd.grad((chosen * weights).sum(), [x, *module.parameters()]))
    assert_all_close(grads[0], grads[1], 5e-5 if dtype == torch.float32 else 1e-10, f"through {through}")


def test_concurrent_calls_from_python_threads():
    """The compiled core releases the GIL and serialises its thread team: calls from
    several Python threads at once give the single-threaded answer, forward and backward."""
    import threading
    fused = FusedLSTM(8, 16, num_layers=2)
    x = torch.randn(20, 4, 8, requires_grad=True)
    expected = fused(x)[0].detach()
    expected_grad, = torch.autograd.grad(fused(x)[0].square().sum(), [x])
    results = []

    def work():
        for _ in range(10):
            y = fused(x)[0]
            grad, = torch.autograd.grad(y.square().sum(), [x])
            results.append(torch.equal(y, expected) and torch.equal(grad, expected_grad))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 30 and all(results)


class _Doubled(nn.Module):
    def forward(self, weight):
        return 2 * weight


def test_parametrized_and_replaced_weights_are_used():
    """Weights not in _parameters (a parametrization; a plain tensor in a
    parameter's place) are still read through the module's attributes."""
    torch.manual_seed(0)
    fused = FusedLSTM(3, 5, dtype=torch.float64)
    plain = FusedLSTM(3, 5, dtype=torch.float64)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    nn.utils.parametrize.register_parametrization(fused, "weight_hh_l0", _Doubled())
    with torch.no_grad():
        plain.weight_hh_l0.mul_(2)
    flat = lambda result: (result[0], *result[1])  # noqa: E731
    assert_all_close(flat(fused(x)), flat(plain(x)), 1e-12, "parametrized weight_hh")
    fused(x)[0].sum().backward()
    assert fused.parametrizations.weight_hh_l0.original.grad is not None

    del plain.weight_ih_l0
    plain.weight_ih_l0 = torch.zeros(20, 3, dtype=torch.float64)
    reference = nn.LSTM(3, 5, dtype=torch.float64)
    reference.load_state_dict({**plain.state_dict(), "weight_ih_l0": torch.zeros(20, 3, dtype=torch.float64)})
    assert_all_close(flat(plain(x)), flat(reference(x)), 1e-12, "plain tensor as weight_ih")


def test_forced_backend_must_be_known(monkeypatch):
    force_backend(monkeypatch, "gpu")
    with pytest.raises(ValueError, match="FUSED_LSTM_BACKEND must be reference, cpu, cuda or simt, got 'gpu'"):
        FusedLSTM(3, 4)(torch.randn(2, 1, 3))
