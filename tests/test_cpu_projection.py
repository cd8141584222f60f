"""The CPU recurrence with the input projection inside (params.h's input_size:
x @ W_ih^T + b_ih + b_hh computed by each team member for its own units, a
chunk of steps ahead (on AMX tiles on the avx512_amx kernels), or at N = 1
folded into the steps) against the
reference fed with that projection:
float64 to 1e-10, float32 to 5e-5, dense and packed, with and without bias
and projection, sequences long enough to cross chunks; bit-identical across
runs and thread counts; a None (zero) initial state bit-identical to zero
tensors; and the argument checks of _ops.run_projected_forward."""
from __future__ import annotations

import pytest
import torch

from fused_lstm import _C, _ops, _params, reference
from test_cpu_recurrence import (ISAS, TOLERANCE, assert_bit_identical_across_threads, assert_close, cpu_isa,
                                 make_problem, poisoned, torch_threads)


def make_projected_problem(T, N, I, H, P, dtype, packed, bias, seed):
    pr = make_problem(T, N, H, P, dtype, packed, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x_shape = (pr["rows"], I) if packed else (T, N, I)
    pr["x"] = torch.rand(x_shape, generator=g, dtype=dtype) * 2 - 1
    pr["w_ih"] = (torch.rand(4 * H, I, generator=g, dtype=dtype) * 2 - 1) / I ** 0.5
    pr["b_ih"] = torch.rand(4 * H, generator=g, dtype=dtype) - 0.5 if bias else None
    pr["b_hh"] = torch.rand(4 * H, generator=g, dtype=dtype) - 0.5 if bias else None
    gates_x = pr["x"] @ pr["w_ih"].t()
    pr["gates_x"] = gates_x + pr["b_ih"] + pr["b_hh"] if bias else gates_x
    return pr


def run_projected(pr, num_threads=None):
    def configure(params):
        params.num_threads = torch.get_num_threads() if num_threads is None else num_threads

    y, h_n, c_n = _params.run_forward(
        _C, _C.lstm_forward_cpu, pr["x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"], pr["batch_sizes"], None,
        alloc=poisoned, configure=configure, projection=(pr["w_ih"], pr["b_ih"], pr["b_hh"]))
    return dict(y=y.reshape(pr["rows"], -1), h_n=h_n, c_n=c_n)


SHAPES = [  # T, N, I, H, P: odd sizes, one and many blocks, chunks of several steps
    (1, 1, 1, 1, 0), (5, 3, 7, 9, 0), (7, 4, 33, 33, 0), (6, 5, 20, 33, 7), (3, 70, 10, 35, 0),
    (300, 1, 8, 20, 0), (90, 3, 16, 130, 0), (40, 9, 50, 96, 40),
    (4, 8, 2100, 20, 0),  # x @ W_ih^T cut into depth chunks (panel_product.h)
    (21, 1, 200, 70, 0), (40, 1, 16, 130, 24),  # one sequence: the projection folded into the steps
    (3, 9, 900, 300, 0),  # a member's panels (3 MB and more) past its L2: prefetch_panels (recurrence_plan.h)
    (33, 5, 700, 40, 0),  # on AMX tiles (from 32 steps): 22 depth tiles, an odd count of row tiles, the last partial
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}N{}I{}H{}P{}".format(*s))
def test_matches_reference(shape, bias, packed, dtype, isa):
    T, N, I, H, P = shape
    seed = torch.randint(0, 2 ** 31, ()).item()
    pr = make_projected_problem(T, N, I, H, P, dtype, packed, bias, seed)
    ref_y, ref_h, ref_c = reference.recurrence_forward(pr["gates_x"], pr["w_hh"], pr["w_hr"], pr["h0"], pr["c0"],
                                                       pr["batch_sizes"])[:3]
    with cpu_isa(isa):
        out = run_projected(pr)
    tol = TOLERANCE[dtype]
    assert_close(out["y"], ref_y, tol, "y")
    assert_close(out["h_n"], ref_h, tol, "h_n")
    assert_close(out["c_n"], ref_c, tol, "c_n")


FOLD_SHAPES = [  # T, I, H, P at N = 1: steps fewer than the ring and the rows folded ahead, unit
    # blocks not in pairs, W_ih deeper and shallower than W_hh, a projection
    (1, 5, 20, 0), (3, 7, 33, 0), (6, 40, 130, 0), (21, 200, 70, 0), (40, 16, 130, 24), (13, 3, 300, 0),
    (17, 9, 260, 0),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", FOLD_SHAPES, ids=lambda s: "T{}I{}H{}P{}".format(*s))
def test_single_sequence_is_bit_identical_to_its_batched_run(shape, dtype, isa):
    # At N = 1 the AVX-512 kernel folds the projection of later rows into each
    # step's recurrent product (forward.h fold_step); at N = 2 it projects
    # chunks of steps. Same FMA chains, so the same bits, on any thread count.
    T, I, H, P = shape
    both = make_projected_problem(T, 2, I, H, P, dtype, packed=False, bias=True, seed=T * H + I)
    first = dict(both, N=1, rows=T, x=both["x"][:, :1].contiguous(), gates_x=both["gates_x"][:, :1],
                 h0=both["h0"][:1], c0=both["c0"][:1])
    ref_y, ref_h, ref_c = reference.recurrence_forward(first["gates_x"], first["w_hh"], first["w_hr"], first["h0"],
                                                       first["c0"], None)[:3]
    with cpu_isa(isa):
        batched = run_projected(both, num_threads=2)
        for threads in (1, 2, 3):
            with torch_threads(threads):
                alone = run_projected(first, num_threads=threads)
            assert_close(alone["y"], ref_y, TOLERANCE[dtype], "y")
            assert_close(alone["h_n"], ref_h, TOLERANCE[dtype], "h_n")
            assert_close(alone["c_n"], ref_c, TOLERANCE[dtype], "c_n")
            assert torch.equal(alone["y"], batched["y"].reshape(T, 2, -1)[:, 0]), f"y ({threads} threads)"
            assert torch.equal(alone["h_n"], batched["h_n"][:1]), f"h_n ({threads} threads)"
            assert torch.equal(alone["c_n"], batched["c_n"][:1]), f"c_n ({threads} threads)"


@pytest.mark.skipif("avx512_amx" not in ISAS, reason="needs AMX tiles (avx512_amx)")
@pytest.mark.parametrize("where", ["x", "w_ih"])
@pytest.mark.parametrize("sign", [1, -1], ids=["inf", "-inf"])
def test_amx_projection_takes_an_inf_as_the_fma_chains_do(where, sign):
    # On the tiles an inf times a zero bf16 part of the other operand is a NaN
    # where the float product is an inf (amx_projection.h), so rows of x and
    # unit blocks of W_ih holding one are projected on the FMA chains: the
    # gates saturate and the outputs stay finite, as on avx512 and in nn.LSTM.
    T, N, I, H = 40, 6, 70, 40
    pr = make_projected_problem(T, N, I, H, 0, torch.float32, packed=False, bias=True, seed=5)
    # Values with one bf16 part, the others zero: the products that would meet the inf.
    pr["x"] = pr["x"].to(torch.bfloat16).float()
    pr["w_ih"] = pr["w_ih"].to(torch.bfloat16).float()
    if where == "x":
        pr["x"][3, 2, 5] = sign * float("inf")
    else:
        pr["w_ih"][H + 7, 5] = sign * float("inf")
    with cpu_isa("avx512"):
        fma = run_projected(pr)
    with cpu_isa("avx512_amx"):
        amx = run_projected(pr)
    for name in ("y", "h_n", "c_n"):
        assert torch.isfinite(fma[name]).all(), name
        assert_close(amx[name], fma[name], TOLERANCE[torch.float32], name)


def bit_identity_cases(test):
    """The thread-count bit tests' grid: every ISA x f32/f64 x (T, N, I, H, P)
    shapes of a batch of one vector, one long sequence, a projection."""
    test = pytest.mark.parametrize("shape", [(50, 16, 24, 128, 0), (300, 1, 8, 77, 0), (20, 7, 30, 96, 24)],
                                   ids=lambda s: "T{}N{}I{}H{}P{}".format(*s))(test)
    test = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])(test)
    return pytest.mark.parametrize("isa", ISAS)(test)


@bit_identity_cases
def test_bit_identical_across_runs_and_threads(shape, dtype, isa):
    T, N, I, H, P = shape
    pr = make_projected_problem(T, N, I, H, P, dtype, packed=True, bias=True, seed=11 + H)
    assert_bit_identical_across_threads(isa, lambda threads: run_projected(pr, num_threads=threads))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("shape", [(9, 4, 7, 33, 0), (6, 5, 20, 33, 7), (30, 3, 5, 130, 0)],
                         ids=lambda s: "T{}N{}I{}H{}P{}".format(*s))
def test_none_state_is_bit_identical_to_zero_tensors(shape, packed, dtype, isa):
    # h0 = c0 = None: the kernel starts from zero itself (params.h); the module
    # passes None when it is called without hx.
    T, N, I, H, P = shape
    pr = make_projected_problem(T, N, I, H, P, dtype, packed, bias=True, seed=7 * H + T)
    args = {key: pr[key] for key in ("x", "w_ih", "b_ih", "b_hh", "w_hh", "w_hr", "batch_sizes")}
    with cpu_isa(isa):
        for threads in (1, 2):
            with torch_threads(threads):
                from_zeros = _ops.run_projected_forward(**args, h0=torch.zeros_like(pr["h0"]),
                                                        c0=torch.zeros_like(pr["c0"]))
                from_none = _ops.run_projected_forward(**args, h0=None, c0=None)
            for name, a, b in zip(("y", "h_n", "c_n"), from_none, from_zeros):
                assert a.shape == b.shape, name
                assert torch.equal(a, b), f"{name} differs with a None state ({threads} threads)"


def _args(T=4, N=3, I=5, H=6, dtype=torch.float32):
    return dict(x=torch.randn(T, N, I, dtype=dtype), w_ih=torch.randn(4 * H, I, dtype=dtype),
                b_ih=torch.randn(4 * H, dtype=dtype), b_hh=torch.randn(4 * H, dtype=dtype),
                w_hh=torch.randn(4 * H, H, dtype=dtype), w_hr=None, h0=torch.zeros(N, H, dtype=dtype),
                c0=torch.zeros(N, H, dtype=dtype), batch_sizes=None)


@pytest.mark.parametrize("change, error, message", [
    (dict(w_ih=torch.randn(24, 4)), ValueError, "x must have shape"),
    (dict(w_ih=torch.randn(20, 5)), ValueError, "w_ih must have shape"),
    (dict(w_ih=torch.randn(24, 5, dtype=torch.float64)), TypeError, "w_ih has dtype"),
    (dict(b_ih=torch.randn(20)), ValueError, "b_ih must have shape"),
    (dict(b_hh=torch.randn(4, 6)), ValueError, "b_hh must be 1-D"),
    (dict(b_hh=None), ValueError, "b_ih and b_hh"),
    (dict(x=torch.randn(4, 3, 5).long()), TypeError, "x must be float32"),
    (dict(c0=None), ValueError, "h0 and c0 must both be given or both be None"),
    (dict(h0=None, c0=None, w_hh=torch.randn(23, 6)), ValueError, "w_hh must have shape"),
    (dict(h0=None, c0=None, w_hh=torch.randn(24, 5)), ValueError, "w_hh must have shape"),
    (dict(h0=None, c0=None, x=torch.randn(4, 3, 4)), ValueError, "x must have shape"),
])
def test_projected_forward_rejects_bad_arguments(change, error, message):
    args = {**_args(), **change}
    with pytest.raises(error, match=message):
        _ops.run_projected_forward(**args)


def test_core_rejects_gates_x_with_x():
    args = _args()
    captured = []
    outputs = _params.run_forward(_C, captured.append, args["x"], args["w_hh"], None, args["h0"], args["c0"], None,
                                  None, projection=(args["w_ih"], args["b_ih"], args["b_hh"]))
    params = captured[0]
    params.gates_x = args["x"].data_ptr()
    with pytest.raises(ValueError, match="gates_x or x"):
        _C.lstm_forward_cpu(params)
    params.gates_x, params.c0 = 0, 0  # h0 without c0: refused by the core too
    with pytest.raises(ValueError, match="h0 and c0 must be given together"):
        _C.lstm_forward_cpu(params)
    del outputs


MODULE_CONFIGS = [
    dict(), dict(bias=False), dict(num_layers=2, bidirectional=True), dict(proj_size=3, batch_first=True),
    dict(num_layers=3, bidirectional=True, proj_size=4, bias=False, batch_first=True),
]


def _config_id(config):
    return "-".join(f"{k}={v}" for k, v in config.items()) or "default"


def _module_input(config, packed, dtype):
    if packed:
        return torch.nn.utils.rnn.pack_sequence([torch.randn(n, 6, dtype=dtype) for n in (9, 4, 7)],
                                                enforce_sorted=False)
    return torch.randn((5, 17, 6) if config.get("batch_first", False) else (17, 5, 6), dtype=dtype)


def _module_parity_cases(test):
    """The module parity tests' grid: f64/f32 x MODULE_CONFIGS x dense/packed."""
    test = pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])(test)
    test = pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)(test)
    return pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])(test)


def _projected_calls(monkeypatch):
    """Records the training argument of every _backend.projected_forward call (None: inference)."""
    from fused_lstm import _backend

    calls = []
    original = _backend.projected_forward
    monkeypatch.setattr(_backend, "projected_forward",
                        lambda *a, **k: calls.append(k.get("training")) or original(*a, **k))
    return calls


def _twin_lstms(config, dtype, training):
    """torch.nn.LSTM(6, 10) with fresh random weights, in training or eval mode, and its FusedLSTM twin."""
    from fused_lstm import FusedLSTM

    torch.manual_seed(torch.randint(0, 2 ** 31, ()).item())
    reference_lstm = torch.nn.LSTM(6, 10, dtype=dtype, **config).train(training)
    return reference_lstm, FusedLSTM.from_torch(reference_lstm)


@_module_parity_cases
def test_module_inference_takes_projected_path_and_matches_torch(config, packed, dtype, monkeypatch):
    calls = _projected_calls(monkeypatch)
    reference_lstm, fused = _twin_lstms(config, dtype, training=False)
    x = _module_input(config, packed, dtype)
    with torch.inference_mode():
        expected, (h_expected, c_expected) = reference_lstm(x)
        got, (h_got, c_got) = fused(x)
    assert calls and all(training is None for training in calls), "inference did not take the projected path"
    tol = TOLERANCE[dtype]
    if packed:
        expected, got = expected.data, got.data
    for name, a, b in (("output", got, expected), ("h_n", h_got, h_expected), ("c_n", c_got, c_expected)):
        assert a.shape == b.shape, name
        assert_close(a, b, tol, name)


@_module_parity_cases
def test_module_training_takes_projected_path_and_matches_torch(config, packed, dtype, monkeypatch):
    # Eager CPU training projects x inside the recurrence too; its backward
    # gives the projection's gradients (x, W_ih, both biases).
    calls = _projected_calls(monkeypatch)
    reference_lstm, fused = _twin_lstms(config, dtype, training=True)
    x = _module_input(config, packed, dtype)
    leaf = (x.data if packed else x).requires_grad_()
    grads = []
    for model in (reference_lstm, fused):
        out, (h_n, c_n) = model(x)
        out = out.data if packed else out
        torch.manual_seed(1)
        loss = sum((t * torch.randn_like(t)).sum() for t in (out, h_n, c_n))
        grads.append(torch.autograd.grad(loss, [leaf, *model.parameters()]))
    assert calls and all(training is True for training in calls), "training did not take the projected path"
    names = ["x"] + [name for name, _ in fused.named_parameters()]
    for name, got, expected in zip(names, grads[1], grads[0]):
        assert_close(got, expected, TOLERANCE[dtype], f"grad of {name}")


def test_second_derivative_raises_rather_than_missing_the_recurrence():
    # The recurrence's backward has no autograd formula: a second derivative
    # through it must raise, not silently leave the recurrence's part out.
    _, fused = _twin_lstms({}, torch.float64, training=True)
    x = torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True)
    out, _ = fused(x)
    grad_x, = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        (grad_x.sum() + x.sum()).backward()


def test_training_and_inference_give_the_same_bits():
    # Both project x inside the same kernels (chunks at N = 8, folded at N = 1).
    from fused_lstm import FusedLSTM

    for batch in (8, 1):
        fused = FusedLSTM(6, 10, num_layers=2, bidirectional=True)
        x = torch.randn(30, batch, 6)
        trained, (h_trained, c_trained) = fused(x)
        with torch.no_grad():
            inferred, (h_inferred, c_inferred) = fused(x)
        for name, a, b in (("output", trained, inferred), ("h_n", h_trained, h_inferred),
                           ("c_n", c_trained, c_inferred)):
            assert torch.equal(a, b), f"{name} at N={batch}"


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=_config_id)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_module_without_hx_is_bit_identical_to_zero_hx(config, packed, grad):
    # Without hx the module passes None down (the projected path's kernel
    # starts from zero; the op path makes zero tensors per layer).
    from fused_lstm import FusedLSTM

    fused = FusedLSTM(6, 10, **config)
    x = _module_input(config, packed, torch.float32)
    layers = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    batch = 3 if packed else 5
    hx = (torch.zeros(layers, batch, config.get("proj_size") or 10), torch.zeros(layers, batch, 10))
    with torch.set_grad_enabled(grad):
        without_hx, (h_without, c_without) = fused(x)
        with_hx, (h_with, c_with) = fused(x, hx)
    if packed:
        without_hx, with_hx = without_hx.data, with_hx.data
    for name, a, b in (("output", without_hx, with_hx), ("h_n", h_without, h_with), ("c_n", c_without, c_with)):
        assert a.shape == b.shape, name
        assert torch.equal(a, b), name
