"""The CPU backward with the weight gradients inside (params.h's weight-gradient
fields; csrc/cpu/weight_grads.h: dx, dW_ih, dW_hh and db computed by the team a
chunk of steps at a time) against reference.recurrence_backward's grad_gates
turned into those gradients by float64 GEMMs: float64 to 1e-10, float32 to
5e-5; dense and packed, with and without projection, odd sizes, sequences that
cross chunks; every ISA (avx512_amx: dx and dW on AMX tiles from 32 steps
and a batch of 8 or H = 256, infs as the FMA chains take them); poisoned
outputs; each output alone; bit-identical across runs and thread counts; an
empty batch."""
from __future__ import annotations

import pytest
import torch

from fused_lstm import _C, _backend, _ops, _params, reference
from test_cpu_projection import bit_identity_cases, make_projected_problem
from test_cpu_recurrence import ISAS, TOLERANCE, assert_bit_identical_across_threads, assert_close, cpu_isa, make_grads

NAMES = ("grad_x", "grad_w_ih", "grad_bias", "grad_w_hh")
ALL = (True, True, True, True)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setattr(_params, "POISON_OUTPUTS", True)


def run_backward_inside(pr, grads, needs=ALL):
    """Training forward, then the backward with the weight gradients inside:
    {name: tensor or None} for NAMES and grad_h0, grad_c0 (grad_h_out with P)."""
    saved = _params.run_forward(
        _C, _C.lstm_forward_cpu, pr["x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], pr["batch_sizes"], True,
        configure=lambda p: setattr(p, "num_threads", torch.get_num_threads()),
        projection=(pr["w_ih"], pr["b_ih"], pr["b_hh"]))
    y, _, _, saved_gates, saved_c, saved_h = saved
    O = pr["P"] or pr["H"]
    grad_y = grads["y"].reshape(*y.shape[:-1], O)
    outputs = _backend.projected_backward(pr["x"], pr["w_ih"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], y,
                                          saved_gates, saved_c, saved_h, grad_y, grads["h_n"], grads["c_n"],
                                          pr["batch_sizes"], needs)
    grad_h_out, grad_h0, grad_c0 = outputs[:3]
    got = dict(zip(NAMES, outputs[3:]), grad_h0=grad_h0, grad_c0=grad_c0)
    if pr["P"]:
        got["grad_h_out"] = grad_h_out
    return got, y


def expected_grads(pr, grads):
    """The reference's grad_gates, and the GEMMs autograd would run on it, in float64."""
    ref_y = reference.recurrence_forward(pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"],
                                         pr["batch_sizes"])[0]
    grad_gates, grad_h_out, grad_h0, grad_c0 = reference.recurrence_backward(
        pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], grads["y"].reshape(ref_y.shape), grads["h_n"],
        grads["c_n"], pr["batch_sizes"])[:4]
    flat = grad_gates.reshape(-1, grad_gates.shape[-1]).double()
    x = pr["x"].reshape(-1, pr["x"].shape[-1]).double()
    expected = dict(grad_x=(flat @ pr["w_ih"].double()).reshape(pr["x"].shape), grad_w_ih=flat.t() @ x,
                    grad_bias=flat.sum(0),
                    grad_w_hh=_ops._grad_w_hh(grad_gates.double(), ref_y.double(), pr["h0"].double(),
                                              pr["batch_sizes"]),
                    grad_h0=grad_h0, grad_c0=grad_c0)
    if pr["P"]:
        expected["grad_h_out"] = grad_h_out
    return expected


SHAPES = [  # T, N, I, H, P: odd sizes; one and several tile columns (I = 100: 7 float vectors);
    # chunks of 64 steps at N = 1, of 10 steps at N = 7, one step at N = 70; a projection; big weights.
    # N >= 8, T >= 32 with small weights: the backward runs in batch slices on two threads
    # (lstm_recurrence.cpp plan_batch_slices), the batch's halves ending at different steps when packed
    (1, 1, 1, 1, 0), (5, 3, 7, 9, 0), (6, 5, 20, 33, 7), (7, 4, 100, 20, 0), (150, 1, 24, 40, 0),
    (30, 7, 50, 35, 0), (3, 70, 10, 35, 0), (40, 9, 33, 96, 40), (40, 10, 16, 24, 0),
    (3, 9, 900, 300, 0),  # a member's panels (3 MB and more) past its L2: prefetch_panels (recurrence_plan.h)
    (33, 2, 20, 260, 0),  # on AMX tiles at N = 2 (H >= 256): the last unit block's gate groups of 4 rows
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}N{}I{}H{}P{}".format(*s))
def test_matches_reference(shape, packed, dtype, isa):
    T, N, I, H, P = shape
    seed = torch.randint(0, 2 ** 31, ()).item()
    pr = make_projected_problem(T, N, I, H, P, dtype, packed, bias=True, seed=seed)
    grads = make_grads(pr, seed)
    with cpu_isa(isa):
        got, _ = run_backward_inside(pr, grads)
    expected = expected_grads(pr, grads)
    for name, value in expected.items():
        assert_close(got[name].double(), value, TOLERANCE[dtype], f"{name} (seed {seed})")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
# From 32 steps and a batch of 8, float32 dx and dW on AMX tiles where the CPU has them.
@pytest.mark.parametrize("T, N", [(30, 7), (33, 9)], ids=["T30N7", "T33N9"])
def test_each_output_alone_is_the_same_bits(T, N, dtype):
    # A null pointer skips an output (params.h); the others do not change.
    pr = make_projected_problem(T, N, 50, 35, 0, dtype, packed=True, bias=True, seed=5)
    grads = make_grads(pr, 5)
    with cpu_isa(ISAS[0]):
        full, _ = run_backward_inside(pr, grads)
        for i, name in enumerate(NAMES):
            needs = tuple(j == i for j in range(4))
            alone, _ = run_backward_inside(pr, grads, needs)
            assert torch.equal(alone[name], full[name]), name
            assert all(alone[other] is None for other in NAMES if other != name), name
        none, _ = run_backward_inside(pr, grads, (False,) * 4)
        assert torch.equal(none["grad_h0"], full["grad_h0"]) and torch.equal(none["grad_c0"], full["grad_c0"])


@bit_identity_cases
def test_bit_identical_across_runs_and_threads(shape, dtype, isa):
    T, N, I, H, P = shape
    pr = make_projected_problem(T, N, I, H, P, dtype, packed=True, bias=True, seed=3 + H)
    grads = make_grads(pr, 3)
    assert_bit_identical_across_threads(isa, lambda threads: run_backward_inside(pr, grads)[0])


@pytest.mark.skipif("avx512_amx" not in ISAS, reason="needs AMX tiles (avx512_amx)")
@pytest.mark.parametrize("where", ["x", "grad_y", "w_ih"])
def test_amx_backward_takes_an_inf_as_the_fma_chains_do(where):
    # On the tiles an inf times a zero bf16 part is a NaN where the float
    # product is an inf (amx_tiles.h): the dW tiles whose block of rows holds
    # one, the rows of grad_gates and the input blocks of W_ih with one (dx)
    # run on the FMA chains, so every inf and NaN lands where the avx512
    # kernels put it, and the finite values agree.
    pr = make_projected_problem(40, 8, 70, 40, 0, torch.float32, packed=False, bias=True, seed=9)
    pr["x"] = pr["x"].to(torch.bfloat16).float()  # one bf16 part, the others zero
    grads = make_grads(pr, 9)
    if where == "x":
        pr["x"][3, 2, 5] = float("inf")
    elif where == "grad_y":
        grads["y"][3 * 8 + 2, 5] = float("inf")
    else:
        pr["w_ih"] = pr["w_ih"].to(torch.bfloat16).float()
        pr["w_ih"][40 + 7, 5] = float("inf")
    got = {}
    for isa in ("avx512", "avx512_amx"):
        with cpu_isa(isa):
            got[isa] = run_backward_inside(pr, grads)[0]
    for name in NAMES:
        fma, amx = got["avx512"][name], got["avx512_amx"][name]
        assert torch.equal(fma.isnan(), amx.isnan()) and torch.equal(fma.isinf(), amx.isinf()), name
        finite = fma.isfinite()
        if finite.any():
            assert (fma[finite] - amx[finite]).abs().max().item() <= TOLERANCE[torch.float32], name
        assert torch.equal(fma[~finite & ~fma.isnan()], amx[~finite & ~amx.isnan()]), name
    reached = "grad_x" if where == "w_ih" else "grad_w_ih"
    assert not got["avx512"][reached].isfinite().all(), f"the inf reached no {reached}"


def test_empty_batch_gives_zero_weight_gradients():
    pr = make_projected_problem(4, 2, 5, 6, 0, torch.float32, packed=False, bias=True, seed=1)
    empty = dict(pr, N=0, rows=0, x=pr["x"][:, :0], gates_x=pr["gates_x"][:, :0], h0=pr["h0"][:0],
                 c0=pr["c0"][:0])
    grads = dict(y=torch.zeros(0, 6), h_n=torch.zeros(0, 6), c_n=torch.zeros(0, 6))
    got, _ = run_backward_inside(empty, grads)
    assert got["grad_x"].shape == (4, 0, 5)
    for name in ("grad_w_ih", "grad_bias", "grad_w_hh"):
        assert torch.equal(got[name], torch.zeros_like(got[name])), name


def test_module_uses_it_and_matches_nn_lstm(monkeypatch):
    # FusedLSTM's eager CPU training takes this backward (no create_graph); its
    # gradients match nn.LSTM's, float64, with a packed batch and a projection.
    calls = []
    inner = _backend.projected_backward
    monkeypatch.setattr(_backend, "projected_backward", lambda *args: calls.append(1) or inner(*args))
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 9, num_layers=2, proj_size=4, bidirectional=True).double()
    from fused_lstm import FusedLSTM
    fused = FusedLSTM.from_torch(ref)
    x = torch.randn(12, 5, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for module in (ref, fused):
        x.grad = None
        module.zero_grad()
        y, (h, c) = module(torch.nn.utils.rnn.pack_padded_sequence(x, [12, 10, 7, 7, 1]))
        (y.data.sin().sum() + h.cos().sum() + c.sum()).backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in module.parameters()])
    assert len(calls) == 4  # two layers, two directions
    for a, b in zip(*grads):
        assert_close(b, a, 1e-10, "gradient")


@pytest.mark.parametrize("missing, match", [
    (dict(input_size=0), "need input_size"), (dict(w_ih=None), "grad_x needs w_ih"), (dict(x=None), "needs x"),
    (dict(y=None), "needs y and h0"), (dict(h0=None), "needs y and h0")])
def test_missing_inputs_raise_before_any_kernel(missing, match):
    # params_check.h: each weight-gradient output needs what it reads.
    pr = make_projected_problem(3, 2, 5, 4, 0, torch.float32, packed=False, bias=True, seed=2)
    grads = make_grads(pr, 2)
    saved = _params.run_forward(_C, _C.lstm_forward_cpu, pr["x"], pr["w_hh"], None, pr["h0"], pr["c0"], None, True,
                                projection=(pr["w_ih"], pr["b_ih"], pr["b_hh"]))
    _, fields = _params.backward_fields(_C, pr["w_hh"], None, pr["c0"], saved[3], saved[4], None,
                                        grads["y"].reshape(3, 2, 4), None, None, None)
    fields.update(input_size=5, x=pr["x"], w_ih=pr["w_ih"], y=saved[0], h0=pr["h0"], grad_x=torch.empty(3, 2, 5),
                  grad_w_ih=torch.empty(16, 5), grad_w_hh=torch.empty(16, 4), grad_bias=torch.empty(16))
    fields.update(missing)
    with pytest.raises(ValueError, match=match):
        _C.lstm_backward_cpu_fields(**fields)
