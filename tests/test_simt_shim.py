"""The simt shim itself: shuffles, barriers, dynamic shared memory, grid.sync and
atomics behave as on a GPU; what a GPU refuses or hangs on raises a clear error
(threads per block, shared memory, cooperative co-residency, a missing barrier)."""
import os
import subprocess

import pytest

from _gxx import build_all

pytestmark = pytest.mark.simt

CHECKS = ["shuffles", "syncthreads_and_dynamic_smem", "grid_sync", "atomic_add", "threads_per_block_limit",
          "shared_memory_limit", "cooperative_grid_limit", "grid_sync_needs_cooperative", "barrier_timeout"]


@pytest.fixture(scope="module")
def selftest_output(tmp_path_factory):
    binary = build_all({"selftest": (["simt/shim_selftest.cpp"], ["-O1"])}, tmp_path_factory.mktemp("simt"))["selftest"]
    env = dict(os.environ, SIMT_BARRIER_TIMEOUT_MS="500")
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120, env=env)
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.split()}
    return result.returncode, lines, result.stdout + result.stderr


@pytest.mark.parametrize("check", CHECKS)
def test_shim(selftest_output, check):
    returncode, lines, output = selftest_output
    assert check in lines, output
    assert lines[check].startswith("ok "), lines[check]
