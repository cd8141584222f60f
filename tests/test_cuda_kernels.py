"""The CUDA recurrence on a real GPU against reference.py (skipped without one).

Same checks as tests/test_simt_kernels.py (tests/_kernel_checks.py: poisoned
outputs, bounds from the reference run in the same precision), on larger
shapes as well, both paths, on a side stream to check that the kernels follow
torch's current stream.
"""
import pytest
import torch

from _kernel_checks import DTYPE_IDS, DTYPES, check_forward_backward, make_inputs, poisoned
from fused_lstm import _cuda_backend

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SHAPES = [
    pytest.param(1, 1, 5, 0, None, id="T1-N1-H5"),
    pytest.param(7, 3, 37, 0, None, id="T7-N3-H37"),
    pytest.param(5, 5, 33, 0, [5, 3, 3, 2, 1], id="packed-H33"),
    pytest.param(6, 4, 50, 13, None, id="proj-H50-P13"),
    pytest.param(4, 6, 19, 6, [6, 5, 2, 2], id="packed-proj"),
    pytest.param(20, 16, 768, 0, None, id="T20-N16-H768"),
    pytest.param(50, 1, 256, 0, None, id="T50-N1-H256"),
    pytest.param(8, 8, 1024, 256, None, id="proj-H1024-P256"),
    pytest.param(6, 70, 40, 0, None, id="T6-N70-H40"),
    pytest.param(5, 40, 24, 8, [40, 33, 32, 3, 1], id="packed-proj-N40"),
    # The persistent backward's stage holds 20 rows (the shared memory W_hh^T's
    # slice leaves at K = 4H = 2048): two and a half stages a step, then fewer.
    pytest.param(4, 48, 512, 0, [48, 41, 20, 3], id="packed-N48-H512"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("path", ["step", "persistent"])
@pytest.mark.parametrize("T,N,H,P,batch_sizes", SHAPES)
def test_forward_backward(T, N, H, P, batch_sizes, path, dtype):
    generator = torch.Generator().manual_seed(T * 1000003 + N * 1009 + H * 31 + P)
    inputs, grads, bs = make_inputs(T, N, H, P, batch_sizes, dtype, generator, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        check_forward_backward(inputs, grads, bs, dtype, path=path, alloc=poisoned)


@pytest.mark.parametrize("path", ["step", "persistent"])
def test_deterministic(path):
    inputs, grads, bs = make_inputs(10, 8, 300, 0, None, torch.float32, torch.Generator().manual_seed(1), "cuda")
    first = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path=path)
    second = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path=path)
    for a, b in zip(first[:5], second[:5]):
        assert torch.equal(a, b)
    backward = [_cuda_backend.backward(inputs["w_hh"], None, inputs["c0"], first[3], first[4], None, **grads,
                                       batch_sizes=bs, path=path) for _ in range(2)]
    for a, b in zip(*backward):
        assert torch.equal(a, b)


def test_paths_agree():
    inputs, _, bs = make_inputs(6, 5, 129, 0, [5, 4, 4, 2, 2, 1], torch.float32, torch.Generator().manual_seed(2),
                                "cuda")
    step = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path="step")
    persistent = _cuda_backend.forward(**inputs, batch_sizes=bs, training=True, path="persistent")
    for a, b in zip(step[:5], persistent[:5]):
        assert torch.equal(a, b)
