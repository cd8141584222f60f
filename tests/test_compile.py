"""torch.compile(fullgraph=True) and torch.export on models containing FusedLSTM."""
import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTM, FusedLSTMCell


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.rnn = FusedLSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True, proj_size=3)
        self.cell = FusedLSTMCell(6, 4)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        out, (h, c) = self.rnn(torch.tanh(self.embed(x)))
        h_cell, _ = self.cell(out[:, -1])
        return self.head(out).sum(-1) + h_cell.sum(-1, keepdim=True)


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    model = Tagger().double()
    x = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.sum(), [x, *model.parameters()])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    actual = compiled(x)
    actual_grads = torch.autograd.grad(actual.sum(), [x, *model.parameters()])
    assert torch.allclose(actual, expected, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(actual_grads, expected_grads))


def test_nn_lstm_cannot_compile_fullgraph_but_fused_can():
    """The reason FusedLSTM is not an RNNBase subclass (DESIGN.md)."""
    torch._dynamo.reset()
    with pytest.raises(Exception):
        torch.compile(nn.LSTM(3, 4), fullgraph=True, backend="eager")(torch.randn(2, 1, 3))
    torch._dynamo.reset()
    out, _ = torch.compile(FusedLSTM(3, 4), fullgraph=True, backend="eager")(torch.randn(2, 1, 3))
    assert out.shape == (2, 1, 4)


def test_export_fixed_shape():
    model = Tagger().eval()
    x = torch.randn(2, 5, 4)
    exported = torch.export.export(model, (x,))
    assert "fused_lstm.recurrence_forward" in str(exported.graph)
    assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_cell_with_a_state_compiles_fullgraph_and_exports():
    """A cell call with hx given is plain in eager mode (functional.plain_lstm_cell):
    traced, it must still go through the checked path and the custom ops."""
    torch.manual_seed(1)
    cell = FusedLSTMCell(6, 4).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    leaves = [x, *cell.parameters()]
    expected = cell(x, hx)
    expected_grads = torch.autograd.grad(sum(t.sum() for t in expected), leaves)
    torch._dynamo.reset()
    actual = torch.compile(cell, fullgraph=True, backend="aot_eager")(x, hx)
    actual_grads = torch.autograd.grad(sum(t.sum() for t in actual), leaves)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(actual, expected))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(actual_grads, expected_grads))
    cell = cell.float().eval()
    args = (x.detach().float(), tuple(t.float() for t in hx))
    exported = torch.export.export(cell, args)
    assert "fused_lstm.recurrence_forward" in str(exported.graph)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(exported.module()(*args), cell(*args)))
