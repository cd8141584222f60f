"""The recurrence custom ops (fused_lstm._ops) against reference.py, on every
CPU backend: values, saved buffers, gradients, opcheck, bad arguments."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from fused_lstm import _ops, _params, functional, reference
from conftest import assert_all_close, max_abs_diff

BACKENDS = ["cpu", "reference"]
# (T, N, H, P): odd sizes, T = 1, N = 1, a projection.
SHAPES = [(1, 1, 1, 0), (3, 1, 3, 0), (4, 2, 7, 0), (2, 5, 33, 0), (5, 3, 7, 3), (1, 2, 4, 1), (6, 4, 33, 8)]


def _inputs(T, N, H, P, dtype, packed):
    out = P or H
    scale = 1 / math.sqrt(out)
    batch_sizes = None
    gates_x = torch.randn(T, N, 4 * H, dtype=dtype)
    if packed:
        # Sorted lengths, the longest == T; rows of ended sequences are dropped.
        lengths = sorted([T] + torch.randint(1, T + 1, (N - 1,)).tolist(), reverse=True)
        batch_sizes = torch.tensor([sum(length > t for length in lengths) for t in range(T)])
        gates_x = torch.cat([gates_x[t, : batch_sizes[t]] for t in range(T)])
    return dict(gates_x=gates_x, w_hh=torch.randn(4 * H, out, dtype=dtype) * scale,
                w_hr=torch.randn(P, H, dtype=dtype) / math.sqrt(H) if P else None,
                h0=torch.randn(N, out, dtype=dtype), c0=torch.randn(N, H, dtype=dtype), batch_sizes=batch_sizes)


CASES = [(shape, packed) for shape in SHAPES for packed in (False, True) if not (packed and shape[1] == 1)]


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setattr(_params, "POISON_OUTPUTS", True)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,packed", CASES)
@pytest.mark.parametrize("training", [False, True])
def test_forward_matches_reference(backend, dtype, shape, packed, training):
    args = _inputs(*shape, torch.float64, packed)
    expected = reference.recurrence_forward(**args)
    cast = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in args.items()}
    actual = _ops.recurrence_forward(**cast, training=training)
    atol = 1e-10 if dtype == torch.float64 else 5e-5
    assert_all_close([a.double() for a in actual[:3]], expected[:3], atol, "y, h_n, c_n")
    assert [a.dtype for a in actual[:3]] == [dtype] * 3
    if training:
        saved_expected = expected[3:] if shape[3] else expected[3:5]
        assert_all_close([a.double() for a in actual[3:3 + len(saved_expected)]], saved_expected, atol, "saved")
    else:
        assert all(a.numel() == 0 for a in actual[3:])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,packed", CASES)
def test_backward_matches_reference(backend, dtype, shape, packed):
    args = _inputs(*shape, torch.float64, packed)
    y, h_n, c_n, saved_gates, saved_c, saved_h = reference.recurrence_forward(**args)
    grads = dict(grad_y=torch.randn_like(y), grad_h_n=torch.randn_like(h_n), grad_c_n=torch.randn_like(c_n))
    expected = reference.recurrence_backward(**args, **grads)
    w_hr = args["w_hr"]
    cast = [t.to(dtype) if t is not None else None for t in
            (args["w_hh"], w_hr, args["c0"], saved_gates, saved_c, saved_h if w_hr is not None else y.new_empty(0),
             grads["grad_y"], grads["grad_h_n"], grads["grad_c_n"])]
    # Saved buffers are in the accumulation dtype: float32 for float32 storage.
    actual = _ops.recurrence_backward(*cast, args["batch_sizes"])
    atol = 1e-10 if dtype == torch.float64 else 5e-5
    assert_all_close([actual[0].double(), actual[2].double(), actual[3].double()],
                     [expected[0], expected[2], expected[3]], atol, "grad_gates, grad_h0, grad_c0")
    if w_hr is not None:
        assert max_abs_diff(actual[1].reshape(expected[1].shape), expected[1]) <= atol
    else:
        assert actual[1].numel() == 0


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,packed", [((4, 2, 7, 0), False), ((6, 4, 33, 8), True), ((5, 3, 7, 3), False)])
def test_backward_state_grads_none_mean_zero(backend, dtype, shape, packed):
    """grad_h_n / grad_c_n None (autograd's unused h_n, c_n) give exactly the zero-tensor answer."""
    args = _inputs(*shape, dtype, packed)
    y, h_n, c_n, saved_gates, saved_c, saved_h = _ops.recurrence_forward(**args, training=True)
    common = (args["w_hh"], args["w_hr"], args["c0"], saved_gates, saved_c, saved_h, torch.randn_like(y))
    for grad_h_n, grad_c_n in ((None, None), (torch.randn_like(h_n), None), (None, torch.randn_like(c_n))):
        zeros = (torch.zeros_like(h_n) if grad_h_n is None else grad_h_n,
                 torch.zeros_like(c_n) if grad_c_n is None else grad_c_n)
        expected = _ops.recurrence_backward(*common, *zeros, args["batch_sizes"])
        actual = _ops.recurrence_backward(*common, grad_h_n, grad_c_n, args["batch_sizes"])
        for a, e in zip(actual, expected):
            assert torch.equal(a, e)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("proj_size,packed", [(0, False), (2, False), (0, True), (2, True)])
def test_gradcheck_layer(backend, proj_size, packed):
    """float64 gradcheck through a whole layer: input, h0, c0 and every weight and bias."""
    T, N, I, H = 4, 3, 3, 4
    out = proj_size or H
    x = torch.randn(T, N, I, dtype=torch.float64)
    batch_sizes = None
    if packed:
        batch_sizes = torch.tensor([3, 2, 2, 1])
        x = torch.cat([x[t, : batch_sizes[t]] for t in range(T)])
    params = [torch.randn(4 * H, I), torch.randn(4 * H, out), torch.randn(4 * H), torch.randn(4 * H),
              torch.randn(proj_size, H) if proj_size else None, torch.randn(N, out), torch.randn(N, H)]
    params = [p.double().mul(0.5).requires_grad_() if p is not None else None for p in params]
    x.requires_grad_()
    w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0 = params

    def layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, *maybe_w_hr):
        w_hr = maybe_w_hr[0] if maybe_w_hr else None
        return functional.lstm_layer(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, batch_sizes)

    inputs = (x, w_ih, w_hh, b_ih, b_hh, h0, c0) + ((w_hr,) if proj_size else ())
    assert torch.autograd.gradcheck(layer, inputs, eps=1e-6, atol=1e-7)


def _opcheck_samples():
    for (T, N, H, P), packed, training in itertools.product([(3, 2, 4, 0), (2, 3, 5, 2)], [False, True],
                                                            [False, True]):
        args = _inputs(T, N, H, P, torch.float64, packed)
        if training:
            for name in ("gates_x", "w_hh", "w_hr", "h0", "c0"):
                if args[name] is not None:
                    args[name].requires_grad_()
        yield args, training


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_opcheck_forward(backend):
    for args, training in _opcheck_samples():
        torch.library.opcheck(_ops.recurrence_forward, (*args.values(), training))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_opcheck_backward(backend):
    for args, training in _opcheck_samples():
        y, h_n, c_n, saved_gates, saved_c, saved_h = reference.recurrence_forward(
            **{k: v.detach() if v is not None else None for k, v in args.items()})
        torch.library.opcheck(_ops.recurrence_backward, (
            args["w_hh"].detach(), None if args["w_hr"] is None else args["w_hr"].detach(), args["c0"].detach(),
            saved_gates, saved_c, saved_h if args["w_hr"] is not None else y.new_empty(0),
            torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n), args["batch_sizes"]))


def test_gradcheck_projected_training():
    # The CPU training function with the input projection inside (functional.lstm_layer's eager CPU
    # training): every input's gradient, the saved buffers not differentiable.
    for (T, N, I, H, P), packed, bias in itertools.product([(3, 2, 3, 4, 0), (2, 3, 5, 5, 2)], [False, True],
                                                           [False, True]):
        out = P or H
        batch_sizes = torch.tensor([N] + [N - 1] * (T - 1)) if packed else None
        x = torch.randn(int(batch_sizes.sum()), I) if packed else torch.randn(T, N, I)
        tensors = [x, torch.randn(4 * H, I), torch.randn(4 * H) if bias else None,
                   torch.randn(4 * H) if bias else None, torch.randn(4 * H, out),
                   torch.randn(P, H) if P else None, torch.randn(N, out), torch.randn(N, H)]
        tensors = [t.double().mul(0.5).requires_grad_() if t is not None else None for t in tensors]
        outputs = _ops.projected_recurrence_training(*tensors, batch_sizes)
        assert not any(t.requires_grad for t in outputs[3:])
        assert torch.autograd.gradcheck(lambda *t: _ops.projected_recurrence_training(*t, batch_sizes)[:3],
                                        tensors)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_non_contiguous_inputs_give_the_same_result(backend):
    args = _inputs(5, 3, 6, 2, torch.float64, packed=False)
    expected = _ops.recurrence_forward(**args, training=True)
    strided = dict(args)
    strided["gates_x"] = args["gates_x"].transpose(0, 1).contiguous().transpose(0, 1)
    strided["w_hh"] = args["w_hh"].t().contiguous().t()
    strided["w_hr"] = args["w_hr"].t().contiguous().t()
    strided["h0"] = torch.stack([args["h0"], args["h0"]], dim=2)[..., 0]
    strided["c0"] = args["c0"].t().contiguous().t()
    assert not any(strided[k].is_contiguous() for k in ("gates_x", "w_hh", "w_hr", "h0", "c0"))
    actual = _ops.recurrence_forward(**strided, training=True)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)


def _bad_argument_cases():
    good = _inputs(3, 2, 4, 0, torch.float32, packed=False)
    yield "gates_x width", dict(good, gates_x=torch.randn(3, 2, 15)), ValueError, "gates_x must have shape"
    yield "gates_x batch", dict(good, gates_x=torch.randn(3, 3, 16)), ValueError, "gates_x must have shape"
    yield "gates_x 4-D", dict(good, gates_x=torch.randn(3, 2, 16, 1)), ValueError, "gates_x must have shape"
    yield "empty sequence", dict(good, gates_x=torch.randn(0, 2, 16)), ValueError, "sequence length"
    yield "w_hh shape", dict(good, w_hh=torch.randn(16, 5)), ValueError, "w_hh must have shape"
    yield "w_hh 1-D", dict(good, w_hh=torch.randn(64)), ValueError, "w_hh must be 2-D"
    yield "h0 batch", dict(good, h0=torch.randn(3, 4)), ValueError, "do not fit"
    yield "c0 width", dict(good, c0=torch.randn(2, 5)), ValueError, "do not fit"
    yield "dtype mismatch", dict(good, w_hh=good["w_hh"].double()), TypeError, "w_hh has dtype torch.float64"
    yield "integer input", dict(good, gates_x=torch.ones(3, 2, 16, dtype=torch.int32)), TypeError, "gates_x must be"
    yield "device mismatch", dict(good, h0=good["h0"].to("meta")), ValueError, "h0 is on meta"
    yield "proj too big", dict(good, w_hr=torch.randn(4, 4), w_hh=torch.randn(16, 4)), ValueError, "proj_size"
    yield "batch_sizes growing", dict(good, gates_x=torch.randn(6, 16), batch_sizes=torch.tensor([1, 2, 2]),
                                      h0=torch.randn(1, 4), c0=torch.randn(1, 4)), ValueError, "non-increasing"
    yield "batch_sizes sum", dict(good, gates_x=torch.randn(5, 16), batch_sizes=torch.tensor([2, 2, 2])), \
        ValueError, "add up to"
    yield "batch_sizes dtype", dict(good, gates_x=torch.randn(6, 16), batch_sizes=torch.tensor([2., 2., 2.])), \
        ValueError, "int64"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("name,args,error,message", list(_bad_argument_cases()), ids=lambda v: v
                         if isinstance(v, str) and " " in v else "")
def test_bad_arguments_raise_before_any_kernel(backend, name, args, error, message):
    with pytest.raises(error, match=message):
        _ops.recurrence_forward(**args, training=False)


def test_compiled_core_rejects_bad_params_with_an_exception():
    """The C++ checks are the last line: null pointers and bad sizes raise, never crash."""
    from fused_lstm import _C
    params = _C.LstmFwdParams()
    with pytest.raises(ValueError, match="seq_len"):
        _C.lstm_forward_cpu(params)
    params.sizes.seq_len, params.sizes.batch, params.sizes.hidden, params.sizes.total_rows = 2, 1, 3, 2
    with pytest.raises(ValueError, match="w_hh"):
        _C.lstm_forward_cpu(params)
    params.sizes.proj_size = 3
    with pytest.raises(ValueError, match="proj_size"):
        _C.lstm_forward_cpu(params)


def test_backward_without_training_raises():
    args = _inputs(3, 2, 4, 0, torch.float64, packed=False)
    args["gates_x"].requires_grad_()
    y = _ops.recurrence_forward(**args, training=False)[0]
    with pytest.raises(RuntimeError, match="training=False"):
        y.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,packed", [((6, 4, 33, 0), False), ((5, 3, 7, 3), True)])
def test_low_precision_within_bound_of_reference_in_that_precision(backend, dtype, shape, packed):
    """fp16/bf16 storage, fp32 accumulation: the error against the float64 truth is
    bounded by the error of the reference itself run in that precision."""
    args = _inputs(*shape, torch.float64, packed)
    low = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in args.items()}
    # The truth is computed from the same (rounded) inputs, in float64.
    truth_inputs = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in low.items()}
    truth = reference.recurrence_forward(**truth_inputs)
    reference_low = reference.recurrence_forward(**low)
    actual = _ops.recurrence_forward(**low, training=True)
    for name, a, r, t in zip(("y", "h_n", "c_n"), actual[:3], reference_low[:3], truth[:3]):
        assert a.dtype == dtype
        bound = 2 * max_abs_diff(r, t) + torch.finfo(dtype).eps
        assert max_abs_diff(a, t) <= bound, name
    grads = dict(grad_y=torch.randn_like(truth[0]), grad_h_n=torch.randn_like(truth[1]),
                 grad_c_n=torch.randn_like(truth[2]))
    truth_grads = reference.recurrence_backward(**truth_inputs, **grads)
    low_grads = {k: v.to(dtype) for k, v in grads.items()}
    reference_low_grads = reference.recurrence_backward(**low, **low_grads)
    saved_h = actual[5]
    actual_grads = _ops.recurrence_backward(low["w_hh"], low["w_hr"], low["c0"], actual[3], actual[4], saved_h,
                                            low_grads["grad_y"], low_grads["grad_h_n"], low_grads["grad_c_n"],
                                            low["batch_sizes"])
    for index, name in ((0, "grad_gates"), (2, "grad_h0"), (3, "grad_c0")):
        bound = 2 * max_abs_diff(reference_low_grads[index], truth_grads[index]) + torch.finfo(dtype).eps
        assert actual_grads[index].dtype == dtype
        assert max_abs_diff(actual_grads[index], truth_grads[index]) <= bound, name
