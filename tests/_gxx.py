"""Builds small standalone C++ programs from csrc with g++ (simt tests)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
GXX = shutil.which("g++")


def build_all(jobs, out_dir):
    """jobs: {name: (sources relative to csrc, extra flags)} -> {name: path}; compiles in parallel."""
    if GXX is None:
        pytest.skip("g++ not found")
    running = {}
    for name, (sources, flags) in jobs.items():
        binary = Path(out_dir) / name
        command = [GXX, "-std=c++20", "-DFUSED_LSTM_SIMT=1", f"-I{CSRC / 'simt' / 'include'}", *flags,
                   *[str(CSRC / s) for s in sources], "-o", str(binary), "-lpthread"]
        running[name] = (binary, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    built = {}
    for name, (binary, job) in running.items():
        output, _ = job.communicate()
        assert job.returncode == 0, f"building {name} failed:\n{output}"
        built[name] = binary
    return built
