"""from_torch and replace_lstm: nested models swapped in place, weights, device,
dtype and train/eval mode kept, outputs unchanged."""
import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTM, FusedLSTMCell, replace_lstm


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True, proj_size=3)
        self.cells = nn.ModuleList([nn.LSTMCell(6, 5), nn.Linear(5, 5)])
        self.by_name = nn.ModuleDict({"inner": nn.Sequential(nn.Identity(), nn.LSTM(6, 2))})

    def forward(self, x):
        out, _ = self.rnn(x)                      # [N, T, 6]
        h, c = self.cells[0](out[:, -1])          # [N, 5]
        tail, _ = self.by_name["inner"][1](out.transpose(0, 1))
        return out.sum() + self.cells[1](h).sum() + c.sum() + tail.sum()


def _fused_count(model):
    return sum(isinstance(m, (FusedLSTM, FusedLSTMCell)) for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_replace_lstm_in_nested_model(dtype):
    model = Encoder().to(dtype).eval()
    model.by_name["inner"][1].train()
    x = torch.randn(2, 5, 4, dtype=dtype)
    expected = model(x)
    returned = replace_lstm(model)
    assert returned is model
    assert _fused_count(model) == 3
    assert not any(type(m) in (nn.LSTM, nn.LSTMCell) for m in model.modules())
    assert isinstance(model.rnn, FusedLSTM) and isinstance(model.cells[0], FusedLSTMCell)
    assert isinstance(model.by_name["inner"][1], FusedLSTM)
    assert model.by_name["inner"][1].training and not model.rnn.training
    assert all(p.dtype == dtype for p in model.parameters())
    assert torch.allclose(model(x), expected, atol=1e-9 if dtype == torch.float64 else 1e-4)


def test_from_torch_keeps_everything():
    reference = nn.LSTM(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True,
                        dtype=torch.float64).eval()
    reference.weight_hh_l0.requires_grad_(False)
    fused = FusedLSTM.from_torch(reference)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size"):
        assert getattr(fused, name) == getattr(reference, name)
    assert not fused.training
    assert not fused.weight_hh_l0.requires_grad and fused.weight_ih_l0.requires_grad
    for (name, a), (_, b) in zip(fused.named_parameters(), reference.named_parameters()):
        assert torch.equal(a, b) and a.dtype == torch.float64, name
        assert a.data_ptr() != b.data_ptr(), "weights are copied, not shared"
    cell = nn.LSTMCell(3, 4, bias=False)
    fused_cell = FusedLSTMCell.from_torch(cell)
    assert fused_cell.bias_ih is None and torch.equal(fused_cell.weight_ih, cell.weight_ih)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError):
        FusedLSTM.from_torch(nn.GRU(3, 4))
    with pytest.raises(TypeError):
        FusedLSTMCell.from_torch(nn.GRUCell(3, 4))


def test_replace_lstm_on_a_bare_module_and_on_a_model_without_lstm():
    assert isinstance(replace_lstm(nn.LSTM(2, 3)), FusedLSTM)
    model = nn.Sequential(nn.Linear(2, 2))
    assert replace_lstm(model) is model and _fused_count(model) == 0
