"""bench/'s standalone C++ harnesses still build against the kernels they
time (and run, where the CPU has AVX-512), so they cannot silently fall
behind weight_grads.h, amx_weight_grads.h and amx_projection.h."""
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
    for amx in ("0", "1"):  # 1: on AMX tiles where the CPU has them
        result = subprocess.run([str(binary), "2", "5", "3", "20", "40", amx], capture_output=True, text=True,
                                timeout=120, check=True)
        assert "GFLOP/s" in result.stdout


def test_amx_projection_loop_builds_and_runs(tmp_path):
    if GXX is None:
        pytest.skip("g++ not found")
    binary = tmp_path / "amx_projection_loop"
    subprocess.run([GXX, "-O1", "-std=c++20", "-mavx512f", "-mavx2", "-mfma", f"-I{CSRC}",
                    str(ROOT / "bench" / "amx_projection_loop.cpp"), "-o", str(binary)], check=True)
    cpu = Path("/proc/cpuinfo").read_text()
    if "avx512f" not in cpu:
        pytest.skip("built; running it needs AVX-512")
    result = subprocess.run([str(binary), "37", "70", "3"], capture_output=True, text=True, timeout=120, check=True)
    if "amx_bf16" not in cpu:
        assert "no AMX" in result.stdout
        return
    errors = [float(line.split("max error")[1].split()[0])
              for line in result.stdout.splitlines() if "max error" in line]
    assert len(errors) == 2 and max(errors) < 1e-5, result.stdout
