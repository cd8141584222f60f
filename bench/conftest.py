"""pytest-benchmark suite options. Not part of the test suite (testpaths =
tests): run it as `pytest bench/ --benchmark-json=bench.json`, then
`python -m fused_lstm bench --from-json bench.json` for the table and plot."""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="cpu or cuda (cuDNN is the lstm runner there)")


@pytest.fixture(scope="session")
def device(request):
    device = request.config.getoption("--device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return device
