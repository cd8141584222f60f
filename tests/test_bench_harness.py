"""bench/weight_grads_loop.cpp, the weight gradients' standalone harness,
still builds against the kernels it times (and runs, where the CPU has
AVX-512), so it cannot silently fall behind weight_grads.h."""
import subprocess
from pathlib import Path

import pytest

from _gxx import CSRC, GXX, ROOT


def test_weight_grads_loop_builds_and_runs(tmp_path):
    if GXX is None:
        pytest.skip("g++ not found")
    binary = tmp_path / "weight_grads_loop"
    subprocess.run([GXX, "-O1", "-std=c++20", "-mavx512f", "-mavx2", "-mfma", f"-I{CSRC}", "-pthread",
                    str(ROOT / "bench" / "weight_grads_loop.cpp"), "-o", str(binary)], check=True)
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("built; running it needs AVX-512")
    result = subprocess.run([str(binary), "2", "5", "3", "20", "40"], capture_output=True, text=True, timeout=120,
                            check=True)
    assert "GFLOP/s" in result.stdout
