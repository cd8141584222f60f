"""ThreadSanitizer over the persistent kernels (forward in training mode, then
backward) and the step kernels with a projection (all blocks of a launch run
concurrently), run by simt on tiny shapes: no race may be reported, and the
results must match the CPU recurrence. The same program with one
__syncthreads removed (-DFUSED_LSTM_TEST_DROP_BARRIER) must be flagged: the
check can see the races a missing barrier causes."""
import subprocess

import pytest

from _gxx import build_all

pytestmark = pytest.mark.simt

# The CPU recurrence (portable kernels only: no per-file ISA flags here) is the oracle.
SOURCES = ["simt/tsan_main.cpp", "cpu/lstm_recurrence.cpp", "cpu/thread_team.cpp", "cpu/host_openmp.cpp",
           "cpu/isa_portable.cpp"]
FLAGS = ["-O1", "-g", "-fsanitize=thread"]


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return build_all({"clean": (SOURCES, FLAGS), "dropped_barrier": (SOURCES, FLAGS + ["-DFUSED_LSTM_TEST_DROP_BARRIER"])},
                     tmp_path_factory.mktemp("tsan"))


def run(binary):
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=300,
                          env={"TSAN_OPTIONS": "halt_on_error=0 exitcode=66"})


def test_persistent_kernels_race_free(binaries):
    result = run(binaries["clean"])
    assert "ThreadSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "max |simt - cpu|" in result.stdout


def test_removed_barrier_is_flagged(binaries):
    result = run(binaries["dropped_barrier"])
    assert "WARNING: ThreadSanitizer: data race" in result.stderr
    assert "fwd_gates_step" in result.stderr  # the race is where the barrier was
    assert result.returncode == 66
