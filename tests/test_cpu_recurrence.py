"""The CPU recurrence (fused_lstm._C.lstm_forward_cpu / lstm_backward_cpu)
against reference.recurrence_forward / recurrence_backward: float64 to 1e-10,
float32 to 5e-5; dense and packed, with and without projection, odd sizes;
every ISA this CPU runs; bit-identical across runs and thread counts."""
from __future__ import annotations

import contextlib

import pytest
import torch

from fused_lstm import _C, _params, reference

TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}


def supported_isas():
    isas = []
    for name in ("avx512_amx", "avx512", "avx2", "portable"):
        try:
            _C.set_cpu_isa(name)
            isas.append(name)
        except ValueError:
            pass
    _C.set_cpu_isa("auto")
    return isas


ISAS = supported_isas()


@contextlib.contextmanager
def cpu_isa(name, every_thread=True):
    """Forces the ISA and, by default, a full team even for tiny steps."""
    _C.set_cpu_isa(name)
    old = _C.set_cpu_min_step_work(0 if every_thread else 64 * 1024)
    try:
        yield
    finally:
        _C.set_cpu_isa("auto")
        _C.set_cpu_min_step_work(old)


@contextlib.contextmanager
def torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_problem(T, N, H, P, dtype, packed, seed):
    g = torch.Generator().manual_seed(seed)
    O = P if P else H
    if packed:
        lengths = sorted(torch.randint(1, T + 1, (N,), generator=g).tolist(), reverse=True)
        lengths[0] = T
        batch_sizes = torch.tensor([sum(1 for n in lengths if n > t) for t in range(T)], dtype=torch.int64)
        rows = int(batch_sizes.sum())
    else:
        batch_sizes, rows = None, T * N

    def rand(*shape, scale=1.0):
        return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * scale

    scale = 1.0 / max(O, 1) ** 0.5
    return dict(
        gates_x=rand(rows, 4 * H) * 2 if packed else rand(T, N, 4 * H) * 2,
        w_hh=rand(4 * H, O, scale=2 * scale), w_hr=rand(P, H, scale=2 / H ** 0.5) if P else None,
        h0=rand(N, O), c0=rand(N, H), batch_sizes=batch_sizes, rows=rows, T=T, N=N, H=H, P=P)


def poisoned(shape, dtype, device="cpu"):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def _threads(num_threads):
    count = torch.get_num_threads() if num_threads is None else num_threads
    return lambda params: setattr(params, "num_threads", count)


def _sequence_shape(pr, width):
    return (pr["rows"], width) if pr["batch_sizes"] is not None else (pr["T"], pr["N"], width)


def run_forward(pr, training, num_threads=None):
    """The compiled CPU forward on poisoned outputs; results as [rows, ...] tensors."""
    y, h_n, c_n, gates, c, h = _params.run_forward(
        _C, _C.lstm_forward_cpu, pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], pr["batch_sizes"],
        training, alloc=poisoned, configure=_threads(num_threads))
    out = dict(y=y.reshape(pr["rows"], -1), h_n=h_n, c_n=c_n)
    if training:
        out.update(gates=gates, c=c)
        if pr["P"]:
            out["h"] = h
    return out


def run_backward(pr, saved, grads, num_threads=None):
    O = pr["P"] if pr["P"] else pr["H"]
    grad_gates, grad_h_out, grad_h0, grad_c0 = _params.run_backward(
        _C, _C.lstm_backward_cpu, pr["w_hh"], pr["w_hr"], pr["c0"], saved["gates"], saved["c"], saved.get("h"),
        grads["y"].reshape(_sequence_shape(pr, O)), grads["h_n"], grads["c_n"], pr["batch_sizes"],
        alloc=poisoned, configure=_threads(num_threads))
    out = dict(grad_gates=grad_gates.reshape(pr["rows"], -1), grad_h0=grad_h0, grad_c0=grad_c0)
    if pr["P"]:
        out["grad_h_out"] = grad_h_out.reshape(pr["rows"], -1)
    return out


def make_grads(pr, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    dtype = pr["h0"].dtype
    O = pr["P"] if pr["P"] else pr["H"]
    return dict(y=torch.randn(pr["rows"], O, generator=g, dtype=dtype),
                h_n=torch.randn(pr["N"], O, generator=g, dtype=dtype),
                c_n=torch.randn(pr["N"], pr["H"], generator=g, dtype=dtype))


def assert_close(actual, expected, tol, what):
    assert not torch.isnan(actual).any(), f"{what}: NaN (an output was not written)"
    err = (actual - expected.reshape(actual.shape)).abs().max().item() if actual.numel() else 0.0
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def check_against_reference(pr, training, seed):
    dtype = pr["h0"].dtype
    tol = TOLERANCE[dtype]
    ref_y, ref_h, ref_c, ref_gates, ref_cs, ref_hs = reference.recurrence_forward(
        pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], pr["batch_sizes"])
    out = run_forward(pr, training)
    assert_close(out["y"], ref_y, tol, "y")
    assert_close(out["h_n"], ref_h, tol, "h_n")
    assert_close(out["c_n"], ref_c, tol, "c_n")
    if not training:
        return
    assert_close(out["gates"], ref_gates, tol, "saved gates")
    assert_close(out["c"], ref_cs, tol, "saved c")
    if pr["P"]:
        assert_close(out["h"], ref_hs, tol, "saved h")
    grads = make_grads(pr, seed)
    y_shape = ref_y.shape
    ref = reference.recurrence_backward(pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"],
                                        grads["y"].reshape(y_shape), grads["h_n"], grads["c_n"], pr["batch_sizes"])
    ref_grad_gates, ref_grad_h_out, ref_grad_h0, ref_grad_c0 = ref[:4]
    got = run_backward(pr, out, grads)
    assert_close(got["grad_gates"], ref_grad_gates, tol, "grad_gates")
    assert_close(got["grad_h0"], ref_grad_h0, tol, "grad_h0")
    assert_close(got["grad_c0"], ref_grad_c0, tol, "grad_c0")
    if pr["P"]:
        assert_close(got["grad_h_out"], ref_grad_h_out, tol, "grad_h_out")


SHAPES = [  # T, N, H, P
    (1, 1, 1, 0), (1, 3, 7, 0), (5, 1, 3, 0), (7, 4, 33, 0), (6, 5, 33, 7), (4, 2, 7, 3), (3, 1, 64, 0),
    (9, 11, 40, 0), (4, 9, 130, 0), (3, 2, 20, 17),
    (33, 9, 20, 0),  # the backward in batch slices on two threads (lstm_recurrence.cpp plan_batch_slices)
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}N{}H{}P{}".format(*s))
def test_matches_reference(shape, training, packed, dtype, isa):
    T, N, H, P = shape
    seed = torch.randint(0, 2 ** 31, ()).item()
    pr = make_problem(T, N, H, P, dtype, packed, seed)
    with cpu_isa(isa):
        check_against_reference(pr, training, seed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(12, 16, 128, 0), (5, 64, 200, 0), (7, 9, 96, 40), (30, 1, 256, 0),
                                   (3, 8, 272, 0)],
                         ids=lambda s: "T{}N{}H{}P{}".format(*s))
def test_matches_reference_default_policy(shape, dtype, threads):
    """Larger shapes through the default ISA and team-size policy (row blocks; depth chunks in the
    backward product over 4H = 1088)."""
    T, N, H, P = shape
    seed = torch.randint(0, 2 ** 31, ()).item()
    pr = make_problem(T, N, H, P, dtype, packed=True, seed=seed)
    with torch_threads(threads):
        check_against_reference(pr, training=True, seed=seed)


@contextlib.contextmanager
def cpu_team(name):
    _C.set_cpu_team(name)
    try:
        yield
    finally:
        _C.set_cpu_team("openmp")


@pytest.mark.parametrize("team", ["openmp", "threads"])
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(6, 16, 128, 0), (5, 3, 77, 0), (4, 7, 96, 24)],
                         ids=lambda s: "T{}N{}H{}P{}".format(*s))
def test_bit_identical_across_runs_and_threads(shape, dtype, isa, team):
    T, N, H, P = shape
    pr = make_problem(T, N, H, P, dtype, packed=True, seed=7 + H)
    grads = make_grads(pr, 7)

    def run(threads):
        fwd = run_forward(pr, training=True, num_threads=threads)
        return {**fwd, **run_backward(pr, fwd, grads, num_threads=threads)}

    with cpu_team(team):
        assert_bit_identical_across_threads(isa, run)


def assert_bit_identical_across_threads(isa, run):
    """run(threads) -> {name: tensor}, under the ISA, on 1, 2, 2, 1, 3 threads: all the same bits."""
    results = []
    with cpu_isa(isa):
        for threads in (1, 2, 2, 1, 3):
            with torch_threads(threads):
                results.append(run(threads))
    for other in results[1:]:
        for key, value in results[0].items():
            assert torch.equal(value, other[key]), f"{key} differs between runs / thread counts"


@pytest.mark.parametrize("team", ["openmp", "threads"])
def test_team_engines_match_reference(team):
    seed = torch.randint(0, 2 ** 31, ()).item()
    pr = make_problem(9, 12, 70, 0, torch.float64, packed=True, seed=seed)
    with cpu_isa("auto"), cpu_team(team):
        check_against_reference(pr, training=True, seed=seed)


def test_rejects_unknown_isa_and_team():
    with pytest.raises(ValueError):
        _C.set_cpu_isa("sse1")
    with pytest.raises(ValueError):
        _C.set_cpu_team("mpi")
