"""PyTorch's own LSTM / LSTMCell module inputs (common_modules.module_db), run
through FusedLSTM / FusedLSTMCell as a user would: same seed, same weights,
same outputs and gradients as the torch module."""
import pytest
import torch
from torch import nn

from fused_lstm import FusedLSTM, FusedLSTMCell
from conftest import assert_all_close

TWINS = {nn.LSTM: FusedLSTM, nn.LSTMCell: FusedLSTMCell}


def _module_inputs():
    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    for info in common_modules.module_db:
        if info.module_cls not in TWINS:
            continue
        for dtype in (torch.float64, torch.float32):
            inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
            for index, sample in enumerate(inputs):
                yield pytest.param(info.module_cls, sample, dtype, id=f"{info.module_cls.__name__}-{dtype}-{index}")


def _flatten(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flatten(item)]
    return []


@pytest.mark.parametrize("module_cls,sample,dtype", list(_module_inputs()))
def test_torch_module_inputs(module_cls, sample, dtype):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    reference = module_cls(*args, **kwargs).to(dtype)
    torch.manual_seed(0)
    fused = TWINS[module_cls](*args, **kwargs).to(dtype)
    assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), reference.parameters()))
    forward_args = sample.forward_input.args
    leaves = [t for t in _flatten(forward_args) if t.requires_grad]
    results = []
    for module in (fused, reference):
        outputs = _flatten(module(*forward_args, **sample.forward_input.kwargs))
        loss = sum((o * torch.randn(o.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)).sum()
                   for o in outputs)
        results.append(outputs + list(torch.autograd.grad(loss, leaves + list(module.parameters()))))
    assert_all_close(results[0], results[1], 1e-9 if dtype == torch.float64 else 5e-5, "module input")
