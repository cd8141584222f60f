"""ThreadSanitizer over the CPU recurrence's thread team: a training forward
and a backward with the weight gradients inside, on two members (batch
slices and the unit partition) and on one (csrc/cpu/team_tsan_main.cpp). No
race may be reported, and two members must give the bits of one."""
import subprocess

from _gxx import build_all

SOURCES = ["cpu/team_tsan_main.cpp", "cpu/lstm_recurrence.cpp", "cpu/thread_team.cpp", "cpu/host_openmp.cpp",
           "cpu/isa_portable.cpp"]


def test_thread_team_race_free_and_thread_count_invariant(tmp_path):
    binary = build_all({"team_tsan": (SOURCES, ["-O1", "-g", "-fsanitize=thread"])}, tmp_path)["team_tsan"]
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300,
                            env={"TSAN_OPTIONS": "halt_on_error=0 exitcode=66"})
    assert "ThreadSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.count("give the bits of") == 3, result.stdout
