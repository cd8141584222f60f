"""Shared test helpers: fresh random inputs, poisoned outputs, tolerances."""
from __future__ import annotations

import os

import pytest
import torch

# Bounds from the project's standards: float64 vs the reference, float32 vs torch.nn.LSTM.
ATOL = {torch.float64: 1e-10, torch.float32: 5e-5}


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """A different but reproducible seed per test (the test's node id)."""
    torch.manual_seed(hash(request.node.nodeid) % (2**31))
    yield


@pytest.fixture
def backend(request, monkeypatch):
    """Forces fused_lstm's backend for the test (and, through the environment,
    for any subprocess it starts)."""
    force_backend(monkeypatch, request.param)
    return request.param


def force_backend(monkeypatch, name: str) -> None:
    from fused_lstm import _backend

    monkeypatch.setattr(_backend, "FORCED_BACKEND", name)
    monkeypatch.setenv("FUSED_LSTM_BACKEND", name)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    return (a.double() - b.double()).abs().max().item()


def assert_all_close(actual, expected, atol: float, what: str = "") -> None:
    assert len(actual) == len(expected), what
    for index, (a, b) in enumerate(zip(actual, expected)):
        assert a.shape == b.shape, f"{what}[{index}]: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{what}[{index}]: dtype {a.dtype} != {b.dtype}"
        error = max_abs_diff(a, b)
        assert error <= atol, f"{what}[{index}]: max |diff| {error:.3e} > {atol:.1e}"


def cuda_available() -> bool:
    return torch.cuda.is_available() and os.environ.get("FUSED_LSTM_BACKEND") != "reference"
