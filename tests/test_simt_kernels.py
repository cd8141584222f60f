"""The CUDA recurrence kernels run on the CPU by csrc/simt, against reference.py.

Every kernel entry point (step and persistent; forward gates and projection,
backward dh and gates; the transpose and packed-offset helpers) in fp32, fp16
and bf16, on odd shapes: H not a multiple of the tile or of 32, N = 1, T = 1,
packed sequences, projections. Outputs and workspace are poisoned (NaN) before
every run. Bounds: k times the error of the reference run in the same
precision, against the reference in fp64 on the same (rounded) inputs.
"""
import pytest
import torch

from _kernel_checks import DTYPE_IDS, DTYPES, check, check_forward_backward, make_inputs, on_cpu, poisoned
from fused_lstm import _cuda_backend, reference

simt = pytest.importorskip("fused_lstm._simt", reason="built without FUSED_LSTM_SIMT")

pytestmark = pytest.mark.simt

# (T, N, H, P, batch_sizes): odd sizes, partial warps, tiles, stages and blocks.
SHAPES = [
    pytest.param(1, 1, 5, 0, None, id="T1-N1-H5"),
    pytest.param(3, 2, 37, 0, None, id="T3-N2-H37"),
    pytest.param(4, 5, 33, 0, [5, 3, 3, 1], id="packed-N5-H33"),
    pytest.param(3, 3, 20, 7, None, id="proj-H20-P7"),
    pytest.param(4, 6, 19, 6, [6, 5, 2, 2], id="packed-proj-H19-P6"),
    # A batch over one shared-memory stage (32 rows): a full and a partial one.
    pytest.param(3, 35, 7, 3, [35, 33, 9], id="packed-proj-N35"),
]


@pytest.fixture(autouse=True)
def small_device():
    # Few SMs and 2-warp blocks: small shapes still spread over several
    # co-resident blocks (and grid.sync), with a few hundred threads in all;
    # the blocks of every launch run at once, as on a GPU.
    simt.set_device(sm_count=3, block_threads=64, concurrent_blocks=True)
    yield
    simt.set_device()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("path", ["step", "persistent"])
@pytest.mark.parametrize("T,N,H,P,batch_sizes", SHAPES)
def test_forward_backward(T, N, H, P, batch_sizes, path, dtype):
    generator = torch.Generator().manual_seed(T * 1000003 + N * 1009 + H * 31 + P)
    inputs, grads, bs = make_inputs(T, N, H, P, batch_sizes, dtype, generator)
    check_forward_backward(inputs, grads, bs, dtype, module=simt, path=path, alloc=poisoned)


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_deterministic(path):
    generator = torch.Generator().manual_seed(7)
    inputs, grads, bs = make_inputs(3, 3, 21, 0, None, torch.float32, generator)
    first = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path=path, alloc=poisoned)
    second = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path=path, alloc=poisoned)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_paths_agree():
    # Step and persistent kernels accumulate in the same order: same bits.
    generator = torch.Generator().manual_seed(11)
    inputs, grads, bs = make_inputs(3, 5, 29, 0, [5, 4, 2], torch.float32, generator)
    step = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path="step")
    persistent = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path="persistent")
    for a, b in zip(step[:5], persistent[:5]):
        assert torch.equal(a, b)


def test_persistent_that_does_not_fit_is_refused():
    # Forcing the persistent path where the weight slices do not fit on chip raises
    # (the dispatcher would fall back to the step kernels).
    simt.set_device(sm_count=1, shared_memory_per_block=8 * 1024, shared_memory_per_sm=9 * 1024, block_threads=64)
    generator = torch.Generator().manual_seed(3)
    inputs, grads, bs = make_inputs(2, 2, 200, 0, None, torch.float32, generator)
    with pytest.raises(ValueError, match="persistent forward does not fit"):
        _cuda_backend.forward(**inputs, batch_sizes=bs, training=False, module=simt, path="persistent")
    y = _cuda_backend.forward(**inputs, batch_sizes=bs, training=False, module=simt)[0]  # auto: step
    ref = reference.recurrence_forward(**on_cpu(inputs, torch.float64))[0]
    assert (y.double() - ref).abs().max() < 1e-4


@pytest.mark.parametrize("P,dtype", [(0, torch.float32), (5, torch.float16)], ids=["fp32", "proj-fp16"])
def test_stage_limited_by_shared_memory(P, dtype):
    # A persistent kernel's batch stage takes the shared memory its weight
    # slices leave. On a 5 KiB device the backward's (K = 4H = 48) stage holds
    # 20 of the 22 rows, so every step crosses a stage; before, that stage fell
    # back to one tile. Against the reference, and the same bits from both paths.
    simt.set_device(sm_count=3, block_threads=64, shared_memory_per_block=5 * 1024,
                    shared_memory_per_sm=6 * 1024, concurrent_blocks=True)
    generator = torch.Generator().manual_seed(19 + P)
    inputs, grads, bs = make_inputs(2, 22, 12, P, None, dtype, generator)
    check_forward_backward(inputs, grads, bs, dtype, module=simt, path="persistent", alloc=poisoned)
    results = []
    for path in ["step", "persistent"]:
        forward = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, module=simt, path=path,
                                        alloc=poisoned)
        *_, saved_gates, saved_c, saved_h = forward
        backward = _cuda_backend.backward(inputs["w_hh"], inputs["w_hr"], inputs["c0"], saved_gates, saved_c,
                                          saved_h, **grads, batch_sizes=bs, module=simt, path=path, alloc=poisoned)
        results.append(list(forward) + list(backward))
    for step, persistent in zip(*results):
        assert torch.equal(step, persistent)


def test_workspace_too_small_is_refused():
    generator = torch.Generator().manual_seed(5)
    inputs, _, _ = make_inputs(2, 2, 9, 0, None, torch.float32, generator)
    tiny = lambda shape, dtype, device: torch.empty(1 if dtype == torch.uint8 else shape, dtype=dtype)  # noqa: E731
    with pytest.raises(ValueError, match="workspace"):
        _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt, alloc=tiny)


def test_zero_state_as_null_is_refused():
    # h0 = c0 = None (null pointers: a zero state) is for the CPU recurrence only.
    generator = torch.Generator().manual_seed(17)
    inputs, _, _ = make_inputs(2, 2, 9, 0, None, torch.float32, generator)
    inputs.update(h0=None, c0=None)
    with pytest.raises(ValueError, match="needs h0 and c0"):
        _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt)


def test_path_from_environment(monkeypatch):
    generator = torch.Generator().manual_seed(13)
    inputs, _, _ = make_inputs(2, 2, 11, 0, None, torch.float32, generator)
    ref = reference.recurrence_forward(**on_cpu(inputs, torch.float64))[0]
    for value in ["step", "persistent", "auto"]:
        monkeypatch.setenv("FUSED_LSTM_CUDA_PATH", value)
        y = _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt, alloc=poisoned)[0]
        assert (y.double() - ref).abs().max() < 1e-5, value
    monkeypatch.setenv("FUSED_LSTM_CUDA_PATH", "fastest")
    with pytest.raises(ValueError, match="FUSED_LSTM_CUDA_PATH"):
        _cuda_backend.forward(**inputs, batch_sizes=None, training=False, module=simt)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=DTYPE_IDS + ["fp64"])
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


def test_cpu_only_fields_are_refused():
    # x (the projection inside) and the weight gradients inside the backward
    # are the CPU recurrence's (params.h); the CUDA entry points refuse them
    # before any kernel runs.
    t = torch.zeros(16)
    with pytest.raises(ValueError, match="takes gates_x, not x"):
        simt.lstm_forward_cuda(simt.LstmFwdParams(seq_len=1, batch=0, hidden=4, total_rows=0, input_size=3, x=t,
                                                  w_ih=t, w_hh=t))
    with pytest.raises(ValueError, match="CPU only"):
        simt.lstm_backward_cuda(simt.LstmBwdParams(seq_len=1, batch=0, hidden=4, total_rows=0, w_hh=t, grad_w_hh=t))
