"""The CPU backend's pool of large internal buffers (fused_lstm._buffers): a
buffer is handed out again only when nothing else holds its storage, and
training with every internal buffer pooled still matches nn.LSTM, with
several graphs alive at once and a retained graph run twice."""
import pytest
import torch

from conftest import assert_all_close
from fused_lstm import FusedLSTM, _buffers

LARGE = (700, 400)  # 1.1 MB of float32: over MIN_BYTES


@pytest.fixture(autouse=True)
def empty_pool():
    _buffers.clear()
    yield
    _buffers.clear()


def _reused(shape=LARGE, dtype=torch.float32):
    return _buffers.reused_empty(shape, dtype=dtype, device=torch.device("cpu"))


def test_a_buffer_comes_back_only_when_nothing_holds_it():
    first = _reused()
    address = first.data_ptr()
    second = _reused()
    assert second.data_ptr() != address, "handed out while in use"
    del first
    third = _reused()
    assert third.data_ptr() == address, "a free buffer was not reused"
    view = third[1:]
    del third
    assert _reused().data_ptr() != address, "handed out while a view held it"
    del view
    assert _reused().data_ptr() == address


def test_saved_tensors_hold_their_buffer():
    weight = torch.randn(400, requires_grad=True)
    buffer = _reused()
    address = buffer.data_ptr()
    buffer.normal_()
    loss = (buffer * weight).sum()  # autograd saves buffer for weight's gradient
    del buffer
    assert _reused().data_ptr() != address
    del loss
    assert _reused().data_ptr() == address


def test_a_reused_tensor_looks_fresh():
    tensor = _reused((350, 800), torch.float64)
    assert tensor.shape == (350, 800) and tensor.dtype == torch.float64 and tensor.is_contiguous()
    assert tensor._base is None and tensor.untyped_storage().nbytes() == 350 * 800 * 8


def test_best_fit_and_bounds(monkeypatch):
    huge = _reused((1500, 400))
    huge_address = huge.data_ptr()
    del huge
    assert _reused((700, 400)).data_ptr() != huge_address, "a buffer over twice the size was handed out"
    _buffers.clear()
    big = _reused((1200, 400))
    big_address = big.data_ptr()
    del big
    assert _reused((700, 400)).data_ptr() == big_address, "a free buffer that fits was not taken"
    monkeypatch.setattr(_buffers, "MAX_BUFFERS", 3)
    held = [_reused() for _ in range(5)]
    assert len(_buffers._pool) <= 3 and len({t.data_ptr() for t in held}) == 5
    small = _buffers.reused_empty((10, 10), dtype=torch.float32, device=torch.device("cpu"))
    assert all(b.data_ptr() != small.data_ptr() for b in _buffers._pool), "a small buffer was pooled"


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, proj_size=3)],
                         ids=["default", "stacked"])
def test_training_with_pooled_buffers_matches_torch(config, monkeypatch):
    monkeypatch.setattr(_buffers, "MIN_BYTES", 0)  # every internal buffer through the pool
    reference_lstm = torch.nn.LSTM(6, 10, dtype=torch.float64, **config)
    fused = FusedLSTM.from_torch(reference_lstm)
    inputs = [torch.randn(7, 3, 6, dtype=torch.float64, requires_grad=True) for _ in range(2)]

    def grads(model, x, loss):
        return torch.autograd.grad(loss, [x, *model.parameters()], retain_graph=True)

    expected = [grads(reference_lstm, x, reference_lstm(x)[0].square().sum()) for x in inputs]
    # Both graphs alive at once (their saved buffers must stay theirs), the
    # second one run backward first, the first one twice with a forward between.
    losses = [fused(x)[0].square().sum() for x in inputs]
    got_second = grads(fused, inputs[1], losses[1])
    got_first = grads(fused, inputs[0], losses[0])
    fused(inputs[1])[0].sum().backward()
    got_first_again = grads(fused, inputs[0], losses[0])
    for got, want in ((got_first, expected[0]), (got_second, expected[1]), (got_first_again, expected[0])):
        assert_all_close(got, want, 1e-10, "pooled training gradients")
