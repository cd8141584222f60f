"""The CUDA recurrence on a real GPU against reference.py (skipped without one).

Same checks as tests/test_simt_kernels.py (poisoned outputs, bounds from the
reference run in the same precision), on larger shapes as well, both paths,
on a side stream to check the kernels follow torch's current stream.
"""
import pytest
import torch

from fused_lstm import _cuda_backend, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SHAPES = [
    pytest.param(1, 1, 5, 0, None, id="T1-N1-H5"),
    pytest.param(7, 3, 37, 0, None, id="T7-N3-H37"),
    pytest.param(5, 5, 33, 0, [5, 3, 3, 2, 1], id="packed-H33"),
    pytest.param(6, 4, 50, 13, None, id="proj-H50-P13"),
    pytest.param(4, 6, 19, 6, [6, 5, 2, 2], id="packed-proj"),
    pytest.param(20, 16, 768, 0, None, id="T20-N16-H768"),
    pytest.param(50, 1, 256, 0, None, id="T50-N1-H256"),
    pytest.param(8, 8, 1024, 256, None, id="proj-H1024-P256"),
]


def poisoned(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    return t.fill_(0xFF) if dtype == torch.uint8 else t.fill_(float("nan"))


def make_inputs(T, N, H, P, batch_sizes, dtype, device):
    O = P or H
    rows = sum(batch_sizes) if batch_sizes else T * N
    gen = torch.Generator().manual_seed(T * 1000 + H)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    shape = (rows, 4 * H) if batch_sizes else (T, N, 4 * H)
    inputs = dict(gates_x=rand(*shape), w_hh=rand(4 * H, O, scale=1.5 / O ** 0.5),
                  w_hr=rand(P, H, scale=1.5 / H ** 0.5) if P else None, h0=rand(N, O, scale=0.5),
                  c0=rand(N, H, scale=0.5))
    grads = dict(grad_y=rand(*shape[:-1], O), grad_h_n=rand(N, O), grad_c_n=rand(N, H))
    return inputs, grads, (torch.tensor(batch_sizes) if batch_sizes else None)


def as64(d):
    return {k: (v.double() if v is not None else None) for k, v in d.items()}


def check(name, got, ref64, ref_low, dtype):
    got, ref64, ref_low = got.double(), ref64.double(), ref_low.double()
    assert torch.isfinite(got).all(), name
    bound = 4 * (ref_low - ref64).abs().max().item() + FLOOR[dtype] * max(1.0, ref64.abs().max().item())
    error = (got - ref64).abs().max().item()
    assert error <= bound, f"{name}: error {error:.3g} > bound {bound:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("path", ["step", "persistent"])
@pytest.mark.parametrize("T,N,H,P,batch_sizes", SHAPES)
def test_forward_backward(T, N, H, P, batch_sizes, path, dtype):
    device = torch.device("cuda")
    inputs, grads, bs = make_inputs(T, N, H, P, batch_sizes, dtype, device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path=path, alloc=poisoned)
        y, h_n, c_n, saved_gates, saved_c, saved_h = out
        grad = _cuda_backend.backward(inputs["w_hh"], inputs["w_hr"], inputs["c0"], saved_gates, saved_c, saved_h,
                                      **grads, batch_sizes=bs, path=path, alloc=poisoned)
    side.synchronize()
    cpu = lambda d: {k: (v.cpu() if v is not None else None) for k, v in d.items()}  # noqa: E731
    ref64 = reference.recurrence_forward(**as64(cpu(inputs)), batch_sizes=bs)
    ref_low = reference.recurrence_forward(**cpu(inputs), batch_sizes=bs)
    for name, got, i in [("y", y, 0), ("h_n", h_n, 1), ("c_n", c_n, 2), ("saved_gates", saved_gates, 3),
                         ("saved_c", saved_c, 4)] + ([("saved_h", saved_h, 5)] if P else []):
        check(name, got.cpu(), ref64[i], ref_low[i], dtype)
    g64 = reference.recurrence_backward(**as64(cpu(inputs)), **as64(cpu(grads)), batch_sizes=bs)
    g_low = reference.recurrence_backward(**cpu(inputs), **cpu(grads), batch_sizes=bs)
    for name, got, i in [("grad_gates", grad[0], 0), ("grad_h0", grad[2], 2), ("grad_c0", grad[3], 3)] + (
            [("grad_h_out", grad[1], 1)] if P else []):
        check(name, got.cpu(), g64[i], g_low[i], dtype)


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_deterministic(path):
    inputs, grads, bs = make_inputs(10, 8, 300, 0, None, torch.float32, torch.device("cuda"))
    a = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path=path)
    b = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path=path)
    for x, y in zip(a[:5], b[:5]):
        assert torch.equal(x, y)
    ga = _cuda_backend.backward(inputs["w_hh"], None, inputs["c0"], a[3], a[4], None, **grads, batch_sizes=bs, path=path)
    gb = _cuda_backend.backward(inputs["w_hh"], None, inputs["c0"], a[3], a[4], None, **grads, batch_sizes=bs, path=path)
    for x, y in zip(ga, gb):
        assert (x is None and y is None) or torch.equal(x, y)
