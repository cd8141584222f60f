"""python -m fused_lstm info / demo, as a user runs them."""
import os
import subprocess
import sys

from fused_lstm import _backend


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fused_lstm", *args], capture_output=True, text=True, timeout=600)


def test_info_reports_build_and_devices():
    result = _run("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torch" in out and "CUDA kernels compiled:" in out and "devices visible: cpu" in out
    build = _backend.build_info()
    if build["cuda"]:
        for arch in build["cuda_archs"].split(","):
            assert f"sm_{arch}" in out
    else:
        assert "CUDA kernels compiled: no" in out


def test_demo_checks_parity_and_times_both():
    result = _run("demo", "--repeats", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 2 and "FAIL" not in result.stdout
    assert "nn.LSTM ms" in result.stdout and "speed-up" in result.stdout


def test_backend_forced_from_the_environment():
    # FUSED_LSTM_BACKEND is read once, at import.
    code = "import torch; from fused_lstm import _backend; print(_backend.choose('cpu'))"
    env = dict(os.environ, FUSED_LSTM_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
