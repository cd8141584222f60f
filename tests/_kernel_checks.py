"""Shared by the simt and CUDA kernel tests: random inputs, poisoned outputs,
and the comparison with reference.py.

Bounds: against the reference in fp64 on the same (rounded) inputs, the
kernel may err by 4x the error of the reference run in the kernel's storage
precision, plus a small floor per dtype (relative to the tensor's magnitude)
for tensors where that reference happens to be exact.
"""
import math

import torch

from fused_lstm import _cuda_backend, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def poisoned(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    return t.fill_(0xFF) if dtype == torch.uint8 else t.fill_(float("nan"))  # 0xFF..: NaN as fp32 words


def make_inputs(T, N, H, P, batch_sizes, dtype, generator, device="cpu"):
    """Inputs of recurrence_forward and the output grads; batch_sizes a list or None."""
    O = P or H
    rows = sum(batch_sizes) if batch_sizes else T * N

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    gates_shape = (rows, 4 * H) if batch_sizes else (T, N, 4 * H)
    inputs = dict(gates_x=rand(*gates_shape), w_hh=rand(4 * H, O, scale=1.5 / math.sqrt(O)),
                  w_hr=rand(P, H, scale=1.5 / math.sqrt(H)) if P else None, h0=rand(N, O, scale=0.5),
                  c0=rand(N, H, scale=0.5))
    grads = dict(grad_y=rand(*gates_shape[:-1], O), grad_h_n=rand(N, O), grad_c_n=rand(N, H))
    bs = torch.tensor(batch_sizes, dtype=torch.int64) if batch_sizes else None
    return inputs, grads, bs


def on_cpu(d, dtype=None):
    return {k: (v.to("cpu", dtype or v.dtype) if v is not None else None) for k, v in d.items()}


def check(name, got, ref64, ref_low, dtype):
    assert got is not None and ref64 is not None, name
    got, ref64, ref_low = got.double().cpu(), ref64.double(), ref_low.double()
    assert got.shape == ref64.shape, (name, got.shape, ref64.shape)
    assert torch.isfinite(got).all(), f"{name}: non-finite values (poison left?)"
    ref_error = (ref_low - ref64).abs().max().item()
    bound = 4 * ref_error + FLOOR[dtype] * max(1.0, ref64.abs().max().item())
    error = (got - ref64).abs().max().item()
    assert error <= bound, f"{name}: error {error:.3g} > bound {bound:.3g} (reference in low precision: {ref_error:.3g})"


def check_forward_backward(inputs, grads, bs, dtype, **backend):
    """Training forward, inference forward and backward through _cuda_backend
    (backend: module, path, alloc) against the reference."""
    y, h_n, c_n, saved_gates, saved_c, saved_h = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True,
                                                                       **backend)
    assert y.dtype == dtype and saved_gates.dtype == torch.float32 and (saved_h is not None) == (inputs["w_hr"] is not None)
    ref64 = reference.recurrence_forward(**on_cpu(inputs, torch.float64), batch_sizes=bs)
    ref_low = reference.recurrence_forward(**on_cpu(inputs), batch_sizes=bs)
    outputs = [("y", y), ("h_n", h_n), ("c_n", c_n), ("saved_gates", saved_gates), ("saved_c", saved_c),
               ("saved_h", saved_h)]
    for index, (name, got) in enumerate(outputs):
        if got is not None:
            check(name, got, ref64[index], ref_low[index], dtype)

    # Inference: the same outputs, bit for bit, and nothing saved.
    y_inf, h_inf, c_inf, *saved = _cuda_backend.forward(**inputs, batch_sizes=bs, training=False, **backend)
    assert saved == [None, None, None]
    assert torch.equal(y_inf, y) and torch.equal(h_inf, h_n) and torch.equal(c_inf, c_n)

    # Backward from the kernel's own saved values.
    grad = _cuda_backend.backward(inputs["w_hh"], inputs["w_hr"], inputs["c0"], saved_gates, saved_c, saved_h,
                                  **grads, batch_sizes=bs, **backend)
    ref64 = reference.recurrence_backward(**on_cpu(inputs, torch.float64), **on_cpu(grads, torch.float64),
                                          batch_sizes=bs)
    ref_low = reference.recurrence_backward(**on_cpu(inputs), **on_cpu(grads), batch_sizes=bs)
    for index, name in enumerate(["grad_gates", "grad_h_out", "grad_h0", "grad_c0"]):
        if name == "grad_h_out" and inputs["w_hr"] is None:
            assert grad[index] is None
        else:
            check(name, grad[index], ref64[index], ref_low[index], dtype)
