"""FusedLSTMCell against torch.nn.LSTMCell: one step, inference and training
(forward, then backward into the weights, the input and the state), at sizes
a step-by-step decoder runs. A small step's kernels take tens of
microseconds, so per-call costs (Python, autograd, allocation) show here
more than in the sequence benchmarks; at N=1 H=512 the step's 8 MiB of
weights do (FusedLSTMCell takes its pre-activation from the framework's GEMMs
there, _ops._cell_by_gemms). CPU only; raw numbers: --benchmark-json (the
case is in each benchmark's extra_info)."""
import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTMCell

CELL_SHAPES = [(1, 64), (8, 128), (64, 256), (1, 512)]  # (N, H), input size H
CELL_RUNNERS = ["fused", "lstm_cell"]  # FusedLSTMCell, torch.nn.LSTMCell


def make_cell_case(runner, batch, hidden, mode, seed=0):
    """A callable running one step of the runner's cell (training: and its backward)."""
    torch.manual_seed(seed)
    reference = nn.LSTMCell(hidden, hidden)
    module = FusedLSTMCell.from_torch(reference) if runner == "fused" else reference
    training = mode == "training"
    x = torch.randn(batch, hidden, requires_grad=training)
    state = tuple(torch.randn(batch, hidden, requires_grad=training) for _ in range(2))
    grads = tuple(torch.randn(batch, hidden) for _ in range(2))

    if training:
        def run():
            torch.autograd.backward(module(x, state), grads)
    else:
        def run():
            with torch.inference_mode():
                module(x, state)
    return run


@pytest.mark.parametrize("runner", CELL_RUNNERS)
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("shape", CELL_SHAPES, ids=lambda s: "N{}-H{}".format(*s))
def test_lstm_cell(benchmark, shape, mode, runner, device):
    if device != "cpu":
        pytest.skip("the cell benchmark is CPU-only")
    run = make_cell_case(runner, *shape, mode)
    run()  # warm-up
    benchmark.extra_info.update(batch=shape[0], hidden=shape[1], mode=mode, runner=runner, device=device)
    benchmark(run)
