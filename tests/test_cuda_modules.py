"""FusedLSTM on a real GPU against cuDNN's nn.LSTM. Skipped without CUDA."""
import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTM, FusedLSTMCell, _backend

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(not _backend.cuda_kernels_available(), reason="built without CUDA kernels")]


def _gradients(module, x, hx):
    out, (h, c) = module(x, hx)
    data = out.data if isinstance(out, nn.utils.rnn.PackedSequence) else out
    loss = (data.float() * torch.linspace(-1, 1, data.numel(), device=data.device).reshape(data.shape)).sum() \
        + h.float().sum() + c.float().square().sum()
    return [data, h, c, *torch.autograd.grad(loss, [*module.parameters()])]


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 5e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True), dict(proj_size=16)])
def test_fused_lstm_matches_cudnn(dtype, atol, config):
    reference = nn.LSTM(32, 48, **config).cuda().to(dtype)
    fused = FusedLSTM.from_torch(reference)
    x = torch.randn(20, 8, 32, device="cuda", dtype=dtype)
    expected = _gradients(reference, x, None)
    actual = _gradients(fused, x, None)
    for a, b in zip(actual, expected):
        assert a.dtype == b.dtype
        assert (a.float() - b.float()).abs().max().item() <= atol * max(1.0, b.float().abs().max().item())


def test_packed_sequence_on_gpu_matches_cudnn():
    reference = nn.LSTM(8, 16, bidirectional=True).cuda()
    fused = FusedLSTM.from_torch(reference)
    padded = torch.randn(9, 4, 8, device="cuda")
    packed = nn.utils.rnn.pack_padded_sequence(padded, torch.tensor([9, 2, 7, 4]), enforce_sorted=False)
    for a, b in zip(_gradients(fused, packed, None), _gradients(reference, packed, None)):
        assert (a - b).abs().max().item() <= 5e-4


def test_cell_on_gpu_matches_torch():
    reference = nn.LSTMCell(8, 16).cuda()
    fused = FusedLSTMCell.from_torch(reference)
    x = torch.randn(5, 8, device="cuda")
    for a, b in zip(fused(x), reference(x)):
        assert (a - b).abs().max().item() <= 5e-5


def test_runs_on_the_current_stream_and_is_deterministic():
    fused = FusedLSTM(32, 64, num_layers=2).cuda()
    x = torch.randn(50, 4, 32, device="cuda", requires_grad=True)
    stream = torch.cuda.Stream()
    results = []
    for _ in range(2):
        with torch.cuda.stream(stream):
            out, _ = fused(x)
            grad, = torch.autograd.grad(out.square().sum(), [x])
        stream.synchronize()
        results.append((out.clone(), grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
