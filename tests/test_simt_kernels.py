"""The CUDA recurrence kernels run on the CPU by csrc/simt, against reference.py.

Every kernel entry point (step and persistent; forward gates and projection,
backward dh and gates; the transpose and packed-offset helpers) in fp32, fp16
and bf16, on odd shapes: H not a multiple of the tile or of 32, N = 1, T = 1,
packed sequences, projections. Outputs and workspace are poisoned (NaN) before
every run. Bounds: k times the error of the reference run in the same
precision, against the reference in fp64 on the same (rounded) inputs.
"""
import math

import pytest
import torch

from fused_lstm import _cuda_backend, reference

simt = pytest.importorskip("fused_lstm._simt", reason="built without FUSED_LSTM_SIMT")

pytestmark = pytest.mark.simt

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Error floor per dtype (relative to the tensor's magnitude) for tensors where
# the low-precision reference happens to be exact.
FLOOR = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# (T, N, H, P, batch_sizes): odd sizes, partial warps, tiles and blocks.
SHAPES = [
    pytest.param(1, 1, 5, 0, None, id="T1-N1-H5"),
    pytest.param(3, 2, 37, 0, None, id="T3-N2-H37"),
    pytest.param(4, 5, 33, 0, [5, 3, 3, 1], id="packed-N5-H33"),
    pytest.param(3, 3, 20, 7, None, id="proj-H20-P7"),
    pytest.param(4, 6, 19, 6, [6, 5, 2, 2], id="packed-proj-H19-P6"),
]


@pytest.fixture(autouse=True)
def small_device():
    # Few SMs and 2-warp blocks: small shapes still spread over several
    # co-resident blocks (and grid.sync), with a few hundred threads in all;
    # the blocks of every launch run at once, as on a GPU.
    simt.set_device(sm_count=3, block_threads=64, concurrent_blocks=True)
    yield
    simt.set_device()


def poisoned(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    if dtype == torch.uint8:
        return t.fill_(0xFF)  # NaN as fp32 words
    return t.fill_(float("nan"))


def make_inputs(T, N, H, P, batch_sizes, dtype, generator):
    O = P or H
    rows = sum(batch_sizes) if batch_sizes else T * N

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    gates_shape = (rows, 4 * H) if batch_sizes else (T, N, 4 * H)
    inputs = dict(
        gates_x=rand(*gates_shape),
        w_hh=rand(4 * H, O, scale=1.5 / math.sqrt(O)),
        w_hr=rand(P, H, scale=1.5 / math.sqrt(H)) if P else None,
        h0=rand(N, O, scale=0.5),
        c0=rand(N, H, scale=0.5),
    )
    grads = dict(
        grad_y=rand(*gates_shape[:-1], O),
        grad_h_n=rand(N, O),
        grad_c_n=rand(N, H),
    )
    bs = torch.tensor(batch_sizes, dtype=torch.int64) if batch_sizes else None
    return inputs, grads, bs


def as64(d):
    return {k: (v.double() if v is not None else None) for k, v in d.items()}


def check(name, got, ref64, ref_low, dtype):
    assert got is not None and ref64 is not None, name
    got, ref64, ref_low = got.double(), ref64.double(), ref_low.double()
    assert got.shape == ref64.shape, (name, got.shape, ref64.shape)
    assert torch.isfinite(got).all(), f"{name}: non-finite values (poison left?)"
    scale = max(1.0, ref64.abs().max().item())
    ref_error = (ref_low - ref64).abs().max().item()
    bound = 4 * ref_error + FLOOR[dtype] * scale
    error = (got - ref64).abs().max().item()
    assert error <= bound, f"{name}: error {error:.3g} > bound {bound:.3g} (reference in low precision: {ref_error:.3g})"


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("path", ["step", "persistent"])
@pytest.mark.parametrize("T,N,H,P,batch_sizes", SHAPES)
def test_forward_backward(T, N, H, P, batch_sizes, path, dtype):
    generator = torch.Generator().manual_seed(hash((T, N, H, P, path, str(dtype))) % 2**31)
    inputs, grads, bs = make_inputs(T, N, H, P, batch_sizes, dtype, generator)

    ref64 = reference.recurrence_forward(**as64(inputs), batch_sizes=bs)
    ref_low = reference.recurrence_forward(**inputs, batch_sizes=bs)
    y, h_n, c_n, saved_gates, saved_c, saved_h = _cuda_backend.forward(
        **inputs, batch_sizes=bs, training=True, module=simt, path=path, alloc=poisoned)
    assert y.dtype == dtype and saved_gates.dtype == torch.float32
    tol = {"y": (y, 0), "h_n": (h_n, 1), "c_n": (c_n, 2), "saved_gates": (saved_gates, 3), "saved_c": (saved_c, 4)}
    if P:
        tol["saved_h"] = (saved_h, 5)
    else:
        assert saved_h is None
    for name, (got, index) in tol.items():
        check(name, got, ref64[index], ref_low[index], dtype)

    # Inference: the same outputs, bit for bit, and nothing saved.
    y_inf, h_inf, c_inf, *saved = _cuda_backend.forward(
        **inputs, batch_sizes=bs, training=False, module=simt, path=path, alloc=poisoned)
    assert saved == [None, None, None]
    assert torch.equal(y_inf, y) and torch.equal(h_inf, h_n) and torch.equal(c_inf, c_n)

    # Backward from the kernel's own saved values.
    ref_grads64 = reference.recurrence_backward(**as64(inputs), **as64(grads), batch_sizes=bs)
    ref_grads_low = reference.recurrence_backward(**inputs, **grads, batch_sizes=bs)
    grad_gates, grad_h_out, grad_h0, grad_c0 = _cuda_backend.backward(
        inputs["w_hh"], inputs["w_hr"], inputs["c0"], saved_gates, saved_c, saved_h, **grads, batch_sizes=bs,
        module=simt, path=path, alloc=poisoned)
    check("grad_gates", grad_gates, ref_grads64[0], ref_grads_low[0], dtype)
    if P:
        check("grad_h_out", grad_h_out, ref_grads64[1], ref_grads_low[1], dtype)
    else:
        assert grad_h_out is None
    check("grad_h0", grad_h0, ref_grads64[2], ref_grads_low[2], dtype)
    check("grad_c0", grad_c0, ref_grads64[3], ref_grads_low[3], dtype)


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_deterministic(path):
    generator = torch.Generator().manual_seed(7)
    inputs, grads, bs = make_inputs(3, 3, 21, 0, None, torch.float32, generator)
    first = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path=path, alloc=poisoned)
    second = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path=path, alloc=poisoned)
    for a, b in zip(first, second):
        assert (a is None and b is None) or torch.equal(a, b)


def test_paths_agree():
    # Step and persistent kernels accumulate in the same order: same bits.
    generator = torch.Generator().manual_seed(11)
    inputs, grads, bs = make_inputs(3, 5, 29, 0, [5, 4, 2], torch.float32, generator)
    step = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path="step")
    persistent = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path="persistent")
    for a, b in zip(step[:5], persistent[:5]):
        assert torch.equal(a, b)


def test_persistent_grid_too_large_is_refused():
    # Forcing the persistent path where the grid cannot be co-resident raises
    # (the dispatcher would fall back to the step kernels).
    simt.set_device(sm_count=1, shared_memory_per_block=8 * 1024, shared_memory_per_sm=9 * 1024, block_threads=64)
    generator = torch.Generator().manual_seed(3)
    inputs, grads, bs = make_inputs(2, 2, 200, 0, None, torch.float32, generator)
    with pytest.raises(ValueError, match="persistent forward does not fit"):
        _cuda_backend.forward(**inputs, batch_sizes=bs, training=False, module=simt, path="persistent")
    y = _cuda_backend.forward(**inputs, batch_sizes=bs, training=False, module=simt)[0]  # auto: step
    ref = reference.recurrence_forward(**as64(inputs))[0]
    assert (y.double() - ref).abs().max() < 1e-4


def test_workspace_too_small_is_refused():
    generator = torch.Generator().manual_seed(5)
    inputs, _, _ = make_inputs(2, 2, 9, 0, None, torch.float32, generator)
    tiny = lambda shape, dtype, device: torch.empty(1 if dtype == torch.uint8 else shape, dtype=dtype)  # noqa: E731
    with pytest.raises(ValueError, match="workspace"):
        _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt, alloc=tiny)


def test_path_from_environment(monkeypatch):
    generator = torch.Generator().manual_seed(13)
    inputs, _, _ = make_inputs(2, 2, 11, 0, None, torch.float32, generator)
    ref = reference.recurrence_forward(**as64(inputs))[0]
    for value in ["step", "persistent", "auto"]:
        monkeypatch.setenv("FUSED_LSTM_CUDA_PATH", value)
        y = _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt, alloc=poisoned)[0]
        assert (y.double() - ref).abs().max() < 1e-5, value
    monkeypatch.setenv("FUSED_LSTM_CUDA_PATH", "fastest")
    with pytest.raises(ValueError, match="FUSED_LSTM_CUDA_PATH"):
        _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=["fp32", "fp16", "bf16", "fp64"])
@pytest.mark.parametrize("N,H", [(1, 5), (3, 37), (2, 130)])
def test_pointwise_cell(N, H, dtype):
    # The FusedLSTMCell kernel (csrc/cuda/lstm_pointwise_kernel.cuh), also through launch().
    generator = torch.Generator().manual_seed(N * 100 + H)
    pre = (torch.randn(N, 4 * H, generator=generator, dtype=torch.float64) * 2).to(dtype)
    c_prev = torch.randn(N, H, generator=generator, dtype=torch.float64).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    h, c = poisoned((N, H), dtype, "cpu"), poisoned((N, H), dtype, "cpu")
    saved = poisoned((N, 4 * H), acc, "cpu")
    p = simt.LstmPointwiseParams()
    p.batch, p.hidden, p.dtype = N, H, getattr(simt.DType, str(dtype).split(".")[1])
    p.pre_gates, p.c_prev, p.h, p.c, p.saved_gates = (t.data_ptr() for t in (pre, c_prev, h, c, saved))
    simt.lstm_pointwise_cuda(p)

    def cell(pre, c_prev):
        i, f, g, o = pre.split(H, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c_prev + i * g
        return o * c_new.tanh(), c_new, torch.cat([i, f, g, o], 1)

    ref64 = cell(pre.double(), c_prev.double())
    ref_low = cell(pre, c_prev)
    floor_dtype = torch.float32 if dtype == torch.float64 else dtype
    for name, got, r64, rlow in zip(["h", "c", "saved_gates"], [h, c, saved], ref64, ref_low):
        check(name, got, r64, rlow, floor_dtype)
