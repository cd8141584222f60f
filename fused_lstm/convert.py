"""Swapping torch.nn.LSTM / nn.LSTMCell for FusedLSTM / FusedLSTMCell, weights kept."""
from __future__ import annotations

import torch
from torch import nn

from .modules import FusedLSTM, FusedLSTMCell

__all__ = ["replace_lstm", "lstm_from_torch", "lstm_cell_from_torch"]


def _copy_state(source: nn.Module, target: nn.Module) -> nn.Module:
    """Moves target to source's device and dtype, copies the weights, keeps train/eval."""
    reference = next(source.parameters(), None)
    if reference is not None:
        target.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        target.load_state_dict(source.state_dict())
    for name, parameter in target.named_parameters():
        parameter.requires_grad_(getattr(source, name).requires_grad)
    target.train(source.training)
    return target


def lstm_from_torch(module: nn.LSTM) -> FusedLSTM:
    if not isinstance(module, nn.LSTM):
        raise TypeError(f"expected a torch.nn.LSTM, got {type(module).__name__}")
    fused = FusedLSTM(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, dropout=module.dropout, bidirectional=module.bidirectional,
                      proj_size=module.proj_size, device="meta")
    fused.to_empty(device="cpu")
    return _copy_state(module, fused)


def lstm_cell_from_torch(module: nn.LSTMCell) -> FusedLSTMCell:
    if not isinstance(module, nn.LSTMCell):
        raise TypeError(f"expected a torch.nn.LSTMCell, got {type(module).__name__}")
    fused = FusedLSTMCell(module.input_size, module.hidden_size, bias=module.bias, device="meta")
    fused.to_empty(device="cpu")
    return _copy_state(module, fused)


def replace_lstm(model: nn.Module) -> nn.Module:
    """Replaces, in place, every nn.LSTM and nn.LSTMCell inside model (at any depth:
    Sequential, ModuleList, ModuleDict, custom modules) by its fused twin with
    the same weights, device, dtype and mode. Returns model; a bare nn.LSTM or
    nn.LSTMCell passed as model is returned converted."""
    if type(model) is nn.LSTM:
        return lstm_from_torch(model)
    if type(model) is nn.LSTMCell:
        return lstm_cell_from_torch(model)
    for name, child in model.named_children():
        replacement = replace_lstm(child)
        if replacement is not child:
            setattr(model, name, replacement)
    return model
